//! MCP servers and tool pins on both stores: first sight pins and registers (never over an
//! admin's registration), a new definition marks the pin changed with exactly one event
//! however often it is listed, accepting records who, and everything is scoped to a tenant.

mod support;

use aegis_core::model::{ActionRisk, Role};
use aegis_store::mcp::mcp_event;
use aegis_store::*;
use support::*;

fn seen(name: &str, hash: &str, read_only: bool) -> ObservedTool {
    ObservedTool {
        name: name.into(),
        definition_hash: hash.into(),
        read_only,
    }
}

async fn events_of(store: &dyn Store, kind: &str) -> Vec<Event> {
    store
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == kind)
        .collect()
}

async fn pins_follow_the_rule(store: &dyn Store) {
    agent(store).await;
    let acme = tenant();
    // An admin registered read_note as a write already: first sight must not loosen it.
    store
        .register_tool(
            &acme,
            "notes",
            vec![ToolAction {
                action: "read_note".into(),
                mutates_state: true,
                risk: ActionRisk::High,
                egress: false,
                sensitive: false,
            }],
        )
        .await
        .unwrap();
    let server = store
        .create_mcp_server(
            &acme,
            NewMcpServer {
                id: "mcp_1".into(),
                name: "notes".into(),
                url: "http://127.0.0.1:9/mcp".into(),
                created_at_ms: now_ms(),
            },
        )
        .await
        .unwrap();
    let duplicate = store
        .create_mcp_server(
            &acme,
            NewMcpServer {
                id: "mcp_2".into(),
                name: "notes".into(),
                url: "http://127.0.0.1:9/other".into(),
                created_at_ms: now_ms(),
            },
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(
        store.mcp_server_by_name(&acme, "notes").await.unwrap(),
        server
    );

    let first = store
        .observe_mcp_tools(
            &acme,
            &server,
            vec![
                seen("read_note", "aa", true),
                seen("delete_note", "dd", false),
            ],
            "agt_1",
        )
        .await
        .unwrap();
    assert!(first.registered_actions);
    assert_eq!(first.pins.len(), 2);
    assert!(first.pins.iter().all(|pin| pin.status == PinStatus::Pinned));
    let registered = store.tool_actions(&acme).await.unwrap();
    let facts = |action: &str| {
        registered
            .iter()
            .find(|r| r.tool == "notes" && r.action.action == action)
            .map(|r| (r.action.mutates_state, r.action.risk))
            .unwrap()
    };
    assert_eq!(
        facts("read_note"),
        (true, ActionRisk::High),
        "the admin's facts stay"
    );
    assert_eq!(facts("delete_note"), (true, FIRST_LISTING_RISK));

    // The same definitions again: nothing new. A changed one, listed three times: one event.
    let again = store
        .observe_mcp_tools(&acme, &server, vec![seen("read_note", "aa", true)], "agt_1")
        .await
        .unwrap();
    assert!(!again.registered_actions);
    for _ in 0..3 {
        store
            .observe_mcp_tools(&acme, &server, vec![seen("read_note", "bb", true)], "agt_1")
            .await
            .unwrap();
    }
    let changed = events_of(store, mcp_event::TOOL_DEFINITION_CHANGED).await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].payload.as_json()["tool"], "read_note");
    assert_eq!(changed[0].payload.as_json()["new_hash"], "bb");
    assert_eq!(changed[0].agent_id.as_deref(), Some("agt_1"));
    let pins = store.mcp_tool_pins(&acme, "mcp_1").await.unwrap();
    let read = pins.iter().find(|pin| pin.tool == "read_note").unwrap();
    assert_eq!(
        (
            read.status,
            read.definition_hash.as_str(),
            read.changed_hash.as_deref()
        ),
        (PinStatus::Changed, "aa", Some("bb"))
    );
    assert!(read.withheld());

    // Another tenant reaches none of it.
    let globex = TenantId::new("globex");
    store
        .create_tenant(
            &globex,
            NewOperatorKey {
                id: "key_globex".into(),
                name: None,
                role: Role::Admin,
                secret_hash: [3; 32],
                created_at_ms: now_ms(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store.mcp_server(&globex, "mcp_1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .mcp_tool_pins(&globex, "mcp_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .accept_mcp_tool(&globex, "mcp_1", "read_note", "key:key_globex")
            .await,
        Err(StoreError::NotFound(_))
    ));

    let accepted = store
        .accept_mcp_tool(&acme, "mcp_1", "read_note", "key:key_admin")
        .await
        .unwrap();
    assert_eq!(
        (
            accepted.status,
            accepted.definition_hash.as_str(),
            accepted.changed_hash,
            accepted.accepted_by.as_deref()
        ),
        (PinStatus::Accepted, "bb", None, Some("key:key_admin"))
    );
    assert!(matches!(
        store
            .accept_mcp_tool(&acme, "mcp_1", "read_note", "key:key_admin")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        events_of(store, mcp_event::TOOL_DEFINITION_ACCEPTED)
            .await
            .len(),
        1
    );

    store.delete_mcp_server(&acme, "mcp_1").await.unwrap();
    assert!(store.list_mcp_servers(&acme).await.unwrap().is_empty());
    assert!(
        store
            .mcp_tool_pins(&acme, "mcp_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.delete_mcp_server(&acme, "mcp_1").await,
        Err(StoreError::NotFound(_))
    ));
}

on_both_stores!(pins_follow_the_rule);
