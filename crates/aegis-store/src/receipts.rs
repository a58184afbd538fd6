//! The receipt role ([`ReceiptStore`]) once for both stores, through a [`Backend`]:
//! decisions, receipt chains and their checkpoints, signing keys. The snapshot an audit
//! reads in and closing a chain to the writer are the driver's.

use crate::backend::Backend;
use crate::chain::{ChainAudit, ChainWalk, seq_param};
use crate::schema::{CHECKPOINT_COLUMNS, DECISION_COLUMNS};
use crate::tx::{ReadRows, SqlValue};
use crate::{
    DecisionFilter, DecisionRecord, Page, ReceiptStore, SigningKeyRecord, StoreError, StoreResult,
    TenantId,
};
use aegis_core::model::Verdict;
use aegis_core::receipt::{Checkpoint, KeyRing, Receipt};
use async_trait::async_trait;
use std::sync::LazyLock;

#[async_trait]
impl<B: Backend> ReceiptStore for B {
    async fn decision(&self, tenant: &TenantId, decision_id: &str) -> StoreResult<DecisionRecord> {
        static BY_ID: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE tenant_id = $1 AND id = $2")
        });
        let (tenant, decision_id) = (tenant.clone(), decision_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let key = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::text(&decision_id),
                ];
                rows.query_opt(&BY_ID, &key, crate::rows::decision)
                    .await?
                    .ok_or(StoreError::NotFound("decision"))
            })
        })
        .await
    }

    async fn list_decisions(
        &self,
        tenant: &TenantId,
        filter: DecisionFilter,
    ) -> StoreResult<Vec<DecisionRecord>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let f = &filter;
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(f.page.before.unwrap_or(i64::MAX)),
                    SqlValue::Text(f.agent_id.as_deref()),
                    SqlValue::Text(f.verdict.map(Verdict::as_str)),
                    SqlValue::Text(f.tool.as_deref()),
                    SqlValue::Text(f.action.as_deref()),
                    SqlValue::Text(f.run_id.as_deref()),
                    SqlValue::Int(f.since_ms),
                    SqlValue::Int(f.until_ms),
                    SqlValue::int(i64::from(f.page.limit)),
                ];
                let listing = B::decision_listings().for_filter(f);
                rows.query_rows(listing, &params, crate::rows::decision)
                    .await
            })
        })
        .await
    }

    async fn receipt_tenants(&self) -> StoreResult<Vec<TenantId>> {
        self.run_read(|rows| {
            Box::pin(async move {
                rows.query_rows(
                    "SELECT DISTINCT tenant_id FROM receipts ORDER BY tenant_id",
                    &[],
                    |row| Ok(TenantId::new(row.required_text(0)?)),
                )
                .await
            })
        })
        .await
    }

    async fn receipts(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Receipt>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(seq_param(after_seq)),
                    SqlValue::int(i64::from(limit)),
                ];
                read_receipts(rows, &B::receipt_queries().after_seq, &params).await
            })
        })
        .await
    }

    async fn checkpoints(&self, tenant: &TenantId) -> StoreResult<Vec<Checkpoint>> {
        static OF_TENANT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                 WHERE tenant_id = $1 ORDER BY seq"
            )
        });
        self.tenant_rows(OF_TENANT.as_str(), tenant, crate::rows::checkpoint)
            .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.run_read(|rows| {
            Box::pin(async move {
                rows.query_rows(
                    "SELECT key_id, public_key, created_at FROM signing_keys ORDER BY created_at",
                    &[],
                    crate::rows::signing_key,
                )
                .await
            })
        })
        .await
    }

    async fn audit_chain(
        &self,
        tenant: &TenantId,
        walk: ChainWalk,
        keys: &KeyRing,
    ) -> StoreResult<ChainAudit> {
        self.audit_in_snapshot(tenant, walk, keys).await
    }

    async fn close_chain(&self, tenant: &TenantId) -> StoreResult<()> {
        self.chain_guard().close(tenant.as_str());
        self.forget_chain_head(tenant).await
    }

    fn signed_heads(&self) -> Vec<Checkpoint> {
        self.chain_guard().signed_heads()
    }

    async fn receipt(&self, tenant: &TenantId, receipt_id: &str) -> StoreResult<Receipt> {
        let (tenant, receipt_id) = (tenant.clone(), receipt_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let key = [SqlValue::text(tenant.as_str()), SqlValue::text(&receipt_id)];
                read_receipts(rows, &B::receipt_queries().with_id, &key)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound("receipt"))
            })
        })
        .await
    }

    async fn receipts_newest(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Receipt>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(page.before.unwrap_or(i64::MAX)),
                    SqlValue::int(i64::from(page.limit)),
                ];
                read_receipts(rows, &B::receipt_queries().newest_before_seq, &params).await
            })
        })
        .await
    }

    async fn checkpoints_from(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move { checkpoints_from(rows, tenant.as_str(), from_seq, limit).await })
        })
        .await
    }
}

/// The receipts one of the backend's [`crate::schema::ReceiptQueries`] reads.
async fn read_receipts(
    rows: &mut impl ReadRows,
    sql: &str,
    params: &[SqlValue<'_>],
) -> StoreResult<Vec<Receipt>> {
    rows.query_rows(sql, params, crate::rows::receipt).await
}

/// Checkpoints of the tenant's chain with `seq >= from_seq`, in order, at most `limit`.
pub(crate) async fn checkpoints_from(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    from_seq: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    static FROM_SEQ: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
             WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
        )
    });
    let params = [
        SqlValue::text(tenant_id),
        SqlValue::int(seq_param(from_seq)),
        SqlValue::int(i64::from(limit)),
    ];
    rows.query_rows(&FROM_SEQ, &params, crate::rows::checkpoint)
        .await
}
