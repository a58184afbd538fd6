//! The leadership epoch: a fencing token for the consumers' commits.
//!
//! The advisory lock of [`super::PgStore::lead`] says who *should* run the consumers, but a
//! leader that was paused or cut off learns that it lost the lock only later (its heartbeat),
//! and may meanwhile commit a batch computed before another replica took over — such as a
//! flush of held notifications that the new leader flushes too. So each replica that takes
//! the lock increments `log_head.leader_epoch` and keeps the value; each consumer commit
//! (SOC batch, notification batch) checks, inside the writer's transaction, that the epoch
//! is still its own, and is refused with `Conflict` otherwise. Both the increment and the
//! check run under the `log_head` row lock, which orders every write of the cluster: a
//! commit ordered after a takeover sees the new epoch, and the new leader reads the
//! cursors after every commit ordered before it. A deposed leader commits nothing.

use super::prepared;
use crate::{StoreError, StoreResult};
use deadpool_postgres::Transaction;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The epoch this process holds; 0 while it does not lead. Takeovers number epochs from 1,
/// and the database's epoch is 0 until the first one: before any replica has led, any
/// process may commit a consumer batch (tests seed the SOC tables so); after it, only the
/// holder of the current epoch.
#[derive(Clone, Default)]
pub(super) struct LeaderEpoch(Arc<AtomicI64>);

impl LeaderEpoch {
    /// Takes the next epoch, on the connection that holds the leader lock. Waits for the
    /// `log_head` row lock, within that session's `lock_timeout`.
    pub async fn take(&self, lock_session: &tokio_postgres::Client) -> StoreResult<i64> {
        let epoch: i64 = lock_session
            .query_one(
                "UPDATE log_head SET leader_epoch = leader_epoch + 1 RETURNING leader_epoch",
                &[],
            )
            .await?
            .try_get(0)?;
        self.0.store(epoch, Ordering::Release);
        Ok(epoch)
    }

    /// Gives `epoch` up (the leadership ended), unless a newer one was taken since.
    pub fn release(&self, epoch: i64) {
        let _ = self
            .0
            .compare_exchange(epoch, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Refuses the writer's transaction (`Conflict`) unless this process holds the current
    /// epoch. Call inside a consumer's commit: the writer holds `log_head` already.
    pub async fn check(&self, tx: &Transaction<'_>) -> StoreResult<()> {
        let mine = self.0.load(Ordering::Acquire);
        let current: i64 = tx
            .query_one(
                &prepared(tx, "SELECT leader_epoch FROM log_head").await?,
                &[],
            )
            .await?
            .try_get(0)?;
        if mine != current {
            return Err(StoreError::Conflict(format!(
                "this replica does not lead (its epoch {mine}, the current one {current}): consumer commit refused"
            )));
        }
        Ok(())
    }
}
