//! `aegis archive` against a serving gateway, on both stores: the archive of the first half
//! of a history verifies offline, the pruned database verifies from its cut, both verify as
//! one history, a flipped byte in the archive is named, authorize keeps answering during the
//! prune, a closed incident keeps its evidence summary, and the gateway restarts on the
//! pruned database.
//!
//! The history has `AEGIS_ARCHIVE_TEST_DECISIONS` decisions (default 4,000 per store here,
//! and 20,000 in `a_20k_history_…`; the size, 100,000, runs with
//! `AEGIS_ARCHIVE_TEST_DECISIONS=100000`).

#[macro_use]
mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use support::*;

fn history_size(default: u64) -> u64 {
    std::env::var("AEGIS_ARCHIVE_TEST_DECISIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A read from a trusted source: allowed, and cheap to make many of.
fn read_call() -> Value {
    json!({
        "tool_call": {"tool": "github", "action": "get_file", "resource": "payments#482"},
        "context": {"source_trust": "trusted_internal_signed"}
    })
}

/// Authorize calls from `tasks` concurrent clients: `per_task` each, or until `stop` when it
/// is given. Returns (calls answered with a decision, calls that were not).
async fn load(
    base: &str,
    token: &str,
    tasks: usize,
    per_task: u64,
    stop: Option<Arc<AtomicBool>>,
) -> (u64, u64) {
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (url, token) = (format!("{base}/v1/authorize"), token.to_owned());
        let (answered, failed, stop) = (answered.clone(), failed.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut made = 0;
            while stop
                .as_ref()
                .map_or(made < per_task, |s| !s.load(Ordering::SeqCst))
            {
                made += 1;
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&read_call())
                    .send()
                    .await;
                let decided = match resp {
                    Ok(resp) if resp.status() == 200 => resp
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["decision"] == "allow"),
                    _ => false,
                };
                let counter = if decided { &answered } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    (
        answered.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    )
}

fn run_aegis(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = aegis(dir, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn count(db_rows: Vec<String>) -> u64 {
    db_rows[0].parse().unwrap()
}

async fn archive_while_serving(backend: Backend, decisions: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::fresh(backend, dir.path()).await;
    let admin = init_on(dir.path(), db.arg(), "acme");
    let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;

    // A deny storm by another agent, closed by an operator: an incident whose decisions
    // are archived with the first half.
    let stormer: Value = post_json(
        &client,
        gw.url("/v1/agents"),
        &admin,
        &json!({"name": "stormer"}),
    )
    .await;
    let stormer_token = stormer["agent_token"].as_str().unwrap();
    for _ in 0..6 {
        authorize(&client, &gw, stormer_token, "untrusted_external").await;
    }
    let incident = eventually(20, "the deny storm's incident", || async {
        let found = get_json(&client, gw.url("/v1/incidents?kind=deny_storm"), &admin).await;
        found.as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let incident_id = incident["id"].as_str().unwrap().to_owned();
    let closed = client
        .post(gw.url(&format!("/v1/incidents/{incident_id}/close")))
        .bearer_auth(&admin)
        .json(&json!({"reason": "drill"}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);

    let (made, failed) = load(&gw.base, &token, 16, decisions / 2 / 16, None).await;
    assert_eq!(failed, 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let midpoint = json_now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (made_after, failed) = load(&gw.base, &token, 16, decisions / 2 / 16, None).await;
    assert_eq!(failed, 0);
    // The consumers have read the first half (the archive keeps what they have not).
    let last_event = db_first_half_last_event(db.arg(), &midpoint).await;
    eventually(30, "the consumers to pass the first half", || async {
        let cursors = query_column(
            db.arg(),
            "SELECT CAST(MIN(seq) AS TEXT) FROM consumer_cursors WHERE name IN ('soc', 'notify')",
        )
        .await;
        (cursors[0].parse::<i64>().unwrap() >= last_event).then_some(())
    })
    .await;

    // The load itself looks like a burst to the SOC: close what it opened, since an open
    // incident keeps its evidence out of any archive.
    close_open_incidents(&client, &gw, &admin).await;
    let before_prune = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &admin,
    )
    .await;

    // A retention of 30 days refuses an archive up to the midpoint, naming the tenant.
    let retention = |min_days: Value| {
        client
            .put(gw.url("/v1/tenants/retention"))
            .bearer_auth(&admin)
            .json(&json!({ "min_days": min_days }))
            .send()
    };
    assert_eq!(retention(json!(30)).await.unwrap().status(), 200);
    let refused = dir.path().join("refused.jsonl");
    let (ok, _, stderr) = run_aegis(
        dir.path(),
        &[
            "archive",
            "--db",
            db.arg(),
            "--before",
            &midpoint,
            "--out",
            refused.to_str().unwrap(),
            "--signing-key-file",
            &signing_key_file(dir.path(), db.arg()),
        ],
    );
    assert!(
        !ok && stderr.contains("tenant acme") && stderr.contains("30 days"),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert_eq!(retention(Value::Null).await.unwrap().status(), 200);

    // Archive while authorize calls go on.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (base, token, stop) = (gw.base.clone(), token.clone(), stop.clone());
        tokio::spawn(async move { load(&base, &token, 4, 0, Some(stop)).await })
    };
    let archive = dir.path().join("first-half.jsonl");
    let (ok, stdout, stderr) = {
        let (dir, db_arg, archive) = (dir.path().to_owned(), db.arg().to_owned(), archive.clone());
        let midpoint = midpoint.clone();
        tokio::task::spawn_blocking(move || {
            run_aegis(
                &dir,
                &[
                    "archive",
                    "--db",
                    &db_arg,
                    "--before",
                    &midpoint,
                    "--out",
                    archive.to_str().unwrap(),
                    "--batch",
                    "500",
                    "--signing-key-file",
                    &signing_key_file(&dir, &db_arg),
                ],
            )
        })
        .await
        .unwrap()
    };
    stop.store(true, Ordering::SeqCst);
    let (served, failed_during) = during.await.unwrap();
    assert!(ok, "archive failed: {stderr}");
    assert_eq!(failed_during, 0, "authorize failed during the prune");
    assert!(served > 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let chain = &report["archived"][0];
    let through = chain["through_seq"].as_u64().unwrap();
    assert_eq!(chain["from_seq"], 1);
    assert_eq!(chain["pruned"].as_u64(), Some(through), "{report}");
    // Everything decided before the midpoint: its last receipt ended a commit batch, so a
    // checkpoint names it.
    assert_eq!(through, 6 + made, "{report}");
    let left = count(
        query_column(
            db.arg(),
            &format!("SELECT CAST(COUNT(*) AS TEXT) FROM receipts WHERE seq <= {through}"),
        )
        .await,
    );
    assert_eq!(left, 0);
    let decisions_left =
        count(query_column(db.arg(), "SELECT CAST(COUNT(*) AS TEXT) FROM decisions").await);
    assert_eq!(decisions_left + through, 6 + made + made_after + served);

    // The archive verifies offline, alone; the pruned database from its cut; both as one.
    let archive_arg = archive.to_str().unwrap();
    let (ok, stdout, stderr) = run_aegis(dir.path(), &["receipts", "verify", archive_arg]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("ok: {through} receipts")),
        "{stdout}"
    );
    let (ok, _, stderr) = run_aegis(dir.path(), &["receipts", "verify", "--db", db.arg()]);
    assert!(ok, "the pruned database: {stderr}");
    let (ok, stdout, stderr) = run_aegis(
        dir.path(),
        &["receipts", "verify", archive_arg, "--db", db.arg()],
    );
    assert!(ok, "archive + database: {stderr}");
    let total = 6 + made + made_after + served;
    assert!(
        stdout.contains(&format!("ok: {total} receipts")),
        "{stdout}"
    );
    // So do the archive and an export of the live chain.
    let (ok, live, stderr) = run_aegis(dir.path(), &["receipts", "export", "--db", db.arg()]);
    assert!(ok, "{stderr}");
    let live_path = dir.path().join("live.jsonl");
    std::fs::write(&live_path, live).unwrap();
    let live_arg = live_path.to_str().unwrap();
    let (ok, stdout, stderr) =
        run_aegis(dir.path(), &["receipts", "verify", archive_arg, live_arg]);
    assert!(ok, "archive + export: {stderr}");
    assert!(
        stdout.contains(&format!("ok: {total} receipts")),
        "{stdout}"
    );
    let (ok, _, stderr) = run_aegis(dir.path(), &["receipts", "verify", live_arg]);
    assert!(ok, "the export alone, from its cut: {stderr}");
    // The live chain alone is not the whole history when the database is named after it.
    let (ok, _, stderr) = run_aegis(
        dir.path(),
        &["receipts", "verify", live_arg, "--db", db.arg()],
    );
    assert!(!ok && stderr.contains("cut"), "{stderr}");

    // One flipped byte in a receipt of the archive is named.
    let text = std::fs::read_to_string(&archive).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let victim: Value = serde_json::from_str(&lines[2]).unwrap();
    let at = lines[2].find("\"action_hash\":\"").unwrap() + "\"action_hash\":\"".len();
    let flipped = if &lines[2][at..=at] == "a" { "b" } else { "a" };
    lines[2].replace_range(at..=at, flipped);
    assert_ne!(
        serde_json::from_str::<Value>(&lines[2]).unwrap(),
        victim,
        "one byte flipped"
    );
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let (ok, _, stderr) = run_aegis(
        dir.path(),
        &["receipts", "verify", tampered.to_str().unwrap()],
    );
    assert!(!ok);
    let receipt_id = victim["id"].as_str().unwrap();
    assert!(
        stderr.contains("line 3") && stderr.contains(receipt_id) && stderr.contains("hash"),
        "{stderr}"
    );

    // Again up to the same time: nothing is left to archive, no file is written, and an
    // existing archive is never overwritten.
    let key_file = signing_key_file(dir.path(), db.arg());
    let again = dir.path().join("again.jsonl");
    let archive_again = |out: &str| {
        run_aegis(
            dir.path(),
            &[
                "archive",
                "--db",
                db.arg(),
                "--before",
                &midpoint,
                "--out",
                out,
                "--signing-key-file",
                &key_file,
            ],
        )
    };
    let (ok, stdout, stderr) = archive_again(again.to_str().unwrap());
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"archived": [], "out": null})
    );
    assert!(!again.exists());
    let (ok, _, stderr) = archive_again(archive_arg);
    assert!(!ok && stderr.contains("never overwritten"), "{stderr}");

    // The closed incident keeps its evidence summary and count; its decisions are gone.
    let evidence: Vec<String> = query_column(
        db.arg(),
        &format!(
            "SELECT ev.subject_id FROM incident_evidence e JOIN events ev ON ev.seq = e.event_seq
             WHERE e.incident_id = '{incident_id}' AND ev.kind = 'decision' ORDER BY e.event_seq"
        ),
    )
    .await;
    assert!(!evidence.is_empty());
    let still_there = count(
        query_column(
            db.arg(),
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM decisions WHERE id IN ('{}')",
                evidence.join("','")
            ),
        )
        .await,
    );
    assert_eq!(still_there, 0, "the storm's decisions were archived");
    // Their events stay as evidence, with the payload they read with before: written out
    // from the decision row before it went.
    let payloads: Vec<String> = query_column(
        db.arg(),
        &format!(
            "SELECT ev.payload FROM incident_evidence e JOIN events ev ON ev.seq = e.event_seq
             WHERE e.incident_id = '{incident_id}' AND ev.kind = 'decision' ORDER BY e.event_seq"
        ),
    )
    .await;
    assert_eq!(payloads.len(), evidence.len());
    for (payload, decision_id) in payloads.iter().zip(&evidence) {
        let payload: Value = serde_json::from_str(payload).expect("a written-out payload");
        assert_eq!(payload["decision"], "deny", "{payload}");
        assert_eq!(payload["decision_id"], decision_id.as_str(), "{payload}");
    }
    let after_prune = get_json(
        &client,
        gw.url(&format!("/v1/incidents/{incident_id}")),
        &admin,
    )
    .await;
    assert_eq!(
        after_prune["evidence_count"],
        before_prune["evidence_count"]
    );
    assert_eq!(
        after_prune["evidence"], before_prune["evidence"],
        "{after_prune:#}"
    );

    // A restart audits the pruned chains (anchor file and verified point behind the cut) and
    // serves.
    assert!(gw.terminate().success());
    let gw = Gateway::start_on(dir.path(), db.arg(), &[]).await;
    assert_eq!(authorize_read(&client, &gw, &token).await, "allow");
    assert!(
        !gw.log_text().contains("receipt chain broken"),
        "{}",
        gw.log_text()
    );
}

async fn close_open_incidents(client: &reqwest::Client, gw: &Gateway, admin: &str) {
    let all = get_json(client, gw.url("/v1/incidents?limit=500"), admin).await;
    for incident in all.as_array().unwrap() {
        if incident["status"] == "closed" {
            continue;
        }
        let id = incident["id"].as_str().unwrap();
        let closed = client
            .post(gw.url(&format!("/v1/incidents/{id}/close")))
            .bearer_auth(admin)
            .json(&json!({"reason": "load test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(closed.status(), 200);
    }
}

/// The key file the gateway generated beside its database (or in its directory on
/// PostgreSQL).
fn signing_key_file(dir: &Path, db: &str) -> String {
    if db.starts_with("postgres://") {
        dir.join("aegis.signing-key").to_str().unwrap().to_owned()
    } else {
        format!("{db}.signing-key")
    }
}

async fn authorize_read(client: &reqwest::Client, gw: &Gateway, token: &str) -> String {
    let resp = post_json(client, gw.url("/v1/authorize"), token, &read_call()).await;
    resp["decision"].as_str().unwrap_or_default().to_owned()
}

/// Now, as `--before` takes it.
fn json_now() -> String {
    aegis_core::timestamp::format_millis(aegis_store::now_ms())
}

/// The event seq of the last decision made before `midpoint`.
async fn db_first_half_last_event(db: &str, midpoint: &str) -> i64 {
    let ms = aegis_core::timestamp::parse_millis(midpoint).unwrap();
    query_column(
        db,
        &format!("SELECT CAST(MAX(event_seq) AS TEXT) FROM decisions WHERE created_at < {ms}"),
    )
    .await[0]
        .parse()
        .unwrap()
}

e2e_test!(
    async fn an_archive_of_the_first_half_verifies_and_the_pruned_database_serves_and_verifies(
        backend
    ) {
        archive_while_serving(backend, history_size(4_000)).await
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20k_history_archives_in_batches_while_authorize_is_served() {
    archive_while_serving(Backend::Sqlite, history_size(20_000)).await
}
