//! Keeps this replica's in-memory views ([`crate::state`]) and open live feeds
//! ([`crate::live_feed`]) in step with changes committed by any replica sharing the database.
//!
//! The event log is the change feed: every freeze, revocation, token rotation, risk-tier
//! or rate-limit change, policy or tool change and settings change is an event written in the transaction
//! of the change. [`follow_changes`] wakes on every new committed log head (the store learns
//! of other replicas' commits by notification, or by polling at worst) and drops the cached
//! agent or tenant runtime each such event names (the next request reloads it from the
//! database) and closes the live feeds of each revoked operator key. Decisions and SOC events are filtered out in the query, so the follower reads
//! only the rare events that matter.

use crate::SharedState;
use aegis_store::{Event, EventKinds, StoreResult, event_kind};
use std::time::Duration;
use tokio::sync::watch;

/// Events that change what the authorize path caches, or end live feeds.
pub const FOLLOWED_EVENTS: EventKinds = EventKinds::of(&[
    event_kind::AGENT_FROZEN,
    event_kind::AGENT_UNFROZEN,
    event_kind::AGENT_REVOKED,
    event_kind::AGENT_TOKEN_ROTATED,
    event_kind::AGENT_RISK_TIER_CHANGED,
    event_kind::AGENT_RATE_LIMITS_CHANGED,
    event_kind::POLICY_PUT,
    event_kind::POLICY_DELETED,
    event_kind::TOOL_REGISTERED,
    event_kind::TENANT_SETTINGS_CHANGED,
    event_kind::KEY_REVOKED,
]);

/// Counts the times a replica dropped all its cached views (`drop_every_view`).
pub const CACHE_FLUSHES: &str = "aegis_cache_flushes_total";

const BATCH: u32 = 1000;
/// Pause after each pass, so that under load one read covers many commits instead of one
/// read per commit; it bounds how stale a view can be on top of the store's own delay.
const LINGER: Duration = Duration::from_millis(50);

/// Follows the log from the current head until `shutdown` turns true. The views start
/// empty, so only what commits from now on can make them stale.
pub async fn follow_changes(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let mut heads = state.store.committed_seq();
    let mut applied = *heads.borrow_and_update();
    loop {
        let head = *heads.borrow_and_update();
        if head > applied {
            if let Err(error) = apply_changes(&state, applied, head).await {
                tracing::error!(%error, after = applied, head, "cannot read cache changes from the log; dropping every cached agent and tenant view");
                drop_every_view(&state);
            }
            applied = head;
            tokio::time::sleep(LINGER).await;
        }
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Applies the followed events with `after < seq <= head`.
async fn apply_changes(state: &SharedState, mut after: i64, head: i64) -> StoreResult<()> {
    loop {
        let events = state
            .store
            .events_of_kinds(after, head, FOLLOWED_EVENTS, BATCH)
            .await?;
        for event in &events {
            apply(state, event);
        }
        match events.last() {
            Some(last) if events.len() == BATCH as usize => after = last.seq,
            _ => return Ok(()),
        }
    }
}

/// Stands in for changes that could not be read (the database failing the read, or a row
/// it cannot decode): whatever they changed, no view from before them survives. Every view
/// loaded after this sees every commit up to the head read for, and a load that began before
/// is not cached (the caches' generations), so the follower can move past the range instead
/// of retrying it: retrying would keep a stale view, such as a permit since deleted, for as
/// long as the range stays unreadable. Live feeds need nothing here: a session ends at its
/// key's `key.revoked` in its own stream, and a feed that cannot read the log delivers
/// nothing past it.
fn drop_every_view(state: &SharedState) {
    metrics::counter!(CACHE_FLUSHES).increment(1);
    state.agents.forget_all();
    state.tenants.invalidate_all();
}

fn apply(state: &SharedState, event: &Event) {
    if event.kind == event_kind::KEY_REVOKED {
        if let Some(key_id) = &event.subject_id {
            state.live_feed.key_revoked(&event.tenant_id, key_id);
        }
    } else if event.kind.starts_with("agent.") {
        if let Some(agent_id) = &event.agent_id {
            state.agents.forget(agent_id);
        }
    } else {
        state.tenants.invalidate(&event.tenant_id);
    }
}
