//! The notifier reads no allowed decision, yet its cursor moves past them: after a stretch of
//! nothing but allows it stands at the log's head, so a restart reads none of them again,
//! and a deny after them is still read and notified.

// The store tests' fixtures: this test runs the notifier over a real store.
#[path = "../../aegis-store/tests/support/mod.rs"]
mod support;

use aegis_soc::notify::{CONSUMER, ENV_JSON_SINK, Notifier, NotifyConfig};
use aegis_store::sqlite::SqliteStore;
use aegis_store::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the notifier's saved cursor reaches `seq`, and returns it.
async fn cursor_reaches(store: &SqliteStore, seq: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cursor = store.consumer_cursor(CONSUMER).await.unwrap();
        if cursor >= seq || Instant::now() > deadline {
            return cursor;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stretch_of_allows_moves_the_cursor_to_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("aegis.db"),
        support::signer(),
        support::secrets(),
    )
    .unwrap();
    let store = Arc::new(store);
    support::agent(store.as_ref()).await;
    let config = NotifyConfig {
        env_json: true,
        ..NotifyConfig::default()
    };
    let notifier = Notifier::start(store.clone(), config).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(notifier.run(shutdown));

    let mut head = 0;
    for n in 1..=5 {
        head = store
            .record_decision(support::allowed_read(n))
            .await
            .unwrap()
            .event_seq;
    }
    assert_eq!(cursor_reaches(&store, head).await, head);

    let denied = store
        .record_decision(support::denied_merge(6))
        .await
        .unwrap();
    assert_eq!(
        cursor_reaches(&store, denied.event_seq).await,
        denied.event_seq
    );
    let queued = store
        .list_deliveries(&support::tenant(), ENV_JSON_SINK, Page::default())
        .await
        .unwrap();
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(queued.len(), 1, "the deny, and no allow: {queued:?}");
}
