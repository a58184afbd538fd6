//! The API contract: every error answer, from every layer (routing, extractors, body and URI
//! limits, the WebSocket upgrade), is the JSON error shape with a code; the 400/422 rule;
//! unknown fields refused; JSON bodies need a JSON content type; and the OpenAPI document
//! states what the server does (parameters in the query, enums as on the wire, unique
//! operation ids, a description and the shared error schema on every response).
//! `.ci/contract` checks the document further with openapi-spec-validator and schemathesis.

#[macro_use]
mod common;

use common::*;
use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Asserts a 422 `invalid_field` naming `field`.
async fn expect_field_error(response: reqwest::Response, field: &str) {
    let error = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], field, "{error}");
}

store_test!(async fn routing_errors_are_json(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;

    expect_error(app.get(&f.admin, "/v1/nowhere").await, StatusCode::NOT_FOUND, "not_found").await;

    let response = app
        .request(Method::DELETE, "/v1/agents", &f.admin)
        .send()
        .await
        .unwrap();
    let allow = response.headers()[ALLOW].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    let long = format!("/v1/agents?cursor={}", "1".repeat(aegis_server::MAX_URI_BYTES));
    expect_error(app.get(&f.admin, &long).await, StatusCode::URI_TOO_LONG, "uri_too_long").await;

    // Percent-encoded bytes that are not UTF-8, in a path parameter and in a fixed segment.
    let error = expect_error(
        app.get(&f.admin, "/v1/agents/%FF%FE").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("UTF-8"), "{error}");
    expect_error(app.get(&f.admin, "/v1/%FF").await, StatusCode::NOT_FOUND, "not_found").await;

    // The live feed, asked over plain HTTP: a key first, then a handshake.
    expect_error(app.get("", "/v1/ws/events").await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    expect_error(
        app.get(&f.admin, "/v1/ws/events").await,
        StatusCode::BAD_REQUEST,
        "not_a_websocket",
    )
    .await;

    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let response = app
        .request(Method::POST, "/v1/agents", &f.admin)
        .header(CONTENT_TYPE, "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
});

store_test!(async fn json_bodies_need_a_json_content_type(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let send = |content_type: Option<&'static str>| {
        let request = app
            .request(Method::PUT, "/v1/tenants/risk-escalation", &f.admin)
            .body(r#"{"denial_threshold": 7, "window_minutes": 30}"#);
        match content_type {
            Some(value) => request.header(CONTENT_TYPE, value),
            None => request,
        }
        .send()
    };
    for refused in [None, Some("text/plain"), Some("multipart/form-data; boundary=x")] {
        expect_error(
            send(refused).await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    // JSON types, and the form type curl's `-d` sends (the runbook's command lines).
    for accepted in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/merge-patch+json",
        "application/x-www-form-urlencoded",
    ] {
        expect_json(send(Some(accepted)).await.unwrap(), StatusCode::OK).await;
    }
    // No body, no type needed: an optional body left out.
    let freeze = format!("/v1/agents/{}/freeze", f.agent_id);
    let response = app.request(Method::POST, &freeze, &f.admin).send().await.unwrap();
    expect_json(response, StatusCode::OK).await;
    // Whitespace is a body, and not JSON: only a body of no bytes is left out.
    let response = app
        .request(Method::POST, &freeze, &f.admin)
        .header(CONTENT_TYPE, "application/json")
        .body(" ")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    // The action plane too.
    let response = app
        .request(Method::POST, "/v1/authorize", &f.token)
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"tool_call": {"tool": "github", "action": "get_file"}}"#)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
});

store_test!(async fn unknown_fields_are_refused_everywhere(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    expect_json(
        app.put(&f.admin, "/v1/tenants/deny-storm", json!({"threshold": 9, "window_secs": 30}))
            .await,
        StatusCode::OK,
    )
    .await;

    // Neither a stray field nor a missing one changes the override.
    expect_field_error(app.put(&f.admin, "/v1/tenants/deny-storm", json!({"n": 3})).await, "n")
        .await;
    expect_field_error(
        app.put(&f.admin, "/v1/tenants/deny-storm", json!({"threshold": 4})).await,
        "window_secs",
    )
    .await;
    let kept = expect_json(app.get(&f.admin, "/v1/tenants/deny-storm").await, StatusCode::OK).await;
    assert_eq!(kept, json!({"threshold": 9, "window_secs": 30}));

    // Nested, on the action plane.
    let response = app
        .authorize_body(
            &f.token,
            json!({"tool_call": {"tool": "github", "action": "get_file", "tool_name": "x"}}),
        )
        .await;
    expect_field_error(response, "tool_call.tool_name").await;

    // Query parameters.
    expect_field_error(app.get(&f.admin, "/v1/agents?limt=5").await, "limt").await;
    expect_field_error(app.get(&f.admin, "/v1/decisions?agent=x").await, "agent").await;
});

store_test!(async fn whole_number_fields_read_what_int64_states(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    // The document states every whole-number field as `format: int64`: 2^63 is out of range
    // even where the server's type is unsigned, while `1.0` is an integer to JSON Schema.
    for from_seq in [json!(9_223_372_036_854_775_808_u64), json!(-1), json!(1.5)] {
        let response = app.post(&f.admin, "/v1/receipts/verify", json!({"from_seq": from_seq})).await;
        expect_field_error(response, "from_seq").await;
    }
    let answer = expect_json(
        app.post(&f.admin, "/v1/receipts/verify", json!({"from_seq": 1.0})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["verified"], true, "{answer}");
});

store_test!(async fn every_bad_limit_and_cursor_answers_422(backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.tenant_with_agent("acme").await;
    let lists = [
        "/v1/agents".to_owned(),
        "/v1/decisions".to_owned(),
        "/v1/incidents".to_owned(),
        "/v1/alerts".to_owned(),
        "/v1/receipts".to_owned(),
        format!("/v1/graph/agent/{}", f.agent_id),
    ];
    for list in &lists {
        for limit in ["abc", "0", "-1", "1001", "99999999999", "1.5", "", "+5"] {
            let response = app.get(&f.admin, &format!("{list}?limit={limit}")).await;
            expect_field_error(response, "limit").await;
        }
        expect_json(app.get(&f.admin, &format!("{list}?limit=1000")).await, StatusCode::OK)
            .await;
    }
    for list in ["/v1/agents", "/v1/decisions", "/v1/incidents", "/v1/alerts", "/v1/receipts"] {
        for cursor in ["-1", "abc", "1e3", "9999999999999999999", ""] {
            let response = app.get(&f.admin, &format!("{list}?cursor={cursor}")).await;
            expect_field_error(response, "cursor").await;
        }
        expect_json(app.get(&f.admin, &format!("{list}?cursor=0")).await, StatusCode::OK).await;
    }
    expect_field_error(app.get(&f.admin, "/v1/incidents?status=lost").await, "status").await;
});

/// Every response of the document has a description, and every error response the shared
/// error schema.
fn responses_of(openapi: &Value) -> impl Iterator<Item = (String, &str, &Value)> {
    openapi["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .unwrap()
                .iter()
                .flat_map(move |(method, operation)| {
                    operation["responses"].as_object().unwrap().iter().map(
                        move |(status, response)| {
                            (format!("{method} {path}"), status.as_str(), response)
                        },
                    )
                })
        })
}

/// Every `allOf` in `schema` (at any depth) whose members name different types, which no
/// value satisfies: a generated client or schemathesis cannot build such a body.
fn unsatisfiable_all_ofs(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(fields) => {
            if let Some(members) = fields.get("allOf").and_then(Value::as_array) {
                let types: HashSet<&str> =
                    members.iter().filter_map(|m| m["type"].as_str()).collect();
                if types.len() > 1 {
                    found.push(format!("{at}: allOf of {types:?}"));
                }
            }
            for (name, value) in fields {
                unsatisfiable_all_ofs(value, &format!("{at}/{name}"), found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unsatisfiable_all_ofs(item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

store_test!(async fn the_document_states_what_the_server_does(backend) {
    let app = TestApp::spawn(backend).await;
    let openapi = expect_json(app.get("", "/openapi.json").await, StatusCode::OK).await;

    let mut operation_ids = HashSet::new();
    for (_, operations) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(operation_ids.insert(id.to_owned()), "{method}: {id} twice");
            // The URI limit answers in front of every route.
            assert!(operation["responses"].get("414").is_some(), "{id}: no 414");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                let place = parameter["in"].as_str().unwrap();
                if ["limit", "cursor", "since", "until", "agent_id", "kind"].contains(&name) {
                    assert_eq!(place, "query", "{id}: {name}");
                }
                if place == "query" {
                    assert_ne!(parameter["required"], true, "{id}: {name}");
                }
            }
        }
    }
    for (operation, status, response) in responses_of(&openapi) {
        assert!(
            response["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{operation} {status} has no description"
        );
        if status.starts_with('4') || status.starts_with('5') {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{operation} {status}"
            );
        }
    }
    let get_agents = &openapi["paths"]["/v1/agents"]["get"]["responses"];
    for status in ["200", "401", "422", "500", "503"] {
        assert!(get_agents.get(status).is_some(), "GET /v1/agents {status}");
    }
    let authorize = &openapi["paths"]["/v1/authorize"]["post"]["responses"];
    for status in ["200", "400", "401", "413", "415", "422", "503"] {
        assert!(authorize.get(status).is_some(), "POST /v1/authorize {status}");
    }

    // Enums as they are on the wire.
    let schemas = &openapi["components"]["schemas"];
    assert_eq!(schemas["SourceTrust"]["enum"][4], "untrusted_external", "{}", schemas["SourceTrust"]);
    assert_eq!(schemas["AgentStatus"]["enum"][0], "active", "{}", schemas["AgentStatus"]);
    assert!(schemas["Verdict"]["enum"].as_array().unwrap().contains(&json!("require_approval")));
    let mut unsatisfiable = Vec::new();
    unsatisfiable_all_ofs(&openapi, "#", &mut unsatisfiable);
    assert!(unsatisfiable.is_empty(), "{unsatisfiable:#?}");
    // Constraints as validated.
    let tool = &schemas["ToolCall"]["properties"]["tool"];
    assert_eq!((tool["minLength"].as_u64(), tool["maxLength"].as_u64()), (Some(1), Some(128)), "{tool}");
});
