//! Rate limits and budgets of the action plane: the settings (`/v1/tenants/rate-limits`,
//! `/v1/tenants/budgets`, `/v1/agents/{id}/rate-limits`) and what an agent over its limit
//! gets: recorded denies with `retry_after_ms`, counted by the SOC like any other deny.

#[macro_use]
mod common;

use aegis_soc::SocConfig;
use aegis_soc::consumer::Consumer;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

async fn expect_field_error(response: reqwest::Response, field: &str) {
    let error = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], field, "{error}");
}

/// A read the default policy allows from a trusted source.
async fn read(app: &TestApp, token: &str) -> Value {
    app.decide(
        token,
        "github",
        "get_file",
        "trusted_internal_signed",
        false,
    )
    .await
}

/// Reads until `count` of them were refused by the rate limit (at most 100 calls);
/// returns the refusals.
async fn rate_limited(app: &TestApp, token: &str, count: usize) -> Vec<Value> {
    let mut refused = Vec::new();
    for _ in 0..100 {
        let answer = read(app, token).await;
        if answer["decision"] == "deny" {
            refused.push(answer);
            if refused.len() == count {
                return refused;
            }
        }
    }
    panic!("only {} of 100 calls were rate limited", refused.len());
}

fn assert_rate_limited(answer: &Value) {
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with("rate_limited: "),
        "{answer}"
    );
    assert_eq!(answer["matched_policies"], json!(["aegis-rate-limit"]));
    let wait = answer["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&wait), "{answer}");
}

store_test!(async fn settings_round_trip_and_are_validated(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let viewer = app.create_key(&f.admin, "viewer").await;
    let unset = json!({"per_agent_per_sec": null, "burst": null});

    let read_limits = expect_json(app.get(&viewer, "/v1/tenants/rate-limits").await, StatusCode::OK).await;
    assert_eq!(read_limits, unset);
    let set = json!({"per_agent_per_sec": 5, "burst": 10});
    assert_eq!(expect_json(app.put(&f.admin, "/v1/tenants/rate-limits", set.clone()).await, StatusCode::OK).await, set);
    assert_eq!(expect_json(app.get(&viewer, "/v1/tenants/rate-limits").await, StatusCode::OK).await, set);
    let default_burst = json!({"per_agent_per_sec": 5, "burst": null});
    assert_eq!(expect_json(app.put(&f.admin, "/v1/tenants/rate-limits", default_burst.clone()).await, StatusCode::OK).await, default_burst);

    for (body, field) in [
        (json!({"per_agent_per_sec": 0, "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": -1, "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": 100_001, "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": 1u64 << 40, "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": 1.5, "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": "5", "burst": null}), "per_agent_per_sec"),
        (json!({"per_agent_per_sec": 5, "burst": 0}), "burst"),
        (json!({"per_agent_per_sec": 5, "burst": 1_000_001}), "burst"),
        (json!({"per_agent_per_sec": null, "burst": 5}), "burst"),
        (json!({"per_agent_per_sec": 5}), "burst"),
        (json!({"per_agent_per_sec": 5, "burst": 5, "per_tool": 1}), "per_tool"),
    ] {
        expect_field_error(app.put(&f.admin, "/v1/tenants/rate-limits", body).await, field).await;
    }
    // Nothing refused was stored.
    assert_eq!(expect_json(app.get(&viewer, "/v1/tenants/rate-limits").await, StatusCode::OK).await, default_burst);
    expect_error(app.put(&viewer, "/v1/tenants/rate-limits", unset.clone()).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(expect_json(app.put(&f.admin, "/v1/tenants/rate-limits", unset.clone()).await, StatusCode::OK).await, unset);

    // The budget.
    let no_budget = json!({"mutating_per_hour": null});
    assert_eq!(expect_json(app.get(&viewer, "/v1/tenants/budgets").await, StatusCode::OK).await, no_budget);
    let budget = json!({"mutating_per_hour": 100});
    assert_eq!(expect_json(app.put(&f.admin, "/v1/tenants/budgets", budget.clone()).await, StatusCode::OK).await, budget);
    for bad in [json!(0), json!(-3), json!(1_000_001), json!("many")] {
        expect_field_error(app.put(&f.admin, "/v1/tenants/budgets", json!({"mutating_per_hour": bad})).await, "mutating_per_hour").await;
    }
    expect_field_error(app.put(&f.admin, "/v1/tenants/budgets", json!({})).await, "mutating_per_hour").await;
    expect_error(app.put(&viewer, "/v1/tenants/budgets", no_budget.clone()).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(expect_json(app.get(&viewer, "/v1/tenants/budgets").await, StatusCode::OK).await, budget);

    // An agent's own bucket.
    let path = format!("/v1/agents/{}/rate-limits", f.agent_id);
    assert_eq!(expect_json(app.get(&viewer, &path).await, StatusCode::OK).await, unset);
    let own = json!({"per_agent_per_sec": 50, "burst": 100});
    assert_eq!(expect_json(app.put(&f.admin, &path, own.clone()).await, StatusCode::OK).await, own);
    assert_eq!(expect_json(app.get(&viewer, &path).await, StatusCode::OK).await, own);
    expect_field_error(app.put(&f.admin, &path, json!({"per_agent_per_sec": 0, "burst": null})).await, "per_agent_per_sec").await;
    expect_error(app.put(&viewer, &path, unset.clone()).await, StatusCode::FORBIDDEN, "forbidden").await;
    // The change is an agent event on the log, like a freeze.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM events WHERE kind = 'agent.rate_limits_changed' AND agent_id = ?1",
            &[f.agent_id.as_str().into()],
        )
        .await,
        1
    );
    // Another tenant's agent is not found; a revoked agent cannot change.
    let other = app.create_tenant("globex").await;
    expect_error(app.get(&other, &path).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(app.put(&other, &path, own.clone()).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_json(app.post(&f.admin, &format!("/v1/agents/{}/revoke", f.agent_id), json!({})).await, StatusCode::OK).await;
    expect_error(app.put(&f.admin, &path, unset).await, StatusCode::CONFLICT, "conflict").await;
});

store_test!(async fn a_rate_limited_agent_gets_recorded_denies_that_open_one_deny_storm(backend) {
    let app = TestApp::spawn(backend).await;
    // The SOC follows the log as `aegis serve` runs it (defaults: five denies in 60 s).
    let consumer = Consumer::start(app.store.clone(), SocConfig::default(), Arc::new(|_| {}))
        .await
        .expect("SOC consumer");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(consumer.run(stopped));

    let f = app.tenant_with_agent("acme").await;
    let (fast_id, fast) = app.create_agent(&f.admin, "fast-bot").await;
    let other = app.tenant_with_agent("globex").await;
    expect_json(
        app.put(&f.admin, "/v1/tenants/rate-limits", json!({"per_agent_per_sec": 1, "burst": 2})).await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        app.put(&f.admin, &format!("/v1/agents/{fast_id}/rate-limits"), json!({"per_agent_per_sec": 1000, "burst": 1000})).await,
        StatusCode::OK,
    )
    .await;

    // The burst passes, then every call is refused until the bucket refills.
    assert_eq!(read(&app, &f.token).await["decision"], "allow");
    let refused = rate_limited(&app, &f.token, 5).await;
    for answer in &refused {
        assert_rate_limited(answer);
    }

    // Recorded like every decision, with its receipt.
    let listed = expect_json(
        app.get(&f.admin, &format!("/v1/decisions?agent_id={}&decision=deny", f.agent_id)).await,
        StatusCode::OK,
    )
    .await;
    let mut recorded = ids(&listed, "decision_id");
    recorded.sort();
    let mut answered: Vec<String> = refused.iter().map(|a| a["decision_id"].as_str().unwrap().to_owned()).collect();
    answered.sort();
    assert_eq!(recorded, answered);
    for decision in listed.as_array().unwrap() {
        assert!(decision["reason"].as_str().unwrap().contains("rate_limited"), "{decision}");
        assert!(decision["receipt_id"].as_str().is_some_and(|id| id.starts_with("rcpt_")), "{decision}");
    }
    app.verify_chain("acme").await;

    // Five of them open exactly one deny storm.
    let storms = format!("/v1/incidents?kind=deny_storm&agent_id={}", f.agent_id);
    let mut opened = Value::Null;
    for _ in 0..150 {
        opened = expect_json(app.get(&f.admin, &storms).await, StatusCode::OK).await;
        if !opened.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(opened.as_array().unwrap().len(), 1, "{opened}");
    // Later refusals join it rather than opening another.
    rate_limited(&app, &f.token, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = expect_json(app.get(&f.admin, &storms).await, StatusCode::OK).await;
    assert_eq!(ids(&still, "id"), ids(&opened, "id"));

    // The agent with its own bucket and another tenant's agent are not limited.
    for _ in 0..20 {
        let answer = read(&app, &fast).await;
        assert_eq!(answer["decision"], "allow", "{answer}");
        assert!(answer.get("retry_after_ms").is_none(), "{answer}");
        assert_eq!(read(&app, &other.token).await["decision"], "allow");
    }
});

store_test!(async fn a_refused_call_retried_with_its_request_id_is_decided_afresh(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(&f.admin, "/v1/tenants/rate-limits", json!({"per_agent_per_sec": 1, "burst": 1})).await,
        StatusCode::OK,
    )
    .await;
    let call = |n: u32| {
        json!({
            "request_id": format!("call-{n}"),
            "tool_call": {"tool": "github", "action": "get_file"},
            "context": {"source_trust": "trusted_internal_signed"},
        })
    };
    let mut refused = None;
    for n in 0..100 {
        let answer = expect_json(app.authorize_body(&f.token, call(n)).await, StatusCode::OK).await;
        if answer["decision"] == "deny" {
            assert_rate_limited(&answer);
            refused = Some((n, answer));
            break;
        }
    }
    let (n, answer) = refused.expect("a call over the limit");
    let wait = answer["retry_after_ms"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    let again = expect_decision(app.authorize_body(&f.token, call(n)).await, "allow").await;
    assert_ne!(again["decision_id"], answer["decision_id"]);
    assert!(again.get("retry_after_ms").is_none(), "{again}");
});

store_test!(async fn the_budget_limits_calls_that_change_state(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(&f.admin, "/v1/tenants/budgets", json!({"mutating_per_hour": 2})).await,
        StatusCode::OK,
    )
    .await;
    let merge = || app.authorize(&f.token, "github", "merge_pull_request", "trusted_internal_signed", false);
    expect_decision(merge().await, "allow").await;
    // Reads are not counted.
    for _ in 0..5 {
        assert_eq!(read(&app, &f.token).await["decision"], "allow");
    }
    expect_decision(merge().await, "allow").await;
    let over = expect_decision(merge().await, "deny").await;
    assert!(over["reason"].as_str().unwrap().starts_with("budget_exceeded: "), "{over}");
    assert_eq!(over["matched_policies"], json!(["aegis-budget"]));
    // One call comes back every half hour.
    let wait = over["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1_000..=1_800_000).contains(&wait), "{over}");
    // A claim to change state counts too: the claim only tightens.
    let claimed = expect_decision(app.authorize(&f.token, "github", "get_file", "trusted_internal_signed", true).await, "deny").await;
    assert!(claimed["reason"].as_str().unwrap().starts_with("budget_exceeded: "), "{claimed}");
    assert_eq!(read(&app, &f.token).await["decision"], "allow");

    // Cleared: no budget.
    expect_json(app.put(&f.admin, "/v1/tenants/budgets", json!({"mutating_per_hour": null})).await, StatusCode::OK).await;
    expect_decision(merge().await, "allow").await;
});

store_test!(async fn a_frozen_agent_over_its_limit_is_answered_as_frozen(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(&f.admin, &format!("/v1/agents/{}/rate-limits", f.agent_id), json!({"per_agent_per_sec": 1, "burst": 1})).await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        app.post(&f.admin, &format!("/v1/agents/{}/freeze", f.agent_id), json!({"reason": "investigating"})).await,
        StatusCode::OK,
    )
    .await;
    for _ in 0..5 {
        let answer = read(&app, &f.token).await;
        assert_eq!(answer["decision"], "deny", "{answer}");
        assert_eq!(answer["matched_policies"], json!(["aegis-agent-frozen"]), "{answer}");
        assert!(answer.get("retry_after_ms").is_none(), "{answer}");
    }
});

store_test!(async fn the_authorize_answer_documents_retry_after_ms(backend) {
    let app = TestApp::spawn(backend).await;
    let document = expect_json(app.get("", "/openapi.json").await, StatusCode::OK).await;
    let field = &document["components"]["schemas"]["AuthorizeResponse"]["properties"]["retry_after_ms"];
    assert!(field["type"].to_string().contains("integer"), "{field}");
    for path in ["/v1/tenants/rate-limits", "/v1/tenants/budgets", "/v1/agents/{id}/rate-limits"] {
        assert!(document["paths"][path]["get"].is_object(), "{path}");
        assert!(document["paths"][path]["put"].is_object(), "{path}");
    }
});
