//! The event log's reads, on both stores: the feed of chosen kinds that keeps the gateway's
//! caches coherent reads exactly those kinds within its range, and a consumer that never
//! committed stands at 0.

mod support;

use aegis_store::*;
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
    const WATCHED: &[&str] = &["key.revoked", "tool.registered"];
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
        .events_of_kinds(0, seqs[3], &["webhook.deleted"], 100)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    assert_eq!(store.consumer_cursor("never-ran").await.unwrap(), 0);
}

on_both_stores!(events_of_kinds_reads_only_those_kinds_within_the_range);
