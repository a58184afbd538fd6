//! Receipts and durability: every answered decision has its decision, event and receipt rows;
//! the tenant chain links, is gap-free under concurrency, and verifies against the signed
//! checkpoints and published keys.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Asserts the decision, its event and its receipt are stored and agree with the answer.
async fn assert_recorded(app: &TestApp, tenant: &str, answer: &Value) {
    let decision_id = answer["decision_id"].as_str().unwrap();
    let event_seq = answer["event_seq"].as_i64().unwrap();
    let receipt = &answer["receipt"];
    let decision = app
        .rows(
            "SELECT tenant_id, event_seq, receipt_id, decision, action_hash, agent_id FROM decisions WHERE id = ?1",
            &[decision_id.into()],
        )
        .await;
    let [
        stored_tenant,
        stored_seq,
        stored_receipt,
        verdict,
        hash,
        agent_id,
    ] = decision[0].as_slice()
    else {
        panic!("decision row {decision_id}: {decision:?}");
    };
    assert_eq!(stored_tenant.text(), tenant);
    assert_eq!(stored_seq.int(), event_seq);
    assert_eq!(stored_receipt.text(), receipt["id"].as_str().unwrap());
    assert_eq!(verdict.text(), answer["decision"].as_str().unwrap());
    assert_eq!(hash.text(), answer["action_hash"].as_str().unwrap());

    // The event row says what happened, to whom; what was decided is read from the decision
    // row, which holds it once.
    let event = app
        .rows(
            "SELECT kind, agent_id, subject_id, payload FROM events WHERE seq = ?1 AND tenant_id = ?2",
            &[event_seq.into(), tenant.into()],
        )
        .await;
    let [kind, agent, subject, payload] = event[0].as_slice() else {
        panic!("event row {event_seq}: {event:?}");
    };
    assert_eq!(kind.text(), "decision");
    assert_eq!(agent.text(), agent_id.text());
    assert_eq!((subject, payload.text()), (&Sql::Null, ""));

    let stored = app
        .rows(
            "SELECT decision_id, seq, hash, prev_hash, body FROM receipts WHERE id = ?1 AND tenant_id = ?2",
            &[receipt["id"].as_str().unwrap().into(), tenant.into()],
        )
        .await;
    let [receipt_decision, seq, stored_hash, prev_hash, body] = stored[0].as_slice() else {
        panic!("receipt row {}: {stored:?}", receipt["id"]);
    };
    assert_eq!(receipt_decision.text(), decision_id);
    assert_eq!(seq.int(), receipt["seq"].as_i64().unwrap());
    assert_eq!(stored_hash.text(), receipt["hash"].as_str().unwrap());
    // The decision is stored once: the receipt's body is rebuilt from the decision row, and
    // its link is the hash of the receipt before (none before the first).
    assert_eq!(body.text(), "");
    assert_eq!(*prev_hash, Sql::Null);
    let before = app
        .rows(
            "SELECT hash FROM receipts WHERE tenant_id = ?1 AND seq = ?2",
            &[tenant.into(), (seq.int() - 1).into()],
        )
        .await;
    let linked = before.first().map_or("", |row| row[0].text());
    assert_eq!(linked, receipt["prev_hash"].as_str().unwrap());
}

store_test!(async fn sequential_decisions_form_a_verified_chain(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let calls = [
        ("get_file", "trusted_internal_signed", false),
        ("merge_pull_request", "untrusted_external", true),
        ("merge_pull_request", "semi_trusted_customer", true),
        ("merge_pull_request", "trusted_internal_signed", true),
        ("unknown_action", "trusted_internal_signed", false),
        ("get_file", "malicious_suspected", false),
        ("merge_pull_request", "unknown", true),
        ("get_file", "trusted_internal_unsigned", false),
    ];
    let mut answers = Vec::new();
    for (action, trust, mutates) in calls {
        answers.push(app.decide(&f.token, "github", action, trust, mutates).await);
    }
    let verdicts: HashSet<&str> = answers
        .iter()
        .map(|a| a["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts.len(),
        3,
        "allow, deny and approval all get receipts"
    );

    // Each answer links to the previous one.
    let mut prev = String::new();
    for (i, answer) in answers.iter().enumerate() {
        let receipt = &answer["receipt"];
        assert_eq!(receipt["seq"], i as u64 + 1);
        assert_eq!(receipt["prev_hash"], prev.as_str(), "receipt {}", i + 1);
        prev = receipt["hash"].as_str().unwrap().to_owned();
        assert_recorded(&app, "acme", answer).await;
    }

    // The stored chain verifies, and is exactly the answered receipts in order.
    let chain = app.verify_chain("acme").await;
    let seqs: Vec<u64> = chain.iter().map(|r| r.body.seq).collect();
    assert_eq!(seqs, (1..=answers.len() as u64).collect::<Vec<_>>());
    for (receipt, answer) in chain.iter().zip(&answers) {
        assert_eq!(receipt.hash, answer["receipt"]["hash"].as_str().unwrap());
        assert_eq!(receipt.body.id, answer["receipt"]["id"].as_str().unwrap());
        assert_eq!(
            receipt.body.decision_id,
            answer["decision_id"].as_str().unwrap()
        );
        assert_eq!(receipt.body.agent_id, f.agent_id);
        assert_eq!(
            receipt.body.risk_score as u64,
            answer["risk_score"].as_u64().unwrap()
        );
        let matched: Vec<String> =
            serde_json::from_value(answer["matched_policies"].clone()).unwrap();
        assert_eq!(receipt.body.matched_policies, matched);
    }
    // The head is covered by a checkpoint signed with the gateway's key.
    let checkpoints = app
        .store
        .checkpoints(&aegis_store::TenantId::new("acme"))
        .await
        .unwrap();
    let last = checkpoints.last().expect("a checkpoint");
    assert_eq!(last.body.seq, answers.len() as u64);
    assert_eq!(last.body.head_hash, prev);
    assert_eq!(last.body.key_id, app.signer.key_id());
});

store_test!(async fn tampering_with_the_database_breaks_verification(backend) {
    // The chain check used above is not vacuous: an edited decision row, which its receipt's
    // body is rebuilt from, fails it.
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    for _ in 0..3 {
        app.decide(&f.token, "github", "merge_pull_request", "unknown", true)
            .await;
    }
    app.verify_chain("acme").await;
    let edited = app
        .execute(
            "UPDATE decisions SET decision = 'allow' WHERE decision = 'deny' AND id =
               (SELECT decision_id FROM receipts WHERE tenant_id = 'acme' AND seq = 2)",
            &[],
        )
        .await;
    assert_eq!(edited, 1);
    let broken = app.try_verify_chain("acme").await.unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
    assert_eq!(broken.kind, aegis_core::receipt::BreakKind::Hash);
});

store_test!(async fn concurrent_decisions_keep_a_gap_free_verified_chain(backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let admin = app.create_tenant("acme").await;
    app.register_github(&admin).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(app.create_agent(&admin, &format!("bot-{i}")).await.1);
    }
    // A second tenant interleaves its own decisions; its chain must stay separate.
    let other = app.tenant_with_agent("other").await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let app = std::sync::Arc::clone(&app);
        let token = tokens[i % tokens.len()].clone();
        tasks.spawn(async move {
            let (action, trust, mutates) = match i % 3 {
                0 => ("get_file", "trusted_internal_signed", false),
                1 => ("merge_pull_request", "untrusted_external", true),
                _ => ("merge_pull_request", "semi_trusted_customer", true),
            };
            (
                "acme",
                app.decide(&token, "github", action, trust, mutates).await,
            )
        });
    }
    for _ in 0..10 {
        let app = std::sync::Arc::clone(&app);
        let token = other.token.clone();
        tasks.spawn(async move {
            let answer = app
                .decide(
                    &token,
                    "github",
                    "get_file",
                    "trusted_internal_signed",
                    false,
                )
                .await;
            ("other", answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        answers.push(joined.expect("authorize task"));
    }
    assert_eq!(answers.len(), 60);
    for (tenant, answer) in &answers {
        assert_recorded(&app, tenant, answer).await;
    }
    let ours: Vec<&Value> = answers
        .iter()
        .filter(|(tenant, _)| *tenant == "acme")
        .map(|(_, answer)| answer)
        .collect();

    // Receipt seqs handed out are exactly 1..=50, each once; every answer's prev_hash is
    // the hash of the receipt one below it.
    let mut by_seq: Vec<(u64, String, String)> = ours
        .iter()
        .map(|a| {
            (
                a["receipt"]["seq"].as_u64().unwrap(),
                a["receipt"]["hash"].as_str().unwrap().to_owned(),
                a["receipt"]["prev_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_seq.sort();
    assert_eq!(
        by_seq.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    for pair in by_seq.windows(2) {
        assert_eq!(pair[1].2, pair[0].1, "prev_hash of seq {}", pair[1].0);
    }

    let chain = app.verify_chain("acme").await;
    assert_eq!(chain.len(), 50);
    assert_eq!(chain.last().unwrap().hash, by_seq.last().unwrap().1);
    assert_eq!(app.verify_chain("other").await.len(), 10);

    // Row counts: one decision, one decision event and one receipt per answer, nothing more.
    assert_eq!(app.count("SELECT COUNT(*) FROM decisions", &[]).await, 60);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events WHERE kind = 'decision'", &[]).await,
        60
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM receipts", &[]).await, 60);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM decisions d JOIN receipts r ON r.id = d.receipt_id AND r.decision_id = d.id
             JOIN events e ON e.seq = d.event_seq AND e.kind = 'decision' AND e.agent_id = d.agent_id",
            &[]
        )
        .await,
        60
    );
    // Every decision is listed by the API as well.
    let listed = expect_json(
        app.get(&admin, "/v1/decisions?limit=1000").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 50);
});

store_test!(async fn decision_events_are_ordered_with_lifecycle_events(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let before = app
        .decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await;
    expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": "r"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let after = app
        .decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await;
    let events = app
        .store
        .events(&aegis_store::TenantId::new("acme"), 0, 100)
        .await
        .unwrap();
    let kinds: Vec<(&str, i64)> = events.iter().map(|e| (e.kind.as_str(), e.seq)).collect();
    let position = |seq: i64| kinds.iter().position(|k| k.1 == seq).unwrap();
    let frozen = kinds.iter().position(|k| k.0 == "agent.frozen").unwrap();
    assert!(position(before["event_seq"].as_i64().unwrap()) < frozen);
    assert!(position(after["event_seq"].as_i64().unwrap()) > frozen);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
});
