//! [`McpRegistry`] on PostgreSQL: the writes of [`crate::mcp`] run in the writer's batch
//! transaction, the reads of its shared statements on the read pool.

use super::{PgStore, prepared};
use crate::backend::Backend;
use crate::mcp::sql;
use crate::*;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;

/// [`EvidenceReads::mcp_definitions`].
pub(super) async fn definitions_of_servers<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    names: &[String],
) -> StoreResult<Vec<(McpServer, ToolPin)>> {
    let statement = sql::DEFINITIONS_OF_SERVERS.replace("{names}", "= ANY($2)");
    client
        .query(
            &prepared(client, &statement).await?,
            &[&tenant.as_str(), &names],
        )
        .await?
        .iter()
        .map(|row| crate::rows::defined_tool(row, tenant))
        .collect()
}

pub(super) async fn pins<C: GenericClient>(
    client: &C,
    tenant_id: &str,
    server_id: &str,
) -> StoreResult<Vec<ToolPin>> {
    client
        .query(
            &prepared(client, sql::PINS).await?,
            &[&tenant_id, &server_id],
        )
        .await?
        .iter()
        .map(|row| crate::rows::tool_pin(row))
        .collect()
}

pub(super) async fn pin<C: GenericClient>(
    client: &C,
    tenant_id: &str,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    client
        .query_opt(
            &prepared(client, sql::PIN).await?,
            &[&tenant_id, &server_id, &tool],
        )
        .await?
        .as_ref()
        .map(|row| crate::rows::tool_pin(row))
        .transpose()
}

impl PgStore {
    async fn mcp_server_where(
        &self,
        statement: &str,
        tenant: &TenantId,
        key: &str,
    ) -> StoreResult<McpServer> {
        self.query_opt(statement, &[&tenant.as_str(), &key])
            .await?
            .as_ref()
            .map(|row| crate::rows::mcp_server(row))
            .transpose()?
            .ok_or(StoreError::NotFound("MCP server"))
    }
}

#[async_trait]
impl McpRegistry for PgStore {
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
        self.query_map(
            sql::LIST_SERVERS,
            &[&tenant.as_str()],
            crate::rows::mcp_server,
        )
        .await
    }

    async fn mcp_server(&self, tenant: &TenantId, server_id: &str) -> StoreResult<McpServer> {
        self.mcp_server_where(sql::SERVER_BY_ID, tenant, server_id)
            .await
    }

    async fn mcp_server_by_name(&self, tenant: &TenantId, name: &str) -> StoreResult<McpServer> {
        self.mcp_server_where(sql::SERVER_BY_NAME, tenant, name)
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
        let client = self.pool.get().await?;
        pins(&client, tenant.as_str(), server_id).await
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
