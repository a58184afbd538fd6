//! Upstream MCP servers of a tenant (admins register and delete them, viewers read them)
//! and the pins of their tool definitions. Upstream URLs follow the webhooks' SSRF rule
//! (`aegis_soc::egress`) unless the deployment allows private upstreams
//! (`AEGIS_MCP_ALLOW_PRIVATE=true`). A local server (`transport: stdio`) has no URL: the
//! gateway never connects to it (`routes/mcp_stdio.rs`).

use crate::auth::{Admin, Operator, Viewer, new_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path};
use crate::openapi::{
    BodyRefused, Conflict, Forbidden, Invalid, JsonWriteErrors, NotFound, OperatorErrors,
    StoreErrors, Unreadable,
};
use crate::routes::Listed;
use crate::state::SharedState;
use crate::validate::Text;
use aegis_core::timestamp::format_millis;
use aegis_store::{McpServer, NewMcpServer, PinStatus, STDIO_ADDRESS, ToolPin};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest server name: it is a path segment of `/mcp/{name}` and the `tool` of decisions.
const MAX_NAME: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    /// Letters, digits, `-` and `_`; unique in the tenant. Agents reach the server at
    /// `/mcp/{name}`, and its calls are decided with this name as the tool.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub name: String,
    /// `http` (the default): the gateway reaches the server at `url`. `stdio`: a local server
    /// that `aegis mcp wrap` runs beside the agent; no `url`.
    #[serde(default)]
    pub transport: McpTransport,
    /// The upstream's streamable-HTTP MCP endpoint (http or https); required with `http`,
    /// refused with `stdio`.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
}

/// How the gateway reaches an MCP server's tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    /// Streamable HTTP at the registered URL: agents connect to `/mcp/{name}`.
    #[default]
    Http,
    /// A local server behind `aegis mcp wrap`, which reports its listings and calls to
    /// `/v1/mcp/stdio/{name}/listing` and `/calls`.
    Stdio,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerView {
    pub id: String,
    pub name: String,
    pub transport: McpTransport,
    /// The upstream's endpoint; null for a `stdio` server.
    pub url: Option<String>,
    pub created_at: String,
}

impl From<McpServer> for McpServerView {
    fn from(server: McpServer) -> Self {
        let (transport, url) = if server.is_stdio() {
            (McpTransport::Stdio, None)
        } else {
            (McpTransport::Http, Some(server.url))
        };
        McpServerView {
            id: server.id,
            name: server.name,
            transport,
            url,
            created_at: format_millis(server.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolPinView {
    /// The MCP tool's name.
    pub name: String,
    /// SHA-256 of the RFC 8785 form of the trusted definition (name, title, description,
    /// inputSchema, outputSchema, annotations).
    pub definition_hash: String,
    #[schema(value_type = String, example = "pinned")]
    pub status: PinStatus,
    /// The definition the upstream lists now, withheld until accepted (status `changed`).
    pub changed_hash: Option<String>,
    pub read_only: bool,
    pub pinned_at: String,
    /// Who accepted the current definition (an operator key), and when.
    pub accepted_by: Option<String>,
    pub accepted_at: Option<String>,
    /// The argument whose string value is the `resource` of this tool's decisions (null:
    /// calls name no resource). A call without it as a string is denied.
    pub resource_argument: Option<String>,
}

impl From<ToolPin> for ToolPinView {
    fn from(pin: ToolPin) -> Self {
        ToolPinView {
            name: pin.tool,
            definition_hash: pin.definition_hash,
            status: pin.status,
            changed_hash: pin.changed_hash,
            read_only: pin.read_only,
            pinned_at: format_millis(pin.pinned_at_ms),
            accepted_by: pin.accepted_by,
            accepted_at: pin.accepted_at_ms.map(format_millis),
            resource_argument: pin.resource_argument,
        }
    }
}

/// Register an upstream MCP server.
#[utoipa::path(post, path = "/v1/mcp/servers", tag = "mcp", request_body = CreateMcpServer,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The registered server", body = McpServerView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Conflict,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn create_mcp_server(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<CreateMcpServer>,
) -> ApiResult<(StatusCode, Json<McpServerView>)> {
    if body.name.is_empty()
        || body.name.len() > MAX_NAME
        || !body
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME} letters, digits, '-' or '_'"),
        ));
    }
    let url = match (body.transport, body.url) {
        (McpTransport::Http, Some(url)) => {
            aegis_soc::egress::check_subscription_url(&url, state.settings.mcp.allow_private)
                .await
                .map_err(|why| ApiError::invalid_field("url", why))?;
            url
        }
        (McpTransport::Http, None) => {
            return Err(ApiError::invalid_field(
                "url",
                "is required unless transport is stdio",
            ));
        }
        (McpTransport::Stdio, None) => STDIO_ADDRESS.to_owned(),
        (McpTransport::Stdio, Some(_)) => {
            return Err(ApiError::invalid_field(
                "url",
                "must be absent with transport stdio: the gateway never connects to a local server",
            ));
        }
    };
    let server = state
        .store
        .create_mcp_server(
            &operator.tenant,
            NewMcpServer {
                id: new_id("mcp"),
                name: body.name,
                url,
                created_at_ms: crate::now_ms(),
            },
        )
        .await
        .map_err(|error| match error {
            aegis_store::StoreError::Conflict(_) => {
                ApiError::conflict("the tenant already has an MCP server of this name")
            }
            error => error.into(),
        })?;
    Ok((StatusCode::CREATED, Json(server.into())))
}

/// This tenant's upstream MCP servers.
#[utoipa::path(get, path = "/v1/mcp/servers", tag = "mcp", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The servers, by name", body = [McpServerView]),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn list_mcp_servers(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Listed<McpServerView>> {
    let servers = state.store.list_mcp_servers(&operator.tenant).await?;
    Ok(Listed::all(servers.into_iter().map(Into::into).collect()))
}

/// One upstream MCP server.
#[utoipa::path(get, path = "/v1/mcp/servers/{id}", tag = "mcp", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The server", body = McpServerView),
        OperatorErrors,
        StoreErrors,
        NotFound,
    ))]
pub async fn get_mcp_server(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<McpServerView>> {
    let server = state.store.mcp_server(&operator.tenant, &id).await?;
    Ok(Json(server.into()))
}

/// Delete an upstream MCP server and its pins; agents can no longer reach it.
#[utoipa::path(delete, path = "/v1/mcp/servers/{id}", tag = "mcp", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        NotFound,
    ))]
pub async fn delete_mcp_server(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_mcp_server(&operator.tenant, &id).await?;
    state.mcp.server_deleted(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// The tools of an upstream MCP server the gateway has seen, each with its pin.
#[utoipa::path(get, path = "/v1/mcp/servers/{id}/tools", tag = "mcp", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Each tool's pin and status", body = [ToolPinView]),
        OperatorErrors,
        StoreErrors,
        NotFound,
    ))]
pub async fn list_mcp_tools(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Listed<ToolPinView>> {
    let server = state.store.mcp_server(&operator.tenant, &id).await?;
    let pins = state
        .store
        .mcp_tool_pins(&operator.tenant, &server.id)
        .await?;
    Ok(Listed::all(pins.into_iter().map(Into::into).collect()))
}

/// Accept a tool's changed definition: it becomes the pinned one, and the tool is listed
/// and callable again. Records which operator key accepted it.
#[utoipa::path(post, path = "/v1/mcp/servers/{id}/tools/{tool}/accept", tag = "mcp",
    params(("id" = String, Path), ("tool" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tool's pin after accepting", body = ToolPinView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        NotFound,
        Conflict,
    ))]
pub async fn accept_mcp_tool(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path((id, tool)): Path<(String, String)>,
) -> ApiResult<Json<ToolPinView>> {
    let server = state.store.mcp_server(&operator.tenant, &id).await?;
    let pin = state
        .store
        .accept_mcp_tool(&operator.tenant, &server.id, &tool, &operator.actor())
        .await?;
    Ok(Json(pin.into()))
}

/// The name of an argument an admin may declare as a tool's resource.
type ArgumentName = Text<256>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSettingsBody {
    /// The name of the argument whose string value becomes the `resource` of this tool's
    /// decisions (what `context.target` is to policies), or null for none. Once named, a
    /// call that lacks it, or passes a value that is not a string, is denied.
    #[schema(required = true, inline)]
    #[serde(deserialize_with = "Option::deserialize")]
    pub resource_argument: Option<ArgumentName>,
}

/// Set a tool's settings (admin): which argument names the resource of its calls. The tool
/// must have been seen by the gateway (listed or called) first.
#[utoipa::path(put, path = "/v1/mcp/servers/{id}/tools/{tool}", tag = "mcp",
    params(("id" = String, Path), ("tool" = String, Path)),
    request_body = ToolSettingsBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tool's pin with its settings", body = ToolPinView),
        JsonWriteErrors,
        NotFound,
    ))]
pub async fn put_mcp_tool(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path((id, tool)): Path<(String, String)>,
    JsonBody(body): JsonBody<ToolSettingsBody>,
) -> ApiResult<Json<ToolPinView>> {
    let server = state.store.mcp_server(&operator.tenant, &id).await?;
    let pin = state
        .store
        .set_mcp_resource_argument(
            &operator.tenant,
            &server.id,
            &tool,
            body.resource_argument.map(Text::into_string),
        )
        .await?;
    Ok(Json(pin.into()))
}
