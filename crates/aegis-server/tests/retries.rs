//! `POST /v1/authorize` with a `request_id`: a retry of a call is answered with the decision
//! its first call recorded, and recorded once, without ever passing a freeze or a revoke.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn call(request_id: &str, source_trust: &str, parameters: Value) -> Value {
    json!({
        "request_id": request_id,
        "tool_call": {
            "tool": "github",
            "action": "merge_pull_request",
            "resource": "payments-service#482",
            "parameters": parameters,
        },
        "context": {"source_trust": source_trust},
    })
}

async fn decisions_of(app: &TestApp, agent_id: &str) -> i64 {
    app.count(
        "SELECT COUNT(*) FROM decisions WHERE agent_id = ?1",
        &[Sql::from(agent_id)],
    )
    .await
}

store_test!(async fn a_retry_is_answered_with_the_recorded_decision_and_recorded_once(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let trusted = call("req-1", "trusted_internal_signed", json!({"pr": 482}));
    let first = expect_decision(app.authorize_body(&f.token, trusted.clone()).await, "allow").await;
    let retry = expect_decision(app.authorize_body(&f.token, trusted).await, "allow").await;
    assert_eq!(retry, first, "the same decision, receipt and log position");
    assert_eq!(decisions_of(&app, &f.agent_id).await, 1);

    // A deny is answered again too, and counted once towards risk escalation.
    let untrusted = call("req-2", "untrusted_external", json!({"pr": 482}));
    let denied = expect_decision(app.authorize_body(&f.token, untrusted.clone()).await, "deny").await;
    for _ in 0..6 {
        let again = expect_decision(app.authorize_body(&f.token, untrusted.clone()).await, "deny").await;
        assert_eq!(again["decision_id"], denied["decision_id"]);
    }
    assert_eq!(decisions_of(&app, &f.agent_id).await, 2);
    let agent = expect_json(app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id)).await, StatusCode::OK).await;
    assert_eq!(agent["risk_tier"], "low", "one deny, not seven");

    // A new request id is a new call; request ids are per agent.
    let new_call = expect_decision(
        app.authorize_body(&f.token, call("req-3", "trusted_internal_signed", json!({"pr": 482}))).await,
        "allow",
    )
    .await;
    assert_ne!(new_call["decision_id"], first["decision_id"]);
    let (other_id, other_token) = app.create_agent(&f.admin, "other-bot").await;
    let other = expect_decision(
        app.authorize_body(&other_token, call("req-1", "trusted_internal_signed", json!({"pr": 482}))).await,
        "allow",
    )
    .await;
    assert_ne!(other["decision_id"], first["decision_id"]);
    assert_eq!(decisions_of(&app, &other_id).await, 1);
    app.verify_chain("acme").await;
});

store_test!(async fn a_request_id_reused_for_another_call_is_refused(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_decision(
        app.authorize_body(&f.token, call("req-1", "trusted_internal_signed", json!({"pr": 482}))).await,
        "allow",
    )
    .await;
    let refused = expect_error(
        app.authorize_body(&f.token, call("req-1", "trusted_internal_signed", json!({"pr": 483}))).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(refused["field"], "request_id");
    assert_eq!(decisions_of(&app, &f.agent_id).await, 1);
});

store_test!(async fn concurrent_retries_are_recorded_once(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let body = call("req-burst", "trusted_internal_signed", json!({"pr": 482}));
    let answers = futures_util::future::join_all(
        (0..16).map(|_| app.authorize_body(&f.token, body.clone())),
    )
    .await;
    let mut ids = Vec::new();
    for answer in answers {
        ids.push(expect_decision(answer, "allow").await["decision_id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry answered with one decision: {ids:?}");
    assert_eq!(decisions_of(&app, &f.agent_id).await, 1);
});

store_test!(async fn a_retry_never_passes_a_freeze_or_a_revoke(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let body = call("req-1", "trusted_internal_signed", json!({"pr": 482}));
    let allowed = expect_decision(app.authorize_body(&f.token, body.clone()).await, "allow").await;

    let freeze = format!("/v1/agents/{}/freeze", f.agent_id);
    expect_json(app.post(&f.admin, &freeze, json!({"reason": "INC-7"})).await, StatusCode::OK).await;
    // Each retry of the frozen agent is a fresh, recorded refusal naming the freeze.
    let mut refusals = Vec::new();
    for _ in 0..2 {
        let refused = expect_decision(app.authorize_body(&f.token, body.clone()).await, "deny").await;
        assert!(refused["reason"].as_str().unwrap().contains("INC-7"), "{refused}");
        refusals.push(refused["decision_id"].clone());
    }
    assert_ne!(refusals[0], refusals[1]);
    assert!(!refusals.contains(&allowed["decision_id"]));
    assert_eq!(decisions_of(&app, &f.agent_id).await, 3);

    // Unfrozen, the retry of the call allowed before the freeze is that call's decision.
    let unfreeze = format!("/v1/agents/{}/unfreeze", f.agent_id);
    expect_json(app.post(&f.admin, &unfreeze, json!({})).await, StatusCode::OK).await;
    let replayed = expect_decision(app.authorize_body(&f.token, body.clone()).await, "allow").await;
    assert_eq!(replayed["decision_id"], allowed["decision_id"]);

    let revoke = format!("/v1/agents/{}/revoke", f.agent_id);
    expect_json(app.post(&f.admin, &revoke, json!({})).await, StatusCode::OK).await;
    expect_error(app.authorize_body(&f.token, body).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(decisions_of(&app, &f.agent_id).await, 3);
    app.verify_chain("acme").await;
});

store_test!(async fn a_retry_of_a_call_that_met_an_approval_names_that_approval(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    // The default pack sends a semi-trusted write to people.
    let asked = call("req-1", "semi_trusted_customer", json!({"pr": 482}));
    let first = expect_decision(app.authorize_body(&f.token, asked.clone()).await, "require_approval").await;
    let id = first["approval"]["id"].as_str().unwrap().to_owned();
    // The first answer was lost: the retry still says which approval to wait for.
    let retry = expect_decision(app.authorize_body(&f.token, asked.clone()).await, "require_approval").await;
    assert_eq!(retry, first);

    let responder = app.create_key(&f.admin, "responder").await;
    expect_json(
        app.post(&responder, &format!("/v1/approvals/{id}/approve"), json!({})).await,
        StatusCode::OK,
    )
    .await;
    // Retried after the approval: the same decision, with the approval as it stands now.
    let retry = expect_decision(app.authorize_body(&f.token, asked).await, "require_approval").await;
    assert_eq!(retry["decision_id"], first["decision_id"]);
    assert_eq!((&retry["approval"]["id"], &retry["approval"]["status"]), (&json!(id), &json!("approved")));

    // The call that used it, retried, names it as used.
    let using = call("req-2", "semi_trusted_customer", json!({"pr": 482}));
    let allowed = expect_decision(app.authorize_body(&f.token, using.clone()).await, "allow").await;
    assert_eq!(allowed["approval"]["status"], "consumed");
    let retry = expect_decision(app.authorize_body(&f.token, using).await, "allow").await;
    assert_eq!(retry, allowed);
    assert_eq!(decisions_of(&app, &f.agent_id).await, 2);
});
