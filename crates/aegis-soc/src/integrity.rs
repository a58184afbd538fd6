//! Receipt-chain integrity, checked by the gateway itself; a break raises a critical
//! `receipt_chain_broken` alert through the event log (the SOC consumer turns the
//! `receipt.chain_broken` event into the alert), once per chain and process.
//!
//! - At start, before serving ([`audit_at_start`]): each chain's head must be the one its
//!   last valid checkpoint names (receipts and their checkpoint commit together, so anything
//!   else was written behind the gateway's back), and each chain of the anchor file
//!   ([`crate::anchor`]) must still hold the anchored receipt and the verified receipt with
//!   their hashes, covered by a valid checkpoint. These are a few reads per chain, not a walk
//!   from seq 1. A chain that fails is closed (`ReceiptStore::close_chain`): this process appends
//!   nothing to it, so nothing is ever signed over it.
//! - In the background ([`run`], on the leader): every interval each chain is walked with
//!   `ReceiptStore::audit_chain`, in one consistent snapshot, from the last point verified through
//!   the new receipts (the extension). That point is kept in the anchor file, so a restart
//!   resumes from it and costs the same whatever the length of the history.
//! - Behind the verified points, history is walked again from seq 1 at a bounded rate (the
//!   sweep: [`SWEEP_PER_PASS`] receipts per pass over all chains together, each pass going on
//!   where the last one ran out, and each chain restarting at seq 1 after each start and each
//!   completed round). It finds damage behind signed heads that the start-up reads cannot
//!   see (a receipt edited without recomputing the hashes after it), eventually rather than
//!   in the first pass after a restart as when every start walked everything. Such damage
//!   cannot be laundered by new checkpoints, so it raises the alert without closing the
//!   chain.

use crate::anchor::{AnchorFile, Anchors};
use aegis_core::receipt::KeyRing;
use aegis_core::receipt::{ChainBreak, ChainPoint};
use aegis_store::chain::{ChainWalk, WalkStart, keyring};
use aegis_store::{ReceiptStore, StoreResult, TenantId};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The event a break appends.
pub const CHAIN_BROKEN_EVENT: &str = "receipt.chain_broken";
/// Most new receipts one tenant's background pass walks (the rest waits for the next pass).
const MAX_PER_PASS: u64 = 100_000;
/// Most verified receipts the sweep walks again per pass, all chains together: at the default
/// interval of 10 s, 100 M receipts are swept in about 28 hours. A budget per chain instead
/// would grow with the number of tenants, and so would the cost of each pass: with many
/// tenants nearly every receipt has its own checkpoint, whose signature the sweep verifies.
pub const SWEEP_PER_PASS: u64 = 10_000;

/// Audits every chain in the database or in `anchors` before the gateway serves; closes
/// and reports each broken one. Returns the tenants reported.
pub async fn audit_at_start(
    store: &dyn ReceiptStore,
    anchors: &Anchors,
) -> StoreResult<Vec<TenantId>> {
    let keys = keyring(store).await?;
    let mut tenants: BTreeSet<TenantId> = store.receipt_tenants().await?.into_iter().collect();
    tenants.extend(anchors.tenants().map(TenantId::new));
    let mut reported = Vec::new();
    for tenant in tenants {
        let anchored = anchors
            .get(tenant.as_str())
            .map(|a| ChainWalk::anchor(a.head()));
        let verified = anchors
            .verified(tenant.as_str())
            .map(|point| ChainWalk::anchor(point.clone()));
        let walks = anchored
            .into_iter()
            .chain(verified)
            .chain([ChainWalk::head()]);
        for walk in walks {
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
    store: &dyn ReceiptStore,
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

/// Where the background check has verified each chain up to, where its sweep stands, and
/// which chains it reported.
#[derive(Debug, Default)]
pub struct IntegrityCheck {
    verified: HashMap<TenantId, ChainPoint>,
    swept: HashMap<TenantId, ChainPoint>,
    /// Receipts the sweep walks per pass, over all chains.
    sweep_per_pass: u64,
    /// The chain the next pass sweeps first: the one this pass ran out of budget on.
    sweep_next: Option<TenantId>,
    reported: HashSet<TenantId>,
}

impl IntegrityCheck {
    /// A check that goes on from the `verified` points (the anchor file's), does not report
    /// again the chains already reported (at start), and sweeps `sweep_per_pass` receipts
    /// of verified history per pass ([`SWEEP_PER_PASS`] when serving).
    pub fn resume(
        verified: impl IntoIterator<Item = (TenantId, ChainPoint)>,
        reported: impl IntoIterator<Item = TenantId>,
        sweep_per_pass: u64,
    ) -> Self {
        IntegrityCheck {
            verified: verified.into_iter().collect(),
            swept: HashMap::new(),
            sweep_per_pass,
            sweep_next: None,
            reported: reported.into_iter().collect(),
        }
    }

    /// How far each chain has been verified from seq 1.
    pub fn verified_points(&self) -> Vec<(TenantId, ChainPoint)> {
        self.verified
            .iter()
            .map(|(tenant, point)| (tenant.clone(), point.clone()))
            .collect()
    }

    /// One pass over every chain: each chain's new receipts, then the sweep; returns the
    /// breaks found for the first time.
    pub async fn pass(&mut self, store: &dyn ReceiptStore) -> StoreResult<Vec<ChainBreak>> {
        let keys = keyring(store).await?;
        let tenants = store.receipt_tenants().await?;
        let mut found = Vec::new();
        for tenant in &tenants {
            if self.reported.contains(tenant) {
                continue;
            }
            let extension = ChainWalk {
                from: start_at(self.verified.get(tenant)),
                through: None,
                max: MAX_PER_PASS,
            };
            if let Walked::Verified {
                through: Some(point),
                ..
            } = self
                .walk(store, &keys, tenant, "extend", extension, &mut found)
                .await?
            {
                self.verified.insert(tenant.clone(), point);
            }
        }
        self.sweep(store, &keys, &tenants, &mut found).await?;
        Ok(found)
    }

    /// Walks verified history again, chain after chain from the one the last pass ran out
    /// on, until this pass's budget is spent.
    async fn sweep(
        &mut self,
        store: &dyn ReceiptStore,
        keys: &KeyRing,
        tenants: &[TenantId],
        found: &mut Vec<ChainBreak>,
    ) -> StoreResult<()> {
        let first = self
            .sweep_next
            .take()
            .map_or(0, |next| tenants.partition_point(|tenant| *tenant < next));
        let (behind, ahead) = tenants.split_at(first);
        let mut budget = self.sweep_per_pass;
        for tenant in ahead.iter().chain(behind) {
            if budget == 0 {
                self.sweep_next = Some(tenant.clone());
                break;
            }
            if self.reported.contains(tenant) {
                continue;
            }
            let Some(through) = self.verified.get(tenant).map(|point| point.seq) else {
                continue;
            };
            let sweep = ChainWalk {
                from: start_at(self.swept.get(tenant)),
                through: Some(through),
                max: budget,
            };
            let Walked::Verified {
                through: swept,
                checked,
            } = self
                .walk(store, keys, tenant, "sweep", sweep, found)
                .await?
            else {
                continue;
            };
            budget = budget.saturating_sub(checked);
            match swept.filter(|point| point.seq < through) {
                // Short of the verified point, the walk spent the budget: this chain goes on
                // first in the next pass.
                Some(point) => {
                    self.swept.insert(tenant.clone(), point);
                    self.sweep_next = Some(tenant.clone());
                    break;
                }
                // A round ends at the verified point; the next one starts again at seq 1.
                None => {
                    self.swept.remove(tenant);
                }
            }
        }
        Ok(())
    }

    /// Walks `walk`, and reports the chain if it is broken.
    async fn walk(
        &mut self,
        store: &dyn ReceiptStore,
        keys: &KeyRing,
        tenant: &TenantId,
        name: &str,
        walk: ChainWalk,
        found: &mut Vec<ChainBreak>,
    ) -> StoreResult<Walked> {
        let from_seq = match &walk.from {
            WalkStart::Trusted(point) => point.seq + 1,
            _ => 1,
        };
        let audit = store.audit_chain(tenant, walk, keys).await?;
        tracing::debug!(tenant = %tenant, walk = name, from_seq, checked = audit.checked, "integrity walk");
        match audit.outcome {
            Ok(()) => Ok(Walked::Verified {
                through: audit.verified_through,
                checked: audit.checked,
            }),
            Err(brk) => {
                report(store, tenant, &brk, "background").await?;
                self.reported.insert(tenant.clone());
                found.push(brk);
                Ok(Walked::Broken)
            }
        }
    }
}

/// How one walk of a pass ended.
enum Walked {
    /// Sound, through this point (a signed head) if it walked any receipt, after checking
    /// `checked` receipts.
    Verified {
        through: Option<ChainPoint>,
        checked: u64,
    },
    /// Broken, and reported.
    Broken,
}

/// A walk from a point verified earlier, else from seq 1.
fn start_at(point: Option<&ChainPoint>) -> WalkStart {
    point.map_or(WalkStart::Genesis, |point| {
        WalkStart::Trusted(point.clone())
    })
}

/// Runs the background check every `interval` until `stop` turns true, from the verified
/// points of `anchors` and writing them back there; `reported` are the chains
/// [`audit_at_start`] already reported.
pub async fn run(
    store: Arc<dyn ReceiptStore>,
    anchors: Arc<AnchorFile>,
    interval: Duration,
    reported: Vec<TenantId>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let resumed = anchors.anchors().await;
    for (tenant, point) in resumed.verified_points() {
        tracing::info!(tenant = %tenant, seq = point.seq, "integrity check resumes from the verified point of the anchor file");
    }
    let verified = resumed
        .verified_points()
        .map(|(tenant, point)| (tenant, point.clone()));
    let mut check = IntegrityCheck::resume(verified, reported, SWEEP_PER_PASS);
    loop {
        match check.pass(store.as_ref()).await {
            Ok(_) => {
                if let Err(error) = anchors.record_verified(check.verified_points()).await {
                    tracing::error!(%error, path = %anchors.path().display(), "cannot write the verified points to the anchor file; retrying next interval");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "integrity check pass failed; retrying next interval")
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
