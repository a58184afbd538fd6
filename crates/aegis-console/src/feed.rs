//! `GET /console/feed`: the live event feed for a signed-in browser. The same feed as
//! `GET /v1/ws/events` (resume with `since=`, filters, caps, the revocation of the key ends
//! it), authenticated by the session cookie instead of a key the browser does not have.

use crate::page::ConsoleError;
use crate::session::SignedIn;
use aegis_server::SharedState;
use aegis_server::error::ApiError;
use aegis_server::extract::QueryParams;
use aegis_server::routes::ws::{FeedQuery, open_feed};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};

pub async fn feed(
    State(state): State<SharedState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Read before the session's key is checked, as the API's feed does.
    let log_head = *state.store.committed_seq().borrow();
    match open(state, headers, log_head, query, upgrade).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn open(
    state: SharedState,
    headers: HeaderMap,
    log_head: i64,
    query: FeedQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ConsoleError> {
    if !same_origin(&headers) {
        // A WebSocket is not bound by the same-origin policy: a page of another origin must
        // not ride on the cookie.
        return Err(ApiError::forbidden("the live feed answers only pages of this console").into());
    }
    if query.token.is_some() {
        return Err(ApiError::invalid_field(
            "token",
            "the console's feed is authenticated by its session; use /v1/ws/events with a key",
        )
        .into());
    }
    let session = SignedIn::from_headers(&state, &headers).await?;
    let operator = session.viewer()?;
    Ok(open_feed(state, operator, log_head, query, upgrade).await?)
}

/// Whether the request's `Origin` (which browsers always send on a WebSocket handshake) is
/// this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (headers.get(ORIGIN), headers.get(HOST)) else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|origin_host| origin_host == host)
}
