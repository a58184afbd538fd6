//! `aegis-bench`: load benchmark for the AegisAgent authorization gateway.
//!
//! It measures `POST /v1/authorize` (token authentication, Cedar evaluation, recording the
//! decision and its receipt) against the cheapest route of the *same* server, `GET /healthz`, in
//! the same run and with the same load shape. The ratio of the two throughputs tells how much of
//! the server's capacity the authorization path costs, largely independent of the machine and of
//! the HTTP stack.
//!
//! By default the benchmark starts its own server: `aegis init` on a temporary SQLite file, then
//! `aegis serve` on a free loopback port (log in the temporary directory, `RUST_LOG=warn`). It
//! waits for `GET /readyz`, registers the agents and a `github` tool over the management API,
//! and kills the server when it is done (also on error and on Ctrl-C). With `--db
//! postgres://…` the server uses that PostgreSQL database instead, which must not hold a `bench`
//! tenant yet (use a fresh database; the benchmark leaves its data there). `--replicas N` then
//! starts N `aegis serve` processes on it, each in its own temporary subdirectory, so that each
//! replica signs with its own key as in a real deployment.
//!
//! With `--url` and `--admin-key` (or `AEGIS_ADMIN_KEY`) it benchmarks an already running
//! server instead, and afterwards revokes its agents. `--url` may be repeated to name replicas
//! of one deployment (servers sharing one database).
//!
//! With several servers, the connections are spread over them round-robin (connection i talks
//! to server i mod N) in both phases; the management calls (setup, cleanup, the incident poll)
//! go to the first. If any request failed, the end of each spawned server's log is printed.
//!
//! Halfway through the authorize phase a third agent sends a 5-deny storm, round-robin over the
//! servers like the load; the report gives the time from its 5th answered deny to the
//! `deny_storm` incident being listed by the SOC (asked of the first server).
//!
//! Calls expected to be denied are sent by a second agent (`bench-agent-deny`), so that risk-tier
//! escalation caused by the run's denies cannot turn the allowed calls of `bench-agent` into
//! approvals or denies halfway through. Decisions that differ from the default policy pack's are
//! reported as unexpected.
//!
//! Each of `--connections` tasks owns its own HTTP/1.1 keep-alive client and runs a closed loop
//! (the next request leaves when the previous one is answered), so exactly N requests are in
//! flight at any time and connections are reused: `--warmup` seconds unrecorded, then
//! `--duration` seconds whose responses are recorded in an HDR histogram (microseconds). The no-op
//! phase runs first, then the authorize phase, on the same connections. `requests` and `req/s`
//! count successful responses (`200`) only; everything else is reported as an error.
//!
//! Scenarios (`--scenario`): `mixed` (default) rotates an allowed read, an allowed write from a
//! trusted internal source and a denied write from an untrusted source; `allow` rotates the two
//! allowed calls; `deny` sends only the denied write.
//!
//! ```text
//! cargo build --release -p aegis -p aegis-bench && target/release/aegis-bench
//! target/release/aegis-bench --connections 64 --duration 30 --scenario allow --json
//! target/release/aegis-bench --url http://127.0.0.1:8080 --admin-key "$ADMIN_KEY"
//! createdb -h 127.0.0.1 -U postgres bench_pg
//! target/release/aegis-bench --db postgres://postgres@127.0.0.1:5432/bench_pg --replicas 2
//! target/release/aegis-bench --url http://10.0.0.1:8080 --url http://10.0.0.2:8080 \
//!     --admin-key "$ADMIN_KEY"
//! ```

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// Benchmark `POST /v1/authorize` against the no-op `GET /healthz` of the same aegis server.
#[derive(Parser, Debug)]
#[command(name = "aegis-bench", version, about, long_about = None)]
struct Args {
    /// Path of the built `aegis` binary (not used with --url).
    #[arg(long, value_name = "PATH", default_value = "target/release/aegis")]
    aegis: PathBuf,
    /// Concurrent keep-alive connections, one closed-loop task each.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Recorded seconds per phase.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Unrecorded warm-up seconds before each phase.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    warmup: u64,
    /// Benchmark an already running server at this base URL instead of starting one. Repeat it
    /// for replicas of one deployment: connections are spread over them, management calls go
    /// to the first.
    #[arg(
        long = "url",
        value_name = "URL",
        requires = "admin_key",
        conflicts_with_all = ["db", "replicas"]
    )]
    urls: Vec<String>,
    /// Start the servers on this PostgreSQL database (`postgres://…`, without a `bench` tenant)
    /// instead of a temporary SQLite file.
    #[arg(long, value_name = "POSTGRES_URL", value_parser = postgres_url)]
    db: Option<String>,
    /// How many `aegis serve` replicas to start on the database (more than one needs --db).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    replicas: u32,
    /// Admin operator key of the running server (required with --url).
    #[arg(
        long,
        value_name = "KEY",
        env = "AEGIS_ADMIN_KEY",
        hide_env_values = true
    )]
    admin_key: Option<String>,
    /// Which tool calls the authorize phase sends.
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `--db` takes PostgreSQL only: a SQLite file cannot be shared by replicas, and the default
/// already is a (temporary) SQLite file.
fn postgres_url(value: &str) -> Result<String, String> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        Ok(value.to_owned())
    } else {
        Err("expected a postgres:// URL".into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Only allowed calls: a read and a trusted write, alternately.
    Allow,
    /// Only denied calls: an untrusted write.
    Deny,
    /// An allowed read, an allowed trusted write and a denied untrusted write, in turn.
    Mixed,
}

impl Scenario {
    fn calls(self) -> &'static [Call] {
        match self {
            Scenario::Allow => &[Call::Read, Call::TrustedWrite],
            Scenario::Deny => &[Call::UntrustedWrite],
            Scenario::Mixed => &[Call::Read, Call::TrustedWrite, Call::UntrustedWrite],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Allow => "allow",
            Scenario::Deny => "deny",
            Scenario::Mixed => "mixed",
        }
    }
}

/// One kind of tool call sent to `POST /v1/authorize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    Read,
    TrustedWrite,
    UntrustedWrite,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::TrustedWrite => "trusted_write",
            Call::UntrustedWrite => "untrusted_write",
        }
    }

    /// The decision the default policy pack gives this call.
    fn expected(self) -> &'static str {
        match self {
            Call::Read | Call::TrustedWrite => "allow",
            Call::UntrustedWrite => "deny",
        }
    }

    fn body(self) -> Value {
        let (action, source) = match self {
            Call::Read => ("get_file", "trusted_internal_signed"),
            Call::TrustedWrite => ("merge_pull_request", "trusted_internal_signed"),
            Call::UntrustedWrite => ("merge_pull_request", "untrusted_external"),
        };
        let mut tool_call = json!({
            "tool": "github",
            "action": action,
            "resource": "repo#1",
            "parameters": {"path": "README.md"},
        });
        if self != Call::Read {
            tool_call["mutates_state"] = Value::Bool(true);
        }
        json!({"tool_call": tool_call, "context": {"source_trust": source}})
    }
}

/// What one benchmark phase requests (of whichever server a connection talks to).
enum Target {
    Noop,
    /// The calls to send in turn, each with the bearer header of its agent.
    Authorize {
        calls: Vec<(Call, HeaderValue, Vec<u8>)>,
    },
}

enum Outcome {
    Ok,
    Decision(Call, String),
    /// Error class (grouping key) and one sample message.
    Error(String, String),
    /// The request never got a response; the worker backs off briefly.
    Transport(String, String),
}

impl Target {
    fn path(&self) -> &'static str {
        match self {
            Target::Noop => "/healthz",
            Target::Authorize { .. } => "/v1/authorize",
        }
    }

    async fn send(&self, client: &Client, url: &str, i: usize) -> Outcome {
        let (request, call) = match self {
            Target::Noop => (client.get(url), None),
            Target::Authorize { calls } => {
                let (call, auth, body) = &calls[i % calls.len()];
                let request = client
                    .post(url)
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                (request, Some(*call))
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return transport(&e),
        };
        let status = response.status();
        // Always read the whole body so that the connection goes back to the pool.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return transport(&e),
        };
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Outcome::Error(format!("HTTP {status}"), truncate(&text, 300));
        }
        let Some(call) = call else {
            return Outcome::Ok;
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => match v.get("decision").and_then(Value::as_str) {
                Some(decision) => Outcome::Decision(call, decision.to_owned()),
                None => Outcome::Error(
                    "HTTP 200 without a decision".into(),
                    truncate(&v.to_string(), 300),
                ),
            },
            Err(e) => Outcome::Error("HTTP 200 with invalid JSON".into(), e.to_string()),
        }
    }
}

fn transport(e: &reqwest::Error) -> Outcome {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    // reqwest's own message leaves out the cause (connection refused, reset, ...): add the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Outcome::Transport(class.into(), message)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

/// What one phase (or one of its tasks) recorded.
struct Stats {
    latency_us: Histogram<u64>,
    /// Error class -> (count, first message).
    errors: BTreeMap<String, (u64, String)>,
    /// (call, decision) -> count.
    decisions: BTreeMap<(Call, String), u64>,
}

impl Stats {
    fn new() -> Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .context("creating latency histogram")?,
            errors: BTreeMap::new(),
            decisions: BTreeMap::new(),
        })
    }

    fn error(&mut self, class: String, sample: String, count: u64) {
        self.errors.entry(class).or_insert((0, sample)).0 += count;
    }

    fn merge(&mut self, other: Stats) -> Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        for (class, (count, sample)) in other.errors {
            self.error(class, sample, count);
        }
        for (key, count) in other.decisions {
            *self.decisions.entry(key).or_default() += count;
        }
        Ok(())
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(count, _)| count).sum()
    }
}

/// One closed loop on one connection: requests completed in `[record_from, end)` are recorded.
async fn worker(
    connection: Connection,
    target: Arc<Target>,
    offset: usize,
    record_from: Instant,
    end: Instant,
) -> Result<Stats> {
    let url = format!("{}{}", connection.base_url, target.path());
    let mut stats = Stats::new()?;
    let mut i = offset;
    loop {
        let started = Instant::now();
        if started >= end {
            return Ok(stats);
        }
        let outcome = target.send(&connection.client, &url, i).await;
        i = i.wrapping_add(1);
        let done = Instant::now();
        let recorded = done >= record_from && done < end;
        match outcome {
            Outcome::Ok | Outcome::Decision(..) if recorded => {
                let us = u64::try_from((done - started).as_micros()).unwrap_or(u64::MAX);
                stats.latency_us.saturating_record(us.max(1));
                if let Outcome::Decision(call, decision) = outcome {
                    *stats.decisions.entry((call, decision)).or_default() += 1;
                }
            }
            Outcome::Error(class, sample) if recorded => stats.error(class, sample, 1),
            Outcome::Transport(class, sample) => {
                if recorded {
                    stats.error(class, sample, 1);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {}
        }
    }
}

async fn run_phase(
    connections: &[Connection],
    target: Target,
    warmup: Duration,
    duration: Duration,
) -> Result<Stats> {
    let target = Arc::new(target);
    let record_from = Instant::now() + warmup;
    let end = record_from + duration;
    let tasks: Vec<_> = connections
        .iter()
        .enumerate()
        .map(|(i, connection)| {
            tokio::spawn(worker(
                connection.clone(),
                Arc::clone(&target),
                i,
                record_from,
                end,
            ))
        })
        .collect();
    let mut total = Stats::new()?;
    for task in tasks {
        total.merge(task.await.context("benchmark task panicked")??)?;
    }
    Ok(total)
}

/// One closed-loop task's keep-alive client and the server it talks to.
#[derive(Clone)]
struct Connection {
    client: Client,
    base_url: String,
}

/// The HTTP/1.1 keep-alive client of one task (one request in flight at a time).
///
/// The idle pool is deliberately not capped at one connection: hyper hands a finished
/// connection back to its pool from a background task, so a request sent right after the
/// previous response sometimes races that hand-back and opens a second connection. With room
/// for both in the pool, a task settles on at most two connections that it alternates between;
/// a cap of one makes it drop and reopen connections throughout the run instead.
fn bench_client() -> Result<Client> {
    Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building HTTP client")
}

/// The servers started by the benchmark: `aegis init` once, then `--replicas` `aegis serve`
/// processes on the same database; killed when dropped.
struct Deployment {
    replicas: Vec<Replica>,
    admin_key: String,
    /// The database the servers share, as the report names it.
    backend: &'static str,
    // Dropped after the replicas have been killed (fields drop in declaration order).
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// Starts the servers on `postgres_url`, or on a new SQLite file in the temporary directory.
    async fn start(
        aegis: &Path,
        postgres_url: Option<&str>,
        replica_count: u32,
        client: &Client,
    ) -> Result<Deployment> {
        if !aegis.is_file() {
            bail!(
                "aegis binary not found at `{}`: build it with `cargo build --release -p aegis` \
                 (run from the workspace root) or pass --aegis PATH",
                aegis.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("aegis-bench-")
            .tempdir()
            .context("creating temporary directory")?;
        let (database, backend): (OsString, _) = match postgres_url {
            Some(url) => (url.into(), "PostgreSQL"),
            None => (dir.path().join("bench.db").into(), "temporary SQLite"),
        };
        // Each replica keeps its log and its signing key in its own subdirectory: replicas of
        // a real deployment do not share a key file either.
        let replica_dirs = (0..replica_count)
            .map(|i| {
                let replica_dir = dir.path().join(format!("replica-{i}"));
                std::fs::create_dir(&replica_dir)
                    .with_context(|| format!("creating {}", replica_dir.display()))?;
                Ok(replica_dir)
            })
            .collect::<Result<Vec<_>>>()?;
        // `init` opens the store too, and with it a signing key: let that be the first
        // replica's rather than one no server uses.
        let admin_key = init_tenant(aegis, &database, &replica_dirs[0])?;

        let ports = free_ports(replica_dirs.len())?;
        let mut deployment = Deployment {
            replicas: Vec::with_capacity(replica_dirs.len()),
            admin_key,
            backend,
            _dir: dir,
        };
        for (replica_dir, port) in replica_dirs.iter().zip(ports) {
            let replica = Replica::spawn(aegis, &database, replica_dir, port)?;
            deployment.replicas.push(replica);
        }
        for replica in &mut deployment.replicas {
            if let Err(e) = replica.wait_ready(client).await {
                eprintln!("{}", replica.log_excerpt(usize::MAX));
                return Err(e);
            }
        }
        Ok(deployment)
    }

    fn base_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.base_url.clone()).collect()
    }

    /// The last `max_lines` lines of every replica's log, framed for printing.
    fn log_excerpts(&self, max_lines: usize) -> String {
        let excerpts: Vec<String> = self
            .replicas
            .iter()
            .map(|replica| replica.log_excerpt(max_lines))
            .collect();
        excerpts.join("\n")
    }
}

fn signing_key_file(replica_dir: &Path) -> PathBuf {
    replica_dir.join("aegis.signing-key")
}

/// Runs `aegis init` for tenant `bench` and returns its admin key.
fn init_tenant(aegis: &Path, database: &OsStr, replica_dir: &Path) -> Result<String> {
    let init = Command::new(aegis)
        .args(["init", "--tenant", "bench", "--db"])
        .arg(database)
        .arg("--signing-key-file")
        .arg(signing_key_file(replica_dir))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{} init`", aegis.display()))?;
    if !init.status.success() {
        bail!(
            "`aegis init` failed ({}):\n{}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&init.stdout);
    let parsed = serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
        });
    let admin_key = parsed
        .as_ref()
        .and_then(|v| v.get("admin_key"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("`aegis init` printed no JSON with `admin_key`:\n{stdout}"))?;
    Ok(admin_key.to_owned())
}

/// `count` distinct free loopback ports. All listeners are held until every port is chosen, so
/// that the OS cannot hand out the same port twice.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")
}

/// One `aegis serve` process started by the benchmark; killed when dropped.
struct Replica {
    child: Child,
    base_url: String,
    log_path: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn spawn(aegis: &Path, database: &OsStr, replica_dir: &Path, port: u16) -> Result<Replica> {
        let log_path = replica_dir.join("server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(aegis)
            .arg("serve")
            .arg("--db")
            .arg(database)
            .arg("--signing-key-file")
            .arg(signing_key_file(replica_dir))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning `{} serve`", aegis.display()))?;
        Ok(Replica {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        })
    }

    async fn wait_ready(&mut self, client: &Client) -> Result<()> {
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking the server process")?
            {
                bail!("`aegis serve` exited before becoming ready ({status})");
            }
            let ready = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("`aegis serve` did not answer 200 on {url} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `max_lines` lines of the server log, framed for printing.
    fn log_excerpt(&self, max_lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| format!("(cannot read server log: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(max_lines)..].join("\n");
        format!(
            "--- server log ({}) ---\n{tail}\n--- end of server log ---",
            self.log_path.display()
        )
    }
}

/// A management API call with the admin key; returns the status and the body (JSON if it parses).
async fn api(
    client: &Client,
    method: Method,
    url: &str,
    key: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value)> {
    let mut request = client.request(method.clone(), url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the response of {method} {url}"))?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

fn expect(what: &str, status: StatusCode, body: &Value, ok: &[StatusCode]) -> Result<()> {
    if ok.contains(&status) {
        Ok(())
    } else {
        bail!("{what}: unexpected {status}: {body}")
    }
}

/// What setup created, for cleanup against a server the benchmark did not start.
struct Setup {
    /// Bearer header of the agent that sends the calls expected to be allowed.
    allow_auth: HeaderValue,
    /// Bearer header of the agent that sends the calls expected to be denied.
    deny_auth: HeaderValue,
    agent_ids: Vec<String>,
}

/// Registers an agent and returns its id (if shown) and its bearer header.
async fn create_agent(
    client: &Client,
    base: &str,
    key: &str,
    name: &str,
) -> Result<(Option<String>, HeaderValue)> {
    let url = format!("{base}/v1/agents");
    let body = json!({"name": name});
    let (status, agent) = api(client, Method::POST, &url, key, Some(&body)).await?;
    expect("POST /v1/agents", status, &agent, &[StatusCode::CREATED])?;
    let token = agent
        .get("agent_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("POST /v1/agents: no `agent_token` in {agent}"))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("agent token is not a valid header value")?;
    let id = agent.get("id").and_then(Value::as_str).map(str::to_owned);
    Ok((id, auth))
}

async fn setup(client: &Client, base: &str, key: &str) -> Result<Setup> {
    // Denied calls go out under their own agent: its denies can step only its own risk tier up,
    // so the allowed calls keep being allowed however long the run.
    let (allow_id, allow_auth) = create_agent(client, base, key, "bench-agent").await?;
    let (deny_id, deny_auth) = create_agent(client, base, key, "bench-agent-deny").await?;

    let tools = json!({"tool": "github", "actions": [
        {"action": "get_file", "mutates_state": false, "risk": "low"},
        {"action": "merge_pull_request", "mutates_state": true, "risk": "high"},
    ]});
    let url = format!("{base}/v1/tools");
    let (status, body) = api(client, Method::POST, &url, key, Some(&tools)).await?;
    // A running server may already know the tool from an earlier run.
    let ok = [StatusCode::CREATED, StatusCode::OK, StatusCode::CONFLICT];
    expect("POST /v1/tools", status, &body, &ok)?;

    Ok(Setup {
        allow_auth,
        deny_auth,
        agent_ids: allow_id.into_iter().chain(deny_id).collect(),
    })
}

/// Best effort: leave a server the benchmark did not start as it was (bar the revoked agents).
async fn cleanup(client: &Client, base: &str, key: &str, setup: &Setup) {
    for id in &setup.agent_ids {
        let url = format!("{base}/v1/agents/{id}/revoke");
        match api(client, Method::POST, &url, key, None).await {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, body)) => eprintln!("warning: revoking bench agent {id}: {status}: {body}"),
            Err(e) => eprintln!("warning: revoking bench agent {id}: {e:#}"),
        }
    }
}

struct RouteReport {
    route: &'static str,
    requests: u64,
    rps: f64,
    /// p50, p90, p99, p99.9 in milliseconds.
    percentiles_ms: [f64; 4],
    stats: Stats,
}

impl RouteReport {
    fn new(route: &'static str, stats: Stats, duration: Duration) -> Self {
        let h = &stats.latency_us;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            route,
            requests: h.len(),
            rps: h.len() as f64 / duration.as_secs_f64(),
            percentiles_ms: [ms(0.5), ms(0.9), ms(0.99), ms(0.999)],
            stats,
        }
    }

    fn row(&self) -> String {
        let [p50, p90, p99, p999] = self.percentiles_ms;
        format!(
            "{:<20} {:>10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>7}",
            self.route,
            self.requests,
            self.rps,
            p50,
            p90,
            p99,
            p999,
            self.stats.error_count()
        )
    }

    fn to_json(&self) -> Value {
        let [p50, p90, p99, p999] = self.percentiles_ms;
        let errors: serde_json::Map<String, Value> = self
            .stats
            .errors
            .iter()
            .map(|(class, (count, sample))| {
                (class.clone(), json!({"count": count, "sample": sample}))
            })
            .collect();
        json!({
            "route": self.route,
            "requests": self.requests,
            "req_per_s": self.rps,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "p99_9_ms": p999,
            "errors": self.stats.error_count(),
            "error_details": errors,
        })
    }
}

struct Report<'a> {
    args: &'a Args,
    server: String,
    /// How many servers the connections were spread over.
    server_count: usize,
    noop: RouteReport,
    authorize: RouteReport,
    /// From the 5th deny of a second agent's storm, under load, to its incident being listed.
    storm_latency: Duration,
}

impl Report<'_> {
    fn ratio(&self) -> f64 {
        if self.noop.rps > 0.0 {
            self.authorize.rps / self.noop.rps
        } else {
            0.0
        }
    }

    fn decision_totals(&self) -> BTreeMap<&str, u64> {
        let mut totals = BTreeMap::new();
        for ((_, decision), count) in &self.authorize.stats.decisions {
            *totals.entry(decision.as_str()).or_default() += count;
        }
        totals
    }

    fn unexpected(&self) -> u64 {
        let decisions = &self.authorize.stats.decisions;
        decisions
            .iter()
            .filter(|((call, decision), _)| decision != call.expected())
            .map(|(_, count)| count)
            .sum()
    }

    fn print_table(&self) {
        println!(
            "server {}, scenario {}, {} connections, {} s warm-up + {} s per route",
            self.server,
            self.args.scenario.name(),
            self.args.connections,
            self.args.warmup,
            self.args.duration
        );
        println!(
            "{:<20} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "route", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors"
        );
        println!("{}", self.noop.row());
        println!("{}", self.authorize.row());
        println!("authorize / no-op throughput: {:.2}", self.ratio());
        println!(
            "deny_storm under load: incident listed {:.1} ms after the 5th deny was answered",
            self.storm_latency.as_secs_f64() * 1000.0
        );
        let totals: Vec<String> = self
            .decision_totals()
            .iter()
            .map(|(decision, count)| format!("{decision}={count}"))
            .collect();
        if totals.is_empty() {
            println!("decisions: none");
        } else {
            println!("decisions: {}", totals.join(" "));
        }
        for ((call, decision), count) in &self.authorize.stats.decisions {
            let note = if decision == call.expected() {
                ""
            } else {
                "  (unexpected)"
            };
            println!("  {:<16} {decision:<18} {count:>10}{note}", call.name());
        }
        for report in [&self.noop, &self.authorize] {
            for (class, (count, sample)) in &report.stats.errors {
                println!("error on {}: {class} x{count}: {sample}", report.route);
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut by_call = serde_json::Map::new();
        for ((call, decision), count) in &self.authorize.stats.decisions {
            let entry = by_call
                .entry(call.name())
                .or_insert_with(|| Value::Object(Default::default()));
            entry[decision.as_str()] = json!(count);
        }
        json!({
            "server": self.server,
            "servers": self.server_count,
            "scenario": self.args.scenario.name(),
            "connections": self.args.connections,
            "warmup_secs": self.args.warmup,
            "duration_secs": self.args.duration,
            "noop": self.noop.to_json(),
            "authorize": self.authorize.to_json(),
            "authorize_over_noop_throughput": self.ratio(),
            "deny_storm_incident_latency_ms": self.storm_latency.as_secs_f64() * 1000.0,
            "decisions": self.decision_totals(),
            "decisions_by_call": by_call,
            "unexpected_decisions": self.unexpected(),
        })
    }
}

/// Sends 5 untrusted writes from `auth`'s agent after `delay`, one server after the other, then
/// polls the first server's incidents until the deny_storm appears. Returns the time from the
/// 5th answered deny to the incident being listed.
async fn storm_probe(
    client: Client,
    base_urls: Vec<String>,
    key: String,
    auth: HeaderValue,
    delay: Duration,
) -> Result<Duration> {
    tokio::time::sleep(delay).await;
    let body = serde_json::to_vec(&Call::UntrustedWrite.body())?;
    // Spread like the load: with replicas, the incident has to be assembled from denies that
    // different servers recorded.
    for base in base_urls.iter().cycle().take(5) {
        let response = client
            .post(format!("{base}/v1/authorize"))
            .header(reqwest::header::AUTHORIZATION, auth.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .context("storm probe: authorize")?;
        expect(
            "storm probe: authorize",
            response.status(),
            &Value::Null,
            &[StatusCode::OK],
        )?;
    }
    let answered = Instant::now();
    let url = format!("{}/v1/incidents?kind=deny_storm&limit=1000", base_urls[0]);
    loop {
        let (status, incidents) = api(&client, Method::GET, &url, &key, None).await?;
        expect(
            "storm probe: GET /v1/incidents",
            status,
            &incidents,
            &[StatusCode::OK],
        )?;
        if incidents.as_array().is_some_and(|list| !list.is_empty()) {
            return Ok(answered.elapsed());
        }
        if answered.elapsed() > Duration::from_secs(30) {
            bail!("storm probe: no deny_storm incident 30 s after the 5th deny");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(args: &Args) -> Result<()> {
    let control = bench_client()?;
    // Held until the end of the run: dropping it kills the servers.
    let deployment = if args.urls.is_empty() {
        eprintln!("starting {} x{} ...", args.aegis.display(), args.replicas);
        Some(Deployment::start(&args.aegis, args.db.as_deref(), args.replicas, &control).await?)
    } else {
        None
    };
    let (base_urls, admin_key, label) = match &deployment {
        Some(deployment) => {
            let base_urls = deployment.base_urls();
            let label = format!("{} (spawned, {})", base_urls.join(" "), deployment.backend);
            (base_urls, deployment.admin_key.clone(), label)
        }
        None => {
            let key = args
                .admin_key
                .clone()
                .context("--url requires --admin-key")?;
            let base_urls: Vec<String> = args
                .urls
                .iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect();
            let label = base_urls.join(" ");
            (base_urls, key, label)
        }
    };
    // Management calls all go to one server: the others see the changes through the database.
    let management_url = &base_urls[0];

    let setup = setup(&control, management_url, &admin_key)
        .await
        .map_err(|e| {
            if let Some(deployment) = &deployment {
                eprintln!("{}", deployment.log_excerpts(40));
            }
            e.context("setting up agent and tool")
        })?;

    let connections = (0..args.connections as usize)
        .map(|i| {
            Ok(Connection {
                client: bench_client()?,
                base_url: base_urls[i % base_urls.len()].clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);

    eprintln!(
        "no-op phase: GET /healthz, {} connections over {} server(s), {} s warm-up + {} s ...",
        args.connections,
        base_urls.len(),
        args.warmup,
        args.duration
    );
    let noop = run_phase(&connections, Target::Noop, warmup, duration).await?;

    eprintln!(
        "authorize phase: POST /v1/authorize ({} scenario), {} connections over {} server(s), \
         {} s warm-up + {} s ...",
        args.scenario.name(),
        args.connections,
        base_urls.len(),
        args.warmup,
        args.duration
    );
    let calls = args
        .scenario
        .calls()
        .iter()
        .map(|&call| {
            let auth = match call.expected() {
                "deny" => setup.deny_auth.clone(),
                _ => setup.allow_auth.clone(),
            };
            Ok((call, auth, serde_json::to_vec(&call.body())?))
        })
        .collect::<Result<Vec<_>>>()?;
    // Halfway through the measured load, a second agent's 5-deny storm: how long until the
    // SOC shows its incident?
    let (_, storm_auth) =
        create_agent(&control, management_url, &admin_key, "bench-storm-agent").await?;
    let probe = tokio::spawn(storm_probe(
        control.clone(),
        base_urls.clone(),
        admin_key.clone(),
        storm_auth,
        warmup + duration / 2,
    ));
    let authorize = run_phase(&connections, Target::Authorize { calls }, warmup, duration).await?;
    let storm_latency = probe.await.context("storm probe task")??;

    if deployment.is_none() {
        cleanup(&control, management_url, &admin_key, &setup).await;
    }

    let report = Report {
        args,
        server: label,
        server_count: base_urls.len(),
        noop: RouteReport::new("GET /healthz", noop, duration),
        authorize: RouteReport::new("POST /v1/authorize", authorize, duration),
        storm_latency,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print_table();
    }
    // The error samples say what the client saw; the logs may say why.
    let failed = report.noop.stats.error_count() + report.authorize.stats.error_count();
    if failed > 0
        && let Some(deployment) = &deployment
    {
        eprintln!("{failed} requests failed; end of the server logs:");
        eprintln!("{}", deployment.log_excerpts(20));
    }
    for route in [&report.noop, &report.authorize] {
        if route.requests == 0 {
            bail!("no successful responses from {}", route.route);
        }
    }
    if report.unexpected() > 0 {
        eprintln!(
            "warning: {} decisions differ from the default policy pack's (see above)",
            report.unexpected()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.replicas > 1 && args.db.is_none() {
        Args::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "--replicas above 1 needs --db postgres://…: replicas share one database",
            )
            .exit();
    }
    // Returning (instead of being killed by the signal) drops the server guard, which kills it.
    let result = tokio::select! {
        result = run(&args) => result,
        signal = tokio::signal::ctrl_c() => match signal {
            Ok(()) => Err(anyhow!("interrupted")),
            Err(e) => Err(anyhow!(e).context("waiting for Ctrl-C")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
