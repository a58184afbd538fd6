//! The reads of a chain audit (`crate::chain`) on PostgreSQL, and the seal query the writer
//! runs under the batch lock before appending to a chain.

use super::prepared;
use super::rows::RECEIPT_SQL;
use super::tx::PgRead;
use crate::chain::{ChainReads, ChainSeal};
use crate::schema::{CHECKPOINT_COLUMNS, SEAL_SQL};
use crate::*;
use aegis_core::receipt::{ChainCut, Checkpoint, Receipt};
use deadpool_postgres::GenericClient;

/// The chain's last receipt and last checkpoint with its key's stored public key, in one
/// round trip.
pub(super) async fn seal<C: GenericClient>(client: &C, tenant_id: &str) -> StoreResult<ChainSeal> {
    let row = client
        .query_one(&prepared(client, &SEAL_SQL).await?, &[&tenant_id])
        .await?;
    crate::rows::chain_seal(&row)
}

/// Receipts of the chain with `seq > after`, in order.
pub(super) async fn receipts_after<C: GenericClient>(
    client: &C,
    tenant_id: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<Receipt>> {
    client
        .query(
            &prepared(client, &RECEIPT_SQL.after_seq).await?,
            &[&tenant_id, &(after as i64), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::receipt(row))
        .collect()
}

/// A chain read through `client`, a transaction holding one snapshot.
pub(super) struct PgChain<'a, C> {
    pub client: &'a C,
    pub tenant: &'a TenantId,
}

impl<C: GenericClient + Sync> ChainReads for PgChain<'_, C> {
    async fn seal(&self) -> StoreResult<ChainSeal> {
        seal(self.client, self.tenant.as_str()).await
    }

    async fn receipt_at(&self, seq: u64) -> StoreResult<Option<Receipt>> {
        self.client
            .query_opt(
                &prepared(self.client, &RECEIPT_SQL.at_seq).await?,
                &[&self.tenant.as_str(), &(seq as i64)],
            )
            .await?
            .as_ref()
            .map(|row| crate::rows::receipt(row))
            .transpose()
    }

    async fn receipts(&self, after: u64, limit: u32) -> StoreResult<Vec<Receipt>> {
        receipts_after(self.client, self.tenant.as_str(), after, limit).await
    }

    async fn checkpoints(&self, from: u64, through: u64) -> StoreResult<Vec<Checkpoint>> {
        self.client
            .query(
                &prepared(
                    self.client,
                    &format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                         WHERE tenant_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
                    ),
                )
                .await?,
                &[&self.tenant.as_str(), &(from as i64), &(through as i64)],
            )
            .await?
            .iter()
            .map(|row| crate::rows::checkpoint(row))
            .collect()
    }

    async fn covering_checkpoint(&self, seq: u64) -> StoreResult<Option<Checkpoint>> {
        let mut rows = PgRead {
            client: self.client,
        };
        Ok(
            crate::receipts::checkpoints_from(&mut rows, self.tenant, seq, 1)
                .await?
                .pop(),
        )
    }

    async fn cut(&self) -> StoreResult<Option<ChainCut>> {
        let mut rows = PgRead {
            client: self.client,
        };
        crate::evidence::cut_of(&mut rows, self.tenant.as_str()).await
    }
}
