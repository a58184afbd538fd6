//! `aegis-bench`: load benchmark for the AegisAgent authorization gateway.
//!
//! One run starts its own gateway (`aegis init` per tenant on a temporary SQLite file, or on
//! `--db postgres://…` with `--replicas N`; then `aegis serve`), drives every row below with
//! `wrk` (a separate process, installed from Debian's packages when missing; the script is
//! `wrk/aegis.lua`) with the same load shape, and reports each row against the no-op rows of
//! the same run, so that neither the machine nor the HTTP stack flatters a figure:
//!
//! - `bare`: `GET /healthz` of a bare axum server inside the benchmark (the machine's limit);
//! - `healthz`: the gateway's `GET /healthz` (its no-op route);
//! - `allow`, `deny`, `mixed`: `POST /v1/authorize` with allowed calls (a read and a trusted
//!   write, alternately), denied calls (an untrusted write, from a second agent so that its
//!   risk tier cannot turn the allowed calls into approvals), or all three in turn; halfway
//!   through `allow`, a third agent's 5-deny storm measures the time to its incident;
//! - `policies-300`: the allowed calls of a tenant with 300 more policies, each scoped to
//!   another tool (`resource in Aegis::Tool::"toolN"`);
//! - `tenants-100`: the allowed calls spread over 100 tenants, one agent each;
//! - `feed-20`: the allowed calls while 20 live-feed clients (`GET /v1/ws/events`, one viewer
//!   key each) are connected and read raw bytes;
//! - `mcp-direct`, `mcp-proxy`: an MCP `tools/call` of a read-only `echo` tool, sent straight
//!   to an upstream MCP server inside the benchmark (streamable HTTP, on its own threads), or
//!   through the gateway's `/mcp/{server}` (decided, recorded and forwarded); the report adds
//!   the gateway's overhead at p50 (proxy minus direct).
//!
//! Each row prints throughput (successful responses per second), p50/p99/p99.9 from the full
//! latency histogram, errors, decisions that differ from the default policy pack's, the
//! gateway's RSS after the row (`VmRSS`), and for authorize rows the SOC lag: from the end of
//! the load to the SOC consumer's cursor reaching the last event committed by then (read from
//! the database). `--json PATH` also writes it all as JSON.
//!
//! `--decisions N` runs the RSS soak instead: the `allow` load in chunks of `--soak-chunk`
//! seconds until N decisions were answered, sampling the RSS after each chunk, and reports
//! whether it stayed flat over the second half.
//!
//! See `docs/performance.md` for the commands and the meaning of each figure.

mod deployment;
mod load;
mod mcp_upstream;
mod observe;
mod setup;

use anyhow::{Context, Result, anyhow, bail};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use deployment::{Deployment, Memory};
use load::{LoadResult, Request, Shape, Wrk};
use observe::{DatabaseProbe, FeedClients};
use serde_json::{Value, json};
use setup::{Call, MCP_PROXY_PATH, Tenant};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Tenants of the `tenants-100` row.
const TENANTS: usize = 100;
/// Policies on other tools of the `policies-300` row.
const OTHER_TOOL_POLICIES: usize = 300;
/// Live-feed clients of the `feed-20` row.
const FEED_CLIENTS: usize = 20;

/// Benchmark the aegis gateway's routes against no-op routes of the same run, with wrk.
#[derive(Parser, Debug)]
#[command(name = "aegis-bench", version, about, long_about = None)]
struct Args {
    /// Path of the built `aegis` binary.
    #[arg(long, value_name = "PATH", default_value = "target/release/aegis")]
    aegis: PathBuf,
    /// Path of `wrk` (default: the one on PATH, installed with apt-get when there is none).
    #[arg(long, value_name = "PATH")]
    wrk: Option<PathBuf>,
    /// Concurrent keep-alive connections (`wrk -c`), split over the replicas.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Load-generator threads per server (`wrk -t`).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Recorded seconds per row.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Unrecorded warm-up seconds before each row.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    warmup: u64,
    /// Start the servers on this PostgreSQL database (`postgres://…`, without `bench`
    /// tenants) instead of a temporary SQLite file.
    #[arg(long, value_name = "POSTGRES_URL", value_parser = postgres_url)]
    db: Option<String>,
    /// How many `aegis serve` replicas to start on the database (more than one needs --db).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    replicas: u32,
    /// The rows to run, comma-separated, in the order given (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROWS")]
    rows: Vec<Row>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// RSS soak instead of the rows: drive the allow load until this many decisions.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    decisions: Option<u64>,
    /// Seconds of load between two RSS samples of the soak.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    soak_chunk: u64,
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
enum Row {
    /// `GET /healthz` of the bare axum server in the benchmark.
    Bare,
    /// The gateway's `GET /healthz`.
    Healthz,
    /// Allowed calls: a read and a trusted write, alternately.
    Allow,
    /// Denied calls: an untrusted write.
    Deny,
    /// An allowed read, an allowed trusted write and a denied untrusted write, in turn.
    Mixed,
    /// The allowed calls of a tenant with 300 policies scoped to other tools.
    #[value(name = "policies-300")]
    Policies300,
    /// The allowed calls spread over 100 tenants.
    #[value(name = "tenants-100")]
    Tenants100,
    /// The allowed calls with 20 live-feed clients connected.
    #[value(name = "feed-20")]
    Feed20,
    /// An MCP tools/call sent straight to the upstream MCP server.
    #[value(name = "mcp-direct")]
    McpDirect,
    /// The same MCP tools/call through the gateway.
    #[value(name = "mcp-proxy")]
    McpProxy,
}

impl Row {
    const ALL: [Row; 10] = [
        Row::Bare,
        Row::Healthz,
        Row::Allow,
        Row::Deny,
        Row::Mixed,
        Row::Policies300,
        Row::Tenants100,
        Row::Feed20,
        Row::McpDirect,
        Row::McpProxy,
    ];

    fn name(self) -> &'static str {
        match self {
            Row::Bare => "bare",
            Row::Healthz => "healthz",
            Row::Allow => "allow",
            Row::Deny => "deny",
            Row::Mixed => "mixed",
            Row::Policies300 => "policies-300",
            Row::Tenants100 => "tenants-100",
            Row::Feed20 => "feed-20",
            Row::McpDirect => "mcp-direct",
            Row::McpProxy => "mcp-proxy",
        }
    }

    /// Whether the row's requests are decided by the gateway.
    fn authorizes(self) -> bool {
        !matches!(self, Row::Bare | Row::Healthz | Row::McpDirect)
    }

    /// The decisions the default policy pack gives this row's calls (for the MCP rows, the
    /// outcome the script reads in the JSON-RPC answer: a tool result, not an error result).
    fn expected_decisions(self) -> &'static [&'static str] {
        match self {
            Row::Bare | Row::Healthz => &[],
            Row::McpDirect | Row::McpProxy => &["mcp_result"],
            Row::Deny => &["deny"],
            Row::Mixed => &["allow", "deny"],
            Row::Allow | Row::Policies300 | Row::Tenants100 | Row::Feed20 => &["allow"],
        }
    }

    /// The row this one is compared with, besides the no-op rows.
    fn baseline(self) -> Option<Row> {
        match self {
            Row::Policies300 | Row::Tenants100 | Row::Feed20 => Some(Row::Allow),
            Row::McpProxy => Some(Row::McpDirect),
            _ => None,
        }
    }
}

/// The tenants of a run and what setup made in them.
struct Prepared {
    /// Bearer headers of the main tenant's agents.
    allow: String,
    deny: String,
    /// The allowed calls' agent of the tenant with 300 more policies.
    policies: Option<String>,
    /// One agent per tenant of `tenants-100`.
    tenants: Vec<String>,
    /// Viewer keys of the live-feed clients.
    feed_keys: Vec<String>,
    /// Base URL of the upstream MCP server, when an MCP row runs.
    mcp_upstream: Option<String>,
}

impl Prepared {
    fn requests(&self, row: Row) -> Result<Vec<Request>> {
        let allowed = |authorization: &str| {
            Call::ALLOWED
                .iter()
                .map(|call| call.request(authorization))
                .collect::<Vec<_>>()
        };
        Ok(match row {
            Row::Bare | Row::Healthz => vec![Request::get("/healthz")],
            Row::Allow | Row::Feed20 => allowed(&self.allow),
            Row::Deny => vec![Call::UntrustedWrite.request(&self.deny)],
            Row::Mixed => vec![
                Call::Read.request(&self.allow),
                Call::TrustedWrite.request(&self.allow),
                Call::UntrustedWrite.request(&self.deny),
            ],
            Row::Policies300 => allowed(self.policies.as_deref().context("no policies tenant")?),
            // Consecutive requests go to different tenants.
            Row::Tenants100 => Call::ALLOWED
                .iter()
                .flat_map(|call| self.tenants.iter().map(|agent| call.request(agent)))
                .collect(),
            Row::McpDirect => vec![setup::mcp_call(mcp_upstream::PATH, None)],
            Row::McpProxy => vec![setup::mcp_call(MCP_PROXY_PATH, Some(&self.allow))],
        })
    }
}

/// Tenant names: the main one first, then what the rows need.
fn tenant_names(rows: &[Row]) -> Vec<String> {
    let mut names = vec!["bench".to_owned()];
    if rows.contains(&Row::Policies300) {
        names.push("bench-policies".to_owned());
    }
    if rows.contains(&Row::Tenants100) {
        names.extend((0..TENANTS).map(|i| format!("bench-t{i:03}")));
    }
    names
}

async fn prepare(
    client: &reqwest::Client,
    base_url: &str,
    names: &[String],
    admin_keys: &[String],
    rows: &[Row],
) -> Result<Prepared> {
    let tenant = |i: usize| Tenant {
        client,
        base_url,
        admin_key: &admin_keys[i],
    };
    let main = tenant(0);
    main.github_tool().await?;
    let mut prepared = Prepared {
        allow: main.agent("bench-agent").await?,
        deny: main.agent("bench-agent-deny").await?,
        policies: None,
        tenants: Vec::new(),
        feed_keys: Vec::new(),
        mcp_upstream: None,
    };
    for (i, name) in names.iter().enumerate().skip(1) {
        let tenant = tenant(i);
        tenant.github_tool().await?;
        let agent = tenant.agent("bench-agent").await?;
        if name == "bench-policies" {
            tenant.policies_on_other_tools(OTHER_TOOL_POLICIES).await?;
            prepared.policies = Some(agent);
        } else {
            prepared.tenants.push(agent);
        }
    }
    if rows.contains(&Row::Feed20) {
        for i in 0..FEED_CLIENTS {
            prepared
                .feed_keys
                .push(main.viewer_key(&format!("bench-feed-{i}")).await?);
        }
    }
    if rows
        .iter()
        .any(|row| matches!(row, Row::McpDirect | Row::McpProxy))
    {
        let upstream = mcp_upstream::start()?;
        main.mcp_server(
            &format!("{upstream}{}", mcp_upstream::PATH),
            &prepared.allow,
        )
        .await?;
        prepared.mcp_upstream = Some(upstream);
    }
    Ok(prepared)
}

/// One row's figures.
struct RowReport {
    row: Row,
    load: LoadResult,
    /// Each replica's memory after the row (none for the bare server).
    memory: Vec<Memory>,
    soc_lag: Option<Duration>,
    /// Bytes each live-feed client received.
    feed_bytes: Option<Vec<u64>>,
    /// From the 5th deny of a storm during the load to its incident being listed.
    storm: Option<Duration>,
}

impl RowReport {
    /// Successful responses whose decision is not one the default pack gives these calls
    /// (a 200 without a decision counts too).
    fn unexpected(&self) -> u64 {
        if self.row.expected_decisions().is_empty() {
            return 0;
        }
        let expected: u64 = self
            .row
            .expected_decisions()
            .iter()
            .filter_map(|decision| self.load.decisions.get(*decision))
            .sum();
        self.load.successes().saturating_sub(expected)
    }

    fn rss_mib(&self) -> Vec<f64> {
        self.memory.iter().map(|m| mib(m.rss_kib)).collect()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Report {
    header: Value,
    rows: Vec<RowReport>,
}

impl Report {
    fn rate_of(&self, row: Row) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.row == row)
            .map(|r| r.load.rate())
            .filter(|rate| *rate > 0.0)
    }

    fn ratio(&self, report: &RowReport, baseline: Option<Row>) -> Option<f64> {
        let base = self.rate_of(baseline?)?;
        (baseline != Some(report.row)).then(|| report.load.rate() / base)
    }

    /// The gateway's MCP overhead at p50: `mcp-proxy` minus `mcp-direct`, in milliseconds.
    fn mcp_overhead_p50_ms(&self) -> Option<f64> {
        let p50 = |row: Row| {
            self.rows
                .iter()
                .find(|r| r.row == row)
                .map(|r| r.load.latency_ms(0.5))
        };
        Some(p50(Row::McpProxy)? - p50(Row::McpDirect)?)
    }

    fn failures(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.load.errors.total() + r.unexpected())
            .sum()
    }

    fn print(&self) {
        println!("{}", self.header);
        println!(
            "{:<13} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6} {:>9} {:>7} {:>8} {:>10}",
            "row",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "/bare",
            "/noop",
            "/baseline",
            "unexp.",
            "RSS MiB",
            "SOC lag ms"
        );
        let cell = |ratio: Option<f64>| ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
        for r in &self.rows {
            let rss = r
                .rss_mib()
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join("+");
            println!(
                "{:<13} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>6} {:>6} {:>9} {:>7} {:>8} {:>10}",
                r.row.name(),
                r.load.rate(),
                r.load.latency_ms(0.5),
                r.load.latency_ms(0.99),
                r.load.latency_ms(0.999),
                r.load.errors.total(),
                cell(self.ratio(r, Some(Row::Bare))),
                cell(self.ratio(r, Some(Row::Healthz))),
                cell(self.ratio(r, r.row.baseline())),
                r.unexpected(),
                if rss.is_empty() { "-".into() } else { rss },
                r.soc_lag.map_or("-".to_owned(), |lag| format!(
                    "{:.0}",
                    lag.as_secs_f64() * 1e3
                )),
            );
        }
        if let Some(overhead) = self.mcp_overhead_p50_ms() {
            println!("mcp proxy overhead p50: {overhead:.3} ms");
        }
        for r in &self.rows {
            if let Some(storm) = r.storm {
                println!(
                    "deny storm during `{}`: incident listed {:.1} ms after the 5th deny was answered",
                    r.row.name(),
                    storm.as_secs_f64() * 1e3
                );
            }
            if let Some(bytes) = &r.feed_bytes {
                println!(
                    "live feeds during `{}`: {} clients received {} to {} bytes each",
                    r.row.name(),
                    bytes.len(),
                    bytes.iter().min().unwrap_or(&0),
                    bytes.iter().max().unwrap_or(&0)
                );
            }
            if r.load.errors.total() > 0 {
                println!("errors in `{}`: {:?}", r.row.name(), r.load.errors);
            }
            if r.unexpected() > 0 {
                println!(
                    "unexpected decisions in `{}`: {:?} (expected only {:?})",
                    r.row.name(),
                    r.load.decisions,
                    r.row.expected_decisions()
                );
            }
        }
    }

    fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "row": r.row.name(),
                    "responses": r.load.responses,
                    "successes": r.load.successes(),
                    "duration_secs": r.load.duration.as_secs_f64(),
                    "req_per_s": r.load.rate(),
                    "p50_ms": r.load.latency_ms(0.5),
                    "p99_ms": r.load.latency_ms(0.99),
                    "p99_9_ms": r.load.latency_ms(0.999),
                    "max_ms": r.load.latency_us.max() as f64 / 1000.0,
                    "errors": r.load.errors,
                    "decisions": r.load.decisions,
                    "unexpected_decisions": r.unexpected(),
                    "over_bare": self.ratio(r, Some(Row::Bare)),
                    "over_healthz": self.ratio(r, Some(Row::Healthz)),
                    "over_baseline": self.ratio(r, r.row.baseline()),
                    "baseline": r.row.baseline().map(Row::name),
                    "rss_mib": r.rss_mib(),
                    "peak_rss_mib": r.memory.iter().map(|m| mib(m.peak_kib)).collect::<Vec<_>>(),
                    "soc_lag_ms": r.soc_lag.map(|lag| lag.as_secs_f64() * 1e3),
                    "deny_storm_incident_ms": r.storm.map(|s| s.as_secs_f64() * 1e3),
                    "feed_bytes": r.feed_bytes,
                })
            })
            .collect();
        let mut report = self.header.clone();
        report["rows"] = Value::Array(rows);
        report["mcp_proxy_overhead_p50_ms"] = json!(self.mcp_overhead_p50_ms());
        report
    }
}

/// A started gateway, ready to be loaded.
struct Bench {
    args: Args,
    /// wrk's script, request and result files.
    _work: tempfile::TempDir,
    deployment: Deployment,
    wrk: Wrk,
    shape: Shape,
    base_urls: Vec<String>,
    database: DatabaseProbe,
    prepared: Prepared,
    admin_key: String,
    control: reqwest::Client,
}

impl Bench {
    async fn start(args: Args, rows: &[Row]) -> Result<Bench> {
        // The load generator first: no use starting servers without it.
        let work = tempfile::Builder::new()
            .prefix("aegis-bench-wrk-")
            .tempdir()
            .context("creating a temporary directory")?;
        let wrk = Wrk::locate(args.wrk.as_deref(), work.path())?;
        let control = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let names = tenant_names(rows);
        eprintln!(
            "starting {} x{} with {} tenant(s) ...",
            args.aegis.display(),
            args.replicas,
            names.len()
        );
        let deployment = Deployment::start(
            &args.aegis,
            args.db.as_deref(),
            args.replicas,
            &names,
            &control,
        )
        .await?;
        let base_urls = deployment.base_urls();
        let prepared = prepare(
            &control,
            &base_urls[0],
            &names,
            &deployment.admin_keys,
            rows,
        )
        .await
        .map_err(|e| {
            eprintln!("{}", deployment.log_excerpts(40));
            e.context("setting up tenants, agents, tools and policies")
        })?;
        let database = DatabaseProbe::open(&deployment.database).await?;
        Ok(Bench {
            shape: Shape {
                threads: args.threads,
                connections: args.connections,
            },
            admin_key: deployment.admin_keys[0].clone(),
            args,
            _work: work,
            deployment,
            wrk,
            base_urls,
            database,
            prepared,
            control,
        })
    }

    fn header(&self) -> Value {
        json!({
            "aegis": self.args.aegis.display().to_string(),
            "database": self.deployment.backend,
            "servers": self.base_urls.len(),
            "load_generator": format!(
                "{} -t{} -c{} (closed loop, keep-alive)",
                self.wrk.version, self.shape.threads, self.shape.connections
            ),
            "warmup_secs": self.args.warmup,
            "duration_secs": self.args.duration,
        })
    }

    async fn run_row(&self, row: Row, bare_url: Option<&str>) -> Result<RowReport> {
        eprintln!("row {} ...", row.name());
        let requests = self.prepared.requests(row)?;
        let own_server;
        let targets = match row {
            Row::Bare => {
                own_server = vec![bare_url.context("no bare server")?.to_owned()];
                &own_server
            }
            Row::McpDirect => {
                own_server = vec![
                    self.prepared
                        .mcp_upstream
                        .clone()
                        .context("no upstream MCP server")?,
                ];
                &own_server
            }
            _ => &self.base_urls,
        };
        let feeds = if row == Row::Feed20 {
            let clients: Vec<(String, String)> = self
                .prepared
                .feed_keys
                .iter()
                .zip(self.base_urls.iter().cycle())
                .map(|(key, url)| (url.clone(), key.clone()))
                .collect();
            Some(FeedClients::connect(&clients).await?)
        } else {
            None
        };
        let warmup = Duration::from_secs(self.args.warmup);
        let duration = Duration::from_secs(self.args.duration);
        let storm = (row == Row::Allow).then(|| {
            let tenant = Tenant {
                client: &self.control,
                base_url: &self.base_urls[0],
                admin_key: &self.admin_key,
            };
            async move {
                tenant
                    .deny_storm(&self.base_urls, warmup + duration / 2)
                    .await
            }
        });
        let load = self.wrk.run(
            row.name(),
            targets,
            &requests,
            &self.shape,
            warmup,
            duration,
        );
        let (load, storm) = match storm {
            Some(storm) => {
                let (load, storm) = tokio::join!(load, storm);
                (load?, Some(storm?))
            }
            None => (load.await?, None),
        };
        let soc_lag = match row.authorizes() {
            true => Some(self.database.lag().await?),
            false => None,
        };
        let memory = match row {
            Row::Bare | Row::McpDirect => Vec::new(),
            _ => self.deployment.memory_kib()?,
        };
        Ok(RowReport {
            row,
            load,
            memory,
            soc_lag,
            feed_bytes: feeds.map(FeedClients::close),
            storm,
        })
    }

    async fn rows(&self, rows: &[Row]) -> Result<Report> {
        let bare_url = match rows.contains(&Row::Bare) {
            true => Some(observe::start_bare_server().await?),
            false => None,
        };
        let mut report = Report {
            header: self.header(),
            rows: Vec::new(),
        };
        for &row in rows {
            let result = self.run_row(row, bare_url.as_deref()).await;
            report.rows.push(result.inspect_err(|_| {
                eprintln!("{}", self.deployment.log_excerpts(20));
            })?);
        }
        Ok(report)
    }

    /// The allow load in chunks until `target` decisions, the RSS sampled after each.
    async fn soak(&self, target: u64) -> Result<(Value, u64)> {
        let requests = self.prepared.requests(Row::Allow)?;
        let chunk = Duration::from_secs(self.args.soak_chunk);
        let started = Instant::now();
        let mut decided = 0u64;
        let mut failures = 0u64;
        let mut samples: Vec<(f64, u64, u64)> = Vec::new();
        while decided < target {
            let load = self
                .wrk
                .run(
                    "soak",
                    &self.base_urls,
                    &requests,
                    &self.shape,
                    Duration::ZERO,
                    chunk,
                )
                .await?;
            decided += load.decisions.values().sum::<u64>();
            failures += load.errors.total();
            let rss = self.deployment.largest_memory_kib()?.rss_kib;
            samples.push((started.elapsed().as_secs_f64(), decided, rss));
            eprintln!(
                "soak: {decided} decisions, RSS {:.1} MiB, {:.0} s",
                mib(rss),
                started.elapsed().as_secs_f64()
            );
        }
        let soc_lag = self.database.lag().await?;
        // The second half: from the first sample at or past half the decisions.
        let half = samples
            .iter()
            .position(|(_, decisions, _)| *decisions >= target / 2)
            .unwrap_or(0);
        let at_half = samples[half].2;
        let max_after = samples[half..].iter().map(|s| s.2).max().unwrap_or(at_half);
        let end = samples.last().map_or(0, |s| s.2);
        let peak = self.deployment.largest_memory_kib()?.peak_kib;
        let (stored_bytes, stored_decisions) = self.database.stored().await?;
        let bytes_per_decision = stored_bytes / stored_decisions.max(1);
        println!("{}", self.header());
        println!(
            "soak: {decided} decisions in {:.0} s, {failures} errors; RSS at the end {:.1} MiB \
             (peak {:.1} MiB); second half: {:.1} MiB at {} decisions, at most {:.1} MiB \
             after (growth {:.1} MiB); SOC lag after the load {:.0} ms",
            started.elapsed().as_secs_f64(),
            mib(end),
            mib(peak),
            mib(at_half),
            samples[half].1,
            mib(max_after),
            mib(max_after - at_half),
            soc_lag.as_secs_f64() * 1e3
        );
        println!(
            "stored: {bytes_per_decision} bytes per decision ({:.1} MiB for {stored_decisions} \
             decisions)",
            stored_bytes as f64 / (1024.0 * 1024.0)
        );
        let mut report = self.header();
        report["soak"] = json!({
            "chunk_secs": self.args.soak_chunk,
            "decisions": decided,
            "errors": failures,
            "rss_end_mib": mib(end),
            "peak_rss_mib": mib(peak),
            "second_half_start_mib": mib(at_half),
            "second_half_max_mib": mib(max_after),
            "second_half_growth_mib": mib(max_after - at_half),
            "soc_lag_ms": soc_lag.as_secs_f64() * 1e3,
            "stored_bytes": stored_bytes,
            "stored_decisions": stored_decisions,
            "stored_bytes_per_decision": bytes_per_decision,
            "samples": samples
                .iter()
                .map(|(secs, decisions, rss)| json!({"secs": secs, "decisions": decisions, "rss_mib": mib(*rss)}))
                .collect::<Vec<_>>(),
        });
        Ok((report, failures))
    }
}

async fn run(args: Args) -> Result<()> {
    let rows = match (&args.decisions, args.rows.is_empty()) {
        (Some(_), _) => vec![Row::Allow],
        (None, true) => Row::ALL.to_vec(),
        (None, false) => args.rows.clone(),
    };
    let json_path = args.json.clone();
    let decisions = args.decisions;
    let bench = Bench::start(args, &rows).await?;
    let (report, failures) = match decisions {
        Some(target) => bench.soak(target).await?,
        None => {
            let report = bench.rows(&rows).await?;
            report.print();
            (report.to_json(), report.failures())
        }
    };
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if failures > 0 {
        eprintln!("{}", bench.deployment.log_excerpts(20));
        bail!("{failures} requests failed or were decided unexpectedly (see above)");
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
    // Returning (instead of being killed by the signal) drops the servers, which kills them.
    let result = tokio::select! {
        result = run(args) => result,
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
