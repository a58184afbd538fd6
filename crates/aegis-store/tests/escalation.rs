//! Risk-tier escalation counts a deny's earlier denies the same way however the writer
//! groups them into batches: PostgreSQL's writer holds a batch's rows back until the batch
//! ends and counts the ones held as the table would.

mod support;

use aegis_core::model::RiskTier;
use aegis_store::*;
use futures_util::future::join_all;
use support::*;

/// Decisions recorded at once share writer batches: denies that count towards escalation,
/// containment refusals (a frozen agent's, which do not count) and allows, in turn. With a
/// threshold of three, the third counting deny in log order steps the agent from low to
/// medium and restarts the count, the sixth steps it to high, and nothing moves it further
/// (high is the top); no other decision escalates.
async fn denies_recorded_at_once_escalate_as_if_recorded_one_by_one(store: &dyn Store) {
    agent(store).await;
    let escalation = RiskEscalation {
        denial_threshold: 3,
        window_minutes: 60,
    };
    let counts = |n: u32| n.is_multiple_of(3);
    let decision = |n: u32| {
        let decided = match n % 3 {
            0 => denied_merge(n),
            1 => NewDecision {
                contained: true,
                ..denied_merge(n)
            },
            _ => allowed_read(n),
        };
        NewDecision {
            escalation,
            ..decided
        }
    };
    let recorded = join_all((0..24).map(|n| store.record_decision(decision(n)))).await;
    let mut in_log_order: Vec<(u32, RecordedDecision)> = (0..24)
        .zip(recorded.into_iter().map(Result::unwrap))
        .collect();
    in_log_order.sort_by_key(|(_, recorded)| recorded.event_seq);
    let counting_denies: Vec<Option<RiskTier>> = (in_log_order.iter())
        .filter(|(n, _)| counts(*n))
        .map(|(_, recorded)| recorded.escalated_to)
        .collect();
    let escalations: Vec<(usize, RiskTier)> = (counting_denies.iter().enumerate())
        .filter_map(|(nth, escalated_to)| Some((nth, (*escalated_to)?)))
        .collect();
    assert_eq!(escalations, [(2, RiskTier::Medium), (5, RiskTier::High)]);
    let others: Vec<_> = (in_log_order.iter())
        .filter(|(n, recorded)| !counts(*n) && recorded.escalated_to.is_some())
        .collect();
    assert!(others.is_empty(), "{others:?}");
    let agent = store.agent(&tenant(), "agt_1").await.unwrap();
    assert_eq!(agent.risk_tier, RiskTier::High);
    let changes = store
        .events_of_kinds(
            0,
            i64::MAX,
            EventKinds::of(&[event_kind::AGENT_RISK_TIER_CHANGED]),
            100,
        )
        .await
        .unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

on_both_stores!(denies_recorded_at_once_escalate_as_if_recorded_one_by_one);
