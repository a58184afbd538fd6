//! Receipt-chain integrity, checked by the gateway itself; a break raises a critical
//! `receipt_chain_broken` alert through the event log (the SOC consumer turns the
//! `receipt.chain_broken` event into the alert), once per chain and process.
//!
//! - At start, before serving ([`audit_at_start`]): each chain's head must be the one its
//!   last valid checkpoint names (receipts and their checkpoint commit together, so anything
//!   else was written behind the gateway's back), and each chain of the anchor file
//!   ([`crate::anchor`]) must still hold the anchored receipt with its hash, covered by a
//!   valid checkpoint. Both are a few reads per chain, not a walk from seq 1. A chain that
//!   fails is closed (`Store::close_chain`): this process appends nothing to it, so nothing
//!   is ever signed over it.
//! - In the background ([`run`], on the leader): every interval each chain is walked with
//!   `Store::audit_chain` from the last point this process verified through the new
//!   receipts, in one consistent snapshot. After a restart each chain is walked once from
//!   seq 1, which finds damage behind signed heads (a receipt edited without recomputing
//!   the hashes after it). Such damage cannot be laundered by new checkpoints, so it raises
//!   the alert without closing the chain.

use crate::anchor::Anchors;
use aegis_core::receipt::{ChainBreak, ChainPoint};
use aegis_store::chain::{ChainWalk, WalkStart, keyring};
use aegis_store::{Store, StoreResult, TenantId};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The event a break appends.
pub const CHAIN_BROKEN_EVENT: &str = "receipt.chain_broken";
/// Most receipts one tenant's background pass walks (the rest waits for the next pass).
const MAX_PER_PASS: u64 = 100_000;

/// Audits every chain in the database or in `anchors` before the gateway serves; closes
/// and reports each broken one. Returns the tenants reported.
pub async fn audit_at_start(store: &dyn Store, anchors: &Anchors) -> StoreResult<Vec<TenantId>> {
    let keys = keyring(store).await?;
    let mut tenants: BTreeSet<TenantId> = store.receipt_tenants().await?.into_iter().collect();
    tenants.extend(anchors.tenants().map(TenantId::new));
    let mut reported = Vec::new();
    for tenant in tenants {
        let anchored = anchors
            .get(tenant.as_str())
            .map(|a| ChainWalk::anchor(a.head()));
        for walk in anchored.into_iter().chain([ChainWalk::head()]) {
            if let Err(brk) = store.audit_chain(&tenant, walk, &keys).await?.outcome {
                store.close_chain(&tenant).await?;
                report(store, &tenant, &brk, "start").await?;
                reported.push(tenant);
                break;
            }
        }
    }
    Ok(reported)
}

async fn report(
    store: &dyn Store,
    tenant: &TenantId,
    brk: &ChainBreak,
    check: &str,
) -> StoreResult<()> {
    tracing::error!(tenant = %tenant, check, error = %brk, "receipt chain broken");
    store
        .record_event(
            tenant,
            CHAIN_BROKEN_EVENT,
            None,
            json!({"receipt_id": brk.receipt_id, "seq": brk.seq,
                   "reason": brk.kind.to_string(), "check": check}),
        )
        .await?;
    Ok(())
}

/// Where the background check has verified each chain up to, and which chains it reported.
#[derive(Debug, Default)]
pub struct IntegrityCheck {
    verified: HashMap<TenantId, ChainPoint>,
    reported: HashSet<TenantId>,
}

impl IntegrityCheck {
    /// A check that does not report again the chains already reported (at start).
    pub fn after(reported: impl IntoIterator<Item = TenantId>) -> Self {
        IntegrityCheck {
            verified: HashMap::new(),
            reported: reported.into_iter().collect(),
        }
    }

    /// One pass over every chain; returns the breaks found for the first time.
    pub async fn pass(&mut self, store: &dyn Store) -> StoreResult<Vec<ChainBreak>> {
        let keys = keyring(store).await?;
        let mut found = Vec::new();
        for tenant in store.receipt_tenants().await? {
            if self.reported.contains(&tenant) {
                continue;
            }
            let from = match self.verified.get(&tenant) {
                Some(point) => WalkStart::Trusted(point.clone()),
                None => WalkStart::Genesis,
            };
            let walk = ChainWalk {
                from,
                through: None,
                max: MAX_PER_PASS,
            };
            let audit = store.audit_chain(&tenant, walk, &keys).await?;
            match audit.outcome {
                Ok(()) => {
                    if let Some(point) = audit.verified_through {
                        self.verified.insert(tenant, point);
                    }
                }
                Err(brk) => {
                    report(store, &tenant, &brk, "background").await?;
                    self.reported.insert(tenant);
                    found.push(brk);
                }
            }
        }
        Ok(found)
    }
}

/// Runs the background check every `interval` until `stop` turns true; `reported` are the
/// chains [`audit_at_start`] already reported.
pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    reported: Vec<TenantId>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut check = IntegrityCheck::after(reported);
    loop {
        if let Err(error) = check.pass(store.as_ref()).await {
            tracing::warn!(%error, "integrity check pass failed; retrying next interval");
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
