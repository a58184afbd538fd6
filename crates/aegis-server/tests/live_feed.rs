//! The live feed (`GET /v1/ws/events`) under attack: a key or tenant opening feeds without
//! end, many feeds at once, a client that stops reading, and a revoked key keeping its feed.

#[macro_use]
mod common;

use aegis_server::Settings;
use aegis_server::live_feed::FeedSettings;
use aegis_store::TenantId;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Feed = WebSocketStream<TcpStream>;

fn with_feed_settings(live_feed: FeedSettings) -> Settings {
    Settings {
        live_feed,
        ..Settings::default()
    }
}

/// Opens a feed; with `receive_buffer`, the client's socket buffers at most that many bytes
/// (a client that stops reading then blocks the server's sends quickly).
async fn try_open(
    app: &TestApp,
    key: &str,
    query: &str,
    receive_buffer: Option<u32>,
) -> Result<Feed, WsError> {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    let stream = socket.connect(app.addr).await.expect("connect");
    let url = format!("ws://{}/v1/ws/events?token={key}{query}", app.addr);
    tokio_tungstenite::client_async(url, stream)
        .await
        .map(|(feed, _)| feed)
}

/// Opens a feed and reads its hello.
async fn open(app: &TestApp, key: &str, query: &str) -> Feed {
    let mut feed = try_open(app, key, query, None).await.expect("upgrade");
    assert_eq!(next_json(&mut feed).await["type"], "hello");
    feed
}

/// Asserts that opening a feed is refused before the upgrade; returns the status and the
/// JSON error.
async fn refused(app: &TestApp, key: &str, query: &str) -> (StatusCode, Value) {
    match try_open(app, key, query, None).await {
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().expect("an error body");
            let body: Value = serde_json::from_slice(body).expect("a JSON error body");
            (
                StatusCode::from_u16(response.status().as_u16()).unwrap(),
                body,
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the feed opened"),
    }
}

/// The next text message as JSON, within 5 s.
async fn next_json(feed: &mut Feed) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("a message within 5 s")
            .expect("the feed is open")
            .expect("a message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// The seqs of the next `n` events.
async fn next_seqs(feed: &mut Feed, n: usize) -> Vec<i64> {
    let mut seqs = Vec::with_capacity(n);
    while seqs.len() < n {
        let message = next_json(feed).await;
        assert_eq!(message["type"], "event", "{message}");
        seqs.push(message["seq"].as_i64().expect("seq"));
    }
    seqs
}

/// Every message until the server ends the feed: the events, and the close frame if one
/// came before the connection ended.
async fn until_closed(feed: &mut Feed) -> (Vec<Value>, Option<(CloseCode, String)>) {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("the server ends the feed within 5 s");
        match message {
            Some(Ok(Message::Text(text))) => events.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (
                    events,
                    frame.map(|frame| (frame.code, frame.reason.to_string())),
                );
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (events, None),
        }
    }
}

/// Seqs of the tenant's events after `after`, from the store.
async fn logged_seqs(app: &TestApp, tenant: &str, after: i64) -> Vec<i64> {
    app.store
        .events(&TenantId::new(tenant), after, 10_000)
        .await
        .expect("events")
        .iter()
        .map(|event| event.seq)
        .collect()
}

/// `&since=` the tenant's last event: a feed that starts exactly there (without `since` it
/// starts at the head the store has published, which may trail its last answer a moment).
async fn since_now(app: &TestApp, tenant: &str) -> String {
    let head = logged_seqs(app, tenant, 0)
        .await
        .last()
        .copied()
        .unwrap_or(0);
    format!("&since={head}")
}

/// Creates an operator key; returns its id and secret.
async fn key_with_id(app: &TestApp, admin: &str, role: &str) -> (String, String) {
    let body = expect_json(
        app.post(admin, "/v1/keys", json!({"role": role})).await,
        StatusCode::CREATED,
    )
    .await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// Tools of 500 long-named actions: their `tool.registered` events are about 100 KB each,
/// the largest the API makes.
fn large_tool(name: &str) -> Value {
    let actions: Vec<Value> = (0..500)
        .map(|i| json!({"action": format!("{i:03}{}", "a".repeat(125)), "mutates_state": false, "risk": "low"}))
        .collect();
    json!({"tool": name, "actions": actions})
}

/// How many large events a client that stops reading needs to be sent before the server's
/// sends to it block, plus `more`: the kernel's largest send buffer, the client's receive
/// buffer being kept small.
fn events_to_block_a_client(more: usize) -> usize {
    let send_buffer: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|limits| limits.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 << 20);
    let event_bytes = large_tool("bulk-0").to_string().len();
    send_buffer / event_bytes + 1 + more
}

/// Registers `n` large tools (real events, to fill socket buffers quickly).
async fn large_events(app: &TestApp, admin: &str, n: usize) {
    for i in 0..n {
        expect_json(
            app.post(admin, "/v1/tools", large_tool(&format!("bulk-{i}")))
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
}

/// The `event` message of a stored event, as the feed has always framed it.
async fn framed(app: &TestApp, tenant: &str, after: i64) -> Vec<Value> {
    app.store
        .events(&TenantId::new(tenant), after, 10_000)
        .await
        .expect("events")
        .into_iter()
        .map(|event| {
            json!({
                "type": "event",
                "seq": event.seq,
                "kind": event.kind,
                "agent_id": event.agent_id,
                "subject_id": event.subject_id,
                "created_at": aegis_core::timestamp::format_millis(event.created_at_ms),
                "payload": event.payload,
            })
        })
        .collect()
}

store_test!(
    async fn a_since_beyond_the_log_head_is_refused_naming_since(backend) {
        let app = TestApp::spawn(backend).await;
        let acme = app.tenant_with_agent("acme").await;
        let head = *app.store.committed_seq().borrow();
        let (status, body) = refused(&app, &acme.admin, &format!("&since={}", head + 1000)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "since", "{body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        // The head itself is a valid place to resume from.
        let mut feed = try_open(&app, &acme.admin, &format!("&since={head}"), None)
            .await
            .expect("upgrade");
        assert_eq!(next_json(&mut feed).await["resume_from"], head);
    }
);

store_test!(
    async fn the_feed_says_hello_replays_since_filters_and_goes_live(backend) {
        let app = TestApp::spawn(backend).await;
        let acme = app.tenant_with_agent("acme").await;
        let (_, other_token) = app.create_agent(&acme.admin, "other").await;
        for token in [&acme.token, &other_token, &acme.token] {
            app.decide(token, "github", "get_file", "trusted_internal_signed", false)
                .await;
        }
        let viewer = app.create_key(&acme.admin, "viewer").await;

        // Replay from seq 0 of one agent's decisions, exactly as stored, then live.
        let mut decisions = open(
            &app,
            &viewer,
            &format!("&since=0&kinds=decision&agent_id={}", acme.agent_id),
        )
        .await;
        // A family of kinds (`agent` is every `agent.*`), from the start too.
        let mut agents = try_open(&app, &viewer, "&since=0&kinds=agent", None)
            .await
            .expect("upgrade");
        assert_eq!(
            next_json(&mut agents).await,
            json!({"type": "hello", "tenant_id": "acme", "resume_from": 0})
        );
        let logged = framed(&app, "acme", 0).await;
        let of_agent: Vec<&Value> = logged
            .iter()
            .filter(|e| e["kind"] == "decision" && e["agent_id"] == acme.agent_id.as_str())
            .collect();
        assert_eq!(of_agent.len(), 2);
        for expected in of_agent {
            assert_eq!(&next_json(&mut decisions).await, expected);
        }
        let agent_events: Vec<&Value> = logged
            .iter()
            .filter(|e| e["kind"].as_str().unwrap().starts_with("agent."))
            .collect();
        assert_eq!(agent_events.len(), 2, "two agents created");
        for expected in agent_events {
            assert_eq!(&next_json(&mut agents).await, expected);
        }

        let head = logged.last().unwrap()["seq"].as_i64().unwrap();
        app.decide(&other_token, "github", "get_file", "trusted_internal_signed", false)
            .await;
        app.decide(&acme.token, "github", "merge_pull_request", "untrusted_external", true)
            .await;
        let live = framed(&app, "acme", head).await;
        assert_eq!(&next_json(&mut decisions).await, live.last().unwrap());
        assert_eq!(live.last().unwrap()["payload"]["decision"], "deny");
    }
);

store_test!(
    async fn live_feeds_are_capped_per_key_and_per_tenant(backend) {
        let app = TestApp::spawn_with(
            backend,
            with_feed_settings(FeedSettings {
                max_per_key: 2,
                max_per_tenant: 3,
                ..FeedSettings::default()
            }),
        )
        .await;
        let acme = app.create_tenant("acme").await;
        let globex = app.create_tenant("globex").await;
        let viewer = app.create_key(&acme, "viewer").await;
        let other_viewer = app.create_key(&acme, "viewer").await;

        // A key opens feeds up to its cap; the next is refused before the upgrade.
        let mut first = open(&app, &viewer, "").await;
        let _second = open(&app, &viewer, "").await;
        let (status, body) = refused(&app, &viewer, "").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "too_many_feeds", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("operator key"),
            "{body}"
        );

        // The tenant's cap counts all its keys.
        let _third = open(&app, &other_viewer, "").await;
        let (status, body) = refused(&app, &other_viewer, "").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tenant"),
            "{body}"
        );

        // Another tenant is not affected, and its feed is live.
        let mut globex_feed = open(&app, &globex, &since_now(&app, "globex").await).await;
        let _globex_second = open(&app, &globex, "").await;
        app.register_github(&globex).await;
        assert_eq!(next_json(&mut globex_feed).await["kind"], "tool.registered");

        // Closing a feed frees its slot (once the server has seen the close).
        first.close(None).await.expect("close");
        let deadline = Instant::now() + Duration::from_secs(5);
        let reopened = loop {
            match try_open(&app, &viewer, "", None).await {
                Ok(feed) => break feed,
                Err(WsError::Http(response)) if response.status() == 429 => {
                    assert!(Instant::now() < deadline, "the closed feed's slot was not freed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("{other}"),
            }
        };
        drop(reopened);
    }
);

store_test!(
    async fn twenty_feeds_get_every_event_once_in_order_from_one_log_read_per_commit(backend) {
        const FEEDS: usize = 20;
        const COMMITS: usize = 10;
        let app = TestApp::spawn_with(
            backend,
            with_feed_settings(FeedSettings {
                max_per_key: FEEDS,
                ..FeedSettings::default()
            }),
        )
        .await;
        let acme = app.tenant_with_agent("acme").await;
        let globex = app.tenant_with_agent("globex").await;
        let viewer = app.create_key(&acme.admin, "viewer").await;
        let before_first = logged_seqs(&app, "acme", 0).await.last().copied().unwrap();
        let mut feeds = Vec::new();
        for _ in 0..FEEDS {
            feeds.push(open(&app, &viewer, &format!("&since={before_first}")).await);
        }
        // A first decision: once every feed has it, every feed follows the channel.
        app.decide(&acme.token, "github", "get_file", "trusted_internal_signed", false)
            .await;
        let first = logged_seqs(&app, "acme", before_first).await;
        for feed in &mut feeds {
            assert_eq!(next_seqs(feed, first.len()).await, first);
        }

        let reads_before = app.state.live_feed.log_reads();
        for _ in 0..COMMITS {
            app.decide(&acme.token, "github", "get_file", "trusted_internal_signed", false)
                .await;
            // Another tenant's events reach no acme feed.
            app.decide(&globex.token, "github", "get_file", "trusted_internal_signed", false)
                .await;
        }
        let expected = logged_seqs(&app, "acme", *first.last().unwrap()).await;
        assert_eq!(expected.len(), COMMITS);
        for feed in &mut feeds {
            assert_eq!(
                next_seqs(feed, COMMITS).await,
                expected,
                "every event once, in seq order"
            );
        }
        let reads = app.state.live_feed.log_reads();
        let follower_reads = reads.follower - reads_before.follower;
        eprintln!(
            "{FEEDS} feeds, {} commits: {follower_reads} log reads by the follower, {} by sessions",
            2 * COMMITS,
            reads.sessions - reads_before.sessions
        );
        assert_eq!(
            reads.sessions, reads_before.sessions,
            "no feed read the log itself"
        );
        assert!(
            (1..=2 * COMMITS as u64).contains(&follower_reads),
            "at most one log read per commit for all {FEEDS} feeds, got {follower_reads}"
        );
    }
);

store_test!(
    async fn a_feed_that_falls_behind_reads_the_log_and_rejoins_without_gaps_or_duplicates(
        backend
    ) {
        let buffer = 4;
        let app = TestApp::spawn_with(
            backend,
            with_feed_settings(FeedSettings {
                buffer,
                ..FeedSettings::default()
            }),
        )
        .await;
        let acme = app.tenant_with_agent("acme").await;
        let viewer = app.create_key(&acme.admin, "viewer").await;
        let start = logged_seqs(&app, "acme", 0).await.last().copied().unwrap();
        let mut slow = try_open(&app, &viewer, &format!("&since={start}"), Some(4096))
            .await
            .expect("upgrade");
        assert_eq!(next_json(&mut slow).await["type"], "hello");

        // The client stops reading while more events are committed than its socket and the
        // channel can hold; every write still completes.
        let reads_before = app.state.live_feed.log_reads();
        let written = events_to_block_a_client(buffer + 4);
        large_events(&app, &acme.admin, written).await;
        let backlog = logged_seqs(&app, "acme", start).await;
        assert_eq!(backlog.len(), written);

        // It reads again: everything, once, in order, part of it read from the log.
        assert_eq!(next_seqs(&mut slow, backlog.len()).await, backlog);
        let reads_after_backlog = app.state.live_feed.log_reads();
        assert!(
            reads_after_backlog.sessions > reads_before.sessions,
            "the client fell behind the channel and caught up from the log"
        );

        // Then it follows the channel again: new events arrive without further log reads
        // (one at most, if it was rejoining at the moment the next event came).
        let mut last = *backlog.last().unwrap();
        for _ in 0..10 {
            app.decide(&acme.token, "github", "get_file", "trusted_internal_signed", false)
                .await;
            let next = logged_seqs(&app, "acme", last).await;
            assert_eq!(next_seqs(&mut slow, next.len()).await, next);
            last = *next.last().unwrap();
        }
        let reads = app.state.live_feed.log_reads();
        assert!(
            reads.sessions - reads_after_backlog.sessions <= 1,
            "back on the channel: {} log reads for 10 events",
            reads.sessions - reads_after_backlog.sessions
        );
    }
);

store_test!(
    async fn a_revoked_keys_feeds_close_with_1008_and_get_nothing_from_the_revocation_on(
        backend
    ) {
        let app = TestApp::spawn_with(
            backend,
            with_feed_settings(FeedSettings {
                max_per_tenant: 3,
                ..FeedSettings::default()
            }),
        )
        .await;
        let acme = app.tenant_with_agent("acme").await;
        let (viewer_id, viewer) = key_with_id(&app, &acme.admin, "viewer").await;
        // A feed of the key stops reading; the server's sends to it block once its socket
        // is full.
        let mut stalled = try_open(&app, &viewer, "", Some(4096)).await.expect("upgrade");
        large_events(&app, &acme.admin, events_to_block_a_client(4)).await;
        // Another feed of the key reads, as does one of the admin; the tenant is at its cap.
        let since = since_now(&app, "acme").await;
        let mut watching = open(&app, &viewer, &since).await;
        let mut admin_feed = open(&app, &acme.admin, &since).await;
        assert_eq!(refused(&app, &acme.admin, "").await.0, StatusCode::TOO_MANY_REQUESTS);
        app.decide(&acme.token, "github", "get_file", "trusted_internal_signed", false)
            .await;
        assert_eq!(next_json(&mut watching).await["kind"], "decision");
        assert_eq!(next_json(&mut admin_feed).await["kind"], "decision");

        let revoked = app.delete(&acme.admin, &format!("/v1/keys/{viewer_id}")).await;
        assert_eq!(revoked.status(), StatusCode::OK);
        let revoked_at = Instant::now();
        // Activity right after the revocation, which the key must not see.
        app.decide(&acme.token, "github", "get_file", "trusted_internal_signed", false)
            .await;

        let (events, close) = until_closed(&mut watching).await;
        let closed_in = revoked_at.elapsed();
        assert_eq!(
            close,
            Some((CloseCode::Policy, "operator key revoked".to_owned()))
        );
        assert!(
            closed_in < Duration::from_secs(1),
            "closed {closed_in:?} after the revocation"
        );
        // The admin's feed shows what happened from the revocation on.
        let revocation = next_json(&mut admin_feed).await;
        assert_eq!(revocation["kind"], "key.revoked");
        assert_eq!(revocation["subject_id"], viewer_id.as_str());
        let revocation_seq = revocation["seq"].as_i64().unwrap();
        assert_eq!(next_json(&mut admin_feed).await["kind"], "decision");
        assert!(
            events.iter().all(|e| e["seq"].as_i64().unwrap() < revocation_seq),
            "nothing from the revocation on reached the revoked key: {events:?}"
        );

        // The stalled feed is gone too, although its client never read: both slots of the
        // key are free within a second of the revocation.
        let mut replacements = Vec::new();
        while replacements.len() < 2 {
            match try_open(&app, &acme.admin, "", None).await {
                Ok(feed) => replacements.push(feed),
                Err(WsError::Http(response)) if response.status() == 429 => {
                    assert!(
                        revoked_at.elapsed() < Duration::from_secs(1),
                        "the stalled feed of the revoked key still holds its slot"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
        // What its client finds when it reads again: only events from before the revocation.
        let (events, _) = until_closed(&mut stalled).await;
        assert!(
            events
                .iter()
                .filter(|e| e["type"] == "event")
                .all(|e| e["seq"].as_i64().unwrap() < revocation_seq),
            "the stalled feed got nothing from the revocation on"
        );
        // And the key opens no new feed.
        assert_eq!(refused(&app, &viewer, "").await.0, StatusCode::UNAUTHORIZED);
    }
);
