//! A decision's event is stored without its payload and rebuilt from the decision row when
//! the log is read: every read of the log (a tenant's page, the SOC's feed, a feed of chosen
//! kinds) returns the payload the event always had, field for field — on both stores.

mod support;

use aegis_core::model::{ActionRisk, SourceTrust, Verdict};
use aegis_store::*;
use serde_json::json;
use support::*;

fn deny() -> NewDecision {
    NewDecision {
        id: "dec_1".into(),
        tenant_id: tenant(),
        agent_id: "agt_1".into(),
        request_id: None,
        tool: "mail".into(),
        action: "send".into(),
        resource: Some("outbox".into()),
        mutates_state: true,
        egress: true,
        sensitive: false,
        contained: false,
        throttled: false,
        risk: ActionRisk::High,
        source_trust: SourceTrust::UntrustedExternal,
        verdict: Verdict::Deny,
        risk_score: 87,
        reason: "forbidden".into(),
        matched_policies: vec!["no-mail".into()],
        action_hash: "cd".repeat(32),
        trace: TraceContext {
            run_id: Some("run_7".into()),
            trace_id: None,
            parent_run_id: None,
        },
        created_at_ms: now_ms(),
        escalation: RiskEscalation::default(),
        agent_version: 0,
        approval: None,
        tool_definition_hash: None,
    }
}

async fn a_decision_event_reads_as_recorded(store: &dyn Store) {
    agent(store).await;
    let recorded = store.record_decision(deny()).await.unwrap();
    let mut readable = deny();
    readable.id = "dec_2".into();
    readable.sensitive = true;
    readable.egress = false;
    readable.verdict = Verdict::Allow;
    readable.source_trust = SourceTrust::TrustedInternalSigned;
    readable.trace = TraceContext::default();
    store.record_decision(readable).await.unwrap();

    let of_tenant = store.events(&tenant(), 0, 100).await.unwrap();
    let decisions: Vec<&Event> = of_tenant
        .iter()
        .filter(|e| e.kind == event_kind::DECISION)
        .collect();
    assert_eq!(decisions.len(), 2, "{of_tenant:?}");
    let first = decisions[0];
    assert_eq!(first.seq, recorded.event_seq);
    assert_eq!(first.agent_id.as_deref(), Some("agt_1"));
    assert_eq!(first.subject_id.as_deref(), Some("dec_1"));
    // As text: the fields in the order a decision's payload has always been written.
    assert_eq!(
        first.payload.to_string(),
        json!({
            "decision_id": "dec_1",
            "decision": "deny",
            "tool": "mail",
            "action": "send",
            "mutates_state": true,
            "egress": true,
            "sensitive": false,
            "contained": false,
            "risk": "high",
            "risk_score": 87,
            "source_trust": "untrusted_external",
            "run_id": "run_7",
            "approval_id": null,
        })
        .to_string()
    );
    let second = decisions[1].payload.decision().unwrap();
    assert_eq!(second.decision, Verdict::Allow);
    assert!(second.sensitive);
    assert_eq!(second.run_id, None);

    // The SOC's feed and a feed of chosen kinds read the same events.
    let after = store.events_after(0, 100).await.unwrap();
    assert_eq!(after, of_tenant);
    let chosen = store
        .events_of_kinds(0, i64::MAX, EventKinds::of(&[event_kind::DECISION]), 100)
        .await
        .unwrap();
    assert_eq!(chosen, decisions.into_iter().cloned().collect::<Vec<_>>());
}

on_both_stores!(a_decision_event_reads_as_recorded);
