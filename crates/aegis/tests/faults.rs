//! Faults injected into real `aegis serve` replicas on one PostgreSQL database, under load:
//! SIGSTOP/SIGCONT of a replica, `pg_terminate_backend` of a given replica's session (each
//! is named `aegis:<role>:<pid>`), a foreign session holding the write lock. Each test
//! asserts one row of the guarantees table in `docs/replicas.md`.

mod support;

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::deployment::*;
use support::receiver::*;
use support::*;

/// Session bounds short enough for a test: a replica idle inside a transaction for 1 s
/// loses its session (and the write lock); a write waits up to 2 s for the lock.
const IDLE_BOUND: Duration = Duration::from_millis(1000);
const LOCK_BOUND: Duration = Duration::from_millis(2000);
const BOUNDS: [(&str, &str); 2] = [
    ("AEGIS_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", "1000"),
    ("AEGIS_PG_LOCK_TIMEOUT_MS", "2000"),
];

fn read_call() -> Value {
    json!({"tool_call": {"tool": "github", "action": "get_file", "mutates_state": false},
           "context": {"source_trust": "trusted_internal_signed"}})
}

/// One answer to an authorize call.
#[derive(Debug, Clone)]
struct Answer {
    sent: Instant,
    took: Duration,
    /// `allow`, `deny`, `require_approval`, or the HTTP status.
    outcome: String,
    decision_id: Option<String>,
    reason: String,
    /// The error code of a JSON error answer.
    error_code: Option<String>,
}

async fn call(client: &reqwest::Client, gw: &Gateway, token: &str) -> Answer {
    call_at(client, &gw.base, token).await
}

/// One authorize call to the replica at `base`.
async fn call_at(client: &reqwest::Client, base: &str, token: &str) -> Answer {
    let sent = Instant::now();
    let resp = client
        .post(format!("{base}/v1/authorize"))
        .bearer_auth(token)
        .json(&read_call())
        .send()
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("a JSON answer");
    Answer {
        sent,
        took: sent.elapsed(),
        outcome: match status {
            200 => body["decision"].as_str().unwrap().to_owned(),
            status => status.to_string(),
        },
        decision_id: body["decision_id"].as_str().map(str::to_owned),
        reason: body["reason"].as_str().unwrap_or_default().to_owned(),
        error_code: body["error"]["code"].as_str().map(str::to_owned),
    }
}

/// Callers that keep calling the given replicas until stopped; returns every answer.
struct Load {
    stop: Arc<AtomicBool>,
    callers: tokio::task::JoinSet<Vec<Answer>>,
}

impl Load {
    fn start(client: &reqwest::Client, gateways: &[&Gateway], token: &str, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut callers = tokio::task::JoinSet::new();
        let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
        for caller in 0..n {
            let (client, token, stop) = (client.clone(), token.to_owned(), Arc::clone(&stop));
            let base = bases[caller % bases.len()].clone();
            callers.spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(call_at(&client, &base, &token).await);
                }
                answers
            });
        }
        Load { stop, callers }
    }

    async fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(answers) = self.callers.join_next().await {
            all.extend(answers.unwrap());
        }
        all
    }
}

/// Ends the sessions of `role` of the replica with process id `pid`; returns how many.
async fn terminate_session(db: &str, role: &str, pid: u32) -> usize {
    query_column(
        db,
        &format!(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity
             WHERE application_name = 'aegis:{role}:{pid}'"
        ),
    )
    .await
    .len()
}

/// Whether the replica's writer session sits inside a transaction holding `log_head`.
async fn writer_holds_the_write_lock(db: &str, pid: u32) -> bool {
    let holding = query_column(
        db,
        &format!(
            "SELECT count(*)::text FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
             WHERE a.application_name = 'aegis:writer:{pid}' AND a.state = 'idle in transaction'
               AND l.relation = 'log_head'::regclass AND l.granted"
        ),
    )
    .await;
    holding[0] != "0"
}

/// Pauses `gw` at a moment its writer holds the cluster's write lock (it is under load).
async fn pause_holding_the_write_lock(gw: &Gateway, db: &str) -> Instant {
    for _ in 0..300 {
        gw.pause();
        let paused = Instant::now();
        // What was on the wire reaches the server.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if writer_holds_the_write_lock(db, gw.pid()).await {
            return paused;
        }
        gw.resume();
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    panic!("the replica never held the write lock when paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_acknowledged_through_one_replica_holds_on_a_paused_one() {
    let d = Deployment::start(2, &BOUNDS).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let db = d.database.url();
    let client = reqwest::Client::new();
    let (agent_id, token) = agent_with_github(&client, a, &d.admin).await;
    // Both replicas have the active agent cached.
    assert_eq!(call(&client, a, &token).await.outcome, "allow");
    assert_eq!(call(&client, b, &token).await.outcome, "allow");

    let load = Load::start(&client, &[a, b], &token, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B stops wherever it is — possibly holding the write lock, possibly mid-decision.
    b.pause();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let froze = client
        .post(a.url(&format!("/v1/agents/{agent_id}/freeze")))
        .bearer_auth(&d.admin)
        .json(&json!({"reason": "fault test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(froze.status(), 200);
    let acknowledged = Instant::now();
    // B stays paused a while with its stale cache, then resumes under load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = load.stop().await;

    // No allow for a call made after the freeze was acknowledged, on either replica.
    let late: Vec<&Answer> = answers.iter().filter(|a| a.sent >= acknowledged).collect();
    assert!(
        late.len() > 10,
        "too little load after the freeze: {late:?}"
    );
    let allowed: Vec<&&Answer> = late.iter().filter(|a| a.outcome == "allow").collect();
    assert!(allowed.is_empty(), "allowed after the freeze: {allowed:?}");
    // None stored after the freeze in log order either.
    let stored_after = query_column(
        db,
        &format!(
            "SELECT count(*)::text FROM decisions WHERE agent_id = '{agent_id}' AND decision = 'allow'
               AND event_seq > (SELECT seq FROM events WHERE kind = 'agent.frozen' AND agent_id = '{agent_id}')"
        ),
    )
    .await;
    assert_eq!(stored_after, ["0"]);
    // Every answer is what was recorded.
    let recorded: HashMap<String, String> = query_column(
        db,
        &format!("SELECT id || ' ' || decision FROM decisions WHERE agent_id = '{agent_id}'"),
    )
    .await
    .into_iter()
    .map(|row| {
        let (id, verdict) = row.split_once(' ').unwrap();
        (id.to_owned(), verdict.to_owned())
    })
    .collect();
    for answer in &answers {
        if let Some(id) = &answer.decision_id {
            assert_eq!(recorded.get(id), Some(&answer.outcome), "{answer:?}");
        }
    }
    let fenced = answers
        .iter()
        .filter(|a| a.reason.contains("changed while this call was decided"))
        .count();
    eprintln!(
        "{} answers, {} after the freeze, {fenced} stale decisions fenced into denies",
        answers.len(),
        late.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_resumed_delivers_no_item_a_second_time() {
    let receiver = Receiver::start(any_port(), Default::default()).await;
    let hook = receiver.url("/hook");
    let mut env = BOUNDS.to_vec();
    env.extend([
        ("AEGIS_WEBHOOK_URL", hook.as_str()),
        ("AEGIS_NOTIFY_COALESCE_SECS", "2"),
    ]);
    let mut d = Deployment::start(1, &env).await;
    wait_until_leading(&d.replicas[0]).await;
    let second = start_replica(d.dir.path(), 1, d.database.url(), &env).await;
    d.replicas.push(second);
    let (leader, follower) = (&d.replicas[0], &d.replicas[1]);
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, follower, &d.admin).await;

    // The first deny is notified at once; the next ones are held for the coalescing window.
    let deny = merge_call("untrusted_external");
    for i in 0..4 {
        let gw = if i % 2 == 0 { leader } else { follower };
        let answer = post_json(&client, gw.url("/v1/authorize"), &token, &deny).await;
        assert_eq!(answer["decision"], "deny");
    }
    eventually(10, "the first deny notified", || async {
        (!deny_ids(&receiver.received()).is_empty()).then_some(())
    })
    .await;
    // The held denies are saved with the notifier's cursor.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The leader stops, and the server ends its lock session; the follower takes over and
    // flushes the held notifications when their window ends.
    leader.pause();
    assert_eq!(
        terminate_session(d.database.url(), "leader", leader.pid()).await,
        1
    );
    wait_until_leading(follower).await;
    eventually(10, "the held denies notified by the new leader", || async {
        (deny_ids(&receiver.received()).len() >= 4).then_some(())
    })
    .await;
    // The old leader resumes with the same held notifications due in its memory.
    leader.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Denies made through the resumed replica after that are notified once too.
    for _ in 0..2 {
        let answer = post_json(&client, leader.url("/v1/authorize"), &token, &deny).await;
        assert_eq!(answer["decision"], "deny");
    }
    eventually(10, "every deny notified", || async {
        (deny_ids(&receiver.received()).len() >= 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let messages = receiver.received();
    let mut deliveries_of: HashMap<String, HashSet<String>> = HashMap::new();
    for message in &messages {
        for item in message.json()["items"].as_array().unwrap() {
            deliveries_of
                .entry(item["id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(message.delivery.clone());
        }
    }
    let twice: Vec<_> = deliveries_of
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "items delivered under two delivery ids: {twice:?}"
    );
    assert_eq!(deny_ids(&messages).len(), 6, "every deny notified once");
    // Whether the resumed leader tried to commit before its heartbeat noticed the loss is a
    // race; when it did, the epoch fence refused it.
    eprintln!(
        "the resumed leader's consumer commits refused: {}",
        leader.log_text().matches("does not lead").count()
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_stalls_the_others_for_at_most_the_bound() {
    let d = Deployment::start(2, &BOUNDS).await;
    let (a, b) = (&d.replicas[0], &d.replicas[1]);
    let db = d.database.url();
    let client = reqwest::Client::new();
    let (_, token) = agent_with_github(&client, a, &d.admin).await;

    // B under load is paused while its writer holds the write lock, for 8 s.
    let load = Load::start(&client, &[b], &token, 6);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paused = pause_holding_the_write_lock(b, db).await;
    let mut on_a = Vec::new();
    while paused.elapsed() < Duration::from_secs(8) {
        on_a.push(call(&client, a, &token).await);
    }
    // The server ended B's writer session (its lock with it).
    assert_eq!(
        query_column(
            db,
            &format!(
                "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'aegis:writer:{}'",
                b.pid()
            ),
        )
        .await,
        ["0"]
    );
    b.resume();
    let answers_on_b = load.stop().await;

    // A waited for the lock at most the idle bound (plus the time to find B holding it),
    // and answered every call.
    let slowest = on_a.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "B paused holding the write lock for 8 s: {} calls on A, slowest {slowest:?}",
        on_a.len()
    );
    assert!(
        slowest < IDLE_BOUND + Duration::from_millis(1500),
        "A stalled for {slowest:?}"
    );
    assert!(on_a.iter().all(|a| a.outcome == "allow"), "{on_a:?}");
    assert!(on_a.len() > 20, "A kept committing: {} calls", on_a.len());
    // B's calls caught in the ended transaction failed closed; B then recovers.
    for answer in answers_on_b.iter().filter(|a| a.outcome != "allow") {
        assert_eq!(answer.outcome, "503", "{answer:?}");
        assert_eq!(answer.error_code.as_deref(), Some("unavailable"));
    }
    eventually(10, "B to answer again", || async {
        (call(&client, b, &token).await.outcome == "allow").then_some(())
    })
    .await;

    // A session holding the lock without being idle in a transaction of ours (say, an
    // operator's long statement): writes give up after the lock bound with a JSON 503.
    let (holder, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    holder
        .batch_execute("BEGIN; SELECT seq FROM log_head FOR UPDATE")
        .await
        .unwrap();
    let refused = call(&client, a, &token).await;
    assert_eq!(refused.outcome, "503", "{refused:?}");
    assert_eq!(refused.error_code.as_deref(), Some("unavailable"));
    assert!(
        refused.took >= LOCK_BOUND && refused.took < LOCK_BOUND + Duration::from_millis(1500),
        "gave up after {:?}",
        refused.took
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(call(&client, a, &token).await.outcome, "allow");
}
