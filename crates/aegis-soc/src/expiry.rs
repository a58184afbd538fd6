//! The approval expiry sweep. An approval expires by time alone (its status is computed
//! from `expires_at` whenever it is read, decided or used), so nothing depends on this sweep
//! for correctness: it only stores the status and puts one `approval.expired` event per
//! approval on the log, for the SOC, the live feed and the agents waiting on it. It runs on
//! the leading replica, in bounded batches, so a backlog never makes one long transaction.

use aegis_store::AdminStore;
use std::sync::Arc;
use std::time::Duration;

/// Approvals expired per transaction.
const BATCH: u32 = 500;

/// Expires due approvals every `interval` until `stop` turns true.
pub async fn run(
    store: Arc<dyn AdminStore>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        loop {
            match store.expire_approvals(aegis_store::now_ms(), BATCH).await {
                Ok(expired) if expired == BATCH as usize => continue,
                Ok(expired) => {
                    if expired > 0 {
                        tracing::info!(expired, "approvals expired");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "approval expiry sweep failed; retrying next interval");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
