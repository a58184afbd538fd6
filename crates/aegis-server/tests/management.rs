//! Management routes: keys, tools, policies, decisions, tenant settings, health, OpenAPI.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

store_test!(async fn operator_keys_create_list_and_revoke(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;

    let created = expect_json(
        app.post(
            &admin,
            "/v1/keys",
            json!({"role": "responder", "name": "on-call"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key_id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["role"], "responder");
    assert_eq!(created["name"], "on-call");
    assert!(secret.starts_with("aok_"), "{secret}");
    // Name is optional.
    let unnamed = expect_json(
        app.post(&admin, "/v1/keys", json!({"role": "viewer"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(unnamed["name"].is_null());

    // The new key works, with its role.
    expect_json(app.get(&secret, "/v1/agents").await, StatusCode::OK).await;

    let list = expect_json(app.get(&admin, "/v1/keys").await, StatusCode::OK).await;
    let listed: HashSet<String> = ids(&list, "id").into_iter().collect();
    assert_eq!(listed.len(), 3, "initial admin + two: {list}");
    assert!(listed.contains(&key_id));
    for key in list.as_array().unwrap() {
        assert!(key.get("key").is_none(), "secrets are never listed: {key}");
        assert!(key["revoked_at"].is_null());
    }
    // Only the SHA-256 of the secret is stored.
    let hash = aegis_server::auth::hash_secret(&secret);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM operator_keys WHERE id = ?1 AND secret_hash = ?2",
            &[Sql::from(&key_id), Sql::Bytes(hash.to_vec())],
        )
        .await,
        1
    );

    let revoked = expect_json(
        app.delete(&admin, &format!("/v1/keys/{key_id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(revoked["id"], key_id.as_str());
    assert!(revoked["revoked_at"].is_string());
    expect_error(
        app.get(&secret, "/v1/agents").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let list = expect_json(app.get(&admin, "/v1/keys").await, StatusCode::OK).await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap();
    assert!(entry["revoked_at"].is_string());

    expect_error(
        app.delete(&admin, "/v1/keys/key_unknown").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let error = expect_error(
        app.post(&admin, "/v1/keys", json!({"role": "root"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "role");
    let error = expect_error(
        app.post(&admin, "/v1/keys", json!({"name": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "role");
    let error = expect_error(
        app.post(&admin, "/v1/keys", json!({"role": "viewer", "name": ""}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "name");
});

store_test!(async fn a_revoked_admin_key_loses_access_even_to_revoke_itself(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let second = app.create_key(&admin, "admin").await;
    let list = expect_json(app.get(&second, "/v1/keys").await, StatusCode::OK).await;
    let first_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "initial admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_json(
        app.delete(&second, &format!("/v1/keys/{first_id}")).await,
        StatusCode::OK,
    )
    .await;
    expect_error(
        app.post(&admin, "/v1/keys", json!({"role": "admin"})).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
});

store_test!(async fn the_last_active_admin_key_cannot_be_revoked(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    // A viewer key does not keep the tenant manageable.
    app.create_key(&admin, "viewer").await;
    let admin_id = key_id_named(&app, &admin, "initial admin").await;
    let error = expect_error(
        app.delete(&admin, &format!("/v1/keys/{admin_id}")).await,
        StatusCode::CONFLICT,
        "last_admin_key",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("last"), "{error}");

    // The last two admin keys revoked at once (through the store, so that neither request
    // is refused earlier as unauthorized): the check runs in the writer's transaction, so
    // exactly one revoke succeeds and one admin key stays usable.
    let second = app.create_key(&admin, "admin").await;
    let second_id = key_id_named(&app, &admin, "admin key").await;
    let tenant = aegis_store::TenantId::new("acme");
    let (first_revoke, second_revoke) = tokio::join!(
        app.store.revoke_operator_key(&tenant, &admin_id),
        app.store.revoke_operator_key(&tenant, &second_id),
    );
    let refused = [&first_revoke, &second_revoke]
        .iter()
        .filter(|outcome| matches!(outcome, Err(aegis_store::StoreError::LastAdminKey)))
        .count();
    assert_eq!(refused, 1, "{first_revoke:?} {second_revoke:?}");
    assert!(first_revoke.is_ok() || second_revoke.is_ok());
    let survivor = if first_revoke.is_ok() { &second } else { &admin };
    let list = expect_json(app.get(survivor, "/v1/keys").await, StatusCode::OK).await;
    let active_admins = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["role"] == "admin" && k["revoked_at"].is_null())
        .count();
    assert_eq!(active_admins, 1);
});

/// The id of the tenant's key called `name`.
async fn key_id_named(app: &TestApp, admin: &str, name: &str) -> String {
    let list = expect_json(app.get(admin, "/v1/keys").await, StatusCode::OK).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key named {name}: {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

store_test!(async fn tools_register_list_and_update(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let registered = expect_json(
        app.post(
            &admin,
            "/v1/tools",
            json!({"tool": "github", "actions": [
                {"action": "get_file", "mutates_state": false, "risk": "low", "sensitive": true},
                {"action": "merge_pull_request", "mutates_state": true, "risk": "high"}
            ]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(registered["tool"], "github");
    assert_eq!(registered["actions"].as_array().unwrap().len(), 2);

    let list = expect_json(app.get(&admin, "/v1/tools").await, StatusCode::OK).await;
    assert_eq!(
        list,
        json!([
            {"tool": "github", "action": "get_file", "mutates_state": false, "risk": "low", "egress": false, "sensitive": true},
            {"tool": "github", "action": "merge_pull_request", "mutates_state": true, "risk": "high", "egress": false, "sensitive": false},
        ])
    );

    // Re-registering updates facts, and authorize sees them at once.
    let (_, token) = app.create_agent(&admin, "bot").await;
    expect_decision(
        app.authorize(&token, "github", "get_file", "untrusted_external", false)
            .await,
        "allow",
    )
    .await;
    expect_json(
        app.post(
            &admin,
            "/v1/tools",
            json!({"tool": "github", "actions": [
                {"action": "get_file", "mutates_state": true, "risk": "critical"}
            ]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let list = expect_json(app.get(&admin, "/v1/tools").await, StatusCode::OK).await;
    assert_eq!(list[0]["risk"], "critical");
    assert_eq!(list[0]["mutates_state"], true);
    assert_eq!(list.as_array().unwrap().len(), 2);
    expect_decision(
        app.authorize(&token, "github", "get_file", "untrusted_external", false)
            .await,
        "deny",
    )
    .await;

    let cases: Vec<(Value, &str)> = vec![
        (json!({"actions": []}), "tool"),
        (
            json!({"tool": "", "actions": [{"action": "a", "mutates_state": false, "risk": "low"}]}),
            "tool",
        ),
        (json!({"tool": "t", "actions": []}), "actions"),
        (json!({"tool": "t"}), "actions"),
        (
            json!({"tool": "t", "actions": [{"action": "a", "mutates_state": false}]}),
            "actions[0].risk",
        ),
        (
            json!({"tool": "t", "actions": [{"action": "a", "mutates_state": "no", "risk": "low"}]}),
            "actions[0].mutates_state",
        ),
        (
            json!({"tool": "t", "actions": [{"action": "a", "mutates_state": false, "risk": "apocalyptic"}]}),
            "actions[0].risk",
        ),
        (
            json!({"tool": "t", "actions": [
                {"action": "a", "mutates_state": false, "risk": "low"},
                {"action": "", "mutates_state": false, "risk": "low"}
            ]}),
            "actions[1].action",
        ),
        (
            json!({"tool": "t", "actions": [
                {"action": "a", "mutates_state": false, "risk": "low"},
                {"action": "a", "mutates_state": true, "risk": "low"}
            ]}),
            "actions[1].action",
        ),
    ];
    for (body, field) in cases {
        let error = expect_error(
            app.post(&admin, "/v1/tools", body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let list = expect_json(app.get(&admin, "/v1/tools").await, StatusCode::OK).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "nothing invalid stored");
});

const FORBID_PROD: &str = "forbid (principal, action, resource)\nwhen { context has target && context.target like \"prod*\" };";

store_test!(async fn policies_crud_and_schema(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;

    let list = expect_json(app.get(&admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(list, json!([]));

    let schema = expect_json(app.get(&admin, "/v1/policies/schema").await, StatusCode::OK).await;
    assert!(
        schema["schema"]
            .as_str()
            .unwrap()
            .contains("namespace Aegis")
    );
    assert!(
        schema["default_pack"]
            .as_str()
            .unwrap()
            .contains("aegis-deny-untrusted-writes")
    );

    let created = expect_json(
        app.post(
            &admin,
            "/v1/policies",
            json!({"id": "no-prod", "text": FORBID_PROD}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created, json!({"id": "no-prod", "text": FORBID_PROD}));
    expect_error(
        app.post(
            &admin,
            "/v1/policies",
            json!({"id": "no-prod", "text": FORBID_PROD}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    let got = expect_json(
        app.get(&admin, "/v1/policies/no-prod").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["text"], FORBID_PROD);

    // PUT creates (201) then replaces (200).
    let text2 = "permit (principal, action, resource in Aegis::Tool::\"slack\");";
    expect_json(
        app.put(&admin, "/v1/policies/allow-slack", json!({"text": text2}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let text3 = "permit (principal, action, resource in Aegis::Tool::\"slack\")\nwhen { !context.mutates_state };";
    let replaced = expect_json(
        app.put(&admin, "/v1/policies/allow-slack", json!({"text": text3}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replaced["text"], text3);
    let list = expect_json(app.get(&admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(
        list,
        json!([
            {"id": "allow-slack", "text": text3},
            {"id": "no-prod", "text": FORBID_PROD},
        ])
    );

    let response = app.delete(&admin, "/v1/policies/no-prod").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get(&admin, "/v1/policies/no-prod").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.delete(&admin, "/v1/policies/no-prod").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list = expect_json(app.get(&admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(ids(&list, "id"), vec!["allow-slack"]);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM events WHERE kind IN ('policy.put', 'policy.deleted')",
            &[]
        )
        .await,
        4
    );
});

store_test!(async fn invalid_policies_are_refused_saying_where(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;

    // Syntax error on line 2.
    let error = expect_error(
        app.post(
            &admin,
            "/v1/policies",
            json!({"id": "broken", "text": "permit (principal, action, resource)\nwhen { context.target like };"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("(at 2:"), "{message}");
    assert_eq!(error["field"], "text");

    // Parses, but does not validate against the schema: unknown attribute on line 3.
    let error = expect_error(
        app.put(
            &admin,
            "/v1/policies/unknown-attr",
            json!({"text": "forbid (principal, action, resource)\nwhen {\n  context.no_such_fact == \"x\" };"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("(at 3:3)"), "{message}");

    // Optional attribute without `has`: strict validation refuses it.
    let error = expect_error(
        app.put(
            &admin,
            "/v1/policies/no-has",
            json!({"text": "forbid (principal, action, resource) when { context.target == \"prod\" };"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("(at 1:"),
        "{error}"
    );

    // Ids: reserved prefix and bad characters.
    for id in ["aegis-override", "has space", ""] {
        let error = expect_error(
            app.post(
                &admin,
                "/v1/policies",
                json!({"id": id, "text": FORBID_PROD}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_policy",
        )
        .await;
        assert_eq!(error["field"], "id", "{id}: {error}");
    }
    // Two policies in one text.
    expect_error(
        app.put(
            &admin,
            "/v1/policies/two",
            json!({"text": format!("{FORBID_PROD}\n{FORBID_PROD}")}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    )
    .await;
    // Missing and wrong-typed text.
    let error = expect_error(
        app.post(&admin, "/v1/policies", json!({"id": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "text");
    let error = expect_error(
        app.put(&admin, "/v1/policies/x", json!({"text": 1})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "text");

    let list = expect_json(app.get(&admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(list, json!([]), "nothing refused was stored");
});

store_test!(async fn risk_escalation_settings_read_and_write(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let defaults = expect_json(
        app.get(&admin, "/v1/tenants/risk-escalation").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        defaults,
        json!({"denial_threshold": 5, "window_minutes": 60})
    );
    // Sent the way the runbook's curl sends it.
    let response = app
        .request(reqwest::Method::PUT, "/v1/tenants/risk-escalation", &admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"denial_threshold": 7, "window_minutes": 30}"#)
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
    let now = expect_json(
        app.get(&admin, "/v1/tenants/risk-escalation").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(now, json!({"denial_threshold": 7, "window_minutes": 30}));
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM tenants WHERE id = 'acme' AND denial_threshold = 7 AND escalation_window_minutes = 30",
            &[]
        )
        .await,
        1
    );

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"denial_threshold": 0, "window_minutes": 60}),
            "denial_threshold",
        ),
        (
            json!({"denial_threshold": -1, "window_minutes": 60}),
            "denial_threshold",
        ),
        (
            json!({"denial_threshold": "5", "window_minutes": 60}),
            "denial_threshold",
        ),
        (json!({"window_minutes": 60}), "denial_threshold"),
        (json!({"denial_threshold": 5}), "window_minutes"),
        (
            json!({"denial_threshold": 5, "window_minutes": 0}),
            "window_minutes",
        ),
        (
            json!({"denial_threshold": 5, "window_minutes": 1_000_000}),
            "window_minutes",
        ),
    ];
    for (body, field) in cases {
        let error = expect_error(
            app.put(&admin, "/v1/tenants/risk-escalation", body.clone())
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let unchanged = expect_json(
        app.get(&admin, "/v1/tenants/risk-escalation").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        unchanged,
        json!({"denial_threshold": 7, "window_minutes": 30})
    );
});

/// Makes seven decisions of known shape over two agents; returns the answers, oldest first.
async fn make_decisions(app: &TestApp, f: &Fixture, second_token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let first = f.token.as_str();
    let calls: Vec<(&str, Value)> = vec![
        (
            first,
            json!({"tool_call": {"tool": "github", "action": "get_file"}, "context": {"source_trust": "trusted_internal_signed"}, "trace": {"run_id": "run-a"}}),
        ),
        (
            first,
            json!({"tool_call": {"tool": "github", "action": "merge_pull_request"}, "context": {"source_trust": "untrusted_external"}, "trace": {"run_id": "run-a"}}),
        ),
        (
            second_token,
            json!({"tool_call": {"tool": "github", "action": "merge_pull_request"}, "context": {"source_trust": "trusted_internal_signed"}, "trace": {"run_id": "run-b"}}),
        ),
        (
            first,
            json!({"tool_call": {"tool": "jira", "action": "get_issue"}, "context": {"source_trust": "trusted_internal_signed"}}),
        ),
        (
            second_token,
            json!({"tool_call": {"tool": "github", "action": "merge_pull_request"}, "context": {"source_trust": "semi_trusted_customer"}, "trace": {"run_id": "run-b"}}),
        ),
        (
            first,
            json!({"tool_call": {"tool": "github", "action": "get_file"}, "context": {"source_trust": "untrusted_external"}}),
        ),
        (
            second_token,
            json!({"tool_call": {"tool": "github", "action": "get_file"}, "context": {"source_trust": "trusted_internal_signed"}}),
        ),
    ];
    for (token, body) in calls {
        out.push(expect_json(app.authorize_body(token, body).await, StatusCode::OK).await);
        // Spread the decisions over distinct milliseconds so time filters have edges to
        // find (the filters are checked against the recorded times, not against this).
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    out
}

async fn list(app: &TestApp, key: &str, query: &str) -> Vec<String> {
    ids(
        &expect_json(
            app.get(key, &format!("/v1/decisions?{query}")).await,
            StatusCode::OK,
        )
        .await,
        "decision_id",
    )
}

store_test!(async fn decisions_filter_and_get(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let (second_id, second_token) = app.create_agent(&f.admin, "second").await;
    let made = make_decisions(&app, &f, &second_token).await;
    let id = |i: usize| made[i]["decision_id"].as_str().unwrap().to_owned();
    let newest_first = |indexes: &[usize]| indexes.iter().rev().map(|&i| id(i)).collect::<Vec<_>>();

    assert_eq!(
        list(&app, &f.admin, "").await,
        newest_first(&[0, 1, 2, 3, 4, 5, 6])
    );
    assert_eq!(
        list(&app, &f.admin, &format!("agent_id={}", f.agent_id)).await,
        newest_first(&[0, 1, 3, 5])
    );
    assert_eq!(
        list(&app, &f.admin, &format!("agent_id={second_id}")).await,
        newest_first(&[2, 4, 6])
    );
    assert_eq!(
        list(&app, &f.admin, "decision=deny").await,
        newest_first(&[1, 3])
    );
    assert_eq!(
        list(&app, &f.admin, "decision=allow").await,
        newest_first(&[0, 2, 5, 6])
    );
    assert_eq!(
        list(&app, &f.admin, "decision=require_approval").await,
        newest_first(&[4])
    );
    assert_eq!(
        list(
            &app,
            &f.admin,
            &format!("agent_id={}&decision=deny", f.agent_id)
        )
        .await,
        newest_first(&[1, 3])
    );
    assert_eq!(list(&app, &f.admin, "tool=jira").await, newest_first(&[3]));
    assert_eq!(
        list(&app, &f.admin, "tool=github&action=merge_pull_request").await,
        newest_first(&[1, 2, 4])
    );
    assert_eq!(
        list(&app, &f.admin, "action=get_file").await,
        newest_first(&[0, 5, 6])
    );
    assert_eq!(
        list(&app, &f.admin, "run_id=run-a").await,
        newest_first(&[0, 1])
    );
    assert_eq!(
        list(&app, &f.admin, "run_id=run-b&decision=allow").await,
        newest_first(&[2])
    );
    assert!(list(&app, &f.admin, "run_id=none").await.is_empty());

    // Time range: since is inclusive, until exclusive; compare with the recorded times.
    let all = expect_json(app.get(&f.admin, "/v1/decisions").await, StatusCode::OK).await;
    let times: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["decision_id"].as_str().unwrap().to_owned(),
                d["created_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The middle decision's time splits the set (RFC 3339 with ms sorts as text).
    let pivot = times[times.len() / 2].1.clone();
    let expect_since: Vec<String> = times
        .iter()
        .filter(|(_, t)| *t >= pivot)
        .map(|(i, _)| i.clone())
        .collect();
    let expect_until: Vec<String> = times
        .iter()
        .filter(|(_, t)| *t < pivot)
        .map(|(i, _)| i.clone())
        .collect();
    assert!(!expect_since.is_empty() && !expect_until.is_empty());
    assert_eq!(
        list(&app, &f.admin, &format!("since={pivot}")).await,
        expect_since
    );
    assert_eq!(
        list(&app, &f.admin, &format!("until={pivot}")).await,
        expect_until
    );
    assert_eq!(
        list(
            &app,
            &f.admin,
            "since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z"
        )
        .await
        .len(),
        7
    );
    assert!(
        list(&app, &f.admin, "since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert!(
        list(&app, &f.admin, "until=2000-01-01T00:00:00%2B01:00")
            .await
            .is_empty()
    );

    // One decision, with its recorded facts.
    let one = expect_json(
        app.get(&f.admin, &format!("/v1/decisions/{}", id(1))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one["decision_id"], id(1).as_str());
    assert_eq!(one["agent_id"], f.agent_id.as_str());
    assert_eq!(one["decision"], "deny");
    assert_eq!(one["tool"], "github");
    assert_eq!(one["action"], "merge_pull_request");
    assert_eq!(
        one["matched_policies"],
        json!(["aegis-deny-untrusted-writes"])
    );
    assert_eq!(one["risk_score"], made[1]["risk_score"]);
    assert_eq!(one["reason"], made[1]["reason"]);
    assert_eq!(one["receipt_id"], made[1]["receipt"]["id"]);
    assert_eq!(one["event_seq"], made[1]["event_seq"]);
    assert_eq!(one["source_trust"], "untrusted_external");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'));

    expect_error(
        app.get(&f.admin, "/v1/decisions/dec_missing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Bad filters.
    let error = expect_error(
        app.get(&f.admin, "/v1/decisions?since=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "since");
    let error = expect_error(
        app.get(&f.admin, "/v1/decisions?until=2026-13-01").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "until");
    for limit in ["0", "1001"] {
        let error = expect_error(
            app.get(&f.admin, &format!("/v1/decisions?limit={limit}"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], "limit");
    }
    let error = expect_error(
        app.get(&f.admin, "/v1/decisions?cursor=abc").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "cursor");
    // A value outside the enum is a field error like any other (README, "Errors").
    let error = expect_error(
        app.get(&f.admin, "/v1/decisions?decision=maybe").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "decision");
});

store_test!(async fn decisions_page_without_duplicates_or_gaps(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    for i in 0..11 {
        let trust = if i % 3 == 0 {
            "untrusted_external"
        } else {
            "trusted_internal_signed"
        };
        app.decide(&f.token, "github", "merge_pull_request", trust, true)
            .await;
    }
    let everything = list(&app, &f.admin, "limit=1000").await;
    assert_eq!(everything.len(), 11);
    // Default page size is 50: no cursor when everything fits.
    let response = app.get(&f.admin, "/v1/decisions").await;
    assert!(response.headers().get("x-next-cursor").is_none());

    for (limit, query, expected) in [
        (4, "", everything.clone()),
        (1, "", everything.clone()),
        (11, "", everything.clone()),
        (
            2,
            "&decision=deny",
            list(&app, &f.admin, "decision=deny").await,
        ),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/decisions?limit={limit}{query}&cursor={c}"),
                None => format!("/v1/decisions?limit={limit}{query}"),
            };
            let response = app.get(&f.admin, &path).await;
            cursor = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_owned());
            let page = ids(&expect_json(response, StatusCode::OK).await, "decision_id");
            assert!(page.len() <= limit);
            if cursor.is_some() {
                assert_eq!(page.len(), limit, "only the last page is short");
            }
            seen.extend(page);
            pages += 1;
            if cursor.is_none() {
                break;
            }
            assert!(pages <= 20, "paging does not terminate");
        }
        assert_eq!(seen, expected, "limit {limit}{query}");
        assert_eq!(
            pages,
            expected.len().div_ceil(limit).max(1),
            "limit {limit}{query}"
        );
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
    }
    // A page boundary is stable while new decisions arrive: the next page starts after it.
    let response = app.get(&f.admin, "/v1/decisions?limit=5").await;
    let cursor = response.headers()["x-next-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let first = ids(&expect_json(response, StatusCode::OK).await, "decision_id");
    app.decide(
        &f.token,
        "github",
        "get_file",
        "trusted_internal_signed",
        false,
    )
    .await;
    let next = list(&app, &f.admin, &format!("limit=5&cursor={cursor}")).await;
    assert_eq!(next, everything[5..10].to_vec());
    assert!(next.iter().all(|id| !first.contains(id)));
});

store_test!(async fn health_readiness_openapi_and_unknown_routes(backend) {
    let app = TestApp::spawn(backend).await;
    let health = expect_json(app.get("", "/healthz").await, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let ready = expect_json(app.get("", "/readyz").await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");

    let openapi = expect_json(app.get("", "/openapi.json").await, StatusCode::OK).await;
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/v1/authorize",
        "/v1/agents",
        "/v1/agents/{id}/freeze",
        "/v1/decisions",
        "/v1/policies/{id}",
        "/v1/tenants/risk-escalation",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    assert!(paths["/v1/authorize"]["post"].is_object());

    for path in ["/v1/nope", "/nope", "/v1/agents/a/b/c"] {
        let error = expect_error(app.get("", path).await, StatusCode::NOT_FOUND, "not_found").await;
        assert!(error["message"].as_str().unwrap().contains("route"));
    }
    let error = expect_error(
        app.post("", "/v1/does-not-exist", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(error.get("field").is_none());
});

// The audit's payloads: a policy nested 200 parentheses or 150 `&&` deep overflowed the
// worker's stack inside Cedar's parser and aborted the process for every tenant.
store_test!(async fn policies_nested_too_deep_are_refused_and_the_gateway_keeps_answering(backend) {
    use aegis_core::policy::{MAX_POLICY_DEPTH, MAX_POLICY_NESTING};
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let policy = |condition: String| format!("permit (principal, action, resource) when {{ {condition} }};");
    let parentheses = policy(format!("{}true{}", "(".repeat(200), ")".repeat(200)));
    let nested_and = policy(format!("{}true{}", "(true && ".repeat(150), ")".repeat(150)));
    let chained_and = policy(vec!["true"; 151].join(" && "));

    for (text, limit) in [
        (&parentheses, MAX_POLICY_NESTING),
        (&nested_and, MAX_POLICY_NESTING),
        (&chained_and, MAX_POLICY_DEPTH),
    ] {
        let refusals = [
            app.post(&f.admin, "/v1/policies", json!({"id": "hostile", "text": text})).await,
            app.put(&f.admin, "/v1/policies/hostile", json!({"text": text})).await,
        ];
        for response in refusals {
            let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_policy").await;
            assert_eq!(error["field"], "text");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(&format!("the limit is {limit}")), "{message}");
            assert!(message.contains("(at 1:"), "{message}");
        }
        // Still up, still deciding.
        expect_json(app.get("", "/healthz").await, StatusCode::OK).await;
        app.decide(&f.token, "github", "get_file", "trusted_internal_signed", false).await;
    }
    let list = expect_json(app.get(&f.admin, "/v1/policies").await, StatusCode::OK).await;
    assert_eq!(list, json!([]), "nothing refused was stored");

    // Deep but within the limits: stored, compiled and evaluated on the server's workers.
    // The `when { … }` braces are the first bracket level; each level below costs its
    // bracket and its `&&`; the chain inside takes what depth is left.
    let brackets = MAX_POLICY_NESTING - 1;
    let chain = MAX_POLICY_DEPTH - 2 * MAX_POLICY_NESTING - 4;
    let deep = format!(
        "@reason(\"deep\")\nforbid (principal, action, resource) when {{ {}context.mutates_state{}{} }};",
        "(true && ".repeat(brackets),
        " && context.mutates_state".repeat(chain),
        ")".repeat(brackets),
    );
    expect_json(
        app.put(&f.admin, "/v1/policies/deep", json!({"text": deep})).await,
        StatusCode::CREATED,
    )
    .await;
    let denied = expect_decision(
        app.authorize(&f.token, "github", "merge_pull_request", "trusted_internal_signed", true).await,
        "deny",
    )
    .await;
    assert_eq!(denied["reason"], "deep");
    app.decide(&f.token, "github", "get_file", "trusted_internal_signed", false).await;
});

// A body nested far deeper than anything recurses on: every operation that takes a body
// answers it without a server error and the gateway keeps answering. Where a body field is a
// JSON value (`parameters`), serde_json's recursion limit refuses it (see
// `authorize.rs::parameters_nested_to_the_parser_limit_hash_and_deeper_are_refused`); fields
// nobody reads are skipped by serde_json without recursion.
store_test!(async fn every_body_survives_deeply_nested_json(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    // Operations on `{id}` act on another agent: an all-optional body may be accepted.
    let (other_agent, _) = app.create_agent(&f.admin, "other").await;
    // Sent as text: a value this deep would overflow the test's own stack.
    let depth = 50_000;
    let array = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth));
    let bodies = [
        (array, true),
        (format!("{{\"unread\": {objects}}}"), false),
        (format!("{{\"tool_call\": {{\"tool\": \"github\", \"action\": \"get_file\", \"parameters\": {objects}}}}}"), false),
    ];

    let openapi = expect_json(app.get("", "/openapi.json").await, StatusCode::OK).await;
    let mut checked = Vec::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            let credential = if operation["security"][0].get("agent_token").is_some() {
                &f.token
            } else {
                &f.admin
            };
            let path = path.replace("{id}", &other_agent);
            for (body, refused) in &bodies {
                let response = app
                    .request(method.to_uppercase().parse().unwrap(), &path, credential)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                assert!(!status.is_server_error(), "{method} {path} answered {status}");
                if *refused {
                    assert!(status.is_client_error(), "{method} {path} answered {status}");
                }
            }
            checked.push(path);
        }
    }
    assert!(checked.len() >= 15, "bodies checked: {checked:?}");
    assert!(checked.contains(&"/v1/authorize".to_owned()));
    expect_json(app.get("", "/healthz").await, StatusCode::OK).await;
    app.decide(&f.token, "github", "get_file", "trusted_internal_signed", false).await;
});

store_test!(async fn webhook_changes_are_audited_without_their_url(backend) {
    let settings = aegis_server::Settings {
        webhook_allow_private: true,
        ..aegis_server::Settings::default()
    };
    let app = TestApp::spawn_with(backend, settings).await;
    let admin = app.create_tenant("acme").await;
    // A Slack incoming-webhook URL carries its credential in the path.
    let url = "http://127.0.0.1:9/services/T000/B000/credential-in-the-path";
    let created = expect_json(
        app.post(&admin, "/v1/webhooks", json!({"url": url, "events": ["deny"]}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/{id}");
    assert_eq!(app.delete(&admin, &path).await.status(), StatusCode::NO_CONTENT);
    expect_error(app.delete(&admin, &path).await, StatusCode::NOT_FOUND, "not_found").await;

    let events = app
        .rows(
            "SELECT kind, subject_id, payload FROM events
             WHERE tenant_id = 'acme' AND kind LIKE 'webhook.%' ORDER BY seq",
            &[],
        )
        .await;
    let kinds: Vec<&str> = events.iter().map(|row| row[0].text()).collect();
    assert_eq!(kinds, ["webhook.created", "webhook.deleted"], "a refused delete records nothing");
    for row in &events {
        assert_eq!(row[1].text(), id);
        let payload: Value = serde_json::from_str(row[2].text()).unwrap();
        assert_eq!(payload["webhook_id"], id.as_str(), "{payload}");
        assert!(payload["actor"].as_str().unwrap().starts_with("key:"), "{payload}");
        assert!(!row[2].text().contains("credential") && !row[2].text().contains("127.0.0.1"));
    }
    let created_payload: Value = serde_json::from_str(events[0][2].text()).unwrap();
    assert_eq!(created_payload["events"], json!(["deny"]));
    assert_eq!(created_payload["format"], "json");
});
