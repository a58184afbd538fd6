//! `POST /v1/authorize`: the hot path. Token → cached agent → cached tenant policy → pure
//! decision → one group-committed write (decision + event + receipt) → answer.

use crate::auth::AgentCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::openapi::{AgentErrors, BodyRefused, Conflict, Invalid, StoreErrors, Unreadable};
use crate::state::SharedState;
use crate::validate::Text;
use crate::validate::{APPROVAL_ID_PREFIX, ApprovalId};
use aegis_core::approval::ApprovalStatus;
use aegis_core::canonical::ActionRef;
use aegis_core::decision::{AgentFacts, CallFacts, decide};
use aegis_core::model::{SourceTrust, Verdict};
use aegis_core::policy::PolicyResource;
use aegis_core::timestamp::format_millis;
use aegis_store::approvals::{ApprovalGate, ApprovalRef};
use aegis_store::{NewDecision, StoreError, TraceContext};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A proposed tool call. Also accepts the request shape of existing AegisAgent SDKs (an
/// `agent` block, which is ignored: identity comes from the token).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Client-chosen id of this call, echoed in the decision record. Repeating a call with
    /// the same id (a retry) answers the decision recorded the first time, unless the agent
    /// has been frozen or changed since; reusing it for a different call is a 409.
    #[schema(inline)]
    pub request_id: Option<Name>,
    pub tool_call: ToolCall,
    #[serde(default)]
    pub context: CallContext,
    pub trace: Option<Trace>,
    /// The approval this call uses (optional: an identical repeated call finds its approved
    /// approval by itself). A call that names an approval it cannot use is denied.
    pub approval_id: Option<ApprovalId>,
    /// Ignored: the agent is identified by its token alone.
    #[schema(value_type = Option<Object>)]
    pub agent: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    #[schema(inline)]
    pub tool: Name,
    #[schema(inline)]
    pub action: Name,
    #[schema(inline)]
    pub resource: Option<Text<1024>>,
    /// Must be a JSON object when present.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// The client's claim; a registered action's server-side value wins, the claim may only tighten it.
    pub mutates_state: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallContext {
    /// Provenance of the content that triggered the call; absent means `unknown`.
    pub source_trust: Option<SourceTrust>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    #[schema(inline)]
    pub run_id: Option<Name>,
    #[schema(inline)]
    pub trace_id: Option<Name>,
    #[schema(inline)]
    pub parent_run_id: Option<Name>,
    /// Trust at the root of a multi-hop run: it can only tighten `context.source_trust`.
    pub root_trust_level: Option<SourceTrust>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeResponse {
    pub decision_id: String,
    pub decision: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    pub action_hash: String,
    pub receipt: ReceiptRef,
    /// Position of the decision in the event log.
    pub event_seq: i64,
    /// The approval the decision asked for (`require_approval`: pending), used (`allow`:
    /// consumed) or refused to use (`deny`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRefView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalRefView {
    pub id: String,
    pub status: ApprovalStatus,
    pub expires_at: String,
    pub action_hash: String,
}

impl From<ApprovalRef> for ApprovalRefView {
    fn from(approval: ApprovalRef) -> Self {
        ApprovalRefView {
            id: approval.id,
            status: approval.status,
            expires_at: format_millis(approval.expires_at_ms),
            action_hash: approval.action_hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptRef {
    pub id: String,
    pub hash: String,
    pub prev_hash: String,
    pub seq: u64,
}

/// Tool, action, request and trace ids.
type Name = Text<128>;

/// Decide one tool call and record the decision durably before answering.
#[utoipa::path(
    post, path = "/v1/authorize", tag = "action plane",
    request_body = AuthorizeRequest,
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The decision (allow, deny or require_approval), already on disk", body = AuthorizeResponse),
        AgentErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        BodyRefused,
        Conflict,
    )
)]
pub async fn authorize(
    State(state): State<SharedState>,
    AgentCaller(caller): AgentCaller,
    JsonBody(request): JsonBody<AuthorizeRequest>,
) -> ApiResult<Json<AuthorizeResponse>> {
    let call = &request.tool_call;
    if call.parameters.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(ApiError::invalid_field(
            "tool_call.parameters",
            "must be a JSON object",
        ));
    }
    let trace = request.trace.as_ref();

    let action_hash = ActionRef {
        tool: &call.tool,
        action: &call.action,
        resource: call.resource.as_deref(),
        mutates_state: call.mutates_state.unwrap_or(false),
        parameters: call.parameters.as_ref(),
    }
    .hash()
    .map_err(|e| ApiError::invalid_field("tool_call.parameters", e.to_string()))?;

    let agent = &caller.agent;
    let tenant = state
        .tenants
        .get(state.store.as_ref(), &agent.tenant_id)
        .await?;
    let claimed_trust = request.context.source_trust.unwrap_or(SourceTrust::Unknown);
    let source_trust = match trace.and_then(|t| t.root_trust_level) {
        Some(root) => claimed_trust.tighten(root),
        None => claimed_trust,
    };
    // The catalog's guard is dropped before the write below is awaited.
    let (outcome, registered) = {
        let catalog = tenant.tools.load();
        let registration = catalog
            .get(&*call.tool)
            .and_then(|actions| actions.get(&*call.action));
        // A registered action's entity was built with the catalog; any other name the client
        // sent is built for this call only, so client input never grows a cache.
        let unregistered;
        let resource = match registration {
            Some(action) => &action.resource,
            None => {
                unregistered = PolicyResource::new(&call.tool, &call.action);
                &unregistered
            }
        };
        let registered = registration.map(|action| action.facts);
        let outcome = decide(
            &tenant.engine.load(),
            AgentFacts {
                principal: &caller.principal,
                frozen_reason: agent.status_reason.as_deref(),
            },
            CallFacts {
                resource,
                target: call.resource.as_deref(),
                claimed_mutates_state: call.mutates_state,
                source_trust,
                registered,
            },
        );
        (outcome, registered)
    };

    let escalation = *tenant.escalation.read();
    let decision_id = crate::auth::new_id("dec");
    // The request is no longer needed: its strings move into the record instead of copies.
    let AuthorizeRequest {
        request_id,
        tool_call,
        trace,
        approval_id,
        ..
    } = request;
    let trace = trace.unwrap_or_default();
    // Only a call the policy sends to people, or one that names an approval, meets the
    // approval rules: every other call records exactly as before.
    let approval =
        (outcome.verdict == Verdict::RequireApproval || approval_id.is_some()).then(|| {
            ApprovalGate::new(
                approval_id.map(ApprovalId::into_string),
                crate::auth::new_id(APPROVAL_ID_PREFIX),
                tool_call
                    .parameters
                    .unwrap_or_else(|| Value::Object(Default::default())),
            )
        });
    let recorded = state
        .store
        .record_decision(NewDecision {
            id: decision_id.clone(),
            tenant_id: agent.tenant_id.clone(),
            agent_id: agent.id.clone(),
            request_id: request_id.map(Text::into_string),
            tool: tool_call.tool.into_string(),
            action: tool_call.action.into_string(),
            resource: tool_call.resource.map(Text::into_string),
            mutates_state: outcome.mutates_state,
            egress: registered.is_some_and(|r| r.egress),
            sensitive: registered.is_some_and(|r| r.sensitive),
            contained: outcome.contained,
            risk: outcome.risk,
            source_trust,
            verdict: outcome.verdict,
            risk_score: outcome.risk_score,
            reason: outcome.reason,
            matched_policies: outcome.matched_policies,
            action_hash: action_hash.clone(),
            trace: TraceContext {
                run_id: trace.run_id.map(Text::into_string),
                trace_id: trace.trace_id.map(Text::into_string),
                parent_run_id: trace.parent_run_id.map(Text::into_string),
            },
            created_at_ms: crate::now_ms(),
            escalation,
            agent_version: agent.version,
            approval,
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
    Ok(Json(AuthorizeResponse {
        decision_id,
        decision: verdict,
        risk_score,
        reason,
        matched_policies,
        action_hash,
        receipt: ReceiptRef {
            id: recorded.receipt_id,
            hash: recorded.receipt_hash,
            prev_hash: recorded.prev_hash,
            seq: recorded.receipt_seq,
        },
        event_seq: recorded.event_seq,
        approval: recorded.approval.map(|answer| answer.approval.into()),
    }))
}
