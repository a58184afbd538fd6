//! What an operator does, written once: each function here is one act of the runbook
//! (freeze an agent, rotate its token, acknowledge or close an incident...). The API handlers
//! and the console both call these and only translate their own input and output, so a rule
//! such as "a freeze without a reason names the operator" or "a changed agent leaves the
//! token cache" cannot differ between the two. The role each act needs is in its signature:
//! only an [`Operator`] of that role (or above) can be passed.

use crate::approvals::{DecidingKey, decide};
use crate::auth::{AGENT_TOKEN_PREFIX, Admin, Operator, Responder, new_secret};
use crate::error::ApiResult;
use crate::state::SharedState;
use aegis_core::approval::Verdict;
use aegis_store::approvals::ApprovalRecord;
use aegis_store::{Agent, AgentChange, AgentChangeKind, IncidentDetail, IncidentStep};

/// Freezes an agent: its calls are denied (and recorded) until it is unfrozen.
pub async fn freeze_agent(
    state: &SharedState,
    operator: &Operator<Responder>,
    agent_id: &str,
    reason: Option<String>,
) -> ApiResult<Agent> {
    let reason = reason.unwrap_or_else(|| format!("frozen by operator {}", operator.actor()));
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::Freeze { reason },
    )
    .await
}

/// Unfreezes a frozen agent (a revoked one stays revoked: conflict).
pub async fn unfreeze_agent(
    state: &SharedState,
    operator: &Operator<Responder>,
    agent_id: &str,
) -> ApiResult<Agent> {
    change_agent(state, operator, agent_id, AgentChangeKind::Unfreeze).await
}

/// Revokes an agent for good: its tokens answer 401 from then on.
pub async fn revoke_agent(
    state: &SharedState,
    operator: &Operator<Admin>,
    agent_id: &str,
    reason: Option<String>,
) -> ApiResult<Agent> {
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::Revoke { reason },
    )
    .await
}

/// Issues the agent a new token and returns it (shown once; only its hash is kept). The old
/// token answers 401 at once.
pub async fn rotate_agent_token(
    state: &SharedState,
    operator: &Operator<Admin>,
    agent_id: &str,
) -> ApiResult<String> {
    let (token, new_token_hash) = new_secret(AGENT_TOKEN_PREFIX)?;
    change_agent(
        state,
        operator,
        agent_id,
        AgentChangeKind::RotateToken { new_token_hash },
    )
    .await?;
    Ok(token)
}

/// Applies a committed change to an agent and drops it from the token cache, so the next
/// authorize call reads the changed row (see `AgentDirectory::forget`).
pub async fn change_agent<R>(
    state: &SharedState,
    operator: &Operator<R>,
    agent_id: &str,
    kind: AgentChangeKind,
) -> ApiResult<Agent> {
    let change = AgentChange {
        kind,
        actor: operator.actor(),
        at_ms: crate::now_ms(),
    };
    let agent = state
        .store
        .change_agent(&operator.tenant, agent_id, change)
        .await?;
    state.agents.forget(agent_id);
    Ok(agent)
}

/// Moves an incident on (acknowledge, close, apply its recommendation), recording who did
/// it; an agent the step contained leaves the token cache.
pub async fn step_incident(
    state: &SharedState,
    operator: &Operator<Responder>,
    incident_id: &str,
    step: IncidentStep,
) -> ApiResult<IncidentDetail> {
    let (detail, agent) = state
        .store
        .step_incident(&operator.tenant, incident_id, step, &operator.actor())
        .await?;
    if let Some(agent) = agent {
        state.agents.forget(&agent.id);
    }
    Ok(detail)
}

/// Approves or rejects a call as the operator's own key: the approver recorded (and named
/// in the receipt) is the key that acted, never a name the caller typed.
pub async fn decide_approval(
    state: &SharedState,
    operator: &Operator<Responder>,
    approval_id: &str,
    verdict: Verdict,
    reason: Option<String>,
) -> ApiResult<ApprovalRecord> {
    let key = DecidingKey {
        id: operator.key_id.clone(),
        name: operator.key_name.clone(),
    };
    Ok(decide(state, &operator.tenant, key, approval_id, verdict, reason).await?)
}
