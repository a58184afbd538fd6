//! The one MCP read SQLite spells its own way; the registry itself is [`crate::mcp`].

use super::rows::read_rows;
use crate::mcp::sql;
use crate::*;
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
