//! Notifications against the built binary and a real HTTP receiver on loopback: signed
//! deliveries, coalescing, durability across a dead receiver and kill -9, the Slack shape,
//! SSRF checks on API subscriptions, and silence at autonomy L0.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::receiver::*;
use support::*;

const SECRET: &str = "test-webhook-secret-0123456789";
/// Storm and runaway thresholds no test here reaches, so that only the denies themselves are
/// notified.
const DENIES_ONLY: [(&str, &str); 2] =
    [("AEGIS_DENY_STORM_N", "1000"), ("AEGIS_RUNAWAY_N", "1000")];

fn verify_signature(r: &Received, secret: &str) {
    let signature = r.signature.as_deref().expect("a signature header");
    let (t, v1) = signature
        .split_once(",v1=")
        .expect("t=<unix seconds>,v1=<hex>");
    let t = t.strip_prefix("t=").expect("t= first");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - t.parse::<i64>().unwrap()).abs() < 120,
        "fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "HMAC matches");
}

/// One untrusted write (denied); returns the decision id.
async fn deny(client: &reqwest::Client, gw: &Gateway, token: &str) -> String {
    let resp: Value = post_json(
        client,
        gw.url("/v1/authorize"),
        token,
        &merge_call("untrusted_external"),
    )
    .await;
    assert_eq!(resp["decision"], "deny");
    resp["decision_id"].as_str().unwrap().to_owned()
}

/// A text object: our own mrkdwn (never auto-linked), or plain text shown as written.
fn assert_text_object(text: &Value) {
    match text["type"].as_str() {
        Some("mrkdwn") => assert_eq!(text["verbatim"], true, "{text}"),
        Some("plain_text") => assert_eq!(text["emoji"], false, "{text}"),
        other => panic!("unexpected text type {other:?}"),
    }
    let shown = text["text"].as_str().unwrap();
    assert!(!shown.is_empty() && shown.len() <= 3000);
}

fn assert_slack_shape(body: &Value) {
    assert!(body["text"].is_string(), "text is a string: {body}");
    assert_eq!(
        body["mrkdwn"], false,
        "the fallback text is not mrkdwn: {body}"
    );
    let blocks = body["blocks"].as_array().expect("blocks is an array");
    assert!(!blocks.is_empty());
    for block in blocks {
        match block["type"].as_str() {
            Some("section") => assert_text_object(&block["text"]),
            Some("context") => {
                let elements = block["elements"].as_array().unwrap();
                assert!(!elements.is_empty() && elements.len() <= 10);
                elements.iter().for_each(assert_text_object);
            }
            other => panic!("unexpected block type {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_is_posted_once_signed_with_a_verifiable_hmac() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/hook");
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_WEBHOOK_SECRET", SECRET),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    let decision_id = deny(&client, &gw, &token).await;

    let got = eventually(5, "the deny notification", || async {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let message = &got[0];
    assert_eq!(message.path, "/hook");
    assert!(message.delivery.starts_with("dlv_"), "{}", message.delivery);
    verify_signature(message, SECRET);
    let body = message.json();
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["agent_id"], agent_id.as_str());
    assert_eq!(body["kind"], "deny");
    assert_eq!(body["count"], 1);
    assert_eq!(body["decision_ids"], json!([decision_id]));
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .contains("github/merge_pull_request")
    );
    assert!(
        !String::from_utf8_lossy(&message.body).contains("base_branch"),
        "no raw parameters in messages"
    );
    // Exactly once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_denies_for_one_agent_coalesce_into_a_few_messages_accounting_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/hook");
    let env = [
        ("AEGIS_WEBHOOK_URL", url.as_str()),
        ("AEGIS_NOTIFY_COALESCE_SECS", "2"),
    ];
    let gw = Gateway::start_with(dir.path(), &db, &[&env[..], &DENIES_ONLY].concat()).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let mut sent = Vec::new();
    for _ in 0..50 {
        sent.push(deny(&client, &gw, &token).await);
    }
    let got = eventually(15, "50 denies reported", || async {
        let got = receiver.received();
        let total: u64 = got
            .iter()
            .map(|m| m.json()["count"].as_u64().unwrap())
            .sum();
        (total >= 50).then_some(got)
    })
    .await;
    let total: u64 = got
        .iter()
        .map(|m| m.json()["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);
    assert!(
        got.len() <= 6,
        "a handful of messages, not {}: coalesced",
        got.len()
    );
    assert_eq!(got[0].json()["count"], 1, "the first leaves at once");
    let reported = deny_ids(&got);
    assert_eq!(reported.len(), 50);
    assert_eq!(
        reported.iter().collect::<HashSet<_>>(),
        sent.iter().collect::<HashSet<_>>()
    );
    for m in got.iter().skip(1) {
        let body = m.json();
        assert_eq!(
            body["count"].as_u64().unwrap() as usize,
            body["decision_ids"].as_array().unwrap().len()
        );
        assert!(body["first_at"].as_str().unwrap() <= body["last_at"].as_str().unwrap());
    }
    let ids: HashSet<_> = got.iter().map(|m| m.delivery.clone()).collect();
    assert_eq!(ids.len(), got.len(), "one POST per delivery id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_survive_a_dead_receiver_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    // The receiver's address, with nothing listening yet.
    let addr = free_addr();
    let url = format!("http://{addr}/hook");
    let env = [
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_WEBHOOK_SECRET", SECRET),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
            ("AEGIS_WEBHOOK_RETRY_BASE_MS", "100"),
            ("AEGIS_WEBHOOK_RETRY_MAX_DELAY_SECS", "1"),
            ("AEGIS_WEBHOOK_CIRCUIT_THRESHOLD", "3"),
            ("AEGIS_WEBHOOK_CIRCUIT_PAUSE_SECS", "1"),
        ][..],
        &DENIES_ONLY,
    ]
    .concat();
    let gw = Gateway::start_with(dir.path(), &db, &env).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let mut sent = Vec::new();
    for _ in 0..8 {
        sent.push(deny(&client, &gw, &token).await);
    }
    // (id, status, attempts, denies reported), read in one statement.
    let queued = |db: &std::path::Path| -> Vec<(String, String, i64, i64)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT id, status, attempts, json_array_length(body, '$.decision_ids')
                 FROM deliveries ORDER BY rowid",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // Wait until every deny is queued (the coalesced rest after 1 s) and POSTs have failed.
    let before = eventually(10, "queued and attempted", || async {
        let rows = queued(&db);
        let covered: i64 = rows.iter().map(|r| r.3).sum();
        (covered == 8 && rows.iter().any(|r| r.2 >= 1)).then_some(rows)
    })
    .await;
    assert!(before.iter().all(|r| r.1 == "pending"));
    gw.kill_9();

    // Restarted: nothing is queued twice; then the receiver comes back.
    let gw = Gateway::start_with(dir.path(), &db, &env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let receiver = Receiver::start(addr, Log::default()).await;
    let after = eventually(15, "every delivery delivered", || async {
        let rows = queued(&db);
        rows.iter().all(|r| r.1 == "delivered").then_some(rows)
    })
    .await;
    let ids_before: Vec<_> = before.iter().map(|r| r.0.clone()).collect();
    let ids_after: Vec<_> = after.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids_before, ids_after, "the restart queued nothing again");

    let got = receiver.received();
    let mut per_id: HashMap<String, Vec<&Received>> = HashMap::new();
    for r in &got {
        verify_signature(r, SECRET);
        per_id.entry(r.delivery.clone()).or_default().push(r);
    }
    assert_eq!(
        per_id.keys().cloned().collect::<HashSet<_>>(),
        ids_after.iter().cloned().collect::<HashSet<_>>(),
        "every queued delivery arrived"
    );
    for copies in per_id.values() {
        assert!(
            copies.iter().all(|c| c.body == copies[0].body),
            "a repeat carries the same id and body"
        );
    }
    let unique: Vec<Received> = per_id.values().map(|c| c[0].clone()).collect();
    let reported = deny_ids(&unique);
    assert_eq!(reported.len(), 8);
    assert_eq!(
        reported.iter().collect::<HashSet<_>>(),
        sent.iter().collect::<HashSet<_>>()
    );
    drop(gw);
    receiver.stop().await;
}

/// The denies held back for an agent's next message are saved as where they start in the log;
/// killed before the message leaves, the restarted gateway reads them again and sends each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_held_for_the_next_message_are_sent_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/hook");
    let env = [
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_NOTIFY_COALESCE_SECS", "4"),
        ][..],
        &DENIES_ONLY,
    ]
    .concat();
    let gw = Gateway::start_with(dir.path(), &db, &env).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let mut sent = vec![deny(&client, &gw, &token).await];
    eventually(10, "the first deny sent at once", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    for _ in 0..6 {
        sent.push(deny(&client, &gw, &token).await);
    }
    // The notifier has passed the held denies: its cursor is saved beyond them.
    let last_seq: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
            .unwrap()
    };
    eventually(10, "the held denies passed by the notifier", || async {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let (cursor, held_from): (i64, Option<i64>) = conn
            .query_row(
                "SELECT (SELECT seq FROM consumer_cursors WHERE name = 'notify'),
                        (SELECT pending_from_seq FROM notify_coalesce)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        (cursor >= last_seq && held_from.is_some()).then_some(())
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "the rest is held back");
    gw.kill_9();

    let gw = Gateway::start_with(dir.path(), &db, &env).await;
    let got = eventually(15, "every deny reported", || async {
        let got = receiver.received();
        (deny_ids(&got).len() >= sent.len()).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reported = deny_ids(&receiver.received());
    assert_eq!(reported.len(), sent.len(), "each deny once: {reported:?}");
    assert_eq!(
        reported.iter().collect::<HashSet<_>>(),
        sent.iter().collect::<HashSet<_>>()
    );
    assert_eq!(got[1].json()["count"], 6, "the held denies in one message");
    drop(gw);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_follow_the_incoming_webhook_schema_and_link_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/slack");
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_SLACK_WEBHOOK_URL", url.as_str()),
            ("AEGIS_PUBLIC_URL", "https://aegis.example.com"),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..5 {
        deny(&client, &gw, &token).await;
    }
    let incident = eventually(10, "the deny_storm incident in Slack", || async {
        receiver.received().iter().find_map(|m| {
            let body = m.json();
            let text = body.to_string();
            let at = text.find("https://aegis.example.com/v1/incidents/inc_")?;
            Some((body, text[at..].split('|').next().unwrap().to_owned()))
        })
    })
    .await;
    for m in receiver.received() {
        assert_eq!(m.path, "/slack");
        assert!(m.signature.is_none(), "no secret configured, no signature");
        assert_slack_shape(&m.json());
    }
    let (body, link) = incident;
    assert!(body["text"].as_str().unwrap().contains(&agent_id));
    let context = body.to_string();
    assert!(context.contains("acme"));
    let incident_id = link.rsplit('/').next().unwrap();
    let incidents = get_json(&client, gw.url("/v1/incidents?kind=deny_storm"), &admin).await;
    assert_eq!(incidents[0]["id"], incident_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_chosen_names_reach_slack_as_literal_text() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/slack");
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[("AEGIS_SLACK_WEBHOOK_URL", url.as_str())],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    // An unregistered tool, named by the agent to look like an operator's message.
    let call = json!({
        "tool_call": {"tool": "*RESOLVED: false positive*", "resource": "x",
                      "action": "<!channel> Re-enable here: https://evil.example/u",
                      "parameters": {}},
        "context": {"source_trust": "untrusted_external"}
    });
    let resp: Value = post_json(&client, gw.url("/v1/authorize"), &token, &call).await;
    assert_eq!(resp["decision"], "deny");
    let body = eventually(5, "the Slack message", || async {
        receiver.received().first().map(Received::json)
    })
    .await;
    assert_slack_shape(&body);
    let fallback = body["text"].as_str().unwrap();
    assert!(
        fallback.contains("&lt;!channel&gt;") && !fallback.contains("<!channel>"),
        "no mention: {fallback}"
    );
    let blocks = body["blocks"].as_array().unwrap();
    for block in blocks {
        let texts: Vec<&Value> = match block["type"].as_str() {
            Some("section") => vec![&block["text"]],
            _ => block["elements"].as_array().unwrap().iter().collect(),
        };
        for text in texts {
            let shown = text["text"].as_str().unwrap();
            if text["type"] == "mrkdwn" {
                assert!(
                    !shown.contains("RESOLVED") && !shown.contains("evil.example"),
                    "agent text in mrkdwn: {shown}"
                );
            }
        }
    }
    let summary = &blocks[1]["text"];
    assert_eq!(summary["type"], "plain_text");
    let shown = summary["text"].as_str().unwrap();
    assert!(
        shown.contains(
            "*RESOLVED: false positive*/&lt;!channel&gt; Re-enable here: https://evil.example/u"
        ),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_subscriptions_refuse_internal_urls_unless_allowed_and_deliver_tests() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let client = reqwest::Client::new();
    let gw = Gateway::start(dir.path(), &db).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "ftp://example.com/hook",
    ] {
        let resp = client
            .post(gw.url("/v1/webhooks"))
            .bearer_auth(&admin)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], "url", "{url}");
    }
    gw.terminate();

    let receiver = Receiver::start(any_port(), Log::default()).await;
    let gw = Gateway::start_with(dir.path(), &db, &[("AEGIS_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let resp = client
        .post(gw.url("/v1/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": receiver.url("/hook"), "format": "json", "events": ["deny", "incident"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let secret = created["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = get_json(&client, gw.url("/v1/webhooks"), &admin).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "never returned again");

    let resp = client
        .post(gw.url(&format!("/v1/webhooks/{id}/test")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let test_id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = eventually(5, "the test delivery", || async {
        receiver
            .received()
            .into_iter()
            .find(|r| r.delivery == test_id)
    })
    .await;
    verify_signature(&got, &secret);
    assert_eq!(got.json()["kind"], "test");
    let deliveries = eventually(5, "delivered status", || async {
        let list = get_json(
            &client,
            gw.url(&format!("/v1/webhooks/{id}/deliveries")),
            &admin,
        )
        .await;
        (list[0]["status"] == "delivered").then_some(list)
    })
    .await;
    assert_eq!(deliveries[0]["id"], test_id.as_str());
    assert_eq!(deliveries[0]["attempts"], 1);

    let resp = client
        .delete(gw.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let listed = get_json(&client, gw.url("/v1/webhooks"), &admin).await;
    assert!(listed.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l0_tenant_gets_no_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/hook");
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_NOTIFY_COALESCE_SECS", "1"),
            ("AEGIS_SOC_AUTONOMY_LEVEL", "L0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..6 {
        deny(&client, &gw, &token).await;
    }
    // The SOC still opens the incident (observe), but nothing is notified.
    eventually(5, "the incident at L0", || async {
        let list = get_json(&client, gw.url("/v1/incidents"), &admin).await;
        (!list.as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receiver.received().is_empty(), "L0: no notifications");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let queued: i64 = conn
        .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0);

    // Control: the same tenant at L1 is notified.
    let resp = client
        .put(gw.url("/v1/tenants/soc-autonomy"))
        .bearer_auth(&admin)
        .json(&json!({"level": "L1"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let decision_id = deny(&client, &gw, &token).await;
    eventually(5, "the L1 notification", || async {
        receiver
            .received()
            .iter()
            .any(|m| {
                m.body
                    .windows(decision_id.len())
                    .any(|w| w == decision_id.as_bytes())
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_slows_neither_authorize_nor_the_soc() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let receiver = Receiver::start(any_port(), Log::default()).await;
    let url = receiver.url("/hang");
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_NOTIFY_COALESCE_SECS", "0"),
            ("AEGIS_WEBHOOK_MAX_IN_FLIGHT", "2"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let one = std::time::Instant::now();
        deny(&client, &gw, &token).await;
        assert!(
            one.elapsed() < Duration::from_secs(1),
            "authorize stays fast"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The SOC still opens the storm incident at once.
    eventually(5, "the deny_storm incident", || async {
        let list = get_json(&client, gw.url("/v1/incidents?kind=deny_storm"), &admin).await;
        (!list.as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    // Every deny is queued even though nothing can be delivered.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let queued: i64 = eventually(5, "20 denies queued", || async {
        let n: i64 = conn
            .query_row(
                "SELECT COALESCE(SUM(json_array_length(body, '$.decision_ids')), 0) FROM deliveries",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(queued, 20);
}

fn delivery_rows(db: &std::path::Path) -> Vec<(String, i64, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT status, attempts, last_error FROM deliveries ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_gives_up_after_its_retry_budget_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let url = format!("http://{}/hook", free_addr());
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_WEBHOOK_MAX_RETRY_SECS", "1"),
            ("AEGIS_WEBHOOK_RETRY_BASE_MS", "100"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    deny(&client, &gw, &token).await;
    let rows = eventually(10, "the delivery marked failed", || async {
        let rows = delivery_rows(&db);
        (!rows.is_empty() && rows.iter().all(|r| r.0 == "failed")).then_some(rows)
    })
    .await;
    let (_, attempts, error) = &rows[0];
    assert!(*attempts >= 2, "retried before giving up: {attempts}");
    let error = error.as_deref().unwrap();
    assert!(
        error.contains("gave up") && error.contains("cannot connect"),
        "{error}"
    );
    assert!(!error.contains(&url), "no URL in errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_pauses_a_failing_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (db, admin) = acme_on_sqlite(dir.path());
    let url = format!("http://{}/hook", free_addr());
    let gw = Gateway::start_with(
        dir.path(),
        &db,
        &[
            ("AEGIS_WEBHOOK_URL", url.as_str()),
            ("AEGIS_NOTIFY_COALESCE_SECS", "0"),
            ("AEGIS_WEBHOOK_RETRY_BASE_MS", "50"),
            ("AEGIS_WEBHOOK_CIRCUIT_THRESHOLD", "2"),
            ("AEGIS_WEBHOOK_CIRCUIT_PAUSE_SECS", "60"),
            ("AEGIS_WEBHOOK_MAX_IN_FLIGHT", "1"),
            ("AEGIS_DENY_STORM_N", "1000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..4 {
        deny(&client, &gw, &token).await;
    }
    eventually(5, "two failed attempts", || async {
        let attempts: i64 = delivery_rows(&db).iter().map(|r| r.1).sum();
        (attempts >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = delivery_rows(&db);
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows.iter().map(|r| r.1).sum::<i64>(),
        2,
        "paused after 2 failures"
    );
    assert!(rows.iter().all(|r| r.0 == "pending"), "paused, not dropped");
}
