//! The SOC plane against the built binary: the runbook's Symptoms, "Before you start" and
//! Verification sections.

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;

async fn incidents(client: &reqwest::Client, gw: &Gateway, key: &str, query: &str) -> Vec<Value> {
    let list = get_json(client, gw.url(&format!("/v1/incidents{query}")), key).await;
    list.as_array().expect("a bare JSON array").clone()
}

/// Waits until the SOC has processed `n` untrusted-write denies (each counted by an alert).
async fn processed(client: &reqwest::Client, gw: &Gateway, key: &str, n: usize) {
    eventually(5, &format!("{n} alerted denies"), || async {
        let alerts = get_json(
            client,
            gw.url("/v1/alerts?kind=untrusted_write_denied&limit=1000"),
            key,
        )
        .await;
        let counted: i64 = alerts
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["count"].as_i64().unwrap())
            .sum();
        (counted >= n as i64).then_some(())
    })
    .await;
}

async fn deny_n(client: &reqwest::Client, gw: &Gateway, token: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(
            authorize(client, gw, token, "untrusted_external").await,
            "deny"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_one_incident_on_http_and_websocket_and_rearms_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_DENY_STORM_WINDOW_SECS", "2")]).await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;

    let ws_url = gw
        .url(&format!("/v1/ws/events?token={admin}&kinds=deny_storm"))
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");

    // 4 denies: no incident.
    deny_n(&client, &gw, &token, 4).await;
    processed(&client, &gw, &admin, 4).await;
    assert!(
        incidents(&client, &gw, &admin, "").await.is_empty(),
        "4 denies never fire"
    );

    // The 5th: exactly one open high deny_storm naming the agent (the runbook's query).
    deny_n(&client, &gw, &token, 1).await;
    let open = eventually(5, "the deny_storm incident", || async {
        let found = incidents(&client, &gw, &admin, "?severity=high&status=open").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    let storm: Vec<&Value> = open.iter().filter(|i| i["kind"] == "deny_storm").collect();
    assert_eq!(storm.len(), 1);
    assert_eq!(storm[0]["agent_id"], agent_id.as_str());
    assert_eq!(storm[0]["severity"], "high");
    let incident_id = storm[0]["id"].as_str().unwrap().to_owned();

    // It appears on the live feed.
    let event = next_json(&mut ws).await;
    assert_eq!(
        (event["type"].as_str(), event["kind"].as_str()),
        (Some("event"), Some("incident.opened"))
    );
    assert_eq!(event["payload"]["kind"], "deny_storm");
    assert_eq!(event["payload"]["incident_id"], incident_id.as_str());

    // 10 denies in the window: still one incident, with all 10 behind it.
    deny_n(&client, &gw, &token, 5).await;
    processed(&client, &gw, &admin, 10).await;
    let all = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(all.len(), 1, "one storm, one incident");
    let detail = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &admin,
    )
    .await;
    assert_eq!(detail["evidence_count"], 10);
    assert_eq!(detail["status"], "open");

    // L1 (the default) notifies only: the agent stays active.
    let agent = get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &admin).await;
    assert_eq!(agent["status"], "active");
    let autonomy = get_json(&client, gw.url("/v1/tenants/soc-autonomy"), &admin).await;
    assert_eq!(
        autonomy,
        json!({"level": "L1", "source": "default", "override": null})
    );

    // After the window has passed below the threshold, a new storm is a new incident.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    deny_n(&client, &gw, &token, 5).await;
    let both = eventually(5, "the second incident", || async {
        let found = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
        (found.len() == 2).then_some(found)
    })
    .await;
    assert_ne!(both[0]["id"], both[1]["id"]);

    // Close it the runbook's way; Verification: status closed.
    let closed = client
        .post(gw.url(&format!("/v1/incidents/{incident_id}/close")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"reason": "retry loop fixed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let detail = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &admin,
    )
    .await;
    assert_eq!(detail["status"], "closed");
    assert_eq!(detail["close_reason"], "retry loop fixed");
    let again = client
        .post(gw.url(&format!("/v1/incidents/{incident_id}/close")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

e2e_test!(
    async fn an_agents_repeated_denies_are_one_alert_with_a_count_and_the_storm_is_unchanged(
        backend
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::fresh(backend, dir.path()).await;
        let admin = init_on(dir.path(), db.arg(), "acme");
        let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
        let client = reqwest::Client::new();
        let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;

        deny_n(&client, &gw, &token, 7).await;
        // A suspected-malicious source is a high alert of its own, not hidden in the other.
        assert_eq!(
            authorize(&client, &gw, &token, "malicious_suspected").await,
            "deny"
        );
        processed(&client, &gw, &admin, 8).await;
        let alerts = get_json(
            &client,
            gw.url("/v1/alerts?kind=untrusted_write_denied"),
            &admin,
        )
        .await;
        let alerts = alerts.as_array().unwrap();
        let by_severity = |severity: &str| -> Vec<&Value> {
            alerts.iter().filter(|a| a["severity"] == severity).collect()
        };
        let (medium, high) = (by_severity("medium"), by_severity("high"));
        assert_eq!((medium.len(), high.len()), (1, 1), "{alerts:?}");
        assert_eq!(medium[0]["count"], 7);
        assert_eq!(medium[0]["agent_id"], agent_id.as_str());
        assert_eq!(high[0]["count"], 1);

        // The storm rule still sees every deny: one incident with all eight behind it.
        let storms = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
        assert_eq!(storms.len(), 1);
        assert_eq!(storms[0]["evidence_count"], 8);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_storm_neither_duplicates_nor_misses() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let client = reqwest::Client::new();
    let gw = Gateway::start(dir.path(), &db).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    deny_n(&client, &gw, &token, 3).await;
    processed(&client, &gw, &admin, 3).await;
    gw.kill_9();

    let gw = Gateway::start(dir.path(), &db).await;
    deny_n(&client, &gw, &token, 2).await;
    let found = eventually(5, "the incident after restart", || async {
        let found = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["evidence_count"], 5,
        "denies from before and after the restart"
    );
    gw.kill_9();

    // Another restart, more denies in the same storm: they join, nothing new opens.
    let gw = Gateway::start(dir.path(), &db).await;
    deny_n(&client, &gw, &token, 3).await;
    processed(&client, &gw, &admin, 8).await;
    let found = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(found.len(), 1);
    let detail = get_json(
        &client,
        gw.url(&format!(
            "/v1/incidents/{}",
            found[0]["id"].as_str().unwrap()
        )),
        &admin,
    )
    .await;
    assert_eq!(detail["evidence_count"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_contains_by_env_and_by_api_and_tenants_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db/aegisagent.db");
    let acme = init(dir.path(), &db, "acme");
    let globex = init(dir.path(), &db, "globex");
    let client = reqwest::Client::new();

    // L3 by environment.
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_SOC_AUTONOMY_LEVEL", "L3")]).await;
    let (agent_id, token) = agent_with_github(&client, &gw, &acme).await;
    let autonomy = get_json(&client, gw.url("/v1/tenants/soc-autonomy"), &acme).await;
    assert_eq!(
        autonomy,
        json!({"level": "L3", "source": "env", "override": null})
    );
    deny_n(&client, &gw, &token, 5).await;
    let agent = eventually(5, "the automatic freeze", || async {
        let agent = get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &acme).await;
        (agent["status"] == "frozen").then_some(agent)
    })
    .await;
    let incident = &incidents(&client, &gw, &acme, "?kind=deny_storm").await[0];
    let incident_id = incident["id"].as_str().unwrap();
    assert!(
        agent["status_reason"]
            .as_str()
            .unwrap()
            .contains(incident_id),
        "the freeze names the incident"
    );
    let detail = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &acme,
    )
    .await;
    assert_eq!(detail["response_actions"][0]["action"], "freeze");
    assert_eq!(detail["response_actions"][0]["mode"], "automatic");
    // The freeze is enforced at once, and an operator can reverse it.
    assert_eq!(
        authorize(&client, &gw, &token, "trusted_internal_signed").await,
        "deny"
    );
    let unfrozen = client
        .post(gw.url(&format!("/v1/agents/{agent_id}/unfreeze")))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(unfrozen.status(), 200);

    // Another tenant sees none of it, over HTTP or as an id.
    assert!(incidents(&client, &gw, &globex, "").await.is_empty());
    let foreign = client
        .get(gw.url(&format!("/v1/incidents/{incident_id}")))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    gw.terminate();

    // L3 by API, on a gateway whose default is L1; the runbook's sqlite3 query shows it.
    let gw = Gateway::start(dir.path(), &db).await;
    let (agent_id, token) = agent_with_github(&client, &gw, &globex).await;
    let set = client
        .put(gw.url("/v1/tenants/soc-autonomy"))
        .bearer_auth(&globex)
        .json(&json!({"level": "L3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let bad = client
        .put(gw.url("/v1/tenants/soc-autonomy"))
        .bearer_auth(&globex)
        .json(&json!({"level": "L9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let level: Option<String> = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT soc_autonomy_level FROM tenants WHERE id = 'globex'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(level.as_deref(), Some("L3"));
    deny_n(&client, &gw, &token, 5).await;
    eventually(5, "the freeze set by API level", || async {
        let agent = get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &globex).await;
        (agent["status"] == "frozen").then_some(())
    })
    .await;
    // acme keeps its own (default) level here: its agent was left active above.
    let acme_level = get_json(&client, gw.url("/v1/tenants/soc-autonomy"), &acme).await;
    assert_eq!(acme_level["level"], "L1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_resumes_from_a_seq_filters_by_agent_and_refuses_agent_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let (_, other_token) = agent_with_github(&client, &gw, &admin).await;
    // Decisions made while nobody is connected.
    for _ in 0..3 {
        authorize(&client, &gw, &token, "trusted_internal_signed").await;
        authorize(&client, &gw, &other_token, "trusted_internal_signed").await;
    }

    let ws_base = gw.url("/v1/ws/events").replacen("http", "ws", 1);
    let refused = tokio_tungstenite::connect_async(format!("{ws_base}?token={token}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("an agent token must be refused before the upgrade, got {other:?}"),
    }

    // Resuming from seq 0 replays the log, filtered to one agent's decisions.
    let url = format!("{ws_base}?token={admin}&since=0&kinds=decision&agent_id={agent_id}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let mut last_seq = 0;
    for _ in 0..3 {
        let event = next_json(&mut ws).await;
        assert_eq!(
            (event["kind"].as_str(), event["agent_id"].as_str()),
            (Some("decision"), Some(agent_id.as_str()))
        );
        let seq = event["seq"].as_i64().unwrap();
        assert!(seq > last_seq, "in log order");
        last_seq = seq;
    }
    // Then it goes live.
    authorize(&client, &gw, &other_token, "trusted_internal_signed").await;
    authorize(&client, &gw, &token, "untrusted_external").await;
    let live = next_json(&mut ws).await;
    assert_eq!(live["payload"]["decision"], "deny");
    assert_eq!(live["agent_id"], agent_id.as_str());
    assert!(live["seq"].as_i64().unwrap() > last_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_recommends_and_apply_contains_and_the_other_rules_fire_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let put = client
        .put(gw.url("/v1/tenants/soc-autonomy"))
        .bearer_auth(&admin)
        .json(&json!({"level": "L2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // L2: the storm's incident carries a recommended freeze; the agent stays active until an
    // operator applies it with one call.
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    deny_n(&client, &gw, &token, 5).await;
    let storm = eventually(5, "the deny_storm incident", || async {
        incidents(&client, &gw, &admin, "?kind=deny_storm")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(storm["recommended_action"]["action"], "freeze");
    let agent = get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &admin).await;
    assert_eq!(agent["status"], "active");
    let incident_id = storm["id"].as_str().unwrap();
    let applied = client
        .post(gw.url(&format!("/v1/incidents/{incident_id}/apply")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200);
    let applied: Value = applied.json().await.unwrap();
    assert_eq!(applied["response_actions"][0]["mode"], "applied");
    let agent = get_json(&client, gw.url(&format!("/v1/agents/{agent_id}")), &admin).await;
    assert_eq!(agent["status"], "frozen");
    let again = client
        .post(gw.url(&format!("/v1/incidents/{incident_id}/apply")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // trust_escalation: a deny, then an allow of the same tool action.
    let (prober, prober_token) = agent_with_github(&client, &gw, &admin).await;
    assert_eq!(
        authorize(&client, &gw, &prober_token, "untrusted_external").await,
        "deny"
    );
    assert_eq!(
        authorize(&client, &gw, &prober_token, "trusted_internal_signed").await,
        "allow"
    );
    eventually(5, "the trust_escalation incident", || async {
        let found = incidents(
            &client,
            &gw,
            &admin,
            &format!("?kind=trust_escalation&agent_id={prober}"),
        )
        .await;
        (found.len() == 1).then_some(())
    })
    .await;

    // data_exfiltration: a read of a registered data source, then a registered egress action.
    let mail = client
        .post(gw.url("/v1/tools"))
        .bearer_auth(&admin)
        .json(&json!({"tool": "mail", "actions": [
            {"action": "read_inbox", "mutates_state": false, "risk": "medium", "sensitive": true},
            {"action": "send_external", "mutates_state": true, "risk": "medium", "egress": true}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(mail.status(), 201);
    let (leaker, leaker_token) = agent_with_github(&client, &gw, &admin).await;
    let call = |tool: &str, action: &str| json!({"tool_call": {"tool": tool, "action": action}, "context": {"source_trust": "trusted_internal_signed"}});
    for body in [call("mail", "read_inbox"), call("mail", "send_external")] {
        let resp: Value = post_json(&client, gw.url("/v1/authorize"), &leaker_token, &body).await;
        assert_eq!(resp["decision"], "allow");
    }
    eventually(5, "the data_exfiltration incident", || async {
        let found = incidents(
            &client,
            &gw,
            &admin,
            &format!("?kind=data_exfiltration&agent_id={leaker}"),
        )
        .await;
        (found.len() == 1).then_some(())
    })
    .await;

    // A rotated-away token presented to authorize: 401 and a high alert.
    let rotated = client
        .post(gw.url(&format!("/v1/agents/{leaker}/rotate-token")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let dead = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(&leaker_token)
        .json(&merge_call("trusted_internal_signed"))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), 401);
    eventually(5, "the dead-token alert", || async {
        let alerts = get_json(
            &client,
            gw.url(&format!(
                "/v1/alerts?kind=dead_token_used&agent_id={leaker}"
            )),
            &admin,
        )
        .await;
        let alerts = alerts.as_array().unwrap().clone();
        (alerts.len() == 1 && alerts[0]["severity"] == "high").then_some(())
    })
    .await;
}

/// An event edited in the database so that its payload cannot be read (here every
/// `tool.registered`) stops no reader of the log: the SOC raises one `event_unreadable`
/// alert for it and the storm after it still opens its incident, the notifier moves past it,
/// and the live feed delivers it with a `null` payload and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_cannot_be_read_stops_no_reader_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (db_path, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db_path).await;
    let db = db_path.to_str().unwrap();
    execute(
        db,
        "CREATE TRIGGER unreadable_tool_events AFTER INSERT ON events
             WHEN NEW.kind = 'tool.registered'
             BEGIN UPDATE events SET payload = '{not json' WHERE seq = NEW.seq; END",
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let edited = query_column(
        db,
        "SELECT CAST(seq AS TEXT) FROM events WHERE kind = 'tool.registered'",
    )
    .await;
    let edited: i64 = edited[0].parse().unwrap();

    deny_n(&client, &gw, &token, 5).await;
    let storm = eventually(5, "the deny_storm incident", || async {
        let found = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(storm.len(), 1);
    assert_eq!(storm[0]["agent_id"], agent_id.as_str());
    let alerts = get_json(&client, gw.url("/v1/alerts?kind=event_unreadable"), &admin).await;
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (&alerts[0]["severity"], &alerts[0]["source_seq"]),
        (&json!("high"), &json!(edited))
    );
    let summary = alerts[0]["summary"].as_str().unwrap();
    assert!(summary.contains("\"tool.registered\""), "{summary}");
    assert!(gw.log_text().contains("an event of the log cannot be read"));

    let last: i64 = query_column(db, "SELECT CAST(MAX(seq) AS TEXT) FROM events").await[0]
        .parse()
        .unwrap();
    consumer_past(db, "notify", last).await;

    let url = gw
        .url(&format!("/v1/ws/events?token={admin}&since={}", edited - 1))
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let event = next_json(&mut ws).await;
    assert_eq!(
        (&event["seq"], &event["kind"], &event["payload"]),
        (&json!(edited), &json!("tool.registered"), &Value::Null)
    );
    let why = event["unreadable"].as_str().unwrap();
    assert!(why.starts_with("payload: "), "{why}");
}
