//! Drives the built `aegis` binary like a user: `aegis init`, `aegis serve` on a free
//! loopback port with a fresh SQLite file (or a fresh PostgreSQL database shared by several
//! replicas), HTTP calls, kill -9.

#![allow(dead_code)]

pub mod deployment;
pub mod receiver;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const AEGIS: &str = env!("CARGO_BIN_EXE_aegis");

/// Declares an async test that runs the gateway once per store, as `name::sqlite` and
/// `name::postgres`; the body sees the [`Backend`] under the given name.
#[allow(unused_macros)]
macro_rules! e2e_test {
    (async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::support::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::support::Backend::Postgres).await
            }
        }
    };
}

/// Which database an end-to-end test runs the gateway on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database of an end-to-end test: `aegis.db` in the test's directory, or a fresh
/// PostgreSQL database, dropped with this value.
pub struct Db {
    arg: String,
    _postgres: Option<aegis_testdb::FreshDatabase>,
}

impl Db {
    pub async fn fresh(backend: Backend, dir: &Path) -> Db {
        match backend {
            Backend::Sqlite => Db {
                arg: dir.join("aegis.db").to_str().unwrap().to_owned(),
                _postgres: None,
            },
            Backend::Postgres => {
                let database = aegis_testdb::FreshDatabase::create().await;
                Db {
                    arg: database.url().to_owned(),
                    _postgres: Some(database),
                }
            }
        }
    }

    /// The database as `--db` takes it (a path or a `postgres://` URL).
    pub fn arg(&self) -> &str {
        &self.arg
    }
}

/// Runs `aegis` with `args`, in `dir`, and returns its output.
pub fn aegis(dir: &Path, args: &[&str]) -> Output {
    Command::new(AEGIS)
        .args(args)
        .current_dir(dir)
        .env("AEGIS_LOG", "warn")
        .output()
        .expect("run aegis")
}

/// `aegis init --tenant ID --db DB` → the admin key.
pub fn init(dir: &Path, db: &Path, tenant: &str) -> String {
    init_on(dir, db.to_str().unwrap(), tenant)
}

/// A fresh SQLite database `aegis.db` in `dir` with tenant `acme`: its path and admin key.
pub fn acme_on_sqlite(dir: &Path) -> (PathBuf, String) {
    let db = dir.join("aegis.db");
    let admin = init(dir, &db, "acme");
    (db, admin)
}

/// POSTs `body` with a bearer credential and returns the JSON answer.
pub async fn post_json(
    client: &reqwest::Client,
    url: String,
    credential: &str,
    body: &impl serde::Serialize,
) -> Value {
    client
        .post(&url)
        .bearer_auth(credential)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// As [`init`], with the database named as `--db` takes it (a path or a `postgres://` URL).
pub fn init_on(dir: &Path, db: &str, tenant: &str) -> String {
    let out = aegis(dir, &["init", "--tenant", tenant, "--db", db]);
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("init prints JSON");
    assert_eq!(printed["tenant_id"], tenant);
    printed["admin_key"].as_str().unwrap().to_owned()
}

pub struct Gateway {
    child: Child,
    pub base: String,
    pub db: PathBuf,
    log: PathBuf,
}

impl Gateway {
    /// Starts `aegis serve` on a free port and waits until `/readyz` answers.
    pub async fn start(dir: &Path, db: &Path) -> Gateway {
        Gateway::start_with(dir, db, &[]).await
    }

    /// As [`Gateway::start`], with extra `AEGIS_*` environment.
    pub async fn start_with(dir: &Path, db: &Path, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_on(dir, db.to_str().unwrap(), env).await
    }

    /// Starts `aegis serve --db DB` (a path or a `postgres://` URL) in `dir`.
    pub async fn start_on(dir: &Path, db: &str, env: &[(&str, &str)]) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("serve-{port}.log"));
        let child = Command::new(AEGIS)
            .args([
                "serve",
                "--db",
                db,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .current_dir(dir)
            .env("AEGIS_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn aegis serve");
        let gateway = Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            db: PathBuf::from(db),
            log,
        };
        gateway.wait_ready().await;
        gateway
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(resp) = client.get(format!("{}/readyz", self.base)).send().await
                && resp.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway not ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the gateway has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (its PostgreSQL sessions are named `aegis:<role>:<pid>`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process freezes wherever it is, its connections left open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Gateway::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal}");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers an agent and the `github` tool; returns (agent id, agent token).
pub async fn agent_with_github(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
) -> (String, String) {
    let agent: Value = post_json(
        client,
        gw.url("/v1/agents"),
        admin,
        &json!({"name": "coding-agent"}),
    )
    .await;
    let tools = client
        .post(gw.url("/v1/tools"))
        .bearer_auth(admin)
        .json(&json!({"tool": "github", "actions": [
            {"action": "get_file", "mutates_state": false, "risk": "low"},
            {"action": "merge_pull_request", "mutates_state": true, "risk": "high"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tools.status(), 201);
    (
        agent["id"].as_str().unwrap().to_owned(),
        agent["agent_token"].as_str().unwrap().to_owned(),
    )
}

/// A write from the given source.
pub fn merge_call(source_trust: &str) -> Value {
    json!({
        "tool_call": {"tool": "github", "action": "merge_pull_request", "resource": "payments#482",
                      "parameters": {"base_branch": "main"}, "mutates_state": true},
        "context": {"source_trust": source_trust}
    })
}

/// Polls `check` until it returns `Some`, or fails after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET a JSON document with an operator key.
pub async fn get_json(client: &reqwest::Client, url: String, key: &str) -> Value {
    let resp = client.get(&url).bearer_auth(key).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// One authorize call; returns the decision.
pub async fn authorize(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    source_trust: &str,
) -> String {
    let resp: Value = post_json(
        client,
        gw.url("/v1/authorize"),
        token,
        &merge_call(source_trust),
    )
    .await;
    resp["decision"].as_str().unwrap().to_owned()
}

/// Runs a query without parameters on a gateway's database (a SQLite path or a
/// `postgres://` URL, as `--db` takes it) and returns the first column of each row, which
/// the query must select as text.
pub async fn query_column(db: &str, sql: &str) -> Vec<String> {
    if db.starts_with("postgres://") {
        let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
            .await
            .expect("connect to the gateway's database");
        tokio::spawn(connection);
        let rows = client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        return rows.iter().map(|row| row.get(0)).collect();
    }
    let conn = rusqlite::Connection::open(db).expect("open the gateway's database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `POST /v1/webhooks` (JSON format) → the subscription's id; with `secret`, signed with it.
pub async fn subscribe(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
    url: &str,
    secret: Option<&str>,
) -> String {
    let mut body = json!({"url": url});
    if let Some(secret) = secret {
        body["secret"] = json!(secret);
    }
    let resp = client
        .post(gw.url("/v1/webhooks"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "subscribe {url}");
    let created: Value = resp.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// `POST /v1/webhooks/{id}/test` → the queued delivery's id.
pub async fn send_test(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
    webhook: &str,
) -> String {
    let resp = client
        .post(gw.url(&format!("/v1/webhooks/{webhook}/test")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "test delivery to {webhook}");
    let queued: Value = resp.json().await.unwrap();
    queued["id"].as_str().unwrap().to_owned()
}

/// One delivery of a subscription as `GET /v1/webhooks/{id}/deliveries` shows it.
pub async fn delivery(
    client: &reqwest::Client,
    gw: &Gateway,
    admin: &str,
    webhook: &str,
    delivery_id: &str,
) -> Value {
    let list = get_json(
        client,
        gw.url(&format!("/v1/webhooks/{webhook}/deliveries")),
        admin,
    )
    .await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == delivery_id)
        .unwrap_or_else(|| panic!("delivery {delivery_id} listed"))
        .clone()
}

/// The next text message of a WebSocket as JSON, within 5 s.
pub async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a websocket message within 5 s")
            .expect("the websocket is open")
            .expect("a websocket message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Waits until the log consumer `consumer` (`soc`, `notify`) has processed the log up to
/// `seq` on a gateway's database.
pub async fn consumer_past(db: &str, consumer: &str, seq: i64) {
    let sql = format!("SELECT CAST(seq AS TEXT) FROM consumer_cursors WHERE name = '{consumer}'");
    eventually(
        10,
        &format!("the {consumer} consumer past seq {seq}"),
        || async {
            let at = query_column(db, &sql).await;
            let at: i64 = at.first().map_or(0, |s| s.parse().unwrap());
            (at >= seq).then_some(())
        },
    )
    .await;
}

/// Runs one statement with text parameters (`$1`, `$2`, … in both dialects) on a gateway's
/// database (a SQLite path or a `postgres://` URL) and returns the rows it changed: what
/// someone with write access to the database can do.
pub async fn execute(db: &str, sql: &str, params: &[&str]) -> u64 {
    if db.starts_with("postgres://") {
        let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
            .await
            .expect("connect to the gateway's database");
        tokio::spawn(connection);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        return client
            .execute(sql, &params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let conn = rusqlite::Connection::open(db).expect("open the gateway's database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(sql, rusqlite::params_from_iter(params.iter()))
        .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
}
