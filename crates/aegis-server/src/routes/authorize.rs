//! `POST /v1/authorize`: the hot path. Token → cached agent → the authorize use case
//! ([`crate::action_plane`]: cached tenant policy → pure decision → one group-committed write
//! of decision, event and receipt) → answer.

use crate::action_plane::{ProposedCall, authorize as authorize_call};
use crate::auth::AgentCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::openapi::{AgentErrors, BodyRefused, Conflict, Invalid, StoreErrors, Unreadable};
use crate::state::SharedState;
use crate::validate::ApprovalId;
use crate::validate::{Resource, Text};
use aegis_core::approval::ApprovalStatus;
use aegis_core::model::{SourceTrust, Verdict};
use aegis_core::timestamp::format_millis;
use aegis_store::TraceContext;
use aegis_store::approvals::ApprovalRef;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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
    pub resource: Option<Resource>,
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
    /// Only on a deny of the agent's rate limit (reason `rate_limited: …`) or budget
    /// (`budget_exceeded: …`): milliseconds until the agent may call again. A retry with
    /// the same `request_id` is decided afresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub retry_after_ms: Option<u64>,
}

/// Room for an answer: about 500 bytes, 650 with an approval. Axum's `Json`
/// starts at 128 bytes and grew its buffer twice for every answer, copying it each time
/// (about 5,000 instructions a call under callgrind).
const ANSWER_CAPACITY: usize = 1024;

impl IntoResponse for AuthorizeResponse {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(ANSWER_CAPACITY);
        match serde_json::to_writer(&mut body, &self) {
            Ok(()) => {
                let json = HeaderValue::from_static("application/json");
                ([(CONTENT_TYPE, json)], body).into_response()
            }
            // Strings, numbers and enums always serialise; if a field ever could not, the
            // caller gets the API's error shape rather than half an answer.
            Err(error) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the decision is recorded, but its answer could not be written: {error}"),
            )
            .into_response(),
        }
    }
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
) -> ApiResult<AuthorizeResponse> {
    if request
        .tool_call
        .parameters
        .as_ref()
        .is_some_and(|p| !p.is_object())
    {
        return Err(ApiError::invalid_field(
            "tool_call.parameters",
            "must be a JSON object",
        ));
    }
    let claimed_trust = request.context.source_trust.unwrap_or(SourceTrust::Unknown);
    let source_trust = match request.trace.as_ref().and_then(|t| t.root_trust_level) {
        Some(root) => claimed_trust.tighten(root),
        None => claimed_trust,
    };
    // The request is no longer needed: its strings move into the call instead of copies.
    let AuthorizeRequest {
        request_id,
        tool_call,
        trace,
        approval_id,
        ..
    } = request;
    let trace = trace.unwrap_or_default();
    let decided = authorize_call(
        &state,
        &caller,
        ProposedCall {
            request_id: request_id.map(Text::into_string),
            tool: tool_call.tool.into_string(),
            action: tool_call.action.into_string(),
            resource: tool_call.resource.map(Text::into_string),
            parameters: tool_call.parameters,
            claimed_mutates_state: tool_call.mutates_state,
            source_trust,
            trace: TraceContext {
                run_id: trace.run_id.map(Text::into_string),
                trace_id: trace.trace_id.map(Text::into_string),
                parent_run_id: trace.parent_run_id.map(Text::into_string),
            },
            approval_id: approval_id.map(ApprovalId::into_string),
            denied_because: None,
            tool_definition_hash: None,
        },
    )
    .await?;
    Ok(AuthorizeResponse {
        decision_id: decided.decision_id,
        decision: decided.verdict,
        risk_score: decided.risk_score,
        reason: decided.reason,
        matched_policies: decided.matched_policies,
        action_hash: decided.action_hash,
        receipt: ReceiptRef {
            id: decided.receipt_id,
            hash: decided.receipt_hash,
            prev_hash: decided.receipt_prev_hash,
            seq: decided.receipt_seq,
        },
        event_seq: decided.event_seq,
        approval: decided.approval.map(Into::into),
        retry_after_ms: decided.retry_after_ms,
    })
}
