//! Someone with write access to the database attacks the receipt chains while the gateway
//! is stopped, and then lets it start — against the built binary, on both stores.
//!
//! - Rewrite a deny as an allow, recompute every later hash, delete the tenant's
//!   checkpoints: the gateway must not sign the forged head at start (a pinned
//!   `aegis receipts verify` keeps failing), must append nothing to it (the tenant's
//!   authorize answers 503), and must raise a critical `receipt_chain_broken` alert.
//! - Delete the newest receipts with their checkpoints, or the whole chain: the database
//!   alone is consistent again, but the anchor file kept beside the signing key names a head
//!   the database no longer has.
//!
//! - Edit a receipt behind the point the background check verified and recorded in the
//!   anchor file: after a restart the check resumes from that point instead of walking the
//!   chain from seq 1, and its bounded sweep of the verified history still raises the alert.
//!
//! And `aegis receipts verify --db` on a gateway serving traffic sees no false break.

mod support;

use aegis_core::receipt::{ExportedReceipt, ReceiptBody};
use aegis_testdb::FreshDatabase;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::*;

/// Where a test's gateway keeps its data: a directory, and a SQLite file in it or a fresh
/// PostgreSQL database.
struct Site {
    dir: tempfile::TempDir,
    db: String,
    _postgres: Option<FreshDatabase>,
}

impl Site {
    fn sqlite() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("aegis.db").to_str().unwrap().to_owned();
        Site {
            dir,
            db,
            _postgres: None,
        }
    }

    async fn postgres() -> Site {
        let database = FreshDatabase::create().await;
        Site {
            dir: tempfile::tempdir().unwrap(),
            db: database.url().to_owned(),
            _postgres: Some(database),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The anchor file beside the default signing key file.
    fn anchor_file(&self) -> PathBuf {
        if self.db.starts_with("postgres://") {
            self.dir().join("aegis.signing-key.anchors")
        } else {
            PathBuf::from(format!("{}.signing-key.anchors", self.db))
        }
    }

    /// `aegis receipts verify --db DB --trusted-key PIN` plus `extra`.
    fn verify(&self, pin: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["receipts", "verify", "--db", &self.db, "--trusted-key", pin];
        args.extend_from_slice(extra);
        aegis(self.dir(), &args)
    }

    async fn count(&self, sql: &str) -> String {
        query_column(&self.db, sql).await.remove(0)
    }
}

/// The gateway's signing key as `--trusted-key` takes it.
async fn pin(client: &reqwest::Client, gw: &Gateway, admin: &str) -> String {
    let keys = get_json(client, gw.url("/v1/receipts/keys"), admin).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    format!(
        "{}={}",
        keys[0]["key_id"].as_str().unwrap(),
        keys[0]["public_key"].as_str().unwrap()
    )
}

fn assert_fails(out: &std::process::Output, why: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected a failure: {stderr}");
    assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    stderr
}

fn assert_verifies(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites the tenant's first deny as an allow in its decision row (which the receipt body
/// is rebuilt from), recomputes the hashes of its receipt and every later one, and deletes
/// the tenant's checkpoints: all a database writer can do without the signing key. The
/// receipts are read as `aegis receipts export` gives them to anyone holding the database.
async fn rewrite_first_deny_as_allow(dir: &Path, db: &str, tenant: &str) {
    let out = aegis(dir, &["receipts", "export", "--db", db, "--tenant", tenant]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bodies: Vec<ReceiptBody> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<ExportedReceipt>(line)
                .unwrap()
                .receipt
                .body
        })
        .collect();
    let deny = bodies.iter().position(|b| b.decision == "deny").unwrap();
    bodies[deny].decision = "allow".into();
    let sql = "UPDATE decisions SET decision = 'allow' WHERE id = $1";
    assert_eq!(execute(db, sql, &[&bodies[deny].decision_id]).await, 1);
    let mut prev = bodies[deny].prev_hash.clone();
    for body in bodies.iter_mut().skip(deny) {
        body.prev_hash = prev;
        prev = body.hash().unwrap();
        let sql = "UPDATE receipts SET prev_hash = $1, hash = $2 WHERE id = $3";
        assert_eq!(
            execute(db, sql, &[&body.prev_hash, &prev, &body.id]).await,
            1
        );
    }
    let sql = "DELETE FROM receipt_checkpoints WHERE tenant_id = $1";
    assert!(execute(db, sql, &[tenant]).await > 0);
}

/// Waits for the critical `receipt_chain_broken` alert.
async fn chain_broken_alert(client: &reqwest::Client, gw: &Gateway, admin: &str) -> Value {
    let alerts = eventually(20, "the receipt_chain_broken alert", || async {
        let alerts = get_json(
            client,
            gw.url("/v1/alerts?kind=receipt_chain_broken"),
            admin,
        )
        .await;
        (!alerts.as_array().unwrap().is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts[0]["severity"], "critical");
    alerts[0].clone()
}

/// The payload of the one `receipt.chain_broken` event.
async fn the_chain_broken_event(db: &str) -> Value {
    let payloads = query_column(
        db,
        "SELECT payload FROM events WHERE kind = 'receipt.chain_broken'",
    )
    .await;
    assert_eq!(payloads.len(), 1);
    serde_json::from_str(&payloads[0]).unwrap()
}

/// An authorize call of the tenant whose chain is closed: 503, nothing recorded.
async fn assert_refused(client: &reqwest::Client, gw: &Gateway, token: &str) {
    let resp = client
        .post(gw.url("/v1/authorize"))
        .bearer_auth(token)
        .json(&merge_call("trusted_internal_signed"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "receipt_chain_broken");
}

async fn a_rewritten_chain_is_never_signed_over(site: Site) {
    let (dir, db) = (site.dir(), site.db.as_str());
    let admin = init_on(dir, db, "acme");
    let client = reqwest::Client::new();
    let gw = Gateway::start_on(dir, db, &[]).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for (source, expected) in [
        ("trusted_internal_signed", "allow"),
        ("untrusted_external", "deny"),
        ("trusted_internal_signed", "allow"),
    ] {
        assert_eq!(authorize(&client, &gw, &token, source).await, expected);
    }
    let pin = pin(&client, &gw, &admin).await;
    assert!(gw.terminate().success());
    assert_verifies(&site.verify(&pin, &[]));

    rewrite_first_deny_as_allow(dir, db, "acme").await;
    assert_fails(&site.verify(&pin, &[]), "no valid signed checkpoint");

    // The gateway starts on the forged database: it signs nothing, refuses to append to the
    // chain, and raises the alert.
    let gw = Gateway::start_on(dir, db, &[]).await;
    let alert = chain_broken_alert(&client, &gw, &admin).await;
    assert!(
        alert["summary"].as_str().unwrap().contains("receipt chain"),
        "{alert}"
    );
    let payload = the_chain_broken_event(db).await;
    assert_eq!(payload["check"], "start");
    assert_eq!(payload["seq"], 3);
    assert_refused(&client, &gw, &token).await;
    assert!(gw.log_text().contains("receipt chain broken"));
    assert!(gw.terminate().success());

    let stderr = assert_fails(&site.verify(&pin, &[]), "no valid signed checkpoint");
    assert!(stderr.contains("tenant acme, seq 3"), "{stderr}");
    let sql = "SELECT CAST(COUNT(*) AS TEXT) FROM receipt_checkpoints WHERE tenant_id = 'acme'";
    assert_eq!(
        site.count(sql).await,
        "0",
        "nothing was signed over the forged chain"
    );
    let sql = "SELECT CAST(COUNT(*) AS TEXT) FROM receipts WHERE tenant_id = 'acme'";
    assert_eq!(site.count(sql).await, "3", "nothing was appended to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_is_never_signed_over_on_sqlite() {
    a_rewritten_chain_is_never_signed_over(Site::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_is_never_signed_over_on_postgres() {
    a_rewritten_chain_is_never_signed_over(Site::postgres().await).await;
}

async fn deleted_receipts_are_caught_by_the_anchor_file(site: Site) {
    let (dir, db) = (site.dir(), site.db.as_str());
    let admin = init_on(dir, db, "acme");
    let client = reqwest::Client::new();
    let gw = Gateway::start_on(dir, db, &[]).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for (source, expected) in [
        ("trusted_internal_signed", "allow"),
        ("trusted_internal_signed", "allow"),
        ("untrusted_external", "deny"),
    ] {
        assert_eq!(authorize(&client, &gw, &token, source).await, expected);
    }
    let pin = pin(&client, &gw, &admin).await;
    assert!(gw.terminate().success());
    // The clean shutdown left the head this process signed beside its key.
    let anchor_file = site.anchor_file();
    let anchors: Value =
        serde_json::from_str(&std::fs::read_to_string(&anchor_file).unwrap()).unwrap();
    assert_eq!(anchors["anchors"][0]["tenant_id"], "acme");
    assert_eq!(anchors["anchors"][0]["seq"], 3);
    let anchor_arg = anchor_file.to_str().unwrap();

    // The deny removed with its checkpoint: the chain ends on a signed head again, and the
    // database alone cannot tell.
    let tail = "SELECT id FROM receipts WHERE tenant_id = 'acme' AND seq = 3";
    let deny = query_column(db, tail).await.remove(0);
    assert_eq!(
        execute(db, "DELETE FROM receipts WHERE id = $1", &[&deny]).await,
        1
    );
    let sql = "DELETE FROM receipt_checkpoints WHERE tenant_id = 'acme' AND seq >= 3";
    assert_eq!(execute(db, sql, &[]).await, 1);
    assert_verifies(&site.verify(&pin, &[]));
    assert_fails(&site.verify(&pin, &["--anchors", anchor_arg]), "anchor");

    let gw = Gateway::start_on(dir, db, &[]).await;
    chain_broken_alert(&client, &gw, &admin).await;
    assert_refused(&client, &gw, &token).await;
    assert!(gw.terminate().success());
    // The refused chain kept its anchor: the evidence is still there at the next start.
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(&anchor_file).unwrap()).unwrap();
    assert_eq!(kept["anchors"][0]["seq"], 3);

    // Every receipt and checkpoint of the chain deleted: no chain left to check, except
    // against the anchor.
    execute(db, "DELETE FROM receipts WHERE tenant_id = 'acme'", &[]).await;
    execute(
        db,
        "DELETE FROM receipt_checkpoints WHERE tenant_id = 'acme'",
        &[],
    )
    .await;
    let out = site.verify(&pin, &[]);
    assert_verifies(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 chain(s)"));
    assert_fails(&site.verify(&pin, &["--anchors", anchor_arg]), "anchor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_receipts_are_caught_by_the_anchor_file_on_sqlite() {
    deleted_receipts_are_caught_by_the_anchor_file(Site::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_receipts_are_caught_by_the_anchor_file_on_postgres() {
    deleted_receipts_are_caught_by_the_anchor_file(Site::postgres().await).await;
}

/// The log line of one walk of the background check, as `integrity.rs` writes it at debug.
fn walk_logged(log: &str, walk: &str, from_seq: u64, checked: u64) -> bool {
    log.lines().any(|line| {
        line.contains("integrity walk")
            && line.contains("tenant=acme")
            && line.contains(walk)
            && line.contains(&format!("from_seq={from_seq} "))
            && line.contains(&format!("checked={checked}"))
    })
}

async fn the_integrity_check_resumes_from_the_anchor_file_and_still_sweeps(site: Site) {
    let (dir, db) = (site.dir(), site.db.as_str());
    let admin = init_on(dir, db, "acme");
    let client = reqwest::Client::new();
    let env = [
        ("AEGIS_INTEGRITY_INTERVAL_SECS", "1"),
        ("AEGIS_LOG", "info,aegis_soc::integrity=debug"),
    ];
    let gw = Gateway::start_on(dir, db, &env).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    for _ in 0..3 {
        authorize(&client, &gw, &token, "trusted_internal_signed").await;
        authorize(&client, &gw, &token, "untrusted_external").await;
    }
    // The check verified the whole chain and recorded how far beside the signing key.
    let anchor_file = site.anchor_file();
    eventually(10, "the verified point in the anchor file", || async {
        let text = std::fs::read_to_string(&anchor_file).unwrap_or_default();
        let anchors: Value = serde_json::from_str(&text).unwrap_or_default();
        (anchors["verified"][0]["tenant_id"] == "acme" && anchors["verified"][0]["seq"] == 6)
            .then_some(())
    })
    .await;
    assert!(gw.terminate().success());

    let gw = Gateway::start_on(dir, db, &env).await;
    eventually(10, "a resumed extension walk and a sweep", || async {
        let log = gw.log_text();
        // Nothing new to extend from seq 7; the history is walked again only by the sweep.
        (walk_logged(&log, "extend", 7, 0) && walk_logged(&log, "sweep", 1, 6)).then_some(())
    })
    .await;
    let log = gw.log_text();
    assert!(
        log.contains("integrity check resumes from the verified point") && log.contains("seq=6"),
        "{log}"
    );
    assert!(
        !walk_logged(&log, "extend", 1, 6),
        "no walk from seq 1: {log}"
    );
    assert!(gw.terminate().success());

    // A decision behind the verified point edited without recomputing any hash: the reads at
    // start cannot see it (the head, the anchor and the verified receipt are intact), the
    // sweep does.
    let sql = "UPDATE decisions SET decision = 'allow' WHERE id = \
               (SELECT decision_id FROM receipts WHERE tenant_id = 'acme' AND seq = 2)";
    assert_eq!(execute(db, sql, &[]).await, 1);
    let gw = Gateway::start_on(dir, db, &env).await;
    chain_broken_alert(&client, &gw, &admin).await;
    let payload = the_chain_broken_event(db).await;
    assert_eq!(payload["check"], "background");
    assert_eq!(payload["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integrity_check_resumes_from_the_anchor_file_and_still_sweeps_on_sqlite() {
    the_integrity_check_resumes_from_the_anchor_file_and_still_sweeps(Site::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integrity_check_resumes_from_the_anchor_file_and_still_sweeps_on_postgres() {
    the_integrity_check_resumes_from_the_anchor_file_and_still_sweeps(Site::postgres().await).await;
}

async fn verify_on_a_serving_gateway_sees_no_false_break(site: Site) {
    let (dir, db) = (site.dir(), site.db.as_str());
    let admin = init_on(dir, db, "acme");
    let client = reqwest::Client::new();
    let gw = Gateway::start_on(dir, db, &[]).await;
    let (_, token) = agent_with_github(&client, &gw, &admin).await;
    authorize(&client, &gw, &token, "trusted_internal_signed").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Four callers at once, so that commits land while each verification reads.
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, token) = (client.clone(), gw.url("/v1/authorize"), token.clone());
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let mut calls = 0;
                while !*stopped.borrow() {
                    let call = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&merge_call("trusted_internal_signed"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(call.status(), 200);
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    // Each run reads a chain that grows while it reads; every receipt it sees committed
    // with its checkpoint, so each must verify.
    for _ in 0..8 {
        let out = aegis(dir, &["receipts", "verify", "--db", db]);
        assert_verifies(&out);
    }
    stop.send(true).unwrap();
    for caller in traffic {
        assert!(caller.await.unwrap() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_a_serving_gateway_sees_no_false_break_on_sqlite() {
    verify_on_a_serving_gateway_sees_no_false_break(Site::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_a_serving_gateway_sees_no_false_break_on_postgres() {
    verify_on_a_serving_gateway_sees_no_false_break(Site::postgres().await).await;
}
