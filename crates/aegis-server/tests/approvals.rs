//! Approvals: `require_approval` → a person approves → the exact call passes once.
//! Every test runs on SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A state-changing call that the default pack sends to people (semi-trusted source).
fn merge(pr: u32) -> Value {
    json!({
        "tool_call": {"tool": "github", "action": "merge_pull_request", "resource": "acme/api",
                      "parameters": {"pr": pr, "note": "<script>alert(1)</script>"}},
        "context": {"source_trust": "semi_trusted_customer"},
    })
}

fn naming(mut call: Value, approval_id: &str) -> Value {
    call["approval_id"] = json!(approval_id);
    call
}

/// A new operator key; returns `(key id, secret)`.
async fn key(app: &TestApp, admin: &str, role: &str, name: &str) -> (String, String) {
    let body = expect_json(
        app.post(admin, "/v1/keys", json!({"role": role, "name": name}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// Asks for the call and returns the pending approval's id.
async fn request(app: &TestApp, token: &str, call: Value) -> String {
    let body = expect_decision(app.authorize_body(token, call).await, "require_approval").await;
    let approval = &body["approval"];
    assert_eq!(approval["status"], "pending", "{body}");
    assert_eq!(approval["action_hash"], body["action_hash"], "{body}");
    assert!(approval["expires_at"].is_string(), "{body}");
    approval["id"].as_str().unwrap().to_owned()
}

async fn approve(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.post(key, &format!("/v1/approvals/{id}/approve"), json!({}))
        .await
}

async fn approval(app: &TestApp, credential: &str, id: &str) -> Value {
    expect_json(
        app.get(credential, &format!("/v1/approvals/{id}")).await,
        StatusCode::OK,
    )
    .await
}

async fn event_kinds(app: &TestApp, approval_id: &str) -> Vec<String> {
    app.rows(
        "SELECT kind FROM events WHERE subject_id = ?1 ORDER BY seq",
        &[approval_id.into()],
    )
    .await
    .into_iter()
    .map(|row| row[0].text().to_owned())
    .collect()
}

store_test!(async fn the_whole_flow_ends_in_one_allow_whose_receipt_names_the_approver(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (responder_id, responder) = key(&app, &f.admin, "responder", "Dana on call").await;
    let viewer = app.create_key(&f.admin, "viewer").await;

    let id = request(&app, &f.token, merge(7)).await;
    // Asking again while it is pending gives the same approval, not a new one.
    assert_eq!(request(&app, &f.token, merge(7)).await, id);

    // People see the whole call; the agent sees its own approval.
    let listed = expect_json(
        app.get(&viewer, "/v1/approvals?status=pending").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed, "id"), vec![id.clone()]);
    let shown = &listed[0];
    assert_eq!(shown["agent_id"], f.agent_id.as_str());
    assert_eq!(
        (&shown["tool"], &shown["action"], &shown["resource"]),
        (&json!("github"), &json!("merge_pull_request"), &json!("acme/api"))
    );
    assert_eq!(shown["parameters"], json!({"pr": 7, "note": "<script>alert(1)</script>"}));
    assert_eq!(shown["risk"], "high");
    assert!(shown["reason"].is_string() && shown["decision_id"].is_string());
    assert_eq!(approval(&app, &f.token, &id).await["status"], "pending");

    let approved = expect_json(
        app.post(
            &responder,
            &format!("/v1/approvals/{id}/approve"),
            json!({"reason": "reviewed the diff"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["approvals"][0]["key_id"], responder_id.as_str());
    assert_eq!(approved["approvals"][0]["key_name"], "Dana on call");
    assert_eq!(approved["approvals"][0]["reason"], "reviewed the diff");

    // The identical call, without naming the approval, now passes, once.
    let allowed = expect_decision(app.authorize_body(&f.token, merge(7)).await, "allow").await;
    assert_eq!(allowed["approval"]["id"], id.as_str());
    assert_eq!(allowed["approval"]["status"], "consumed");
    assert!(allowed["reason"].as_str().unwrap().contains("Dana on call"), "{allowed}");
    let used = approval(&app, &viewer, &id).await;
    assert_eq!(used["status"], "consumed");
    assert_eq!(used["consumed_by_decision_id"], allowed["decision_id"]);
    // Every status filter answers, whether or not its condition reads the time.
    for (status, expected) in [
        ("consumed", vec![id.clone()]),
        ("rejected", vec![]),
        ("approved", vec![]),
        ("expired", vec![]),
    ] {
        let listed = expect_json(
            app.get(&viewer, &format!("/v1/approvals?status={status}")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(ids(&listed, "id"), expected, "status={status}");
    }

    // Its receipt names the approval and its approver, and the chain verifies.
    let receipts = app.verify_chain("acme").await;
    let receipt = receipts
        .iter()
        .find(|r| r.body.decision_id == allowed["decision_id"].as_str().unwrap())
        .expect("the allow's receipt");
    assert_eq!(receipt.body.decision, "allow");
    let named = receipt.body.approval.as_ref().expect("the receipt names the approval");
    assert_eq!((named.id.as_str(), named.approved_by.clone()), (id.as_str(), vec![responder_id.clone()]));
    assert!(receipts.iter().filter(|r| r.body.approval.is_some()).count() == 1);

    // The evidence graph links the asking decision, the approval, its approver and the
    // decision that used it.
    let graph = expect_json(
        app.get(&viewer, &format!("/v1/graph/agent/{}", f.agent_id)).await,
        StatusCode::OK,
    )
    .await;
    let approval_node = format!("approval:{id}");
    let edge = |source: &str, target: &str, kind: &str| {
        graph["edges"].as_array().unwrap().iter().any(|e| {
            e["source"] == source && e["target"] == target && e["type"] == kind
        })
    };
    assert!(edge(&format!("decision:{}", shown["decision_id"].as_str().unwrap()), &approval_node, "requested"), "{graph}");
    assert!(edge(&approval_node, &format!("operator_key:{responder_id}"), "approved_by"), "{graph}");
    assert!(edge(&approval_node, &format!("decision:{}", allowed["decision_id"].as_str().unwrap()), "consumed_by"), "{graph}");

    // Used up: the same call asks people again, with a new approval.
    let again = request(&app, &f.token, merge(7)).await;
    assert_ne!(again, id);
    assert_eq!(
        event_kinds(&app, &id).await,
        vec!["approval.requested", "approval.approved", "approval.consumed"]
    );
});

store_test!(async fn the_approval_list_pages_with_the_cursor_header(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let mut requested = Vec::new();
    for pr in 1..=5 {
        requested.push(request(&app, &f.token, merge(pr)).await);
    }
    requested.reverse(); // newest first

    let pages = app.all_pages(&f.admin, "/v1/approvals?limit=2").await;
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages.iter().flat_map(|page| ids(page, "id")).collect();
    assert_eq!(seen, requested);
});

store_test!(async fn a_swapped_call_is_denied_and_leaves_the_approval_unused(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let id = request(&app, &f.token, merge(7)).await;
    expect_json(approve(&app, &responder, &id).await, StatusCode::OK).await;

    // Approved for PR 7, used for PR 8: denied, and the SOC hears of it.
    let swapped = expect_decision(
        app.authorize_body(&f.token, naming(merge(8), &id)).await,
        "deny",
    )
    .await;
    assert!(swapped["reason"].as_str().unwrap().contains("action hash mismatch"), "{swapped}");
    assert_eq!(swapped["matched_policies"], json!(["aegis-approval-mismatch"]));
    assert_eq!(approval(&app, &f.admin, &id).await["status"], "approved");
    let exact = naming(merge(7), &id);
    expect_decision(app.authorize_body(&f.token, exact.clone()).await, "allow").await;
    // Naming a used approval is denied too.
    let reused = expect_decision(app.authorize_body(&f.token, exact).await, "deny").await;
    assert!(reused["reason"].as_str().unwrap().contains("consumed"), "{reused}");
    assert_eq!(
        event_kinds(&app, &id).await,
        vec![
            "approval.requested",
            "approval.approved",
            "approval.mismatch",
            "approval.consumed",
            "approval.mismatch"
        ]
    );
});

store_test!(async fn of_32_concurrent_uses_exactly_one_is_allowed(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let id = request(&app, &f.token, merge(7)).await;
    expect_json(approve(&app, &responder, &id).await, StatusCode::OK).await;

    let calls = (0..32).map(|n| {
        // Half name the approval, half just repeat the call.
        let body = if n % 2 == 0 { naming(merge(7), &id) } else { merge(7) };
        app.authorize_body(&f.token, body)
    });
    let mut verdicts = Vec::new();
    for response in futures_util::future::join_all(calls).await {
        let body = expect_json(response, StatusCode::OK).await;
        verdicts.push(body["decision"].as_str().unwrap().to_owned());
    }
    let allowed = verdicts.iter().filter(|v| *v == "allow").count();
    assert_eq!(allowed, 1, "{verdicts:?}");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM approvals WHERE id = ?1 AND status = 'consumed'",
            &[id.as_str().into()]
        )
        .await,
        1
    );
    app.verify_chain("acme").await;
});

store_test!(async fn an_expired_approval_can_be_neither_approved_nor_used(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let pending = request(&app, &f.token, merge(1)).await;
    let approved = request(&app, &f.token, merge(2)).await;
    expect_json(approve(&app, &responder, &approved).await, StatusCode::OK).await;
    // Their time runs out (behind the API: the shortest TTL is a minute).
    let past = aegis_server::now_ms() - 1;
    for id in [&pending, &approved] {
        app.execute(
            "UPDATE approvals SET expires_at = ?1 WHERE id = ?2",
            &[past.into(), id.as_str().into()],
        )
        .await;
    }

    // Time alone expires them: no writer had to run.
    assert_eq!(approval(&app, &f.admin, &pending).await["status"], "expired");
    assert_eq!(approval(&app, &f.admin, &approved).await["status"], "expired");
    let listed = expect_json(
        app.get(&f.admin, "/v1/approvals?status=expired").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    expect_error(approve(&app, &responder, &pending).await, StatusCode::CONFLICT, "conflict").await;
    let used = expect_decision(
        app.authorize_body(&f.token, naming(merge(2), &approved)).await,
        "deny",
    )
    .await;
    assert!(used["reason"].as_str().unwrap().contains("expired"), "{used}");
    // Without naming it, the call just asks again.
    assert_ne!(request(&app, &f.token, merge(2)).await, approved);

    // The sweep stores the expiry and tells the log, once.
    assert_eq!(app.store.expire_approvals(aegis_server::now_ms(), 10).await.unwrap(), 2);
    assert_eq!(app.store.expire_approvals(aegis_server::now_ms(), 10).await.unwrap(), 0);
    assert_eq!(
        event_kinds(&app, &pending).await,
        vec!["approval.requested", "approval.expired"]
    );
});

store_test!(async fn two_person_rule_needs_two_different_keys(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (first_id, first) = key(&app, &f.admin, "responder", "first").await;
    let (second_id, second) = key(&app, &f.admin, "admin", "second").await;
    let settings = json!({"ttl_secs": 600, "approvals_required": 2});
    assert_eq!(
        expect_json(app.put(&f.admin, "/v1/tenants/approvals", settings.clone()).await, StatusCode::OK).await,
        settings
    );
    assert_eq!(
        expect_json(app.get(&first, "/v1/tenants/approvals").await, StatusCode::OK).await,
        settings
    );

    let id = request(&app, &f.token, merge(7)).await;
    let once = expect_json(approve(&app, &first, &id).await, StatusCode::OK).await;
    assert_eq!((once["status"].as_str(), once["approvals_required"].as_u64()), (Some("pending"), Some(2)));
    // The same key twice counts once.
    expect_error(approve(&app, &first, &id).await, StatusCode::CONFLICT, "conflict").await;
    expect_decision(app.authorize_body(&f.token, merge(7)).await, "require_approval").await;
    let twice = expect_json(approve(&app, &second, &id).await, StatusCode::OK).await;
    assert_eq!(twice["status"], "approved");
    expect_error(approve(&app, &second, &id).await, StatusCode::CONFLICT, "conflict").await;

    let allowed = expect_decision(app.authorize_body(&f.token, merge(7)).await, "allow").await;
    let receipts = app.verify_chain("acme").await;
    let receipt = receipts
        .iter()
        .find(|r| r.body.decision_id == allowed["decision_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(receipt.body.approval.as_ref().unwrap().approved_by, vec![first_id, second_id]);

    for (body, field) in [
        (json!({"ttl_secs": 10, "approvals_required": 1}), "ttl_secs"),
        (json!({"ttl_secs": 900, "approvals_required": 3}), "approvals_required"),
    ] {
        let error = expect_error(
            app.put(&f.admin, "/v1/tenants/approvals", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field);
    }
    expect_error(
        app.put(&first, "/v1/tenants/approvals", settings).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
});

store_test!(async fn only_operators_with_the_right_role_decide_and_only_the_owner_agent_reads(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let viewer = app.create_key(&f.admin, "viewer").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let (_, other_agent) = app.create_agent(&f.admin, "other-bot").await;
    let other = app.tenant_with_agent("globex").await;
    let id = request(&app, &f.token, merge(7)).await;

    expect_error(approve(&app, &viewer, &id).await, StatusCode::FORBIDDEN, "forbidden").await;
    // An agent can never approve, not even its own call.
    expect_error(approve(&app, &f.token, &id).await, StatusCode::FORBIDDEN, "forbidden").await;
    expect_error(
        app.post(&f.token, &format!("/v1/approvals/{id}/reject"), json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Agents read only their own approval; lists are for operators.
    expect_error(app.get(&other_agent, &format!("/v1/approvals/{id}")).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(app.get(&f.token, "/v1/approvals").await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Another tenant sees nothing and decides nothing.
    expect_error(app.get(&other.admin, &format!("/v1/approvals/{id}")).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(approve(&app, &other.admin, &id).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        expect_json(app.get(&other.admin, "/v1/approvals").await, StatusCode::OK).await,
        json!([])
    );
    // Another agent cannot use it either: denied as if it did not exist.
    let stolen = expect_decision(app.authorize_body(&other_agent, naming(merge(7), &id)).await, "deny").await;
    assert!(stolen["reason"].as_str().unwrap().contains("no such approval"), "{stolen}");
    assert!(stolen.get("approval").is_none(), "{stolen}");

    let rejected = expect_json(
        app.post(&responder, &format!("/v1/approvals/{id}/reject"), json!({"reason": "not today"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["rejected_by"]["key_name"], "on call");
    expect_error(approve(&app, &responder, &id).await, StatusCode::CONFLICT, "conflict").await;
    expect_decision(app.authorize_body(&f.token, naming(merge(7), &id)).await, "deny").await;

    // An id nobody issued is absent; a malformed one is a 422 (see
    // a_malformed_approval_id_or_wait_answers_422_naming_the_field).
    let unknown = "apr_0123456789abcdef0123456789abcdef";
    expect_error(app.get(&f.admin, &format!("/v1/approvals/{unknown}")).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(approve(&app, &responder, unknown).await, StatusCode::NOT_FOUND, "not_found").await;
});

store_test!(async fn a_malformed_approval_id_or_wait_answers_422_naming_the_field(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let id = request(&app, &f.token, merge(7)).await;
    let decisions = || async { expect_json(app.get(&f.admin, "/v1/decisions").await, StatusCode::OK).await };
    let recorded = decisions().await;

    // Any value that is not an id the gateway issues, whatever its JSON type.
    for approval_id in [
        json!("not-an-approval"),
        json!(""),
        json!(id.to_uppercase()),
        json!(format!("{id}0")),
        json!(42),
        json!([id.as_str()]),
        json!({"id": id.as_str()}),
    ] {
        let mut call = merge(7);
        call["approval_id"] = approval_id.clone();
        let error = expect_error(
            app.authorize_body(&f.token, call).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], "approval_id", "approval_id {approval_id}: {error}");
    }
    // Refused before anything is decided or recorded.
    assert_eq!(decisions().await, recorded);

    // The long-poll, for the agent and for an operator alike.
    for credential in [&f.token, &f.admin] {
        for wait in ["61", "-1", "+5", "1.5", "abc", "", "%205", "99999999999", "1&wait_secs=2"] {
            let error = expect_error(
                app.get(credential, &format!("/v1/approvals/{id}?wait_secs={wait}")).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
            )
            .await;
            assert_eq!(error["field"], "wait_secs", "wait_secs={wait}: {error}");
        }
    }
});

store_test!(async fn freeze_and_an_outright_deny_still_win_over_an_approval(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let id = request(&app, &f.token, merge(7)).await;
    expect_json(approve(&app, &responder, &id).await, StatusCode::OK).await;

    // The same call from untrusted content: the policy denies it outright.
    let mut untrusted = merge(7);
    untrusted["context"]["source_trust"] = json!("untrusted_external");
    expect_decision(app.authorize_body(&f.token, untrusted).await, "deny").await;
    expect_json(
        app.post(&f.admin, &format!("/v1/agents/{}/freeze", f.agent_id), json!({"reason": "investigating"})).await,
        StatusCode::OK,
    )
    .await;
    let frozen = expect_decision(app.authorize_body(&f.token, naming(merge(7), &id)).await, "deny").await;
    assert!(frozen["reason"].as_str().unwrap().contains("frozen"), "{frozen}");
    assert_eq!(approval(&app, &f.admin, &id).await["status"], "approved");
});

store_test!(async fn a_waiting_agent_hears_the_decision_within_100_ms(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (_, responder) = key(&app, &f.admin, "responder", "on call").await;
    let id = request(&app, &f.token, merge(7)).await;

    // Without a decision, the wait ends after `wait_secs` with the approval still pending.
    let started = Instant::now();
    let waited = expect_json(
        app.get(&f.token, &format!("/v1/approvals/{id}?wait_secs=1")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(waited["status"], "pending");
    assert!(started.elapsed() >= Duration::from_secs(1));

    let waiting = format!("/v1/approvals/{id}?wait_secs=30");
    let poll = {
        let request = app.get(&f.token, &waiting);
        async move {
            let response = request.await;
            (Instant::now(), expect_json(response, StatusCode::OK).await)
        }
    };
    let decide = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        expect_json(approve(&app, &responder, &id).await, StatusCode::OK).await;
        Instant::now()
    };
    let ((heard_at, heard), decided_at) = tokio::join!(poll, decide);
    assert_eq!(heard["status"], "approved");
    assert!(
        heard_at.saturating_duration_since(decided_at) < Duration::from_millis(100),
        "the waiting agent heard {:?} after the decision was answered",
        heard_at.saturating_duration_since(decided_at)
    );
});

store_test!(async fn the_slack_callback_does_not_exist_without_a_signing_secret(backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(reqwest::Method::POST, "/v1/callbacks/slack", "")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
});
