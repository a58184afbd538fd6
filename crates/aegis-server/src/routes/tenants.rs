//! Tenant settings.

use crate::auth::{Admin, Operator, Viewer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::state::SharedState;
use aegis_store::RiskEscalation;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Upper bounds keep the escalation check cheap and the window meaningful.
const MAX_THRESHOLD: u32 = 10_000;
const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RiskEscalationBody {
    /// Denies within the window that step the agent's risk tier up one level (1–10000).
    pub denial_threshold: u32,
    /// Length of the trailing window in minutes (1–10080).
    pub window_minutes: u32,
}

/// The tenant's risk-tier escalation settings.
#[utoipa::path(get, path = "/v1/tenants/risk-escalation", tag = "tenants", security(("operator_key" = [])),
    responses((status = 200, body = RiskEscalationBody)))]
pub async fn get_risk_escalation(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<RiskEscalationBody>> {
    let settings = state.store.tenant(&operator.tenant).await?;
    Ok(Json(RiskEscalationBody {
        denial_threshold: settings.risk_escalation.denial_threshold,
        window_minutes: settings.risk_escalation.window_minutes,
    }))
}

/// Change the escalation settings (admin).
#[utoipa::path(put, path = "/v1/tenants/risk-escalation", tag = "tenants", request_body = RiskEscalationBody,
    security(("operator_key" = [])),
    responses((status = 200, body = RiskEscalationBody), (status = 422, body = ErrorBody)))]
pub async fn put_risk_escalation(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<RiskEscalationBody>,
) -> ApiResult<Json<RiskEscalationBody>> {
    if !(1..=MAX_THRESHOLD).contains(&body.denial_threshold) {
        return Err(ApiError::invalid_field(
            "denial_threshold",
            format!("must be between 1 and {MAX_THRESHOLD}"),
        ));
    }
    if !(1..=MAX_WINDOW_MINUTES).contains(&body.window_minutes) {
        return Err(ApiError::invalid_field(
            "window_minutes",
            format!("must be between 1 and {MAX_WINDOW_MINUTES}"),
        ));
    }
    let escalation = RiskEscalation {
        denial_threshold: body.denial_threshold,
        window_minutes: body.window_minutes,
    };
    let runtime = state
        .tenants
        .get(state.store.as_ref(), &operator.tenant)
        .await?;
    let _serialised = runtime.change_lock.lock().await;
    state
        .store
        .set_risk_escalation(&operator.tenant, escalation)
        .await?;
    *runtime.escalation.write() = escalation;
    Ok(Json(body))
}
