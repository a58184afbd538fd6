//! [`McpRegistry`] on PostgreSQL: the shared statements of [`crate::mcp`] run in the
//! writer's batch transaction (writes) and on the read pool.

use super::rows::get;
use super::{PgStore, append_event, prepared};
use crate::mcp::{
    PinStep, accepted_close_reason, accepted_payload, definition_changed_key_prefix,
    definition_changed_payload, first_listed_action, mcp_event, pin_step,
    resource_argument_payload, sql,
};
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

async fn pins<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    server_id: &str,
) -> StoreResult<Vec<ToolPin>> {
    client
        .query(
            &prepared(client, sql::PINS).await?,
            &[&tenant.as_str(), &server_id],
        )
        .await?
        .iter()
        .map(pin_from_row)
        .collect()
}

async fn pin<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    server_id: &str,
    tool: &str,
) -> StoreResult<Option<ToolPin>> {
    client
        .query_opt(
            &prepared(client, sql::PIN).await?,
            &[&tenant.as_str(), &server_id, &tool],
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
                    tx.execute(
                        &prepared(tx, sql::INSERT_SERVER).await?,
                        &[
                            &new.id,
                            &tenant.as_str(),
                            &new.name,
                            &new.url,
                            &new.created_at_ms,
                        ],
                    )
                    .await?;
                    append_event(
                        tx,
                        state,
                        tenant.as_str(),
                        mcp_event::SERVER_REGISTERED,
                        None,
                        Some(&new.id),
                        &serde_json::json!({"server_id": new.id, "name": new.name, "url": new.url}),
                    )
                    .await?;
                    Ok(McpServer {
                        id: new.id,
                        tenant_id: tenant,
                        name: new.name,
                        url: new.url,
                        created_at_ms: new.created_at_ms,
                    })
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
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                        [&tenant.as_str(), &id];
                    if tx
                        .execute(&prepared(tx, sql::DELETE_SERVER).await?, &params)
                        .await?
                        == 0
                    {
                        return Err(StoreError::NotFound("MCP server"));
                    }
                    tx.execute(&prepared(tx, sql::DELETE_PINS).await?, &params)
                        .await?;
                    append_event(
                        tx,
                        state,
                        tenant.as_str(),
                        mcp_event::SERVER_DELETED,
                        None,
                        Some(&id),
                        &serde_json::json!({"server_id": id}),
                    )
                    .await?;
                    Ok(())
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
                    let at = now_ms();
                    let mut registered = Vec::new();
                    for tool in &tools {
                        let existing = pin(tx, &tenant, &server.id, &tool.name).await?;
                        match pin_step(existing.as_ref(), tool) {
                            PinStep::Keep => {}
                            PinStep::Pin => {
                                tx.execute(
                                    &prepared(tx, sql::INSERT_PIN).await?,
                                    &[
                                        &tenant.as_str(),
                                        &server.id,
                                        &tool.name,
                                        &tool.definition_hash,
                                        &tool.read_only,
                                        &at,
                                    ],
                                )
                                .await?;
                                let inserted = tx
                                    .execute(
                                        &prepared(tx, sql::REGISTER_FIRST_LISTED).await?,
                                        &[
                                            &tenant.as_str(),
                                            &server.name,
                                            &tool.name,
                                            &!tool.read_only,
                                            &FIRST_LISTING_RISK.as_str(),
                                            &at,
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
                                        &prepared(tx, sql::MARK_CHANGED).await?,
                                        &[
                                            &tool.definition_hash,
                                            &tool.read_only,
                                            &tenant.as_str(),
                                            &server.id,
                                            &tool.name,
                                        ],
                                    )
                                    .await?;
                                if marked == 1 {
                                    append_event(
                                        tx,
                                        state,
                                        tenant.as_str(),
                                        mcp_event::TOOL_DEFINITION_CHANGED,
                                        Some(&agent),
                                        Some(&server.id),
                                        &definition_changed_payload(
                                            &server,
                                            existing.as_ref(),
                                            tool,
                                        ),
                                    )
                                    .await?;
                                }
                            }
                        }
                    }
                    if !registered.is_empty() {
                        append_event(
                            tx,
                            state,
                            tenant.as_str(),
                            event_kind::TOOL_REGISTERED,
                            None,
                            Some(&server.name),
                            &serde_json::json!({"tool": server.name, "actions": registered}),
                        )
                        .await?;
                    }
                    Ok(McpObservation {
                        pins: pins(tx, &tenant, &server.id).await?,
                        registered_actions: !registered.is_empty(),
                    })
                })
            })
            .await
    }

    async fn mcp_tool_pins(&self, tenant: &TenantId, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        let client = self.pool.get().await?;
        pins(&client, tenant, server_id).await
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
                    let before = pin(tx, &tenant, &id, &tool)
                        .await?
                        .ok_or(StoreError::NotFound("tool pin"))?;
                    let at = now_ms();
                    if tx
                        .execute(
                            &prepared(tx, sql::ACCEPT).await?,
                            &[&by, &at, &tenant.as_str(), &id, &tool],
                        )
                        .await?
                        == 0
                    {
                        return Err(StoreError::Conflict(
                            "the tool's definition has not changed since it was pinned or accepted"
                                .into(),
                        ));
                    }
                    append_event(
                        tx,
                        state,
                        tenant.as_str(),
                        mcp_event::TOOL_DEFINITION_ACCEPTED,
                        None,
                        Some(&id),
                        &accepted_payload(&before, &by),
                    )
                    .await?;
                    let prefix = definition_changed_key_prefix(&id, &tool);
                    let open = tx
                        .query(
                            &prepared(tx, sql::OPEN_DEFINITION_INCIDENTS).await?,
                            &[&tenant.as_str(), &prefix],
                        )
                        .await?;
                    let close = IncidentStep::Close {
                        reason: Some(accepted_close_reason(&by)),
                    };
                    let mut soc_tx = super::tx::PgTx { tx, state };
                    for row in &open {
                        let incident_id: String = get(row, 0)?;
                        let tenant_id = tenant.as_str();
                        crate::soc::step_incident(
                            &mut soc_tx,
                            tenant_id,
                            &incident_id,
                            &close,
                            &by,
                            at,
                        )
                        .await?;
                    }
                    pin(tx, &tenant, &id, &tool)
                        .await?
                        .ok_or(StoreError::NotFound("tool pin"))
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
                    if tx
                        .execute(
                            &prepared(tx, sql::SET_RESOURCE_ARGUMENT).await?,
                            &[&resource_argument, &tenant.as_str(), &id, &tool],
                        )
                        .await?
                        == 0
                    {
                        return Err(StoreError::NotFound("tool pin"));
                    }
                    append_event(
                        tx,
                        state,
                        tenant.as_str(),
                        mcp_event::TOOL_RESOURCE_ARGUMENT_SET,
                        None,
                        Some(&id),
                        &resource_argument_payload(&id, &tool, resource_argument.as_deref()),
                    )
                    .await?;
                    pin(tx, &tenant, &id, &tool)
                        .await?
                        .ok_or(StoreError::NotFound("tool pin"))
                })
            })
            .await
    }
}
