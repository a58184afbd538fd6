//! Tool registration (admin): the server-side facts about each action.

use crate::auth::{Admin, Operator, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::openapi::{BodyRefused, Forbidden, Invalid, OperatorErrors, StoreErrors, Unreadable};
use crate::routes::Listed;
use crate::state::{SharedState, load_catalog};
use crate::validate::Text;
use aegis_core::model::ActionRisk;
use aegis_store::{RegisteredToolAction, ToolAction};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use utoipa::ToSchema;

const MAX_ACTIONS: usize = 500;

/// Tool and action names.
type Name = Text<128>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterTool {
    #[schema(inline)]
    pub tool: Name,
    /// 1 to 500 (`MAX_ACTIONS`) actions, each named once.
    #[schema(min_items = 1, max_items = 500)]
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    #[schema(inline)]
    pub action: Name,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    /// Sends data outside the organisation (e-mail, upload, external webhook). Default false.
    #[serde(default)]
    pub egress: bool,
    /// Returns data the agent could leak (files, mail, records): a data source, the "read"
    /// half of the data_exfiltration rule. Default false.
    #[serde(default)]
    pub sensitive: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredTool {
    pub tool: String,
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolActionView {
    pub tool: String,
    pub action: String,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub egress: bool,
    pub sensitive: bool,
}

/// Register (or update) a tool's actions. Registered facts override what agents claim.
#[utoipa::path(post, path = "/v1/tools", tag = "tools", request_body = RegisterTool,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The tool as registered", body = RegisteredTool),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn register_tool(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<RegisterTool>,
) -> ApiResult<(StatusCode, Json<RegisteredTool>)> {
    if body.actions.is_empty() || body.actions.len() > MAX_ACTIONS {
        return Err(ApiError::invalid_field(
            "actions",
            format!("must list 1 to {MAX_ACTIONS} actions"),
        ));
    }
    let mut seen = HashSet::new();
    for (index, spec) in body.actions.iter().enumerate() {
        if !seen.insert(&*spec.action) {
            return Err(ApiError::invalid_field(
                format!("actions[{index}].action"),
                "is listed twice",
            ));
        }
    }
    let actions = body
        .actions
        .iter()
        .map(|spec| ToolAction {
            action: spec.action.to_string(),
            mutates_state: spec.mutates_state,
            risk: spec.risk,
            egress: spec.egress,
            sensitive: spec.sensitive,
        })
        .collect();

    let runtime = state
        .tenants
        .get(state.store.as_ref(), &operator.tenant)
        .await?;
    let _serialised = runtime.change_lock.lock().await;
    state
        .store
        .register_tool(&operator.tenant, &body.tool, actions)
        .await?;
    let catalog = load_catalog(state.store.as_ref(), &operator.tenant).await?;
    runtime.tools.store(Arc::new(catalog));
    Ok((
        StatusCode::CREATED,
        Json(RegisteredTool {
            tool: body.tool.into_string(),
            actions: body.actions,
        }),
    ))
}

/// Every registered tool action of this tenant.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", security(("operator_key" = [])),
    responses(
        (status = 200, description = "Every registered action", body = [ToolActionView]),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn list_tools(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Listed<ToolActionView>> {
    let actions = state.store.tool_actions(&operator.tenant).await?;
    Ok(Listed::all(
        actions
            .into_iter()
            .map(|RegisteredToolAction { tool, action }| ToolActionView {
                tool,
                action: action.action,
                mutates_state: action.mutates_state,
                risk: action.risk,
                egress: action.egress,
                sensitive: action.sensitive,
            })
            .collect(),
    ))
}
