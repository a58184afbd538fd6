//! The upstream MCP server of the `mcp-direct` and `mcp-proxy` rows: one read-only `echo`
//! tool over streamable HTTP, stateless with JSON answers (the gateway's own configuration),
//! built with the same SDK as the gateway. It runs on its own runtime and threads, so that
//! neither the benchmark's driver nor the gateway shares its cores' scheduling with it.

use anyhow::{Context, Result};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::sync::Arc;

/// The endpoint's path on the upstream server.
pub const PATH: &str = "/mcp";
/// The tool the rows call.
pub const TOOL: &str = "echo";
/// Worker threads of the upstream server's runtime.
const WORKERS: usize = 2;

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema: JsonObject = serde_json::from_value(json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        }))
        .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
        let tool = Tool::new(TOOL, "Returns its `text` argument.", Arc::new(schema))
            .annotate(ToolAnnotations::new().read_only(true));
        Ok(ListToolsResult::with_all_items(vec![tool]))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if params.name != TOOL {
            return Err(ErrorData::invalid_params(
                format!("no tool {}", params.name),
                None,
            ));
        }
        let text = params
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| ErrorData::invalid_params("`text` must be a string", None))?;
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

/// Starts the server on a loopback port, on a runtime of its own that lives as long as the
/// process; returns its base URL (the endpoint is `{base}{PATH}`).
pub fn start() -> Result<String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the upstream MCP server")?;
    listener
        .set_nonblocking(true)
        .context("making the upstream MCP listener non-blocking")?;
    let address = listener.local_addr().context("the upstream MCP address")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("mcp-upstream")
        .enable_all()
        .build()
        .context("building the upstream MCP server's runtime")?;
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let app = axum::Router::new().route_service(PATH, service);
    let listener = {
        let _inside = runtime.enter();
        tokio::net::TcpListener::from_std(listener).context("the upstream MCP listener")?
    };
    std::thread::Builder::new()
        .name("mcp-upstream".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    eprintln!("upstream MCP server stopped: {error}");
                }
            })
        })
        .context("starting the upstream MCP server's thread")?;
    Ok(format!("http://{address}"))
}
