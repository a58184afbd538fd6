//! A listing of a tenant's decisions, on both stores: newest first, a page at a time, narrowed
//! by each filter, and never another tenant's, whichever index reads it (one agent's decisions,
//! one run's, or the whole tenant's through its events).

mod support;

use aegis_core::model::Verdict;
use aegis_store::*;
use serde_json::json;
use support::*;

/// `acme`'s decision `dec_{n}` by `agent` at `n` seconds, in `run` if any: a denied merge
/// when `n` is 2 or 5, an allowed read otherwise.
fn decision(n: u32, agent: &str, run: Option<&str>) -> NewDecision {
    let shape = if n % 3 == 2 {
        denied_merge(n)
    } else {
        allowed_read(n)
    };
    NewDecision {
        agent_id: agent.into(),
        trace: TraceContext {
            run_id: run.map(str::to_owned),
            ..TraceContext::default()
        },
        created_at_ms: i64::from(n) * 1_000,
        ..shape
    }
}

async fn a_listing_reads_the_tenants_decisions_newest_first_by_any_filter(store: &dyn Store) {
    // acme: dec_1..dec_6 by agt_1 and agt_2 in turn, dec_3 and dec_4 in run_a, dec_2 and
    // dec_5 denied; an event of another kind after each, and a decision of globex's agent in
    // run_a in between.
    agent(store).await;
    another_agent(store, "agt_2", [3; 32]).await;
    let mut seq_of = std::collections::HashMap::new();
    for n in 1..=6 {
        let agent = if n % 2 == 0 { "agt_2" } else { "agt_1" };
        let run = (n == 3 || n == 4).then_some("run_a");
        let recorded = store
            .record_decision(decision(n, agent, run))
            .await
            .unwrap();
        seq_of.insert(format!("dec_{n}"), recorded.event_seq);
        store
            .record_event(&tenant(), "policy.put", None, json!({ "n": n }))
            .await
            .unwrap();
        let globex = NewDecision {
            agent_id: "agt_g".into(),
            trace: TraceContext {
                run_id: Some("run_a".into()),
                ..TraceContext::default()
            },
            ..allowed_read_of("globex", n)
        };
        store.record_decision(globex).await.unwrap();
    }

    let list = async |tenant: &str, filter: DecisionFilter| -> Vec<String> {
        let listed = store
            .list_decisions(&TenantId::new(tenant), filter)
            .await
            .unwrap();
        assert!(listed.iter().all(|d| d.tenant_id.as_str() == tenant));
        listed.into_iter().map(|d| d.id).collect()
    };
    let page = |before: Option<&str>, limit: u32| Page {
        before: before.map(|id| seq_of[id]),
        limit,
    };
    let ids =
        |numbers: &[u32]| -> Vec<String> { numbers.iter().map(|n| format!("dec_{n}")).collect() };

    // The whole tenant, through its events.
    let all = DecisionFilter::default();
    assert_eq!(list("acme", all.clone()).await, ids(&[6, 5, 4, 3, 2, 1]));
    let first = DecisionFilter {
        page: page(None, 2),
        ..all.clone()
    };
    assert_eq!(list("acme", first).await, ids(&[6, 5]));
    let next = DecisionFilter {
        page: page(Some("dec_5"), 2),
        ..all.clone()
    };
    assert_eq!(list("acme", next).await, ids(&[4, 3]));
    let denied = DecisionFilter {
        verdict: Some(Verdict::Deny),
        ..all.clone()
    };
    assert_eq!(list("acme", denied).await, ids(&[5, 2]));
    let window = DecisionFilter {
        since_ms: Some(3_000),
        until_ms: Some(5_000),
        ..all.clone()
    };
    assert_eq!(list("acme", window).await, ids(&[4, 3]));
    let merges = DecisionFilter {
        tool: Some("github".into()),
        action: Some("merge_pull_request".into()),
        ..all.clone()
    };
    assert_eq!(list("acme", merges).await, ids(&[5, 2]));
    let other_tool = DecisionFilter {
        tool: Some("slack".into()),
        ..all.clone()
    };
    assert_eq!(list("acme", other_tool).await, ids(&[]));

    // One agent's.
    let agent_2 = DecisionFilter {
        agent_id: Some("agt_2".into()),
        ..all.clone()
    };
    assert_eq!(list("acme", agent_2.clone()).await, ids(&[6, 4, 2]));
    let agent_2_older = DecisionFilter {
        page: page(Some("dec_4"), 1),
        ..agent_2.clone()
    };
    assert_eq!(list("acme", agent_2_older).await, ids(&[2]));
    let agent_2_denied = DecisionFilter {
        verdict: Some(Verdict::Deny),
        ..agent_2
    };
    assert_eq!(list("acme", agent_2_denied).await, ids(&[2]));

    // One run's.
    let run_a = DecisionFilter {
        run_id: Some("run_a".into()),
        ..all.clone()
    };
    assert_eq!(list("acme", run_a.clone()).await, ids(&[4, 3]));
    let run_a_first = DecisionFilter {
        page: page(None, 1),
        ..run_a.clone()
    };
    assert_eq!(list("acme", run_a_first).await, ids(&[4]));
    let run_a_of_agent_1 = DecisionFilter {
        agent_id: Some("agt_1".into()),
        ..run_a
    };
    assert_eq!(list("acme", run_a_of_agent_1).await, ids(&[3]));

    // globex's listings hold only globex's decisions, by every path.
    let globex: Vec<String> = (1..=6).rev().map(|n| format!("dec_globex_{n}")).collect();
    assert_eq!(list("globex", all.clone()).await, globex);
    let globex_run = DecisionFilter {
        run_id: Some("run_a".into()),
        ..all.clone()
    };
    assert_eq!(list("globex", globex_run).await, globex);
    let globex_agent = DecisionFilter {
        agent_id: Some("agt_g".into()),
        ..all.clone()
    };
    assert_eq!(list("globex", globex_agent).await, globex);
    let acme_agent_from_globex = DecisionFilter {
        agent_id: Some("agt_1".into()),
        ..all
    };
    assert_eq!(list("globex", acme_agent_from_globex).await, ids(&[]));
    assert_eq!(list("initech", DecisionFilter::default()).await, ids(&[]));
}

on_both_stores!(a_listing_reads_the_tenants_decisions_newest_first_by_any_filter);
