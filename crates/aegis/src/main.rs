//! `aegis`: the AegisAgent gateway (`aegis serve`), its commands on the database host
//! (`aegis init`, `aegis keys create`, `aegis receipts export|verify`) and the operator CLI
//! of a running gateway (`aegis agents|incidents|approvals|decisions|settings`, over HTTP),
//! and `aegis mcp wrap`, which puts a local stdio MCP server under a running gateway.

mod archive;
mod key_file;
mod mcp_wrap;
mod notify_args;
mod ops_cli;
mod pg_session_args;
mod receipts;
mod signing_key;
mod traces;

use aegis_core::correlate::MAX_BURST_THRESHOLD;
use aegis_core::model::{AutonomyLevel, Role};
use aegis_server::auth::{create_tenant, new_operator_key};
use aegis_server::evidence::NarratorConfig;
use aegis_server::live_feed::FeedSettings;
use aegis_server::serve::ReadTimeouts;
use aegis_server::telemetry::Metrics;
use aegis_server::validate::Text;
use aegis_server::{AppState, Settings};
use aegis_soc::SocConfig;
use aegis_soc::anchor::AnchorFile;
use aegis_soc::consumer::Consumer;
use aegis_store::postgres::PgStore;
use aegis_store::sqlite::SqliteStore;
use aegis_store::{SecretsKey, Store, StoreError, TenantId};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use traces::Traces;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(
    name = "aegis",
    version,
    about = "AegisAgent: the authorization gateway between AI agents and their tools"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, env = "AEGIS_LOG_FORMAT", global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Create the database if needed, a tenant and its first admin key (printed as JSON).
    Init(InitArgs),
    /// Operator keys, made on the machine that holds the database (e.g. to regain access
    /// to a tenant whose admin keys are lost).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Export and verify receipt chains.
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
    /// Write the receipts (and decisions) created before a date to a self-verifying archive
    /// file, then cut the chains there and prune what the file holds, in small batches
    /// while the gateway serves. Prints the chains archived as JSON.
    Archive(ArchiveArgs),
    /// Agents of a running gateway: list, get, freeze, unfreeze, revoke, rotate-token,
    /// set-risk-tier (operator key in AEGIS_KEY).
    Agents(ops_cli::Resource<ops_cli::agents::AgentsCommand>),
    /// Incidents of a running gateway: list, get, ack, close, apply, narrate, graph.
    Incidents(ops_cli::Resource<ops_cli::incidents::IncidentsCommand>),
    /// Approvals of a running gateway: list, approve, reject.
    Approvals(ops_cli::Resource<ops_cli::approvals::ApprovalsCommand>),
    /// Decisions of a running gateway: list, with the API's filters.
    Decisions(ops_cli::Resource<ops_cli::decisions::DecisionsCommand>),
    /// The tenant's SOC settings on a running gateway: show, and set (admin).
    Settings(ops_cli::Resource<ops_cli::settings::SettingsCommand>),
    /// MCP servers under a running gateway.
    #[command(subcommand)]
    Mcp(McpCommand),
}

#[derive(Subcommand)]
enum McpCommand {
    /// Run a local stdio MCP server for a desktop MCP client, every listing and call
    /// governed by the gateway (agent token in AEGIS_AGENT_TOKEN).
    Wrap(mcp_wrap::WrapArgs),
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Write receipt chains to standard output as JSON lines, each with its covering
    /// signed checkpoint and public key.
    Export {
        /// SQLite database file or `postgres://` URL.
        #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
        db: String,
        /// Only this tenant's chain.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Verify chains: hashes, links, seq without gaps, and checkpoint signatures.
    /// Exits 0 when every chain verifies; otherwise names the first bad receipt.
    Verify {
        /// Exported or archive JSON-lines files, oldest first: they verify as one history
        /// (each chain goes on where an earlier file ended it).
        #[arg(required_unless_present = "db")]
        files: Vec<PathBuf>,
        /// Verify the chains stored in this database (SQLite file or `postgres://` URL),
        /// each from its cut if it was archived; after FILES, as their continuation.
        #[arg(long)]
        db: Option<String>,
        /// Accept only these signing keys (`KEY_ID=HEX`, repeatable) instead of the keys
        /// found beside the receipts.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// With --db: the gateway's anchor file (`<signing key file>.anchors`); every
        /// anchored receipt must still be in the database, unchanged and covered.
        #[arg(long, requires = "db")]
        anchors: Option<PathBuf>,
        /// Interop mode: FILE holds receipts under the generic rule "hash every field but
        /// receipt_hash" (the reference vectors' format).
        #[arg(long, requires = "files", conflicts_with = "db")]
        generic: bool,
    },
}

#[derive(Args)]
struct ArchiveArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Archive what was decided before this time (RFC 3339, e.g. `2026-06-01T00:00:00Z`).
    #[arg(long, value_parser = parse_timestamp)]
    before: i64,
    /// The archive file to write (never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Only this tenant's chain.
    #[arg(long)]
    tenant: Option<String>,
    /// Receipts pruned per transaction.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    batch: u32,
    /// Pause between two prune transactions, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an operator key for an existing tenant; prints it once, as JSON.
    Create(CreateKeyArgs),
}

#[derive(Args)]
struct CreateKeyArgs {
    /// SQLite database file or `postgres://` URL.
    #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
    db: String,
    /// Id of an existing tenant.
    #[arg(long, env = "AEGIS_TENANT")]
    tenant: String,
    /// viewer, responder or admin.
    #[arg(long)]
    role: Role,
    /// A label shown when keys are listed.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
struct DatabaseArgs {
    /// SQLite database file (created with its schema on first use), or a PostgreSQL URL
    /// (`postgres://user@host/db`, schema applied on first use) shared by several replicas.
    #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
    db: String,
    /// Ed25519 seed (64 hex digits) for signing receipt checkpoints; overrides the key file.
    #[arg(long, env = "AEGIS_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// Where the signing key is kept; generated (mode 0600) on first start.
    /// Default: `<db>.signing-key` beside a SQLite database, `aegis.signing-key` in the
    /// working directory with PostgreSQL (each replica may have its own key: every public
    /// key is recorded in the database).
    #[arg(long, env = "AEGIS_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Key that seals webhook signing secrets in the database; generated (mode 0600) on
    /// first start. Default: `<db>.secrets-key` beside a SQLite database,
    /// `aegis.secrets-key` in the working directory with PostgreSQL, where every replica
    /// needs a copy of the same file.
    #[arg(long, env = "AEGIS_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    #[command(flatten)]
    pg_sessions: pg_session_args::PgSessionArgs,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "AEGIS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The gateway's address as operators reach it (e.g. `https://aegis.example.com`):
    /// the base of incident links in notifications (none without it) and of incident
    /// narratives' next-step commands (default there: `http://` and the listen address).
    #[arg(long, env = "AEGIS_PUBLIC_URL", value_parser = parse_public_url)]
    public_url: Option<String>,
    /// Seconds a client may take to send a request's head; also how long an idle
    /// keep-alive connection is kept open.
    #[arg(long, env = "AEGIS_HEADER_READ_TIMEOUT_SECS", default_value_t = ReadTimeouts::default().header.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// Longest pause, in seconds, while a request body is read (a body that stops short of
    /// its `Content-Length` answers 408 and its connection is closed).
    #[arg(long, env = "AEGIS_BODY_READ_TIMEOUT_SECS", default_value_t = ReadTimeouts::default().body.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout_secs: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AEGIS_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds to wait for in-flight requests and queued writes on shutdown.
    #[arg(long, env = "AEGIS_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    shutdown_grace_secs: u64,
    /// Live feeds (`/v1/ws/events`) one operator key may hold open on this process.
    #[arg(long, env = "AEGIS_WS_MAX_PER_KEY", default_value_t = FeedSettings::default().max_per_key,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    ws_max_per_key: usize,
    /// Live feeds one tenant may hold open on this process, all its keys together.
    #[arg(long, env = "AEGIS_WS_MAX_PER_TENANT", default_value_t = FeedSettings::default().max_per_tenant,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    ws_max_per_tenant: usize,
    /// Where to keep, outside the database, the last checkpoint this process signed per
    /// receipt chain (checked at every start). Default: the signing key file's path plus
    /// `.anchors`.
    #[arg(long, env = "AEGIS_ANCHOR_FILE")]
    anchor_file: Option<PathBuf>,
    /// Seconds between writes of the anchor file (only when something new was signed; also
    /// written at a clean shutdown).
    #[arg(long, env = "AEGIS_ANCHOR_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    anchor_interval_secs: u64,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    soc: SocArgs,
    #[command(flatten)]
    notify: notify_args::NotifyArgs,
    #[command(flatten)]
    evidence: EvidenceArgs,
    #[command(flatten)]
    mcp: McpArgs,
}

/// MCP gateway mode (`/mcp/{server}`).
#[derive(Args)]
struct McpArgs {
    /// Seconds an upstream MCP server may take to answer one request.
    #[arg(long, env = "AEGIS_MCP_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    mcp_timeout_secs: u64,
    /// Largest upstream tool result passed on to the agent, in bytes; larger ones become an
    /// error result.
    #[arg(long, env = "AEGIS_MCP_MAX_RESULT_BYTES", default_value_t = 8 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    mcp_max_result_bytes: usize,
    /// Let upstream MCP servers be private, loopback and link-local addresses.
    #[arg(long, env = "AEGIS_MCP_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    mcp_allow_private: bool,
}

#[derive(Args)]
struct MetricsArgs {
    /// Record Prometheus metrics and serve them at `GET /metrics` (no authentication).
    #[arg(long = "metrics", env = "AEGIS_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    enabled: bool,
    /// Serve `/metrics` on this address instead of the API listener (which then answers
    /// 404 for it), e.g. to keep it off the network the agents reach.
    #[arg(long, env = "AEGIS_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Tenants labelled by name in `aegis_decisions_total`: the first ones this process
    /// serves; decisions of the others are counted under `tenant="other"`.
    #[arg(long, env = "AEGIS_METRICS_MAX_TENANTS", default_value_t = aegis_server::telemetry::DEFAULT_MAX_TENANT_LABELS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000))]
    metrics_max_tenants: usize,
}

#[derive(Args)]
struct SocArgs {
    /// SOC autonomy level of tenants without an override (L0 observe … L4 full). Unset: L1.
    #[arg(long, env = "AEGIS_SOC_AUTONOMY_LEVEL")]
    soc_autonomy_level: Option<AutonomyLevel>,
    /// deny_storm: denies within the window that open an incident.
    #[arg(long, env = "AEGIS_DENY_STORM_N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=MAX_BURST_THRESHOLD as i64))]
    deny_storm_n: u32,
    /// deny_storm: trailing window in seconds.
    #[arg(long, env = "AEGIS_DENY_STORM_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    deny_storm_window_secs: u64,
    /// runaway: decisions within the window that open an incident.
    #[arg(long, env = "AEGIS_RUNAWAY_N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=MAX_BURST_THRESHOLD as i64))]
    runaway_n: u32,
    /// runaway: trailing window in seconds.
    #[arg(long, env = "AEGIS_RUNAWAY_WINDOW_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    runaway_window_secs: u64,
    /// data_exfiltration: longest gap in seconds between a read and an external send.
    #[arg(long, env = "AEGIS_EXFILTRATION_WINDOW_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    exfiltration_window_secs: u64,
    /// trust_escalation: longest gap in seconds between a deny and an allow of the same action.
    #[arg(long, env = "AEGIS_TRUST_ESCALATION_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    trust_escalation_window_secs: u64,
    /// approval_flood: require_approval decisions within the window that open an incident.
    #[arg(long, env = "AEGIS_APPROVAL_FLOOD_N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=MAX_BURST_THRESHOLD as i64))]
    approval_flood_n: u32,
    /// approval_flood: trailing window in seconds.
    #[arg(long, env = "AEGIS_APPROVAL_FLOOD_WINDOW_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    approval_flood_window_secs: u64,
}

impl SocArgs {
    fn config(&self) -> SocConfig {
        let mut config = SocConfig {
            default_autonomy: self.soc_autonomy_level.unwrap_or(AutonomyLevel::L1),
            ..SocConfig::default()
        };
        let correlation = &mut config.correlation;
        correlation.deny_storm.threshold = self.deny_storm_n as usize;
        correlation.deny_storm.window = Duration::from_secs(self.deny_storm_window_secs);
        correlation.runaway.threshold = self.runaway_n as usize;
        correlation.runaway.window = Duration::from_secs(self.runaway_window_secs);
        correlation.data_exfiltration.window = Duration::from_secs(self.exfiltration_window_secs);
        correlation.trust_escalation.window =
            Duration::from_secs(self.trust_escalation_window_secs);
        correlation.approval_flood.threshold = self.approval_flood_n as usize;
        correlation.approval_flood.window = Duration::from_secs(self.approval_flood_window_secs);
        config
    }
}

#[derive(Args)]
struct EvidenceArgs {
    /// Seconds between passes of the background receipt-chain integrity check.
    #[arg(long, env = "AEGIS_INTEGRITY_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    integrity_interval_secs: u64,
    /// OpenAI-compatible endpoint (base `.../v1` or `.../chat/completions`) for incident
    /// narratives; unset: the deterministic narrative only.
    #[arg(long, env = "AEGIS_NARRATOR_URL")]
    narrator_url: Option<String>,
    /// Model name sent to the narrator endpoint.
    #[arg(long, env = "AEGIS_NARRATOR_MODEL", default_value = "gpt-4o-mini")]
    narrator_model: String,
    /// Bearer key of the narrator endpoint.
    #[arg(long, env = "AEGIS_NARRATOR_API_KEY", hide_env_values = true)]
    narrator_api_key: Option<String>,
    /// Seconds to wait for the narrator before falling back to the deterministic text.
    #[arg(long, env = "AEGIS_NARRATOR_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    narrator_timeout_secs: u64,
}

impl EvidenceArgs {
    fn narrator(&self) -> Option<NarratorConfig> {
        self.narrator_url.as_ref().map(|url| NarratorConfig {
            url: url.clone(),
            model: self.narrator_model.clone(),
            api_key: self.narrator_api_key.clone(),
            timeout: Duration::from_secs(self.narrator_timeout_secs),
        })
    }
}

#[derive(Args)]
struct InitArgs {
    /// SQLite database file (created with its schema on first use), or a PostgreSQL URL
    /// (schema applied on first use).
    #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
    db: String,
    /// Id of the tenant to create.
    #[arg(long, env = "AEGIS_TENANT")]
    tenant: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let traces = match cli.command {
        Command::Serve(_) => Traces::from_env()?,
        _ => None,
    };
    init_logs(cli.log_format, traces.as_ref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Init(args) => init(args).await,
            Command::Keys(KeysCommand::Create(args)) => create_key(args).await,
            Command::Receipts(command) => receipts_command(command).await,
            Command::Archive(args) => archive_command(args).await,
            Command::Agents(resource) => ops_cli::run(resource).await,
            Command::Incidents(resource) => ops_cli::run(resource).await,
            Command::Approvals(resource) => ops_cli::run(resource).await,
            Command::Decisions(resource) => ops_cli::run(resource).await,
            Command::Settings(resource) => ops_cli::run(resource).await,
            Command::Mcp(McpCommand::Wrap(args)) => mcp_wrap::run(args).await,
        }
    });
    // After the runtime: the last requests' spans are closed and only need sending.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    outcome
}

/// Log lines on stderr and, when `traces` is set, the OpenTelemetry layer beside them. Access
/// lines (one per request) only when asked for, e.g. `AEGIS_LOG=info`; the request spans go
/// to the traces whatever the log filter says.
fn init_logs(format: LogFormat, traces: Option<&Traces>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "info,aegis::access=warn".into());
    match traces {
        // Without traces the filter is global, so what it turns off costs nothing.
        None => tracing_subscriber::registry()
            .with(log_lines(format))
            .with(filter)
            .init(),
        Some(traces) => {
            tracing_subscriber::registry()
                .with(log_lines(format).with_filter(filter))
                .with(traces.layer())
                .init();
            aegis_server::traces::export();
        }
    }
}

fn log_lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        // One object per line: the event's fields at the top level, the request span's
        // (request id, method, route, tenant) under "span".
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
}

async fn receipts_command(command: ReceiptsCommand) -> anyhow::Result<()> {
    match command {
        ReceiptsCommand::Export { db, tenant } => {
            let store = open_read_only(&db).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            receipts::export(store.as_ref(), tenant.as_deref(), &mut out).await?;
            Ok(())
        }
        ReceiptsCommand::Verify {
            files,
            db,
            trusted_keys,
            anchors,
            generic,
        } => {
            let pins = receipts::parse_pins(&trusted_keys)?;
            let verdict = match (files.as_slice(), db) {
                ([file], _) if generic => receipts::verify_generic_file(file)?,
                (_, _) if generic => bail!("--generic checks one FILE"),
                (files, db) => {
                    let store = match db {
                        Some(db) => Some(open_read_only(&db).await?),
                        None => None,
                    };
                    receipts::verify_history(files, store.as_deref(), &pins, anchors.as_deref())
                        .await?
                }
            };
            match verdict {
                receipts::Verdict::Verified { receipts, chains } => {
                    println!("ok: {receipts} receipts in {chains} chain(s) verified");
                    Ok(())
                }
                receipts::Verdict::Broken(why) => {
                    eprintln!("FAILED: {why}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn archive_command(args: ArchiveArgs) -> anyhow::Result<()> {
    // The gateway's own key signs the cuts, so that its start-up check accepts them; the
    // store is opened without it, as nothing here extends a chain.
    let signing_key_file = args.database.signing_key_file();
    if args.database.signing_key.is_none() && !signing_key_file.exists() {
        bail!(
            "no signing key at {}: give the gateway's key (--signing-key-file)",
            signing_key_file.display()
        );
    }
    let signer =
        signing_key::load_or_create(args.database.signing_key.as_deref(), &signing_key_file)?;
    let store = open_unsigned(&args.database.db).await?;
    let request = archive::ArchiveRequest {
        before_ms: args.before,
        tenant: args.tenant.as_deref(),
        out: &args.out,
        batch: args.batch,
        pause: Duration::from_millis(args.pause_ms),
    };
    let archived = archive::archive(store.as_ref(), &signer, &request).await?;
    store.flush().await?;
    let out = args.out.display().to_string();
    let report = if archived.is_empty() {
        serde_json::json!({"archived": archived, "out": null})
    } else {
        serde_json::json!({"archived": archived, "out": out})
    };
    println!("{report}");
    Ok(())
}

/// An RFC 3339 time as Unix milliseconds.
fn parse_timestamp(value: &str) -> Result<i64, String> {
    aegis_core::timestamp::parse_millis(value)
        .ok_or_else(|| "must be an RFC 3339 time, e.g. 2026-06-01T00:00:00Z".into())
}

/// An `http(s)://` base URL without query or fragment, kept without its trailing `/`.
fn parse_public_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

impl DatabaseArgs {
    /// A key file's default place: beside a SQLite database (`<db>.<suffix>`), else
    /// `aegis.<suffix>` in the working directory.
    fn key_file_beside_db(&self, suffix: &str) -> PathBuf {
        PathBuf::from(if is_postgres(&self.db) {
            format!("aegis.{suffix}")
        } else {
            format!("{}.{suffix}", self.db)
        })
    }

    fn signing_key_file(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.key_file_beside_db("signing-key"))
    }
}

async fn open_store(args: &DatabaseArgs) -> anyhow::Result<Arc<dyn Store>> {
    let signer = Arc::new(signing_key::load_or_create(
        args.signing_key.as_deref(),
        &args.signing_key_file(),
    )?);
    let secrets_key_file = args
        .secrets_key_file
        .clone()
        .unwrap_or_else(|| args.key_file_beside_db("secrets-key"));
    let (secrets_key, _) = key_file::load_or_create(&secrets_key_file, "secrets key")?;
    let secrets = SecretsKey::from_bytes(&secrets_key);
    if is_postgres(&args.db) {
        // The URL may carry a password: never echo it.
        let store = PgStore::connect_bounded(&args.db, signer, secrets, args.pg_sessions.bounds())
            .await
            .context("cannot open the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(std::path::Path::new(&args.db), signer, secrets)
        .with_context(|| format!("cannot open database {}", args.db))?;
    Ok(Arc::new(store))
}

/// The store as `init` and `keys create` need it: they sign and seal nothing, so they need
/// (and create) no key file.
async fn open_unsigned(db: &str) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres(db) {
        let store = PgStore::connect_unsigned(db)
            .await
            .context("cannot open the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open_unsigned(std::path::Path::new(db))
        .with_context(|| format!("cannot open database {db}"))?;
    Ok(Arc::new(store))
}

async fn open_read_only(db: &str) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres(db) {
        let store = PgStore::connect_read_only(db)
            .await
            .context("cannot open the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(SqliteStore::open_read_only(
        std::path::Path::new(db),
    )?))
}

/// Where a log line may name the database: a file path as is, a URL without its user
/// information and parameters (either may carry a password).
fn database_label(db: &str) -> String {
    if !is_postgres(db) {
        return db.to_owned();
    }
    let rest = db.split_once("://").map_or(db, |(_, rest)| rest);
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    format!("postgres://{host_and_db}")
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    if let Err(reason) = TenantId::validate(&args.tenant) {
        bail!("--tenant {reason}");
    }
    let store = open_unsigned(&args.db).await?;
    match create_tenant(store.as_ref(), TenantId::new(args.tenant.as_str())).await {
        Ok(created) => {
            println!(
                "{}",
                serde_json::json!({
                    "tenant_id": created.tenant_id,
                    "admin_key": created.admin_key,
                    "admin_key_id": created.admin_key_id,
                })
            );
            Ok(())
        }
        Err(StoreError::Conflict(_)) => {
            bail!(
                "tenant {} already exists in {}",
                args.tenant,
                database_label(&args.db)
            )
        }
        Err(error) => Err(error.into()),
    }
}

async fn create_key(args: CreateKeyArgs) -> anyhow::Result<()> {
    if let Err(reason) = TenantId::validate(&args.tenant) {
        bail!("--tenant {reason}");
    }
    let name = (args.name.map(Text::parse).transpose())
        .map_err(|reason| anyhow::anyhow!("--name {reason}"))?;
    let (secret, key) = new_operator_key(args.role, name).map_err(|error| {
        anyhow::anyhow!("--{}: {}", error.field.unwrap_or_default(), error.message)
    })?;
    let store = open_unsigned(&args.db).await?;
    let tenant = TenantId::new(args.tenant.as_str());
    match store.tenant(&tenant).await {
        Err(StoreError::NotFound(_)) => bail!(
            "no tenant {} in {} (create it with `aegis init`)",
            args.tenant,
            database_label(&args.db)
        ),
        other => other?,
    };
    let key = store.create_operator_key(&tenant, key).await?;
    println!(
        "{}",
        serde_json::json!({
            "tenant_id": key.tenant_id,
            "key_id": key.id,
            "role": key.role,
            "key": secret,
        })
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before the store opens: its writer takes its metric handles when it starts.
    let metrics = match args.metrics.enabled {
        true => {
            Some(Arc::new(Metrics::install().map_err(|e| {
                anyhow::anyhow!("cannot install metrics: {e}")
            })?))
        }
        false => None,
    };
    let store = open_store(&args.database).await?;
    let anchor_file = args.anchor_file.clone().unwrap_or_else(|| {
        let mut path = args.database.signing_key_file().into_os_string();
        path.push(".anchors");
        PathBuf::from(path)
    });
    let anchors = Arc::new(
        AnchorFile::open(anchor_file.clone())
            .with_context(|| format!("cannot read the anchor file {}", anchor_file.display()))?,
    );
    // Before the first request: a chain that fails is closed, so nothing is signed over it.
    let broken_chains =
        aegis_soc::integrity::audit_at_start(store.as_ref(), &anchors.anchors().await)
            .await
            .context("cannot audit the receipt chains")?;
    if !broken_chains.is_empty() {
        tracing::error!(
            tenants = ?broken_chains,
            anchor_file = %anchor_file.display(),
            "receipt chains failed the start-up audit: their decisions answer 503 until the database is repaired \
             (if it was restored or replaced on purpose, move the anchor file away) and the gateway restarts"
        );
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listening = listener.local_addr()?;
    let metrics_listener = match (&metrics, &args.metrics.metrics_listen) {
        (Some(_), Some(address)) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (AEGIS_METRICS_LISTEN)"))?,
        ),
        _ => None,
    };
    let state = AppState::new(
        Arc::clone(&store),
        Settings {
            max_body_bytes: args.max_body_bytes,
            env_autonomy: args.soc.soc_autonomy_level,
            webhook_allow_private: args.notify.webhook_allow_private,
            narrator: args.evidence.narrator(),
            live_feed: FeedSettings {
                max_per_key: args.ws_max_per_key,
                max_per_tenant: args.ws_max_per_tenant,
                ..FeedSettings::default()
            },
            public_url: args
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{listening}")),
            mcp: aegis_mcp::McpSettings {
                upstream_timeout: Duration::from_secs(args.mcp.mcp_timeout_secs),
                max_upstream_result_bytes: args.mcp.mcp_max_result_bytes,
                allow_private: args.mcp.mcp_allow_private,
                max_body_bytes: args.max_body_bytes,
            },
            slack_signing_secret: args.notify.slack_signing_secret.clone(),
            metrics: metrics.clone().filter(|_| metrics_listener.is_none()),
            metrics_max_tenants: args.metrics.metrics_max_tenants,
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let timeouts = ReadTimeouts {
        header: Duration::from_secs(args.header_read_timeout_secs),
        body: Duration::from_secs(args.body_read_timeout_secs),
    };
    let metrics_tasks = metrics.map(|metrics| {
        serve_metrics(
            metrics,
            metrics_listener,
            Arc::clone(&store),
            timeouts,
            stopped.clone(),
        )
    });
    let anchor_keeper = tokio::spawn(aegis_soc::anchor::keep(
        Arc::clone(&anchors),
        store.clone(),
        Duration::from_secs(args.anchor_interval_secs),
        stopped.clone(),
    ));
    // Changes committed by other replicas reach this one's caches through the log.
    let coherence = tokio::spawn(aegis_server::coherence::follow_changes(
        Arc::clone(&state),
        stopped.clone(),
    ));
    // One reader of new events for every live feed of this process.
    let live_feed = tokio::spawn(aegis_server::live_feed::follow_log(
        Arc::clone(&state),
        stopped.clone(),
    ));
    let background = tokio::spawn(lead_background_plane(
        Arc::clone(&state),
        BackgroundArgs {
            soc: args.soc.config(),
            notify: args
                .notify
                .notify_config(args.soc.soc_autonomy_level, args.public_url.clone()),
            deliver: args.notify.deliver_config(),
            integrity_interval: Duration::from_secs(args.evidence.integrity_interval_secs),
            broken_chains,
            anchors: Arc::clone(&anchors),
        },
        stopped,
    ));
    tracing::info!(listen = %listening, db = %database_label(&args.database.db), "aegis gateway serving");

    let grace = Duration::from_secs(args.shutdown_grace_secs);
    aegis_server::serve::serve(
        listener,
        aegis_server::router_with(state, aegis_console::routes()),
        timeouts,
        shutdown_signal(),
    )
    .await;
    let _ = stop.send(true);
    let mut tasks = vec![
        (background, "background plane"),
        (coherence, "cache follower"),
        (live_feed, "live feed follower"),
        (anchor_keeper, "anchor keeper"),
    ];
    tasks.extend(metrics_tasks.into_iter().flatten());
    for (task, name) in tasks {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::error!("the {name} did not stop within the shutdown grace period");
        }
    }

    // Requests still queued for the writer were answered or will be; make sure they hit disk.
    match tokio::time::timeout(grace, store.flush()).await {
        Ok(Ok(())) => tracing::info!("all writes flushed; bye"),
        Ok(Err(error)) => tracing::error!(%error, "flushing writes failed on shutdown"),
        Err(_) => tracing::error!("writes not flushed within the shutdown grace period"),
    }
    // After the last commit: the anchors name the heads as this process leaves them.
    if let Err(error) = anchors.update(store.as_ref()).await {
        tracing::error!(%error, path = %anchor_file.display(), "cannot write the anchor file");
    }
    Ok(())
}

/// Keeps the metrics recorder's histograms folded, and serves `/metrics` on its own
/// listener when one was given, until `stopped` turns true.
fn serve_metrics(
    metrics: Arc<Metrics>,
    listener: Option<tokio::net::TcpListener>,
    store: Arc<dyn Store>,
    timeouts: ReadTimeouts,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Vec<(tokio::task::JoinHandle<()>, &'static str)> {
    let mut upkeep_stopped = stopped.clone();
    let upkept = Arc::clone(&metrics);
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => upkept.upkeep(),
                () = stop_requested(&mut upkeep_stopped) => return,
            }
        }
    });
    let mut tasks = vec![(upkeep, "metrics upkeep")];
    if let Some(listener) = listener {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(listen = %address, "serving /metrics");
        }
        let mut stopped = stopped;
        let app = aegis_server::metrics_router(metrics, store);
        tasks.push((
            tokio::spawn(async move {
                aegis_server::serve::serve(listener, app, timeouts, async move {
                    stop_requested(&mut stopped).await
                })
                .await
            }),
            "metrics listener",
        ));
    }
    tasks
}

struct BackgroundArgs {
    soc: SocConfig,
    notify: aegis_soc::notify::NotifyConfig,
    deliver: aegis_soc::deliver::DeliverConfig,
    integrity_interval: Duration,
    /// Chains the start-up audit reported (the background check does not report them again).
    broken_chains: Vec<TenantId>,
    /// Where the integrity check resumes from and records how far it verified.
    anchors: Arc<AnchorFile>,
}

/// Runs the log consumers (SOC, notifications, deliveries, integrity check) while this
/// process leads — always with SQLite; with PostgreSQL, on one replica at a time, the others
/// waiting to take over — until `shutdown` turns true.
async fn lead_background_plane(
    state: aegis_server::SharedState,
    args: BackgroundArgs,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let store = Arc::clone(&state.store);
    loop {
        let mut leadership = tokio::select! {
            leadership = store.lead() => match leadership {
                Ok(leadership) => leadership,
                Err(error) => {
                    tracing::error!(%error, "cannot take the SOC leadership; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stop_requested(&mut shutdown) => return,
        };
        tracing::info!("leading: running the SOC, notification and delivery consumers");
        let (stop_consumers, consumers_stopped) = tokio::sync::watch::channel(false);
        let tasks = match start_consumers(&state, &args, consumers_stopped).await {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::error!(%error, "cannot start the consumers; retrying");
                drop(leadership);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let shutting_down = tokio::select! {
            () = leadership.lost() => false,
            () = stop_requested(&mut shutdown) => true,
        };
        let _ = stop_consumers.send(true);
        for (name, task) in tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::error!("the {name} did not stop within 5 s");
            }
        }
        drop(leadership);
        if shutting_down {
            return;
        }
        tracing::warn!("SOC leadership lost; consumers stopped, contending again");
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stop_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How often the leader stores the expiry of approvals whose time ran out (their status
/// reads as expired from the first millisecond regardless).
const APPROVAL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

async fn start_consumers(
    state: &aegis_server::SharedState,
    args: &BackgroundArgs,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<(&'static str, tokio::task::JoinHandle<()>)>> {
    let store = Arc::clone(&state.store);
    // Agents the SOC contains are refreshed in this replica's directory at once (other
    // replicas learn of it through the log).
    let directory_state = Arc::clone(state);
    let consumer = Consumer::start(
        store.clone(),
        args.soc,
        Arc::new(move |agent| directory_state.agents.forget(&agent.id)),
    )
    .await
    .context("cannot start the SOC consumer")?;
    // Notifications: a second consumer queues deliveries; the worker sends them. Neither
    // sits on the authorize path.
    let notifier = aegis_soc::notify::Notifier::start(store.clone(), args.notify.clone())
        .await
        .context("cannot start the notification consumer")?;
    Ok(vec![
        ("SOC consumer", tokio::spawn(consumer.run(stop.clone()))),
        (
            "notification consumer",
            tokio::spawn(notifier.run(stop.clone())),
        ),
        (
            "delivery worker",
            tokio::spawn(aegis_soc::deliver::run(
                store.clone(),
                args.deliver.clone(),
                stop.clone(),
            )),
        ),
        (
            "approval expiry sweep",
            tokio::spawn(aegis_soc::expiry::run(
                store.clone(),
                APPROVAL_SWEEP_INTERVAL,
                stop.clone(),
            )),
        ),
        (
            "integrity check",
            tokio::spawn(aegis_soc::integrity::run(
                store,
                Arc::clone(&args.anchors),
                args.integrity_interval,
                args.broken_chains.clone(),
                stop,
            )),
        ),
    ])
}

/// Resolves on Ctrl-C or SIGTERM. The SIGTERM handler is registered here, before the listener
/// serves anything: were it registered on the future's first poll, a SIGTERM sent as soon as
/// `/readyz` answered could find the default action still in place and kill the process
/// without its graceful stop (no flush, no anchor update).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|error| tracing::error!(%error, "cannot listen for SIGTERM"))
        .ok();
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {},
            _ = terminate => {},
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}

#[cfg(test)]
mod tests {
    use super::{database_label, parse_public_url};

    #[test]
    fn public_urls_are_http_bases_without_trailing_slash() {
        assert_eq!(
            parse_public_url("https://aegis.example.com/").unwrap(),
            "https://aegis.example.com"
        );
        assert_eq!(
            parse_public_url("http://10.0.0.11:8080/gateway/").unwrap(),
            "http://10.0.0.11:8080/gateway"
        );
        for bad in [
            "aegis.example.com",
            "ftp://host",
            "https://host/?a=1",
            "https://host/#x",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_labels_carry_no_credentials() {
        assert_eq!(database_label("db/aegis.db"), "db/aegis.db");
        assert_eq!(
            database_label("postgres://aegis:s3cret@db.internal:5432/aegis"),
            "postgres://db.internal:5432/aegis"
        );
        assert_eq!(
            database_label("postgresql://db.internal/aegis?user=a&password=s3cret"),
            "postgres://db.internal/aegis"
        );
        assert_eq!(
            database_label("postgres://p@ss:w@rd@host/db"),
            "postgres://host/db"
        );
    }
}
