//! The reads of a chain audit (`crate::chain`) on PostgreSQL, and the seal query the writer
//! runs under the batch lock before appending to a chain.

use super::evidence::checkpoints_from;
use super::prepared;
use super::rows::{RECEIPT_SQL, get};
use crate::chain::{ChainReads, ChainSeal};
use crate::*;
use aegis_core::receipt::{
    ChainCut, ChainHead, Checkpoint, CheckpointBody, RECEIPT_SCHEMA_VERSION, Receipt,
};
use deadpool_postgres::GenericClient;

/// The chain's last receipt and last checkpoint with its key's stored public key, in one
/// round trip.
pub(super) async fn seal<C: GenericClient>(client: &C, tenant_id: &str) -> StoreResult<ChainSeal> {
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT r.id, r.seq, r.hash, c.seq, c.head_hash, c.key_id, c.signed_at, c.signature, k.public_key
                 FROM (SELECT 1) AS one
                 LEFT JOIN (SELECT id, seq, hash FROM receipts WHERE tenant_id = $1
                            ORDER BY seq DESC LIMIT 1) r ON true
                 LEFT JOIN (SELECT seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
                            WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1) c ON true
                 LEFT JOIN signing_keys k ON k.key_id = c.key_id",
            )
            .await?,
            &[&tenant_id],
        )
        .await?;
    let head = match get::<Option<String>>(&row, 0)? {
        Some(receipt_id) => Some(ChainHead {
            receipt_id,
            seq: get::<i64>(&row, 1)? as u64,
            hash: get(&row, 2)?,
        }),
        None => None,
    };
    let last_checkpoint = match get::<Option<i64>>(&row, 3)? {
        Some(seq) => Some(Checkpoint {
            body: CheckpointBody {
                v: RECEIPT_SCHEMA_VERSION,
                tenant_id: tenant_id.to_owned(),
                seq: seq as u64,
                head_hash: get(&row, 4)?,
                key_id: get(&row, 5)?,
                signed_at: get(&row, 6)?,
            },
            signature: get(&row, 7)?,
        }),
        None => None,
    };
    Ok(ChainSeal {
        head,
        last_checkpoint,
        public_key: get(&row, 8)?,
    })
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
                    "SELECT tenant_id, seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
                     WHERE tenant_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
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
        Ok(checkpoints_from(self.client, self.tenant, seq, 1)
            .await?
            .pop())
    }

    async fn cut(&self) -> StoreResult<Option<ChainCut>> {
        super::archive::cut_of(self.client, self.tenant.as_str()).await
    }
}
