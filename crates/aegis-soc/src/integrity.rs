//! The background integrity check: every interval, each tenant's chain is walked from its
//! last verified `(seq, hash)` anchor through the new receipts with the one chain verifier
//! (`aegis_core::receipt::ChainVerifier::anchored_at`). The first break raises a critical
//! `receipt_chain_broken` alert once, through the event log (the SOC consumer turns the
//! `receipt.chain_broken` event into the alert).
//!
//! Anchors live in memory: after a restart each chain is walked once from seq 1.

use aegis_core::receipt::{ChainBreak, ChainVerifier, KeyRing, decode_public_key};
use aegis_store::{Store, StoreResult, TenantId};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The event the check appends on a break.
pub const CHAIN_BROKEN_EVENT: &str = "receipt.chain_broken";
/// Receipts and checkpoints read per query.
const PAGE: u32 = 1000;
/// Most receipts one tenant's pass walks (the rest waits for the next pass).
const MAX_PER_PASS: u64 = 100_000;

/// Where each tenant's chain has verified up to, and which chains already alerted.
#[derive(Debug, Default)]
pub struct IntegrityCheck {
    anchors: HashMap<TenantId, (u64, String)>,
    alerted: HashSet<TenantId>,
}

impl IntegrityCheck {
    /// One pass over every chain; returns the breaks found for the first time.
    pub async fn pass(&mut self, store: &dyn Store) -> StoreResult<Vec<ChainBreak>> {
        let keys: KeyRing = store
            .signing_keys()
            .await?
            .into_iter()
            .filter_map(|k| decode_public_key(&k.public_key).map(|key| (k.key_id, key)))
            .collect();
        let mut found = Vec::new();
        for tenant in store.receipt_tenants().await? {
            if self.alerted.contains(&tenant) {
                continue;
            }
            if let Err(brk) = self.walk(store, &tenant, &keys).await? {
                store
                    .record_event(
                        &tenant,
                        CHAIN_BROKEN_EVENT,
                        None,
                        json!({"receipt_id": brk.receipt_id, "seq": brk.seq,
                               "reason": brk.kind.to_string()}),
                    )
                    .await?;
                tracing::error!(tenant = %tenant, error = %brk, "receipt chain broken");
                self.alerted.insert(tenant);
                found.push(brk);
            }
        }
        Ok(found)
    }

    async fn walk(
        &mut self,
        store: &dyn Store,
        tenant: &TenantId,
        keys: &KeyRing,
    ) -> StoreResult<Result<(), ChainBreak>> {
        let anchor = self.anchors.get(tenant).cloned();
        let start = anchor.as_ref().map_or(0, |(seq, _)| *seq);
        let receipts_end = start + MAX_PER_PASS;
        let mut checkpoints = Vec::new();
        let mut from = start + 1;
        loop {
            let page = store.checkpoints_from(tenant, from, PAGE).await?;
            let full = page.len() == PAGE as usize;
            let Some(last) = page.last() else { break };
            from = last.body.seq + 1;
            let past_end = last.body.seq >= receipts_end;
            checkpoints.extend(page);
            if !full || past_end {
                break;
            }
        }
        // Walk only up to the last checkpoint: receipts commit with theirs, so anything past
        // it was committed after the checkpoints were read and waits for the next pass.
        let Some(end) = checkpoints.last().map(|c| c.body.seq) else {
            return Ok(Ok(()));
        };
        let mut verifier = match ChainVerifier::new(tenant.as_str(), &checkpoints, keys) {
            Ok(v) => v,
            Err(brk) => return Ok(Err(brk)),
        };
        if let Some((seq, hash)) = anchor {
            verifier = verifier.anchored_at(seq, hash);
        }
        let mut after = start;
        let mut last = None;
        while after < end {
            let page = store
                .receipts(tenant, after, PAGE.min((end - after) as u32))
                .await?;
            let Some(tail) = page.last() else { break };
            after = tail.body.seq;
            for receipt in &page {
                if let Err(brk) = verifier.push(receipt) {
                    return Ok(Err(brk));
                }
            }
            last = page.last().map(|r| (r.body.seq, r.hash.clone()));
        }
        if let Err(brk) = verifier.finish() {
            return Ok(Err(brk));
        }
        if let Some(last) = last {
            self.anchors.insert(tenant.clone(), last);
        }
        Ok(Ok(()))
    }
}

/// Runs the check every `interval` until `stop` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut check = IntegrityCheck::default();
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
