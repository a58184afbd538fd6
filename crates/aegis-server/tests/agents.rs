//! `/v1/agents`: registration, listing, lifecycle (freeze, unfreeze, revoke, rotate) and
//! the risk tier, including escalation after repeated denials.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

store_test!(async fn create_list_get_and_patch(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;

    let created = expect_json(
        app.post(&admin, "/v1/agents", json!({"name": "  deploy-bot  "}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("agt_"));
    assert_eq!(created["name"], "deploy-bot");
    assert_eq!(created["status"], "active");
    assert_eq!(created["risk_tier"], "low");
    let token = created["agent_token"].as_str().unwrap();
    assert!(token.starts_with("aat_") && token.len() > 40, "{token}");

    let medium = expect_json(
        app.post(
            &admin,
            "/v1/agents",
            json!({"name": "triage-bot", "risk_tier": "medium"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(medium["risk_tier"], "medium");

    // The token is stored only as its SHA-256.
    let hash = aegis_server::auth::hash_secret(token);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM agent_tokens WHERE agent_id = ?1 AND secret_hash = ?2",
            &[Sql::from(&id), Sql::Bytes(hash.to_vec())],
        )
        .await,
        1
    );

    // Listed newest first, as a bare array, without tokens.
    let list = expect_json(app.get(&admin, "/v1/agents").await, StatusCode::OK).await;
    assert_eq!(
        ids(&list, "id"),
        vec![medium["id"].as_str().unwrap().to_owned(), id.clone()]
    );
    assert!(list[0].get("agent_token").is_none());

    let got = expect_json(
        app.get(&admin, &format!("/v1/agents/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["name"], "deploy-bot");
    assert_eq!(got["status"], "active");
    assert!(got.get("agent_token").is_none());
    assert!(got["created_at"].as_str().unwrap().ends_with('Z'));

    let patched = expect_json(
        app.patch(
            &admin,
            &format!("/v1/agents/{id}"),
            json!({"risk_tier": "high"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["risk_tier"], "high");
    let got = expect_json(
        app.get(&admin, &format!("/v1/agents/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["risk_tier"], "high");
});

store_test!(async fn agents_list_pages_with_the_cursor_header(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_agent(&admin, &format!("bot-{i}")).await.0);
    }
    created.reverse(); // newest first

    let pages = app.all_pages(&admin, "/v1/agents?limit=2").await;
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages.iter().flat_map(|page| ids(page, "id")).collect();
    assert_eq!(seen, created);
});

store_test!(async fn freeze_accepts_curl_bodies_and_no_body(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let freeze = format!("/v1/agents/{}/freeze", f.agent_id);
    let unfreeze = format!("/v1/agents/{}/unfreeze", f.agent_id);

    // As `curl -d '{"reason": ...}'` sends it: a form content type.
    let response = app
        .request(reqwest::Method::POST, &freeze, &f.admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"reason": "deny storm on payments"}"#)
        .send()
        .await
        .unwrap();
    let frozen = expect_json(response, StatusCode::OK).await;
    assert_eq!(frozen["status"], "frozen");
    assert_eq!(frozen["status_reason"], "deny storm on payments");
    let got = expect_json(
        app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["status"], "frozen");
    assert_eq!(got["status_reason"], "deny storm on payments");

    let unfrozen = expect_json(
        app.request(reqwest::Method::POST, &unfreeze, &f.admin)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(unfrozen["status"], "active");
    assert!(unfrozen["status_reason"].is_null());

    // No body and no content type at all: frozen with a default reason naming the operator.
    let frozen = expect_json(
        app.request(reqwest::Method::POST, &freeze, &f.admin)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(frozen["status"], "frozen");
    assert!(
        frozen["status_reason"]
            .as_str()
            .unwrap()
            .contains("frozen by operator"),
        "{frozen}"
    );
    let denied = app
        .decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await;
    assert_eq!(denied["decision"], "deny");

    // Freezing a frozen agent is idempotent.
    expect_json(app.post(&f.admin, &freeze, json!({})).await, StatusCode::OK).await;
    // Each transition is an event.
    let kinds = event_kinds(&app, &f.agent_id).await;
    assert_eq!(
        kinds,
        vec![
            "agent.created",
            "agent.frozen",
            "agent.unfrozen",
            "agent.frozen",
            "decision"
        ]
    );
});

async fn event_kinds(app: &TestApp, agent_id: &str) -> Vec<String> {
    app.rows(
        "SELECT kind FROM events WHERE agent_id = ?1 ORDER BY seq",
        &[agent_id.into()],
    )
    .await
    .into_iter()
    .map(|row| row[0].text().to_owned())
    .collect()
}

store_test!(async fn revoke_and_rotate_happy_paths_record_events(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let rotated = expect_json(
        app.request(
            reqwest::Method::POST,
            &format!("/v1/agents/{}/rotate-token", f.agent_id),
            &f.admin,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(rotated["agent_token"].as_str().unwrap().starts_with("aat_"));
    // No body: revoked without a reason.
    let revoked = expect_json(
        app.request(
            reqwest::Method::POST,
            &format!("/v1/agents/{}/revoke", f.agent_id),
            &f.admin,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(revoked["status"], "revoked");
    expect_error(
        app.authorize(
            rotated["agent_token"].as_str().unwrap(),
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
    assert_eq!(
        event_kinds(&app, &f.agent_id).await,
        vec![
            "agent.created",
            "agent.token_rotated",
            "agent.revoked",
            // The refused call with the dead token is recorded for the SOC.
            "auth.dead_token"
        ]
    );
    // Every token of a revoked agent is retired.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM agent_tokens WHERE agent_id = ?1 AND retired_at IS NULL",
            &[Sql::from(&f.agent_id)]
        )
        .await,
        0
    );
});

store_test!(async fn invalid_agent_requests_name_the_field(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "ok", "risk_tier": "extreme"}), "risk_tier"),
    ];
    for (body, field) in cases {
        let error = expect_error(
            app.post(&f.admin, "/v1/agents", body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let error = expect_error(
        app.patch(
            &f.admin,
            &format!("/v1/agents/{}", f.agent_id),
            json!({"risk_tier": "none"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "risk_tier");
    let error = expect_error(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": ""}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "reason");
    let error = expect_error(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": ["no"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "reason");
    // Malformed JSON on a management route.
    let response = app
        .request(reqwest::Method::POST, "/v1/agents", &f.admin)
        .header("content-type", "application/json")
        .body("{\"name\": \"x\"")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    // Only the fixture's agent exists, still active.
    let list = expect_json(app.get(&f.admin, "/v1/agents").await, StatusCode::OK).await;
    assert_eq!(ids(&list, "id"), vec![f.agent_id.clone()]);
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["risk_tier"], "low");
});

store_test!(async fn unknown_agents_answer_404(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let missing = "agt_does_not_exist";
    expect_error(
        app.get(&admin, &format!("/v1/agents/{missing}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.patch(
            &admin,
            &format!("/v1/agents/{missing}"),
            json!({"risk_tier": "low"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for op in ["freeze", "unfreeze", "revoke", "rotate-token"] {
        expect_error(
            app.post(&admin, &format!("/v1/agents/{missing}/{op}"), json!({}))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
});

store_test!(async fn repeated_denials_escalate_the_risk_tier(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let settings = expect_json(
        app.put(
            &f.admin,
            "/v1/tenants/risk-escalation",
            json!({"denial_threshold": 3, "window_minutes": 60}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        settings,
        json!({"denial_threshold": 3, "window_minutes": 60})
    );
    let tier = || async {
        expect_json(
            app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
                .await,
            StatusCode::OK,
        )
        .await["risk_tier"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let deny = || async {
        expect_decision(
            app.authorize(
                &f.token,
                "github",
                "merge_pull_request",
                "untrusted_external",
                true,
            )
            .await,
            "deny",
        )
        .await
    };

    // Allows and approvals do not count.
    app.decide(
        &f.token,
        "github",
        "get_file",
        "trusted_internal_signed",
        false,
    )
    .await;
    app.decide(
        &f.token,
        "github",
        "merge_pull_request",
        "semi_trusted_customer",
        true,
    )
    .await;
    deny().await;
    deny().await;
    assert_eq!(tier().await, "low");
    let third = deny().await;
    assert_eq!(tier().await, "medium");

    deny().await;
    deny().await;
    assert_eq!(
        tier().await,
        "medium",
        "the step to medium resets the count"
    );
    let sixth = deny().await;
    assert_eq!(tier().await, "high");
    // Escalation is visible in risk scores: high tier adds to the same call's score.
    assert!(sixth["risk_score"].as_u64() > third["risk_score"].as_u64());

    // High tier: even a trusted write needs approval now.
    let approval = expect_decision(
        app.authorize(
            &f.token,
            "github",
            "merge_pull_request",
            "trusted_internal_signed",
            true,
        )
        .await,
        "require_approval",
    )
    .await;
    assert_eq!(
        approval["matched_policies"],
        json!(["aegis-approve-high-tier-writes"])
    );
    // More denies at the top tier change nothing.
    deny().await;
    deny().await;
    deny().await;
    assert_eq!(tier().await, "high");

    // The operator steps it back down explicitly.
    let patched = expect_json(
        app.patch(
            &f.admin,
            &format!("/v1/agents/{}", f.agent_id),
            json!({"risk_tier": "low"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["risk_tier"], "low");
    expect_decision(
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

    // Recorded as events: two escalations, then the operator's step-down.
    let changes: Vec<Value> = app
        .rows(
            "SELECT payload FROM events WHERE kind = 'agent.risk_tier_changed' AND agent_id = ?1 ORDER BY seq",
            &[Sql::from(&f.agent_id)],
        )
        .await
        .iter()
        .map(|row| serde_json::from_str(row[0].text()).unwrap())
        .collect();
    let steps: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap(),
                c["cause"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("low", "medium", "escalation"),
            ("medium", "high", "escalation"),
            ("high", "low", "operator"),
        ]
    );
});

// A frozen agent's calls are refused by the freeze itself: recorded, but they do not step its
// tier up (six retries used to take it from low to high).
store_test!(async fn a_frozen_agents_refusals_do_not_count_toward_escalation(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(
            &f.admin,
            "/v1/tenants/risk-escalation",
            json!({"denial_threshold": 2, "window_minutes": 5}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": "hold"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for _ in 0..2 {
        app.decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await;
    }
    let agent = expect_json(
        app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["risk_tier"], "low");
    assert_eq!(agent["status"], "frozen");
    // Once active, its own denies count as before.
    expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/unfreeze", f.agent_id),
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for _ in 0..2 {
        let denied = app
            .decide(
                &f.token,
                "github",
                "merge_pull_request",
                "untrusted_external",
                true,
            )
            .await;
        assert_eq!(denied["decision"], "deny");
    }
    let agent = expect_json(
        app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["risk_tier"], "medium");
});

// A risk-tier escalation is applied to the agent cache from the committed row, so it can
// neither undo a freeze nor be lost: the handler used to write back the agent as it was
// when the request started.
store_test!(async fn a_freeze_holds_across_risk_tier_escalations(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(
            &f.admin,
            "/v1/tenants/risk-escalation",
            json!({"denial_threshold": 2, "window_minutes": 60}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let agent = || async {
        expect_json(
            app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id)).await,
            StatusCode::OK,
        )
        .await
    };
    let untrusted_write = || async {
        expect_decision(
            app.authorize(&f.token, "github", "merge_pull_request", "untrusted_external", true)
                .await,
            "deny",
        )
        .await
    };
    let trusted_read = || async {
        app.authorize(&f.token, "github", "get_file", "trusted_internal_signed", false)
            .await
    };

    let before = untrusted_write().await;
    let escalating = untrusted_write().await;
    assert_eq!(agent().await["risk_tier"], "medium");
    // The next call sees the committed tier (medium adds 5 to the score).
    let after = untrusted_write().await;
    assert_eq!(before["risk_score"], escalating["risk_score"]);
    assert_eq!(after["risk_score"].as_u64(), before["risk_score"].as_u64().map(|s| s + 5));

    expect_json(
        app.post(
            &f.admin,
            &format!("/v1/agents/{}/freeze", f.agent_id),
            json!({"reason": "investigating"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // Refusals caused by the freeze are recorded but step nothing: the freeze holds and the
    // tier stays where the agent's own denies put it.
    for _ in 0..2 {
        let frozen = expect_decision(trusted_read().await, "deny").await;
        assert_eq!(frozen["matched_policies"], json!(["aegis-agent-frozen"]));
        let now = agent().await;
        assert_eq!(
            (now["status"].as_str(), now["risk_tier"].as_str()),
            (Some("frozen"), Some("medium"))
        );
    }

    expect_json(
        app.post(&f.admin, &format!("/v1/agents/{}/unfreeze", f.agent_id), json!({})).await,
        StatusCode::OK,
    )
    .await;
    // Active again, its own deny is the second since the last step: it escalates to high.
    untrusted_write().await;
    assert_eq!(agent().await["risk_tier"], "high");
    // At the committed tier a trusted write now needs approval.
    expect_decision(
        app.authorize(&f.token, "github", "merge_pull_request", "trusted_internal_signed", true)
            .await,
        "require_approval",
    )
    .await;
});
