//! [`McpRegistry`] on SQLite: the writes of [`crate::mcp`] run on the writer thread, the
//! reads of its shared statements on the read pool.

use super::SqliteStore;
use super::rows::{read_opt, read_rows};
use crate::backend::Backend;
use crate::mcp::sql;
use crate::*;
use async_trait::async_trait;
use rusqlite::{Connection, params};

/// [`EvidenceReads::mcp_definitions`]: `names` is a JSON array of server names.
pub(super) fn definitions_of_servers(
    conn: &Connection,
    tenant: &TenantId,
    names: &str,
) -> StoreResult<Vec<(McpServer, ToolPin)>> {
    let statement =
        sql::DEFINITIONS_OF_SERVERS.replace("{names}", "IN (SELECT value FROM json_each($2))");
    read_rows(conn, &statement, params![tenant.as_str(), names], |row| {
        crate::rows::defined_tool(row, tenant)
    })
}

pub(super) fn pins(
    conn: &Connection,
    tenant_id: &str,
    server_id: &str,
) -> StoreResult<Vec<ToolPin>> {
    read_rows(
        conn,
        sql::PINS,
        params![tenant_id, server_id],
        crate::rows::tool_pin,
    )
}

pub(super) fn pin(
    conn: &Connection,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    read_opt(
        conn,
        sql::PIN,
        params![tenant_id, server_id, tool],
        crate::rows::tool_pin,
    )
}

fn server(
    conn: &Connection,
    statement: &str,
    tenant: &TenantId,
    key: &str,
) -> StoreResult<McpServer> {
    read_opt(
        conn,
        statement,
        params![tenant.as_str(), key],
        crate::rows::mcp_server,
    )?
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
        self.run_rule(move |tx| {
            Box::pin(async move { crate::mcp::create_server(tx, tenant, new).await })
        })
        .await
    }

    async fn list_mcp_servers(&self, tenant: &TenantId) -> StoreResult<Vec<McpServer>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            read_rows(
                conn,
                sql::LIST_SERVERS,
                [tenant.as_str()],
                crate::rows::mcp_server,
            )
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
        self.run_rule(move |tx| {
            Box::pin(async move { crate::mcp::delete_server(tx, tenant.as_str(), &id).await })
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
                let tenant_id = tenant.as_str();
                crate::mcp::observe_tools(tx, tenant_id, &server, &tools, &agent, now_ms()).await
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
        self.run_rule(move |tx| {
            Box::pin(async move {
                let tenant_id = tenant.as_str();
                crate::mcp::accept_tool(tx, tenant_id, &id, &tool, &by, now_ms()).await
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
        self.run_rule(move |tx| {
            Box::pin(async move {
                let (tenant_id, argument) = (tenant.as_str(), resource_argument.as_deref());
                crate::mcp::set_resource_argument(tx, tenant_id, &id, &tool, argument).await
            })
        })
        .await
    }
}
