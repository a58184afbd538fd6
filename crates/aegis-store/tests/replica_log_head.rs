//! A replica learns of another replica's commits: its `committed_seq` (which wakes the SOC
//! leader, the live feed and the cache follower) reaches the other's log head within a
//! second, and the events are readable from it.

use aegis_core::receipt::ReceiptSigner;
use aegis_store::postgres::PgStore;
use aegis_store::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_commit_reaches_committed_seq_within_a_second() {
    let database = aegis_testdb::FreshDatabase::create().await;
    let a = PgStore::connect(
        database.url(),
        Arc::new(ReceiptSigner::from_seed(&[1; 32])),
        SecretsKey::from_bytes(&[9; 32]),
    )
    .await
    .unwrap();
    let b = PgStore::connect(
        database.url(),
        Arc::new(ReceiptSigner::from_seed(&[2; 32])),
        SecretsKey::from_bytes(&[9; 32]),
    )
    .await
    .unwrap();
    let mut heads = b.committed_seq();
    let tenant = TenantId::new("acme");
    for round in 1..=3 {
        let seq = a
            .record_event(
                &tenant,
                event_kind::AUTH_DEAD_TOKEN,
                Some("agt_1"),
                serde_json::json!({"round": round}),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), heads.wait_for(|head| *head >= seq))
            .await
            .unwrap_or_else(|_| panic!("B did not see seq {seq} within a second"))
            .unwrap();
        let seen = b.events_after(seq - 1, 10).await.unwrap();
        assert_eq!(seen[0].seq, seq);
        assert_eq!(seen[0].payload.as_json()["round"], round);
    }
}
