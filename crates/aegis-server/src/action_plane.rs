//! The authorize use case: one proposed tool call becomes one decision, recorded durably
//! (decision, event and receipt in one commit) before anyone acts on it. `POST
//! /v1/authorize` and MCP gateway mode's `tools/call` both call [`authorize`], so a call is
//! decided by the same rule whichever way it arrives.

use crate::error::{ApiError, ApiResult};
use crate::rate_limit::{AgentLimits, Limiters};
use crate::state::{AgentSnapshot, AppState, TenantRuntime};
use crate::validate::APPROVAL_ID_PREFIX;
use aegis_core::canonical::ActionRef;
use aegis_core::decision::{
    AgentFacts, CallFacts, DecisionOutcome, RegisteredAction, decide, over_limit,
};
use aegis_core::model::{AgentStatus, SourceTrust, Verdict};
use aegis_core::policy::PolicyResource;
use aegis_store::approvals::{ApprovalGate, ApprovalRef};
use aegis_store::{NewDecision, StoreError, TraceContext};
use serde_json::Value;

/// A tool call an agent proposes, as the adapters (HTTP, MCP) hand it over.
#[derive(Debug)]
pub struct ProposedCall {
    pub request_id: Option<String>,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    /// A JSON object when present (the adapters check it).
    pub parameters: Option<Value>,
    /// The caller's claim: it may only tighten what the tenant registered.
    pub claimed_mutates_state: Option<bool>,
    /// Already tightened by everything the caller said about provenance.
    pub source_trust: SourceTrust,
    pub trace: TraceContext,
    /// The approval the caller says this call uses (an identical repeated call finds its
    /// approved approval without it).
    pub approval_id: Option<String>,
    /// Set when the call is refused whatever the policies say (an MCP tool whose definition
    /// changed and was not accepted): the deny is recorded with this reason like any other.
    pub denied_because: Option<String>,
    /// The pinned definition of the MCP tool called, recorded in the receipt.
    pub tool_definition_hash: Option<String>,
}

/// The decision as recorded: a retry's first decision (same `request_id`), or this one as
/// the writer left it.
#[derive(Debug)]
pub struct Authorization {
    pub decision_id: String,
    pub verdict: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    pub action_hash: String,
    pub receipt_id: String,
    pub receipt_hash: String,
    pub receipt_prev_hash: String,
    pub receipt_seq: u64,
    /// Position of the decision in the event log.
    pub event_seq: i64,
    /// The approval the decision asked for (pending), used (consumed) or refused to use.
    pub approval: Option<ApprovalRef>,
    /// Set on a deny of the rate limit or budget (recorded as such: it is never answered
    /// from an earlier call, and no gate turns a deny into anything else): when the agent
    /// may call again.
    pub retry_after_ms: Option<u64>,
}

/// Decides one call and records the decision before answering. A decision that cannot be
/// recorded answers 503 (fail closed), never an unrecorded allow.
pub async fn authorize(
    state: &AppState,
    caller: &AgentSnapshot,
    call: ProposedCall,
) -> ApiResult<Authorization> {
    let action_hash = ActionRef {
        tool: &call.tool,
        action: &call.action,
        resource: call.resource.as_deref(),
        mutates_state: call.claimed_mutates_state.unwrap_or(false),
        parameters: call.parameters.as_ref(),
    }
    .hash()
    .map_err(|e| ApiError::invalid_field("tool_call.parameters", e.to_string()))?;

    let agent = &caller.agent;
    let tenant = state
        .tenants
        .get(state.store.as_ref(), &agent.tenant_id)
        .await?;
    // Unset limits cost these two `Option` checks: no lock and no lookup.
    let throttle =
        AgentLimits::resolve(caller.rate, tenant.rate, tenant.mutating_budget).map(|limits| {
            Throttle {
                limiters: &state.limiters,
                agent_id: &agent.id,
                limits,
            }
        });
    let (outcome, registered, retry_after_ms) = decide_call(
        &tenant,
        AgentFacts {
            principal: &caller.principal,
            frozen_reason: agent.status_reason.as_deref(),
        },
        CallSubject {
            tool: &call.tool,
            action: &call.action,
            target: call.resource.as_deref(),
            claimed_mutates_state: call.claimed_mutates_state,
            source_trust: call.source_trust,
        },
        throttle,
    );
    let outcome = match call.denied_because {
        // The limit is checked before anything else is judged; its deny says so.
        Some(reason) if retry_after_ms.is_none() => DecisionOutcome {
            verdict: Verdict::Deny,
            reason,
            matched_policies: Vec::new(),
            ..outcome
        },
        _ => outcome,
    };

    let escalation = *tenant.escalation.read();
    let decision_id = crate::auth::new_id("dec");
    // Only a call the policy sends to people, or one that names an approval, meets the
    // approval rules: every other call records exactly as before.
    let approval = (outcome.verdict == Verdict::RequireApproval || call.approval_id.is_some())
        .then(|| {
            ApprovalGate::new(
                call.approval_id,
                crate::auth::new_id(APPROVAL_ID_PREFIX),
                call.parameters
                    .unwrap_or_else(|| Value::Object(Default::default())),
            )
        });
    let recorded = state
        .store
        .record_decision(NewDecision {
            id: decision_id.clone(),
            tenant_id: agent.tenant_id.clone(),
            agent_id: agent.id.clone(),
            request_id: call.request_id,
            tool: call.tool,
            action: call.action,
            resource: call.resource,
            mutates_state: outcome.mutates_state,
            egress: registered.is_some_and(|r| r.egress),
            sensitive: registered.is_some_and(|r| r.sensitive),
            contained: outcome.contained,
            throttled: retry_after_ms.is_some(),
            risk: outcome.risk,
            source_trust: call.source_trust,
            verdict: outcome.verdict,
            risk_score: outcome.risk_score,
            reason: outcome.reason,
            matched_policies: outcome.matched_policies,
            action_hash: action_hash.clone(),
            trace: call.trace,
            created_at_ms: crate::now_ms(),
            escalation,
            agent_version: agent.version,
            approval,
            tool_definition_hash: call.tool_definition_hash,
        })
        .await
        .map_err(|error| match error {
            StoreError::ChainBroken(_) => ApiError::from(error),
            StoreError::Conflict(message) => ApiError {
                field: Some("request_id".into()),
                ..ApiError::conflict(message)
            },
            error => {
                tracing::error!(%error, agent_id = %agent.id, "decision not recorded; answering 503 (fail closed)");
                ApiError::unavailable("the decision could not be recorded; treat the call as denied")
            }
        })?;

    // The answer is what was recorded: a retry's first decision (with that call's receipt),
    // or this one as the writer left it (a decision made from a stale agent was recorded as
    // a deny, and this replica's cached agent is stale too; an approval may have turned the
    // verdict into an allow (consumed) or a deny (refused)).
    let (decision_id, verdict, risk_score, reason, matched_policies) = match recorded.replayed {
        Some(prior) => (
            prior.decision_id,
            prior.verdict,
            prior.risk_score,
            prior.reason,
            prior.matched_policies,
        ),
        None => {
            if let Some(risk_tier) = recorded.escalated_to {
                tracing::info!(agent_id = %agent.id, %risk_tier, "risk tier escalated after repeated denials");
                // The writer committed the new tier. The snapshot this request started from
                // may be older than a change committed since (a freeze): never write it back;
                // the next call loads the committed row.
                state.agents.forget(&agent.id);
            }
            if let Some(reason) = &recorded.stale_agent {
                tracing::warn!(agent_id = %agent.id, %reason, "decision made from a stale agent; recorded and answered as a deny");
                state.agents.forget(&agent.id);
            }
            (
                decision_id,
                recorded.verdict,
                outcome.risk_score,
                recorded.reason,
                recorded.matched_policies,
            )
        }
    };
    tenant.decisions.count(verdict);
    crate::traces::record_decision(&decision_id, verdict);
    Ok(Authorization {
        decision_id,
        verdict,
        risk_score,
        reason,
        matched_policies,
        action_hash,
        receipt_id: recorded.receipt_id,
        receipt_hash: recorded.receipt_hash,
        receipt_prev_hash: recorded.prev_hash,
        receipt_seq: recorded.receipt_seq,
        event_seq: recorded.event_seq,
        approval: recorded.approval.map(|answer| answer.approval),
        retry_after_ms,
    })
}

/// Whether the tenant's policies could ever let this agent make this call: it is not
/// denied even from the most trusted source, with the tenant's registered facts. Nothing
/// is recorded; MCP listings leave out the tools this answers `false` for.
pub async fn may_ever_call(
    state: &AppState,
    caller: &AgentSnapshot,
    tool: &str,
    action: &str,
) -> ApiResult<bool> {
    let tenant = state
        .tenants
        .get(state.store.as_ref(), &caller.agent.tenant_id)
        .await?;
    let (outcome, _, _) = decide_call(
        &tenant,
        // A freeze is lifted by an operator; it does not make a tool one the agent may never
        // call (its calls are denied, and recorded, meanwhile).
        AgentFacts {
            principal: &caller.principal,
            frozen_reason: None,
        },
        CallSubject {
            tool,
            action,
            target: None,
            claimed_mutates_state: None,
            source_trust: SourceTrust::TrustedInternalSigned,
        },
        // A listing takes nothing from the agent's buckets.
        None,
    );
    Ok(outcome.verdict != Verdict::Deny)
}

/// What a call is about, as the tenant's policies judge it.
struct CallSubject<'a> {
    tool: &'a str,
    action: &'a str,
    /// The resource the call names (`tool_call.resource`).
    target: Option<&'a str>,
    claimed_mutates_state: Option<bool>,
    source_trust: SourceTrust,
}

/// The agent's rate limit and budget, when it has any.
#[derive(Clone, Copy)]
struct Throttle<'a> {
    limiters: &'a Limiters,
    agent_id: &'a str,
    limits: AgentLimits,
}

/// The tenant's policy decision on one call, with the registration it used and, when the
/// agent's rate limit or budget refused the call before policy, the milliseconds until it
/// may call again. A frozen agent is answered as frozen and takes nothing from its buckets.
/// A registered action's Cedar entity was built with the catalog; any other name a client
/// sent is built for this call only, so client input never grows a cache. The catalog's
/// guard is dropped on return, before anything is awaited.
fn decide_call(
    tenant: &TenantRuntime,
    agent: AgentFacts<'_>,
    call: CallSubject<'_>,
    throttle: Option<Throttle<'_>>,
) -> (DecisionOutcome, Option<RegisteredAction>, Option<u64>) {
    let catalog = tenant.tools.load();
    let registration = catalog
        .get(call.tool)
        .and_then(|actions| actions.get(call.action));
    let unregistered;
    let resource = match registration {
        Some(action) => &action.resource,
        None => {
            unregistered = PolicyResource::new(call.tool, call.action);
            &unregistered
        }
    };
    let registered = registration.map(|action| action.facts);
    let facts = CallFacts {
        resource,
        target: call.target,
        claimed_mutates_state: call.claimed_mutates_state,
        source_trust: call.source_trust,
        registered,
    };
    let refused = throttle
        .filter(|_| agent.principal.status() == AgentStatus::Active)
        .and_then(|throttle| {
            let (mutates_state, _) = facts.assessed();
            throttle
                .limiters
                .admit(throttle.agent_id, throttle.limits, mutates_state)
                .err()
        });
    match refused {
        Some(over) => (
            over_limit(agent, facts, over.policy_id, over.reason),
            registered,
            Some(over.retry_after_ms),
        ),
        None => (
            decide(&tenant.engine.load(), agent, facts),
            registered,
            None,
        ),
    }
}
