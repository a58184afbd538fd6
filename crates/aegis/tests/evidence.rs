//! Evidence against the built binary: the incident graph with verified receipts, the receipts
//! API, tampering caught by the API and by the background integrity check, the narrative
//! (retry loop vs probing, LLM redaction and timeout fallback) and the evidence bundle.

mod support;

use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// Denies from `token` until the agent's deny_storm incident exists; returns its id.
async fn storm_incident(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
    agent_id: &str,
) -> String {
    eventually(10, "the deny_storm incident", || async {
        let found = get_json(
            client,
            gw.url(&format!(
                "/v1/incidents?kind=deny_storm&agent_id={agent_id}"
            )),
            admin,
        )
        .await;
        found
            .as_array()
            .unwrap()
            .first()
            .map(|i| i["id"].as_str().unwrap().to_owned())
    })
    .await
}

async fn call(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    tool: &str,
    action: &str,
    resource: &str,
) -> String {
    let resp: Value = post_json(
        client,
        gw.url("/v1/authorize"),
        token,
        &json!({
            "tool_call": {"tool": tool, "action": action, "resource": resource,
                          "parameters": {"base_branch": "main", "secret_param": "s3cr3t-value"},
                          "mutates_state": true},
            "context": {"source_trust": "untrusted_external"}
        }),
    )
    .await;
    resp["decision"].as_str().unwrap().to_owned()
}

fn nodes<'a>(graph: &'a Value, kind: &str) -> Vec<&'a Value> {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_graph_has_verified_receipts_and_tampering_is_caught_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let other_admin = init(dir.path(), &db, "globex");
    let env = [("AEGIS_INTEGRITY_INTERVAL_SECS", "1")];
    let gw = Gateway::start_with(dir.path(), &db, &env).await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..6 {
        assert_eq!(
            authorize(&client, &gw, &token, "untrusted_external").await,
            "deny"
        );
    }
    let incident_id = storm_incident(&client, &gw, &admin, &agent_id).await;

    // The runbook's graph: every decision with risk_score, reason, policies, a verified receipt.
    let graph = eventually(5, "all 6 decisions in the graph", || async {
        let graph = get_json(
            &client,
            gw.url(&format!("/v1/graph/incident/{incident_id}")),
            &admin,
        )
        .await;
        (nodes(&graph, "decision").len() == 6).then_some(graph)
    })
    .await;
    assert_eq!(graph["truncated"], false);
    for d in nodes(&graph, "decision") {
        assert!(d["risk_score"].is_u64(), "{d}");
        assert!(!d["reason"].as_str().unwrap().is_empty());
        assert!(!d["matched_policies"].as_array().unwrap().is_empty());
        assert_eq!(d["decision"], "deny");
        assert_eq!(d["tool"], "github");
        assert_eq!(d["action"], "merge_pull_request");
        assert!(d["created_at"].is_string());
    }
    let receipts = nodes(&graph, "receipt");
    assert_eq!(receipts.len(), 6);
    assert!(
        receipts.iter().all(|r| r["verified"] == true),
        "{receipts:?}"
    );
    for kind in ["incident", "agent", "tool", "policy"] {
        assert!(!nodes(&graph, kind).is_empty(), "a {kind} node");
    }
    let edges = graph["edges"].as_array().unwrap();
    for kind in [
        "evidence", "made_by", "calls", "matched", "receipt", "concerns",
    ] {
        assert!(edges.iter().any(|e| e["type"] == kind), "a {kind} edge");
    }
    let limited = get_json(
        &client,
        gw.url(&format!("/v1/graph/incident/{incident_id}?limit=2")),
        &admin,
    )
    .await;
    assert_eq!(limited["truncated"], true);
    assert_eq!(nodes(&limited, "decision").len(), 2);
    let agent_graph = get_json(
        &client,
        gw.url(&format!("/v1/graph/agent/{agent_id}")),
        &admin,
    )
    .await;
    assert_eq!(nodes(&agent_graph, "decision").len(), 6);
    assert_eq!(nodes(&agent_graph, "incident").len(), 1);

    // Viewers read evidence; agent tokens do not.
    let viewer: Value = post_json(
        &client,
        gw.url("/v1/keys"),
        &admin,
        &json!({"role": "viewer"}),
    )
    .await;
    let viewer = viewer["key"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/graph/incident/{incident_id}"),
        format!("/v1/incidents/{incident_id}/narrate"),
        "/v1/receipts".to_owned(),
        "/v1/receipts/keys".to_owned(),
    ] {
        get_json(&client, gw.url(&path), &viewer).await;
        let resp = client
            .get(gw.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with an agent token");
    }

    // Another tenant's ids are 404.
    for path in [
        format!("/v1/graph/incident/{incident_id}"),
        format!("/v1/graph/agent/{agent_id}"),
        format!("/v1/incidents/{incident_id}/narrate"),
        format!("/v1/incidents/{incident_id}/evidence"),
    ] {
        let resp = client
            .get(gw.url(&path))
            .bearer_auth(&other_admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }

    // Receipts API.
    let list = get_json(&client, gw.url("/v1/receipts?limit=4"), &admin).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["seq"], 6, "newest first");
    let resp = client
        .get(gw.url("/v1/receipts?limit=4"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let cursor = resp.headers()["x-next-cursor"].to_str().unwrap().to_owned();
    let rest = get_json(
        &client,
        gw.url(&format!("/v1/receipts?cursor={cursor}")),
        &admin,
    )
    .await;
    assert_eq!(rest.as_array().unwrap().len(), 2);
    let victim = list[2]["id"].as_str().unwrap().to_owned(); // seq 4
    let one = get_json(&client, gw.url(&format!("/v1/receipts/{victim}")), &admin).await;
    assert_eq!(one["seq"], 4);
    let verdict = get_json(
        &client,
        gw.url(&format!("/v1/receipts/{victim}/verify")),
        &admin,
    )
    .await;
    assert_eq!(verdict, json!({"receipt_id": victim, "verified": true}));
    let range: Value = client
        .post(gw.url("/v1/receipts/verify"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(range, json!({"verified": true, "checked": 6}));
    let keys = get_json(&client, gw.url("/v1/receipts/keys"), &admin).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["public_key"].as_str().unwrap().len(), 64);
    let foreign = client
        .get(gw.url(&format!("/v1/receipts/{victim}/verify")))
        .bearer_auth(&other_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    // The evidence bundle: its receipts verify with `aegis receipts verify`.
    let bundle = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}/evidence")),
        &admin,
    )
    .await;
    assert_eq!(bundle["incident"]["id"], incident_id.as_str());
    assert_eq!(bundle["decisions"].as_array().unwrap().len(), 6);
    assert_eq!(bundle["receipts"].as_array().unwrap().len(), 6);
    assert_eq!(bundle["narrative"]["generated_by"], "deterministic");
    assert_eq!(bundle["public_keys"].as_array().unwrap().len(), 1);
    let lines: String = bundle["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    let file = dir.path().join("bundle-receipts.jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = aegis(dir.path(), &["receipts", "verify", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "bundle receipts verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Tamper with the decision of receipt seq 4 in the database while the gateway is down.
    assert!(gw.terminate().success());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE decisions SET decision = 'allow'
             WHERE decision = 'deny' AND id = (SELECT decision_id FROM receipts WHERE id = ?1)",
            [&victim],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let gw = Gateway::start_with(dir.path(), &db, &env).await;

    let verdict = get_json(
        &client,
        gw.url(&format!("/v1/receipts/{victim}/verify")),
        &admin,
    )
    .await;
    assert_eq!(verdict["verified"], false);
    assert!(verdict["reason"].as_str().unwrap().contains("hash"));
    // Its neighbours still verify in place: the stored hashes still link.
    let neighbour = list[1]["id"].as_str().unwrap();
    let verdict = get_json(
        &client,
        gw.url(&format!("/v1/receipts/{neighbour}/verify")),
        &admin,
    )
    .await;
    assert_eq!(verdict["verified"], true);

    let range: Value = post_json(
        &client,
        gw.url("/v1/receipts/verify"),
        &admin,
        &json!({"from_seq": 2, "to_seq": 6}),
    )
    .await;
    assert_eq!(range["verified"], false);
    assert_eq!(range["first_bad"]["receipt_id"], victim.as_str());
    assert_eq!(range["first_bad"]["seq"], 4);
    assert_eq!(range["checked"], 3);
    let clean: Value = post_json(
        &client,
        gw.url("/v1/receipts/verify"),
        &admin,
        &json!({"from_seq": 5}),
    )
    .await;
    assert_eq!(clean, json!({"verified": true, "checked": 2}));

    let graph = get_json(
        &client,
        gw.url(&format!("/v1/graph/incident/{incident_id}")),
        &admin,
    )
    .await;
    let bad: Vec<&Value> = nodes(&graph, "receipt")
        .into_iter()
        .filter(|r| r["verified"] == false)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["receipt_id"], victim.as_str());

    // The background check raises one critical alert.
    let alerts = eventually(10, "the receipt_chain_broken alert", || async {
        let alerts = get_json(
            &client,
            gw.url("/v1/alerts?kind=receipt_chain_broken"),
            &admin,
        )
        .await;
        (!alerts.as_array().unwrap().is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts[0]["severity"], "critical");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let alerts = get_json(
        &client,
        gw.url("/v1/alerts?kind=receipt_chain_broken"),
        &admin,
    )
    .await;
    assert_eq!(alerts.as_array().unwrap().len(), 1, "raised once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_narrative_tells_a_retry_loop_from_probing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    // The next steps name the gateway where operators reach it (trailing `/` dropped).
    let public = "https://aegis.example.com/";
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_PUBLIC_URL", public)]).await;
    let client = reqwest::Client::new();
    let (looping, looping_token) = agent_with_github(&client, &gw, &admin).await;
    let probing_agent: Value = post_json(
        &client,
        gw.url("/v1/agents"),
        &admin,
        &json!({"name": "probing-agent"}),
    )
    .await;
    let probing = probing_agent["id"].as_str().unwrap().to_owned();
    let probing_token = probing_agent["agent_token"].as_str().unwrap().to_owned();
    let actions = [
        "merge",
        "push",
        "delete_branch",
        "add_collaborator",
        "force_push",
    ];
    let registered = client
        .post(gw.url("/v1/tools"))
        .bearer_auth(&admin)
        .json(
            &json!({"tool": "repo", "actions": actions.iter().map(|a| json!(
            {"action": a, "mutates_state": true, "risk": "high"})).collect::<Vec<_>>()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    for _ in 0..5 {
        let d = call(
            &client,
            &gw,
            &looping_token,
            "repo",
            "merge",
            "payments#482",
        )
        .await;
        assert_eq!(d, "deny");
    }
    for (i, action) in actions.iter().enumerate() {
        let d = call(
            &client,
            &gw,
            &probing_token,
            "repo",
            action,
            &format!("repo-{i}"),
        )
        .await;
        assert_eq!(d, "deny");
    }

    let narrate = |incident: String| {
        let client = client.clone();
        let url = gw.url(&format!("/v1/incidents/{incident}/narrate"));
        let admin = admin.clone();
        async move { get_json(&client, url, &admin).await }
    };
    let loop_incident = storm_incident(&client, &gw, &admin, &looping).await;
    let probe_incident = storm_incident(&client, &gw, &admin, &probing).await;

    let story = narrate(loop_incident.clone()).await;
    assert_eq!(story["incident_id"], loop_incident.as_str());
    assert_eq!(story["generated_by"], "deterministic");
    assert!(story["generated_at"].is_string());
    let text = story["narrative"].as_str().unwrap();
    assert!(text.contains("retry loop"), "{text}");
    assert!(!text.contains("probing"), "{text}");
    assert!(text.contains("5 decisions"), "{text}");
    assert!(
        text.contains("` repo ` ` merge ` on ` payments#482 `: 5×"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "-H \"Authorization: Bearer $AEGIS_OPERATOR_KEY\" \"https://aegis.example.com/v1/agents/{looping}/freeze\""
        )),
        "operator commands name an operator key and the public address: {text}"
    );
    assert!(
        !text.contains("AGENT_TOKEN") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("/v1/agents/{looping}/unfreeze")),
        "{text}"
    );
    assert!(
        text.contains(&format!("/v1/incidents/{loop_incident}/close")),
        "{text}"
    );
    let cited: Vec<&str> = story["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(cited.contains(&loop_incident.as_str()));
    assert!(cited.contains(&looping.as_str()));
    assert_eq!(cited.iter().filter(|c| c.starts_with("dec_")).count(), 5);

    let story = narrate(probe_incident.clone()).await;
    let text = story["narrative"].as_str().unwrap();
    assert!(text.contains("probing"), "{text}");
    assert!(!text.contains("retry loop"), "{text}");
    assert!(
        text.contains(&format!("/v1/agents/{probing}/revoke")),
        "{text}"
    );
    assert!(
        text.contains(&format!("/v1/agents/{probing}/rotate-token")),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t-value"),
        "no parameters in the narrative"
    );

    // The same evidence gives the same narrative.
    let again = narrate(probe_incident).await;
    assert_eq!(again["narrative"], story["narrative"]);

    // A run's graph: its decisions, linked to the run node.
    for action in ["get_file", "merge_pull_request"] {
        let resp = client
            .post(gw.url("/v1/authorize"))
            .bearer_auth(&looping_token)
            .json(&json!({"tool_call": {"tool": "github", "action": action},
                          "trace": {"run_id": "run-42", "trace_id": "tr-1"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let run = get_json(&client, gw.url("/v1/graph/run/run-42"), &admin).await;
    assert_eq!(nodes(&run, "decision").len(), 2);
    assert_eq!(nodes(&run, "run").len(), 1);
    assert!(nodes(&run, "receipt").iter().all(|r| r["verified"] == true));
    let in_run = run["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "in_run" && e["target"] == "run:run-42")
        .count();
    assert_eq!(in_run, 2);
    let missing = client
        .get(gw.url("/v1/graph/run/no-such-run"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// A local OpenAI-compatible endpoint: records what it was sent; sleeps when `slow` is set.
async fn fake_llm(slow: Arc<AtomicBool>) -> (String, Arc<parking::Received>) {
    let received = Arc::new(parking::Received::default());
    let seen = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = Arc::clone(&seen);
                let slow = Arc::clone(&slow);
                async move {
                    seen.push(
                        headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body,
                    );
                    if slow.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    axum::Json(json!({"id": "chatcmpl-1", "object": "chat.completion",
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "LLM: a retry loop of github/merge_pull_request."}}]}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

mod parking {
    use serde_json::Value;

    /// Requests the fake endpoint received: (authorization header, body).
    #[derive(Default)]
    pub struct Received(std::sync::Mutex<Vec<(String, Value)>>);

    impl Received {
        pub fn push(&self, auth: String, body: Value) {
            self.0.lock().unwrap().push((auth, body));
        }
        pub fn all(&self) -> Vec<(String, Value)> {
            self.0.lock().unwrap().clone()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_narrator_sees_only_redacted_evidence_and_falls_back_on_timeout() {
    let slow = Arc::new(AtomicBool::new(false));
    let (llm_url, received) = fake_llm(Arc::clone(&slow)).await;
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_NARRATOR_URL", llm_url.as_str()),
            ("AEGIS_NARRATOR_MODEL", "test-model"),
            ("AEGIS_NARRATOR_API_KEY", "sk-narrator-test"),
            ("AEGIS_NARRATOR_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..5 {
        assert_eq!(
            call(
                &client,
                &gw,
                &token,
                "github",
                "merge_pull_request",
                "payments#482"
            )
            .await,
            "deny"
        );
    }
    let incident = storm_incident(&client, &gw, &admin, &agent_id).await;
    let url = gw.url(&format!("/v1/incidents/{incident}/narrate"));

    let story = get_json(&client, url.clone(), &admin).await;
    assert_eq!(story["generated_by"], "llm:test-model");
    let text = story["narrative"].as_str().unwrap();
    assert!(
        text.contains("retry loop"),
        "the gateway's narrative: {text}"
    );
    assert!(
        text.ends_with("```text\nLLM: a retry loop of github/merge_pull_request.\n```\n"),
        "then the LLM's analysis as plain text: {text}"
    );
    let requests = received.all();
    assert_eq!(requests.len(), 1);
    let (auth, body) = &requests[0];
    assert_eq!(auth, "Bearer sk-narrator-test");
    assert_eq!(body["model"], "test-model");
    let sent = body.to_string();
    assert!(sent.contains(&incident), "the evidence names the incident");
    assert!(sent.contains("merge_pull_request"));
    for secret in [
        token.as_str(),
        admin.as_str(),
        "s3cr3t-value",
        "secret_param",
        "base_branch",
        "payments#482",
        "parameters",
    ] {
        assert!(
            !sent.contains(secret),
            "the LLM was sent {secret:?}: {sent}"
        );
    }
    // The stored narrative goes into the evidence bundle.
    let bundle = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident}/evidence")),
        &admin,
    )
    .await;
    assert_eq!(bundle["narrative"]["generated_by"], "llm:test-model");

    // Reads serve the stored narrative; the LLM is asked again only for a new one.
    assert_eq!(get_json(&client, url.clone(), &admin).await, story);
    assert_eq!(received.all().len(), 1);

    // A narrator that does not answer in time: the deterministic text, said so.
    slow.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let story: Value = post_json(&client, url, &admin, &json!({})).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout applies"
    );
    assert_eq!(story["generated_by"], "deterministic (llm fallback)");
    assert!(
        story["narrative"].as_str().unwrap().contains("retry loop"),
        "{story}"
    );
}
