//! Tenant isolation (404, never 403, for another tenant's ids; lists never mix tenants)
//! and every role boundary of the management API.

#[macro_use]
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Two tenants, each with an agent, a decision, an extra key and a policy.
struct TwoTenants {
    app: TestApp,
    a: Fixture,
    b: Fixture,
    a_decision: String,
    a_key_id: String,
    b_decision: String,
}

async fn two_tenants(backend: Backend) -> TwoTenants {
    let app = TestApp::spawn(backend).await;
    let a = app.tenant_with_agent("tenant-a").await;
    let b = app.tenant_with_agent("tenant-b").await;
    let a_decision = app
        .decide(
            &a.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_decision = app
        .decide(
            &b.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_key = expect_json(
        app.post(
            &a.admin,
            "/v1/keys",
            json!({"role": "viewer", "name": "a-viewer"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    for (admin, id) in [(&a.admin, "a-only"), (&b.admin, "b-only")] {
        expect_json(
            app.put(
                admin,
                &format!("/v1/policies/{id}"),
                json!({"text": "forbid (principal, action, resource in Aegis::Tool::\"jira\");"}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
    }
    TwoTenants {
        app,
        a_decision,
        a_key_id: a_key["id"].as_str().unwrap().to_owned(),
        b_decision,
        a,
        b,
    }
}

store_test!(async fn another_tenants_ids_answer_404(backend) {
    let t = two_tenants(backend).await;
    let (app, a, b) = (&t.app, &t.a, &t.b);
    let agent = format!("/v1/agents/{}", a.agent_id);

    for response in [
        app.get(&b.admin, &agent).await,
        app.patch(&b.admin, &agent, json!({"risk_tier": "high"}))
            .await,
        app.post(&b.admin, &format!("{agent}/freeze"), json!({"reason": "x"}))
            .await,
        app.post(&b.admin, &format!("{agent}/unfreeze"), json!({}))
            .await,
        app.post(&b.admin, &format!("{agent}/revoke"), json!({}))
            .await,
        app.post(&b.admin, &format!("{agent}/rotate-token"), json!({}))
            .await,
        app.get(&b.admin, &format!("/v1/decisions/{}", t.a_decision))
            .await,
        app.delete(&b.admin, &format!("/v1/keys/{}", t.a_key_id))
            .await,
        app.get(&b.admin, "/v1/policies/a-only").await,
        app.delete(&b.admin, "/v1/policies/a-only").await,
    ] {
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // A lower role of the other tenant also gets 404, not 403, where its role suffices.
    let b_responder = app.create_key(&b.admin, "responder").await;
    expect_error(
        app.post(&b_responder, &format!("{agent}/freeze"), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Nothing of tenant A changed.
    let got = expect_json(app.get(&a.admin, &agent).await, StatusCode::OK).await;
    assert_eq!(got["status"], "active");
    assert_eq!(got["risk_tier"], "low");
    expect_decision(
        app.authorize(
            &a.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
    let keys = expect_json(app.get(&a.admin, "/v1/keys").await, StatusCode::OK).await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null())
    );
    expect_json(
        app.get(&a.admin, "/v1/policies/a-only").await,
        StatusCode::OK,
    )
    .await;
    // A's decision is there for A.
    expect_json(
        app.get(&a.admin, &format!("/v1/decisions/{}", t.a_decision))
            .await,
        StatusCode::OK,
    )
    .await;
});

store_test!(async fn lists_never_show_another_tenants_rows(backend) {
    let t = two_tenants(backend).await;
    let (app, a, b) = (&t.app, &t.a, &t.b);

    let agents = expect_json(app.get(&b.admin, "/v1/agents").await, StatusCode::OK).await;
    assert_eq!(ids(&agents, "id"), vec![b.agent_id.clone()]);

    let decisions = expect_json(app.get(&b.admin, "/v1/decisions").await, StatusCode::OK).await;
    assert_eq!(ids(&decisions, "decision_id"), vec![t.b_decision.clone()]);
    // Filtering by the other tenant's agent finds nothing.
    let filtered = expect_json(
        app.get(&b.admin, &format!("/v1/decisions?agent_id={}", a.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(filtered, json!([]));

    let keys = expect_json(app.get(&b.admin, "/v1/keys").await, StatusCode::OK).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "only B's admin: {keys}");
    assert!(!ids(&keys, "id").contains(&t.a_key_id));

    let policies = expect_json(app.get(&b.admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(ids(&policies, "id"), vec!["b-only"]);

    // Tools are per tenant too.
    expect_json(
        app.post(
            &a.admin,
            "/v1/tools",
            json!({"tool": "jira", "actions": [{"action": "get_issue", "mutates_state": false, "risk": "low"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let tools = expect_json(app.get(&b.admin, "/v1/tools").await, StatusCode::OK).await;
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tool"] == "github"),
        "{tools}"
    );

    // Receipt chains are per tenant: each starts at 1.
    let a_chain = app.verify_chain("tenant-a").await;
    let b_chain = app.verify_chain("tenant-b").await;
    assert_eq!(a_chain.len(), 1);
    assert_eq!(b_chain.len(), 1);
    assert_eq!(b_chain[0].body.decision_id, t.b_decision);
});

store_test!(async fn policies_and_settings_of_one_tenant_do_not_affect_another(backend) {
    let t = two_tenants(backend).await;
    let (app, a, b) = (&t.app, &t.a, &t.b);
    // A forbids github entirely; B is unaffected.
    expect_json(
        app.put(
            &a.admin,
            "/v1/policies/no-github",
            json!({"text": "forbid (principal, action, resource in Aegis::Tool::\"github\");"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    expect_decision(
        app.authorize(
            &a.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "deny",
    )
    .await;
    expect_decision(
        app.authorize(
            &b.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await,
        "allow",
    )
    .await;
    // Escalation settings are per tenant.
    expect_json(
        app.put(
            &a.admin,
            "/v1/tenants/risk-escalation",
            json!({"denial_threshold": 1, "window_minutes": 10}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let b_settings = expect_json(
        app.get(&b.admin, "/v1/tenants/risk-escalation").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        b_settings,
        json!({"denial_threshold": 5, "window_minutes": 60})
    );
    // B's single deny does not escalate B's agent under A's threshold of 1.
    expect_decision(
        app.authorize(&b.token, "github", "merge_pull_request", "unknown", true)
            .await,
        "deny",
    )
    .await;
    let agent = expect_json(
        app.get(&b.admin, &format!("/v1/agents/{}", b.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["risk_tier"], "low");
});

/// A request by `key` against the fixture's agent; returns the status.
async fn status(app: &TestApp, key: &str, method: Method, path: &str) -> StatusCode {
    let builder = app.request(method.clone(), path, key);
    let builder = if method == Method::GET || method == Method::DELETE {
        builder
    } else {
        let body = match path {
            "/v1/agents" => json!({"name": "new-bot"}),
            "/v1/keys" => json!({"role": "viewer"}),
            "/v1/tools" => {
                json!({"tool": "t", "actions": [{"action": "a", "mutates_state": false, "risk": "low"}]})
            }
            "/v1/policies" => {
                json!({"id": "p-new", "text": "forbid (principal, action, resource in Aegis::Tool::\"x\");"})
            }
            "/v1/tenants/risk-escalation" => json!({"denial_threshold": 9, "window_minutes": 9}),
            "/v1/tenants/soc-autonomy" => json!({"level": "L3"}),
            "/v1/tenants/deny-storm" => json!({"threshold": 9, "window_secs": 30}),
            p if p.starts_with("/v1/policies/") => {
                json!({"text": "forbid (principal, action, resource in Aegis::Tool::\"y\");"})
            }
            p if p.ends_with("/freeze") || p.ends_with("/revoke") => json!({"reason": "role test"}),
            p if p.starts_with("/v1/agents/") && method == Method::PATCH => {
                json!({"risk_tier": "medium"})
            }
            _ => json!({}),
        };
        builder.json(&body)
    };
    builder.send().await.unwrap().status()
}

struct Routes {
    reads: Vec<String>,
    admin_writes: Vec<(Method, String)>,
}

async fn setup_routes(app: &TestApp, f: &Fixture) -> Routes {
    let decision = app
        .decide(
            &f.token,
            "github",
            "get_file",
            "trusted_internal_signed",
            false,
        )
        .await["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_json(
        app.put(
            &f.admin,
            "/v1/policies/existing",
            json!({"text": "forbid (principal, action, resource in Aegis::Tool::\"z\");"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let agent = format!("/v1/agents/{}", f.agent_id);
    Routes {
        reads: vec![
            "/v1/agents".into(),
            agent.clone(),
            "/v1/tools".into(),
            "/v1/policies".into(),
            "/v1/policies/schema".into(),
            "/v1/policies/existing".into(),
            "/v1/decisions".into(),
            format!("/v1/decisions/{decision}"),
            "/v1/tenants/risk-escalation".into(),
            "/v1/tenants/soc-autonomy".into(),
            "/v1/tenants/deny-storm".into(),
            "/v1/incidents".into(),
            "/v1/alerts".into(),
        ],
        admin_writes: vec![
            (Method::POST, "/v1/agents".into()),
            (Method::PATCH, agent.clone()),
            (Method::POST, format!("{agent}/rotate-token")),
            (Method::GET, "/v1/keys".into()),
            (Method::POST, "/v1/keys".into()),
            (Method::POST, "/v1/tools".into()),
            (Method::POST, "/v1/policies".into()),
            (Method::PUT, "/v1/policies/existing".into()),
            (Method::DELETE, "/v1/policies/existing".into()),
            (Method::PUT, "/v1/tenants/risk-escalation".into()),
            (Method::PUT, "/v1/tenants/soc-autonomy".into()),
            (Method::PUT, "/v1/tenants/deny-storm".into()),
            // Revoke last: it is terminal.
            (Method::POST, format!("{agent}/revoke")),
        ],
    }
}

/// Nothing a refused request could have changed did change.
async fn assert_untouched(app: &TestApp, f: &Fixture) {
    let agent = expect_json(
        app.get(&f.admin, &format!("/v1/agents/{}", f.agent_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["risk_tier"], "low");
    let agents = expect_json(app.get(&f.admin, "/v1/agents").await, StatusCode::OK).await;
    assert_eq!(agents.as_array().unwrap().len(), 1);
    let keys = expect_json(app.get(&f.admin, "/v1/keys").await, StatusCode::OK).await;
    assert_eq!(
        keys.as_array().unwrap().len(),
        3,
        "admin, viewer, responder"
    );
    let policies = expect_json(app.get(&f.admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(ids(&policies, "id"), vec!["existing"]);
    let tools = expect_json(app.get(&f.admin, "/v1/tools").await, StatusCode::OK).await;
    assert_eq!(tools.as_array().unwrap().len(), 2);
    let settings = expect_json(
        app.get(&f.admin, "/v1/tenants/risk-escalation").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(settings["denial_threshold"], 5);
    let autonomy = expect_json(
        app.get(&f.admin, "/v1/tenants/soc-autonomy").await,
        StatusCode::OK,
    )
    .await;
    assert!(autonomy["override"].is_null(), "{autonomy}");
    let storm = expect_json(
        app.get(&f.admin, "/v1/tenants/deny-storm").await,
        StatusCode::OK,
    )
    .await;
    assert!(storm["threshold"].is_null(), "{storm}");
    // The agent token still works (not rotated, not revoked).
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
}

store_test!(async fn viewer_reads_but_changes_nothing(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let viewer = app.create_key(&f.admin, "viewer").await;
    let _responder = app.create_key(&f.admin, "responder").await;
    let routes = setup_routes(&app, &f).await;

    for path in &routes.reads {
        assert_eq!(
            status(&app, &viewer, Method::GET, path).await,
            StatusCode::OK,
            "viewer GET {path}"
        );
    }
    let agent = format!("/v1/agents/{}", f.agent_id);
    let mut refused = vec![
        (Method::POST, format!("{agent}/freeze")),
        (Method::POST, format!("{agent}/unfreeze")),
    ];
    refused.extend(routes.admin_writes);
    for (method, path) in refused {
        let response = app
            .request(method.clone(), &path, &viewer)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        // With a valid body too, so the 403 is about the role and not the input.
        assert_eq!(
            status(&app, &viewer, method.clone(), &path).await,
            StatusCode::FORBIDDEN,
            "viewer {method} {path}"
        );
    }
    assert_untouched(&app, &f).await;
});

store_test!(async fn responder_contains_but_cannot_administer(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let _viewer = app.create_key(&f.admin, "viewer").await;
    let responder = app.create_key(&f.admin, "responder").await;
    let routes = setup_routes(&app, &f).await;

    for path in &routes.reads {
        assert_eq!(
            status(&app, &responder, Method::GET, path).await,
            StatusCode::OK,
            "responder GET {path}"
        );
    }
    for (method, path) in &routes.admin_writes {
        assert_eq!(
            status(&app, &responder, method.clone(), path).await,
            StatusCode::FORBIDDEN,
            "responder {method} {path}"
        );
    }
    assert_untouched(&app, &f).await;

    // Freeze and unfreeze are the responder's.
    let agent = format!("/v1/agents/{}", f.agent_id);
    let frozen = expect_json(
        app.post(
            &responder,
            &format!("{agent}/freeze"),
            json!({"reason": "containment"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(frozen["status"], "frozen");
    expect_decision(
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
    let unfrozen = expect_json(
        app.post(&responder, &format!("{agent}/unfreeze"), json!({}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(unfrozen["status"], "active");
    // The actor of each change is the responder's key.
    let frozen = app
        .rows(
            "SELECT payload FROM events WHERE kind = 'agent.frozen' AND agent_id = ?1",
            &[Sql::from(&f.agent_id)],
        )
        .await;
    let payload: serde_json::Value = serde_json::from_str(frozen[0][0].text()).unwrap();
    let actor = payload["actor"].as_str().unwrap();
    assert!(actor.starts_with("key:key_"), "{actor}");
});

store_test!(async fn admin_can_do_everything(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let routes = setup_routes(&app, &f).await;
    for path in &routes.reads {
        assert_eq!(
            status(&app, &f.admin, Method::GET, path).await,
            StatusCode::OK,
            "admin GET {path}"
        );
    }
    let agent = format!("/v1/agents/{}", f.agent_id);
    let mut all = vec![
        (Method::POST, format!("{agent}/freeze")),
        (Method::POST, format!("{agent}/unfreeze")),
    ];
    all.extend(routes.admin_writes);
    for (method, path) in all {
        let code = status(&app, &f.admin, method.clone(), &path).await;
        assert!(code.is_success(), "admin {method} {path} answered {code}");
    }
});

store_test!(async fn agent_tokens_are_refused_on_the_management_api(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let routes = setup_routes(&app, &f).await;
    let agent = format!("/v1/agents/{}", f.agent_id);
    for path in &routes.reads {
        let response = app.get(&f.token, path).await;
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let mut writes = vec![
        (Method::POST, format!("{agent}/freeze")),
        (Method::POST, format!("{agent}/unfreeze")),
    ];
    writes.extend(routes.admin_writes);
    for (method, path) in writes {
        assert_eq!(
            status(&app, &f.token, method.clone(), &path).await,
            StatusCode::UNAUTHORIZED,
            "agent token {method} {path}"
        );
    }
    // No credential, and an unknown key, are 401 too.
    for key in ["", "aok_0123456789abcdef", "garbage"] {
        expect_error(
            app.get(key, "/v1/agents").await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    let got = expect_json(app.get(&f.admin, &agent).await, StatusCode::OK).await;
    assert_eq!(got["status"], "active");
});
