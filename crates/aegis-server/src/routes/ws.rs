//! `GET /v1/ws/events`: the tenant's live event feed over WebSocket.
//!
//! Each client reads the durable event log itself, from its own cursor: a client that
//! reconnects with `since=<last seq it saw>` misses nothing, and a slow client only slows its
//! own task (the server holds at most one page of events for it). A client that stops reading
//! for `SEND_TIMEOUT` is told where to resume and disconnected.

use crate::auth::{Operator, Viewer, bearer};
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;
use crate::state::SharedState;
use aegis_core::timestamp::format_millis;
use aegis_store::{Event, TenantId};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use utoipa::IntoParams;

const PAGE: u32 = 500;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// The operator key, for clients that cannot set `Authorization`.
    pub token: Option<String>,
    /// Comma-separated event kinds (`decision`, `incident.opened`), kind families
    /// (`incident`, `agent`) or incident/alert kinds (`deny_storm`). Default: all.
    pub kinds: Option<String>,
    pub agent_id: Option<String>,
    /// Resume after this seq (the last one received). Default: only new events.
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
    responses((status = 101, description = "WebSocket of JSON messages: hello, event, lagged"),
              (status = 401, body = ErrorBody)))]
pub async fn events_feed(
    State(state): State<SharedState>,
    RequestHead(head): RequestHead,
    QueryParams(query): QueryParams<FeedQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let secret = bearer(&head)
        .map(str::to_owned)
        .or(query.token.clone())
        .ok_or_else(|| {
            ApiError::unauthorized("an operator key is required (Authorization: Bearer or ?token=)")
        })?;
    let operator = Operator::<Viewer>::from_secret(&state, &secret).await?;
    let filter = FeedFilter {
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
    };
    let start = query
        .since
        .unwrap_or_else(|| *state.store.committed_seq().borrow());
    Ok(upgrade.on_upgrade(move |socket| feed(socket, state, operator.tenant, filter, start)))
}

struct FeedFilter {
    kinds: Vec<String>,
    agent_id: Option<String>,
}

impl FeedFilter {
    fn matches(&self, event: &Event) -> bool {
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
                    || event.payload.get("kind").and_then(|v| v.as_str()) == Some(k.as_str())
            })
    }
}

async fn feed(
    mut socket: WebSocket,
    state: SharedState,
    tenant: TenantId,
    filter: FeedFilter,
    mut cursor: i64,
) {
    let mut commits = state.store.committed_seq();
    if send(
        &mut socket,
        json!({"type": "hello", "tenant_id": tenant, "resume_from": cursor}),
    )
    .await
    .is_err()
    {
        return;
    }
    loop {
        let events = match state.store.events(&tenant, cursor, PAGE).await {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, "live feed cannot read the event log");
                let _ = send(&mut socket, json!({"type": "error", "message": "event log unavailable", "resume_from": cursor})).await;
                return;
            }
        };
        if events.is_empty() {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
            continue;
        }
        for event in events {
            let seq = event.seq;
            if filter.matches(&event) {
                let message = json!({
                    "type": "event",
                    "seq": event.seq,
                    "kind": event.kind,
                    "agent_id": event.agent_id,
                    "subject_id": event.subject_id,
                    "created_at": format_millis(event.created_at_ms),
                    "payload": event.payload,
                });
                match tokio::time::timeout(SEND_TIMEOUT, send(&mut socket, message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(%tenant, resume_from = cursor, "live feed client too slow; disconnecting it");
                        let notice = json!({"type": "lagged", "resume_from": cursor});
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), send(&mut socket, notice))
                                .await;
                        return;
                    }
                }
            }
            cursor = seq;
        }
    }
}

async fn send(socket: &mut WebSocket, message: serde_json::Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}
