//! [`McpRegistry`] on SQLite: the shared statements of [`crate::mcp`] run on the writer
//! thread (writes) and the read pool.

use super::{SqliteStore, append_event};
use crate::mcp::{
    PinStep, accepted_close_reason, accepted_payload, definition_changed_key_prefix,
    definition_changed_payload, first_listed_action, mcp_event, pin_step,
    resource_argument_payload, sql,
};
use crate::*;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

fn server_from_row(row: &Row<'_>) -> rusqlite::Result<McpServer> {
    Ok(McpServer {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        name: row.get(2)?,
        url: row.get(3)?,
        created_at_ms: row.get(4)?,
    })
}

fn pin_from_row(row: &Row<'_>) -> rusqlite::Result<(ToolPin, String)> {
    let status: String = row.get(4)?;
    Ok((
        ToolPin {
            server_id: row.get(0)?,
            tool: row.get(1)?,
            definition_hash: row.get(2)?,
            read_only: row.get(3)?,
            // Replaced below from `status`, which the CHECK constraint bounds.
            status: PinStatus::Pinned,
            changed_hash: row.get(5)?,
            accepted_by: row.get(6)?,
            accepted_at_ms: row.get(7)?,
            pinned_at_ms: row.get(8)?,
            resource_argument: row.get(9)?,
        },
        status,
    ))
}

/// [`EvidenceReads::mcp_definitions`]: `names` is a JSON array of server names.
pub(super) fn definitions_of_servers(
    conn: &Connection,
    tenant: &TenantId,
    names: &str,
) -> StoreResult<Vec<(McpServer, ToolPin)>> {
    let statement =
        sql::DEFINITIONS_OF_SERVERS.replace("{names}", "IN (SELECT value FROM json_each($2))");
    conn.prepare_cached(&statement)?
        .query_map(params![tenant.as_str(), names], |row| {
            let server = McpServer {
                id: row.get(0)?,
                tenant_id: tenant.clone(),
                name: row.get(10)?,
                url: row.get(11)?,
                created_at_ms: row.get(12)?,
            };
            Ok((server, pin_from_row(row)?))
        })?
        .map(|row| {
            let (server, pin) = row?;
            Ok((server, with_status(pin)?))
        })
        .collect()
}

fn with_status((mut pin, status): (ToolPin, String)) -> StoreResult<ToolPin> {
    pin.status = PinStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("pin status {status:?}")))?;
    Ok(pin)
}

fn pins(conn: &Connection, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>> {
    conn.prepare_cached(sql::PINS)?
        .query_map(params![tenant.as_str(), server_id], pin_from_row)?
        .map(|row| with_status(row?))
        .collect()
}

fn pin(
    conn: &Connection,
    tenant: &TenantId,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    conn.prepare_cached(sql::PIN)?
        .query_row(params![tenant.as_str(), server_id, tool], pin_from_row)
        .optional()?
        .map(with_status)
        .transpose()
}

fn server(
    conn: &Connection,
    statement: &str,
    tenant: &TenantId,
    key: &str,
) -> StoreResult<McpServer> {
    conn.prepare_cached(statement)?
        .query_row(params![tenant.as_str(), key], server_from_row)
        .optional()?
        .ok_or(StoreError::NotFound("MCP server"))
}

#[async_trait]
impl McpRegistry for SqliteStore {
    async fn create_mcp_server(
        &self,
        tenant: &TenantId,
        new: NewMcpServer,
    ) -> StoreResult<McpServer> {
        let tenant = tenant.clone();
        self.writer()?
            .write(move |conn, _| {
                conn.prepare_cached(sql::INSERT_SERVER)?.execute(params![
                    new.id,
                    tenant.as_str(),
                    new.name,
                    new.url,
                    new.created_at_ms
                ])?;
                append_event(
                    conn,
                    tenant.as_str(),
                    mcp_event::SERVER_REGISTERED,
                    None,
                    Some(&new.id),
                    &serde_json::json!({"server_id": new.id, "name": new.name, "url": new.url}),
                )?;
                Ok(McpServer {
                    id: new.id,
                    tenant_id: tenant,
                    name: new.name,
                    url: new.url,
                    created_at_ms: new.created_at_ms,
                })
            })
            .await
    }

    async fn list_mcp_servers(&self, tenant: &TenantId) -> StoreResult<Vec<McpServer>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(sql::LIST_SERVERS)?
                .query_map([tenant.as_str()], server_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<McpServer> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.read(move |conn| server(conn, sql::SERVER_BY_ID, &tenant, &id))
            .await
    }

    async fn mcp_server_by_name(&self, tenant: &TenantId, name: &str) -> StoreResult<McpServer> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.read(move |conn| server(conn, sql::SERVER_BY_NAME, &tenant, &name))
            .await
    }

    async fn delete_mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<()> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.writer()?
            .write(move |conn, _| {
                if conn
                    .prepare_cached(sql::DELETE_SERVER)?
                    .execute(params![tenant.as_str(), id])?
                    == 0
                {
                    return Err(StoreError::NotFound("MCP server"));
                }
                conn.prepare_cached(sql::DELETE_PINS)?
                    .execute(params![tenant.as_str(), id])?;
                append_event(
                    conn,
                    tenant.as_str(),
                    mcp_event::SERVER_DELETED,
                    None,
                    Some(&id),
                    &serde_json::json!({"server_id": id}),
                )?;
                Ok(())
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
        self.writer()?
            .write(move |conn, _| {
                let at = now_ms();
                let mut registered = Vec::new();
                for tool in &tools {
                    let existing = pin(conn, &tenant, &server.id, &tool.name)?;
                    match pin_step(existing.as_ref(), tool) {
                        PinStep::Keep => {}
                        PinStep::Pin => {
                            conn.prepare_cached(sql::INSERT_PIN)?.execute(params![
                                tenant.as_str(),
                                server.id,
                                tool.name,
                                tool.definition_hash,
                                tool.read_only,
                                at
                            ])?;
                            let inserted = conn
                                .prepare_cached(sql::REGISTER_FIRST_LISTED)?
                                .execute(params![
                                    tenant.as_str(),
                                    server.name,
                                    tool.name,
                                    !tool.read_only,
                                    FIRST_LISTING_RISK.as_str(),
                                    at
                                ])?;
                            if inserted == 1 {
                                registered.push(first_listed_action(tool));
                            }
                        }
                        PinStep::Change => {
                            let marked =
                                conn.prepare_cached(sql::MARK_CHANGED)?.execute(params![
                                    tool.definition_hash,
                                    tool.read_only,
                                    tenant.as_str(),
                                    server.id,
                                    tool.name
                                ])?;
                            if marked == 1 {
                                append_event(
                                    conn,
                                    tenant.as_str(),
                                    mcp_event::TOOL_DEFINITION_CHANGED,
                                    Some(&agent),
                                    Some(&server.id),
                                    &definition_changed_payload(&server, existing.as_ref(), tool),
                                )?;
                            }
                        }
                    }
                }
                if !registered.is_empty() {
                    append_event(
                        conn,
                        tenant.as_str(),
                        event_kind::TOOL_REGISTERED,
                        None,
                        Some(&server.name),
                        &serde_json::json!({"tool": server.name, "actions": registered}),
                    )?;
                }
                Ok(McpObservation {
                    pins: pins(conn, &tenant, &server.id)?,
                    registered_actions: !registered.is_empty(),
                })
            })
            .await
    }

    async fn mcp_tool_pins(&self, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.read(move |conn| pins(conn, &tenant, &id)).await
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
        self.writer()?
            .write(move |conn, _| {
                let before =
                    pin(conn, &tenant, &id, &tool)?.ok_or(StoreError::NotFound("tool pin"))?;
                let at = now_ms();
                if conn.prepare_cached(sql::ACCEPT)?.execute(params![
                    by,
                    at,
                    tenant.as_str(),
                    id,
                    tool
                ])? == 0
                {
                    return Err(StoreError::Conflict(
                        "the tool's definition has not changed since it was pinned or accepted"
                            .into(),
                    ));
                }
                append_event(
                    conn,
                    tenant.as_str(),
                    mcp_event::TOOL_DEFINITION_ACCEPTED,
                    None,
                    Some(&id),
                    &accepted_payload(&before, &by),
                )?;
                let open: Vec<String> = conn
                    .prepare_cached(sql::OPEN_DEFINITION_INCIDENTS)?
                    .query_map(
                        params![tenant.as_str(), definition_changed_key_prefix(&id, &tool)],
                        |row| row.get(0),
                    )?
                    .collect::<Result<_, _>>()?;
                let close = IncidentStep::Close {
                    reason: Some(accepted_close_reason(&by)),
                };
                let (tenant_id, close, by) = (tenant.as_str(), &close, by.as_str());
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    for incident_id in open {
                        crate::soc::step_incident(&mut tx, tenant_id, &incident_id, close, by, at)
                            .await?;
                    }
                    Ok(())
                })?;
                pin(conn, &tenant, &id, &tool)?.ok_or(StoreError::NotFound("tool pin"))
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
        self.writer()?
            .write(move |conn, _| {
                if conn
                    .prepare_cached(sql::SET_RESOURCE_ARGUMENT)?
                    .execute(params![resource_argument, tenant.as_str(), id, tool])?
                    == 0
                {
                    return Err(StoreError::NotFound("tool pin"));
                }
                append_event(
                    conn,
                    tenant.as_str(),
                    mcp_event::TOOL_RESOURCE_ARGUMENT_SET,
                    None,
                    Some(&id),
                    &resource_argument_payload(&id, &tool, resource_argument.as_deref()),
                )?;
                pin(conn, &tenant, &id, &tool)?.ok_or(StoreError::NotFound("tool pin"))
            })
            .await
    }
}
