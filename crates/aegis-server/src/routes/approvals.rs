//! Approvals: the calls people are asked to allow. Operators list, read, approve and reject
//! them; an agent reads (and waits on) its own.

use crate::approvals::{MAX_WAIT_SECS, watch};
use crate::auth::{ApprovalReader, Approver, Operator, Responder, Viewer};
use crate::error::ApiResult;
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::{
    Conflict, Invalid, JsonWriteErrors, NotFound, OperatorErrors, StoreErrors, Unreadable,
};
use crate::operations;
use crate::routes::agents::ReasonBody;
use crate::routes::{Bounded, Cursor, DEFAULT_LIMIT, Limit, Listed, page};
use crate::state::SharedState;
use crate::validate::{Text, Timestamp};
use aegis_core::approval::{ApprovalStatus, Verdict};
use aegis_core::model::ActionRisk;
use aegis_core::timestamp::format_millis;
use aegis_store::approvals::{ApprovalFilter, ApprovalRecord, ApprovalVote};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The call a person is asked to allow, and where that stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    pub agent_id: String,
    pub status: ApprovalStatus,
    /// The hash of the exact call approved: only a call with this hash can use it.
    pub action_hash: String,
    /// The `require_approval` decision that asked for it.
    pub decision_id: String,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    /// The call's parameters exactly as the agent sent them (agent-controlled data).
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub risk_score: u8,
    /// Why the policy asked for approval.
    pub reason: String,
    pub run_id: Option<String>,
    /// How many distinct operator keys must approve (1, or 2 under the two-person rule).
    pub approvals_required: u8,
    pub created_at: String,
    pub expires_at: String,
    /// The operator keys that approved, in order.
    pub approvals: Vec<VoteView>,
    /// The operator key that rejected it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<VoteView>,
    /// The allow that used it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_by_decision_id: Option<String>,
}

/// One operator key's approval or rejection.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteView {
    pub key_id: String,
    /// The key's name (its id when it has none).
    pub key_name: String,
    pub at: String,
    pub reason: Option<String>,
}

impl From<ApprovalVote> for VoteView {
    fn from(vote: ApprovalVote) -> Self {
        VoteView {
            key_id: vote.key_id,
            key_name: vote.key_name,
            at: format_millis(vote.at_ms),
            reason: vote.reason,
        }
    }
}

impl From<ApprovalRecord> for ApprovalView {
    fn from(a: ApprovalRecord) -> Self {
        ApprovalView {
            id: a.id,
            agent_id: a.agent_id,
            status: a.status,
            action_hash: a.action_hash,
            decision_id: a.decision_id,
            tool: a.tool,
            action: a.action,
            resource: a.resource,
            parameters: a.parameters,
            mutates_state: a.mutates_state,
            risk: a.risk,
            risk_score: a.risk_score,
            reason: a.reason,
            run_id: a.run_id,
            approvals_required: a.required,
            created_at: format_millis(a.created_at_ms),
            expires_at: format_millis(a.expires_at_ms),
            approvals: a.approvals.into_iter().map(VoteView::from).collect(),
            rejected_by: a.rejected_by.map(VoteView::from),
            consumed_by_decision_id: a.consumed_by_decision_id,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// Status as of now (a pending approval past its expiry is `expired`).
    pub status: Option<ApprovalStatus>,
    #[param(inline)]
    pub agent_id: Option<Text<128>>,
    /// RFC 3339; requested at or after.
    #[param(inline)]
    pub since: Option<Timestamp>,
    #[param(inline)]
    pub limit: Option<Limit>,
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

/// The tenant's approvals, newest first: a bare JSON array.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Approvals, newest first", body = [ApprovalView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_approvals(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<ApprovalQuery>,
) -> ApiResult<Listed<ApprovalView>> {
    let page = page(query.limit, query.cursor, DEFAULT_LIMIT);
    let filter = ApprovalFilter {
        status: query.status,
        agent_id: query.agent_id.map(Text::into_string),
        since_ms: Timestamp::millis(query.since),
        page: page.with_next_row(),
    };
    let rows = state.store.list_approvals(&operator.tenant, filter).await?;
    Ok(Listed::paged(
        rows,
        page,
        |a| a.requested_seq,
        ApprovalView::from,
    ))
}

/// Seconds to wait for a pending approval to be decided, 0 to [`MAX_WAIT_SECS`].
pub type WaitSecs = Bounded<0, MAX_WAIT_SECS>;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Long-poll: answer as soon as the status leaves `pending`, or after this many seconds
    /// (at most 60) with the approval as it stands.
    #[param(inline)]
    pub wait_secs: Option<WaitSecs>,
}

/// One approval, for an operator (viewer and up) or for the agent that asked (its own only;
/// another agent's answers 404). With `wait_secs`, waits for a decision.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path), WaitQuery),
    security(("operator_key" = []), ("agent_token" = [])),
    responses(
        (status = 200, description = "The approval", body = ApprovalView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn get_approval(
    State(state): State<SharedState>,
    reader: ApprovalReader,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<WaitQuery>,
) -> ApiResult<Json<ApprovalView>> {
    let wait = Duration::from_secs(u64::from(WaitSecs::or(query.wait_secs, 0)));
    let approval = watch(&state, &reader, &id, wait).await?;
    Ok(Json(approval.into()))
}

/// Approve the call (responder or admin). Under the two-person rule the approval stays
/// pending until a second, different key approves. 409 unless pending, or if this key
/// already approved it.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path)), request_body = Option<ReasonBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The approval after this vote", body = ApprovalView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn approve(
    State(state): State<SharedState>,
    Approver(operator): Approver,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<ApprovalView>> {
    vote(&state, operator, &id, Verdict::Approve, body).await
}

/// Reject the call (responder or admin); 409 unless pending.
#[utoipa::path(post, path = "/v1/approvals/{id}/reject", tag = "approvals", params(("id" = String, Path)), request_body = Option<ReasonBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The rejected approval", body = ApprovalView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn reject(
    State(state): State<SharedState>,
    Approver(operator): Approver,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<ApprovalView>> {
    vote(&state, operator, &id, Verdict::Reject, body).await
}

async fn vote(
    state: &SharedState,
    operator: Operator<Responder>,
    id: &str,
    verdict: Verdict,
    body: ReasonBody,
) -> ApiResult<Json<ApprovalView>> {
    let reason = body.reason.map(Text::into_string);
    let decided = operations::decide_approval(state, &operator, id, verdict, reason).await?;
    Ok(Json(decided.into()))
}
