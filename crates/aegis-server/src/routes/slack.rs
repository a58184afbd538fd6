//! Deciding approvals from Slack: which Slack user acts as which operator key, and the
//! endpoint Slack posts button clicks to.

use crate::approvals::decide_from_slack;
use crate::auth::{Admin, Operator};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::openapi::{BodyRefused, JsonWriteErrors, NotFound, StoreErrors};
use crate::state::SharedState;
use crate::validate::Text;
use aegis_core::model::Role;
use aegis_soc::slack_actions::{outcome_message, read_click, verify};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A Slack user who decides approvals as an operator key: `slack_user_id` is the Slack
/// member id (`U…`) as Slack sends it in interactive payloads, `key_id` the operator key
/// (responder or admin) that the approvals they make in Slack name.
// The fields carry no doc comments: utoipa turns a described inline field into an `allOf`
// of its schema and an object, which no value satisfies.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackApproverBody {
    #[schema(inline)]
    pub slack_user_id: Text<64>,
    #[schema(inline)]
    pub key_id: Text<128>,
}

/// Let a Slack user decide approvals as one of the tenant's responder or admin keys (admin).
#[utoipa::path(post, path = "/v1/slack/approvers", tag = "approvals", request_body = SlackApproverBody,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The Slack user now decides as this key", body = SlackApproverBody),
        JsonWriteErrors,
        NotFound,
    ))]
pub async fn register_approver(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<SlackApproverBody>,
) -> ApiResult<(StatusCode, Json<SlackApproverBody>)> {
    let keys = state.store.list_operator_keys(&operator.tenant).await?;
    let key = keys
        .iter()
        .find(|key| key.id == *body.key_id && key.revoked_at_ms.is_none())
        .ok_or_else(|| ApiError::not_found("operator key"))?;
    if !key.role.grants(Role::Responder) {
        return Err(ApiError::invalid_field(
            "key_id",
            "must be a responder or admin key: viewers cannot decide approvals",
        ));
    }
    state
        .store
        .put_slack_approver(&operator.tenant, &body.slack_user_id, &body.key_id)
        .await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Slack's interactive request: the form field `payload` holds its JSON.
#[derive(Deserialize, ToSchema)]
pub struct SlackInteraction {
    pub payload: String,
}

/// Slack posts Approve/Reject clicks here (set as the Slack app's interactivity URL). The
/// request must carry Slack's `v0` signature (`AEGIS_SLACK_SIGNING_SECRET`) and a timestamp
/// within five minutes; without the secret configured the route does not exist (404).
#[utoipa::path(post, path = "/v1/callbacks/slack", tag = "approvals",
    request_body(content = SlackInteraction, content_type = "application/x-www-form-urlencoded"),
    params(
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds, as Slack sends it"),
        ("X-Slack-Signature" = String, Header, description = "`v0=` and the hex HMAC-SHA256 of `v0:<timestamp>:<body>`"),
    ),
    responses(
        (status = 200, description = "The message that replaces the clicked one", body = Object),
        (status = 400, description = "Not a Slack interactive payload", body = crate::error::ErrorBody),
        (status = 401, description = "Not signed by Slack, or outside the five-minute window", body = crate::error::ErrorBody),
        (status = 404, description = "Slack is not configured (no signing secret)", body = crate::error::ErrorBody),
        BodyRefused,
        StoreErrors,
    ))]
pub async fn slack_callback(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Some(secret) = state.settings.slack_signing_secret.as_deref() else {
        return Err(ApiError::not_found("route"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify(
        secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        crate::now_ms() / 1000,
    )
    .map_err(|refused| ApiError::unauthorized(refused.to_string()))?;
    let unreadable = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "expected a form-encoded `payload` field holding Slack's interaction JSON",
        )
    };
    // Read only after the signature held: the bytes Slack signed are the bytes parsed.
    let form: SlackInteraction = serde_urlencoded::from_bytes(&body).map_err(|_| unreadable())?;
    let click = read_click(&form.payload).map_err(|_| unreadable())?;
    let text = match click {
        Some(click) => decide_from_slack(&state, click).await?,
        None => "Nothing to do for this action.".to_owned(),
    };
    Ok(Json(outcome_message(&text)))
}
