//! MCP gateway mode in the HTTP gateway: `/mcp/{server}` authenticates the agent, finds the
//! tenant's upstream server by name and hands the request to the MCP server of `aegis-mcp`,
//! whose decisions go through [`crate::action_plane`] via [`ServerGate`].

use crate::action_plane::{ProposedCall, authorize, may_ever_call};
use crate::auth::AgentCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::state::{AgentSnapshot, AppState, SharedState};
use crate::validate::{Resource, Text};
use aegis_core::model::SourceTrust;
use aegis_mcp::{GateDecision, GatedCall, McpRequest, ToolCallGate};
use aegis_store::{TenantId, TraceContext};
use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::Response;
use std::sync::{Arc, Weak};

/// Header by which an MCP client states the provenance of what drives its calls.
pub const SOURCE_TRUST_HEADER: &str = "x-aegis-source-trust";

/// The gateway's MCP server, deciding through this process's authorize use case.
pub type Gateway = aegis_mcp::McpGateway<ServerGate>;

/// [`ToolCallGate`] over the application state. Weak: the state owns the gateway.
pub struct ServerGate(pub Weak<AppState>);

impl ServerGate {
    fn state(&self) -> Result<Arc<AppState>, String> {
        self.0
            .upgrade()
            .ok_or_else(|| "the gateway is shutting down".to_owned())
    }
}

#[async_trait]
impl ToolCallGate for ServerGate {
    type Caller = Arc<AgentSnapshot>;

    async fn authorize(
        &self,
        caller: &Self::Caller,
        call: GatedCall,
    ) -> Result<GateDecision, String> {
        let state = self.state()?;
        // The argument's value meets the rule of `tool_call.resource`, or the call is denied.
        let (resource, denied_because) = match call.resource.map(Resource::parse).transpose() {
            Ok(resource) => (resource.map(Text::into_string), call.denied_because),
            Err(why) => (
                None,
                call.denied_because.or(Some(format!(
                    "the value of the tool's resource argument {why}"
                ))),
            ),
        };
        let decided = authorize(
            &state,
            caller,
            ProposedCall {
                request_id: None,
                tool: call.tool,
                action: call.action,
                resource,
                parameters: call.parameters,
                claimed_mutates_state: Some(call.claimed_mutates_state),
                source_trust: call.source_trust,
                trace: TraceContext::default(),
                approval_id: None,
                denied_because,
                tool_definition_hash: call.definition_hash,
            },
        )
        .await
        .map_err(|error| error.message)?;
        Ok(GateDecision {
            decision_id: decided.decision_id,
            verdict: decided.verdict,
            reason: decided.reason,
            approval_id: decided.approval.map(|approval| approval.id),
        })
    }

    async fn may_ever_call(
        &self,
        caller: &Self::Caller,
        tool: &str,
        action: &str,
    ) -> Result<bool, String> {
        let state = self.state()?;
        may_ever_call(&state, caller, tool, action)
            .await
            .map_err(|error| error.message)
    }

    fn tools_registered(&self, tenant: &TenantId) {
        if let Ok(state) = self.state() {
            state.tenants.invalidate(tenant);
        }
    }

    fn agent_id<'a>(&self, caller: &'a Self::Caller) -> &'a str {
        &caller.agent.id
    }
}

/// `/mcp/{server}`: a streamable-HTTP MCP endpoint for agents (agent token only). An unknown
/// server is 404, a local (stdio) one 409 and a bad `X-Aegis-Source-Trust` 422, in the API's error shape; everything
/// else is MCP's own (JSON-RPC errors, `isError` tool results).
pub async fn mcp_endpoint(
    State(state): State<SharedState>,
    AgentCaller(caller): AgentCaller,
    Path(server): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let tenant = caller.agent.tenant_id.clone();
    let server = state.store.mcp_server_by_name(&tenant, &server).await?;
    if server.is_stdio() {
        return Err(ApiError::conflict(format!(
            "MCP server {:?} is a local (stdio) server, which the gateway cannot reach: run it \
             under `aegis mcp wrap`",
            server.name
        )));
    }
    let source_trust = request
        .headers()
        .get(SOURCE_TRUST_HEADER)
        .map(|value| {
            // A header that is not visible ASCII names no variant either.
            value
                .to_str()
                .unwrap_or_default()
                .parse::<SourceTrust>()
                .map_err(|unknown| {
                    ApiError::invalid_field("X-Aegis-Source-Trust", unknown.to_string())
                })
        })
        .transpose()?;
    request.extensions_mut().insert(McpRequest {
        caller,
        tenant,
        server,
        source_trust,
    });
    Ok(state
        .mcp_http
        .handle(request)
        .await
        .map(axum::body::Body::new))
}
