//! MCP management routes that need no upstream: a tool's resource argument. The tool's pin
//! comes from a listing, applied here through the store as the gateway applies one.

#[macro_use]
mod common;

use aegis_store::mcp::mcp_event;
use aegis_store::{NewMcpServer, ObservedTool, TenantId};
use common::*;
use reqwest::StatusCode;
use serde_json::json;

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
    assert_eq!(recorded[0].payload, json!({"server_id": "mcp_notes", "tool": "read_file", "resource_argument": "path"}));

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
