//! Storm semantics under real traffic, against the built binary: a storm near the threshold
//! rate, a threshold change mid-storm, a threshold change whose event cannot be read,
//! replicas whose clocks disagree, a frozen agent's
//! refusals, a close mid-storm, containment at L3, and what counts as a read for
//! data_exfiltration. Windows are short per-tenant settings so the tests stay fast.

mod support;

use aegis_testdb::FreshDatabase;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::*;

/// libfaketime, as Debian's `faketime` package installs it (multi-threaded variant).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

async fn put(client: &reqwest::Client, gw: &Gateway, key: &str, path: &str, body: Value) {
    let resp = client
        .put(gw.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "PUT {path}");
}

async fn post(client: &reqwest::Client, gw: &Gateway, key: &str, path: &str) -> Value {
    let resp = client
        .post(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "POST {path}");
    resp.json().await.unwrap()
}

/// One authorize call of the merge action; returns (decision, event seq).
async fn call(client: &reqwest::Client, gw: &Gateway, token: &str, trust: &str) -> (String, i64) {
    let resp = post_json(client, gw.url("/v1/authorize"), token, &merge_call(trust)).await;
    (
        resp["decision"].as_str().unwrap().to_owned(),
        resp["event_seq"].as_i64().unwrap(),
    )
}

/// An untrusted write: a deny.
async fn deny(client: &reqwest::Client, gw: &Gateway, token: &str) -> i64 {
    let (decision, seq) = call(client, gw, token, "untrusted_external").await;
    assert_eq!(decision, "deny");
    seq
}

/// `count` denies, one every `every`, paced by a clock (not by the calls' latency).
async fn paced_denies(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    count: usize,
    every: Duration,
) -> i64 {
    let mut ticks = tokio::time::interval(every);
    let mut last = 0;
    for _ in 0..count {
        ticks.tick().await;
        last = deny(client, gw, token).await;
    }
    last
}

async fn incidents(client: &reqwest::Client, gw: &Gateway, key: &str, query: &str) -> Vec<Value> {
    get_json(client, gw.url(&format!("/v1/incidents{query}")), key)
        .await
        .as_array()
        .expect("a bare JSON array")
        .clone()
}

/// The decision ids recorded behind an incident, read from the database: every deny that
/// joined must be stored, whatever the API shows of them.
async fn stored_evidence(db: &str, incident_id: &str) -> Vec<String> {
    query_column(
        db,
        &format!(
            "SELECT d.id FROM incident_evidence e JOIN decisions d ON d.event_seq = e.event_seq
             WHERE e.incident_id = '{incident_id}' ORDER BY e.event_seq"
        ),
    )
    .await
}

async fn decision_ids_of(
    client: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    agent_id: &str,
) -> Vec<String> {
    let mut ids: Vec<String> = get_json(
        client,
        gw.url(&format!(
            "/v1/decisions?agent_id={agent_id}&decision=deny&limit=1000"
        )),
        key,
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|d| d["decision_id"].as_str().unwrap().to_owned())
    .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_just_above_the_threshold_rate_is_one_incident_holding_every_deny() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 5, "window_secs": 2}),
    )
    .await;
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;

    // W = 2 s, N = 5, one deny every 0.45 s: 4 or 5 denies in every window, so the count
    // before a deny is often N - 1. The old rule opened 8 incidents for these 12.
    let last = paced_denies(&client, &gw, &token, 12, Duration::from_millis(450)).await;
    consumer_past(db.to_str().unwrap(), "soc", last).await;
    let storms = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(storms.len(), 1, "one storm, one incident: {storms:#?}");
    let stored = stored_evidence(db.to_str().unwrap(), storms[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        sorted(stored),
        decision_ids_of(&client, &gw, &admin, &agent_id).await,
        "every deny of the storm is stored behind it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_threshold_mid_storm_keeps_one_incident_holding_every_deny() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 5, "window_secs": 3}),
    )
    .await;
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let every = Duration::from_millis(250);
    let opened = paced_denies(&client, &gw, &token, 6, every).await;
    consumer_past(&db_url, "soc", opened).await;
    assert_eq!(
        incidents(&client, &gw, &admin, "?kind=deny_storm")
            .await
            .len(),
        1
    );

    // N 5 → 8 while the storm goes on at the same rate (about 12 denies per window).
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 8, "window_secs": 3}),
    )
    .await;
    let last = paced_denies(&client, &gw, &token, 6, every).await;
    consumer_past(&db_url, "soc", last).await;
    let storms = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(storms.len(), 1, "the same storm: {storms:#?}");
    let stored = stored_evidence(&db_url, storms[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        sorted(stored),
        decision_ids_of(&client, &gw, &admin, &agent_id).await,
        "all 12 denies, none missing"
    );
}

/// The SOC reads a tenant's settings from its row, not from the event that says they
/// changed: a change whose event cannot be read still applies (and raises the alert every
/// unreadable event raises).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_change_whose_event_cannot_be_read_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    // The SOC now holds the tenant's settings: the default threshold, 5 denies.
    let first = deny(&client, &gw, &token).await;
    consumer_past(&db_url, "soc", first).await;

    execute(
        &db_url,
        "CREATE TRIGGER unreadable_settings_events AFTER INSERT ON events
             WHEN NEW.kind = 'tenant.settings_changed'
             BEGIN UPDATE events SET payload = '{not json' WHERE seq = NEW.seq; END",
        &[],
    )
    .await;
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 8, "window_secs": 60}),
    )
    .await;
    let changed: i64 = query_column(
        &db_url,
        "SELECT CAST(seq AS TEXT) FROM events WHERE kind = 'tenant.settings_changed'",
    )
    .await[0]
        .parse()
        .unwrap();

    // Seven denies in all: a storm under the old threshold, none under the new one.
    let mut last = first;
    for _ in 0..6 {
        last = deny(&client, &gw, &token).await;
    }
    consumer_past(&db_url, "soc", last).await;
    assert_eq!(
        incidents(&client, &gw, &admin, "?kind=deny_storm").await,
        Vec::<Value>::new(),
        "the threshold of 8 applies"
    );
    let alerts = get_json(&client, gw.url("/v1/alerts?kind=event_unreadable"), &admin).await;
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["source_seq"], changed);
    let summary = alerts[0]["summary"].as_str().unwrap();
    assert!(summary.contains("\"tenant.settings_changed\""), "{summary}");

    let eighth = deny(&client, &gw, &token).await;
    consumer_past(&db_url, "soc", eighth).await;
    let storms = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(storms.len(), 1, "{storms:#?}");
    assert_eq!(storms[0]["agent_id"], agent_id.as_str());
}

async fn replica(dir: &Path, name: &str, db: &str, env: &[(&str, &str)]) -> Gateway {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    Gateway::start_on(&home, db, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_whose_clocks_differ_by_70_s_give_one_incident_per_storm_and_no_false_one() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "this test needs Debian's faketime package (apt-get install faketime)"
    );
    let database = FreshDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = init_on(dir.path(), database.url(), "acme");
    let honest = replica(dir.path(), "honest", database.url(), &[]).await;
    let ahead = replica(
        dir.path(),
        "ahead",
        database.url(),
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+70s"),
            // Wall clocks differ between machines; monotonic timers are not compared.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    let replicas = [&honest, &ahead];
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &honest, &admin).await;

    // The skew is real: the decision times each replica stamps are 70 s apart.
    let stamped = |gw: &Gateway, seq: i64| {
        let (client, admin, agent_id) = (client.clone(), admin.clone(), agent_id.clone());
        let url = gw.url(&format!("/v1/decisions?agent_id={agent_id}&limit=1000"));
        async move {
            let list = get_json(&client, url, &admin).await;
            let decision = list
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["event_seq"] == seq)
                .cloned()
                .unwrap();
            aegis_core::timestamp::parse_millis(decision["created_at"].as_str().unwrap()).unwrap()
        }
    };

    // A storm of 5 denies in a few milliseconds, alternating replicas (default W = 60 s):
    // with event times taken from each replica's clock, the honest replica's events were
    // clamped behind the skewed one's and only 4 were "in the window".
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(deny(&client, replicas[i % 2], &token).await);
    }
    let skew = stamped(&ahead, seqs[1]).await - stamped(&honest, seqs[0]).await;
    assert!(skew > 60_000, "the second replica runs {skew} ms ahead");
    consumer_past(database.url(), "soc", seqs[4]).await;
    let storms = incidents(
        &client,
        &honest,
        &admin,
        &format!("?kind=deny_storm&agent_id={agent_id}"),
    )
    .await;
    assert_eq!(storms.len(), 1, "{storms:#?}");
    // Five more, still alternating: they join it.
    for i in 0..5 {
        seqs.push(deny(&client, replicas[(i + 1) % 2], &token).await);
    }
    consumer_past(database.url(), "soc", *seqs.last().unwrap()).await;
    let storms = incidents(
        &client,
        &ahead,
        &admin,
        &format!("?kind=deny_storm&agent_id={agent_id}"),
    )
    .await;
    assert_eq!(storms.len(), 1, "{storms:#?}");
    let stored = stored_evidence(database.url(), storms[0]["id"].as_str().unwrap()).await;
    assert_eq!(stored.len(), 10);

    // No false storm: W = 2 s, 5 denies 1.5 s apart (never 5 in one window), the first one
    // answered by the replica 70 s ahead. Clamped behind it, the rest looked simultaneous.
    put(
        &client,
        &honest,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 5, "window_secs": 2}),
    )
    .await;
    let (slow_agent, slow_token) = agent_with_github(&client, &honest, &admin).await;
    let mut ticks = tokio::time::interval(Duration::from_millis(1500));
    let mut last = 0;
    for i in 0..5 {
        ticks.tick().await;
        let replica = if i == 0 { &ahead } else { &honest };
        last = deny(&client, replica, &slow_token).await;
    }
    consumer_past(database.url(), "soc", last).await;
    let false_storms =
        incidents(&client, &honest, &admin, &format!("?agent_id={slow_agent}")).await;
    assert!(false_storms.is_empty(), "{false_storms:#?}");

    // Event times (what the rules use) never run backwards in seq order.
    let times = query_column(
        database.url(),
        "SELECT CAST(created_at AS TEXT) FROM events ORDER BY seq",
    )
    .await;
    let times: Vec<i64> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]), "{times:?}");
}

/// Freeze, six refused calls, unfreeze, a good call: at `level`, the agent's tier and
/// incidents are as before the freeze.
async fn frozen_refusals_change_nothing(level: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/soc-autonomy",
        json!({"level": level}),
    )
    .await;
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let agent_path = format!("/v1/agents/{agent_id}");
    let freeze = client
        .post(gw.url(&format!("{agent_path}/freeze")))
        .bearer_auth(&admin)
        .json(&json!({"reason": "investigating"}))
        .send()
        .await
        .unwrap();
    assert_eq!(freeze.status(), 200);
    // Six calls refused because the agent is frozen (a trusted write would be allowed).
    for _ in 0..6 {
        let (decision, _) = call(&client, &gw, &token, "trusted_internal_signed").await;
        assert_eq!(decision, "deny");
    }
    post(&client, &gw, &admin, &format!("{agent_path}/unfreeze")).await;
    let (decision, last) = call(&client, &gw, &token, "trusted_internal_signed").await;
    assert_eq!(decision, "allow");
    consumer_past(db.to_str().unwrap(), "soc", last).await;

    let agent = get_json(&client, gw.url(&agent_path), &admin).await;
    assert_eq!(
        (agent["status"].as_str(), agent["risk_tier"].as_str()),
        (Some("active"), Some("low")),
        "at {level}: {agent:#?}"
    );
    let found = incidents(&client, &gw, &admin, &format!("?agent_id={agent_id}")).await;
    assert!(found.is_empty(), "at {level}: {found:#?}");
    // The refusals are recorded and shown, naming the freeze.
    let refused = get_json(
        &client,
        gw.url(&format!("/v1/decisions?agent_id={agent_id}&decision=deny")),
        &admin,
    )
    .await;
    let refused = refused.as_array().unwrap();
    assert_eq!(refused.len(), 6);
    assert!(
        refused
            .iter()
            .all(|d| d["reason"].as_str().unwrap().contains("frozen"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agents_refusals_change_neither_its_tier_nor_open_incidents_at_l1() {
    frozen_refusals_change_nothing("L1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agents_refusals_change_neither_its_tier_nor_open_incidents_at_l4() {
    frozen_refusals_change_nothing("L4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_after_a_close_mid_storm_open_a_new_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let mut last = 0;
    for _ in 0..6 {
        last = deny(&client, &gw, &token).await;
    }
    consumer_past(&db_url, "soc", last).await;
    let first = incidents(&client, &gw, &admin, "?kind=deny_storm").await;
    assert_eq!(first.len(), 1);
    let first_id = first[0]["id"].as_str().unwrap().to_owned();
    let closed = client
        .post(gw.url(&format!("/v1/incidents/{first_id}/close")))
        .bearer_auth(&admin)
        .json(&json!({"reason": "looked like a one-off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);

    // The storm goes on: five more denies.
    let mut after = Vec::new();
    for _ in 0..5 {
        let resp = post_json(
            &client,
            gw.url("/v1/authorize"),
            &token,
            &merge_call("untrusted_external"),
        )
        .await;
        after.push(resp["decision_id"].as_str().unwrap().to_owned());
        last = resp["event_seq"].as_i64().unwrap();
    }
    consumer_past(&db_url, "soc", last).await;
    // The closed incident keeps its six; a new, open one holds the five (and the window's
    // earlier denies that opened it).
    assert_eq!(stored_evidence(&db_url, &first_id).await.len(), 6);
    let open = incidents(&client, &gw, &admin, "?kind=deny_storm&status=open").await;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_ne!(open[0]["id"], first_id.as_str());
    let stored = stored_evidence(&db_url, open[0]["id"].as_str().unwrap()).await;
    assert!(after.iter().all(|id| stored.contains(id)), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_keeps_a_storming_agent_contained_after_an_unfreeze() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/soc-autonomy",
        json!({"level": "L3"}),
    )
    .await;
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let agent_path = format!("/v1/agents/{agent_id}");
    for _ in 0..5 {
        deny(&client, &gw, &token).await;
    }
    eventually(5, "the automatic freeze", || async {
        let agent = get_json(&client, gw.url(&agent_path), &admin).await;
        (agent["status"] == "frozen").then_some(())
    })
    .await;
    // The agent keeps trying while frozen, pauses, then tries again: its refusals join the
    // incident as attempts and open nothing new.
    let mut last = 0;
    for _ in 0..3 {
        last = deny(&client, &gw, &token).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        last = deny(&client, &gw, &token).await;
    }
    consumer_past(&db_url, "soc", last).await;
    let storms = incidents(&client, &gw, &admin, &format!("?agent_id={agent_id}")).await;
    assert_eq!(storms.len(), 1, "{storms:#?}");
    let incident_id = storms[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(stored_evidence(&db_url, &incident_id).await.len(), 11);

    // Unfrozen while its storm goes on, and it storms again: contained again at once.
    post(&client, &gw, &admin, &format!("{agent_path}/unfreeze")).await;
    let (_, seq) = call(&client, &gw, &token, "untrusted_external").await;
    consumer_past(&db_url, "soc", seq).await;
    let agent = get_json(&client, gw.url(&agent_path), &admin).await;
    assert_eq!(agent["status"], "frozen", "{agent:#?}");
    assert!(
        agent["status_reason"]
            .as_str()
            .unwrap()
            .contains(&incident_id)
    );
    let detail = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &admin,
    )
    .await;
    let freezes: Vec<&Value> = detail["response_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "freeze" && r["mode"] == "automatic")
        .collect();
    assert_eq!(freezes.len(), 2, "{detail:#?}");
    assert_eq!(
        incidents(&client, &gw, &admin, &format!("?agent_id={agent_id}"))
            .await
            .len(),
        1,
        "still the one storm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_data_sources_are_reads_for_exfiltration_unless_the_tenant_asks_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    let gw = Gateway::start(dir.path(), &db).await;
    let client = reqwest::Client::new();
    for tool in [
        json!({"tool": "weather", "actions": [
            {"action": "get_forecast", "mutates_state": false, "risk": "low"}]}),
        json!({"tool": "drive", "actions": [
            {"action": "read_file", "mutates_state": false, "risk": "medium", "sensitive": true}]}),
        json!({"tool": "gmail", "actions": [
            {"action": "send_email", "mutates_state": true, "risk": "medium", "egress": true}]}),
    ] {
        let resp = client
            .post(gw.url("/v1/tools"))
            .bearer_auth(&admin)
            .json(&tool)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let tools = get_json(&client, gw.url("/v1/tools"), &admin).await;
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["action"] == "read_file" && t["sensitive"] == true)
    );
    let pair = |read: (&'static str, &'static str)| {
        let (client, gw_url, admin) = (client.clone(), gw.base.clone(), admin.clone());
        async move {
            let agent: Value = post_json(
                &client,
                format!("{gw_url}/v1/agents"),
                &admin,
                &json!({"name": "mailer"}),
            )
            .await;
            let token = agent["agent_token"].as_str().unwrap().to_owned();
            let mut last = 0;
            for (tool, action) in [read, ("gmail", "send_email")] {
                let body = json!({"tool_call": {"tool": tool, "action": action},
                                  "context": {"source_trust": "trusted_internal_signed"}});
                let resp =
                    post_json(&client, format!("{gw_url}/v1/authorize"), &token, &body).await;
                assert_eq!(resp["decision"], "allow", "{resp}");
                last = resp["event_seq"].as_i64().unwrap();
            }
            (agent["id"].as_str().unwrap().to_owned(), last)
        }
    };
    let exfiltrations = |agent_id: String| {
        let client = client.clone();
        let url = gw.url(&format!(
            "/v1/incidents?kind=data_exfiltration&agent_id={agent_id}"
        ));
        let admin = admin.clone();
        async move {
            get_json(&client, url, &admin)
                .await
                .as_array()
                .unwrap()
                .len()
        }
    };

    // A forecast, then an e-mail: nothing. A file, then an e-mail: exfiltration.
    let (forecaster, last) = pair(("weather", "get_forecast")).await;
    consumer_past(&db_url, "soc", last).await;
    assert_eq!(exfiltrations(forecaster).await, 0);
    let (reader, last) = pair(("drive", "read_file")).await;
    consumer_past(&db_url, "soc", last).await;
    assert_eq!(exfiltrations(reader).await, 1);

    // A tenant that wants the older rule gets it: any action that changes nothing is a read.
    let setting = get_json(&client, gw.url("/v1/tenants/exfiltration"), &admin).await;
    assert_eq!(setting, json!({"reads": "sensitive"}));
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/exfiltration",
        json!({"reads": "non_mutating"}),
    )
    .await;
    let (forecaster, last) = pair(("weather", "get_forecast")).await;
    consumer_past(&db_url, "soc", last).await;
    assert_eq!(exfiltrations(forecaster).await, 1);
    let bad = client
        .put(gw.url("/v1/tenants/exfiltration"))
        .bearer_auth(&admin)
        .json(&json!({"reads": "everything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_never_run_backwards_when_the_clock_steps_back() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "this test needs Debian's faketime package (apt-get install faketime)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let db_url = db.to_str().unwrap().to_owned();
    // libfaketime re-reads the offset from this file, so the test can step the clock.
    let offset = dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            // NTP steps the wall clock; the monotonic clock never goes back.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    put(
        &client,
        &gw,
        &admin,
        "/v1/tenants/deny-storm",
        json!({"threshold": 5, "window_secs": 2}),
    )
    .await;
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..3 {
        deny(&client, &gw, &token).await;
    }
    // NTP steps the clock back 30 s in the middle of the storm.
    std::fs::write(&offset, "-30s\n").unwrap();
    let mut last = 0;
    for _ in 0..2 {
        last = deny(&client, &gw, &token).await;
    }
    consumer_past(&db_url, "soc", last).await;

    let handler_times = query_column(
        &db_url,
        "SELECT CAST(created_at AS TEXT) FROM decisions ORDER BY event_seq",
    )
    .await;
    let handler_times: Vec<i64> = handler_times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(
        handler_times[2] - handler_times[3] > 25_000,
        "the clock stepped back: {handler_times:?}"
    );
    let times = query_column(
        &db_url,
        "SELECT CAST(created_at AS TEXT) FROM events ORDER BY seq",
    )
    .await;
    let times: Vec<i64> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]), "{times:?}");
    let storms = incidents(
        &client,
        &gw,
        &admin,
        &format!("?kind=deny_storm&agent_id={agent_id}"),
    )
    .await;
    assert_eq!(
        storms.len(),
        1,
        "five denies within a second are one storm: {storms:#?}"
    );
}
