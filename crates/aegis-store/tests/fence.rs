//! The fences that keep replicas honest under faults (`docs/replicas.md`):
//! - freshness: a decision made from an agent version older than the stored one is recorded
//!   and answered as a deny, on both stores;
//! - leadership epoch: a deposed leader's consumer commits are refused, even a flush that
//!   leaves the cursor where it is (PostgreSQL: SQLite has one process);
//! - session bounds: a write waiting for a `log_head` lock held by a stuck session gives up
//!   within the bound instead of hanging (PostgreSQL).

mod support;

use aegis_core::model::{RiskTier, Verdict};
use aegis_store::postgres::{PgStore, SessionBounds};
use aegis_store::*;
use std::time::{Duration, Instant};
use support::*;

/// An allow with policies matched, which a fenced decision must drop.
fn allow(n: u32, agent_version: i64) -> NewDecision {
    NewDecision {
        agent_version,
        matched_policies: vec!["allow-reads".into()],
        ..allowed_read(n)
    }
}

fn change(kind: AgentChangeKind) -> AgentChange {
    AgentChange {
        kind,
        actor: "key_admin".into(),
        at_ms: now_ms(),
    }
}

async fn an_allow_from_a_stale_agent_is_recorded_as_a_deny(store: &dyn Store) {
    let created = agent(store).await;
    let fresh = store
        .record_decision(allow(0, created.version))
        .await
        .unwrap();
    assert_eq!(fresh.stale_agent, None);

    // Each kind of change makes the version the caller decided from stale.
    let mut versions = vec![created.version];
    for (n, kind) in [
        AgentChangeKind::Freeze {
            reason: "test".into(),
        },
        AgentChangeKind::Unfreeze,
        AgentChangeKind::SetRiskTier {
            risk_tier: RiskTier::High,
        },
        AgentChangeKind::RotateToken {
            new_token_hash: [3; 32],
        },
    ]
    .into_iter()
    .enumerate()
    {
        let changed = store
            .change_agent(&tenant(), "agt_1", change(kind))
            .await
            .unwrap();
        assert!(
            changed.version > *versions.last().unwrap(),
            "{changed:?} after {versions:?}"
        );
        versions.push(changed.version);
        let stale = store
            .record_decision(allow(n as u32 + 1, versions[versions.len() - 2]))
            .await
            .unwrap();
        let reason = stale.stale_agent.expect("a stale allow is fenced");
        let stored = store
            .decision(&tenant(), &format!("dec_{}", n + 1))
            .await
            .unwrap();
        assert_eq!(stored.verdict, Verdict::Deny);
        assert_eq!(stored.reason, reason);
        assert!(stored.matched_policies.is_empty());
        let receipt = store.receipt(&tenant(), &stale.receipt_id).await.unwrap();
        assert_eq!(receipt.body.decision, "deny");
        // The receipt drafted before the writer fenced the allow is drafted again: its hash
        // is that of the deny recorded.
        assert_eq!(receipt.hash, receipt.body.hash().unwrap());
    }
    // From the current version, an allow is recorded as made.
    let current = store.agent(&tenant(), "agt_1").await.unwrap();
    assert_eq!(current.version, *versions.last().unwrap());
    let recorded = store
        .record_decision(allow(9, current.version))
        .await
        .unwrap();
    assert_eq!(recorded.stale_agent, None);
    let stored = store.decision(&tenant(), "dec_9").await.unwrap();
    assert_eq!(stored.verdict, Verdict::Allow);
}

on_both_stores!(an_allow_from_a_stale_agent_is_recorded_as_a_deny);

/// A connection of the test's own to the store's database.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn flush(cursor: i64) -> NotifyBatch {
    NotifyBatch {
        consumer: "notify".into(),
        after: cursor,
        cursor,
        ..NotifyBatch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_every_commit_of_a_deposed_leader() {
    let database = aegis_testdb::FreshDatabase::create().await;
    let first = PgStore::connect(database.url(), signer(), secrets())
        .await
        .unwrap();
    let second = PgStore::connect(database.url(), signer(), secrets())
        .await
        .unwrap();
    let _first_leads = first.lead().await.unwrap();
    first.apply_notify_batch(flush(0)).await.unwrap();

    // The first leader's lock session is cut (as when it is paused or partitioned and the
    // server gives up on it); it has not noticed yet. The second takes over.
    let admin = connect(database.url()).await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("aegis:leader:{}", std::process::id())],
        )
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "the leader's session is named");
    let _second_leads = tokio::time::timeout(Duration::from_secs(10), second.lead())
        .await
        .expect("the second store takes the leadership")
        .unwrap();

    // The deposed leader's flush (its cursor unchanged) and its SOC batch are refused.
    let refused = first.apply_notify_batch(flush(0)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let refused = first
        .apply_soc_batch(SocBatch {
            consumer: "soc".into(),
            ..SocBatch::default()
        })
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    // The new leader's go through.
    second.apply_notify_batch(flush(0)).await.unwrap();
    second
        .apply_soc_batch(SocBatch {
            consumer: "soc".into(),
            ..SocBatch::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_write_behind_a_stuck_lock_holder_gives_up_within_the_bound() {
    let database = aegis_testdb::FreshDatabase::create().await;
    let bound = Duration::from_millis(400);
    let store = PgStore::connect_bounded(
        database.url(),
        signer(),
        secrets(),
        SessionBounds {
            lock_wait: bound,
            ..SessionBounds::default()
        },
    )
    .await
    .unwrap();
    agent(&store).await;
    // A session that took the cluster's write lock and stopped (a paused replica).
    let mut stuck = connect(database.url()).await;
    let holding = stuck.transaction().await.unwrap();
    holding
        .execute("SELECT seq FROM log_head FOR UPDATE", &[])
        .await
        .unwrap();

    let started = Instant::now();
    let refused = store.record_decision(allow(1, 1)).await;
    let waited = started.elapsed();
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        waited >= bound && waited < bound * 5,
        "gave up after {waited:?}"
    );
    // Once the holder is gone, writes go through again on a fresh writer session.
    holding.rollback().await.unwrap();
    let current = store.agent(&tenant(), "agt_1").await.unwrap();
    store
        .record_decision(allow(2, current.version))
        .await
        .unwrap();
}
