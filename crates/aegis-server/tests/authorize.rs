//! `POST /v1/authorize`: decisions, server facts, trust, lifecycle, tenant policies, errors.

#[macro_use]
mod common;

use aegis_core::canonical::ActionRef;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

store_test!(async fn default_pack_decides_by_registration_and_trust(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;

    // Unregistered tool: fail closed, even for a read from a trusted source.
    let body = expect_decision(
        app.authorize(
            &f.token,
            "jira",
            "get_issue",
            "trusted_internal_signed",
            false,
        )
        .await,
        "deny",
    )
    .await;
    assert!(
        body["reason"].as_str().unwrap().contains("not registered"),
        "{body}"
    );
    // Registered tool, unregistered action: also denied.
    expect_decision(
        app.authorize(
            &f.token,
            "github",
            "delete_repo",
            "trusted_internal_signed",
            false,
        )
        .await,
        "deny",
    )
    .await;

    // Reads are allowed, whatever the source.
    let read = expect_decision(
        app.authorize(&f.token, "github", "get_file", "untrusted_external", false)
            .await,
        "allow",
    )
    .await;
    assert_eq!(read["matched_policies"], json!(["aegis-allow-reads"]));

    // Writes: trusted → allow, semi-trusted → approval, untrusted/malicious/unknown → deny.
    let allowed = expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "trusted_internal_signed",
            true,
        )
        .await,
        "allow",
    )
    .await;
    assert_eq!(
        allowed["matched_policies"],
        json!(["aegis-allow-registered-writes"])
    );
    expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "trusted_internal_unsigned",
            true,
        )
        .await,
        "allow",
    )
    .await;
    let approval = expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "semi_trusted_customer",
            true,
        )
        .await,
        "require_approval",
    )
    .await;
    assert_eq!(
        approval["matched_policies"],
        json!(["aegis-approve-semi-trusted-writes"])
    );
    for trust in ["untrusted_external", "malicious_suspected", "unknown"] {
        let denied = expect_decision(
            app.authorize(&f.token, "github", "merge_pull_request", trust, true)
                .await,
            "deny",
        )
        .await;
        assert_eq!(
            denied["matched_policies"],
            json!(["aegis-deny-untrusted-writes"]),
            "{trust}"
        );
    }
    // Absent context: source trust is `unknown`, so a write is denied.
    let no_context = expect_decision(
        app.authorize_body(
            &f.token,
            json!({"tool_call": {"tool": "github", "action": "merge_pull_request"}}),
        )
        .await,
        "deny",
    )
    .await;
    assert_eq!(
        no_context["matched_policies"],
        json!(["aegis-deny-untrusted-writes"])
    );
});

store_test!(async fn response_has_the_documented_shape(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let body = app
        .decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await;
    assert!(body["decision_id"].as_str().unwrap().starts_with("dec_"));
    let score = body["risk_score"].as_u64().unwrap();
    assert!(score <= 100);
    assert!(!body["reason"].as_str().unwrap().is_empty());
    assert!(body["matched_policies"].is_array());
    assert_eq!(body["action_hash"].as_str().unwrap().len(), 64);
    let receipt = &body["receipt"];
    assert!(receipt["id"].as_str().unwrap().starts_with("rcpt_"));
    assert_eq!(receipt["hash"].as_str().unwrap().len(), 64);
    assert_eq!(receipt["prev_hash"], "");
    assert_eq!(receipt["seq"], 1);
});

store_test!(async fn registered_facts_override_the_client_claim(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;

    // A registered write claimed as read-only is still a write.
    let lied = expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "untrusted_external",
            false,
        )
        .await,
        "deny",
    )
    .await;
    assert_eq!(
        lied["matched_policies"],
        json!(["aegis-deny-untrusted-writes"])
    );
    expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "semi_trusted_customer",
            false,
        )
        .await,
        "require_approval",
    )
    .await;
    // The recorded facts are the server's: a write of high risk.
    let record = expect_json(
        app.get(
            &f.admin,
            &format!("/v1/decisions/{}", lied["decision_id"].as_str().unwrap()),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["mutates_state"], true);
    assert_eq!(record["risk"], "high");

    // The client may tighten: a registered read claimed as a write is treated as a write.
    let tightened = expect_decision(
        app.authorize(&f.token, "github", "get_file", "untrusted_external", true)
            .await,
        "deny",
    )
    .await;
    let record = expect_json(
        app.get(
            &f.admin,
            &format!(
                "/v1/decisions/{}",
                tightened["decision_id"].as_str().unwrap()
            ),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["mutates_state"], true);
});

store_test!(async fn root_trust_level_only_tightens_source_trust(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let call = |source: &str, root: &str| {
        json!({
            "tool_call": {"tool": "github", "action": "merge_pull_request", "mutates_state": true},
            "context": {"source_trust": source},
            "trace": {"run_id": "run-1", "trace_id": "trace-1", "root_trust_level": root},
        })
    };

    // Trusted hop inside a run rooted in untrusted content: denied.
    let tightened = expect_decision(
        app.authorize_body(
            &f.token,
            call("trusted_internal_signed", "untrusted_external"),
        )
        .await,
        "deny",
    )
    .await;
    assert_eq!(
        tightened["matched_policies"],
        json!(["aegis-deny-untrusted-writes"])
    );
    let record = expect_json(
        app.get(
            &f.admin,
            &format!(
                "/v1/decisions/{}",
                tightened["decision_id"].as_str().unwrap()
            ),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["source_trust"], "untrusted_external");
    assert_eq!(record["run_id"], "run-1");
    assert_eq!(record["trace_id"], "trace-1");

    // A trusted root cannot loosen an untrusted hop.
    expect_decision(
        app.authorize_body(
            &f.token,
            call("untrusted_external", "trusted_internal_signed"),
        )
        .await,
        "deny",
    )
    .await;
    // Semi-trusted root over a trusted hop: approval, not allow.
    expect_decision(
        app.authorize_body(
            &f.token,
            call("trusted_internal_signed", "semi_trusted_customer"),
        )
        .await,
        "require_approval",
    )
    .await;
    // Both trusted: allowed (the trace itself does not deny).
    expect_decision(
        app.authorize_body(
            &f.token,
            call("trusted_internal_signed", "trusted_internal_unsigned"),
        )
        .await,
        "allow",
    )
    .await;
});

store_test!(async fn sdk_shaped_body_is_accepted_and_identity_comes_from_the_token(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let body = expect_decision(
        app.authorize_body(
            &f.token,
            json!({
                "request_id": "req-42",
                "agent": {"id": "agt_someone_else", "name": "impostor", "tenant_id": "other"},
                "tool_call": {
                    "tool": "github",
                    "action": "merge_pull_request",
                    "resource": "payments-service#482",
                    "parameters": {"base_branch": "main", "pr": 482},
                    "mutates_state": true
                },
                "context": {"source_trust": "trusted_internal_signed"},
                "trace": {"run_id": "run-9", "trace_id": "t-9", "parent_run_id": "run-8"}
            }),
        )
        .await,
        "allow",
    )
    .await;
    let record = expect_json(
        app.get(
            &f.admin,
            &format!("/v1/decisions/{}", body["decision_id"].as_str().unwrap()),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["agent_id"], f.agent_id.as_str());
    assert_eq!(record["request_id"], "req-42");
    assert_eq!(record["resource"], "payments-service#482");
    assert_eq!(record["parent_run_id"], "run-8");
});

store_test!(async fn action_hash_is_the_canonical_hash_of_the_call_as_sent(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;

    let parameters = json!({"pr": 482, "base_branch": "main", "labels": ["a", "b"], "x": 1.5});
    let full = expect_json(
        app.authorize_body(
            &f.token,
            json!({
                "tool_call": {
                    "tool": "github",
                    "action": "merge_pull_request",
                    "resource": "payments-service#482",
                    "parameters": parameters,
                    "mutates_state": true
                },
                "context": {"source_trust": "trusted_internal_signed"}
            }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let expected = ActionRef {
        tool: "github",
        action: "merge_pull_request",
        resource: Some("payments-service#482"),
        mutates_state: true,
        parameters: Some(&parameters),
    }
    .hash()
    .unwrap();
    assert_eq!(full["action_hash"], expected.as_str());

    // As sent: a write claimed `false` hashes with `false`, whatever the server decides.
    let sparse = expect_json(
        app.authorize_body(
            &f.token,
            json!({"tool_call": {"tool": "github", "action": "merge_pull_request"}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let expected_sparse = ActionRef {
        tool: "github",
        action: "merge_pull_request",
        resource: None,
        mutates_state: false,
        parameters: None,
    }
    .hash()
    .unwrap();
    assert_eq!(sparse["action_hash"], expected_sparse.as_str());
    assert_ne!(expected, expected_sparse);

    // The decision record and the receipt carry the same hash.
    let decision_id = full["decision_id"].as_str().unwrap();
    let record = expect_json(
        app.get(&f.admin, &format!("/v1/decisions/{decision_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["action_hash"], expected.as_str());
    let receipts = app.verify_chain("acme").await;
    let receipt = receipts
        .iter()
        .find(|r| r.body.decision_id == decision_id)
        .expect("receipt of the decision");
    assert_eq!(receipt.body.action_hash, expected);
});

store_test!(async fn frozen_agent_gets_a_recorded_deny_naming_the_freeze(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let reason = "deny storm under investigation (INC-7)";
    expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": reason}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Even a trusted read is denied, with the freeze reason.
    let denied = expect_decision(
        app.authorize(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "deny",
    )
    .await;
    assert!(
        denied["reason"].as_str().unwrap().contains(reason),
        "{denied}"
    );
    assert_eq!(denied["matched_policies"], json!(["aegis-agent-frozen"]));
    assert_eq!(denied["receipt"]["seq"], 1);

    // Recorded, and found by the runbook's query.
    let listed = expect_json(
        app.get(
            &f.admin,
            &format!("/v1/decisions?agent_id={}&decision=deny", f.agent_id),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&listed, "decision_id"),
        vec![denied["decision_id"].as_str().unwrap().to_owned()]
    );
    assert!(
        listed[0]["reason"].as_str().unwrap().contains(reason),
        "{listed}"
    );

    // Unfrozen: the same call is allowed again.
    let agent = expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/unfreeze", f.agent_id),
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["status"], "active");
    expect_decision(
        app.authorize(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
});

store_test!(async fn rotation_retires_the_old_token_at_once(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    // Warm the token cache first, so rotation must evict it.
    app.decide(
        &f.token,
        "github",
        "get_file",
        "trusted_internal_signed",
        false,
    )
    .await;

    let rotated = expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/rotate-token", f.agent_id),
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let new_token = rotated["agent_token"].as_str().unwrap();
    assert_ne!(new_token, f.token);
    assert_eq!(rotated["agent_id"], f.agent_id.as_str());

    expect_error(
        app.authorize(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let body = expect_decision(
        app.authorize(
            new_token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
    let record = expect_json(
        app.get(
            &f.admin,
            &format!("/v1/decisions/{}", body["decision_id"].as_str().unwrap()),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(record["agent_id"], f.agent_id.as_str());

    // Rotating again retires the second token too.
    let again = expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/rotate-token", f.agent_id),
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_error(
        app.authorize(
            new_token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_decision(
        app.authorize(
            again["agent_token"].as_str().unwrap(),
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
});

store_test!(async fn revocation_is_terminal(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    app.decide(
        &f.token,
        "github",
        "get_file",
        "trusted_internal_signed",
        false,
    )
    .await;

    let revoked = expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/revoke", f.agent_id),
            json!({"reason": "compromised"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["status_reason"], "compromised");

    expect_error(
        app.authorize(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let path = |op: &str| format!("/v1/agents/{}/{op}", f.agent_id);
    expect_error(
        app.post(&f.admin, &path("unfreeze"), json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    expect_error(
        app.post(&f.admin, &path("freeze"), json!({"reason": "x"}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    expect_error(
        app.post(&f.admin, &path("rotate-token"), json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let agent = expect_json(
        app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["status"], "revoked");
    // Only the one decision from before the revocation was recorded.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM decisions WHERE agent_id = ?1",
            &[Sql::from(&f.agent_id)]
        )
        .await,
        1
    );
});

store_test!(async fn tenant_policy_changes_later_decisions_at_once(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let merge = |target: &str| {
        json!({
            "tool_call": {"tool": "github", "action": "merge_pull_request", "resource": target, "mutates_state": true},
            "context": {"source_trust": "trusted_internal_signed"},
        })
    };
    expect_decision(
        app.authorize_body(&f.token, merge("prod-payments")).await,
        "allow",
    )
    .await;

    expect_json(
        app.post(
            &f.admin,
            "/v1/policies",
            json!({
                "id": "no-prod-merges",
                "text": "@reason(\"no merges to production targets\")\nforbid (principal, action, resource in Aegis::Tool::\"github\")\nwhen { context has target && context.target like \"prod*\" };"
            }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    let denied = expect_decision(
        app.authorize_body(&f.token, merge("prod-payments")).await,
        "deny",
    )
    .await;
    assert_eq!(denied["matched_policies"], json!(["no-prod-merges"]));
    assert_eq!(denied["reason"], "no merges to production targets");
    // Other targets are untouched.
    expect_decision(
        app.authorize_body(&f.token, merge("staging-payments"))
            .await,
        "allow",
    )
    .await;

    // Replacing the policy takes effect at once too.
    expect_json(
        app.put(
            &f.admin,
            "/v1/policies/no-prod-merges",
            json!({"text": "forbid (principal, action, resource) when { context has target && context.target like \"staging*\" };"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_decision(
        app.authorize_body(&f.token, merge("prod-payments")).await,
        "allow",
    )
    .await;
    expect_decision(
        app.authorize_body(&f.token, merge("staging-payments"))
            .await,
        "deny",
    )
    .await;

    let response = app.delete(&f.admin, "/v1/policies/no-prod-merges").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_decision(
        app.authorize_body(&f.token, merge("staging-payments"))
            .await,
        "allow",
    )
    .await;
});

store_test!(async fn tenant_permit_can_open_an_unregistered_tool(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_decision(
        app.authorize(
            &f.token,
            "slack",
            "post_message",
            "trusted_internal_signed",
            false,
        )
        .await,
        "deny",
    )
    .await;
    expect_json(
        app.put(
            &f.admin,
            "/v1/policies/allow-slack",
            json!({"text": "permit (principal, action, resource in Aegis::Tool::\"slack\");"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let allowed = expect_decision(
        app.authorize(
            &f.token,
            "slack",
            "post_message",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
    assert_eq!(allowed["matched_policies"], json!(["allow-slack"]));
    // The default forbids still hold beneath tenant permits.
    expect_decision(
        app.authorize(
            &f.token,
            "slack",
            "post_message",
            "untrusted_external",
            true,
        )
        .await,
        "deny",
    )
    .await;
});

store_test!(async fn invalid_requests_answer_clear_errors_and_record_nothing(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let raw = |body: &'static str| {
        app.request(reqwest::Method::POST, "/v1/authorize", &f.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let error = expect_error(
        raw("{\"tool_call\": {\"tool\": ").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert!(error.get("field").is_none());
    expect_error(
        raw("{\"tool_call\": {\"tool\": \"github\", \"action\": \"get_file\"}} trailing")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;

    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "tool_call"),
        (
            json!({"tool_call": {"action": "get_file"}}),
            "tool_call.tool",
        ),
        (json!({"tool_call": {"tool": "github"}}), "tool_call.action"),
        (
            json!({"tool_call": {"tool": "", "action": "get_file"}}),
            "tool_call.tool",
        ),
        (
            json!({"tool_call": {"tool": "  ", "action": "get_file"}}),
            "tool_call.tool",
        ),
        (
            json!({"tool_call": {"tool": 5, "action": "get_file"}}),
            "tool_call.tool",
        ),
        (
            json!({"tool_call": {"tool": "github", "action": "get_file", "mutates_state": "yes"}}),
            "tool_call.mutates_state",
        ),
        (
            json!({"tool_call": {"tool": "github", "action": "get_file", "parameters": [1, 2]}}),
            "tool_call.parameters",
        ),
        (
            json!({"tool_call": {"tool": "github", "action": "get_file"}, "context": {"source_trust": "very_trusted"}}),
            "context.source_trust",
        ),
        (
            json!({"tool_call": {"tool": "github", "action": "get_file"}, "trace": {"root_trust_level": 3}}),
            "trace.root_trust_level",
        ),
        (
            json!({"tool_call": {"tool": "x".repeat(129), "action": "get_file"}}),
            "tool_call.tool",
        ),
    ];
    for (body, field) in cases {
        let error = expect_error(
            app.authorize_body(&f.token, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "body {body}: {error}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM decisions", &[]).await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM receipts", &[]).await, 0);
});

store_test!(async fn bodies_over_one_mebibyte_answer_413(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let filler = "x".repeat(1 << 20);
    let body = json!({
        "tool_call": {"tool": "github", "action": "get_file", "parameters": {"blob": filler}},
        "context": {"source_trust": "trusted_internal_signed"},
    });
    expect_error(
        app.authorize_body(&f.token, body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // Just under the limit is fine.
    let filler = "x".repeat((1 << 20) - 300);
    let body = json!({
        "tool_call": {"tool": "github", "action": "get_file", "parameters": {"blob": filler}},
        "context": {"source_trust": "trusted_internal_signed"},
    });
    expect_decision(app.authorize_body(&f.token, body).await, "allow").await;
    // Management routes share the limit.
    let big_reason = "r".repeat(1 << 20);
    expect_error(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": big_reason}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM decisions", &[]).await, 1);
});

store_test!(async fn authorize_needs_a_valid_agent_token(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let body = json!({"tool_call": {"tool": "github", "action": "get_file"}});

    expect_error(
        app.authorize_body("", body.clone()).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        app.authorize_body("aat_0000000000000000", body.clone())
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // Wrong scheme.
    let response = app
        .request(reqwest::Method::POST, "/v1/authorize", "")
        .header("authorization", format!("Basic {}", f.token))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Operator keys of every role are refused on the action plane.
    let viewer = app.create_key(&f.admin, "viewer").await;
    for key in [&f.admin, &viewer] {
        expect_error(
            app.authorize_body(key, body.clone()).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM decisions", &[]).await, 0);
});

// The audit's bypass: `tighten` took the later of two levels in declaration order, where
// `unknown` came after `malicious_suspected`, so a suspected-malicious root over a hop
// without a claim became `unknown` and a tenant's forbid on suspected-malicious content did
// not apply (allow instead of deny, a medium alert instead of a high one).
store_test!(async fn a_hop_without_a_claim_cannot_loosen_a_suspected_malicious_root(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(
            &f.admin,
            "/v1/policies/no-malicious",
            json!({"text": "@reason(\"suspected-malicious content\")\nforbid (principal, action, resource)\nwhen { context.source_trust == \"malicious_suspected\" };"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let read = |context: Value, root: &str| {
        json!({
            "tool_call": {"tool": "github", "action": "get_file"},
            "context": context,
            "trace": {"run_id": "run-1", "root_trust_level": root},
        })
    };

    for context in [json!({}), json!({"source_trust": "unknown"})] {
        let denied = expect_decision(
            app.authorize_body(&f.token, read(context.clone(), "malicious_suspected")).await,
            "deny",
        )
        .await;
        assert_eq!(denied["matched_policies"], json!(["no-malicious"]), "{context}");
        assert_eq!(denied["reason"], "suspected-malicious content");
        // A low-risk read scores 10, plus 35 for suspected-malicious content (not 15 for unknown).
        assert_eq!(denied["risk_score"], 45);
        assert_eq!(recorded_source_trust(&app, &f.admin, &denied).await, "malicious_suspected");
    }

    // A known-untrusted root is not hidden by a missing claim either; a missing claim does
    // take away a trusted root's trust.
    let untrusted = expect_decision(
        app.authorize_body(&f.token, read(json!({}), "untrusted_external")).await,
        "allow",
    )
    .await;
    assert_eq!(recorded_source_trust(&app, &f.admin, &untrusted).await, "untrusted_external");
    let trusted_root = expect_decision(
        app.authorize_body(&f.token, read(json!({}), "trusted_internal_signed")).await,
        "allow",
    )
    .await;
    assert_eq!(recorded_source_trust(&app, &f.admin, &trusted_root).await, "unknown");
});

/// The source trust recorded with a decision.
async fn recorded_source_trust(app: &TestApp, admin: &str, decision: &Value) -> String {
    let id = decision["decision_id"].as_str().unwrap();
    let record = expect_json(
        app.get(admin, &format!("/v1/decisions/{id}")).await,
        StatusCode::OK,
    )
    .await;
    record["source_trust"].as_str().unwrap().to_owned()
}

// `parameters` is canonicalised (RFC 8785) by recursion; its depth is bounded by the JSON
// parser's limit of 127 nested arrays or objects, which the server's workers handle.
store_test!(async fn parameters_nested_to_the_parser_limit_hash_and_deeper_are_refused(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    // The body, `tool_call` and `parameters` are three levels; `arrays` more inside.
    let body = |arrays: usize| {
        let nested = format!("{}1{}", "[".repeat(arrays), "]".repeat(arrays));
        let text = format!(
            "{{\"tool_call\": {{\"tool\": \"github\", \"action\": \"get_file\", \"parameters\": {{\"a\": {nested}}}}}, \
             \"context\": {{\"source_trust\": \"trusted_internal_signed\"}}}}"
        );
        (text, format!("{{\"a\": {nested}}}"))
    };

    let (deepest, parameters) = body(124);
    let allowed = expect_decision(
        app.request(reqwest::Method::POST, "/v1/authorize", &f.token)
            .header("content-type", "application/json")
            .body(deepest)
            .send()
            .await
            .expect("POST"),
        "allow",
    )
    .await;
    let parameters: Value = serde_json::from_str(&parameters).unwrap();
    let expected = ActionRef {
        tool: "github",
        action: "get_file",
        resource: None,
        mutates_state: false,
        parameters: Some(&parameters),
    }
    .hash()
    .unwrap();
    assert_eq!(allowed["action_hash"], expected.as_str());

    let (too_deep, _) = body(125);
    let error = expect_error(
        app.request(reqwest::Method::POST, "/v1/authorize", &f.token)
            .header("content-type", "application/json")
            .body(too_deep)
            .send()
            .await
            .expect("POST"),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("recursion limit"), "{error}");
});
