//! `aegis`: the AegisAgent gateway (`aegis serve`) and its operator CLI (`aegis init`,
//! `aegis receipts export|verify`).

mod notify_args;
mod receipts;
mod signing_key;

use aegis_core::model::AutonomyLevel;
use aegis_server::auth::create_tenant;
use aegis_server::evidence::NarratorConfig;
use aegis_server::{AppState, Settings, router};
use aegis_soc::SocConfig;
use aegis_soc::consumer::Consumer;
use aegis_store::sqlite::SqliteStore;
use aegis_store::{Store, StoreError, TenantId};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "aegis",
    version,
    about = "AegisAgent: the authorization gateway between AI agents and their tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Create the database if needed, a tenant and its first admin key (printed as JSON).
    Init(InitArgs),
    /// Export and verify receipt chains.
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Write receipt chains to standard output as JSON lines, each with its covering
    /// signed checkpoint and public key.
    Export {
        /// SQLite database file.
        #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
        db: PathBuf,
        /// Only this tenant's chain.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Verify chains: hashes, links, seq without gaps, and checkpoint signatures.
    /// Exits 0 when every chain verifies; otherwise names the first bad receipt.
    Verify {
        /// An exported JSON-lines file.
        #[arg(required_unless_present = "db", conflicts_with = "db")]
        file: Option<PathBuf>,
        /// Verify the chains stored in this SQLite database instead.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Accept only these signing keys (`KEY_ID=HEX`, repeatable) instead of the keys
        /// found beside the receipts.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// Interop mode: FILE holds receipts under the generic rule "hash every field but
        /// receipt_hash" (the reference vectors' format).
        #[arg(long, requires = "file")]
        generic: bool,
    },
}

#[derive(Args)]
struct DatabaseArgs {
    /// SQLite database file (created with its schema on first use).
    #[arg(long, env = "AEGIS_DB", default_value = "db/aegisagent.db")]
    db: String,
    /// Ed25519 seed (64 hex digits) for signing receipt checkpoints; overrides the key file.
    #[arg(long, env = "AEGIS_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// Where the signing key is kept; generated (mode 0600) on first start.
    /// Default: `<db>.signing-key` beside the database.
    #[arg(long, env = "AEGIS_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "AEGIS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AEGIS_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds to wait for in-flight requests and queued writes on shutdown.
    #[arg(long, env = "AEGIS_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    shutdown_grace_secs: u64,
    #[command(flatten)]
    soc: SocArgs,
    #[command(flatten)]
    notify: notify_args::NotifyArgs,
    #[command(flatten)]
    evidence: EvidenceArgs,
}

#[derive(Args)]
struct SocArgs {
    /// SOC autonomy level of tenants without an override (L0 observe … L4 full). Unset: L1.
    #[arg(long, env = "AEGIS_SOC_AUTONOMY_LEVEL")]
    soc_autonomy_level: Option<AutonomyLevel>,
    /// deny_storm: denies within the window that open an incident.
    #[arg(long, env = "AEGIS_DENY_STORM_N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    deny_storm_n: u32,
    /// deny_storm: trailing window in seconds.
    #[arg(long, env = "AEGIS_DENY_STORM_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    deny_storm_window_secs: u64,
    /// runaway: decisions within the window that open an incident.
    #[arg(long, env = "AEGIS_RUNAWAY_N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
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
    #[command(flatten)]
    database: DatabaseArgs,
    /// Id of the tenant to create.
    #[arg(long, env = "AEGIS_TENANT")]
    tenant: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Init(args) => init(args).await,
            Command::Receipts(command) => receipts_command(command).await,
        }
    })
}

async fn receipts_command(command: ReceiptsCommand) -> anyhow::Result<()> {
    match command {
        ReceiptsCommand::Export { db, tenant } => {
            let store = SqliteStore::open_read_only(&db)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            receipts::export(&store, tenant.as_deref(), &mut out).await?;
            Ok(())
        }
        ReceiptsCommand::Verify {
            file,
            db,
            trusted_keys,
            generic,
        } => {
            let pins = receipts::parse_pins(&trusted_keys)?;
            let verdict = match (file, db) {
                (Some(file), _) if generic => receipts::verify_generic_file(&file)?,
                (Some(file), _) => receipts::verify_file(&file, &pins)?,
                (None, Some(db)) => {
                    receipts::verify_db(&SqliteStore::open_read_only(&db)?, &pins).await?
                }
                (None, None) => bail!("give an exported FILE or --db"),
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

fn open_store(args: &DatabaseArgs) -> anyhow::Result<Arc<SqliteStore>> {
    if args.db.starts_with("postgres://") || args.db.starts_with("postgresql://") {
        bail!(
            "AEGIS_DB names PostgreSQL, which this build does not support yet; use a SQLite file path"
        );
    }
    let db = PathBuf::from(&args.db);
    let key_file = args
        .signing_key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.signing-key", args.db)));
    let signer = signing_key::load_or_create(args.signing_key.as_deref(), &key_file)?;
    let store = SqliteStore::open(&db, Arc::new(signer))
        .with_context(|| format!("cannot open database {}", db.display()))?;
    Ok(Arc::new(store))
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    if let Err(reason) = TenantId::validate(&args.tenant) {
        bail!("--tenant {reason}");
    }
    let store = open_store(&args.database)?;
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
                args.database.db
            )
        }
        Err(error) => Err(error.into()),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = open_store(&args.database)?;
    let state = AppState::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Settings {
            max_body_bytes: args.max_body_bytes,
            env_autonomy: args.soc.soc_autonomy_level,
            webhook_allow_private: args.notify.webhook_allow_private,
            narrator: args.evidence.narrator(),
        },
    );

    // The SOC follows the event log beside the server; agents it contains are refreshed in
    // the server's directory at once.
    let directory_state = Arc::clone(&state);
    let consumer = Consumer::start(
        Arc::clone(&store) as Arc<dyn Store>,
        args.soc.config(),
        Arc::new(move |agent| directory_state.agents.update(agent)),
    )
    .await
    .context("cannot start the SOC consumer")?;
    let (stop_soc, soc_stopped) = tokio::sync::watch::channel(false);
    let soc = tokio::spawn(consumer.run(soc_stopped));
    // Notifications: a second consumer queues deliveries; the worker sends them. Neither
    // sits on the authorize path.
    let notifier = aegis_soc::notify::Notifier::start(
        Arc::clone(&store) as Arc<dyn Store>,
        args.notify.notify_config(args.soc.soc_autonomy_level),
    )
    .await
    .context("cannot start the notification consumer")?;
    let notifications = tokio::spawn(notifier.run(stop_soc.subscribe()));
    let deliveries = tokio::spawn(aegis_soc::deliver::run(
        Arc::clone(&store) as Arc<dyn Store>,
        args.notify.deliver_config(),
        stop_soc.subscribe(),
    ));
    let integrity = tokio::spawn(aegis_soc::integrity::run(
        Arc::clone(&store) as Arc<dyn Store>,
        Duration::from_secs(args.evidence.integrity_interval_secs),
        stop_soc.subscribe(),
    ));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, db = %args.database.db, "aegis gateway serving");

    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal());
    server.await.context("server error")?;
    let _ = stop_soc.send(true);
    if tokio::time::timeout(grace, integrity).await.is_err() {
        tracing::error!("the integrity check did not stop within the shutdown grace period");
    }
    if tokio::time::timeout(grace, soc).await.is_err() {
        tracing::error!("the SOC consumer did not stop within the shutdown grace period");
    }
    for (task, name) in [
        (notifications, "notification consumer"),
        (deliveries, "delivery worker"),
    ] {
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
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
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
