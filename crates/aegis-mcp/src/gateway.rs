//! The MCP server agents connect to.

use crate::definition;
use crate::gate::{GateDecision, GatedCall, ToolCallGate};
use crate::telemetry::{self, CallOutcome};
use crate::upstream::Upstreams;
use aegis_core::model::{SourceTrust, Verdict};
use aegis_store::{McpServer, Store, TenantId, ToolPin};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use std::sync::Arc;
use std::time::Duration;

/// Event recorded when a forwarded call found no answer upstream.
pub const UPSTREAM_FAILED_EVENT: &str = "mcp.upstream_failed";

/// What the embedding HTTP layer learned about a request before handing it over: put in the
/// request's extensions, read back by the handler. A request without one is refused.
#[derive(Clone)]
pub struct McpRequest<C> {
    pub caller: C,
    pub tenant: TenantId,
    pub server: McpServer,
    /// The `X-Aegis-Source-Trust` header, when sent.
    pub source_trust: Option<SourceTrust>,
}

/// Limits of MCP gateway mode.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// `AEGIS_MCP_TIMEOUT_SECS`: the longest an upstream exchange may take.
    pub upstream_timeout: Duration,
    /// `AEGIS_MCP_MAX_RESULT_BYTES`: the largest upstream answer (JSON body, or SSE event)
    /// read; reading stops there and the call gets an error result.
    pub max_upstream_result_bytes: usize,
    /// `AEGIS_MCP_ALLOW_PRIVATE`: upstreams may be internal addresses.
    pub allow_private: bool,
    /// Largest request body the endpoint reads (`AEGIS_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            upstream_timeout: Duration::from_secs(30),
            max_upstream_result_bytes: 8 << 20,
            allow_private: false,
            max_body_bytes: 1 << 20,
        }
    }
}

/// The gateway's MCP server. Cheap to clone: one is made per request.
pub struct McpGateway<G: ToolCallGate> {
    shared: Arc<Shared<G>>,
}

impl<G: ToolCallGate> Clone for McpGateway<G> {
    fn clone(&self) -> Self {
        McpGateway {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<G> {
    store: Arc<dyn Store>,
    gate: G,
    upstreams: Upstreams,
    settings: McpSettings,
}

impl<G: ToolCallGate> McpGateway<G> {
    pub fn new(store: Arc<dyn Store>, gate: G, settings: McpSettings) -> Self {
        McpGateway {
            shared: Arc::new(Shared {
                store,
                upstreams: Upstreams::new(
                    settings.allow_private,
                    settings.upstream_timeout,
                    settings.max_upstream_result_bytes,
                ),
                gate,
                settings,
            }),
        }
    }

    /// The streamable-HTTP service to mount. Stateless: no MCP session is kept, so a
    /// restarted gateway or another replica serves the next request of any client.
    pub fn http_service(&self) -> StreamableHttpService<Self, LocalSessionManager> {
        let gateway = self.clone();
        StreamableHttpService::new(
            move || Ok(gateway.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default()
                .with_legacy_session_mode(false)
                .with_json_response(true)
                .with_max_request_body_bytes(self.shared.settings.max_body_bytes)
                // Every request carries an agent token, so a rebound DNS name gains an
                // attacker nothing; the gateway is reached under names it cannot know.
                .disable_allowed_hosts(),
        )
    }

    /// Drops what is kept about a deleted server.
    pub fn server_deleted(&self, server_id: &str) {
        self.shared.upstreams.forget(server_id);
    }

    fn request(context: &RequestContext<RoleServer>) -> Result<&McpRequest<G::Caller>, ErrorData> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<McpRequest<G::Caller>>())
            .ok_or_else(|| {
                ErrorData::internal_error("request reached the MCP gateway unauthenticated", None)
            })
    }

    /// The tools of a listing this agent may see: the listing is applied to the pins, then
    /// the tools whose definition changed and those the agent may never call are left out.
    /// `tools/list` hands it the upstream's listing; the agent API hands it the listing of a
    /// local server that `aegis mcp wrap` reported, so both are governed by this one rule.
    pub async fn govern_listing(
        &self,
        request: &McpRequest<G::Caller>,
        tools: Vec<Tool>,
    ) -> Result<Vec<Tool>, String> {
        let pins = self.observe(request, &tools).await?;
        let mut listed = Vec::with_capacity(tools.len());
        for tool in tools {
            let withheld = pins
                .iter()
                .find(|pin| *pin.tool == *tool.name)
                .is_none_or(ToolPin::withheld);
            if withheld {
                continue;
            }
            let callable = self
                .shared
                .gate
                .may_ever_call(&request.caller, &request.server.name, &tool.name)
                .await?;
            if callable {
                listed.push(tool);
            }
        }
        Ok(listed)
    }

    /// One call of a local server (reported by `aegis mcp wrap`), decided as a `tools/call`
    /// is: against the tool's pin, by the gate, recorded before the answer. Nothing is
    /// forwarded here: the wrap runs the tool on an allow. A tool never listed has no pin and
    /// is decided as an unknown, state-changing one.
    pub async fn decide_reported_call(
        &self,
        request: &McpRequest<G::Caller>,
        tool: String,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
        source_trust: SourceTrust,
    ) -> Result<GateDecision, String> {
        let pin = self.pin_of(request, &tool).await?;
        let mut params = CallToolRequestParams::new(tool);
        params.arguments = arguments;
        self.decide(request, &params, source_trust, pin.as_ref())
            .await
    }

    /// The pin of one tool of the request's server, if it was ever listed.
    async fn pin_of(
        &self,
        request: &McpRequest<G::Caller>,
        tool: &str,
    ) -> Result<Option<ToolPin>, String> {
        let pins = self
            .shared
            .store
            .mcp_tool_pins(&request.tenant, &request.server.id)
            .await
            .map_err(|error| error.to_string())?;
        Ok(pins.into_iter().find(|pin| pin.tool == tool))
    }

    /// Lists the upstream's tools.
    async fn list_upstream(&self, request: &McpRequest<G::Caller>) -> Result<Vec<Tool>, String> {
        self.shared
            .upstreams
            .list_tools(&request.server)
            .await
            .map_err(|error| error.to_string())
    }

    /// Applies a listing to the pins.
    async fn observe(
        &self,
        request: &McpRequest<G::Caller>,
        tools: &[Tool],
    ) -> Result<Vec<ToolPin>, String> {
        let shared = &self.shared;
        let observed = tools
            .iter()
            .map(definition::observe)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("an upstream tool definition cannot be pinned: {error}"))?;
        let observation = shared
            .store
            .observe_mcp_tools(
                &request.tenant,
                &request.server,
                observed,
                shared.gate.agent_id(&request.caller),
            )
            .await
            .map_err(|error| format!("the tool pins could not be recorded: {error}"))?;
        if observation.registered_actions {
            shared.gate.tools_registered(&request.tenant);
        }
        Ok(observation.pins)
    }

    /// The decision for one call, recorded before anything is forwarded.
    async fn decide(
        &self,
        request: &McpRequest<G::Caller>,
        params: &CallToolRequestParams,
        source_trust: SourceTrust,
        pin: Option<&ToolPin>,
    ) -> Result<GateDecision, String> {
        let (resource, resource_refused) =
            match crate::resource::of_call(pin, params.arguments.as_ref()) {
                Ok(resource) => (resource, None),
                Err(why) => (None, Some(why)),
            };
        let denied_because = pin
            .filter(|pin| pin.withheld())
            .map(|pin| {
                format!(
                    "the definition of MCP tool {:?} changed since it was pinned; an admin must accept it \
                     (POST /v1/mcp/servers/{}/tools/{}/accept) before it can be called",
                    pin.tool, pin.server_id, pin.tool
                )
            })
            .or(resource_refused);
        self.shared
            .gate
            .authorize(
                &request.caller,
                GatedCall {
                    tool: request.server.name.clone(),
                    action: params.name.to_string(),
                    resource,
                    parameters: params.arguments.clone().map(serde_json::Value::Object),
                    // A tool never seen, or not declared read-only, is taken to change state.
                    claimed_mutates_state: !pin.is_some_and(|pin| pin.read_only),
                    source_trust,
                    denied_because,
                    definition_hash: pin.map(|pin| pin.definition_hash.clone()),
                },
            )
            .await
    }

    async fn forward(
        &self,
        request: &McpRequest<G::Caller>,
        params: CallToolRequestParams,
        decision: &GateDecision,
    ) -> CallToolResult {
        let shared = &self.shared;
        let tool = params.name.to_string();
        let started = std::time::Instant::now();
        let answer = shared.upstreams.call_tool(&request.server, params).await;
        telemetry::upstream_answered(started.elapsed());
        let failure = match answer {
            Ok(result) => {
                telemetry::call_ended(CallOutcome::Forwarded);
                return result;
            }
            Err(error) => error.to_string(),
        };
        telemetry::call_ended(CallOutcome::UpstreamFailed);
        let payload = serde_json::json!({
            "decision_id": decision.decision_id,
            "server_id": request.server.id,
            "server": request.server.name,
            "tool": tool,
            "error": failure,
        });
        if let Err(error) = shared
            .store
            .record_event(
                &request.tenant,
                UPSTREAM_FAILED_EVENT,
                Some(shared.gate.agent_id(&request.caller)),
                payload,
            )
            .await
        {
            tracing::error!(%error, "an upstream failure could not be recorded");
        }
        error_result(format!(
            "{failure} (decision {} allowed the call; it was forwarded but got no usable answer)",
            decision.decision_id
        ))
    }
}

/// `params._meta.aegis.source_trust`, when the call carries it (the SDK may hand `_meta` over
/// in the request or in its context). `aegis mcp wrap` reads a call's claim with it too.
pub fn call_source_trust(
    params: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<Option<SourceTrust>, ErrorData> {
    let claimed = |meta: &serde_json::Map<String, serde_json::Value>| {
        meta.get("aegis")
            .and_then(|aegis| aegis.get("source_trust"))
            .cloned()
    };
    let Some(claimed) = params
        .meta
        .as_ref()
        .and_then(|meta| claimed(meta))
        .or_else(|| claimed(&context.meta))
    else {
        return Ok(None);
    };
    // A claim that is not a string names no variant either.
    claimed
        .as_str()
        .unwrap_or_default()
        .parse::<SourceTrust>()
        .map(Some)
        .map_err(|unknown| {
            ErrorData::invalid_params(format!("_meta.aegis.source_trust {unknown}"), None)
        })
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// What the model reads instead of a result when a call is not forwarded (`None` for an
/// allow). The agent API answers it for a wrapped call, so both modes say the same.
pub fn refusal_text(decision: &GateDecision) -> Option<String> {
    Some(match decision.verdict {
        Verdict::Allow => return None,
        Verdict::RequireApproval => format!(
            "This call needs a person's approval first (decision {}, approval {}): {}. Ask an \
             operator to approve it, then repeat the identical call.",
            decision.decision_id,
            decision.approval_id.as_deref().unwrap_or("none"),
            decision.reason
        ),
        Verdict::Deny => format!(
            "Denied by AegisAgent (decision {}): {}",
            decision.decision_id, decision.reason
        ),
    })
}

/// What a governed MCP server tells its clients about itself: `name`, a tools-only server,
/// and what it governs (`whose_tools`: "an upstream MCP server", "a local MCP server").
pub fn governed_server_info(name: &'static str, whose_tools: &str) -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new(name, env!("CARGO_PKG_VERSION")))
        .with_instructions(format!(
            "Tools of {whose_tools}, governed by AegisAgent: every call is a recorded \
             decision, and a refused call comes back as an error result that names the \
             decision."
        ))
}

impl<G: ToolCallGate> ServerHandler for McpGateway<G> {
    fn get_info(&self) -> ServerConfig {
        governed_server_info("aegis-gateway", "an upstream MCP server")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let request = Self::request(&context)?;
        let tools = self
            .list_upstream(request)
            .await
            .map_err(|error| ErrorData::internal_error(error, None))?;
        let listed = self
            .govern_listing(request, tools)
            .await
            .map_err(|error| ErrorData::internal_error(error, None))?;
        Ok(ListToolsResult::with_all_items(listed))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let request = Self::request(&context)?;
        let mut pin = self
            .pin_of(request, &params.name)
            .await
            .map_err(|error| ErrorData::internal_error(error, None))?;
        if pin.is_none() {
            // Called before any listing showed it: list now, so it is pinned (and
            // registered) before it is decided. If the upstream cannot list, the call is
            // decided as an unknown tool.
            let listed = match self.list_upstream(request).await {
                Ok(tools) => self.observe(request, &tools).await,
                Err(error) => Err(error),
            };
            match listed {
                Ok(pins) => pin = pins.into_iter().find(|pin| *pin.tool == *params.name),
                Err(error) => {
                    tracing::warn!(%error, server = %request.server.name, "upstream listing before a call failed")
                }
            }
        }
        let source_trust = match call_source_trust(&params, &context)? {
            Some(trust) => trust,
            None => request.source_trust.unwrap_or(SourceTrust::Unknown),
        };
        let decision = self
            .decide(request, &params, source_trust, pin.as_ref())
            .await
            .map_err(|error| {
                telemetry::call_ended(CallOutcome::Undecided);
                ErrorData::internal_error(
                    format!("the call could not be decided, so it was not forwarded: {error}"),
                    None,
                )
            })?;
        let result = match refusal_text(&decision) {
            None => self.forward(request, params, &decision).await,
            Some(refusal) => {
                telemetry::call_ended(match decision.verdict {
                    Verdict::RequireApproval => CallOutcome::ApprovalRequired,
                    _ => CallOutcome::Denied,
                });
                error_result(refusal)
            }
        };
        Ok(CallToolResponse::Complete(result))
    }
}
