//! The reads of a chain audit (`crate::chain`) on SQLite, and the seal query the writer runs
//! before appending to a head it did not write itself.

use super::rows::{RECEIPT_SQL, read_receipts};
use super::rows::{read_opt, read_rows};
use crate::chain::{ChainReads, ChainSeal};
use crate::schema::{CHECKPOINT_COLUMNS, SEAL_SQL};
use crate::*;
use aegis_core::receipt::{ChainCut, Checkpoint, Receipt};
use rusqlite::{Connection, params};
use std::sync::LazyLock;

/// The chain's last receipt and last checkpoint with its key's stored public key, in one
/// statement (so one snapshot).
pub(super) fn seal(conn: &Connection, tenant_id: &str) -> StoreResult<ChainSeal> {
    read_opt(
        conn,
        &super::numbered_placeholders(&SEAL_SQL),
        [tenant_id],
        crate::rows::chain_seal,
    )?
    .ok_or_else(|| StoreError::Unavailable("the seal query returned no row".into()))
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
            &format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                 WHERE tenant_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq"
            ),
            params![self.tenant.as_str(), from as i64, through as i64],
            crate::rows::checkpoint,
        )
    }

    async fn covering_checkpoint(&self, seq: u64) -> StoreResult<Option<Checkpoint>> {
        static COVERING: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                 WHERE tenant_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT 1"
            )
        });
        read_opt(
            self.conn,
            &COVERING,
            params![self.tenant.as_str(), seq as i64],
            crate::rows::checkpoint,
        )
    }

    async fn cut(&self) -> StoreResult<Option<ChainCut>> {
        super::archive::cut_of(self.conn, self.tenant.as_str())
    }
}
