//! [`McpRegistry`] on SQLite: the writes of [`crate::mcp`] run on the writer thread, the
//! reads of its shared statements on the read pool.

use super::SqliteStore;
use crate::mcp::sql;
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

pub(super) fn pins(
    conn: &Connection,
    tenant_id: &str,
    server_id: &str,
) -> StoreResult<Vec<ToolPin>> {
    conn.prepare_cached(sql::PINS)?
        .query_map(params![tenant_id, server_id], pin_from_row)?
        .map(|row| with_status(row?))
        .collect()
}

pub(super) fn pin(
    conn: &Connection,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    conn.prepare_cached(sql::PIN)?
        .query_row(params![tenant_id, server_id, tool], pin_from_row)
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
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    crate::mcp::create_server(&mut tx, tenant, new).await
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
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    crate::mcp::delete_server(&mut tx, tenant.as_str(), &id).await
                })
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
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    let tenant_id = tenant.as_str();
                    crate::mcp::observe_tools(&mut tx, tenant_id, &server, &tools, &agent, now_ms())
                        .await
                })
            })
            .await
    }

    async fn mcp_tool_pins(&self, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        let (tenant, id) = (tenant.clone(), server_id.to_owned());
        self.read(move |conn| pins(conn, tenant.as_str(), &id))
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
        self.writer()?
            .write(move |conn, _| {
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    let tenant_id = tenant.as_str();
                    crate::mcp::accept_tool(&mut tx, tenant_id, &id, &tool, &by, now_ms()).await
                })
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
                super::tx::SqliteTx::run(conn, |mut tx| async move {
                    let (tenant_id, argument) = (tenant.as_str(), resource_argument.as_deref());
                    crate::mcp::set_resource_argument(&mut tx, tenant_id, &id, &tool, argument)
                        .await
                })
            })
            .await
    }
}
