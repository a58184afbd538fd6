//! The one MCP read PostgreSQL spells its own way; the registry itself is [`crate::mcp`].

use super::prepared;
use crate::mcp::sql;
use crate::*;
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
