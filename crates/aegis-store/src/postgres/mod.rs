//! The PostgreSQL store, for running several `aegis serve` replicas on one database.
//!
//! Writes go through one writer task per process with group commit (`writer`); every
//! batch transaction of every replica serialises on the `log_head` row, which keeps event
//! seqs gap-free in commit order and receipt chains unforked. Reads use a connection pool.
//! Each replica learns of other replicas' commits by LISTEN on `writer::LOG_CHANNEL`, with
//! a poll of `log_head` as the bounded-staleness fallback (`follow_log_head`).
//! `PgStore::lead` elects the one replica that runs the SOC consumers, by a session-level
//! advisory lock.

mod archive;
mod decision_rows;
mod leader;
mod notify;
mod rows;
mod session;
mod soc;
mod tx;
mod writer;

pub use session::SessionBounds;

use crate::backend::Backend;
use crate::chain::{ChainAudit, ChainGuard, ChainWalk, SnapshotReads};
use crate::records;
use crate::schema::{DecisionListings, EventQueries, ReceiptQueries};
use crate::*;
use aegis_core::model::{AgentStatus, RiskTier};
use aegis_core::policy::PolicyDocument;
use aegis_core::receipt::ReceiptSigner;
use aegis_core::receipt::{ChainPoint, KeyRing};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use rows::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};
use tx::PgRead;
use tx::PgTx;
use writer::{Writer, WriterState};

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_evidence_cache.sql"),
    include_str!("../../migrations/postgres/0003_storms.sql"),
    include_str!("../../migrations/postgres/0004_sealed_webhook_secrets.sql"),
    include_str!("../../migrations/postgres/0005_decision.sql"),
    include_str!("../../migrations/postgres/0006_fence.sql"),
    include_str!("../../migrations/postgres/0007_decision_requests.sql"),
    include_str!("../../migrations/postgres/0008_console_sessions.sql"),
    include_str!("../../migrations/postgres/0009_approvals.sql"),
    include_str!("../../migrations/postgres/0010_mcp.sql"),
    include_str!("../../migrations/postgres/0011_rate_limits.sql"),
    include_str!("../../migrations/postgres/0012_chain_cuts.sql"),
    include_str!("../../migrations/postgres/0013_mcp_resource_argument.sql"),
    include_str!("../../migrations/postgres/0014_deny_index.sql"),
    include_str!("../../migrations/postgres/0015_coalesce_from_seq.sql"),
    include_str!("../../migrations/postgres/0016_receipt_from_decision.sql"),
    include_str!("../../migrations/postgres/0017_decision_event_from_decision.sql"),
    include_str!("../../migrations/postgres/0018_evidence_by_event.sql"),
    include_str!("../../migrations/postgres/0019_checkpoint_batches.sql"),
    include_str!("../../migrations/postgres/0020_decisions_through_events.sql"),
];

/// Advisory lock keys (one namespace for the whole database).
const MIGRATION_LOCK: i64 = 0x4145_4749_5301;
const LEADER_LOCK: i64 = 0x4145_4749_5302;

/// Pooled read connections per replica.
const READ_POOL_SIZE: usize = 16;
/// How often a replica re-reads `log_head` in case a notification was missed.
const LOG_HEAD_POLL: Duration = Duration::from_millis(500);
/// How often a leader checks that its lock connection is alive, and a follower retries.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match error.code() {
            Some(code)
                if *code == SqlState::UNIQUE_VIOLATION
                    || *code == SqlState::FOREIGN_KEY_VIOLATION
                    || *code == SqlState::CHECK_VIOLATION =>
            {
                StoreError::Conflict(error.to_string())
            }
            _ => StoreError::Unavailable(postgres_message(&error)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(format!("no database connection: {error}"))
    }
}

/// The server's message when there is one (tokio-postgres' Display says only "db error").
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// A statement from the connection's cache (prepared on first use).
pub(crate) async fn prepared<C: GenericClient>(client: &C, sql: &str) -> StoreResult<Statement> {
    Ok(client.prepare_cached(sql).await?)
}

/// One event to append, as [`WriterState::append_event`] takes it.
pub(crate) struct NewEventRow<'a> {
    pub tenant_id: &'a str,
    pub kind: &'a str,
    pub agent_id: Option<&'a str>,
    pub subject_id: Option<&'a str>,
    pub payload: &'a serde_json::Value,
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    config: tokio_postgres::Config,
    pool: Pool,
    /// `None` for a store opened read-only (offline verification).
    writer: Option<Writer>,
    /// Seals and opens webhook secrets; `None` when read-only.
    secrets: Option<SecretsKey>,
    commits: watch::Receiver<i64>,
    guard: Arc<ChainGuard>,
    bounds: SessionBounds,
    /// The fencing token of this process's leadership ([`leader`]).
    epoch: leader::LeaderEpoch,
}

fn parse_config(url: &str) -> StoreResult<tokio_postgres::Config> {
    url.parse()
        .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))
}

fn connection_pool(config: &tokio_postgres::Config, size: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot build the connection pool: {e}")))
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), applies migrations, starts the writer and the
    /// log-head follower. `signer` signs the receipt checkpoints of this replica.
    /// `secrets` seals webhook secrets; every replica must have the same one.
    pub async fn connect(
        url: &str,
        signer: Arc<ReceiptSigner>,
        secrets: SecretsKey,
    ) -> StoreResult<Self> {
        Self::connect_bounded(url, signer, secrets, SessionBounds::default()).await
    }

    /// As [`PgStore::connect`], with the writer's and the leader's sessions bounded by
    /// `bounds` (`session`).
    pub async fn connect_bounded(
        url: &str,
        signer: Arc<ReceiptSigner>,
        secrets: SecretsKey,
        bounds: SessionBounds,
    ) -> StoreResult<Self> {
        Self::connect_with(url, Some(signer), Some(secrets), bounds).await
    }

    /// Connects for the operator commands that add tenants and keys: no signing key and no
    /// secrets key, so nothing is registered and no key file is needed; a write that would
    /// sign a receipt checkpoint or seal a webhook secret fails.
    pub async fn connect_unsigned(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, None, None, SessionBounds::default()).await
    }

    async fn connect_with(
        url: &str,
        signer: Option<Arc<ReceiptSigner>>,
        secrets: Option<SecretsKey>,
        bounds: SessionBounds,
    ) -> StoreResult<Self> {
        let config = parse_config(url)?;
        let pool = connection_pool(
            &session::config_for(&config, session::Role::Reader, &bounds),
            READ_POOL_SIZE,
        )?;
        apply_migrations(&pool).await?;
        if let Some(secrets) = &secrets {
            let sealed = notify::seal_plain_secrets(&pool, secrets).await?;
            if sealed > 0 {
                tracing::info!(
                    sealed,
                    "sealed webhook secrets that were stored in plain text"
                );
            }
        }
        let head = log_head(&pool).await?;
        let (publish, commits) = watch::channel(head);
        let guard = Arc::new(ChainGuard::default());
        let writer = Writer::start(
            connection_pool(
                &session::config_for(&config, session::Role::Writer, &bounds),
                1,
            )?,
            writer::LockWait(bounds.lock_wait),
            signer,
            Arc::clone(&guard),
            now_ms,
            publish.clone(),
        )
        .await?;
        tokio::spawn(follow_log_head(
            session::config_for(&config, session::Role::Listener, &bounds),
            pool.clone(),
            publish,
        ));
        Ok(PgStore {
            config,
            pool,
            writer: Some(writer),
            secrets,
            commits,
            guard,
            bounds,
            epoch: leader::LeaderEpoch::default(),
        })
    }

    /// Connects for reading only: no writer, no migrations. Every write answers
    /// `Unavailable`.
    pub async fn connect_read_only(url: &str) -> StoreResult<Self> {
        let config = parse_config(url)?;
        let pool = connection_pool(&config, 2)?;
        let stored: i64 = pool
            .get()
            .await?
            .query_one(crate::schema::SCHEMA_VERSION_SQL, &[])
            .await?
            .try_get(0)?;
        crate::schema::readable_schema(stored, MIGRATIONS.len())?;
        let (_, commits) = watch::channel(log_head(&pool).await?);
        Ok(PgStore {
            config,
            pool,
            writer: None,
            secrets: None,
            commits,
            guard: Arc::default(),
            bounds: SessionBounds::default(),
            epoch: leader::LeaderEpoch::default(),
        })
    }

    fn writer(&self) -> StoreResult<&Writer> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the database was opened read-only".into()))
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.pool.get().await?;
        let statement = prepared(&client, sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        let client = self.pool.get().await?;
        let statement = prepared(&client, sql).await?;
        Ok(client.query_opt(&statement, params).await?)
    }

    async fn query_map<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.query(sql, params)
            .await?
            .iter()
            .map(|row| read(row))
            .collect()
    }
}

use crate::schema::StoredRow;
use tokio_postgres::Row;

async fn apply_migrations(pool: &Pool) -> StoreResult<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Replicas starting together: one migrates, the others wait and then find it done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let current: i64 = tx
        .query_one(crate::schema::SCHEMA_VERSION_SQL, &[])
        .await?
        .try_get(0)?;
    if current > MIGRATIONS.len() as i64 {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(index as i64 + 1), &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn log_head(pool: &Pool) -> StoreResult<i64> {
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT seq FROM log_head", &[])
        .await?
        .try_get(0)?)
}

/// Keeps `publish` at the cluster's log head: woken by NOTIFY from any replica's writer,
/// and re-reading `log_head` every [`LOG_HEAD_POLL`] so a lost notification or a broken
/// LISTEN connection delays a follower by at most that long.
async fn follow_log_head(config: tokio_postgres::Config, pool: Pool, publish: watch::Sender<i64>) {
    let advance = |head: i64| {
        publish.send_if_modified(|current| {
            let newer = head > *current;
            if newer {
                *current = head;
            }
            newer
        });
    };
    let (notified_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let listener = tokio::spawn(listen_for_commits(config, notified_tx));
    let mut poll = tokio::time::interval(LOG_HEAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = publish.closed() => break,
            Some(head) = notified.recv() => advance(head),
            _ = poll.tick() => match log_head(&pool).await {
                Ok(head) => advance(head),
                Err(error) => tracing::warn!(%error, "cannot read the log head"),
            },
        }
    }
    listener.abort();
}

/// LISTENs on the log channel, reconnecting after a failure; sends each announced head.
async fn listen_for_commits(
    config: tokio_postgres::Config,
    heads: tokio::sync::mpsc::UnboundedSender<i64>,
) {
    use futures_util::StreamExt;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {}", writer::LOG_CHANNEL);
                let listen = client.batch_execute(&statement);
                // The connection must be polled for LISTEN to complete.
                let mut listen = std::pin::pin!(listen);
                let listening = loop {
                    tokio::select! {
                        result = &mut listen => break result,
                        message = messages.next() => if message.is_none() { break Ok(()) },
                    }
                };
                if let Err(error) = listening {
                    tracing::warn!(error = %postgres_message(&error), "LISTEN failed");
                } else {
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                                if let Ok(head) = note.payload().parse()
                                    && heads.send(head).is_err()
                                {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(error = %postgres_message(&error), "LISTEN connection failed");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %postgres_message(&error), "cannot open the LISTEN connection")
            }
        }
        if heads.is_closed() {
            return;
        }
        tokio::time::sleep(LOG_HEAD_POLL).await;
    }
}

/// One attempt at the leader lock: a session-level advisory lock on a connection of its
/// own, so it is released the moment the session ends — also when the process is killed
/// (the server sees the socket close). A heartbeat on that connection reports the loss when
/// the database or the network goes away.
///
/// The session is bounded ([`session`]): if this process is cut off rather than killed, the
/// server learns of it from TCP keepalives, about 11 s instead of the system's default of
/// hours, before the session and its lock end and another replica may lead. Holding the
/// lock, it takes the next leadership epoch ([`leader`]), which fences the consumers'
/// commits.
async fn try_lead(
    config: &tokio_postgres::Config,
    epoch: &leader::LeaderEpoch,
) -> StoreResult<Option<Leadership>> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        driver.abort();
        return Ok(None);
    }
    let held_epoch = epoch.take(&client).await?;
    let (report, lost) = watch::channel(false);
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
        loop {
            tick.tick().await;
            let alive =
                tokio::time::timeout(LEADERSHIP_CHECK * 3, client.simple_query("SELECT 1")).await;
            if !matches!(alive, Ok(Ok(_))) || driver.is_finished() {
                tracing::error!("lost the connection that holds the SOC leadership");
                let _ = report.send(true);
                driver.abort();
                return;
            }
        }
    });
    /// Gives the lock and the epoch up when dropped: ending the task drops the client and
    /// its session.
    struct Release(tokio::task::JoinHandle<()>, leader::LeaderEpoch, i64);
    impl Drop for Release {
        fn drop(&mut self) {
            self.1.release(self.2);
            self.0.abort();
        }
    }
    Ok(Some(Leadership::held_by(
        Box::new(Release(heartbeat, epoch.clone(), held_epoch)),
        lost,
    )))
}

/// [`WriterState::append_event`] with the SQLite store's argument list, so both stores'
/// write paths read alike.
async fn append_event(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &mut WriterState,
    tenant_id: &str,
    kind: &str,
    agent_id: Option<&str>,
    subject_id: Option<&str>,
    payload: &serde_json::Value,
) -> StoreResult<i64> {
    state
        .append_event(
            tx,
            NewEventRow {
                tenant_id,
                kind,
                agent_id,
                subject_id,
                payload,
            },
        )
        .await
}

pub(crate) async fn load_agent<C: GenericClient>(
    client: &C,
    tenant_id: &str,
    agent_id: &str,
) -> StoreResult<Agent> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"),
            )
            .await?,
            &[&tenant_id, &agent_id],
        )
        .await?
        .ok_or(StoreError::NotFound("agent"))?;
    crate::rows::agent(&row)
}

/// Gathers decision, event and receipt for the batch's multi-row insert
/// ([`decision_rows`]); a deny first steps the risk tier up when it reaches the tenant's
/// threshold. Runs inside the writer's transaction.
async fn record_decision_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &mut WriterState,
    mut d: NewDecision,
    receipt: records::ReceiptDraft,
) -> StoreResult<RecordedDecision> {
    // First, before anything is written: a refused chain fails this decision alone.
    let head = state.chain_head(tx, d.tenant_id.as_str()).await?;
    let stored = state
        .agent_version(tx, d.tenant_id.as_str(), &d.agent_id)
        .await?;
    let stale_agent = crate::fence::fence_stale_agent(&mut d, stored);
    if let Some(request_id) = crate::requests::replay_key(&d) {
        // A retry is answered with what its first call recorded (`crate::requests`); a first
        // call earlier in this batch must be in the tables to be found.
        if state
            .decisions
            .holds_request(d.tenant_id.as_str(), &d.agent_id, request_id)
        {
            state.decisions.flush(tx).await?;
        }
        let prior = tx
            .query_opt(
                &prepared(tx, &crate::requests::PRIOR_DECISION_SQL).await?,
                &[&d.tenant_id.as_str(), &d.agent_id, &request_id],
            )
            .await?;
        if let Some(row) = prior {
            let prior = crate::requests::PriorRow::read(&row)?;
            let approval = match prior.approval_id()? {
                Some(id) => {
                    let mut rows = PgRead { client: tx };
                    crate::approvals::load(&mut rows, d.tenant_id.as_str(), &id, d.created_at_ms)
                        .await?
                }
                None => None,
            };
            return prior.answer(&d, approval);
        }
    }
    crate::approvals::gate(&mut PgTx { tx, state }, &mut d).await?;
    let event_seq = state.reserve_event_seq();
    let receipt = records::seal_receipt(&d, receipt, head.seq, &head.hash)?;
    let recorded = RecordedDecision {
        event_seq,
        receipt_id: receipt.body.id.clone(),
        receipt_seq: receipt.body.seq,
        receipt_hash: receipt.hash.clone(),
        prev_hash: receipt.body.prev_hash.clone(),
        escalated_to: None,
        stale_agent,
        approval: records::approval_answer(&d).cloned(),
        verdict: d.verdict,
        reason: d.reason.clone(),
        matched_policies: d.matched_policies.clone(),
        replayed: None,
    };
    state.extend_chain(
        d.tenant_id.as_str(),
        ChainPoint {
            seq: receipt.body.seq,
            hash: receipt.hash.clone(),
        },
    );
    let escalated_to = if records::counts_towards_escalation(&d) {
        escalate_if_due(tx, state, &d).await?
    } else {
        None
    };
    state.decisions.push(event_seq, d, receipt);
    Ok(RecordedDecision {
        escalated_to,
        ..recorded
    })
}

/// Steps the agent's tier up when deny `d` (not yet written) brings it there
/// ([`records::escalation_due`]) and logs the change.
async fn escalate_if_due(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &mut WriterState,
    d: &NewDecision,
) -> StoreResult<Option<RiskTier>> {
    let (agent, window_start, enough) = records::earlier_denies_params(d);
    let row = tx
        .query_one(
            &prepared(tx, crate::schema::TIER_AND_EARLIER_DENIES_SQL).await?,
            &[&agent, &window_start, &enough],
        )
        .await?;
    // The batch's earlier denies are still held back: counted as the table would count them.
    // The sum may pass `enough` where the query stops at it; the rule only asks whether the
    // count reaches it.
    let earlier = get::<i64>(&row, 1)? + state.decisions.earlier_denies(d, get::<i64>(&row, 2)?);
    let Some((tier, next)) = records::escalation_due(d, &get::<String>(&row, 0)?, earlier)? else {
        return Ok(None);
    };
    let change_seq = append_event(
        tx,
        state,
        d.tenant_id.as_str(),
        event_kind::AGENT_RISK_TIER_CHANGED,
        Some(&d.agent_id),
        Some(&d.id),
        &records::escalation_event(d, tier, next),
    )
    .await?;
    tx.execute(
        &prepared(
            tx,
            "UPDATE agents SET risk_tier = $1, risk_tier_changed_seq = $2, updated_at = $3 WHERE id = $4",
        )
        .await?,
        &[&next.as_str(), &change_seq, &d.created_at_ms, &d.agent_id],
    )
    .await?;
    state.agents_may_have_changed();
    Ok(Some(next))
}

/// The PostgreSQL driver under the roles written once (`crate::backend`).
impl Backend for PgStore {
    type Tx<'t> = PgTx<'t>;
    type Read<'r> = PgRead<'r, deadpool_postgres::Client>;

    const ORDINAL: &'static str = "ordinal";
    const AGENT_COLUMNS: &'static str = rows::AGENT_COLUMNS;
    const FAIL_DELIVERY_BY_ORDINAL: &'static str = notify::FAIL_DELIVERY_BY_ORDINAL;

    async fn run_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut PgTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.write_rule(None, rule).await
    }

    async fn run_leader_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut PgTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.write_rule(Some(self.epoch.clone()), rule).await
    }

    async fn run_read<T, R>(&self, read: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'r> FnOnce(
                &'r mut PgRead<'r, deadpool_postgres::Client>,
            ) -> BoxFuture<'r, StoreResult<T>>
            + Send
            + 'static,
    {
        let client = self.pool.get().await?;
        read(&mut PgRead { client: &client }).await
    }

    async fn claim_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> StoreResult<crate::records::ClaimedDeliveries> {
        let client = self.pool.get().await?;
        notify::claim_deliveries(&client, &claim).await
    }

    fn json_elements(param: &str) -> String {
        format!(
            "jsonb_array_elements_text(CAST(CAST({param} AS TEXT) AS jsonb)) AS elements(value)"
        )
    }

    fn event_queries() -> &'static EventQueries {
        &EVENT_SQL
    }

    fn receipt_queries() -> &'static ReceiptQueries {
        &RECEIPT_SQL
    }

    fn decision_listings() -> &'static DecisionListings {
        &DECISION_LISTINGS
    }

    async fn wait_for_lead(&self) -> StoreResult<Leadership> {
        loop {
            let config = session::config_for(&self.config, session::Role::Leader, &self.bounds);
            match try_lead(&config, &self.epoch).await {
                Ok(Some(leadership)) => return Ok(leadership),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot contend for leadership"),
            }
            tokio::time::sleep(LEADERSHIP_CHECK).await;
        }
    }

    fn commits(&self) -> watch::Receiver<i64> {
        self.commits.clone()
    }

    async fn audit_in_snapshot(
        &self,
        tenant: &TenantId,
        walk: ChainWalk,
        keys: &KeyRing,
    ) -> StoreResult<ChainAudit> {
        let mut client = self.pool.get().await?;
        // One snapshot for every query of the walk.
        let snapshot = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut reads = SnapshotReads {
            rows: &mut PgRead { client: &snapshot },
            tenant: tenant.as_str(),
            queries: &RECEIPT_SQL,
        };
        let audit = crate::chain::audit(&mut reads, &walk, keys).await?;
        snapshot.commit().await?;
        Ok(audit)
    }

    fn chain_guard(&self) -> &ChainGuard {
        &self.guard
    }

    async fn forget_chain_head(&self, _tenant: &TenantId) -> StoreResult<()> {
        // Every batch reads the heads it extends through the guard: nothing is kept.
        Ok(())
    }

    fn secrets(&self) -> Option<&SecretsKey> {
        self.secrets.as_ref()
    }
}

#[async_trait]
impl ActionPlaneStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    async fn flush(&self) -> StoreResult<()> {
        self.writer()?
            .write(|_, _| Box::pin(async { Ok(()) }))
            .await
    }

    async fn check_commit(&self) -> StoreResult<()> {
        // Every batch, even an empty one, first locks `log_head` FOR UPDATE: a write, refused
        // by a read-only database, and waiting while another session holds the cluster's
        // write order.
        self.flush().await
    }

    async fn agent_by_token_hash(
        &self,
        secret_hash: SecretHash,
    ) -> StoreResult<Option<TokenOwner>> {
        let client = self.pool.get().await?;
        let token = client
            .query_opt(
                &prepared(
                    &client,
                    "SELECT tenant_id, agent_id, retired_at, secret_hash FROM agent_tokens WHERE secret_hash = $1",
                )
                .await?,
                &[&&secret_hash[..]],
            )
            .await?;
        let Some(row) = token else {
            return Ok(None);
        };
        let stored: Vec<u8> = get(&row, 3)?;
        if !constant_time_eq(&stored, &secret_hash) {
            return Ok(None);
        }
        let tenant_id: String = get(&row, 0)?;
        let agent_id: String = get(&row, 1)?;
        let retired_at: Option<i64> = get(&row, 2)?;
        let agent = load_agent(&client, &tenant_id, &agent_id).await?;
        if retired_at.is_some() || agent.status == AgentStatus::Revoked {
            return Ok(Some(TokenOwner::Dead {
                tenant_id: TenantId::new(tenant_id),
                agent_id,
            }));
        }
        Ok(Some(TokenOwner::Current(agent)))
    }

    async fn tool_actions(&self, tenant: &TenantId) -> StoreResult<Vec<RegisteredToolAction>> {
        self.query_map(
            "SELECT tool, action, mutates_state, risk, egress, sensitive FROM tool_actions WHERE tenant_id = $1 ORDER BY tool, action",
            &[&tenant.as_str()],
            crate::rows::tool_action,
        )
        .await
    }

    async fn policies(&self, tenant: &TenantId) -> StoreResult<Vec<PolicyDocument>> {
        self.query_map(
            "SELECT id, text FROM policies WHERE tenant_id = $1 ORDER BY id",
            &[&tenant.as_str()],
            crate::rows::policy,
        )
        .await
    }

    async fn record_decision(&self, decision: NewDecision) -> StoreResult<RecordedDecision> {
        let receipt = records::draft_receipt(&decision)?;
        // Recording a decision fails only when the database does; no savepoint needed.
        let decision_of = (
            decision.tenant_id.as_str().to_owned(),
            decision.agent_id.clone(),
        );
        self.writer()?
            .write_decision(decision_of, move |tx, state| {
                Box::pin(async move { record_decision_tx(tx, state, decision, receipt).await })
            })
            .await
    }
}
