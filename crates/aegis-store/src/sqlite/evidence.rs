//! Evidence queries: single receipts, receipt pages newest first, checkpoints from a seq,
//! and incident narratives.

use super::numbered_placeholders;
use super::rows::read_rows;
use crate::schema::CHECKPOINT_COLUMNS;
use crate::schema::*;
use crate::*;
use aegis_core::receipt::{ChainCut, Checkpoint, Receipt};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::LazyLock;

/// The receipts `sql` reads (a [`ReceiptQueries`] text), in its order.
pub(super) fn read_receipts(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Receipt>> {
    read_rows(conn, sql, params, crate::rows::receipt)
}

/// The receipt reads in SQLite's placeholders. SQLite looks a decision up by its primary key
/// for each receipt chosen, so a plain join does.
pub(super) static RECEIPT_SQL: LazyLock<ReceiptQueries> = LazyLock::new(|| {
    ReceiptQueries::new(
        "LEFT JOIN decisions d ON d.id = r.decision_id AND d.tenant_id = r.tenant_id".to_owned(),
        numbered_placeholders,
    )
});

pub(super) fn checkpoints_from(
    conn: &Connection,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    read_rows(
        conn,
        &format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
             WHERE tenant_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3"
        ),
        params![tenant.as_str(), from_seq as i64, limit],
        crate::rows::checkpoint,
    )
}

/// The tenant's receipts whose `column` is one of the values of the JSON array `batch`, in
/// chain order: one query for the whole batch.
fn receipts_where_in(
    conn: &Connection,
    tenant: &TenantId,
    column: &'static str,
    batch: &str,
) -> StoreResult<Vec<Receipt>> {
    let filter = format!("{column} IN (SELECT value FROM json_each($2))");
    read_receipts(
        conn,
        &RECEIPT_SQL.matching(&filter, ""),
        params![tenant.as_str(), batch],
    )
}

/// Binds a batch for `json_each`: one parameter, however many items.
fn json_batch<T: serde::Serialize>(items: &[T]) -> StoreResult<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(format!("batch: {e}")))
}

#[async_trait::async_trait]
impl EvidenceReads for super::SqliteStore {
    async fn incident_decisions(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        since_ms: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<DecisionRecord>> {
        let (tenant, incident_id) = (tenant.clone(), incident_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached("SELECT 1 FROM incidents WHERE tenant_id = ?1 AND id = ?2")?
                .query_row([tenant.as_str(), &incident_id], |_| Ok(()))
                .optional()?
                .ok_or(StoreError::NotFound("incident"))?;
            read_rows(
                conn,
                &format!(
                    "SELECT {} FROM incident_evidence e JOIN decisions d ON d.event_seq = e.event_seq
                     WHERE e.incident_id = ?1 AND d.tenant_id = ?2 AND e.event_seq < ?3
                       AND (?4 IS NULL OR d.created_at >= ?4)
                     ORDER BY e.event_seq DESC LIMIT ?5",
                    qualified(DECISION_COLUMNS, "d")
                ),
                params![
                    incident_id,
                    tenant.as_str(),
                    page.before.unwrap_or(i64::MAX),
                    since_ms,
                    page.limit
                ],
                crate::rows::decision,
            )
        })
        .await
    }

    async fn evidence_links(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<EvidenceLink>> {
        let (tenant, ids) = (tenant.clone(), json_batch(decision_ids)?);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT e.incident_id, d.id FROM decisions d
                     JOIN incident_evidence e ON e.event_seq = d.event_seq
                     JOIN incidents i ON i.id = e.incident_id
                     WHERE d.tenant_id = ?1 AND d.id IN (SELECT value FROM json_each(?2))
                       AND i.tenant_id = ?1
                     ORDER BY e.event_seq",
                )?
                .query_map(params![tenant.as_str(), ids], |row| {
                    Ok(EvidenceLink {
                        incident_id: row.get(0)?,
                        decision_id: row.get(1)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn response_actions(
        &self,
        tenant: &TenantId,
        incident_ids: &[String],
    ) -> StoreResult<Vec<ResponseActionRecord>> {
        let (tenant, ids) = (tenant.clone(), json_batch(incident_ids)?);
        self.read(move |conn| {
            read_rows(
                conn,
                &format!(
                    "SELECT {} FROM response_actions
                     WHERE tenant_id = ?1 AND incident_id IN (SELECT value FROM json_each(?2))
                     ORDER BY event_seq",
                    RESPONSE_ACTION_COLUMNS
                ),
                params![tenant.as_str(), ids],
                crate::rows::response_action,
            )
        })
        .await
    }

    async fn receipts_by_id(&self, tenant: &TenantId, ids: &[String]) -> StoreResult<Vec<Receipt>> {
        let (tenant, ids) = (tenant.clone(), json_batch(ids)?);
        self.read(move |conn| receipts_where_in(conn, &tenant, "id", &ids))
            .await
    }

    async fn approvals_of_decisions(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<crate::approvals::ApprovalRecord>> {
        let (tenant, ids) = (tenant.clone(), json_batch(decision_ids)?);
        self.read(move |conn| super::approvals::of_decisions(conn, tenant.as_str(), &ids, now_ms()))
            .await
    }

    async fn mcp_definitions(
        &self,
        tenant: &TenantId,
        server_names: &[String],
    ) -> StoreResult<Vec<(McpServer, ToolPin)>> {
        let (tenant, names) = (tenant.clone(), json_batch(server_names)?);
        self.read(move |conn| super::mcp::definitions_of_servers(conn, &tenant, &names))
            .await
    }

    async fn receipts_at(&self, tenant: &TenantId, seqs: &[u64]) -> StoreResult<Vec<Receipt>> {
        let (tenant, seqs) = (tenant.clone(), json_batch(seqs)?);
        self.read(move |conn| receipts_where_in(conn, &tenant, "seq", &seqs))
            .await
    }

    async fn chain_cut(&self, tenant: &TenantId) -> StoreResult<Option<ChainCut>> {
        let tenant = tenant.clone();
        self.read(move |conn| super::archive::cut_of(conn, tenant.as_str()))
            .await
    }

    async fn covering_checkpoints(
        &self,
        tenant: &TenantId,
        seqs: &[u64],
    ) -> StoreResult<Vec<Checkpoint>> {
        let (tenant, seqs) = (tenant.clone(), json_batch(seqs)?);
        self.read(move |conn| {
            read_rows(
                conn,
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                WHERE tenant_id = ?1 AND seq IN (
                  SELECT (SELECT MIN(c.seq) FROM receipt_checkpoints c
                          WHERE c.tenant_id = ?1 AND c.seq >= s.value)
                  FROM json_each(?2) s)
                ORDER BY seq"
                ),
                params![tenant.as_str(), seqs],
                crate::rows::checkpoint,
            )
        })
        .await
    }
}
