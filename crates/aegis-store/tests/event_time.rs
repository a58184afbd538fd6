//! What the SOC's rules read from the log, on both stores: event times are commit times that
//! never run backwards in seq order, whatever time the answering handler (or a replica with a
//! skewed clock) put on the decision; and a frozen agent's refusals are recorded without
//! counting towards risk-tier escalation.

mod support;

use aegis_core::model::{RiskTier, Verdict};
use aegis_store::*;
use support::*;

fn decision(n: u32, created_at_ms: i64, contained: bool) -> NewDecision {
    NewDecision {
        created_at_ms,
        contained,
        ..denied_merge(n)
    }
}

async fn event_times_follow_the_commit_order(store: &dyn Store) {
    agent(store).await;
    let before = now_ms();
    // Handler times as skewed replicas stamp them: 70 s ahead, then 3 ms back, then 70 s back.
    let skews = [70_000, 0, -3, -70_000, 10_000, 0];
    let mut seqs = Vec::new();
    for (n, skew) in skews.iter().enumerate() {
        let recorded = store
            .record_decision(decision(n as u32, now_ms() + skew, false))
            .await
            .unwrap();
        seqs.push(recorded.event_seq);
    }
    let after = now_ms();
    let events = store.events(&tenant(), 0, 1000).await.unwrap();
    let times: Vec<i64> = events.iter().map(|e| e.created_at_ms).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]), "{times:?}");
    for event in events.iter().filter(|e| seqs.contains(&e.seq)) {
        assert!(
            (before..=after).contains(&event.created_at_ms),
            "event {} stamped {} outside its commit, [{before}, {after}]",
            event.seq,
            event.created_at_ms
        );
    }
    // The decision keeps the time its handler gave it.
    let ahead = store.decision(&tenant(), "dec_0").await.unwrap();
    assert!(ahead.created_at_ms >= before + 70_000);
}

async fn refusals_of_a_frozen_agent_do_not_escalate(store: &dyn Store) {
    agent(store).await;
    // Six refusals while frozen: recorded, the tier stays.
    for n in 0..6 {
        let recorded = store
            .record_decision(decision(n, now_ms(), true))
            .await
            .unwrap();
        assert_eq!(recorded.escalated_to, None);
    }
    let refused = store
        .list_decisions(
            &tenant(),
            DecisionFilter {
                verdict: Some(Verdict::Deny),
                ..DecisionFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(refused.len(), 6);
    assert_eq!(
        store.agent(&tenant(), "agt_1").await.unwrap().risk_tier,
        RiskTier::Low
    );
    // Five denies of its own do (the default threshold).
    let mut escalated = Vec::new();
    for n in 6..11 {
        let recorded = store
            .record_decision(decision(n, now_ms(), false))
            .await
            .unwrap();
        escalated.push(recorded.escalated_to);
    }
    assert_eq!(escalated, [None, None, None, None, Some(RiskTier::Medium)]);
}

on_both_stores!(event_times_follow_the_commit_order);

on_both_stores!(refusals_of_a_frozen_agent_do_not_escalate);
