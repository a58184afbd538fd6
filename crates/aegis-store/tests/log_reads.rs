//! The event log's reads, on both stores: the feed of chosen kinds that keeps the gateway's
//! caches coherent reads exactly those kinds within its range, the notifier's feed leaves out
//! only the allowed decisions, a consumer that never committed stands at 0, and an event
//! whose payload cannot be read stops no reader.

#[path = "support/database.rs"]
mod database;
mod support;

use aegis_store::*;
use database::{Database, on_both_databases};
use serde_json::json;
use support::*;

async fn events_of_kinds_reads_only_those_kinds_within_the_range(store: &dyn Store) {
    let kinds = [
        "key.revoked",
        "agent.frozen",
        "tool.registered",
        "key.revoked",
    ];
    let mut seqs = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let seq = store
            .record_event(&tenant(), kind, None, json!({ "n": n }))
            .await
            .unwrap();
        seqs.push(seq);
    }
    const WATCHED: EventKinds = EventKinds::of(&["key.revoked", "tool.registered"]);
    let kinds_of = |events: &[Event]| -> Vec<(i64, String)> {
        events.iter().map(|e| (e.seq, e.kind.clone())).collect()
    };

    let all = store
        .events_of_kinds(0, seqs[3], WATCHED, 100)
        .await
        .unwrap();
    assert_eq!(
        kinds_of(&all),
        [
            (seqs[0], "key.revoked".to_owned()),
            (seqs[2], "tool.registered".to_owned()),
            (seqs[3], "key.revoked".to_owned()),
        ]
    );
    // The range is (after, up_to], and the limit holds.
    let middle = store
        .events_of_kinds(seqs[0], seqs[2], WATCHED, 100)
        .await
        .unwrap();
    assert_eq!(kinds_of(&middle), [(seqs[2], "tool.registered".to_owned())]);
    let first = store.events_of_kinds(0, seqs[3], WATCHED, 1).await.unwrap();
    assert_eq!(kinds_of(&first), [(seqs[0], "key.revoked".to_owned())]);
    // A kind nobody logged matches nothing.
    let none = store
        .events_of_kinds(0, seqs[3], EventKinds::of(&["webhook.deleted"]), 100)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    assert_eq!(store.consumer_cursor("never-ran").await.unwrap(), 0);
}

on_both_stores!(events_of_kinds_reads_only_those_kinds_within_the_range);

async fn the_feed_without_allows_leaves_out_only_allowed_decisions(store: &dyn Store) {
    agent(store).await;
    let allowed = store.record_decision(allowed_read(1)).await.unwrap();
    let denied = store.record_decision(denied_merge(2)).await.unwrap();
    let alert = (store.record_event(&tenant(), "alert.raised", Some("agt_1"), json!({})))
        .await
        .unwrap();
    let unwatched = (store.record_event(&tenant(), "policy.put", None, json!({})))
        .await
        .unwrap();
    // An event of kind `decision` that no decision row names is read: the store cannot tell
    // its verdict, so its reader judges its payload.
    let stored_whole = store
        .record_event(
            &tenant(),
            "decision",
            Some("agt_1"),
            json!({ "decision": "allow" }),
        )
        .await
        .unwrap();
    let allowed_again = store.record_decision(allowed_read(3)).await.unwrap();
    const WATCHED: EventKinds = EventKinds::of(&["decision", "alert.raised"]);
    const NOTICED: EventKinds = WATCHED.except_allows();
    let seqs = |events: Vec<Event>| -> Vec<i64> { events.iter().map(|e| e.seq).collect() };

    let head = allowed_again.event_seq;
    let read = store.events_of_kinds(0, head, NOTICED, 100).await.unwrap();
    assert_eq!(read[0].payload.as_json()["decision"], "deny", "{read:?}");
    assert_eq!(seqs(read), [denied.event_seq, alert, stored_whole]);
    assert!(allowed.event_seq < denied.event_seq && alert < unwatched);
    // The range is (after, up_to], and the limit holds.
    let middle = (store.events_of_kinds(denied.event_seq, unwatched, NOTICED, 100))
        .await
        .unwrap();
    assert_eq!(seqs(middle), [alert]);
    let first = (store.events_of_kinds(0, head, NOTICED, 1)).await.unwrap();
    assert_eq!(seqs(first), [denied.event_seq]);
    // Without `except_allows`, the allowed decisions are read.
    let all = store.events_of_kinds(0, head, WATCHED, 100).await.unwrap();
    assert_eq!(all.len(), 5, "{all:?}");
}

on_both_stores!(the_feed_without_allows_leaves_out_only_allowed_decisions);

/// Events edited behind the gateway's back so that their payload cannot be read (one stored
/// whole, one rebuilt from its decision row) read as `null` with the reason, and every read
/// of the log goes on past them.
async fn an_event_that_cannot_be_read_stops_no_reader(db: Database) {
    let store = db.open().await;
    agent(store.as_ref()).await;
    let record = async |kind: &str| {
        (store.record_event(&tenant(), kind, None, json!({ "kind": kind })))
            .await
            .unwrap()
    };
    let edited = record("policy.put").await;
    let decision = store.record_decision(denied_merge(1)).await.unwrap();
    let last = record("tool.registered").await;
    db.run(
        &format!("UPDATE events SET payload = '{{not json' WHERE seq = {edited}"),
        &[],
    )
    .await;
    db.run(
        "UPDATE decisions SET risk_score = 300 WHERE id = 'dec_1'",
        &[],
    )
    .await;

    let log = store.events_after(0, 100).await.unwrap();
    let read = |seq: i64| log.iter().find(|e| e.seq == seq).unwrap();
    assert_eq!(log.last().unwrap().seq, last, "read past them");
    let policy = read(edited);
    assert_eq!(
        (policy.kind.as_str(), &policy.payload),
        ("policy.put", &EventPayload::UNREADABLE)
    );
    let why = policy.unreadable.as_deref().unwrap();
    assert!(why.starts_with("payload: "), "{why}");
    let deny = read(decision.event_seq);
    assert_eq!(
        (deny.kind.as_str(), &deny.payload),
        ("decision", &EventPayload::UNREADABLE)
    );
    let why = deny.unreadable.as_deref().unwrap();
    assert!(why.contains("risk score 300"), "{why}");
    assert_eq!(deny.subject_id.as_deref(), Some("dec_1"));
    let tool = read(last);
    assert_eq!(
        (tool.unreadable.as_deref(), &tool.payload.as_json()["kind"]),
        (None, &json!("tool.registered"))
    );

    // A tenant's page and a feed of chosen kinds read them the same way.
    let page = store.events(&tenant(), 0, 100).await.unwrap();
    assert_eq!(page, log);
    let followed = (store.events_of_kinds(
        0,
        last,
        EventKinds::of(&["policy.put", "tool.registered"]),
        100,
    ))
    .await
    .unwrap();
    let seqs: Vec<i64> = followed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [edited, last]);

    // SQLite stores whatever an edit gives it: a payload that is not even text reads the same.
    if matches!(db, Database::Sqlite(_)) {
        db.run(
            &format!("UPDATE events SET payload = x'00ff' WHERE seq = {edited}"),
            &[],
        )
        .await;
        let log = store.events_after(0, 100).await.unwrap();
        let policy = log.iter().find(|e| e.seq == edited).unwrap();
        assert_eq!(policy.payload, EventPayload::UNREADABLE);
        let why = policy.unreadable.as_deref().unwrap();
        assert!(why.starts_with("payload: "), "{why}");
    }
}

on_both_databases!(an_event_that_cannot_be_read_stops_no_reader);
