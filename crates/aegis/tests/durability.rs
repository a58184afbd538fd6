//! kill -9 in the middle of a stream of authorize calls loses no answered decision, and the
//! receipt chain still verifies after restart — on SQLite and on PostgreSQL.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_answered_decision_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aegis.db");
    kill_9_loses_no_answered_decision(dir.path(), db.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_answered_decision_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let database = aegis_testdb::FreshDatabase::create().await;
    kill_9_loses_no_answered_decision(dir.path(), database.url()).await;
}

async fn kill_9_loses_no_answered_decision(dir: &Path, db: &str) {
    let admin = init_on(dir, db, "acme");
    let gw = Gateway::start_on(dir, db, &[]).await;
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, &gw, &admin).await;

    // 16 callers stream authorize calls until the gateway dies under them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for caller in 0..16 {
        let (client, url, token, stop) = (
            client.clone(),
            gw.url("/v1/authorize"),
            token.clone(),
            Arc::clone(&stop),
        );
        callers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let source = if caller % 2 == 0 {
                "trusted_internal_signed"
            } else {
                "untrusted_external"
            };
            while !stop.load(Ordering::Relaxed) {
                let Ok(resp) = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&merge_call(source))
                    .send()
                    .await
                else {
                    break;
                };
                if resp.status() != 200 {
                    break;
                }
                let Ok(body) = resp.json::<Value>().await else {
                    break;
                };
                answered.push(body["decision_id"].as_str().unwrap().to_owned());
            }
            answered
        }));
    }
    // Let a few hundred decisions through, then pull the plug mid-stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let count: i64 = query_column(db, "SELECT CAST(COUNT(*) AS TEXT) FROM decisions").await[0]
            .parse()
            .unwrap();
        if count >= 300 || std::time::Instant::now() > deadline {
            break;
        }
    }
    gw.kill_9();
    stop.store(true, Ordering::Relaxed);
    let mut answered = HashSet::new();
    for caller in callers {
        answered.extend(caller.await.unwrap());
    }
    assert!(
        answered.len() >= 100,
        "only {} decisions were answered before the kill",
        answered.len()
    );

    // Every answered decision is on disk with its receipt and its event.
    let stored: HashSet<String> = query_column(
        db,
        "SELECT d.id FROM decisions d
         JOIN receipts r ON r.id = d.receipt_id AND r.decision_id = d.id
         JOIN events e ON e.seq = d.event_seq AND e.kind = 'decision' AND e.agent_id = d.agent_id",
    )
    .await
    .into_iter()
    .collect();
    let lost: Vec<_> = answered.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} answered decisions lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    // After a restart the chain verifies (the unsigned head, if any, is sealed at start)
    // and new decisions continue the same chain.
    let gw = Gateway::start_on(dir, db, &[]).await;
    let resp: Value = post_json(
        &client,
        gw.url("/v1/authorize"),
        &token,
        &merge_call("trusted_internal_signed"),
    )
    .await;
    let seq = resp["receipt"]["seq"].as_u64().unwrap();
    assert!(
        seq as usize > answered.len(),
        "the chain continued at seq {seq}"
    );
    let out = aegis(dir, &["receipts", "verify", "--db", db]);
    assert!(
        out.status.success(),
        "chain must verify after kill -9 and restart: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(gw.terminate().code(), Some(0), "graceful shutdown exits 0");
}
