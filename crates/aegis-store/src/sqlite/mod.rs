//! The embedded SQLite store: WAL mode, `synchronous=FULL`, one writer thread with group
//! commit (`writer`), and a small pool of read-only connections for queries.

mod archive;
mod migrations;
pub(crate) mod notify;
pub(crate) mod rows;
pub(crate) mod soc;
mod tx;
mod writer;

use crate::backend::Backend;
use crate::chain::{ChainAudit, ChainGuard, ChainWalk, SnapshotReads};
use crate::records;
use crate::schema::*;
use crate::schema::{DecisionListings, EventQueries, ReceiptQueries};
use crate::*;
use aegis_core::model::{AgentStatus, RiskTier};
use aegis_core::policy::PolicyDocument;
use aegis_core::receipt::ReceiptSigner;
use aegis_core::receipt::{ChainPoint, KeyRing};
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rows::*;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use tokio::sync::watch;
use tx::SqliteConn;
use writer::{Writer, WriterState};

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The page cache of each read connection, in KiB (SQLite's `cache_size` takes KiB as a
/// negative number).
const READER_CACHE_KIB: i64 = 256;

/// The WAL size, in pages, at which a commit copies the WAL into the database file (SQLite's
/// `wal_autocheckpoint`; its default is 1,000). A checkpoint writes each page once however
/// many commits changed it since the last one, and under load spread over many tenants every
/// commit batch changes a leaf page of each tenant's events, decisions and receipts: at the
/// default the writer copied the same pages again every few batches, 12 % of the gateway's
/// CPU with 100 tenants (`docs/performance.md`, *The WAL copied less often*). At 4,000 pages
/// (16 MiB of 4 KiB pages) that fell to 7 %. Durability is the commit's fsync of the WAL
/// either way. Under load the WAL grows well past either threshold (a checkpoint copies only
/// what no reader still needs), so this does not bound what a start after a crash reads.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4_000;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => {
                StoreError::Conflict(error.to_string())
            }
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// `None` for a store opened read-only (offline verification).
    writer: Option<Writer>,
    /// Seals and opens webhook secrets; `None` when read-only.
    secrets: Option<SecretsKey>,
    readers: Arc<Mutex<Vec<Connection>>>,
    commits: watch::Receiver<i64>,
    guard: Arc<ChainGuard>,
}

impl SqliteStore {
    /// Opens (creating if needed, readable by its owner only) the database at `path`,
    /// applies migrations, seals webhook secrets still stored in plain text and starts the
    /// writer thread. `signer` signs the receipt checkpoints; `secrets` seals webhook secrets.
    pub fn open(path: &Path, signer: Arc<ReceiptSigner>, secrets: SecretsKey) -> StoreResult<Self> {
        Self::open_with(path, Some(signer), Some(secrets))
    }

    /// Opens (creating if needed) for the operator commands that add tenants and keys: no
    /// signing key and no secrets key, so nothing is registered and no key file is needed;
    /// a write that would sign a receipt checkpoint or seal a webhook secret fails.
    pub fn open_unsigned(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, None, None)
    }

    fn open_with(
        path: &Path,
        signer: Option<Arc<ReceiptSigner>>,
        secrets: Option<SecretsKey>,
    ) -> StoreResult<Self> {
        let conn = open_writer_connection(path)?;
        if let Some(secrets) = &secrets {
            let sealed = notify::seal_plain_secrets(&conn, secrets)?;
            if sealed > 0 {
                tracing::info!(
                    sealed,
                    "sealed webhook secrets that were stored in plain text"
                );
            }
        }
        let (publish, commits) = watch::channel(0);
        let guard = Arc::new(ChainGuard::default());
        let writer = Writer::start(conn, signer, Arc::clone(&guard), now_ms, publish)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Some(writer),
            secrets,
            readers: Arc::new(Mutex::new(Vec::new())),
            commits,
            guard,
        })
    }

    /// Opens an existing database for reading only: no writer, no signing key, no
    /// migrations. Every write answers `Unavailable`.
    pub fn open_read_only(path: &Path) -> StoreResult<Self> {
        if !path.exists() {
            return Err(StoreError::Unavailable(format!(
                "no database at {}",
                path.display()
            )));
        }
        let probe = open_reader_connection(path)?;
        let stored: i64 = probe.query_row(SCHEMA_VERSION_SQL, [], |row| row.get(0))?;
        readable_schema(stored, migrations::OLDEST_READABLE)?;
        let (_, commits) = watch::channel(writer::highest_event_seq(&probe)?);
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: None,
            secrets: None,
            readers: Arc::new(Mutex::new(vec![probe])),
            commits,
            guard: Arc::default(),
        })
    }

    fn writer(&self) -> StoreResult<&Writer> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the database was opened read-only".into()))
    }

    /// Runs a query on a pooled read-only connection, off the async runtime.
    async fn read<T, F>(&self, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_reader_connection(&path)?,
            };
            let result = query(&mut conn);
            // A connection left inside a transaction (a snapshot whose end failed) would
            // serve that old snapshot to every later read: it is dropped, not pooled.
            let mut idle = readers.lock();
            if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

fn open_writer_connection(path: &Path) -> StoreResult<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    restrict_to_owner(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL lets readers run beside the writer; FULL makes every commit durable.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A job that takes a savepoint in the writer's batch (a SOC batch joining a storm's
    // evidence, say) has SQLite copy each page it changes into a sub-journal, which spills
    // to a temporary file past 64 KiB: write calls on the writer thread for data that is
    // never read unless the job fails. In memory, it is bounded by what one batch changes.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    plan_each_statement_once(&conn)?;
    migrations::apply(&mut conn)?;
    Ok(conn)
}

/// The database holds every tenant's records and the (sealed) webhook secrets: it is created
/// mode 0600 before SQLite opens it (whatever the umask), and an existing database, WAL or
/// shared-memory file readable by others is tightened. SQLite gives the `-wal` and `-shm`
/// files it creates the database file's permissions.
#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot restrict {} to its owner: {e}",
            what.display()
        ))
    };
    let owner_only = std::fs::Permissions::from_mode(0o600);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => std::fs::set_permissions(path, owner_only.clone()).map_err(|e| fail(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(path, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        let Ok(metadata) = std::fs::metadata(file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, owner_only.clone()).map_err(|e| fail(file, e))?;
            tracing::warn!(path = %file.display(), was = format!("{mode:o}"), "the database file was readable by others; restricted it to mode 600");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> StoreResult<()> {
    Ok(())
}

fn open_reader_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Each connection keeps its own page cache (2,000 KiB by default), and the pool keeps up
    // to MAX_IDLE_READERS of them: at the default they held most of the process's memory
    // once a database outgrew them. The reads here touch recent pages or walk a range once,
    // which the OS page cache serves as well.
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    plan_each_statement_once(&conn)?;
    Ok(conn)
}

/// Keeps up to 64 prepared statements per connection and holds each to the plan it was
/// prepared with. Without the query planner stability guarantee, SQLite plans a statement
/// around the values bound to some parameters (a `LIMIT $n`, for one) and prepares it again,
/// parsing its SQL, each time a new value is bound to them: every escalation count of a
/// deny, every read of the log after a cursor. Every query here has one right plan whatever
/// the values (the indexes are chosen for them; there are no statistics tables).
fn plan_each_statement_once(conn: &Connection) -> StoreResult<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Appends an event; it gets the next seq. Its time is the writer's clock now, but never
/// earlier than the event before it: event times never run backwards in seq order (the SOC's
/// windows rely on it), even if the clock steps back. Runs only in the writer's transaction,
/// which holds the database's write lock, so "the event before it" is final.
pub(crate) fn append_event(
    conn: &Connection,
    tenant_id: &str,
    kind: &str,
    agent_id: Option<&str>,
    subject_id: Option<&str>,
    payload: &serde_json::Value,
) -> StoreResult<i64> {
    insert_event(
        conn,
        tenant_id,
        kind,
        agent_id,
        subject_id,
        &payload.to_string(),
    )
}

/// [`append_event`] with the payload as stored: `""` for a decision's event, whose payload
/// and subject are rebuilt from its decision row (`records::StoredEvent`).
fn insert_event(
    conn: &Connection,
    tenant_id: &str,
    kind: &str,
    agent_id: Option<&str>,
    subject_id: Option<&str>,
    payload: &str,
) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO events (tenant_id, kind, agent_id, subject_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5,
                 MAX(?6, COALESCE((SELECT created_at FROM events ORDER BY seq DESC LIMIT 1), 0)))",
    )?
    .execute(params![
        tenant_id,
        kind,
        agent_id,
        subject_id,
        payload,
        now_ms()
    ])?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn load_agent(conn: &Connection, tenant_id: &str, agent_id: &str) -> StoreResult<Agent> {
    read_opt(
        conn,
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = ?1 AND id = ?2"),
        [tenant_id, agent_id],
        crate::rows::agent,
    )?
    .ok_or(StoreError::NotFound("agent"))
}

/// A decision's row. The table's CHECK costs three comparisons since migration 24
/// (`a_decisions_insert_builds_no_ephemeral_table`).
const DECISION_INSERT: &str = "INSERT INTO decisions (id, tenant_id, event_seq, agent_id,
        request_id, tool, action, resource, mutates_state, risk, source_trust, decision,
        risk_score, reason, matched_policies, action_hash, run_id, trace_id, parent_run_id,
        receipt_id, created_at, contained, receipt_approval, tool_definition_hash, egress,
        sensitive, approval_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
        ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)";

/// Inserts decision, event and receipt, the receipt extending `head`; steps the risk tier
/// up when a deny reaches the tenant's threshold. Runs inside the writer's transaction.
fn record_decision_tx(
    conn: &Connection,
    state: &mut WriterState,
    head: ChainPoint,
    d: &NewDecision,
    receipt: records::ReceiptDraft,
) -> StoreResult<RecordedDecision> {
    let tenant_id = d.tenant_id.as_str();
    let receipt = records::seal_receipt(d, receipt, head.seq, &head.hash)?;
    let receipt_id = receipt.body.id.clone();
    let receipt_approval = records::receipt_approval_column(&receipt)?;
    let escalation = if records::counts_towards_escalation(d) {
        escalation_due(conn, d)?
    } else {
        None
    };
    let event_seq = insert_event(
        conn,
        tenant_id,
        event_kind::DECISION,
        Some(&d.agent_id),
        None,
        "",
    )?;

    conn.prepare_cached(DECISION_INSERT)?.execute(params![
        d.id,
        tenant_id,
        event_seq,
        d.agent_id,
        d.request_id,
        d.tool,
        d.action,
        d.resource,
        d.mutates_state,
        d.risk.as_str(),
        d.source_trust.as_str(),
        d.verdict.as_str(),
        d.risk_score,
        d.reason,
        serde_json::to_string(&d.matched_policies).unwrap_or_else(|_| "[]".into()),
        d.action_hash,
        d.trace.run_id,
        d.trace.trace_id,
        d.trace.parent_run_id,
        receipt_id,
        d.created_at_ms,
        d.contained,
        receipt_approval,
        receipt.body.tool_definition_hash,
        d.egress,
        d.sensitive,
        records::met_approval_id(d),
    ])?;
    // The body is rebuilt from the decision row and `prev_hash` is the hash of the receipt
    // before when read (`records::StoredReceipt`, `schema::RECEIPT_PREV_HASH`).
    conn.prepare_cached(
        "INSERT INTO receipts (id, tenant_id, seq, decision_id, body, hash)
         VALUES (?1, ?2, ?3, ?4, '', ?5)",
    )?
    .execute(params![
        receipt_id,
        tenant_id,
        receipt.body.seq as i64,
        d.id,
        receipt.hash,
    ])?;

    let escalated_to = escalation
        .map(|change| escalate(conn, d, change))
        .transpose()?;

    state.extend_chain(
        tenant_id,
        ChainPoint {
            seq: receipt.body.seq,
            hash: receipt.hash.clone(),
        },
    );
    Ok(RecordedDecision {
        event_seq,
        receipt_id,
        receipt_seq: receipt.body.seq,
        receipt_hash: receipt.hash,
        prev_hash: receipt.body.prev_hash,
        escalated_to,
        stale_agent: None,
        approval: records::approval_answer(d).cloned(),
        verdict: d.verdict,
        reason: d.reason.clone(),
        matched_policies: d.matched_policies.clone(),
        replayed: None,
    })
}

/// [`record_decision_tx`] behind the freshness fence ([`crate::fence`]): the agent's version
/// is read in the writer's transaction, which orders the log.
fn record_fenced_decision_tx(
    conn: &mut Connection,
    state: &mut WriterState,
    mut d: NewDecision,
    receipt: records::ReceiptDraft,
) -> StoreResult<RecordedDecision> {
    // Everything that can refuse the decision comes before its first write, so that a
    // refusal (a broken chain, a reused request id) fails this decision alone
    // (`Containment::Batch`).
    let head = state.chain_head(conn, d.tenant_id.as_str())?;
    let stored: Option<i64> = conn
        .prepare_cached("SELECT version FROM agents WHERE tenant_id = ?1 AND id = ?2")?
        .query_row([d.tenant_id.as_str(), &d.agent_id], |row| row.get(0))
        .optional()?;
    let stale_agent = crate::fence::fence_stale_agent(&mut d, stored);
    let Some(request_id) = crate::requests::replay_key(&d) else {
        SqliteConn::run(conn, async |tx| crate::approvals::gate(tx, &mut d).await)?;
        return Ok(RecordedDecision {
            stale_agent,
            ..record_decision_tx(conn, state, head, &d, receipt)?
        });
    };
    // A retry is answered with what its first call recorded (`crate::requests`), before
    // any approval is created or used: the retry is the same call, already decided.
    let key = [
        d.tenant_id.as_str().to_owned(),
        d.agent_id.clone(),
        request_id.to_owned(),
    ];
    let prior = read_rows(
        conn,
        &crate::requests::PRIOR_DECISION_SQL,
        [&key[0], &key[1], &key[2]],
        |row| crate::requests::PriorRow::read(row),
    )?
    .pop();
    if let Some(prior) = prior {
        let approval = match prior.approval_id()? {
            Some(id) => SqliteConn::run(conn, async |rows| {
                crate::approvals::load(rows, d.tenant_id.as_str(), &id, d.created_at_ms).await
            })?,
            None => None,
        };
        return prior.answer(&d, approval);
    }
    SqliteConn::run(conn, async |tx| crate::approvals::gate(tx, &mut d).await)?;
    let recorded = record_decision_tx(conn, state, head, &d, receipt)?;
    conn.prepare_cached(crate::requests::REMEMBER_SQL)?
        .execute([&key[0], &key[1], &key[2], &d.id])?;
    Ok(RecordedDecision {
        stale_agent,
        ..recorded
    })
}

/// [`crate::schema::TIER_AND_EARLIER_DENIES_SQL`] in SQLite's numbered placeholders.
static TIER_AND_EARLIER_DENIES: LazyLock<String> =
    LazyLock::new(|| numbered_placeholders(crate::schema::TIER_AND_EARLIER_DENIES_SQL));

/// PostgreSQL's `$N` placeholders spelled as SQLite's `?N`, so that one SQL text serves both
/// stores whatever order its placeholders appear in (SQLite numbers `$N` by appearance).
pub(super) fn numbered_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The tier change a deny brings ([`records::escalation_due`]), read before it is stored.
fn escalation_due(conn: &Connection, d: &NewDecision) -> StoreResult<Option<(RiskTier, RiskTier)>> {
    let (agent, window_start, enough) = records::earlier_denies_params(d);
    let (tier, earlier): (String, i64) = conn
        .prepare_cached(&TIER_AND_EARLIER_DENIES)?
        .query_row(params![agent, window_start, enough], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    records::escalation_due(d, &tier, earlier)
}

/// Steps the agent's tier from `tier` to `next` after decision `d` and logs the change; the
/// change's own seq marks where escalation counting restarts.
fn escalate(
    conn: &Connection,
    d: &NewDecision,
    (tier, next): (RiskTier, RiskTier),
) -> StoreResult<RiskTier> {
    let change_seq = append_event(
        conn,
        d.tenant_id.as_str(),
        event_kind::AGENT_RISK_TIER_CHANGED,
        Some(&d.agent_id),
        Some(&d.id),
        &records::escalation_event(d, tier, next),
    )?;
    conn.prepare_cached(
        "UPDATE agents SET risk_tier = ?1, risk_tier_changed_seq = ?2, updated_at = ?3 WHERE id = ?4",
    )?
    .execute(params![next.as_str(), change_seq, d.created_at_ms, d.agent_id])?;
    Ok(next)
}

/// The SQLite driver under the roles written once (`crate::backend`).
impl Backend for SqliteStore {
    type Tx<'t> = SqliteConn<'t>;
    type Read<'r> = SqliteConn<'r>;

    const ORDINAL: &'static str = "rowid";
    const AGENT_COLUMNS: &'static str = AGENT_COLUMNS;
    const FAIL_DELIVERY_BY_ORDINAL: &'static str = notify::FAIL_DELIVERY_BY_ORDINAL;

    async fn run_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut SqliteConn<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.writer()?
            .write(move |conn, _| tx::poll_once(rule(&mut SqliteConn { conn })))
            .await
    }

    async fn run_leader_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut SqliteConn<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.run_rule(rule).await
    }

    async fn run_read<T, R>(&self, read: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'r> FnOnce(&'r mut SqliteConn<'r>) -> BoxFuture<'r, StoreResult<T>> + Send + 'static,
    {
        self.read(move |conn| tx::poll_once(read(&mut SqliteConn { conn })))
            .await
    }

    async fn claim_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> StoreResult<crate::records::ClaimedDeliveries> {
        self.read(move |conn| notify::claim_deliveries(conn, &claim))
            .await
    }

    fn json_elements(param: &str) -> String {
        format!("json_each({param}) AS elements")
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
        Ok(Leadership::sole())
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
        let (tenant, keys) = (tenant.clone(), keys.clone());
        self.read(move |conn| {
            // One read transaction: every query of the walk sees the same snapshot. (Framed
            // with the connection's own statements: the walk needs the connection by `&mut`.)
            conn.execute_batch("BEGIN")?;
            let audit = SqliteConn::run(conn, async |rows| {
                let mut reads = SnapshotReads {
                    rows,
                    tenant: tenant.as_str(),
                    queries: &RECEIPT_SQL,
                };
                crate::chain::audit(&mut reads, &walk, &keys).await
            });
            conn.execute_batch("ROLLBACK")?;
            audit
        })
        .await
    }

    fn chain_guard(&self) -> &ChainGuard {
        &self.guard
    }

    async fn forget_chain_head(&self, tenant: &TenantId) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.writer()?
            .write(move |_, state| {
                state.forget_chain(tenant.as_str());
                Ok(())
            })
            .await
    }

    fn secrets(&self) -> Option<&SecretsKey> {
        self.secrets.as_ref()
    }
}

#[async_trait]
impl ActionPlaneStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.writer()?.write(|_, _| Ok(())).await
    }

    async fn check_commit(&self) -> StoreResult<()> {
        if let Some(reason) = self.writer()?.refusal() {
            return Err(StoreError::Unavailable(format!(
                "the last write was refused: {reason}"
            )));
        }
        // A transaction that changes nothing writes nothing, and so would commit on a full
        // disk: rewrite one row as it is, which puts a page in the WAL.
        self.writer()?
            .write(|conn, _| {
                conn.execute(
                    "UPDATE schema_migrations SET applied_at = applied_at
                     WHERE version = (SELECT MAX(version) FROM schema_migrations)",
                    [],
                )?;
                Ok(())
            })
            .await
    }

    async fn agent_by_token_hash(
        &self,
        secret_hash: SecretHash,
    ) -> StoreResult<Option<TokenOwner>> {
        self.read(move |conn| {
            let token = conn
                .prepare_cached("SELECT tenant_id, agent_id, retired_at, secret_hash FROM agent_tokens WHERE secret_hash = ?1")?
                .query_row([&secret_hash[..]], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()?;
            let Some((tenant_id, agent_id, retired_at, stored)) = token else {
                return Ok(None);
            };
            if !constant_time_eq(&stored, &secret_hash) {
                return Ok(None);
            }
            let agent = load_agent(conn, &tenant_id, &agent_id)?;
            if retired_at.is_some() || agent.status == AgentStatus::Revoked {
                return Ok(Some(TokenOwner::Dead { tenant_id: TenantId::new(tenant_id), agent_id }));
            }
            Ok(Some(TokenOwner::Current(agent)))
        })
        .await
    }

    async fn tool_actions(&self, tenant: &TenantId) -> StoreResult<Vec<RegisteredToolAction>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            read_rows(
                conn,
                "SELECT tool, action, mutates_state, risk, egress, sensitive FROM tool_actions WHERE tenant_id = ?1 ORDER BY tool, action",
                [tenant.as_str()],
                crate::rows::tool_action,
            )
        })
        .await
    }

    async fn policies(&self, tenant: &TenantId) -> StoreResult<Vec<PolicyDocument>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            read_rows(
                conn,
                "SELECT id, text FROM policies WHERE tenant_id = ?1 ORDER BY id",
                [tenant.as_str()],
                crate::rows::policy,
            )
        })
        .await
    }

    async fn record_decision(&self, decision: NewDecision) -> StoreResult<RecordedDecision> {
        let receipt = records::draft_receipt(&decision)?;
        self.writer()?
            .write_in_batch(move |conn, state| {
                record_fenced_decision_tx(conn, state, decision, receipt)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// What every commit's durability rests on (WAL, `synchronous=FULL`, so that an answered
    /// decision survives a power loss, which `kill -9` cannot show) and how often the WAL is
    /// copied into the database, as the writer's connection runs them.
    #[test]
    fn the_writer_commits_durably_and_copies_the_wal_at_its_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let writer = open_writer_connection(&dir.path().join("aegis.db")).unwrap();
        let text =
            |name| (writer.pragma_query_value(None, name, |row| row.get::<_, String>(0))).unwrap();
        let number =
            |name| (writer.pragma_query_value(None, name, |row| row.get::<_, i64>(0))).unwrap();
        assert_eq!(text("journal_mode"), "wal");
        assert_eq!(number("synchronous"), 2, "FULL");
        assert_eq!(number("wal_autocheckpoint"), WAL_AUTOCHECKPOINT_PAGES);
    }

    /// A cached statement run again with new values is not prepared again. Before
    /// `plan_each_statement_once`, SQLite re-parsed these two on every run (a deny's
    /// escalation count, a read of the log after a cursor), because each binds its `LIMIT`.
    #[test]
    fn statements_run_with_new_values_keep_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        let writer = open_writer_connection(&path).unwrap();
        let reader = open_reader_connection(&path).unwrap();
        let events_after = &rows::EVENT_SQL.after;
        for (name, conn) in [("writer", &writer), ("reader", &reader)] {
            for run in 1..=3_i64 {
                let mut count = conn.prepare_cached(&TIER_AND_EARLIER_DENIES).unwrap();
                let tier: Option<String> = count
                    .query_row(params!["agent", run, run], |row| row.get(0))
                    .optional()
                    .unwrap();
                assert_eq!(tier, None);
                let mut read = conn.prepare_cached(events_after).unwrap();
                let seqs: Vec<i64> = read
                    .query_map(params![run, run], |row| row.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(seqs.is_empty());
                for statement in [&count, &read] {
                    assert_eq!(
                        statement.get_status(StatementStatus::RePrepare),
                        0,
                        "{name}, run {run}: {:?}",
                        statement.expanded_sql()
                    );
                }
            }
        }
    }

    /// Each way a listing of decisions is read walks an index in the listing's order: no
    /// table scan, no sort of a tenant's decisions (a run's few are sorted), for any values.
    #[test]
    fn a_listing_of_decisions_reads_an_index_in_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer_connection(&dir.path().join("aegis.db")).unwrap();
        let plan = |filter: DecisionFilter| -> Vec<String> {
            let sql = numbered_placeholders(DECISION_LISTINGS.for_filter(&filter));
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // Planned once for every value (`plan_each_statement_once`): NULLs stand for any.
            let values = rusqlite::params_from_iter([rusqlite::types::Null; 10]);
            explain
                .query_map(values, |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let tenant = plan(DecisionFilter::default());
        assert_eq!(
            tenant,
            [
                "SEARCH e USING COVERING INDEX events_tenant (tenant_id=? AND seq<?)",
                "SEARCH d USING INDEX sqlite_autoindex_decisions_2 (event_seq=?)",
            ],
        );
        let agent = plan(DecisionFilter {
            agent_id: Some("agt_1".into()),
            ..DecisionFilter::default()
        });
        assert_eq!(
            agent,
            ["SEARCH d USING INDEX decisions_agent (tenant_id=? AND agent_id=? AND event_seq<?)"],
        );
        let run = plan(DecisionFilter {
            run_id: Some("run_1".into()),
            ..DecisionFilter::default()
        });
        assert_eq!(
            run,
            [
                "SEARCH d USING INDEX decisions_run (tenant_id=? AND run_id=?)",
                "USE TEMP B-TREE FOR ORDER BY",
            ],
        );
    }

    /// A decision's insert tests the table's CHECK with comparisons. Written as `IN` over
    /// three words (before migration 24), it had SQLite build an ephemeral B-tree of them
    /// on every insert, on the writer thread.
    #[test]
    fn a_decisions_insert_builds_no_ephemeral_table() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer_connection(&dir.path().join("aegis.db")).unwrap();
        let mut explain = conn.prepare(&format!("EXPLAIN {DECISION_INSERT}")).unwrap();
        let values = rusqlite::params_from_iter([rusqlite::types::Null; 27]);
        let opcodes: Vec<String> = explain
            .query_map(values, |row| row.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(opcodes.iter().any(|op| op == "Insert"), "{opcodes:?}");
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{opcodes:?}"
        );
    }

    /// The notifier's feed walks the log by seq and probes each event's decision by the
    /// unique `event_seq`: its cost is the events in its range, however many decisions
    /// the database holds.
    #[test]
    fn the_feed_without_allows_probes_each_decision_by_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer_connection(&dir.path().join("aegis.db")).unwrap();
        let sql = &rows::EVENT_SQL.of_kinds_except_allows;
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = explain
            .query_map(params![0, 0, "[]", 0], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            [
                "CO-ROUTINE e",
                "SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
                "LIST SUBQUERY 1",
                "SCAN json_each VIRTUAL TABLE INDEX 1:",
                "CREATE BLOOM FILTER",
                "CORRELATED SCALAR SUBQUERY 2",
                "SEARCH allowed USING INDEX sqlite_autoindex_decisions_2 (event_seq=?)",
                "SCAN e",
                "SEARCH d USING INDEX sqlite_autoindex_decisions_2 (event_seq=?) LEFT-JOIN",
            ],
        );
    }
}
