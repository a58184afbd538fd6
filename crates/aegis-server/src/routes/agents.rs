//! Agents: registration, lifecycle (freeze, unfreeze, revoke), token rotation, risk tier.

use crate::auth::{AGENT_TOKEN_PREFIX, Admin, Operator, Responder, Viewer, new_id, new_secret};
use crate::error::ApiResult;
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::{
    Conflict, Forbidden, Invalid, JsonWriteErrors, NotFound, OperatorErrors, StoreErrors,
    Unreadable,
};
use crate::operations;
use crate::routes::{Listed, PageQuery};
use crate::state::SharedState;
use crate::validate::Text;
use aegis_core::model::{AgentStatus, RiskTier};
use aegis_core::timestamp::format_millis;
use aegis_store::{Agent, AgentChangeKind, NewAgent};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why an agent is frozen or revoked, or an incident closed.
pub type Reason = Text<2000>;

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub status: AgentStatus,
    /// Why the agent is frozen or revoked.
    pub status_reason: Option<String>,
    pub risk_tier: RiskTier,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Agent> for AgentView {
    fn from(agent: Agent) -> Self {
        AgentView {
            id: agent.id,
            name: agent.name,
            status: agent.status,
            status_reason: agent.status_reason,
            risk_tier: agent.risk_tier,
            created_at: format_millis(agent.created_at_ms),
            updated_at: format_millis(agent.updated_at_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    #[schema(inline)]
    pub name: Text<200>,
    /// Defaults to `low`.
    pub risk_tier: Option<RiskTier>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAgent {
    #[serde(flatten)]
    pub agent: AgentView,
    /// Shown once; only its hash is stored.
    pub agent_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(inline)]
    pub reason: Option<Reason>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAgent {
    /// Set the risk tier explicitly (e.g. step it back down after escalation).
    pub risk_tier: RiskTier,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedToken {
    pub agent_id: String,
    /// The new token, shown once. The previous token stops working immediately.
    pub agent_token: String,
}

/// Register an agent and issue its token.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgent,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The agent and its token (shown only here)", body = CreatedAgent),
        JsonWriteErrors,
    ))]
pub async fn create_agent(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<CreateAgent>,
) -> ApiResult<(StatusCode, Json<CreatedAgent>)> {
    let (token, token_hash) = new_secret(AGENT_TOKEN_PREFIX)?;
    let agent = state
        .store
        .create_agent(
            &operator.tenant,
            NewAgent {
                id: new_id("agt"),
                name: body.name.trim().to_owned(),
                risk_tier: body.risk_tier.unwrap_or(RiskTier::Low),
                token_hash,
                actor: operator.actor(),
                created_at_ms: crate::now_ms(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAgent {
            agent: agent.into(),
            agent_token: token,
        }),
    ))
}

/// List agents, newest first.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(PageQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Agents, newest first", body = [AgentView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_agents(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Listed<AgentView>> {
    let page = query.page();
    let agents = state
        .store
        .list_agents(&operator.tenant, page.with_next_row())
        .await?;
    Ok(Listed::paged(
        agents,
        page,
        |agent| agent.cursor,
        AgentView::from,
    ))
}

/// One agent, with its status.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_agent(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(state.store.agent(&operator.tenant, &id).await?.into()))
}

/// Set the agent's risk tier (admin): the explicit step-down after escalation.
#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = PatchAgent,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The agent with its new risk tier", body = AgentView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn patch_agent(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchAgent>,
) -> ApiResult<Json<AgentView>> {
    operations::change_agent(
        &state,
        &operator,
        &id,
        AgentChangeKind::SetRiskTier {
            risk_tier: body.risk_tier,
        },
    )
    .await
    .map(|agent| Json(agent.into()))
}

/// Freeze the agent: its calls are denied (and recorded) until unfrozen.
#[utoipa::path(post, path = "/v1/agents/{id}/freeze", tag = "agents", params(("id" = String, Path)), request_body = Option<ReasonBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The frozen agent", body = AgentView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn freeze_agent(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<AgentView>> {
    operations::freeze_agent(&state, &operator, &id, body.reason.map(Text::into_string))
        .await
        .map(|agent| Json(agent.into()))
}

/// Unfreeze a frozen agent. A revoked agent cannot be unfrozen (409).
#[utoipa::path(post, path = "/v1/agents/{id}/unfreeze", tag = "agents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The unfrozen agent", body = AgentView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
        Conflict,
    ))]
pub async fn unfreeze_agent(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    operations::unfreeze_agent(&state, &operator, &id)
        .await
        .map(|agent| Json(agent.into()))
}

/// Revoke the agent (admin). Terminal: its tokens answer 401 from then on.
#[utoipa::path(post, path = "/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)), request_body = Option<ReasonBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The revoked agent", body = AgentView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn revoke_agent(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<AgentView>> {
    operations::revoke_agent(&state, &operator, &id, body.reason.map(Text::into_string))
        .await
        .map(|agent| Json(agent.into()))
}

/// Issue a new token (admin); the old one answers 401 at once.
#[utoipa::path(post, path = "/v1/agents/{id}/rotate-token", tag = "agents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The new token (shown only here)", body = RotatedToken),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
        Conflict,
    ))]
pub async fn rotate_token(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedToken>> {
    let token = operations::rotate_agent_token(&state, &operator, &id).await?;
    Ok(Json(RotatedToken {
        agent_id: id,
        agent_token: token,
    }))
}
