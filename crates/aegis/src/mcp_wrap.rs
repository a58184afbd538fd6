//! `aegis mcp wrap --gateway URL --server NAME -- COMMAND [ARGS…]`: a local (stdio) MCP
//! server under the gateway. The wrap starts COMMAND as a child process and is an MCP client
//! of it; towards the desktop MCP client that started the wrap it is an MCP server on
//! standard input and output (both sides the official SDK, rmcp). It holds no rule of its
//! own: every listing and every call is put to the gateway's agent API
//! (`/v1/mcp/stdio/{server}/listing` and `/calls`, `aegis-server/src/routes/mcp_stdio.rs`),
//! which applies MCP gateway mode's pins, filters and decisions.
//!
//! Fail closed: a call runs in the child only after the gateway answered `allow`; no answer,
//! a refusal or an unreadable answer is an error result and the tool never runs. The agent
//! token comes only from `AEGIS_AGENT_TOKEN` and is never logged. Standard output is the
//! protocol: logs and the child's standard error go to standard error.

use aegis_core::model::{SourceTrust, Verdict};
use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, ErrorData, Implementation, ListToolsResult, PaginatedRequestParams, ServerConfig,
    Tool,
};
use rmcp::service::{ClientCacheConfig, RequestContext};
use rmcp::transport::{TokioChildProcess, stdio_pipes};
use rmcp::{Peer, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable holding the agent's token.
const TOKEN_VARIABLE: &str = "AEGIS_AGENT_TOKEN";

/// Longest wait for the gateway's answer; a call it has not decided by then does not run.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct WrapArgs {
    /// The gateway's address, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    gateway: url::Url,
    /// The local server's name, as registered (`POST /v1/mcp/servers` with
    /// `"transport": "stdio"`); its calls are decided with this name as the tool.
    #[arg(long)]
    server: String,
    /// Provenance of what drives this client's calls, for calls that do not state it in
    /// `_meta.aegis.source_trust` (default: unknown).
    #[arg(long)]
    source_trust: Option<SourceTrust>,
    /// The local MCP server's command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs the wrap until the desktop client closes its side (exit 0) or the child exits
/// (one line on standard error, exit 1).
pub async fn run(args: WrapArgs) -> anyhow::Result<()> {
    let gateway = GatewayApi::new(&args.gateway, &args.server)?;
    let (program, program_args) = args
        .command
        .split_first()
        .context("name the local MCP server's command after `--`")?;
    let mut command = tokio::process::Command::new(program);
    command.args(program_args);
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start the local MCP server `{program}`"))?;
    let child = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("aegis-mcp-wrap", env!("CARGO_PKG_VERSION")),
    )
    .serve(transport)
    .await
    .with_context(|| {
        format!("the local MCP server `{program}` did not complete the MCP handshake")
    })?;
    // Every listing must show the child's definitions as they are now: a changed definition
    // is what pinning is for.
    child
        .peer()
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    let wrap = Wrap {
        child: child.peer().clone(),
        gateway,
        source_trust: args.source_trust,
        reported_listing: AtomicBool::new(false),
    };
    let stop_child = child.cancellation_token();
    let mut child_quit = tokio::spawn(child.waiting());
    let served = async {
        let server = wrap
            .serve(stdio_pipes())
            .await
            .context("the MCP client did not complete the MCP handshake")?;
        let _ = server.waiting().await;
        anyhow::Ok(())
    };
    tokio::select! {
        served = served => {
            // The client is gone: stop the child the way MCP's stdio shutdown says (close its
            // input, wait, then signal) before exiting.
            stop_child.cancel();
            let _ = child_quit.await;
            served
        }
        _ = &mut child_quit => {
            // A pending read of standard input may never end by itself: exit now.
            eprintln!("aegis mcp wrap: the local MCP server `{program}` exited; stopping");
            std::process::exit(1)
        }
    }
}

/// The desktop client's MCP server: the child's tools, governed by the gateway.
struct Wrap {
    child: Peer<RoleClient>,
    gateway: GatewayApi,
    source_trust: Option<SourceTrust>,
    /// A listing was reported since the wrap started, so the child's tools are pinned.
    reported_listing: AtomicBool,
}

impl Wrap {
    /// The child's listing, as the gateway lets this agent see it.
    async fn governed_listing(&self) -> Result<Vec<Tool>, String> {
        let tools =
            self.child.list_all_tools().await.map_err(|error| {
                format!("the local MCP server could not list its tools: {error}")
            })?;
        let governed: Listing = self
            .gateway
            .post("listing", &json!({ "tools": tools }))
            .await?;
        self.reported_listing.store(true, Ordering::Relaxed);
        Ok(governed.tools)
    }

    /// The gateway's decision on one call, or why there is none.
    async fn decide(
        &self,
        params: &CallToolRequestParams,
        source_trust: Option<SourceTrust>,
    ) -> Result<CallDecision, String> {
        if !self.reported_listing.load(Ordering::Relaxed) {
            // Called before any listing: report one, so the tool is pinned before it is
            // decided, as the gateway lists an upstream first. If that fails, the gateway
            // decides it as an unknown tool.
            if let Err(error) = self.governed_listing().await {
                tracing::warn!(%error, "listing before the first call failed");
            }
        }
        let mut call = json!({ "tool": params.name });
        if let Some(arguments) = &params.arguments {
            call["arguments"] = Value::Object(arguments.clone());
        }
        if let Some(trust) = source_trust {
            call["source_trust"] = trust.as_str().into();
        }
        self.gateway.post("calls", &call).await
    }
}

#[derive(Deserialize)]
struct Listing {
    tools: Vec<Tool>,
}

#[derive(Deserialize)]
struct CallDecision {
    decision_id: String,
    decision: Verdict,
    refusal: Option<String>,
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

impl ServerHandler for Wrap {
    fn get_info(&self) -> ServerConfig {
        aegis_mcp::governed_server_info("aegis-mcp-wrap", "a local MCP server")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .governed_listing()
            .await
            .map_err(|error| ErrorData::internal_error(error, None))?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let source_trust = aegis_mcp::call_source_trust(&params, &context)?.or(self.source_trust);
        let result = match self.decide(&params, source_trust).await {
            Err(why) => error_result(format!(
                "AegisAgent could not decide this call, so it was not made: {why}"
            )),
            Ok(decision) if decision.decision == Verdict::Allow => {
                let decision_id = decision.decision_id;
                self.child.call_tool(params).await.unwrap_or_else(|error| {
                    error_result(format!(
                        "the local MCP server failed: {error} (decision {decision_id} allowed the call)"
                    ))
                })
            }
            Ok(decision) => error_result(decision.refusal.unwrap_or_else(|| {
                format!(
                    "Not allowed by AegisAgent (decision {})",
                    decision.decision_id
                )
            })),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

/// The agent API of one local server on the gateway.
struct GatewayApi {
    http: reqwest::Client,
    /// `{gateway}/v1/mcp/stdio/{server}/`.
    base: url::Url,
    authorization: HeaderValue,
}

impl GatewayApi {
    fn new(gateway: &url::Url, server: &str) -> anyhow::Result<GatewayApi> {
        let token = std::env::var(TOKEN_VARIABLE).unwrap_or_default();
        if token.trim().is_empty() {
            bail!("{TOKEN_VARIABLE} is not set: export the agent's token (aat_…) in it");
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| anyhow::anyhow!("{TOKEN_VARIABLE} holds characters no token has"))?;
        authorization.set_sensitive(true);
        if !matches!(gateway.scheme(), "http" | "https") || gateway.cannot_be_a_base() {
            bail!("--gateway {gateway}: must be an http(s) URL");
        }
        // Error lines name the URL, and its credentials would go out beside the token.
        if !gateway.username().is_empty() || gateway.password().is_some() {
            bail!(
                "--gateway must not carry a user or password: the token goes in {TOKEN_VARIABLE}"
            );
        }
        let mut base = gateway.clone();
        base.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("--gateway {gateway}: must be an http(s) URL"))?
            .pop_if_empty()
            .extend(["v1", "mcp", "stdio", server, ""]);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(GATEWAY_TIMEOUT)
            .build()
            .context("cannot set up HTTP")?;
        Ok(GatewayApi {
            http,
            base,
            authorization,
        })
    }

    /// POSTs `body` to `{base}{route}` and reads the answer; any failure is one line.
    async fn post<T: DeserializeOwned>(&self, route: &str, body: &Value) -> Result<T, String> {
        let url = self.base.join(route).map_err(|error| error.to_string())?;
        let unreachable = |error: reqwest::Error| {
            // reqwest's own text names the URL; the innermost cause says what happened.
            let mut cause: &dyn std::error::Error = &error;
            while let Some(source) = cause.source() {
                cause = source;
            }
            format!(
                "cannot reach the gateway at {}: {cause}",
                url.origin().ascii_serialization()
            )
        };
        let response = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .json(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let answer = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let error: Option<Value> = serde_json::from_slice(&answer).ok();
            let message = error
                .as_ref()
                .and_then(|error| error["error"]["message"].as_str())
                .unwrap_or("no error message");
            return Err(format!("the gateway answered {status}: {message}"));
        }
        serde_json::from_slice(&answer)
            .map_err(|error| format!("the gateway's answer could not be read: {error}"))
    }
}
