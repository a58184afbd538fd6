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

    /// Lists the upstream's tools and applies the listing to the pins.
    async fn observe(
        &self,
        request: &McpRequest<G::Caller>,
    ) -> Result<(Vec<rmcp::model::Tool>, Vec<ToolPin>), String> {
        let shared = &self.shared;
        let tools = shared
            .upstreams
            .list_tools(&request.server)
            .await
            .map_err(|error| error.to_string())?;
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
        Ok((tools, observation.pins))
    }

    /// The decision for one call, recorded before anything is forwarded.
    async fn decide(
        &self,
        request: &McpRequest<G::Caller>,
        params: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        pin: Option<&ToolPin>,
    ) -> Result<GateDecision, ErrorData> {
        let source_trust = match call_source_trust(params, context)? {
            Some(trust) => trust,
            None => request.source_trust.unwrap_or(SourceTrust::Unknown),
        };
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
                },
            )
            .await
            .map_err(|error| {
                ErrorData::internal_error(
                    format!("the call could not be decided, so it was not forwarded: {error}"),
                    None,
                )
            })
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
/// in the request or in its context).
fn call_source_trust(
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

/// What the model reads when a call is not forwarded.
fn refusal(decision: &GateDecision) -> CallToolResult {
    error_result(match decision.verdict {
        Verdict::RequireApproval => format!(
            "This call needs a person's approval first (decision {}, approval {}): {}. Ask an \
             operator to approve it, then repeat the identical call.",
            decision.decision_id,
            decision.approval_id.as_deref().unwrap_or("none"),
            decision.reason
        ),
        _ => format!(
            "Denied by AegisAgent (decision {}): {}",
            decision.decision_id, decision.reason
        ),
    })
}

impl<G: ToolCallGate> ServerHandler for McpGateway<G> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "aegis-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Tools of an upstream MCP server, governed by AegisAgent: every call is a \
                 recorded decision, and a refused call comes back as an error result that \
                 names the decision.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let request = Self::request(&context)?;
        let (tools, pins) = self
            .observe(request)
            .await
            .map_err(|error| ErrorData::internal_error(error, None))?;
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
                .await
                .map_err(|error| ErrorData::internal_error(error, None))?;
            if callable {
                listed.push(tool);
            }
        }
        Ok(ListToolsResult::with_all_items(listed))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let request = Self::request(&context)?;
        let store = &self.shared.store;
        let find = |pins: Vec<ToolPin>| pins.into_iter().find(|pin| *pin.tool == *params.name);
        let mut pin = find(
            store
                .mcp_tool_pins(&request.tenant, &request.server.id)
                .await
                .map_err(|error| ErrorData::internal_error(error.to_string(), None))?,
        );
        if pin.is_none() {
            // Called before any listing showed it: list now, so it is pinned (and
            // registered) before it is decided. If the upstream cannot list, the call is
            // decided as an unknown tool.
            match self.observe(request).await {
                Ok((_, pins)) => pin = find(pins),
                Err(error) => {
                    tracing::warn!(%error, server = %request.server.name, "upstream listing before a call failed")
                }
            }
        }
        let decision = self
            .decide(request, &params, &context, pin.as_ref())
            .await
            .inspect_err(|_| telemetry::call_ended(CallOutcome::Undecided))?;
        let result = match decision.verdict {
            Verdict::Allow => self.forward(request, params, &decision).await,
            Verdict::Deny => {
                telemetry::call_ended(CallOutcome::Denied);
                refusal(&decision)
            }
            Verdict::RequireApproval => {
                telemetry::call_ended(CallOutcome::ApprovalRequired);
                refusal(&decision)
            }
        };
        Ok(CallToolResponse::Complete(result))
    }
}
