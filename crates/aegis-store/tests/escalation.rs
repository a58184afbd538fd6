//! Risk-tier escalation counts a deny's earlier denies the same way however the writer
//! groups them into batches: PostgreSQL's writer holds a batch's rows back until the batch
//! ends and counts the ones held as the table would.

mod support;

use aegis_core::model::RiskTier;
use aegis_store::*;
use futures_util::future::join_all;
use support::*;

/// Denies recorded at once share writer batches. With a threshold of three, the third deny
/// in log order steps the agent from low to medium and restarts the count, the sixth steps
/// it to high, and nothing moves it further (high is the top).
async fn denies_recorded_at_once_escalate_as_if_recorded_one_by_one(store: &dyn Store) {
    agent(store).await;
    let escalation = RiskEscalation {
        denial_threshold: 3,
        window_minutes: 60,
    };
    let recorded = join_all((0..24).map(|n| {
        store.record_decision(NewDecision {
            escalation,
            ..denied_merge(n)
        })
    }))
    .await;
    let mut in_log_order: Vec<RecordedDecision> =
        recorded.into_iter().map(Result::unwrap).collect();
    in_log_order.sort_by_key(|recorded| recorded.event_seq);
    let escalations: Vec<(usize, RiskTier)> = (in_log_order.iter().enumerate())
        .filter_map(|(nth, recorded)| Some((nth, recorded.escalated_to?)))
        .collect();
    assert_eq!(escalations, [(2, RiskTier::Medium), (5, RiskTier::High)]);
    let agent = store.agent(&tenant(), "agt_1").await.unwrap();
    assert_eq!(agent.risk_tier, RiskTier::High);
    let changes = store
        .events_of_kinds(0, i64::MAX, &[event_kind::AGENT_RISK_TIER_CHANGED], 100)
        .await
        .unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

on_both_stores!(denies_recorded_at_once_escalate_as_if_recorded_one_by_one);
