//! MCP gateway mode: AegisAgent as a Model Context Protocol server that agents connect to
//! instead of their upstream MCP servers, so every tool call becomes a recorded decision
//! without a change to the agent.
//!
//! [`McpGateway`] is an MCP server (the official Rust SDK, `rmcp`, over streamable HTTP).
//! For each request it reads the [`McpRequest`] the embedding HTTP layer put in the
//! request's extensions (the authenticated agent, its tenant, the upstream server), and:
//!
//! - `tools/list`: lists the upstream's tools ([`upstream`]), pins each definition
//!   ([`definition`], stored through [`aegis_store::McpRegistry`]), and leaves out the tools
//!   whose definition changed since it was pinned and those the agent may never call.
//! - `tools/call`: asks the [`ToolCallGate`] for one decision (the gateway's own authorize
//!   use case, in process); only an allow is forwarded upstream. Deny and require_approval
//!   are tool results with `isError: true` that name the decision.
//!
//! A local (stdio) server the gateway cannot reach is run beside the agent by `aegis mcp
//! wrap`, which reports its listings and calls; [`McpGateway::govern_listing`] and
//! [`McpGateway::decide_reported_call`] apply the same rules to them.
//!
//! The server is stateless (no MCP session): every request carries the agent's token and
//! is served by whichever replica receives it, before or after a restart.
//!
//! This crate knows nothing of the gateway's HTTP API: the embedding server authenticates
//! the agent and implements [`ToolCallGate`].

pub mod definition;
mod gate;
mod gateway;
pub mod resource;
pub mod telemetry;
pub mod upstream;

pub use gate::{GateDecision, GatedCall, ToolCallGate};
pub use gateway::{
    McpGateway, McpRequest, McpSettings, call_source_trust, governed_server_info, refusal_text,
};
/// The MCP tool definition, as listings carry it.
pub use rmcp::model::Tool;

/// The transport types an embedding server names to hold the service.
pub mod rmcp_http {
    pub use rmcp::transport::streamable_http_server::StreamableHttpService;
    pub use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
}
