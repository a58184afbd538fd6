//! MCP management routes that need no upstream: a tool's resource argument. The tool's pin
//! comes from a listing, applied here through the store as the gateway applies one.

#[macro_use]
mod common;

use aegis_store::mcp::mcp_event;
use aegis_store::{NewMcpServer, ObservedTool, TenantId};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The tenant's server `notes` (`mcp_notes`) with the tool `read_file` seen once.
async fn seen_tool(app: &TestApp, tenant: &str) {
    let tenant = TenantId::new(tenant);
    let server = app
        .store
        .create_mcp_server(
            &tenant,
            NewMcpServer {
                id: "mcp_notes".into(),
                name: "notes".into(),
                url: "https://mcp.example.com/mcp".into(),
                created_at_ms: 1,
            },
        )
        .await
        .unwrap();
    app.store
        .observe_mcp_tools(
            &tenant,
            &server,
            vec![ObservedTool {
                name: "read_file".into(),
                definition_hash: "a".repeat(64),
                read_only: true,
            }],
            "agt_none",
        )
        .await
        .unwrap();
}

store_test!(async fn an_admin_names_a_tools_resource_argument(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    let viewer = app.create_key(&admin, "viewer").await;
    seen_tool(&app, "acme").await;
    let tool = "/v1/mcp/servers/mcp_notes/tools/read_file";

    let tools = expect_json(app.get(&viewer, "/v1/mcp/servers/mcp_notes/tools").await, StatusCode::OK).await;
    assert_eq!(tools[0]["resource_argument"], json!(null), "{tools}");

    let set = expect_json(app.put(&admin, tool, json!({"resource_argument": "path"})).await, StatusCode::OK).await;
    assert_eq!((&set["name"], &set["resource_argument"]), (&json!("read_file"), &json!("path")));
    let tools = expect_json(app.get(&viewer, "/v1/mcp/servers/mcp_notes/tools").await, StatusCode::OK).await;
    assert_eq!(tools[0]["resource_argument"], "path");
    let events = app.store.events_after(0, 1000).await.unwrap();
    let recorded = events.iter().filter(|e| e.kind == mcp_event::TOOL_RESOURCE_ARGUMENT_SET).collect::<Vec<_>>();
    assert_eq!(recorded.len(), 1);
    assert_eq!(*recorded[0].payload.as_json(), json!({"server_id": "mcp_notes", "tool": "read_file", "resource_argument": "path"}));

    // Every field is required (null clears it); anything else is refused, naming the field.
    for (body, field) in [
        (json!({}), "resource_argument"),
        (json!({"resource_argument": ""}), "resource_argument"),
        (json!({"resource_argument": "   "}), "resource_argument"),
        (json!({"resource_argument": 7}), "resource_argument"),
        (json!({"resource_argument": "x".repeat(257)}), "resource_argument"),
        (json!({"resource_argument": "path", "other": 1}), "other"),
    ] {
        let refused = expect_error(app.put(&admin, tool, body.clone()).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(refused["field"], field, "{body}: {refused}");
    }
    expect_error(app.put(&viewer, tool, json!({"resource_argument": null})).await, StatusCode::FORBIDDEN, "forbidden").await;
    // A tool the gateway never saw, and a server of no such id, are 404.
    expect_error(app.put(&admin, "/v1/mcp/servers/mcp_notes/tools/write_file", json!({"resource_argument": null})).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(app.put(&admin, "/v1/mcp/servers/mcp_nope/tools/read_file", json!({"resource_argument": null})).await, StatusCode::NOT_FOUND, "not_found").await;

    // Another tenant's admin reaches nothing, even with a server of the same id of its own.
    let other = app.create_tenant("globex").await;
    expect_error(app.put(&other, tool, json!({"resource_argument": null})).await, StatusCode::NOT_FOUND, "not_found").await;
    let cleared = expect_json(app.put(&admin, tool, json!({"resource_argument": null})).await, StatusCode::OK).await;
    assert_eq!(cleared["resource_argument"], json!(null));
    assert_eq!(cleared["status"], "pinned");
});

store_test!(async fn the_evidence_graph_links_an_mcp_decision_to_its_server_and_definition(backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.create_tenant("acme").await;
    seen_tool(&app, "acme").await;
    let (agent_id, token) = app.create_agent(&admin, "coder").await;
    // A call to the MCP server's tool, and one to a tool of no MCP server.
    app.decide(&token, "notes", "read_file", "trusted_internal_signed", false).await;
    app.register_github(&admin).await;
    app.decide(&token, "github", "get_file", "trusted_internal_signed", false).await;

    let graph = expect_json(app.get(&admin, &format!("/v1/graph/agent/{agent_id}")).await, StatusCode::OK).await;
    let nodes = graph["nodes"].as_array().unwrap();
    let of_type = |kind: &str| nodes.iter().filter(|n| n["type"] == kind).cloned().collect::<Vec<_>>();
    let servers = of_type("mcp_server");
    assert_eq!(servers.len(), 1, "{graph}");
    assert_eq!((&servers[0]["id"], &servers[0]["name"]), (&json!("mcp_server:mcp_notes"), &json!("notes")));
    let definitions = of_type("tool_definition");
    assert_eq!(definitions.len(), 1, "{graph}");
    assert_eq!(
        (&definitions[0]["tool"], &definitions[0]["definition_hash"], &definitions[0]["status"]),
        (&json!("read_file"), &json!("a".repeat(64)), &json!("pinned"))
    );
    let decision = of_type("decision").into_iter().find(|d| d["tool"] == "notes").unwrap();
    let edges = graph["edges"].as_array().unwrap();
    let has = |source: &Value, target: &Value, kind: &str| {
        edges.iter().any(|e| e["source"] == *source && e["target"] == *target && e["type"] == kind)
    };
    assert!(has(&decision["id"], &servers[0]["id"], "through"), "{graph}");
    assert!(has(&decision["id"], &definitions[0]["id"], "defined_by"), "{graph}");
    assert!(has(&definitions[0]["id"], &servers[0]["id"], "of"), "{graph}");

    // Another tenant's server of the same name is not this tenant's evidence.
    let other = app.create_tenant("globex").await;
    let (other_agent, other_token) = app.create_agent(&other, "coder").await;
    app.decide(&other_token, "notes", "read_file", "trusted_internal_signed", false).await;
    let graph = expect_json(app.get(&other, &format!("/v1/graph/agent/{other_agent}")).await, StatusCode::OK).await;
    assert!(!graph["nodes"].as_array().unwrap().iter().any(|n| n["type"] == "mcp_server"), "{graph}");
});
