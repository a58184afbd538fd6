//! The PostgreSQL writer task and its group commit.
//!
//! As in the SQLite store, every write is a job for one writer per process, which applies
//! whatever is queued inside one transaction, signs the heads of every receipt chain the
//! batch extended with one signature, commits once and only then answers. Jobs run in savepoints of their own,
//! except decisions: they fail only when the database does, and their rows are gathered and
//! written together ([`super::decision_rows`]).
//!
//! What several replicas add: each batch transaction first locks the single `log_head` row
//! (`SELECT … FOR UPDATE`) and holds it to COMMIT. That one lock makes every write
//! transaction of the cluster serial, which gives, without any other coordination:
//! - event seqs assigned in commit order and without gaps (the counter is in the locked row
//!   and rolls back with a failed batch), so a consumer's cursor never skips a late commit;
//! - receipt chains that never fork: a batch reads each chain head after taking the lock;
//!   it appends only to a head named by the chain's last checkpoint, validly signed (by
//!   this replica or another), so a chain changed behind the gateways' back is never
//!   signed over ([`crate::chain::ChainGuard`]);
//! - event times that never run backwards in seq order, whichever replica commits: every
//!   event of a batch is stamped with the batch's commit time, read from the *database's*
//!   clock under the lock and never earlier than the previous batch's (kept in `log_head`),
//!   so replicas whose clocks disagree still give the SOC one time line;
//! - a place to NOTIFY other replicas of the new head (delivered at COMMIT).
//!
//! The session's `lock_timeout` bounds one batch's wait for that lock, but a job queued
//! behind a batch that waited would wait again in its own. A batch whose oldest job has
//! already waited therefore waits only for what is left of the bound, so no call waits for
//! the lock longer than `lock_timeout` in all ([`lock_wait_left`]).

use super::decision_rows::PendingDecisions;
use super::prepared;
use super::tx::PgRead;
use crate::chain::{ChainGuard, seal};
use crate::operations::{
    MAX_BATCH, WriterMetrics, batch_span, gather_batch, submit_job, submitter,
};
use crate::schema::SEAL_SQL;
use crate::{StoreError, StoreResult};
use aegis_core::receipt::{ChainPoint, Checkpoint, ReceiptSigner};
use deadpool_postgres::{GenericClient, Pool, Transaction};
use futures_util::future::{BoxFuture, try_join_all};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

/// How long a batch's oldest job may have waited before the batch shortens its lock wait.
/// A batch commits in milliseconds, so below this the session's bound is as good as whole
/// and the extra round trip of `SET LOCAL` would be pure cost.
const SHORTEN_LOCK_WAIT_AFTER: Duration = Duration::from_millis(100);

/// A tenant's agent's stored version, for the freshness fence.
const AGENT_VERSION_SQL: &str = "SELECT version FROM agents WHERE tenant_id = $1 AND id = $2";

/// The channel other replicas LISTEN on; the payload is the new log head.
pub(crate) const LOG_CHANNEL: &str = "aegis_log";

/// A unit of work that runs inside the writer's transaction.
type Work<T> = Box<
    dyn for<'a> FnOnce(&'a Transaction<'a>, &'a mut WriterState) -> BoxFuture<'a, StoreResult<T>>
        + Send,
>;

trait Job: Send {
    /// Whether the job runs in a savepoint of its own, so that its failure rolls back only
    /// itself: every job but a decision. A decision fails only when the database does, so it
    /// goes without (two round trips fewer), and its failure fails the whole batch
    /// (PostgreSQL aborts the transaction on any error), so nobody is told "done".
    fn isolated(&self) -> bool {
        self.decision_of().is_none()
    }
    fn apply<'a>(
        &'a mut self,
        tx: &'a Transaction<'a>,
        state: &'a mut WriterState,
    ) -> BoxFuture<'a, StoreResult<()>>;
    fn complete(self: Box<Self>, outcome: StoreResult<()>);
    /// When the job was queued.
    fn queued(&self) -> Instant;
    /// The traced span the job was submitted in, if any.
    fn submitter(&self) -> Option<&tracing::Span>;
    /// For a decision, its tenant and agent, whose chain seal and agent version the batch
    /// reads ahead ([`WriterState::read_ahead`]).
    fn decision_of(&self) -> Option<(&str, &str)>;
}

struct FnJob<T> {
    queued: Instant,
    work: Option<Work<T>>,
    value: Option<T>,
    reply: oneshot::Sender<StoreResult<T>>,
    submitter: Option<tracing::Span>,
    decision_of: Option<(String, String)>,
}

impl<T: Send> Job for FnJob<T> {
    fn apply<'a>(
        &'a mut self,
        tx: &'a Transaction<'a>,
        state: &'a mut WriterState,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let work = self
                .work
                .take()
                .ok_or_else(|| StoreError::Unavailable("job applied twice".into()))?;
            self.value = Some(work(tx, state).await?);
            Ok(())
        })
    }

    fn complete(self: Box<Self>, outcome: StoreResult<()>) {
        let FnJob { value, reply, .. } = *self;
        let result = outcome.and_then(|()| {
            value.ok_or_else(|| StoreError::Unavailable("job produced no value".into()))
        });
        // The caller may have gone away (client disconnect); the write stands regardless.
        let _ = reply.send(result);
    }

    fn queued(&self) -> Instant {
        self.queued
    }

    fn submitter(&self) -> Option<&tracing::Span> {
        self.submitter.as_ref()
    }

    fn decision_of(&self) -> Option<(&str, &str)> {
        (self.decision_of.as_ref())
            .map(|(tenant_id, agent_id)| (tenant_id.as_str(), agent_id.as_str()))
    }
}

/// What the writer knows inside one batch transaction. Nothing survives the batch: another
/// replica may write between two of our batches, so heads are re-read under the lock.
pub(crate) struct WriterState {
    signer: Option<Arc<ReceiptSigner>>,
    guard: Arc<ChainGuard>,
    /// The next event seq to assign.
    next_seq: i64,
    /// The time of every event of this batch (see the module docs).
    event_at: i64,
    heads: HashMap<String, ChainPoint>,
    /// Tenants whose chain this batch extended.
    extended: Vec<String>,
    /// Decision rows not yet sent.
    pub decisions: PendingDecisions,
    /// Agents' stored versions read in this batch (`None`: no such agent), for the
    /// freshness fence ([`crate::fence`]); dropped whenever a job may have changed an agent.
    agent_versions: HashMap<String, Option<i64>>,
    /// Chain seals read ahead for the batch's decisions, not yet admitted as heads; dropped
    /// after any job that runs in a savepoint.
    seals_ahead: HashMap<String, Row>,
}

impl WriterState {
    /// Appends an event with the next seq of the log and returns that seq.
    pub async fn append_event(
        &mut self,
        tx: &Transaction<'_>,
        event: super::NewEventRow<'_>,
    ) -> StoreResult<i64> {
        let seq = self.reserve_event_seq();
        insert_event(tx, seq, self.event_at, event).await?;
        Ok(seq)
    }

    /// Takes the next seq of the log for an event written later in the batch (a decision's,
    /// by [`super::decision_rows`]).
    pub fn reserve_event_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The current head of a tenant's chain (`seq` 0 and `""` for an empty chain), read
    /// under the batch lock; it must be the head the chain's last checkpoint names, else
    /// `ChainBroken` (before anything of the job is written).
    pub async fn chain_head(
        &mut self,
        tx: &Transaction<'_>,
        tenant_id: &str,
    ) -> StoreResult<ChainPoint> {
        if let Some(head) = self.heads.get(tenant_id) {
            return Ok(head.clone());
        }
        let sealed = match self.seals_ahead.remove(tenant_id) {
            Some(row) => crate::rows::chain_seal(&row)?,
            None => seal(&mut PgRead { client: tx }, tenant_id).await?,
        };
        let head = self.guard.admit(tenant_id, sealed)?;
        self.heads.insert(tenant_id.to_owned(), head.clone());
        Ok(head)
    }

    /// The stored version of a tenant's agent, read under the batch lock: one indexed read
    /// per agent per batch, not per decision.
    pub async fn agent_version(
        &mut self,
        tx: &Transaction<'_>,
        tenant_id: &str,
        agent_id: &str,
    ) -> StoreResult<Option<i64>> {
        if let Some(version) = self.agent_versions.get(agent_id) {
            return Ok(*version);
        }
        let version = tx
            .query_opt(
                &prepared(tx, AGENT_VERSION_SQL).await?,
                &[&tenant_id, &agent_id],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        self.agent_versions.insert(agent_id.to_owned(), version);
        Ok(version)
    }

    /// Reads, all in one round trip, what the batch's decisions read first under the lock,
    /// one round trip each otherwise: the seal of each tenant's chain and the version of each
    /// agent ([`Self::chain_head`], [`Self::agent_version`]). They read what a read at the
    /// decision would: only the decision itself changes its agent before then (and an
    /// escalation drops the versions), and a job in a savepoint drops both.
    async fn read_ahead(
        &mut self,
        tx: &Transaction<'_>,
        DecisionsOf { tenants, agents }: DecisionsOf<'_>,
    ) -> StoreResult<()> {
        if tenants.is_empty() {
            return Ok(());
        }
        let (seal_sql, version_sql) = (
            prepared(tx, &SEAL_SQL).await?,
            prepared(tx, AGENT_VERSION_SQL).await?,
        );
        let seal_params: Vec<[&(dyn ToSql + Sync); 1]> =
            tenants.iter().map(|tenant_id| [tenant_id as _]).collect();
        let version_params: Vec<[&(dyn ToSql + Sync); 2]> = (agents.iter())
            .map(|(agent_id, tenant_id)| [tenant_id as _, agent_id as _])
            .collect();
        // Polled together, the reads are all sent before the first answer is awaited.
        let seals =
            try_join_all((seal_params.iter()).map(|params| tx.query_opt(&seal_sql, params)));
        let versions =
            try_join_all((version_params.iter()).map(|params| tx.query_opt(&version_sql, params)));
        let (seals, versions) = futures_util::try_join!(seals, versions)?;
        for (tenant_id, row) in tenants.into_iter().zip(seals) {
            if let Some(row) = row {
                self.seals_ahead.insert(tenant_id.to_owned(), row);
            }
        }
        for ((agent_id, _), row) in agents.into_iter().zip(versions) {
            let version = row.map(|row| row.try_get(0)).transpose()?;
            self.agent_versions.insert(agent_id.to_owned(), version);
        }
        Ok(())
    }

    /// Forgets the agent versions read so far: a job changed an agent (or may have, or was
    /// rolled back), so the next decision reads its agent again.
    pub fn agents_may_have_changed(&mut self) {
        self.agent_versions.clear();
    }

    /// Records that this job extended a chain. Call only after the job's last fallible step.
    pub fn extend_chain(&mut self, tenant_id: &str, head: ChainPoint) {
        if !self.extended.iter().any(|t| t == tenant_id) {
            self.extended.push(tenant_id.to_owned());
        }
        self.heads.insert(tenant_id.to_owned(), head);
    }
}

/// The tenants of a batch's decisions and their agents (each as agent, tenant), each once.
struct DecisionsOf<'b> {
    tenants: Vec<&'b str>,
    agents: Vec<(&'b str, &'b str)>,
}

impl<'b> DecisionsOf<'b> {
    fn batch(batch: &'b [Box<dyn Job>]) -> Self {
        let mut tenants = HashSet::new();
        let mut agents = HashMap::new();
        for (tenant_id, agent_id) in batch.iter().filter_map(|job| job.decision_of()) {
            tenants.insert(tenant_id);
            agents.insert(agent_id, tenant_id);
        }
        DecisionsOf {
            tenants: tenants.into_iter().collect(),
            agents: agents.into_iter().collect(),
        }
    }
}

async fn insert_event(
    tx: &Transaction<'_>,
    seq: i64,
    at_ms: i64,
    event: super::NewEventRow<'_>,
) -> StoreResult<()> {
    tx.execute(
        &prepared(
            tx,
            "INSERT INTO events (seq, tenant_id, kind, agent_id, subject_id, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?,
        &[
            &seq,
            &event.tenant_id,
            &event.kind,
            &event.agent_id,
            &event.subject_id,
            &event.payload.to_string(),
            &at_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Handle for sending jobs to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
}

/// What the writer's session allows a write to wait for the lock (its `lock_timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockWait(pub Duration);

impl Writer {
    /// Registers the signing key and starts the writer task on its own pool (one
    /// connection, re-opened if it breaks, whose session waits `lock_wait` for a lock).
    /// After every commit it publishes the log head on `commits`.
    pub async fn start(
        pool: Pool,
        lock_wait: LockWait,
        signer: Option<Arc<ReceiptSigner>>,
        guard: Arc<ChainGuard>,
        now_ms: fn() -> i64,
        commits: watch::Sender<i64>,
    ) -> StoreResult<Self> {
        if let Some(signer) = &signer {
            register_key(&pool, signer, now_ms()).await?;
        }
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, lock_wait, signer, guard, queue, now_ms, commits));
        Ok(Writer { jobs })
    }

    /// Runs `work` in the writer's next transaction, in a savepoint of its own, and answers
    /// after it is committed.
    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Transaction<'a>,
                &'a mut WriterState,
            ) -> BoxFuture<'a, StoreResult<T>>
            + Send
            + 'static,
    {
        self.submit(None, work).await
    }

    /// As [`Writer::write`] without the savepoint (two round trips fewer), for the decision
    /// of `decision_of`'s tenant and agent, which fails only when the database does; its
    /// failure fails the batch, so nobody is told "done".
    pub async fn write_decision<T, F>(
        &self,
        decision_of: (String, String),
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Transaction<'a>,
                &'a mut WriterState,
            ) -> BoxFuture<'a, StoreResult<T>>
            + Send
            + 'static,
    {
        self.submit(Some(decision_of), work).await
    }

    async fn submit<T, F>(&self, decision_of: Option<(String, String)>, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Transaction<'a>,
                &'a mut WriterState,
            ) -> BoxFuture<'a, StoreResult<T>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(FnJob {
            queued: Instant::now(),
            work: Some(Box::new(work) as Work<T>),
            value: None,
            reply,
            submitter: submitter(),
            decision_of,
        });
        submit_job(&self.jobs, job, answer).await
    }
}

async fn register_key(pool: &Pool, signer: &ReceiptSigner, now_ms: i64) -> StoreResult<()> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO signing_keys (key_id, public_key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (key_id) DO NOTHING",
            &[
                &signer.key_id(),
                &hex::encode(signer.verifying_key().as_bytes()),
                &now_ms,
            ],
        )
        .await?;
    Ok(())
}

async fn run(
    pool: Pool,
    lock_wait: LockWait,
    signer: Option<Arc<ReceiptSigner>>,
    guard: Arc<ChainGuard>,
    mut queue: mpsc::UnboundedReceiver<Box<dyn Job>>,
    now_ms: fn() -> i64,
    commits: watch::Sender<i64>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let metrics = WriterMetrics::new("postgres");
    while let Some(first) = queue.recv().await {
        gather_batch(&mut batch, first, &mut queue);
        let span = batch_span(
            "postgres",
            batch.len(),
            batch.iter().filter_map(|job| job.submitter()),
        );
        let started = Instant::now();
        let (outcomes, head) = commit_batch(&pool, lock_wait, &signer, &guard, &mut batch, now_ms)
            .instrument(span)
            .await;
        metrics.batch(batch.len(), started.elapsed(), queue.len());
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.complete(outcome);
        }
        if let Some(head) = head {
            commits.send_if_modified(|current| {
                let newer = head > *current;
                if newer {
                    *current = head;
                }
                newer
            });
        }
    }
    tracing::debug!("writer queue closed; writer task exits");
}

/// The lock wait a batch whose oldest job has `waited` must use instead of the session's,
/// or `None` when the session's is right. Never zero, which PostgreSQL reads as "forever".
fn lock_wait_left(LockWait(bound): LockWait, waited: Duration) -> Option<Duration> {
    (waited >= SHORTEN_LOCK_WAIT_AFTER)
        .then(|| bound.saturating_sub(waited).max(Duration::from_millis(1)))
}

/// Applies a batch in one transaction. Returns one outcome per job and, when it committed,
/// the log head after it.
async fn commit_batch(
    pool: &Pool,
    lock_wait: LockWait,
    signer: &Option<Arc<ReceiptSigner>>,
    guard: &Arc<ChainGuard>,
    batch: &mut [Box<dyn Job>],
    now_ms: fn() -> i64,
) -> (Vec<StoreResult<()>>, Option<i64>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed: StoreResult<(i64, Vec<Checkpoint>)> = async {
        let mut client = pool.get().await?;
        let mut tx = client.transaction().await?;
        // Jobs are queued in order: the first has waited longest.
        let waited = batch.first().map_or(Duration::ZERO, |job| job.queued().elapsed());
        if let Some(left) = lock_wait_left(lock_wait, waited) {
            tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", left.as_millis()))
                .await?;
        }
        let locked = tx
            .query_one(
                &prepared(
                    &tx,
                    "SELECT seq, GREATEST(at_ms, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                     FROM log_head FOR UPDATE",
                )
                .await?,
                &[],
            )
            .await?;
        let (head, event_at): (i64, i64) = (locked.try_get(0)?, locked.try_get(1)?);
        let mut state = WriterState {
            signer: signer.clone(),
            guard: Arc::clone(guard),
            next_seq: head + 1,
            event_at,
            heads: HashMap::new(),
            extended: Vec::new(),
            decisions: PendingDecisions::stamped(event_at),
            agent_versions: HashMap::new(),
            seals_ahead: HashMap::new(),
        };
        state.read_ahead(&tx, DecisionsOf::batch(batch)).await?;
        for job in batch.iter_mut() {
            if !job.isolated() {
                match job.apply(&tx, &mut state).await {
                    // Refused before it wrote anything (a broken chain, a request id
                    // reused for another call): this job alone fails.
                    Err(refused @ (StoreError::ChainBroken(_) | StoreError::Conflict(_))) => {
                        outcomes.push(Err(refused))
                    }
                    // The transaction is aborted: fail the batch with its error.
                    Err(error) => return Err(error),
                    Ok(()) => outcomes.push(Ok(())),
                }
                continue;
            }
            // Rows gathered so far must not be rolled back with this job's savepoint.
            state.decisions.flush(&tx).await?;
            let seq_before = state.next_seq;
            let savepoint = tx.savepoint("job").await?;
            let outcome = job.apply(&savepoint, &mut state).await;
            match outcome {
                Ok(()) => savepoint.commit().await?,
                Err(_) => {
                    savepoint.rollback().await?;
                    // The job's events were rolled back; so are their seqs (no gaps).
                    state.next_seq = seq_before;
                }
            }
            // Changes of agents and chains run in savepoints; decisions after one re-read
            // versions and seals.
            state.agents_may_have_changed();
            state.seals_ahead.clear();
            outcomes.push(outcome);
        }
        state.decisions.flush(&tx).await?;
        // `extend_chain` records the new head of every chain it adds to `extended`.
        let moved: Vec<(String, ChainPoint)> = std::mem::take(&mut state.extended)
            .into_iter()
            .filter_map(|tenant_id| {
                let head = state.heads.get(&tenant_id)?.clone();
                Some((tenant_id, head))
            })
            .collect();
        let signer = state.signer.clone();
        let signed = crate::chain::sign_heads(
            &mut super::tx::PgTx {
                tx: &tx,
                state: &mut state,
            },
            &signer,
            moved.iter().map(|(tenant_id, head)| (tenant_id.as_str(), head)),
            now_ms(),
        )
        .await?;
        let new_head = state.next_seq - 1;
        if new_head > head {
            tx.execute(
                &prepared(
                    &tx,
                    "WITH moved AS (UPDATE log_head SET seq = $1, at_ms = $3 RETURNING seq)
                     SELECT pg_notify($2, seq::text) FROM moved",
                )
                .await?,
                &[&new_head, &LOG_CHANNEL, &event_at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok((new_head, signed))
    }
    .await;
    match committed {
        Ok((head, signed)) => {
            guard.signed(signed);
            (outcomes, Some(head))
        }
        Err(error) => {
            tracing::error!(%error, jobs = batch.len(), "batch transaction failed; every job in it fails");
            let message = error.to_string();
            let failed = batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(format!("commit failed: {message}"))))
                .collect();
            (failed, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: LockWait = LockWait(Duration::from_secs(2));

    #[test]
    fn a_batch_that_has_not_waited_keeps_the_sessions_lock_wait() {
        assert_eq!(lock_wait_left(BOUND, Duration::ZERO), None);
        assert_eq!(lock_wait_left(BOUND, Duration::from_millis(99)), None);
    }

    #[test]
    fn a_batch_that_waited_behind_another_waits_only_for_what_is_left() {
        assert_eq!(
            lock_wait_left(BOUND, Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        // Spent (or over): the shortest wait PostgreSQL takes, never 0 (no timeout at all).
        for waited in [2000, 2001, 9000] {
            assert_eq!(
                lock_wait_left(BOUND, Duration::from_millis(waited)),
                Some(Duration::from_millis(1))
            );
        }
    }
}
