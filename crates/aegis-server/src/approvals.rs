//! What people and agents do with approvals, below every adapter (API routes, console,
//! Slack callback): decide one, and wait for one to be decided. The rules are
//! `aegis_core::approval`; the store applies them in its transactions.

use crate::auth::ApprovalReader;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use aegis_core::approval::{ApprovalStatus, Verdict};
use aegis_core::model::Role;
use aegis_soc::slack_actions::Click;
use aegis_store::approvals::{ApprovalDecision, ApprovalRecord, ApprovalVote};
use aegis_store::{StoreError, StoreResult, TenantId};
use std::time::Duration;

/// The longest an agent may wait on one request (`?wait_secs`).
pub const MAX_WAIT_SECS: u32 = 60;

/// The operator key that decides: its id, and its name as people know it.
pub struct DecidingKey {
    pub id: String,
    pub name: Option<String>,
}

/// Records an operator key's approval or rejection. The approver is the key that made the
/// call, never a name the caller chose; a key without a name is shown by its id.
pub async fn decide(
    state: &SharedState,
    tenant: &TenantId,
    key: DecidingKey,
    approval_id: &str,
    verdict: Verdict,
    reason: Option<String>,
) -> StoreResult<ApprovalRecord> {
    let vote = ApprovalVote {
        key_name: key.name.unwrap_or_else(|| key.id.clone()),
        key_id: key.id,
        at_ms: crate::now_ms(),
        reason,
    };
    let decided = state
        .store
        .decide_approval(tenant, approval_id, ApprovalDecision { verdict, vote })
        .await?;
    tracing::info!(approval_id, status = %decided.status, "approval decided");
    Ok(decided)
}

/// The approval as `reader` may see it (an agent only its own: others answer 404 as if
/// absent), after waiting up to `wait` for its status to leave `pending`.
///
/// Waiting costs no polling loop: it wakes on each commit the store publishes
/// (`EventLog::committed_seq`, which on PostgreSQL also follows other replicas' commits) and
/// re-reads only then, so an answer leaves as soon as the decision is committed.
pub async fn watch(
    state: &SharedState,
    reader: &ApprovalReader,
    approval_id: &str,
    wait: Duration,
) -> ApiResult<ApprovalRecord> {
    // Subscribed before the first read, so a decision committed in between still wakes us.
    let mut commits = state.store.committed_seq();
    let read = || async {
        let approval = state.store.approval(reader.tenant(), approval_id).await?;
        if reader.may_see(&approval.agent_id) {
            Ok(approval)
        } else {
            Err(ApiError::not_found("approval"))
        }
    };
    let first = read().await?;
    if first.status != ApprovalStatus::Pending || wait.is_zero() {
        return Ok(first);
    }
    // Time alone ends a pending approval at its expiry: no commit announces that.
    let until_expiry = u64::try_from(first.expires_at_ms - crate::now_ms()).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + wait.min(Duration::from_millis(until_expiry));
    loop {
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
        let current = read().await?;
        if current.status != first.status {
            return Ok(current);
        }
    }
    read().await
}

/// Applies a Slack button click under exactly the rules of the API: the Slack user acts as
/// the operator key an admin registered for them (`POST /v1/slack/approvers`), which must
/// still be active and a responder or admin. Returns what to tell the clicker; a click that
/// changes nothing says why.
pub async fn decide_from_slack(state: &SharedState, click: Click) -> StoreResult<String> {
    if TenantId::validate(&click.tenant_id).is_err() {
        return Ok("This button does not belong to an AegisAgent approval.".to_owned());
    }
    let tenant = TenantId::new(click.tenant_id.as_str());
    let key = state
        .store
        .slack_approver(&tenant, &click.slack_user_id)
        .await?
        .filter(|key| key.revoked_at_ms.is_none() && key.role.grants(Role::Responder));
    let Some(key) = key else {
        tracing::warn!(tenant = %tenant, slack_user = %click.slack_user_id, "Slack click from a user who may not decide approvals");
        return Ok("You are not registered to decide approvals; nothing was changed.".to_owned());
    };
    let verdict = if click.approve {
        Verdict::Approve
    } else {
        Verdict::Reject
    };
    let deciding = DecidingKey {
        id: key.id,
        name: key.name,
    };
    let name = deciding.name.clone().unwrap_or_else(|| deciding.id.clone());
    match decide(state, &tenant, deciding, &click.approval_id, verdict, None).await {
        Ok(approval) => Ok(format!(
            "Approval {} is {} ({} of {} approvals) — by {name} via Slack.",
            approval.id,
            approval.status,
            approval.approvals.len(),
            approval.required
        )),
        Err(StoreError::Conflict(why)) => Ok(format!(
            "Approval {} was not changed: {why}.",
            click.approval_id
        )),
        Err(StoreError::NotFound(_)) => Ok(format!(
            "Approval {} does not exist; nothing was changed.",
            click.approval_id
        )),
        Err(error) => Err(error),
    }
}
