//! The port to the gateway's decision: what MCP gateway mode asks of the authorize use case.

use aegis_core::model::{SourceTrust, Verdict};
use aegis_store::TenantId;
use async_trait::async_trait;
use serde_json::Value;

/// One MCP `tools/call` as a tool call to decide.
#[derive(Debug, Clone)]
pub struct GatedCall {
    /// The upstream server's name.
    pub tool: String,
    /// The MCP tool's name.
    pub action: String,
    /// The value of the argument the admin named as the tool's resource ([`crate::resource`]).
    pub resource: Option<String>,
    /// The call's arguments (a JSON object), if any.
    pub parameters: Option<Value>,
    /// What the pinned definition says: a tool not declared read-only mutates state. It can
    /// only tighten what the tenant registered.
    pub claimed_mutates_state: bool,
    pub source_trust: SourceTrust,
    /// Set when the call must be denied whatever the policies say (a changed definition
    /// not yet accepted, a resource argument missing); the decision is still recorded,
    /// with this reason.
    pub denied_because: Option<String>,
    /// The hash of the tool's pinned definition (none for a tool never listed), which the
    /// decision's receipt records.
    pub definition_hash: Option<String>,
}

/// The decision, as recorded.
#[derive(Debug, Clone)]
pub struct GateDecision {
    pub decision_id: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The approval a `require_approval` asked for (or the one a call used or was refused).
    pub approval_id: Option<String>,
}

/// The gateway's authorize use case, as MCP gateway mode uses it.
#[async_trait]
pub trait ToolCallGate: Send + Sync + 'static {
    /// The authenticated agent, as the embedding server knows it.
    type Caller: Clone + Send + Sync + 'static;

    /// Decides one call and records the decision durably before answering; an error means
    /// nothing may be forwarded.
    async fn authorize(
        &self,
        caller: &Self::Caller,
        call: GatedCall,
    ) -> Result<GateDecision, String>;

    /// Whether any context could let this agent make this call (listings leave out the
    /// tools it answers `false` for).
    async fn may_ever_call(
        &self,
        caller: &Self::Caller,
        tool: &str,
        action: &str,
    ) -> Result<bool, String>;

    /// The tenant's registered tool actions changed (a listing registered new ones).
    fn tools_registered(&self, tenant: &TenantId);

    /// The agent's id, for what this crate records about a call.
    fn agent_id<'a>(&self, caller: &'a Self::Caller) -> &'a str;
}
