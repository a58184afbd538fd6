//! [`McpRegistry`] on PostgreSQL: the writes of [`crate::mcp`] run in the writer's batch
//! transaction, the reads of its shared statements on the read pool.

use super::rows::get;
use super::{PgStore, prepared};
use crate::mcp::sql;
use crate::*;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

fn server_from_row(row: &Row) -> StoreResult<McpServer> {
    Ok(McpServer {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        name: get(row, 2)?,
        url: get(row, 3)?,
        created_at_ms: get(row, 4)?,
    })
}

fn pin_from_row(row: &Row) -> StoreResult<ToolPin> {
    let status: String = get(row, 4)?;
    Ok(ToolPin {
        server_id: get(row, 0)?,
        tool: get(row, 1)?,
        definition_hash: get(row, 2)?,
        read_only: get(row, 3)?,
        status: PinStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("pin status {status:?}")))?,
        changed_hash: get(row, 5)?,
        accepted_by: get(row, 6)?,
        accepted_at_ms: get(row, 7)?,
        pinned_at_ms: get(row, 8)?,
        resource_argument: get(row, 9)?,
    })
}

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
        .map(|row| {
            let server = McpServer {
                id: get(row, 0)?,
                tenant_id: tenant.clone(),
                name: get(row, 10)?,
                url: get(row, 11)?,
                created_at_ms: get(row, 12)?,
            };
            Ok((server, pin_from_row(row)?))
        })
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
        .map(pin_from_row)
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
        .map(pin_from_row)
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
            .map(server_from_row)
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
        self.writer()?
            .write(move |tx, state| {
                Box::pin(async move {
                    let mut tx = super::tx::PgTx { tx, state };
                    crate::mcp::create_server(&mut tx, tenant, new).await
                })
            })
            .await
    }

    async fn list_mcp_servers(&self, tenant: &TenantId) -> StoreResult<Vec<McpServer>> {
        self.query_map(sql::LIST_SERVERS, &[&tenant.as_str()], server_from_row)
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
        self.writer()?
            .write(move |tx, state| {
                Box::pin(async move {
                    let mut tx = super::tx::PgTx { tx, state };
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
            .write(move |tx, state| {
                Box::pin(async move {
                    let mut tx = super::tx::PgTx { tx, state };
                    let tenant_id = tenant.as_str();
                    crate::mcp::observe_tools(&mut tx, tenant_id, &server, &tools, &agent, now_ms())
                        .await
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
        self.writer()?
            .write(move |tx, state| {
                Box::pin(async move {
                    let mut tx = super::tx::PgTx { tx, state };
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
            .write(move |tx, state| {
                Box::pin(async move {
                    let mut tx = super::tx::PgTx { tx, state };
                    let (tenant_id, argument) = (tenant.as_str(), resource_argument.as_deref());
                    crate::mcp::set_resource_argument(&mut tx, tenant_id, &id, &tool, argument)
                        .await
                })
            })
            .await
    }
}
