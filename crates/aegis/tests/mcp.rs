//! MCP gateway mode end to end, with real third-party MCP software: the official MCP Python
//! SDK (PyPI `mcp`, installed in `target/mcp-venv` by `.ci/mcp-venv`) as the agent's client
//! (`tests/mcp/client.py`) and as the upstream server (`tests/mcp/upstream.py`, built with
//! the SDK's `MCPServer`), the built `aegis` binary in between, on both stores. The same
//! client also drives `aegis mcp wrap` over stdio, wrapping a local stdio server built with
//! the SDK (`tests/mcp/local_files.py`).

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use support::deployment::*;
use support::receiver::free_addr;
use support::*;

/// The Python of `target/mcp-venv`, made by `.ci/mcp-venv` on first use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let setup = Command::new(root.join(".ci/mcp-venv"))
            .status()
            .expect("run .ci/mcp-venv");
        assert!(setup.success(), ".ci/mcp-venv failed");
        root.join("target/mcp-venv/bin/python")
    })
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp")
        .join(name)
}

/// The notes server of `tests/mcp/upstream.py` on a loopback port; killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    async fn start(variant: &str) -> Upstream {
        Upstream::start_on(free_addr().port(), variant).await
    }

    async fn start_on(port: u16, variant: &str) -> Upstream {
        let child = Command::new(python())
            .arg(script("upstream.py"))
            .arg(port.to_string())
            .env("NOTES_VARIANT", variant)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the upstream MCP server");
        eventually(30, "the upstream MCP server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        Upstream { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Stops it and starts it again on the same port, serving `variant`.
    async fn restart(mut self, variant: &str) -> Upstream {
        let port = self.port;
        let _ = self.child.kill();
        let _ = self.child.wait();
        Upstream::start_on(port, variant).await
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/mcp/client.py` with `program` against the gateway's `/mcp/{server}` and
/// returns what it saw, one entry per step after the initialize handshake.
async fn mcp_client(program: Value) -> Vec<Value> {
    client_of("aegis-gateway", program).await
}

/// Runs `tests/mcp/client.py` with `program` and returns what it saw, one entry per step
/// after the initialize handshake with `server` (which is checked here).
async fn client_of(server: &str, program: Value) -> Vec<Value> {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script("client.py"))
            .arg(program.to_string())
            .output()
            .expect("run the MCP client")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "MCP client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<Value> = serde_json::from_slice(&output.stdout).expect("client prints JSON");
    assert_eq!(seen[0], json!({"op": "initialize", "server": server}));
    seen[1..].to_vec()
}

fn list() -> Value {
    json!({"op": "list"})
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"op": "call", "name": name, "arguments": arguments})
}

fn call_from(name: &str, arguments: Value, source_trust: &str) -> Value {
    json!({"op": "call", "name": name, "arguments": arguments,
           "meta": {"aegis": {"source_trust": source_trust}}})
}

/// The first id with `prefix` (`dec_`, `apr_`) that an error result's text names.
fn id_named(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} id in {text:?}"));
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// A tenant's gateway with the notes upstream registered as `notes` and one agent.
struct Setup {
    client: reqwest::Client,
    server_id: String,
    agent_id: String,
    token: String,
}

async fn register_notes(gw: &Gateway, admin: &str, upstream: &Upstream) -> Setup {
    let client = reqwest::Client::new();
    let agent = post_json(
        &client,
        gw.url("/v1/agents"),
        admin,
        &json!({"name": "notes-agent"}),
    )
    .await;
    let response = client
        .post(gw.url("/v1/mcp/servers"))
        .bearer_auth(admin)
        .json(&json!({"name": "notes", "url": upstream.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let server: Value = response.json().await.unwrap();
    assert_eq!(server["name"], "notes");
    assert_eq!(server["url"], upstream.url());
    Setup {
        client,
        server_id: server["id"].as_str().unwrap().to_owned(),
        agent_id: agent["id"].as_str().unwrap().to_owned(),
        token: agent["agent_token"].as_str().unwrap().to_owned(),
    }
}

fn program(gw: &Gateway, token: &str, steps: Vec<Value>) -> Value {
    json!({"url": gw.url("/mcp/notes"), "token": token, "steps": steps})
}

e2e_test! {
    async fn calls_are_listed_decided_forwarded_and_denies_storm(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(
            dir.path(),
            db.arg(),
            &[("AEGIS_MCP_ALLOW_PRIVATE", "true"), ("AEGIS_MCP_TIMEOUT_SECS", "2")],
        )
        .await;
        let upstream = Upstream::start("honest").await;
        let s = register_notes(&gw, &admin, &upstream).await;
        // A policy no context can satisfy: the tool is left out of this agent's listing.
        let policy = s
            .client
            .post(gw.url("/v1/policies"))
            .bearer_auth(&admin)
            .json(&json!({"id": "no-purge", "text": "forbid (principal, action, resource) when { resource.action == \"purge_notes\" };"}))
            .send()
            .await
            .unwrap();
        assert_eq!(policy.status(), 201);

        // Operator keys, unknown servers and bad trust headers are refused before MCP.
        for (credential, path, status) in [
            (admin.as_str(), "/mcp/notes", 401),
            (s.token.as_str(), "/mcp/nope", 404),
        ] {
            let response = s.client.post(gw.url(path)).bearer_auth(credential)
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).send().await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            let body: Value = response.json().await.unwrap();
            assert!(body["error"]["code"].is_string(), "{body}");
        }
        let response = s.client.post(gw.url("/mcp/notes")).bearer_auth(&s.token)
            .header("X-Aegis-Source-Trust", "very_trusted")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).send().await.unwrap();
        assert_eq!(response.status(), 422);
        // Malformed JSON-RPC is refused by the SDK's transport, never reaches a decision.
        let response = s.client.post(gw.url("/mcp/notes")).bearer_auth(&s.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body("{not json").send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());

        let seen = mcp_client(program(&gw, &s.token, vec![
            json!({"op": "ping"}),
            list(),
            call("read_note", json!({"note_id": "1"})),
            call("slow_echo", json!({"text": "late", "seconds": 5})),
            call("big_note", json!({"mebibytes": 9})),
            call("read_note", json!({"note_id": "1"})),
        ]))
        .await;
        assert_eq!(seen[0], json!({"op": "ping"}));
        assert_eq!(seen[1]["tools"], json!(["big_note", "delete_note", "read_note", "slow_echo"]));
        // A read from an unknown source is allowed and the upstream's result comes back.
        assert_eq!(seen[2], json!({"op": "call", "is_error": false, "text": "buy milk"}));
        // A slow upstream is cut off at AEGIS_MCP_TIMEOUT_SECS with an error result.
        assert_eq!(seen[3]["is_error"], true, "{}", seen[3]);
        assert!(seen[3]["text"].as_str().unwrap().contains("did not answer within 2 s"), "{}", seen[3]);
        // An answer over AEGIS_MCP_MAX_RESULT_BYTES (8 MiB) is cut off while it is read: an
        // error result naming the limit, after a recorded allow, and the gateway goes on.
        let big = seen[4]["text"].as_str().unwrap();
        assert!(seen[4]["is_error"] == true && big.contains("8388608"), "{}", seen[4]);
        assert!(big.len() < 4096, "the cut-off answer is not passed on: {} bytes", big.len());
        let allowed = get_json(&s.client, gw.url(&format!("/v1/decisions/{}", id_named(big, "dec_"))), &admin).await;
        assert_eq!((&allowed["decision"], &allowed["action"]), (&json!("allow"), &json!("big_note")));
        let failures = query_column(db.arg(), "SELECT payload FROM events WHERE kind = 'mcp.upstream_failed' ORDER BY seq").await;
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[1].contains("8388608") && failures[1].contains("big_note"), "{failures:?}");
        assert_eq!(seen[5], json!({"op": "call", "is_error": false, "text": "buy milk"}));
        let health = s.client.get(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);

        // Every tool the listing showed is pinned and registered with conservative facts.
        let pins = get_json(&s.client, gw.url(&format!("/v1/mcp/servers/{}/tools", s.server_id)), &admin).await;
        let pins = pins.as_array().unwrap();
        assert_eq!(pins.len(), 5, "{pins:?}");
        assert!(pins.iter().all(|p| p["status"] == "pinned" && p["definition_hash"].as_str().unwrap().len() == 64));
        let tools = get_json(&s.client, gw.url("/v1/tools"), &admin).await;
        let delete = tools.as_array().unwrap().iter()
            .find(|t| t["tool"] == "notes" && t["action"] == "delete_note").unwrap();
        assert_eq!((delete["mutates_state"].clone(), delete["risk"].clone()), (json!(true), json!("medium")));
        let read = tools.as_array().unwrap().iter()
            .find(|t| t["tool"] == "notes" && t["action"] == "read_note").unwrap();
        assert_eq!(read["mutates_state"], false);

        // A destructive call from an unknown source: a recorded deny, as an error result
        // that names the decision; from a trusted source it is forwarded.
        let mut steps: Vec<Value> = (0..5).map(|_| call("delete_note", json!({"note_id": "2"}))).collect();
        steps.push(call_from("delete_note", json!({"note_id": "2"}), "trusted_internal_signed"));
        let seen = mcp_client(program(&gw, &s.token, steps)).await;
        for denied in &seen[..5] {
            assert_eq!(denied["is_error"], true, "{denied}");
            assert!(denied["text"].as_str().unwrap().starts_with("Denied by AegisAgent"), "{denied}");
        }
        assert_eq!(seen[5], json!({"op": "call", "is_error": false, "text": "deleted 2"}));
        let decision_id = id_named(seen[0]["text"].as_str().unwrap(), "dec_");
        let decision = get_json(&s.client, gw.url(&format!("/v1/decisions/{decision_id}")), &admin).await;
        assert_eq!(
            (&decision["decision"], &decision["tool"], &decision["action"], &decision["source_trust"], &decision["agent_id"]),
            (&json!("deny"), &json!("notes"), &json!("delete_note"), &json!("unknown"), &json!(s.agent_id))
        );

        // Five denied MCP calls are five ordinary denies: exactly one deny_storm.
        let storms = eventually(15, "the deny_storm incident", || async {
            let found = get_json(&s.client, gw.url(&format!("/v1/incidents?kind=deny_storm&agent_id={}", s.agent_id)), &admin).await;
            (!found.as_array().unwrap().is_empty()).then_some(found)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let storms_after = get_json(&s.client, gw.url(&format!("/v1/incidents?kind=deny_storm&agent_id={}", s.agent_id)), &admin).await;
        assert_eq!(storms.as_array().unwrap().len(), 1);
        assert_eq!(storms_after.as_array().unwrap().len(), 1);

        // Every call is counted by its outcome, with no server or tool name as a label.
        let metrics = s.client.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
        for (outcome, count) in [("forwarded", 3), ("denied", 5), ("upstream_failed", 2)] {
            let line = format!("aegis_mcp_calls_total{{outcome=\"{outcome}\"}} {count}");
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
        assert!(metrics.lines().any(|l| l == "aegis_mcp_upstream_duration_seconds_count 5"), "{metrics}");
        assert!(!metrics.contains("notes"), "{metrics}");
    }
}

e2e_test! {
    async fn an_approved_call_passes_once_and_not_twice(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[("AEGIS_MCP_ALLOW_PRIVATE", "true")]).await;
        let upstream = Upstream::start("honest").await;
        let s = register_notes(&gw, &admin, &upstream).await;
        // A destructive call driven by a customer's content: the default pack asks a person.
        let delete = || call_from("delete_note", json!({"note_id": "2"}), "semi_trusted_customer");

        let seen = mcp_client(program(&gw, &s.token, vec![delete()])).await;
        assert_eq!(seen[0]["is_error"], true, "{}", seen[0]);
        let text = seen[0]["text"].as_str().unwrap();
        assert!(text.contains("needs a person's approval"), "{text}");
        let approval_id = id_named(text, "apr_");
        let approved = s
            .client
            .post(gw.url(&format!("/v1/approvals/{approval_id}/approve")))
            .bearer_auth(&admin)
            .json(&json!({"reason": "the customer asked for it"}))
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 200);

        // The identical call now passes, once: the approval is consumed by the first use,
        // and the next identical call asks people again, with a new approval.
        let seen = mcp_client(program(&gw, &s.token, vec![delete(), delete()])).await;
        assert_eq!(seen[0], json!({"op": "call", "is_error": false, "text": "deleted 2"}));
        assert_eq!(seen[1]["is_error"], true, "{}", seen[1]);
        let again = id_named(seen[1]["text"].as_str().unwrap(), "apr_");
        assert_ne!(again, approval_id);
        let used = get_json(&s.client, gw.url(&format!("/v1/approvals/{approval_id}")), &admin).await;
        assert_eq!(used["status"], "consumed");
        let consumer = used["consumed_by_decision_id"].as_str().unwrap();
        let decision = get_json(&s.client, gw.url(&format!("/v1/decisions/{consumer}")), &admin).await;
        assert_eq!(
            (&decision["decision"], &decision["tool"], &decision["action"]),
            (&json!("allow"), &json!("notes"), &json!("delete_note"))
        );
    }
}

e2e_test! {
    async fn a_changed_definition_is_withheld_alerted_once_and_accepted(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[("AEGIS_MCP_ALLOW_PRIVATE", "true")]).await;
        let upstream = Upstream::start("honest").await;
        let s = register_notes(&gw, &admin, &upstream).await;
        // At L3 the change's incident records the tenant-wide block as its response.
        let level = s.client.put(gw.url("/v1/tenants/soc-autonomy")).bearer_auth(&admin)
            .json(&json!({"level": "L3"})).send().await.unwrap();
        assert_eq!(level.status(), 200);
        let seen = mcp_client(program(&gw, &s.token, vec![list()])).await;
        assert_eq!(seen[0]["tools"], json!(["big_note", "delete_note", "purge_notes", "read_note", "slow_echo"]));

        // The upstream now describes read_note differently (a rug pull).
        let _upstream = upstream.restart("poisoned").await;
        let seen = mcp_client(program(&gw, &s.token, vec![
            list(),
            list(),
            call("read_note", json!({"note_id": "1"})),
        ]))
        .await;
        for listing in &seen[..2] {
            assert_eq!(listing["tools"], json!(["big_note", "delete_note", "purge_notes", "slow_echo"]), "{listing}");
        }
        assert_eq!(seen[2]["is_error"], true);
        let text = seen[2]["text"].as_str().unwrap();
        assert!(text.contains("changed since it was pinned"), "{text}");
        let decision = get_json(&s.client, gw.url(&format!("/v1/decisions/{}", id_named(text, "dec_"))), &admin).await;
        assert_eq!(decision["decision"], "deny");

        let tools_url = gw.url(&format!("/v1/mcp/servers/{}/tools", s.server_id));
        let pins = get_json(&s.client, tools_url.clone(), &admin).await;
        let read = pins.as_array().unwrap().iter().find(|p| p["name"] == "read_note").unwrap().clone();
        assert_eq!(read["status"], "changed");
        let new_hash = read["changed_hash"].as_str().unwrap().to_owned();
        assert_ne!(read["definition_hash"], read["changed_hash"]);

        // One high alert for the change, however often it was listed.
        let alerts = eventually(15, "the tool_definition_changed alert", || async {
            let found = get_json(&s.client, gw.url("/v1/alerts?kind=tool_definition_changed"), &admin).await;
            (!found.as_array().unwrap().is_empty()).then_some(found)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let alerts_after = get_json(&s.client, gw.url("/v1/alerts?kind=tool_definition_changed"), &admin).await;
        assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
        assert_eq!(alerts_after, alerts);
        assert_eq!(alerts[0]["severity"], "high");
        assert_eq!(alerts[0]["count"], 1);

        // One incident of that kind, on the agent whose listing met the change, whose
        // automatic response is the block of the tool for every agent of the tenant.
        let incidents = get_json(&s.client, gw.url("/v1/incidents?kind=tool_definition_changed"), &admin).await;
        assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
        assert_eq!((&incidents[0]["agent_id"], &incidents[0]["severity"], &incidents[0]["status"]),
                   (&json!(s.agent_id), &json!("high"), &json!("open")));
        let incident_url = gw.url(&format!("/v1/incidents/{}", incidents[0]["id"].as_str().unwrap()));
        let incident = get_json(&s.client, incident_url.clone(), &admin).await;
        let responses = incident["response_actions"].as_array().unwrap();
        assert_eq!(responses.len(), 1, "{incident}");
        assert_eq!((&responses[0]["action"], &responses[0]["mode"]), (&json!("block_tool"), &json!("automatic")));
        assert!(responses[0]["detail"].as_str().unwrap().contains("every agent"), "{incident}");
        // The block holds for every agent of the tenant, not only the one that listed it.
        let other_agent = post_json(&s.client, gw.url("/v1/agents"), &admin, &json!({"name": "other-agent"})).await;
        let other_token = other_agent["agent_token"].as_str().unwrap();
        let seen = mcp_client(program(&gw, other_token, vec![list(), call("read_note", json!({"note_id": "1"}))])).await;
        assert!(!seen[0]["tools"].as_array().unwrap().contains(&json!("read_note")), "{}", seen[0]);
        assert!(seen[1]["text"].as_str().unwrap().contains("changed since it was pinned"), "{}", seen[1]);
        // The agent that listed it is not frozen: the change is the upstream's doing.
        let agent = get_json(&s.client, gw.url(&format!("/v1/agents/{}", s.agent_id)), &admin).await;
        assert_eq!(agent["status"], "active");

        // Agents cannot accept; a viewer cannot either; an admin can, and it is recorded.
        let accept = gw.url(&format!("/v1/mcp/servers/{}/tools/read_note/accept", s.server_id));
        let refused = s.client.post(&accept).bearer_auth(&s.token).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let accepted = s.client.post(&accept).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(accepted.status(), 200);
        let accepted: Value = accepted.json().await.unwrap();
        assert_eq!(accepted["status"], "accepted");
        assert_eq!(accepted["definition_hash"], new_hash.as_str());
        assert!(accepted["accepted_by"].as_str().unwrap().starts_with("key:"), "{accepted}");
        let again = s.client.post(&accept).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(again.status(), 409);
        // Accepting lifts the block and closes the incident, naming who accepted.
        let incident = get_json(&s.client, incident_url, &admin).await;
        assert_eq!(incident["status"], "closed", "{incident}");
        assert!(incident["close_reason"].as_str().unwrap().contains("accepted by key:"), "{incident}");

        let seen = mcp_client(program(&gw, &s.token, vec![list(), call("read_note", json!({"note_id": "1"}))])).await;
        assert_eq!(seen[0]["tools"], json!(["big_note", "delete_note", "purge_notes", "read_note", "slow_echo"]));
        assert_eq!(seen[1], json!({"op": "call", "is_error": false, "text": "buy milk"}));

        // Another tenant sees none of it, and cannot accept.
        let other_admin = init_on(dir.path(), db.arg(), "globex");
        let hidden = s.client.get(&tools_url).bearer_auth(&other_admin).send().await.unwrap();
        assert_eq!(hidden.status(), 404);
        let hidden = s.client.post(&accept).bearer_auth(&other_admin).send().await.unwrap();
        assert_eq!(hidden.status(), 404);
    }
}

e2e_test! {
    async fn a_policy_on_the_resource_decides_calls_naming_it(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[("AEGIS_MCP_ALLOW_PRIVATE", "true")]).await;
        let upstream = Upstream::start("honest").await;
        let s = register_notes(&gw, &admin, &upstream).await;
        let seen = mcp_client(program(&gw, &s.token, vec![list()])).await;
        assert!(seen[0]["tools"].as_array().unwrap().contains(&json!("read_note")), "{}", seen[0]);
        let set = s.client
            .put(gw.url(&format!("/v1/mcp/servers/{}/tools/read_note", s.server_id)))
            .bearer_auth(&admin)
            .json(&json!({"resource_argument": "note_id"}))
            .send().await.unwrap();
        assert_eq!(set.status(), 200);
        let policy = s.client.post(gw.url("/v1/policies")).bearer_auth(&admin)
            .json(&json!({"id": "private-note", "text": "forbid (principal, action, resource) when { context has target && context.target == \"2\" };"}))
            .send().await.unwrap();
        assert_eq!(policy.status(), 201);

        let seen = mcp_client(program(&gw, &s.token, vec![
            call("read_note", json!({"note_id": "1"})),
            call("read_note", json!({"note_id": "2"})),
            call("read_note", json!({"note_id": 2})),
            call("read_note", json!({})),
        ]))
        .await;
        assert_eq!(seen[0], json!({"op": "call", "is_error": false, "text": "buy milk"}));
        let decisions = get_json(&s.client, gw.url("/v1/decisions?tool=notes&decision=allow"), &admin).await;
        assert_eq!(decisions[0]["resource"], "1", "{decisions}");
        // The policy sees the argument as the call's resource.
        let text = seen[1]["text"].as_str().unwrap();
        assert!(text.starts_with("Denied by AegisAgent"), "{text}");
        let decision = get_json(&s.client, gw.url(&format!("/v1/decisions/{}", id_named(text, "dec_"))), &admin).await;
        assert_eq!(decision["resource"], "2", "{decision}");
        assert!(decision["matched_policies"].to_string().contains("private-note"), "{decision}");
        // A declared resource argument that is not a string, or missing: denied, recorded.
        for (seen, why) in [(&seen[2], "must be a string"), (&seen[3], "is missing")] {
            let text = seen["text"].as_str().unwrap();
            assert!(seen["is_error"] == true && text.contains(why), "{seen}");
            let decision = get_json(&s.client, gw.url(&format!("/v1/decisions/{}", id_named(text, "dec_"))), &admin).await;
            assert_eq!((&decision["decision"], &decision["resource"]), (&json!("deny"), &json!(null)), "{decision}");
        }
    }
}

/// A client's session started on one replica goes on on another (PostgreSQL): the endpoint
/// keeps no session state, so any replica serves any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_on_another_replica() {
    let d = Deployment::start(2, &[("AEGIS_MCP_ALLOW_PRIVATE", "true")]).await;
    let upstream = Upstream::start("honest").await;
    let s = register_notes(&d.replicas[0], &d.admin, &upstream).await;
    let mut started_on_first = program(
        &d.replicas[0],
        &s.token,
        vec![list(), call("read_note", json!({"note_id": "1"}))],
    );
    started_on_first["then_url"] = d.replicas[1].url("/mcp/notes").into();
    let seen = mcp_client(started_on_first).await;
    assert_eq!(
        seen[0]["tools"],
        json!([
            "big_note",
            "delete_note",
            "purge_notes",
            "read_note",
            "slow_echo"
        ])
    );
    assert_eq!(
        seen[1],
        json!({"op": "call", "is_error": false, "text": "buy milk"})
    );
    let served_by_second = query_column(
        d.database.url(),
        "SELECT count(*)::text FROM decisions WHERE tool = 'notes'",
    )
    .await;
    assert_eq!(served_by_second, vec!["1"]);
}

/// A desktop MCP client's view of `aegis mcp wrap` (with `flags`): the client starts the
/// wrap, which starts `tests/mcp/local_files.py` over `root`, serving `variant`.
async fn wrap_client(
    gw: &str,
    token: &str,
    flags: &[&str],
    root: &Path,
    variant: &str,
    steps: Vec<Value>,
) -> Vec<Value> {
    let mut args = json!(["mcp", "wrap", "--gateway", gw, "--server", "files"]);
    let args_list = args.as_array_mut().unwrap();
    args_list.extend(flags.iter().map(|flag| json!(flag)));
    args_list.extend([
        json!("--"),
        json!(python()),
        json!(script("local_files.py")),
        json!(root),
    ]);
    let program = json!({
        "stdio": {
            "command": AEGIS,
            "args": args,
            "env": {"AEGIS_AGENT_TOKEN": token, "FILES_VARIANT": variant},
        },
        "steps": steps,
    });
    client_of("aegis-mcp-wrap", program).await
}

/// What the local server's tools did, one line per call that reached them.
fn journal(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("journal"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

e2e_test! {
    async fn a_wrapped_local_server_is_governed_by_the_gateway(backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = reqwest::Client::new();
        let agent = post_json(&client, gw.url("/v1/agents"), &admin, &json!({"name": "desktop"})).await;
        let token = agent["agent_token"].as_str().unwrap().to_owned();
        let server = post_json(&client, gw.url("/v1/mcp/servers"), &admin,
            &json!({"name": "files", "transport": "stdio"})).await;
        assert_eq!((&server["transport"], &server["url"]), (&json!("stdio"), &Value::Null));
        let server_id = server["id"].as_str().unwrap().to_owned();
        let policy = client.post(gw.url("/v1/policies")).bearer_auth(&admin)
            .json(&json!({"id": "no-wipe", "text": "forbid (principal, action, resource) when { resource.action == \"wipe_disk\" };"}))
            .send().await.unwrap();
        assert_eq!(policy.status(), 201);
        // The gateway cannot reach a local server itself.
        let response = client.post(gw.url("/mcp/files")).bearer_auth(&token)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).send().await.unwrap();
        assert_eq!(response.status(), 409);

        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.txt"), "hello").unwrap();
        std::fs::write(root.path().join("b.txt"), "keep me").unwrap();
        let gateway = gw.url("");
        let seen = wrap_client(&gateway, &token, &[], root.path(), "honest", vec![
            list(),
            call("read_file", json!({"name": "a.txt"})),
            call("delete_file", json!({"name": "b.txt"})),
            call_from("delete_file", json!({"name": "b.txt"}), "trusted_internal_signed"),
        ]).await;
        // A tool this agent may never call is not listed.
        assert_eq!(seen[0]["tools"], json!(["delete_file", "read_file"]), "{}", seen[0]);
        // A read is allowed and the local server's result comes back unchanged.
        assert_eq!(seen[1], json!({"op": "call", "is_error": false, "text": "hello"}));
        // A destructive call from an unknown source is a recorded deny; the tool never ran.
        assert_eq!(seen[2]["is_error"], true, "{}", seen[2]);
        let text = seen[2]["text"].as_str().unwrap();
        assert!(text.starts_with("Denied by AegisAgent"), "{text}");
        let decision = get_json(&client, gw.url(&format!("/v1/decisions/{}", id_named(text, "dec_"))), &admin).await;
        assert_eq!(
            (&decision["decision"], &decision["tool"], &decision["action"], &decision["source_trust"], &decision["agent_id"]),
            (&json!("deny"), &json!("files"), &json!("delete_file"), &json!("unknown"), &agent["id"])
        );
        // The same call stated as trusted in `_meta` is allowed and runs.
        assert_eq!(seen[3], json!({"op": "call", "is_error": false, "text": "deleted b.txt"}));
        assert_eq!(journal(root.path()), ["read_file a.txt", "delete_file b.txt"]);
        // `--source-trust` states where the client's calls come from, unless a call says.
        let seen = wrap_client(&gateway, &token, &["--source-trust", "semi_trusted_customer"], root.path(), "honest", vec![
            call("delete_file", json!({"name": "a.txt"})),
        ]).await;
        assert_eq!(seen[0]["is_error"], true, "{}", seen[0]);
        let text = seen[0]["text"].as_str().unwrap();
        assert!(text.contains("needs a person's approval"), "{text}");
        let approval = get_json(&client, gw.url(&format!("/v1/approvals/{}", id_named(text, "apr_"))), &admin).await;
        assert_eq!((&approval["status"], &approval["action"]), (&json!("pending"), &json!("delete_file")), "{approval}");
        assert_eq!(journal(root.path()).len(), 2, "the call waiting for approval never ran");
        let pins = get_json(&client, gw.url(&format!("/v1/mcp/servers/{server_id}/tools")), &admin).await;
        assert_eq!(pins.as_array().unwrap().len(), 3, "{pins}");
        assert!(pins.as_array().unwrap().iter().all(|p| p["status"] == "pinned"), "{pins}");

        // The local server now describes read_file differently: withheld, refused, one alert.
        let seen = wrap_client(&gateway, &token, &[], root.path(), "poisoned", vec![
            list(),
            list(),
            call("read_file", json!({"name": "a.txt"})),
        ]).await;
        for listing in &seen[..2] {
            assert_eq!(listing["tools"], json!(["delete_file"]), "{listing}");
        }
        assert_eq!(seen[2]["is_error"], true, "{}", seen[2]);
        let text = seen[2]["text"].as_str().unwrap();
        assert!(text.contains("changed since it was pinned"), "{text}");
        let decision = get_json(&client, gw.url(&format!("/v1/decisions/{}", id_named(text, "dec_"))), &admin).await;
        assert_eq!(decision["decision"], "deny");
        let alerts = eventually(15, "the tool_definition_changed alert", || async {
            let found = get_json(&client, gw.url("/v1/alerts?kind=tool_definition_changed"), &admin).await;
            (!found.as_array().unwrap().is_empty()).then_some(found)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let alerts_after = get_json(&client, gw.url("/v1/alerts?kind=tool_definition_changed"), &admin).await;
        assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
        assert_eq!(alerts_after, alerts);
        assert_eq!(alerts[0]["count"], 1);
        assert_eq!(journal(root.path()).len(), 2, "the withheld tool never ran");

        // Gateway down: nothing is listed and nothing runs, not even a read.
        gw.terminate();
        let seen = wrap_client(&gateway, &token, &[], root.path(), "honest", vec![
            call("read_file", json!({"name": "a.txt"})),
            list(),
        ]).await;
        assert_eq!(seen[0]["is_error"], true, "{}", seen[0]);
        let text = seen[0]["text"].as_str().unwrap();
        assert!(text.starts_with("AegisAgent could not decide this call, so it was not made"), "{text}");
        assert!(seen[1]["error"].as_str().is_some_and(|e| e.contains("cannot reach the gateway")), "{}", seen[1]);
        assert_eq!(journal(root.path()).len(), 2, "no tool ran while the gateway was down");
    }
}

/// `aegis mcp wrap` of server `files` towards a gateway that is not there (the discard
/// port), running the test venv's Python on the arguments the caller adds.
fn wrap_without_gateway() -> Command {
    let mut command = Command::new(AEGIS);
    command
        .args([
            "mcp",
            "wrap",
            "--gateway",
            "http://127.0.0.1:9",
            "--server",
            "files",
            "--",
        ])
        .arg(python());
    command
}

/// The wrap's own failures: no token, a local server that never speaks MCP, each refused
/// with a line on standard error and nothing on standard output (the protocol's stream).
#[test]
fn the_wrap_refuses_to_run_without_a_token_or_a_local_server() {
    let wrap = |token: Option<&str>| {
        let mut command = wrap_without_gateway();
        command
            .args(["-c", "import sys; sys.exit(3)"])
            .env_remove("AEGIS_AGENT_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("AEGIS_AGENT_TOKEN", token);
        }
        command.output().unwrap()
    };
    for (token, says) in [
        (None, "AEGIS_AGENT_TOKEN is not set"),
        (Some("aat_whatever"), "did not complete the MCP handshake"),
    ] {
        let output = wrap(token);
        assert!(!output.status.success());
        assert!(
            output.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains("aat_whatever"),
            "the token is never shown: {stderr}"
        );
    }
}

/// The local server ending on its own ends the wrap: non-zero, one line saying so.
#[tokio::test]
async fn the_wrap_exits_when_its_local_server_does() {
    let root = tempfile::tempdir().unwrap();
    let mut wrap = wrap_without_gateway()
        .arg(script("local_files.py"))
        .arg(root.path())
        .env("AEGIS_AGENT_TOKEN", "aat_whatever")
        .env("FILES_EXIT_AFTER", "1")
        // Held open and silent: the client never speaks, so only the child's exit ends it.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually(30, "the wrap to exit", || {
        let exited = wrap.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(1));
    let output = wrap.wait_with_output().unwrap();
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|line| line.starts_with("aegis mcp wrap:"))
            .collect::<Vec<_>>(),
        [format!(
            "aegis mcp wrap: the local MCP server `{}` exited; stopping",
            python().display()
        )],
        "{stderr}"
    );
}
