//! `GET /v1/ws/events`: the tenant's live event feed over WebSocket.
//!
//! A session replays the durable log from `since=` (or starts at the head), then follows the
//! events the process's one follower publishes ([`crate::live_feed`]); a session that falls
//! behind reads the log from its own cursor until it has caught up, so a client that
//! reconnects with `since=<last seq it saw>` misses nothing and a slow client only slows its
//! own task. A client that stops reading for `SEND_TIMEOUT` is told where to resume and
//! disconnected. Sessions are capped per operator key and per tenant (429 beyond), and the
//! sessions of a revoked key are closed with 1008 before they deliver its `key.revoked`
//! event or anything after it. An event whose payload cannot be read (the database edited or
//! damaged) is delivered with `"payload": null` and an `unreadable` reason.

use crate::auth::{Operator, Viewer, bearer};
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;
use crate::live_feed::{CapReached, FeedEvent, FeedSlot, PAGE};
use crate::openapi::{Invalid, OperatorErrors, StoreErrors};
use crate::state::SharedState;
use aegis_store::TenantId;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use utoipa::IntoParams;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `since` beyond this process's log head waits for the head to reach it before it
/// is refused: another replica's commit reaches this one within the log-head poll (0.5 s), so
/// a client resuming on another replica is not refused a seq it has just seen.
const SINCE_GRACE: Duration = Duration::from_secs(1);
/// How long a closing session waits to hand over its last message before dropping the
/// connection.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(250);
/// The socket's read buffer. A feed client sends only control frames (ping, close), and
/// tungstenite zero-fills the whole buffer on every read attempt, which a session makes each
/// time it wakes: at the default 128 KiB, 20 open feeds spent about 5 % of the gateway's
/// CPU clearing memory. A larger message still arrives; the buffer grows for it.
const READ_BUFFER: usize = 4096;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The operator key, for clients that cannot set `Authorization`.
    pub token: Option<String>,
    /// Comma-separated event kinds (`decision`, `incident.opened`), kind families
    /// (`incident`, `agent`) or incident/alert kinds (`deny_storm`). Default: all.
    pub kinds: Option<String>,
    pub agent_id: Option<String>,
    /// Resume after this seq (the last one received). Default: only new events. A seq
    /// beyond the log head is refused (422 naming `since`).
    pub since: Option<i64>,
}

/// The raw request parts, to read the bearer credential before upgrading.
pub struct RequestHead(Parts);

impl<S: Send + Sync> FromRequestParts<S> for RequestHead {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestHead(parts.clone()))
    }
}

/// Live events of this tenant (operator key as bearer or `?token=`; agent tokens refused).
#[utoipa::path(get, path = "/v1/ws/events", tag = "incidents", params(FeedQuery),
    security(("operator_key" = [])),
    responses(
        (status = 101, description = "WebSocket of JSON messages: hello, event, lagged; closed with 1008 when the key is revoked"),
        (status = 400, description = "Not a WebSocket handshake (`not_a_websocket`)", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded (`not_a_websocket`)", body = ErrorBody),
        (status = 429, description = "The key or the tenant has the maximum of live feeds open", body = ErrorBody),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn events_feed(
    State(state): State<SharedState>,
    RequestHead(head): RequestHead,
    QueryParams(query): QueryParams<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Read before the key is checked: a revocation the check did not see has a higher seq,
    // so the session watches the log from here on (see `Session::watch_from`).
    let log_head = *state.store.committed_seq().borrow();
    let secret = bearer(&head)
        .map(str::to_owned)
        .or(query.token.clone())
        .ok_or_else(|| {
            ApiError::unauthorized("an operator key is required (Authorization: Bearer or ?token=)")
        })?;
    let operator = Operator::<Viewer>::from_secret(&state, &secret).await?;
    open_feed(state, operator, log_head, query, upgrade).await
}

/// Opens a live feed for an operator already authenticated (by key here, by session in the
/// console), with `log_head` read before the operator's credential was checked.
pub async fn open_feed(
    state: SharedState,
    operator: Operator<Viewer>,
    log_head: i64,
    query: FeedQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if let Some(since) = query.since.filter(|since| *since > log_head) {
        // Accepted, such a feed would wait in silence for seqs the log may never reach.
        let mut head = state.store.committed_seq();
        let reached = matches!(
            tokio::time::timeout(SINCE_GRACE, head.wait_for(|seq| *seq >= since)).await,
            Ok(Ok(_))
        );
        if !reached {
            let head = *head.borrow();
            return Err(ApiError::invalid_field(
                "since",
                format!(
                    "is beyond the log head ({head}): resume from the last seq received, or leave since out to start at the head"
                ),
            ));
        }
    }
    // After the key check, so a plain GET learns first that it needs a key.
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(rejection.status(), "not_a_websocket", rejection.body_text())
    })?;
    let slot = state
        .live_feed
        .open_session(&operator.tenant, &operator.key_id)
        .map_err(|cap| {
            let message = match cap {
                CapReached::Key(max) => {
                    format!("this operator key already has {max} live feeds open; close one first")
                }
                CapReached::Tenant(max) => {
                    format!("this tenant already has {max} live feeds open; close one first")
                }
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_feeds", message)
        })?;
    let start = query.since.unwrap_or(log_head);
    let session = Session {
        tenant: operator.tenant,
        key_id: operator.key_id,
        filter: FeedFilter {
            kinds: query
                .kinds
                .as_deref()
                .map(|k| {
                    k.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            agent_id: query.agent_id,
        },
        start,
        watch_from: start.min(log_head),
    };
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| feed(socket, state, session, slot)))
}

struct Session {
    tenant: TenantId,
    key_id: String,
    filter: FeedFilter,
    /// Events with a higher seq are delivered.
    start: i64,
    /// Events with a higher seq are read, to find the revocation of the session's key even
    /// where nothing is delivered (below `start`).
    watch_from: i64,
}

struct FeedFilter {
    kinds: Vec<String>,
    agent_id: Option<String>,
}

impl FeedFilter {
    fn matches(&self, event: &FeedEvent) -> bool {
        if self
            .agent_id
            .as_ref()
            .is_some_and(|a| event.agent_id.as_ref() != Some(a))
        {
            return false;
        }
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                event.kind == *k
                    || event
                        .kind
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
                    || event.payload_kind.as_deref() == Some(k.as_str())
            })
    }
}

/// Why a session ended.
enum End {
    /// The client, or the server, went away: nothing more to say.
    Gone,
    KeyRevoked,
    TooSlow,
    LogUnavailable,
}

async fn feed(mut socket: WebSocket, state: SharedState, session: Session, mut slot: FeedSlot) {
    if send(
        &mut socket,
        json!({"type": "hello", "tenant_id": session.tenant, "resume_from": session.start}),
    )
    .await
    .is_err()
    {
        return;
    }
    // The last seq read of the tenant's events (delivered or not).
    let mut cursor = session.watch_from;
    // Whatever the session is waiting for (the log, the channel, a slow client), the
    // revocation of its key ends it.
    let end = tokio::select! {
        biased;
        () = slot.revoked() => End::KeyRevoked,
        end = follow(&mut socket, &state, &session, &mut cursor) => end,
    };
    let resume_from = cursor.max(session.start);
    let last_words = match end {
        End::Gone => return,
        End::KeyRevoked => {
            tracing::info!(tenant = %session.tenant, key_id = %session.key_id, "operator key revoked; closing its live feed");
            Message::Close(Some(CloseFrame {
                code: close_code::POLICY,
                reason: "operator key revoked".into(),
            }))
        }
        End::TooSlow => {
            tracing::info!(tenant = %session.tenant, resume_from, "live feed client too slow; disconnecting it");
            text(json!({"type": "lagged", "resume_from": resume_from}))
        }
        End::LogUnavailable => text(
            json!({"type": "error", "message": "event log unavailable", "resume_from": resume_from}),
        ),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(last_words)).await;
}

/// Streams the session's events: from the log until it has caught up with the channel,
/// then from the channel; back to the log whenever it falls too far behind.
///
/// Events are queued on the socket as they are handled and written out once nothing more is
/// ready (the end of a log page, an empty channel): a commit batch reaches a client in one
/// write instead of one per event, so open feeds cost the gateway per batch, not per event.
async fn follow(
    socket: &mut WebSocket,
    state: &SharedState,
    session: &Session,
    cursor: &mut i64,
) -> End {
    loop {
        // Join first: everything published after `published` arrives on `frames`.
        let (mut frames, published) = state.live_feed.subscribe();
        while *cursor < published {
            let events = match state
                .live_feed
                .read_for_session(state.store.as_ref(), &session.tenant, *cursor)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, "live feed cannot read the event log");
                    return End::LogUnavailable;
                }
            };
            // A short page holds everything committed when it was read, which includes
            // everything published before `subscribe`.
            let caught_up = events.len() < PAGE as usize;
            for event in events {
                if let Some(end) = deliver(socket, session, cursor, &FeedEvent::new(event)).await {
                    return end;
                }
            }
            if let Some(end) = write_out(socket).await {
                return end;
            }
            if caught_up {
                break;
            }
        }
        loop {
            let mut next = tokio::select! {
                frame = frames.recv() => frame,
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Gone,
                    Some(Ok(_)) => continue,
                },
            };
            // What the channel already holds goes out with this event, up to a page (as from
            // the log): a channel that never runs dry neither holds the queue back nor keeps
            // the task from returning to `recv`, where tokio's budget makes it yield.
            let mut queued = 0;
            let lagged = loop {
                match next {
                    Ok(event) => {
                        if event.tenant_id == session.tenant
                            && event.seq > *cursor
                            && let Some(end) = deliver(socket, session, cursor, &event).await
                        {
                            return end;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(tenant = %session.tenant, missed, "live feed session fell behind; reading the log");
                        break true;
                    }
                    Err(RecvError::Closed) => return End::Gone,
                }
                queued += 1;
                if queued == PAGE {
                    break false;
                }
                next = match frames.try_recv() {
                    Ok(event) => Ok(event),
                    Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Empty) => break false,
                };
            };
            if let Some(end) = write_out(socket).await {
                return end;
            }
            if lagged {
                break;
            }
        }
    }
}

/// Handles the session's next event (in seq order): ends the session at the revocation of
/// its key, queues the event on the socket if the session wants it, and moves the cursor
/// past it. The socket writes its queue out on its own once the queue is large enough;
/// [`write_out`] writes the rest.
async fn deliver(
    socket: &mut WebSocket,
    session: &Session,
    cursor: &mut i64,
    event: &FeedEvent,
) -> Option<End> {
    if event.revokes_key(&session.key_id) {
        return Some(End::KeyRevoked);
    }
    if event.seq > session.start && session.filter.matches(event) {
        let message = Message::Text(event.frame.clone());
        if let Some(end) = within_send_timeout(socket.feed(message)).await {
            return Some(end);
        }
    }
    *cursor = event.seq;
    None
}

/// Writes out what [`deliver`] queued on the socket.
async fn write_out(socket: &mut WebSocket) -> Option<End> {
    within_send_timeout(socket.flush()).await
}

/// Why the session ends if a write to its client does not complete within `SEND_TIMEOUT`.
async fn within_send_timeout(write: impl Future<Output = Result<(), axum::Error>>) -> Option<End> {
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(End::Gone),
        Err(_) => Some(End::TooSlow),
    }
}

fn text(message: serde_json::Value) -> Message {
    Message::Text(message.to_string().into())
}

async fn send(socket: &mut WebSocket, message: serde_json::Value) -> Result<(), axum::Error> {
    socket.send(text(message)).await
}
