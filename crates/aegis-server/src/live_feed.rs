//! The shared side of the live event feed (`GET /v1/ws/events`, [`crate::routes::ws`]).
//!
//! One follower per process ([`follow_log`]) reads each newly committed event once, right
//! after its commit, serialises it once and publishes it to every session through a
//! broadcast channel; a session only filters what it receives. The cost of the feed is
//! therefore one log read per commit batch, whatever the number of sessions, and while no
//! session is open the follower reads nothing. Publishing never waits for a session: a
//! session that falls more than the channel's capacity behind is told so (lagged) by the
//! channel and reads the log from its own cursor, as a session replaying `since=` does.
//!
//! The handover between reading the log and following the channel is by seq: a session
//! subscribes first, reads the log from its cursor until it has covered everything the
//! follower had published when it subscribed, then takes frames from the channel, skipping
//! those at or below its cursor. [`LiveFeed::subscribe`] and the follower's publication take
//! the same lock, and the follower records what it publishes before sending it, so every
//! frame a session did not receive from the channel was published at or below the mark it
//! read: no gap, and no duplicate.
//!
//! The hub also counts the open sessions per operator key and per tenant (the caps) and
//! tells a key's sessions when the log says the key was revoked ([`crate::coherence`]).

use crate::state::SharedState;
use aegis_core::timestamp::format_millis;
use aegis_store::{Event, EventLog, EventPayload, StoreResult, TenantId, event_kind};
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, watch};

/// Events per log read, for the follower and for a session catching up.
pub const PAGE: u32 = 500;
/// Log reads of sessions catching up that may run at once: replays and lagging sessions
/// together hold at most this many connections of the store's read pool.
const CATCH_UP_READERS: usize = 2;

/// Limits of the live feed, per process.
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// `AEGIS_WS_MAX_PER_KEY`: sessions one operator key may hold open.
    pub max_per_key: usize,
    /// `AEGIS_WS_MAX_PER_TENANT`: sessions one tenant may hold open, all its keys together.
    pub max_per_tenant: usize,
    /// Events the channel holds; a session further behind reads the log itself.
    pub buffer: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            max_per_key: 16,
            max_per_tenant: 128,
            buffer: 1024,
        }
    }
}

/// One event as the feed sends it, serialised once, with what sessions filter on.
#[derive(Debug)]
pub struct FeedEvent {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub kind: String,
    pub agent_id: Option<String>,
    pub subject_id: Option<String>,
    /// The payload's own `kind` (an alert's or incident's rule), for the `kinds` filter.
    pub payload_kind: Option<String>,
    /// The `{"type": "event", …}` message.
    pub frame: Utf8Bytes,
}

/// The `{"type": "event", …}` message, serialised from the event's fields in place (a
/// `json!` value would first copy each of them, the payload's whole tree included).
#[derive(serde::Serialize)]
struct EventMessage<'a> {
    r#type: &'static str,
    seq: i64,
    kind: &'a str,
    agent_id: Option<&'a str>,
    subject_id: Option<&'a str>,
    created_at: String,
    payload: &'a EventPayload,
    /// Why the payload reads as `null` ([`Event::unreadable`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<&'a str>,
}

impl FeedEvent {
    pub fn new(event: Event) -> FeedEvent {
        let frame = serde_json::to_string(&EventMessage {
            r#type: "event",
            seq: event.seq,
            kind: &event.kind,
            agent_id: event.agent_id.as_deref(),
            subject_id: event.subject_id.as_deref(),
            created_at: format_millis(event.created_at_ms),
            payload: &event.payload,
            unreadable: event.unreadable.as_deref(),
        })
        .expect("a payload and strings always serialise")
        .into();
        FeedEvent {
            // A decision's payload has no `kind`.
            payload_kind: match &event.payload {
                EventPayload::Recorded(payload) => payload
                    .get("kind")
                    .and_then(|kind| kind.as_str())
                    .map(str::to_owned),
                EventPayload::Decision(_) => None,
            },
            seq: event.seq,
            tenant_id: event.tenant_id,
            kind: event.kind,
            agent_id: event.agent_id,
            subject_id: event.subject_id,
            frame,
        }
    }

    /// Whether this is the revocation of operator key `key_id` (of the event's tenant).
    pub fn revokes_key(&self, key_id: &str) -> bool {
        self.kind == event_kind::KEY_REVOKED && self.subject_id.as_deref() == Some(key_id)
    }
}

/// How many times the feed read the log, by reader (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogReads {
    /// Reads of the follower: at most one per commit batch, and none while nobody listens.
    pub follower: u64,
    /// Reads of sessions replaying `since=` or catching up after falling behind.
    pub sessions: u64,
}

/// Which cap refused a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReached {
    Key(usize),
    Tenant(usize),
}

pub struct LiveFeed {
    frames: broadcast::Sender<Arc<FeedEvent>>,
    /// The highest seq handed to `frames`, or passed over while nobody listened. Raised
    /// before the frames are sent, under the lock [`LiveFeed::subscribe`] takes.
    published: Mutex<i64>,
    sessions: Mutex<OpenSessions>,
    settings: FeedSettings,
    catch_up_readers: Semaphore,
    follower_reads: AtomicU64,
    session_reads: AtomicU64,
}

#[derive(Default)]
struct OpenSessions {
    per_key: HashMap<(TenantId, String), KeySessions>,
    per_tenant: HashMap<TenantId, usize>,
}

struct KeySessions {
    open: usize,
    revoked: watch::Sender<bool>,
}

impl LiveFeed {
    /// A hub whose follower starts at `head`, the log head when the process starts: a
    /// session only ever asks for events after the head it saw.
    pub fn new(head: i64, settings: FeedSettings) -> Arc<LiveFeed> {
        Arc::new(LiveFeed {
            frames: broadcast::channel(settings.buffer.max(1)).0,
            published: Mutex::new(head),
            sessions: Mutex::default(),
            settings,
            catch_up_readers: Semaphore::new(CATCH_UP_READERS),
            follower_reads: AtomicU64::new(0),
            session_reads: AtomicU64::new(0),
        })
    }

    /// Joins the channel. Returns the receiver and the highest seq published before it
    /// joined: events up to that seq must be read from the log, every later one arrives on
    /// the receiver.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<FeedEvent>>, i64) {
        let published = self.published.lock();
        (self.frames.subscribe(), *published)
    }

    /// Reads one page of a tenant's events after `after` for a session that is replaying or
    /// catching up.
    pub async fn read_for_session(
        &self,
        store: &dyn EventLog,
        tenant: &TenantId,
        after: i64,
    ) -> StoreResult<Vec<Event>> {
        let _reader = self
            .catch_up_readers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        self.session_reads.fetch_add(1, Ordering::Relaxed);
        store.events(tenant, after, PAGE).await
    }

    pub fn log_reads(&self) -> LogReads {
        LogReads {
            follower: self.follower_reads.load(Ordering::Relaxed),
            sessions: self.session_reads.load(Ordering::Relaxed),
        }
    }

    /// Counts a new session of `key_id`, unless the key or its tenant is at its cap. The
    /// session holds the slot until it ends.
    pub fn open_session(
        self: &Arc<Self>,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<FeedSlot, CapReached> {
        let mut sessions = self.sessions.lock();
        let key = (tenant.clone(), key_id.to_owned());
        if sessions.per_key.get(&key).map_or(0, |k| k.open) >= self.settings.max_per_key {
            return Err(CapReached::Key(self.settings.max_per_key));
        }
        if sessions.per_tenant.get(tenant).copied().unwrap_or(0) >= self.settings.max_per_tenant {
            return Err(CapReached::Tenant(self.settings.max_per_tenant));
        }
        *sessions.per_tenant.entry(tenant.clone()).or_default() += 1;
        let key_sessions = sessions.per_key.entry(key).or_insert_with(|| KeySessions {
            open: 0,
            revoked: watch::Sender::new(false),
        });
        key_sessions.open += 1;
        Ok(FeedSlot {
            revoked: key_sessions.revoked.subscribe(),
            feed: Arc::clone(self),
            tenant: tenant.clone(),
            key_id: key_id.to_owned(),
        })
    }

    /// Ends every open session of a revoked key (called for each `key.revoked` event on the
    /// log, whichever replica committed it).
    pub fn key_revoked(&self, tenant: &TenantId, key_id: &str) {
        let sessions = self.sessions.lock();
        if let Some(key) = sessions.per_key.get(&(tenant.clone(), key_id.to_owned())) {
            key.revoked.send_replace(true);
        }
    }

    /// Reads and publishes the events committed after the last published one, up to
    /// `head`; or, while nobody listens, only moves the mark to `head`.
    async fn publish_up_to(&self, store: &dyn EventLog, head: i64) -> StoreResult<()> {
        loop {
            let after = {
                let mut published = self.published.lock();
                if *published >= head {
                    return Ok(());
                }
                if self.frames.receiver_count() == 0 {
                    // Under the lock `subscribe` takes: a session joining later sees this
                    // mark and reads what it needs from the log itself.
                    *published = head;
                    return Ok(());
                }
                *published
            };
            self.follower_reads.fetch_add(1, Ordering::Relaxed);
            let events = store.events_after(after, PAGE).await?;
            let Some(last) = events.last().map(|event| event.seq) else {
                return Ok(());
            };
            let full_page = events.len() == PAGE as usize;
            let frames: Vec<_> = events
                .into_iter()
                .map(|event| Arc::new(FeedEvent::new(event)))
                .collect();
            *self.published.lock() = last;
            for frame in frames {
                // No receiver left is not an error: the next session reads the log.
                let _ = self.frames.send(frame);
            }
            if !full_page {
                return Ok(());
            }
        }
    }
}

/// A session's place under the caps, released when dropped; it also learns of the
/// revocation of the session's key.
pub struct FeedSlot {
    feed: Arc<LiveFeed>,
    tenant: TenantId,
    key_id: String,
    revoked: watch::Receiver<bool>,
}

impl FeedSlot {
    /// Resolves once the session's key has been revoked.
    pub async fn revoked(&mut self) {
        // The sender lives in the registry as long as any slot of the key, this one included.
        let _ = self.revoked.wait_for(|revoked| *revoked).await;
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut sessions = self.feed.sessions.lock();
        let key = (self.tenant.clone(), std::mem::take(&mut self.key_id));
        if let Some(key_sessions) = sessions.per_key.get_mut(&key) {
            key_sessions.open -= 1;
            if key_sessions.open == 0 {
                sessions.per_key.remove(&key);
            }
        }
        if let Some(open) = sessions.per_tenant.get_mut(&self.tenant) {
            *open -= 1;
            if *open == 0 {
                sessions.per_tenant.remove(&self.tenant);
            }
        }
    }
}

/// The process's live-feed follower: publishes each committed event once, until `shutdown`
/// turns true. Spawn one per process, beside [`crate::coherence::follow_changes`].
pub async fn follow_log(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let mut heads = state.store.committed_seq();
    loop {
        let head = *heads.borrow_and_update();
        if let Err(error) = state
            .live_feed
            .publish_up_to(state.store.as_ref(), head)
            .await
        {
            // The mark stays: the same events are read again on the next pass.
            tracing::error!(%error, "live feed cannot read the event log; retrying");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
