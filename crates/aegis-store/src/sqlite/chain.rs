//! The reads of a chain audit (`crate::chain`) on SQLite, and the seal query the writer runs
//! before appending to a head it did not write itself.

use super::evidence::{RECEIPT_SQL, checkpoints_from, read_receipts};
use super::rows::read_rows;
use crate::chain::{ChainReads, ChainSeal};
use crate::*;
use aegis_core::receipt::{
    ChainCut, ChainHead, Checkpoint, CheckpointBody, RECEIPT_SCHEMA_VERSION, Receipt,
};
use rusqlite::{Connection, params};

/// The chain's last receipt and last checkpoint with its key's stored public key, in one
/// statement (so one snapshot).
pub(super) fn seal(conn: &Connection, tenant_id: &str) -> StoreResult<ChainSeal> {
    Ok(conn
        .prepare_cached(
            "SELECT r.id, r.seq, r.hash, c.seq, c.head_hash, c.key_id, c.signed_at, c.signature, k.public_key
             FROM (SELECT 1)
             LEFT JOIN (SELECT id, seq, hash FROM receipts WHERE tenant_id = ?1
                        ORDER BY seq DESC LIMIT 1) r ON 1
             LEFT JOIN (SELECT seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
                        WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1) c ON 1
             LEFT JOIN signing_keys k ON k.key_id = c.key_id",
        )?
        .query_row([tenant_id], |row| {
            let head = match row.get::<_, Option<String>>(0)? {
                Some(receipt_id) => Some(ChainHead {
                    receipt_id,
                    seq: row.get::<_, i64>(1)? as u64,
                    hash: row.get(2)?,
                }),
                None => None,
            };
            let last_checkpoint = match row.get::<_, Option<i64>>(3)? {
                Some(seq) => Some(Checkpoint {
                    body: CheckpointBody {
                        v: RECEIPT_SCHEMA_VERSION,
                        tenant_id: tenant_id.to_owned(),
                        seq: seq as u64,
                        head_hash: row.get(4)?,
                        key_id: row.get(5)?,
                        signed_at: row.get(6)?,
                    },
                    signature: row.get(7)?,
                }),
                None => None,
            };
            Ok(ChainSeal {
                head,
                last_checkpoint,
                public_key: row.get(8)?,
            })
        })?)
}

/// Receipts of the chain with `seq > after`, in order.
pub(super) fn receipts_after(
    conn: &Connection,
    tenant_id: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<Receipt>> {
    read_receipts(
        conn,
        &RECEIPT_SQL.after_seq,
        params![tenant_id, after as i64, limit],
    )
}

/// A chain inside the read transaction that `conn` holds open.
pub(super) struct SqliteChain<'a> {
    pub conn: &'a Connection,
    pub tenant: &'a TenantId,
}

impl ChainReads for SqliteChain<'_> {
    async fn seal(&self) -> StoreResult<ChainSeal> {
        seal(self.conn, self.tenant.as_str())
    }

    async fn receipt_at(&self, seq: u64) -> StoreResult<Option<Receipt>> {
        Ok(read_receipts(
            self.conn,
            &RECEIPT_SQL.at_seq,
            params![self.tenant.as_str(), seq as i64],
        )?
        .pop())
    }

    async fn receipts(&self, after: u64, limit: u32) -> StoreResult<Vec<Receipt>> {
        receipts_after(self.conn, self.tenant.as_str(), after, limit)
    }

    async fn checkpoints(&self, from: u64, through: u64) -> StoreResult<Vec<Checkpoint>> {
        read_rows(
            self.conn,
            "SELECT tenant_id, seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
            WHERE tenant_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
            params![self.tenant.as_str(), from as i64, through as i64],
            crate::rows::checkpoint,
        )
    }

    async fn covering_checkpoint(&self, seq: u64) -> StoreResult<Option<Checkpoint>> {
        Ok(checkpoints_from(self.conn, self.tenant, seq, 1)?.pop())
    }

    async fn cut(&self) -> StoreResult<Option<ChainCut>> {
        super::archive::cut_of(self.conn, self.tenant.as_str())
    }
}
