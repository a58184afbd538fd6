//! The runbook's commands (the user's deny-storm runbook), as a user runs them against
//! the built binary, with `AEGIS_OPERATOR_KEY` holding an operator key as the runbook assumes.

mod support;

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_remediation_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    // The runbook's default path, relative to where the operator stands.
    let db = dir.path().join("db/aegisagent.db");
    let admin = init(dir.path(), &db, "acme");
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (agent_id, agent_token) = agent_with_github(&client, &gw, &admin).await;
    let responder: Value = post_json(
        &client,
        gw.url("/v1/keys"),
        &admin,
        &json!({"role": "responder", "name": "on-call"}),
    )
    .await;
    let responder = responder["key"].as_str().unwrap().to_owned();

    // Five denies for the agent.
    for _ in 0..5 {
        assert_eq!(
            authorize(&client, &gw, &agent_token, "untrusted_external").await,
            "deny"
        );
    }

    // sqlite3 db/aegisagent.db "SELECT id, soc_autonomy_level FROM tenants WHERE id = '<tenant_id>';"
    let row: (String, Option<String>) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT id, soc_autonomy_level FROM tenants WHERE id = 'acme'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(row, ("acme".to_owned(), None), "NULL means not overridden");

    // curl -s -H "Authorization: Bearer $AEGIS_OPERATOR_KEY" ".../v1/decisions?agent_id=<id>&decision=deny"
    let denies: Value = get_json(
        &client,
        gw.url(&format!("/v1/decisions?agent_id={agent_id}&decision=deny")),
        &responder,
    )
    .await;
    let denies = denies.as_array().expect("a bare JSON array");
    assert_eq!(denies.len(), 5);
    assert!(
        denies.iter().all(|d| d["decision"] == "deny"
            && d["risk_score"].is_u64()
            && d["reason"].is_string())
    );

    // curl -s -X POST ... /freeze -d '{"reason": "..."}'   (curl sends a form content type)
    let frozen = client
        .post(gw.url(&format!("/v1/agents/{agent_id}/freeze")))
        .bearer_auth(&responder)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(r#"{"reason": "deny storm — investigating retry loop"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(frozen.status(), 200);
    let frozen: Value = frozen.json().await.unwrap();
    assert_eq!(frozen["status"], "frozen");

    // While frozen, the agent's calls are recorded denies that name the freeze.
    let while_frozen: Value = post_json(
        &client,
        gw.url("/v1/authorize"),
        &agent_token,
        &merge_call("trusted_internal_signed"),
    )
    .await;
    assert_eq!(while_frozen["decision"], "deny");
    assert!(
        while_frozen["reason"]
            .as_str()
            .unwrap()
            .contains("investigating retry loop")
    );

    // curl -s -X POST ... /unfreeze   → GET /v1/agents/:id shows active
    let unfrozen = client
        .post(gw.url(&format!("/v1/agents/{agent_id}/unfreeze")))
        .bearer_auth(&responder)
        .send()
        .await
        .unwrap();
    assert_eq!(unfrozen.status(), 200);
    let agent: Value = get_json(
        &client,
        gw.url(&format!("/v1/agents/{agent_id}")),
        &responder,
    )
    .await;
    assert_eq!(agent["status"], "active");

    // Escalation settings: GET|PUT /v1/tenants/risk-escalation.
    let escalation: Value =
        get_json(&client, gw.url("/v1/tenants/risk-escalation"), &responder).await;
    assert_eq!(
        escalation,
        json!({"denial_threshold": 5, "window_minutes": 60})
    );
    let put = client
        .put(gw.url("/v1/tenants/risk-escalation"))
        .bearer_auth(&admin)
        .json(&json!({"denial_threshold": 5, "window_minutes": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Suspected compromise: rotate the token (the old one answers 401), then revoke.
    let rotated: Value = client
        .post(gw.url(&format!("/v1/agents/{agent_id}/rotate-token")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_token = rotated["agent_token"].as_str().unwrap();
    let old = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(&agent_token)
        .json(&merge_call("trusted_internal_signed"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        401,
        "the old token is rejected after rotation"
    );
    let revoked = client
        .post(gw.url(&format!("/v1/agents/{agent_id}/revoke")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after_revoke = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(new_token)
        .json(&merge_call("trusted_internal_signed"))
        .send()
        .await
        .unwrap();
    assert_eq!(after_revoke.status(), 401);
    let agent: Value = get_json(
        &client,
        gw.url(&format!("/v1/agents/{agent_id}")),
        &responder,
    )
    .await;
    assert_eq!(agent["status"], "revoked");
}
