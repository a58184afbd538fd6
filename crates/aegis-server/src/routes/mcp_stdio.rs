//! The agent API of local MCP servers (registered with `transport: stdio`). The gateway
//! cannot reach such a server: `aegis mcp wrap` runs it beside the agent and reports here
//! what it lists and what the agent calls. Both are governed by MCP gateway mode's own rules,
//! the very functions `/mcp/{server}` runs (`aegis_mcp::McpGateway::govern_listing` and
//! `decide_reported_call`): pins, withheld changed definitions and their one alert, the
//! may-never-call filter, one recorded decision per call.
//!
//! What a wrap reports carries the agent token's weight and no more: a first listing
//! registers conservative facts only for actions the tenant has not registered (an admin's
//! registration wins), as a claim in `POST /v1/authorize` could only tighten them.

use crate::auth::AgentCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path};
use crate::openapi::{
    AgentErrors, BodyRefused, Conflict, Invalid, NotFound, StoreErrors, Unreadable,
};
use crate::state::{AgentSnapshot, SharedState};
use crate::validate::Text;
use aegis_core::model::{SourceTrust, Verdict};
use aegis_mcp::{McpRequest, Tool, refusal_text};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Tool names, as `POST /v1/authorize` takes actions.
type ToolName = Text<128>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedListing {
    /// Every tool the local server listed (`tools/list`), each name once.
    #[schema(inline)]
    pub tools: Vec<McpToolDefinition>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GovernedListing {
    /// The listed tools this agent may see: not withheld for a changed definition, and
    /// callable in some context.
    #[schema(inline)]
    pub tools: Vec<McpToolDefinition>,
}

/// An MCP tool definition as the SDK reads it, with the schema the document states for it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct McpToolDefinition(Tool);

impl PartialSchema for McpToolDefinition {
    fn schema() -> RefOr<Schema> {
        let typed = |kind| ObjectBuilder::new().schema_type(kind);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An MCP tool definition (the specification's `Tool`); further fields are kept.",
            ))
            .property("name", ToolName::schema())
            .required("name")
            .property("title", typed(Type::String))
            .property("description", typed(Type::String))
            .property("inputSchema", typed(Type::Object))
            .required("inputSchema")
            .property("outputSchema", typed(Type::Object))
            .property(
                "annotations",
                typed(Type::Object).description(Some(
                    "`readOnlyHint`, `destructiveHint`, … (booleans) and `title`",
                )),
            )
            .into()
    }
}

impl ToSchema for McpToolDefinition {}

/// One call of the local server's tool `tool` (the MCP tool's name).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedCall {
    #[schema(inline)]
    pub tool: ToolName,
    /// The call's arguments, as the agent sent them.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Map<String, Value>>,
    /// Provenance of what drives the call (the call's `_meta.aegis.source_trust`, else the
    /// wrap's `--source-trust`); absent means `unknown`.
    pub source_trust: Option<SourceTrust>,
}

/// The recorded decision on a wrapped call. Only `allow` lets the wrap run the tool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportedCallDecision {
    pub decision_id: String,
    pub decision: Verdict,
    pub reason: String,
    /// The approval a `require_approval` asked for (or the one the call used or was
    /// refused).
    pub approval_id: Option<String>,
    /// What the model reads instead of a result when the call may not run (deny,
    /// require_approval): the text `/mcp/{server}` answers. Null on allow.
    pub refusal: Option<String>,
}

/// Report a local MCP server's listing; answers the tools this agent may see.
#[utoipa::path(post, path = "/v1/mcp/stdio/{server}/listing", tag = "mcp",
    params(("server" = String, Path, description = "The registered server's name")),
    request_body = ReportedListing,
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The listing as the agent may see it, its pins recorded", body = GovernedListing),
        AgentErrors,
        StoreErrors,
        NotFound,
        Conflict,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn report_listing(
    State(state): State<SharedState>,
    AgentCaller(caller): AgentCaller,
    Path(server): Path<String>,
    JsonBody(body): JsonBody<ReportedListing>,
) -> ApiResult<Json<GovernedListing>> {
    let mut names = HashSet::with_capacity(body.tools.len());
    let tools: Vec<Tool> = body.tools.into_iter().map(|tool| tool.0).collect();
    for (index, tool) in tools.iter().enumerate() {
        let field = || format!("tools[{index}].name");
        ToolName::parse(tool.name.to_string())
            .map_err(|why| ApiError::invalid_field(field(), why))?;
        if !names.insert(tool.name.as_ref()) {
            return Err(ApiError::invalid_field(field(), "is listed twice"));
        }
    }
    let request = stdio_server(&state, caller, &server).await?;
    let tools = state
        .mcp
        .govern_listing(&request, tools)
        .await
        .map_err(|error| {
            ApiError::unavailable(format!("the listing could not be governed: {error}"))
        })?;
    Ok(Json(GovernedListing {
        tools: tools.into_iter().map(McpToolDefinition).collect(),
    }))
}

/// Decide one call of a local MCP server, recorded before the answer; the wrap runs the tool
/// only on `allow`.
#[utoipa::path(post, path = "/v1/mcp/stdio/{server}/calls", tag = "mcp",
    params(("server" = String, Path, description = "The registered server's name")),
    request_body = ReportedCall,
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The decision (allow, deny or require_approval), already on disk", body = ReportedCallDecision),
        AgentErrors,
        StoreErrors,
        NotFound,
        Conflict,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn report_call(
    State(state): State<SharedState>,
    AgentCaller(caller): AgentCaller,
    Path(server): Path<String>,
    JsonBody(body): JsonBody<ReportedCall>,
) -> ApiResult<Json<ReportedCallDecision>> {
    let request = stdio_server(&state, caller, &server).await?;
    let decision = state
        .mcp
        .decide_reported_call(
            &request,
            body.tool.into_string(),
            body.arguments,
            body.source_trust.unwrap_or(SourceTrust::Unknown),
        )
        .await
        .map_err(|error| {
            ApiError::unavailable(format!(
                "the call could not be decided, so it must not run: {error}"
            ))
        })?;
    Ok(Json(ReportedCallDecision {
        refusal: refusal_text(&decision),
        decision_id: decision.decision_id,
        decision: decision.verdict,
        reason: decision.reason,
        approval_id: decision.approval_id,
    }))
}

/// The agent's tenant's local server of this name: 404 if none, 409 if the gateway reaches
/// it itself (its listings come from the upstream, never from an agent).
async fn stdio_server(
    state: &SharedState,
    caller: Arc<AgentSnapshot>,
    name: &str,
) -> ApiResult<McpRequest<Arc<AgentSnapshot>>> {
    let tenant = caller.agent.tenant_id.clone();
    let server = state.store.mcp_server_by_name(&tenant, name).await?;
    if !server.is_stdio() {
        return Err(ApiError::conflict(format!(
            "MCP server {name:?} is reached by the gateway over HTTP (agents connect to /mcp/{name}); \
             only a stdio server's listings and calls are reported"
        )));
    }
    Ok(McpRequest {
        caller,
        tenant,
        server,
        source_trust: None,
    })
}
