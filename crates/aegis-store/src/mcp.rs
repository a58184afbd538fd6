//! MCP gateway records: the upstream MCP servers a tenant registered, and the pin of every
//! tool definition the gateway has seen from them.
//!
//! The rules live here once: [`pin_step`] says what one observed definition does to its pin,
//! and what registering a server, observing a listing, accepting a changed definition and
//! setting a tool's resource argument write is written below once over
//! `crate::tx::WriteTx`, with the SQL both backends run (`sql`); so are the registry's
//! reads, over `ReadRows`, and the [`McpRegistry`] role any `Backend` gets.

use crate::backend::Backend;
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{IncidentStep, StoreError, StoreResult, TenantId, event_kind, now_ms, soc};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Event kinds of MCP gateway mode.
pub mod mcp_event {
    pub const SERVER_REGISTERED: &str = "mcp.server_registered";
    pub const SERVER_DELETED: &str = "mcp.server_deleted";
    /// A listed tool's definition differs from its pin: raised once per new definition.
    pub const TOOL_DEFINITION_CHANGED: &str = "mcp.tool_definition_changed";
    pub const TOOL_DEFINITION_ACCEPTED: &str = "mcp.tool_definition_accepted";
    /// An admin named (or cleared) the argument that is a tool's calls' resource.
    pub const TOOL_RESOURCE_ARGUMENT_SET: &str = "mcp.tool_resource_argument_set";
}

#[derive(Debug, Clone)]
pub struct NewMcpServer {
    pub id: String,
    pub name: String,
    pub url: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    /// The upstream's streamable-HTTP endpoint, or [`STDIO_ADDRESS`].
    pub url: String,
    pub created_at_ms: i64,
}

/// The address stored for a local server (registered with `transport: stdio`): the gateway
/// never connects to it. `aegis mcp wrap` runs it beside the agent and reports its listings
/// and calls over the agent API. No http(s) URL can take this form, so the two kinds of
/// registration never meet.
pub const STDIO_ADDRESS: &str = "stdio:";

impl McpServer {
    /// A local server behind `aegis mcp wrap`, not one the gateway reaches itself.
    pub fn is_stdio(&self) -> bool {
        self.url == STDIO_ADDRESS
    }
}

/// Where a tool's pin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinStatus {
    /// The definition is the one first seen.
    Pinned,
    /// A different definition was seen since: withheld and denied until accepted.
    Changed,
    /// An admin accepted the current definition.
    Accepted,
}

impl PinStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PinStatus::Pinned => "pinned",
            PinStatus::Changed => "changed",
            PinStatus::Accepted => "accepted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pinned" => Some(PinStatus::Pinned),
            "changed" => Some(PinStatus::Changed),
            "accepted" => Some(PinStatus::Accepted),
            _ => None,
        }
    }
}

/// The pin of one tool of one upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPin {
    pub server_id: String,
    pub tool: String,
    /// Hash of the trusted definition: the first seen, or the last accepted.
    pub definition_hash: String,
    /// The trusted definition says the tool only reads (`annotations.readOnlyHint`).
    pub read_only: bool,
    pub status: PinStatus,
    /// The newest definition seen that differs from the trusted one, while not accepted.
    pub changed_hash: Option<String>,
    pub accepted_by: Option<String>,
    pub accepted_at_ms: Option<i64>,
    pub pinned_at_ms: i64,
    /// The argument whose string value is the `resource` of this tool's calls, when an
    /// admin named one (a call without it as a string is denied).
    pub resource_argument: Option<String>,
}

impl ToolPin {
    /// A tool whose definition changed is neither listed nor callable until accepted.
    pub fn withheld(&self) -> bool {
        self.status == PinStatus::Changed
    }
}

/// The pins after one listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpObservation {
    pub pins: Vec<ToolPin>,
    /// The listing registered tool actions the tenant had not registered.
    pub registered_actions: bool,
}

/// A tool definition as one upstream listing showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTool {
    pub name: String,
    pub definition_hash: String,
    pub read_only: bool,
}

/// What one observed definition does to its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStep {
    /// First sight: pin it (and register the tool action with conservative facts).
    Pin,
    /// Nothing new: the trusted definition, or the change already recorded.
    Keep,
    /// A definition not seen before: withhold the tool and raise one alert.
    Change,
}

/// The pin rule, for one tool of one listing.
pub fn pin_step(existing: Option<&ToolPin>, observed: &ObservedTool) -> PinStep {
    match existing {
        None => PinStep::Pin,
        Some(pin)
            if pin.definition_hash == observed.definition_hash
                || pin.changed_hash.as_deref() == Some(observed.definition_hash.as_str()) =>
        {
            PinStep::Keep
        }
        Some(_) => PinStep::Change,
    }
}

/// Kind of the alert and the incident a changed definition raises.
pub const DEFINITION_CHANGED: &str = "tool_definition_changed";

/// One incident per new definition of a tool: `tool_definition_changed:<server>:<tool>:<hash>`.
pub fn definition_changed_dedup_key(server_id: &str, tool: &str, new_hash: &str) -> String {
    format!(
        "{}{new_hash}",
        definition_changed_key_prefix(server_id, tool)
    )
}

/// What the dedup keys of a tool's definition changes start with; the hash after it is 64
/// hex digits, so a key of exactly that length belongs to this tool and no other (a tool
/// named `read:x` has longer keys under `read`'s prefix).
fn definition_changed_key_prefix(server_id: &str, tool: &str) -> String {
    format!("{DEFINITION_CHANGED}:{server_id}:{tool}:")
}

/// Why accepting a definition closes the incidents its changes opened.
fn accepted_close_reason(accepted_by: &str) -> String {
    format!("the changed definition was accepted by {accepted_by}; the tool is callable again")
}

/// Risk given to a tool action registered on first listing: an admin can change it.
pub const FIRST_LISTING_RISK: aegis_core::model::ActionRisk = aegis_core::model::ActionRisk::Medium;

/// The action registered for a tool on its first listing, as the `tool.registered` event
/// of that listing lists it.
fn first_listed_action(tool: &ObservedTool) -> crate::ToolAction {
    crate::ToolAction {
        action: tool.name.clone(),
        mutates_state: !tool.read_only,
        risk: FIRST_LISTING_RISK,
        egress: false,
        sensitive: false,
    }
}

/// Payload of `mcp.tool_definition_changed`: what the SOC's alert names.
fn definition_changed_payload(
    server: &McpServer,
    pin: Option<&ToolPin>,
    seen: &ObservedTool,
) -> serde_json::Value {
    serde_json::json!({
        "server_id": server.id,
        "server": server.name,
        "tool": seen.name,
        "pinned_hash": pin.map(|p| p.definition_hash.as_str()),
        "new_hash": seen.definition_hash,
    })
}

/// Payload of `mcp.tool_definition_accepted`.
fn accepted_payload(before: &ToolPin, accepted_by: &str) -> serde_json::Value {
    serde_json::json!({
        "server_id": before.server_id,
        "tool": before.tool,
        "previous_hash": before.definition_hash,
        "accepted_hash": before.changed_hash,
        "accepted_by": accepted_by,
    })
}

/// Payload of `mcp.tool_resource_argument_set`.
fn resource_argument_payload(
    server_id: &str,
    tool: &str,
    resource_argument: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "server_id": server_id,
        "tool": tool,
        "resource_argument": resource_argument,
    })
}

/// Registers an upstream MCP server for the tenant, with its event.
pub(crate) async fn create_server(
    tx: &mut impl WriteTx,
    tenant: TenantId,
    new: NewMcpServer,
) -> StoreResult<McpServer> {
    tx.execute(
        sql::INSERT_SERVER,
        &[
            SqlValue::text(&new.id),
            SqlValue::text(tenant.as_str()),
            SqlValue::text(&new.name),
            SqlValue::text(&new.url),
            SqlValue::int(new.created_at_ms),
        ],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id: tenant.as_str(),
        kind: mcp_event::SERVER_REGISTERED,
        agent_id: None,
        subject_id: Some(&new.id),
        payload: serde_json::json!({"server_id": new.id, "name": new.name, "url": new.url}),
    })
    .await?;
    Ok(McpServer {
        id: new.id,
        tenant_id: tenant,
        name: new.name,
        url: new.url,
        created_at_ms: new.created_at_ms,
    })
}

/// Deletes the tenant's MCP server and its pins, with its event.
pub(crate) async fn delete_server(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    server_id: &str,
) -> StoreResult<()> {
    let key = [SqlValue::text(tenant_id), SqlValue::text(server_id)];
    if tx.execute(sql::DELETE_SERVER, &key).await? == 0 {
        return Err(StoreError::NotFound("MCP server"));
    }
    tx.execute(sql::DELETE_PINS, &key).await?;
    tx.append_event(EventDraft {
        tenant_id,
        kind: mcp_event::SERVER_DELETED,
        agent_id: None,
        subject_id: Some(server_id),
        payload: serde_json::json!({"server_id": server_id}),
    })
    .await?;
    Ok(())
}

/// Applies one listing of the server's tools, seen by agent `observed_by` at `at`, to their
/// pins ([`pin_step`]): a first sight pins the definition and registers the tool action, a
/// definition not seen before withholds the tool with one event. The pins after it.
pub(crate) async fn observe_tools(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    server: &McpServer,
    tools: &[ObservedTool],
    observed_by: &str,
    at: i64,
) -> StoreResult<McpObservation> {
    let mut registered = Vec::new();
    for tool in tools {
        let existing = pin(tx, tenant_id, &server.id, &tool.name).await?;
        match pin_step(existing.as_ref(), tool) {
            PinStep::Keep => {}
            PinStep::Pin => {
                tx.execute(
                    sql::INSERT_PIN,
                    &[
                        SqlValue::text(tenant_id),
                        SqlValue::text(&server.id),
                        SqlValue::text(&tool.name),
                        SqlValue::text(&tool.definition_hash),
                        SqlValue::Bool(tool.read_only),
                        SqlValue::int(at),
                    ],
                )
                .await?;
                let inserted = tx
                    .execute(
                        sql::REGISTER_FIRST_LISTED,
                        &[
                            SqlValue::text(tenant_id),
                            SqlValue::text(&server.name),
                            SqlValue::text(&tool.name),
                            SqlValue::Bool(!tool.read_only),
                            SqlValue::text(FIRST_LISTING_RISK.as_str()),
                            SqlValue::int(at),
                        ],
                    )
                    .await?;
                if inserted == 1 {
                    registered.push(first_listed_action(tool));
                }
            }
            PinStep::Change => {
                let marked = tx
                    .execute(
                        sql::MARK_CHANGED,
                        &[
                            SqlValue::text(&tool.definition_hash),
                            SqlValue::Bool(tool.read_only),
                            SqlValue::text(tenant_id),
                            SqlValue::text(&server.id),
                            SqlValue::text(&tool.name),
                        ],
                    )
                    .await?;
                if marked == 1 {
                    tx.append_event(EventDraft {
                        tenant_id,
                        kind: mcp_event::TOOL_DEFINITION_CHANGED,
                        agent_id: Some(observed_by),
                        subject_id: Some(&server.id),
                        payload: definition_changed_payload(server, existing.as_ref(), tool),
                    })
                    .await?;
                }
            }
        }
    }
    if !registered.is_empty() {
        tx.append_event(EventDraft {
            tenant_id,
            kind: event_kind::TOOL_REGISTERED,
            agent_id: None,
            subject_id: Some(&server.name),
            payload: serde_json::json!({"tool": server.name, "actions": registered}),
        })
        .await?;
    }
    Ok(McpObservation {
        pins: pins(tx, tenant_id, &server.id).await?,
        registered_actions: !registered.is_empty(),
    })
}

/// An operator accepting a tool's changed definition at `at`: the pin trusts it and the tool
/// is callable again, and the incidents its changes opened are closed. The pin after it.
pub(crate) async fn accept_tool(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
    accepted_by: &str,
    at: i64,
) -> StoreResult<ToolPin> {
    let before = pin_of(tx, tenant_id, server_id, tool).await?;
    let accepted = tx
        .execute(
            sql::ACCEPT,
            &[
                SqlValue::text(accepted_by),
                SqlValue::int(at),
                SqlValue::text(tenant_id),
                SqlValue::text(server_id),
                SqlValue::text(tool),
            ],
        )
        .await?;
    if accepted == 0 {
        return Err(StoreError::Conflict(
            "the tool's definition has not changed since it was pinned or accepted".into(),
        ));
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: mcp_event::TOOL_DEFINITION_ACCEPTED,
        agent_id: None,
        subject_id: Some(server_id),
        payload: accepted_payload(&before, accepted_by),
    })
    .await?;
    let prefix = definition_changed_key_prefix(server_id, tool);
    let open = tx
        .query_rows(
            sql::OPEN_DEFINITION_INCIDENTS,
            &[SqlValue::text(tenant_id), SqlValue::text(&prefix)],
            |row| row.required_text(0),
        )
        .await?;
    let close = IncidentStep::Close {
        reason: Some(accepted_close_reason(accepted_by)),
    };
    for incident_id in &open {
        soc::step_incident(tx, tenant_id, incident_id, &close, accepted_by, at).await?;
    }
    pin_of(tx, tenant_id, server_id, tool).await
}

/// Sets (or clears) which argument of a tool's calls names the resource it acts on, with
/// its event. The pin after it.
pub(crate) async fn set_resource_argument(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
    resource_argument: Option<&str>,
) -> StoreResult<ToolPin> {
    let set = tx
        .execute(
            sql::SET_RESOURCE_ARGUMENT,
            &[
                SqlValue::Text(resource_argument),
                SqlValue::text(tenant_id),
                SqlValue::text(server_id),
                SqlValue::text(tool),
            ],
        )
        .await?;
    if set == 0 {
        return Err(StoreError::NotFound("tool pin"));
    }
    tx.append_event(EventDraft {
        tenant_id,
        kind: mcp_event::TOOL_RESOURCE_ARGUMENT_SET,
        agent_id: None,
        subject_id: Some(server_id),
        payload: resource_argument_payload(server_id, tool, resource_argument),
    })
    .await?;
    pin_of(tx, tenant_id, server_id, tool).await
}

/// The pin of one tool of the tenant's server; `NotFound` if it has none.
async fn pin_of(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
) -> StoreResult<ToolPin> {
    pin(tx, tenant_id, server_id, tool)
        .await?
        .ok_or(StoreError::NotFound("tool pin"))
}

/// The statements both backends run (see the module doc for the parameter style).
pub(crate) mod sql {
    pub const INSERT_SERVER: &str = "INSERT INTO mcp_servers (id, tenant_id, name, url, created_at) VALUES ($1, $2, $3, $4, $5)";
    pub const LIST_SERVERS: &str = "SELECT id, tenant_id, name, url, created_at FROM mcp_servers WHERE tenant_id = $1 ORDER BY name";
    pub const SERVER_BY_ID: &str = "SELECT id, tenant_id, name, url, created_at FROM mcp_servers WHERE tenant_id = $1 AND id = $2";
    pub const SERVER_BY_NAME: &str = "SELECT id, tenant_id, name, url, created_at FROM mcp_servers WHERE tenant_id = $1 AND name = $2";
    pub const DELETE_SERVER: &str = "DELETE FROM mcp_servers WHERE tenant_id = $1 AND id = $2";
    pub const DELETE_PINS: &str =
        "DELETE FROM mcp_tool_pins WHERE tenant_id = $1 AND server_id = $2";
    pub const PINS: &str = "SELECT server_id, tool, definition_hash, read_only, status, changed_hash, accepted_by, accepted_at, pinned_at, resource_argument
         FROM mcp_tool_pins WHERE tenant_id = $1 AND server_id = $2 ORDER BY tool";
    pub const PIN: &str = "SELECT server_id, tool, definition_hash, read_only, status, changed_hash, accepted_by, accepted_at, pinned_at, resource_argument
         FROM mcp_tool_pins WHERE tenant_id = $1 AND server_id = $2 AND tool = $3";
    pub const INSERT_PIN: &str = "INSERT INTO mcp_tool_pins (tenant_id, server_id, tool, definition_hash, read_only, status, pinned_at)
         VALUES ($1, $2, $3, $4, $5, 'pinned', $6) ON CONFLICT (tenant_id, server_id, tool) DO NOTHING";
    /// Registers a first-listed tool action unless the tenant registered it already.
    pub const REGISTER_FIRST_LISTED: &str = "INSERT INTO tool_actions (tenant_id, tool, action, mutates_state, risk, egress, sensitive, updated_at)
         VALUES ($1, $2, $3, $4, $5, FALSE, FALSE, $6) ON CONFLICT (tenant_id, tool, action) DO NOTHING";
    /// Records a change once: a replica racing on the same listing updates no row.
    pub const MARK_CHANGED: &str =
        "UPDATE mcp_tool_pins SET status = 'changed', changed_hash = $1, changed_read_only = $2
         WHERE tenant_id = $3 AND server_id = $4 AND tool = $5 AND definition_hash <> $1
           AND (changed_hash IS NULL OR changed_hash <> $1)";
    pub const ACCEPT: &str = "UPDATE mcp_tool_pins SET definition_hash = changed_hash, read_only = changed_read_only, status = 'accepted',
             changed_hash = NULL, changed_read_only = NULL, accepted_by = $1, accepted_at = $2
         WHERE tenant_id = $3 AND server_id = $4 AND tool = $5 AND status = 'changed'";
    /// The open incidents of a tool's definition changes (`$2`: its dedup key prefix).
    pub const OPEN_DEFINITION_INCIDENTS: &str = "SELECT id FROM incidents
         WHERE tenant_id = $1 AND kind = 'tool_definition_changed' AND status <> 'closed'
           AND substr(dedup_key, 1, length($2)) = $2 AND length(dedup_key) = length($2) + 64
         ORDER BY event_seq";
    /// Every pin of the tenant's servers with these names, with its server's name, URL and
    /// creation (`{names}`: the backend's way to match a batch of names).
    pub const DEFINITIONS_OF_SERVERS: &str = "SELECT p.server_id, p.tool, p.definition_hash, p.read_only, p.status, p.changed_hash,
             p.accepted_by, p.accepted_at, p.pinned_at, p.resource_argument, s.name, s.url, s.created_at
         FROM mcp_tool_pins p JOIN mcp_servers s ON s.tenant_id = p.tenant_id AND s.id = p.server_id
         WHERE p.tenant_id = $1 AND s.name {names} ORDER BY s.name, p.tool";
    pub const SET_RESOURCE_ARGUMENT: &str = "UPDATE mcp_tool_pins SET resource_argument = $1
         WHERE tenant_id = $2 AND server_id = $3 AND tool = $4";
}

/// Storage of MCP gateway mode. Every method is scoped to a tenant.
#[async_trait]
pub trait McpRegistry: Send + Sync {
    /// `Conflict` if the tenant has a server of that name.
    async fn create_mcp_server(
        &self,
        tenant: &TenantId,
        server: NewMcpServer,
    ) -> StoreResult<McpServer>;
    async fn list_mcp_servers(&self, tenant: &TenantId) -> StoreResult<Vec<McpServer>>;
    /// `NotFound` unless the tenant has it.
    async fn mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<McpServer>;
    /// `NotFound` unless the tenant has it.
    async fn mcp_server_by_name(&self, tenant: &TenantId, name: &str) -> StoreResult<McpServer>;
    /// Deletes the server and its pins; `NotFound` unless the tenant has it.
    async fn delete_mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<()>;
    /// Applies one upstream listing to the pins ([`pin_step`]) in one transaction: new
    /// tools are pinned and, unless registered, registered (mutating unless read-only,
    /// [`FIRST_LISTING_RISK`]); each definition not seen before marks its pin changed with
    /// one `mcp.tool_definition_changed` event, naming `observed_by` (the agent whose request
    /// listed it). Returns the server's pins afterwards.
    async fn observe_mcp_tools(
        &self,
        tenant: &TenantId,
        server: &McpServer,
        tools: Vec<ObservedTool>,
        observed_by: &str,
    ) -> StoreResult<McpObservation>;
    async fn mcp_tool_pins(&self, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>>;
    /// Makes a changed definition the trusted one, recording who accepted it, and closes
    /// the open `tool_definition_changed` incidents of the tool (the block they recorded is
    /// lifted). `NotFound` if the server has no such pin, `Conflict` if its definition has
    /// not changed.
    async fn accept_mcp_tool(
        &self,
        tenant: &TenantId,
        server_id: &str,
        tool: &str,
        accepted_by: &str,
    ) -> StoreResult<ToolPin>;
    /// Names the argument whose string value is the `resource` of the tool's calls (`None`:
    /// calls name no resource), with its `mcp.tool_resource_argument_set` event. `NotFound`
    /// if the server has no such pin (the gateway has not seen the tool).
    async fn set_mcp_resource_argument(
        &self,
        tenant: &TenantId,
        server_id: &str,
        tool: &str,
        resource_argument: Option<String>,
    ) -> StoreResult<ToolPin>;
}

#[async_trait]
impl<B: Backend> McpRegistry for B {
    async fn create_mcp_server(
        &self,
        tenant: &TenantId,
        new: NewMcpServer,
    ) -> StoreResult<McpServer> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| Box::pin(async move { create_server(tx, tenant, new).await }))
            .await
    }

    async fn list_mcp_servers(&self, tenant: &TenantId) -> StoreResult<Vec<McpServer>> {
        self.tenant_rows(sql::LIST_SERVERS, tenant, crate::rows::mcp_server)
            .await
    }

    async fn mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<McpServer> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move { server_where(rows, sql::SERVER_BY_ID, &tenant, &id).await })
        })
        .await
    }

    async fn mcp_server_by_name(&self, tenant: &TenantId, name: &str) -> StoreResult<McpServer> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move { server_where(rows, sql::SERVER_BY_NAME, &tenant, &name).await })
        })
        .await
    }

    async fn delete_mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<()> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move { delete_server(tx, tenant.as_str(), &id).await })
        })
        .await
    }

    async fn observe_mcp_tools(
        &self,
        tenant: &TenantId,
        server: &McpServer,
        tools: Vec<ObservedTool>,
        observed_by: &str,
    ) -> StoreResult<McpObservation> {
        let (tenant, server, agent) = (tenant.clone(), server.clone(), observed_by.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                observe_tools(tx, tenant.as_str(), &server, &tools, &agent, now_ms()).await
            })
        })
        .await
    }

    async fn mcp_tool_pins(&self, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.run_read(move |rows| Box::pin(async move { pins(rows, tenant.as_str(), &id).await }))
            .await
    }

    async fn accept_mcp_tool(
        &self,
        tenant: &TenantId,
        server_id: &str,
        tool: &str,
        accepted_by: &str,
    ) -> StoreResult<ToolPin> {
        let (tenant, id, tool, by) = (
            tenant.clone(),
            server_id.to_owned(),
            tool.to_owned(),
            accepted_by.to_owned(),
        );
        self.run_rule(move |tx| {
            Box::pin(
                async move { accept_tool(tx, tenant.as_str(), &id, &tool, &by, now_ms()).await },
            )
        })
        .await
    }

    async fn set_mcp_resource_argument(
        &self,
        tenant: &TenantId,
        server_id: &str,
        tool: &str,
        resource_argument: Option<String>,
    ) -> StoreResult<ToolPin> {
        let (tenant, id, tool) = (tenant.clone(), server_id.to_owned(), tool.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                let (tenant_id, argument) = (tenant.as_str(), resource_argument.as_deref());
                set_resource_argument(tx, tenant_id, &id, &tool, argument).await
            })
        })
        .await
    }
}

/// The pins of every tool of the tenant's MCP server, by tool name.
async fn pins(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    server_id: &str,
) -> StoreResult<Vec<ToolPin>> {
    let key = [SqlValue::text(tenant_id), SqlValue::text(server_id)];
    rows.query_rows(sql::PINS, &key, crate::rows::tool_pin)
        .await
}

/// The pin of one tool of the tenant's MCP server; `None` if it has none.
async fn pin(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    let key = [
        SqlValue::text(tenant_id),
        SqlValue::text(server_id),
        SqlValue::text(tool),
    ];
    rows.query_opt(sql::PIN, &key, crate::rows::tool_pin).await
}

/// The tenant's server that `statement` (`$1` tenant, `$2` key) finds.
async fn server_where(
    rows: &mut impl ReadRows,
    statement: &str,
    tenant: &TenantId,
    key: &str,
) -> StoreResult<McpServer> {
    rows.query_opt(
        statement,
        &[SqlValue::text(tenant.as_str()), SqlValue::text(key)],
        crate::rows::mcp_server,
    )
    .await?
    .ok_or(StoreError::NotFound("MCP server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(hash: &str, changed: Option<&str>) -> ToolPin {
        ToolPin {
            server_id: "mcp_1".into(),
            tool: "read".into(),
            definition_hash: hash.into(),
            read_only: true,
            status: if changed.is_some() {
                PinStatus::Changed
            } else {
                PinStatus::Pinned
            },
            changed_hash: changed.map(Into::into),
            accepted_by: None,
            accepted_at_ms: None,
            pinned_at_ms: 0,
            resource_argument: None,
        }
    }

    fn seen(hash: &str) -> ObservedTool {
        ObservedTool {
            name: "read".into(),
            definition_hash: hash.into(),
            read_only: true,
        }
    }

    #[test]
    fn a_change_is_recorded_once_per_new_definition() {
        assert_eq!(pin_step(None, &seen("a")), PinStep::Pin);
        assert_eq!(pin_step(Some(&pin("a", None)), &seen("a")), PinStep::Keep);
        assert_eq!(pin_step(Some(&pin("a", None)), &seen("b")), PinStep::Change);
        // Listed again with the same new definition: already recorded.
        assert_eq!(
            pin_step(Some(&pin("a", Some("b"))), &seen("b")),
            PinStep::Keep
        );
        // A third definition is another change.
        assert_eq!(
            pin_step(Some(&pin("a", Some("b"))), &seen("c")),
            PinStep::Change
        );
        // Back to the trusted one: nothing new, but the pin stays changed until accepted.
        assert_eq!(
            pin_step(Some(&pin("a", Some("b"))), &seen("a")),
            PinStep::Keep
        );
        assert!(pin("a", Some("b")).withheld());
    }
}
