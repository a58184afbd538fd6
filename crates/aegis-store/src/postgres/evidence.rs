//! Evidence queries: single receipts, receipt pages newest first, checkpoints from a seq,
//! and incident narratives.

use super::prepared;
use super::rows::{RECEIPT_SQL, RESPONSE_ACTION_COLUMNS, get};
use crate::schema::CHECKPOINT_COLUMNS;
use crate::*;
use aegis_core::receipt::{ChainCut, Checkpoint, Receipt};
use deadpool_postgres::GenericClient;

pub(super) async fn checkpoints_from<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                 WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
                ),
            )
            .await?,
            &[&tenant.as_str(), &(from_seq as i64), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::checkpoint(row))
        .collect()
}

/// Seqs as the `BIGINT[]` one parameter binds, however many there are.
fn seq_array(seqs: &[u64]) -> Vec<i64> {
    seqs.iter().map(|&seq| seq as i64).collect()
}

#[async_trait::async_trait]
impl EvidenceReads for super::PgStore {
    async fn incident_decisions(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        since_ms: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<DecisionRecord>> {
        self.query_opt(
            "SELECT 1 FROM incidents WHERE tenant_id = $1 AND id = $2",
            &[&tenant.as_str(), &incident_id],
        )
        .await?
        .ok_or(StoreError::NotFound("incident"))?;
        self.query(
            &format!(
                "SELECT {} FROM incident_evidence e JOIN decisions d ON d.event_seq = e.event_seq
                 WHERE e.incident_id = $1 AND d.tenant_id = $2 AND e.event_seq < $3
                   AND ($4::BIGINT IS NULL OR d.created_at >= $4)
                 ORDER BY e.event_seq DESC LIMIT $5",
                crate::schema::qualified(crate::schema::DECISION_COLUMNS, "d")
            ),
            &[
                &incident_id,
                &tenant.as_str(),
                &page.before.unwrap_or(i64::MAX),
                &since_ms,
                &i64::from(page.limit),
            ],
        )
        .await?
        .iter()
        .map(|row| crate::rows::decision(row))
        .collect()
    }

    async fn evidence_links(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<EvidenceLink>> {
        self.query(
            "SELECT e.incident_id, d.id FROM decisions d
             JOIN incident_evidence e ON e.event_seq = d.event_seq
             JOIN incidents i ON i.id = e.incident_id
             WHERE d.tenant_id = $1 AND d.id = ANY($2) AND i.tenant_id = $1
             ORDER BY e.event_seq",
            &[&tenant.as_str(), &decision_ids],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(EvidenceLink {
                incident_id: get(row, 0)?,
                decision_id: get(row, 1)?,
            })
        })
        .collect()
    }

    async fn response_actions(
        &self,
        tenant: &TenantId,
        incident_ids: &[String],
    ) -> StoreResult<Vec<ResponseActionRecord>> {
        self.query(
            &format!(
                "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions
                 WHERE tenant_id = $1 AND incident_id = ANY($2) ORDER BY event_seq"
            ),
            &[&tenant.as_str(), &incident_ids],
        )
        .await?
        .iter()
        .map(|row| crate::rows::response_action(row))
        .collect()
    }

    async fn receipts_by_id(&self, tenant: &TenantId, ids: &[String]) -> StoreResult<Vec<Receipt>> {
        self.query(
            &RECEIPT_SQL.matching("id = ANY($2)", ""),
            &[&tenant.as_str(), &ids],
        )
        .await?
        .iter()
        .map(|row| crate::rows::receipt(row))
        .collect()
    }

    async fn approvals_of_decisions(
        &self,
        tenant: &TenantId,
        decision_ids: &[String],
    ) -> StoreResult<Vec<crate::approvals::ApprovalRecord>> {
        let client = self.pool.get().await?;
        super::approvals::of_decisions(&client, tenant.as_str(), decision_ids, now_ms()).await
    }

    async fn mcp_definitions(
        &self,
        tenant: &TenantId,
        server_names: &[String],
    ) -> StoreResult<Vec<(McpServer, ToolPin)>> {
        let client = self.pool.get().await?;
        super::mcp::definitions_of_servers(&client, tenant, server_names).await
    }

    async fn receipts_at(&self, tenant: &TenantId, seqs: &[u64]) -> StoreResult<Vec<Receipt>> {
        self.query(
            &RECEIPT_SQL.matching("seq = ANY($2)", ""),
            &[&tenant.as_str(), &seq_array(seqs)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::receipt(row))
        .collect()
    }

    async fn chain_cut(&self, tenant: &TenantId) -> StoreResult<Option<ChainCut>> {
        let client = self.pool.get().await?;
        super::archive::cut_of(&client, tenant.as_str()).await
    }

    async fn covering_checkpoints(
        &self,
        tenant: &TenantId,
        seqs: &[u64],
    ) -> StoreResult<Vec<Checkpoint>> {
        self.query(
            &format!("SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
             WHERE tenant_id = $1 AND seq IN (
               SELECT (SELECT MIN(c.seq) FROM receipt_checkpoints c WHERE c.tenant_id = $1 AND c.seq >= s)
               FROM unnest($2::BIGINT[]) AS s)
             ORDER BY seq"),
            &[&tenant.as_str(), &seq_array(seqs)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::checkpoint(row))
        .collect()
    }
}
