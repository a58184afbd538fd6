//! The evidence reads ([`EvidenceReads`]) once for both stores, through a [`Backend`]: each
//! answers a whole batch with one query, the batch bound as one JSON array parameter that
//! the backend spells as a set of rows ([`Backend::json_elements`]).

use crate::approvals::{APPROVAL_COLUMNS, ApprovalRecord, StoredApproval};
use crate::archive::CUT_OF;
use crate::backend::Backend;
use crate::mcp::sql::DEFINITIONS_OF_SERVERS;
use crate::schema::{CHECKPOINT_COLUMNS, DECISION_COLUMNS, RESPONSE_ACTION_COLUMNS, qualified};
use crate::tx::{ReadRows, SqlValue};
use crate::{
    DecisionRecord, EvidenceLink, EvidenceReads, McpServer, Page, ResponseActionRecord, StoreError,
    StoreResult, TenantId, ToolPin, now_ms,
};
use aegis_core::receipt::{ChainCut, Checkpoint, Receipt};
use async_trait::async_trait;
use std::sync::LazyLock;

#[async_trait]
impl<B: Backend> EvidenceReads for B {
    async fn incident_decisions(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        since_ms: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<DecisionRecord>> {
        static OF_INCIDENT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {} FROM incident_evidence e JOIN decisions d ON d.event_seq = e.event_seq
                 WHERE e.incident_id = $1 AND d.tenant_id = $2 AND e.event_seq < $3
                   AND (CAST($4 AS BIGINT) IS NULL OR d.created_at >= $4)
                 ORDER BY e.event_seq DESC LIMIT $5",
                qualified(DECISION_COLUMNS, "d")
            )
        });
        let (tenant, incident_id) = (tenant.clone(), incident_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let incident = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::text(&incident_id),
                ];
                rows.query_opt(
                    "SELECT 1 FROM incidents WHERE tenant_id = $1 AND id = $2",
                    &incident,
                    |_| Ok(()),
                )
                .await?
                .ok_or(StoreError::NotFound("incident"))?;
                let params = [
                    SqlValue::text(&incident_id),
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(page.before.unwrap_or(i64::MAX)),
                    SqlValue::Int(since_ms),
                    SqlValue::int(i64::from(page.limit)),
                ];
                rows.query_rows(&OF_INCIDENT, &params, crate::rows::decision)
                    .await
            })
        })
        .await
    }

    async fn evidence_links(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<EvidenceLink>> {
        let sql = format!(
            "SELECT e.incident_id, d.id FROM decisions d
             JOIN incident_evidence e ON e.event_seq = d.event_seq
             JOIN incidents i ON i.id = e.incident_id
             WHERE d.tenant_id = $1 AND d.id IN (SELECT elements.value FROM {})
               AND i.tenant_id = $1
             ORDER BY e.event_seq",
            B::json_elements("$2")
        );
        self.batch_rows(sql, tenant, json_batch(decision_ids)?, |row| {
            Ok(EvidenceLink {
                incident_id: row.required_text(0)?,
                decision_id: row.required_text(1)?,
            })
        })
        .await
    }

    async fn response_actions(
        &self,
        tenant: &TenantId,
        incident_ids: &[String],
    ) -> StoreResult<Vec<ResponseActionRecord>> {
        let sql = format!(
            "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions
             WHERE tenant_id = $1 AND incident_id IN (SELECT elements.value FROM {})
             ORDER BY event_seq",
            B::json_elements("$2")
        );
        let batch = json_batch(incident_ids)?;
        self.batch_rows(sql, tenant, batch, crate::rows::response_action)
            .await
    }

    async fn receipts_by_id(&self, tenant: &TenantId, ids: &[String]) -> StoreResult<Vec<Receipt>> {
        let filter = format!(
            "id IN (SELECT elements.value FROM {})",
            B::json_elements("$2")
        );
        let sql = B::receipt_queries().matching(&filter, "");
        self.batch_rows(sql, tenant, json_batch(ids)?, crate::rows::receipt)
            .await
    }

    async fn receipts_at(&self, tenant: &TenantId, seqs: &[u64]) -> StoreResult<Vec<Receipt>> {
        let filter = format!(
            "seq IN (SELECT CAST(elements.value AS BIGINT) FROM {})",
            B::json_elements("$2")
        );
        let sql = B::receipt_queries().matching(&filter, "");
        self.batch_rows(sql, tenant, json_batch(seqs)?, crate::rows::receipt)
            .await
    }

    async fn approvals_of_decisions(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<ApprovalRecord>> {
        let ids = format!("(SELECT elements.value FROM {})", B::json_elements("$2"));
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE tenant_id = $1 AND (decision_id IN {ids} OR consumed_by_decision_id IN {ids})
             ORDER BY requested_seq"
        );
        let now = now_ms();
        let batch = json_batch(decision_ids)?;
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [SqlValue::text(tenant.as_str()), SqlValue::text(&batch)];
                rows.query_rows(&sql, &params, |row| {
                    StoredApproval::read(row)?.into_record(now)
                })
                .await
            })
        })
        .await
    }

    async fn mcp_definitions(
        &self,
        tenant: &TenantId,
        server_names: &[String],
    ) -> StoreResult<Vec<(McpServer, ToolPin)>> {
        let names = format!("IN (SELECT elements.value FROM {})", B::json_elements("$2"));
        let sql = DEFINITIONS_OF_SERVERS.replace("{names}", &names);
        let batch = json_batch(server_names)?;
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [SqlValue::text(tenant.as_str()), SqlValue::text(&batch)];
                rows.query_rows(&sql, &params, |row| crate::rows::defined_tool(row, &tenant))
                    .await
            })
        })
        .await
    }

    async fn covering_checkpoints(
        &self,
        tenant: &TenantId,
        seqs: &[u64],
    ) -> StoreResult<Vec<Checkpoint>> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
             WHERE tenant_id = $1 AND seq IN (
               SELECT (SELECT MIN(c.seq) FROM receipt_checkpoints c
                       WHERE c.tenant_id = $1 AND c.seq >= CAST(elements.value AS BIGINT))
               FROM {})
             ORDER BY seq",
            B::json_elements("$2")
        );
        self.batch_rows(sql, tenant, json_batch(seqs)?, crate::rows::checkpoint)
            .await
    }

    async fn chain_cut(&self, tenant: &TenantId) -> StoreResult<Option<ChainCut>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| Box::pin(async move { cut_of(rows, tenant.as_str()).await }))
            .await
    }
}

/// The tenant's recorded cut, if its chain was ever archived.
pub(crate) async fn cut_of(
    rows: &mut impl ReadRows,
    tenant_id: &str,
) -> StoreResult<Option<ChainCut>> {
    rows.query_opt(CUT_OF, &[SqlValue::text(tenant_id)], |row| {
        crate::rows::chain_cut(row, tenant_id)
    })
    .await
}

/// Binds a batch as one JSON array parameter, however many items it has.
fn json_batch<T: serde::Serialize>(items: &[T]) -> StoreResult<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(format!("batch: {e}")))
}
