//! Rate limits and budgets of the action plane ([`crate::rate_limit`]): the tenant's token
//! bucket for each agent, an agent's own bucket, and the tenant's budget of calls that
//! change state. Like every settings `PUT`, each field is required and `null` clears it.

use crate::auth::{Admin, Operator, Viewer};
use crate::error::ApiResult;
use crate::extract::{JsonBody, Path};
use crate::openapi::{
    Conflict, JsonWriteErrors, NotFound, OperatorErrors, StoreErrors, Unreadable,
};
use crate::operations;
use crate::state::SharedState;
use crate::validate::optional_whole;
use aegis_store::{RateLimits, TenantSettings};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token bucket: `per_agent_per_sec` calls a second, `burst` at once. Over it, a call is
/// recorded as a deny (`rate_limited`) with `retry_after_ms`, before any policy.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsBody {
    /// Calls a second each agent may make (`rate_limit::MAX_PER_SEC`); null: no limit.
    #[schema(minimum = 1, maximum = 100000, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub per_agent_per_sec: Option<u32>,
    /// Calls an agent may make at once after a pause (`rate_limit::MAX_BURST`); null: one
    /// second's worth. Needs `per_agent_per_sec`.
    #[schema(minimum = 1, maximum = 1000000, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub burst: Option<u32>,
}

impl From<RateLimits> for RateLimitsBody {
    fn from(limits: RateLimits) -> Self {
        RateLimitsBody {
            per_agent_per_sec: limits.per_sec,
            burst: limits.burst,
        }
    }
}

impl From<RateLimitsBody> for RateLimits {
    fn from(body: RateLimitsBody) -> Self {
        RateLimits {
            per_sec: body.per_agent_per_sec,
            burst: body.burst,
        }
    }
}

/// The budget of calls that change state (`mutates_state`, as registered or claimed).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsBody {
    /// Such calls each agent may make per hour: that many at once, then refilled at that
    /// many an hour (`rate_limit::MAX_MUTATING_PER_HOUR`); over it, a call is recorded as a
    /// deny (`budget_exceeded`) with `retry_after_ms`. Null: no budget.
    #[schema(minimum = 1, maximum = 1000000, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub mutating_per_hour: Option<u32>,
}

impl From<TenantSettings> for BudgetsBody {
    fn from(settings: TenantSettings) -> Self {
        BudgetsBody {
            mutating_per_hour: settings.mutating_per_hour,
        }
    }
}

/// The token bucket of each agent without its own (null: no limit).
#[utoipa::path(get, path = "/v1/tenants/rate-limits", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tenant's rate limit", body = RateLimitsBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_rate_limits(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<RateLimitsBody>> {
    let settings = state.store.tenant(&operator.tenant).await?;
    Ok(Json(settings.rate_limits.into()))
}

/// Set the token bucket of each agent without its own (admin).
#[utoipa::path(put, path = "/v1/tenants/rate-limits", tag = "tenants", request_body = RateLimitsBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The rate limit now in force", body = RateLimitsBody),
        JsonWriteErrors,
    ))]
pub async fn put_rate_limits(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<RateLimitsBody>,
) -> ApiResult<Json<RateLimitsBody>> {
    let stored = operations::set_rate_limits(&state, &operator, body.into()).await?;
    Ok(Json(stored.rate_limits.into()))
}

/// Each agent's budget of calls that change state (null: none).
#[utoipa::path(get, path = "/v1/tenants/budgets", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tenant's budget", body = BudgetsBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_budgets(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<BudgetsBody>> {
    Ok(Json(state.store.tenant(&operator.tenant).await?.into()))
}

/// Set each agent's budget of calls that change state (admin).
#[utoipa::path(put, path = "/v1/tenants/budgets", tag = "tenants", request_body = BudgetsBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The budget now in force", body = BudgetsBody),
        JsonWriteErrors,
    ))]
pub async fn put_budgets(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<BudgetsBody>,
) -> ApiResult<Json<BudgetsBody>> {
    let stored = operations::set_mutating_budget(&state, &operator, body.mutating_per_hour).await?;
    Ok(Json(stored.into()))
}

/// The agent's own token bucket (null: the tenant's applies).
#[utoipa::path(get, path = "/v1/agents/{id}/rate-limits", tag = "agents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The agent's own rate limit", body = RateLimitsBody),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_agent_rate_limits(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<RateLimitsBody>> {
    let agent = state.store.agent(&operator.tenant, &id).await?;
    Ok(Json(agent.rate_limits.into()))
}

/// Give the agent its own token bucket in place of the tenant's (admin); null
/// `per_agent_per_sec` returns it to the tenant's.
#[utoipa::path(put, path = "/v1/agents/{id}/rate-limits", tag = "agents", params(("id" = String, Path)),
    request_body = RateLimitsBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The agent's own rate limit now", body = RateLimitsBody),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn put_agent_rate_limits(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RateLimitsBody>,
) -> ApiResult<Json<RateLimitsBody>> {
    let agent = operations::set_agent_rate_limits(&state, &operator, &id, body.into()).await?;
    Ok(Json(agent.rate_limits.into()))
}
