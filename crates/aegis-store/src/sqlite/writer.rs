//! The single writer thread and its group commit.
//!
//! Every write of the SQLite store is a [`Job`] sent to one dedicated thread. The thread takes
//! whatever is queued (up to [`MAX_BATCH`]), applies each job in one `BEGIN IMMEDIATE`
//! transaction, signs the heads of every receipt chain the batch extended with one signature
//! ([`crate::chain::sign_heads`]), commits once (one fsync for the whole batch), and only
//! then answers each caller.
//! It signs only heads it appended itself: a chain head read from the database must be the
//! one its last checkpoint names ([`crate::chain::ChainGuard`]).
//! How a failing job is contained is the job's [`Containment`]; a failed commit fails every
//! job of the batch, and no caller ever hears "done" for a write that is not on disk.

use super::tx::SqliteConn;
use crate::chain::{ChainGuard, seal};
use crate::operations::{
    MAX_BATCH, WriterMetrics, batch_span, gather_batch, submit_job, submitter,
};
use crate::{StoreError, StoreResult};
use aegis_core::receipt::{ChainPoint, Checkpoint, ReceiptSigner};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How long a refused write keeps [`Writer::refusal`] reporting it when no write succeeds
/// after it. A replica taken out of a balancer gets no writes to prove it recovered: after
/// this long it lets the readiness probe decide again, and the next refused write reports it
/// once more.
const REFUSAL_HELD_FOR: Duration = Duration::from_secs(30);

/// The last write the database refused (disk full, I/O error, read-only file) until a batch
/// appends to the log again. A probe that rewrites one row fits in space a full disk's WAL
/// already holds while every decision is refused, so readiness needs what real writes met.
#[derive(Default)]
struct Refusal(Mutex<Option<(Instant, String)>>);

impl Refusal {
    fn record(&self, reason: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), reason));
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn recent(&self) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < REFUSAL_HELD_FOR)
            .map(|(_, reason)| reason.clone())
    }
}

/// How the failure of one job is kept from the rest of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Containment {
    /// The job runs in a savepoint of its own: an error rolls back this job's changes only.
    Savepoint,
    /// The job runs without one, because a savepoint costs two statements and a sub-journal
    /// copy of every page the job touches, about a fifth of the writer's time per decision.
    /// An error before the job changed a row fails this job alone; an error after it did
    /// fails the whole batch, as a failed commit does. For jobs whose only failures after a
    /// write are the database's own (the decision record).
    Batch,
}

/// One unit of work for the writer thread.
pub(crate) trait Job: Send {
    /// Applies the job in the batch's transaction (see [`Job::containment`]).
    fn apply(&mut self, conn: &mut Connection, state: &mut WriterState) -> StoreResult<()>;
    fn containment(&self) -> Containment;
    /// Answers the caller once the batch's fate is known.
    fn complete(self: Box<Self>, outcome: StoreResult<()>);
    /// The traced span the job was submitted in, if any.
    fn submitter(&self) -> Option<&tracing::Span>;
}

struct FnJob<T, F> {
    work: Option<F>,
    containment: Containment,
    value: Option<T>,
    reply: oneshot::Sender<StoreResult<T>>,
    submitter: Option<tracing::Span>,
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send,
    F: FnOnce(&mut Connection, &mut WriterState) -> StoreResult<T> + Send,
{
    fn apply(&mut self, conn: &mut Connection, state: &mut WriterState) -> StoreResult<()> {
        let work = self
            .work
            .take()
            .ok_or_else(|| StoreError::Unavailable("job applied twice".into()))?;
        self.value = Some(work(conn, state)?);
        Ok(())
    }

    fn containment(&self) -> Containment {
        self.containment
    }

    fn complete(self: Box<Self>, outcome: StoreResult<()>) {
        let FnJob { value, reply, .. } = *self;
        let result = outcome.and_then(|()| {
            value.ok_or_else(|| StoreError::Unavailable("job produced no value".into()))
        });
        // The caller may have gone away (client disconnect); the write stands regardless.
        let _ = reply.send(result);
    }

    fn submitter(&self) -> Option<&tracing::Span> {
        self.submitter.as_ref()
    }
}

/// State owned by the writer thread: chain heads and the signing key.
pub(crate) struct WriterState {
    signer: Option<Arc<ReceiptSigner>>,
    guard: Arc<ChainGuard>,
    /// Heads this writer committed (or read and proved, [`ChainGuard::admit`]).
    committed: HashMap<String, ChainPoint>,
    /// Heads extended by the current batch; merged into `committed` after COMMIT.
    pending: HashMap<String, ChainPoint>,
}

impl WriterState {
    /// The current head of a tenant's chain (`seq` 0 and `""` for an empty chain); a head
    /// read from the database must be the one its last checkpoint names, else `ChainBroken`.
    pub fn chain_head(
        &mut self,
        conn: &mut Connection,
        tenant_id: &str,
    ) -> StoreResult<ChainPoint> {
        if let Some(head) = self
            .pending
            .get(tenant_id)
            .or_else(|| self.committed.get(tenant_id))
        {
            return Ok(head.clone());
        }
        let sealed = SqliteConn::run(conn, async |rows| seal(rows, tenant_id).await)?;
        let head = self.guard.admit(tenant_id, sealed)?;
        self.committed.insert(tenant_id.to_owned(), head.clone());
        Ok(head)
    }

    /// Records that this job extended a chain. Call only after the job's last fallible step.
    pub fn extend_chain(&mut self, tenant_id: &str, head: ChainPoint) {
        self.pending.insert(tenant_id.to_owned(), head);
    }

    /// Drops a cached head, so that the next use of the chain goes through the guard.
    pub fn forget_chain(&mut self, tenant_id: &str) {
        self.committed.remove(tenant_id);
    }

    /// Signs a checkpoint over every chain head the batch moved ([`crate::chain::sign_heads`]).
    fn checkpoint_pending(
        &self,
        conn: &mut Connection,
        now_ms: i64,
    ) -> StoreResult<Vec<Checkpoint>> {
        let heads = self
            .pending
            .iter()
            .map(|(tenant_id, head)| (tenant_id.as_str(), head));
        SqliteConn::run(conn, async |tx| {
            crate::chain::sign_heads(tx, &self.signer, heads, now_ms).await
        })
    }
}

/// Handle for sending jobs to the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
    refusal: Arc<Refusal>,
}

impl Writer {
    /// Starts the writer thread on `conn`. Before taking jobs it registers the signing key,
    /// if any. After every commit it publishes the highest committed event seq on `commits`.
    pub fn start(
        conn: Connection,
        signer: Option<Arc<ReceiptSigner>>,
        guard: Arc<ChainGuard>,
        now_ms: fn() -> i64,
        commits: watch::Sender<i64>,
    ) -> StoreResult<Self> {
        if let Some(signer) = &signer {
            register_key(&conn, signer, now_ms())?;
        }
        commits.send_replace(highest_event_seq(&conn)?);
        let (jobs, queue) = mpsc::unbounded_channel();
        let state = WriterState {
            signer,
            guard,
            committed: HashMap::new(),
            pending: HashMap::new(),
        };
        let refusal = Arc::new(Refusal::default());
        let refusals = Arc::clone(&refusal);
        std::thread::Builder::new()
            .name("aegis-sqlite-writer".into())
            .spawn(move || run(conn, state, queue, now_ms, commits, &refusals))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs, refusal })
    }

    /// Why the database refused a write, if it did in the last [`REFUSAL_HELD_FOR`] and no
    /// batch has appended to the log since.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.recent()
    }

    /// Runs `work` in the writer's next transaction, in a savepoint of its own, and answers
    /// after it is committed.
    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        self.submit(Containment::Savepoint, work).await
    }

    /// [`Writer::write`] without the savepoint ([`Containment::Batch`]).
    pub async fn write_in_batch<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        self.submit(Containment::Batch, work).await
    }

    async fn submit<T, F>(&self, containment: Containment, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(FnJob {
            work: Some(work),
            containment,
            value: None,
            reply,
            submitter: submitter(),
        });
        submit_job(&self.jobs, job, answer).await
    }
}

fn register_key(conn: &Connection, signer: &ReceiptSigner, now_ms: i64) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO signing_keys (key_id, public_key, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key_id) DO NOTHING",
        params![
            signer.key_id(),
            hex::encode(signer.verifying_key().as_bytes()),
            now_ms
        ],
    )?;
    Ok(())
}

pub(crate) fn highest_event_seq(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
        .query_row([], |row| row.get(0))?)
}

fn run(
    mut conn: Connection,
    mut state: WriterState,
    mut queue: mpsc::UnboundedReceiver<Box<dyn Job>>,
    now_ms: fn() -> i64,
    commits: watch::Sender<i64>,
    refusal: &Refusal,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let metrics = WriterMetrics::new("sqlite");
    while let Some(first) = queue.blocking_recv() {
        gather_batch(&mut batch, first, &mut queue);
        let span = batch_span(
            "sqlite",
            batch.len(),
            batch.iter().filter_map(|job| job.submitter()),
        );
        let started = Instant::now();
        let outcomes = span.in_scope(|| commit_batch(&mut conn, &mut state, &mut batch, now_ms));
        // The batch's span ends with its commit, before the callers hear of it.
        drop(span);
        metrics.batch(batch.len(), started.elapsed(), queue.len());
        let refused = outcomes.iter().find_map(|outcome| match outcome {
            Err(StoreError::Unavailable(reason)) => Some(reason.clone()),
            _ => None,
        });
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.complete(outcome);
        }
        match highest_event_seq(&conn) {
            Ok(seq) => {
                let appended =
                    commits.send_if_modified(|current| std::mem::replace(current, seq) != seq);
                match refused {
                    Some(reason) => refusal.record(reason),
                    None if appended => refusal.clear(),
                    None => {}
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the committed event seq"),
        }
    }
    tracing::debug!("writer queue closed; writer thread exits");
}

/// Applies a batch in one transaction. Returns one outcome per job.
///
/// The transaction and each job's savepoint are the connection's own statements rather
/// than rusqlite's `Transaction` and `Savepoint`, which lend a job only a shared
/// `&Connection`: a rule's [`SqliteConn`] holds the connection by `&mut` to be `Send`.
fn commit_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    batch: &mut [Box<dyn Job>],
    now_ms: fn() -> i64,
) -> Vec<StoreResult<()>> {
    state.pending.clear();
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed = (|| -> StoreResult<Vec<Checkpoint>> {
        run_statement(conn, "BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            let outcome = match job.containment() {
                Containment::Savepoint => {
                    run_statement(conn, "SAVEPOINT job")?;
                    let outcome = job.apply(conn, state);
                    if outcome.is_err() {
                        // Undoes this job alone; the batch goes on.
                        run_statement(conn, "ROLLBACK TO job")?;
                    }
                    run_statement(conn, "RELEASE job")?;
                    outcome
                }
                Containment::Batch => {
                    // A statement that fails is undone by SQLite itself, so an unchanged
                    // count means the job left nothing behind.
                    let changed_before = conn.total_changes();
                    let outcome = job.apply(conn, state);
                    if let Err(error) = &outcome
                        && conn.total_changes() != changed_before
                    {
                        return Err(StoreError::Unavailable(format!(
                            "a write failed half done, so its batch is rolled back: {error}"
                        )));
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        let signed = state.checkpoint_pending(conn, now_ms())?;
        run_statement(conn, "COMMIT")?;
        Ok(signed)
    })();
    if committed.is_err()
        && !conn.is_autocommit()
        && let Err(error) = run_statement(conn, "ROLLBACK")
    {
        tracing::error!(%error, "cannot roll the failed batch back");
    }
    match committed {
        Ok(signed) => {
            state.guard.signed(signed);
            let moved: Vec<_> = state.pending.drain().collect();
            state.committed.extend(moved);
            outcomes
        }
        Err(error) => {
            tracing::error!(%error, jobs = batch.len(), "batch transaction failed; every job in it fails");
            state.pending.clear();
            // Heads may have been read inside the failed transaction; re-read them next time.
            state.committed.clear();
            let message = error.to_string();
            batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(format!("commit failed: {message}"))))
                .collect()
        }
    }
}

/// Runs one of the statements that frame a batch (prepared once per connection).
fn run_statement(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<StoreResult<()>>;

    fn job(
        containment: Containment,
        work: impl FnOnce(&Connection) -> StoreResult<()> + Send + 'static,
    ) -> (Box<dyn Job>, Answer) {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(FnJob {
            work: Some(move |conn: &mut Connection, _: &mut WriterState| work(conn)),
            containment,
            value: None,
            reply,
            submitter: None,
        });
        (job, answer)
    }

    fn insert(value: &'static str) -> impl FnOnce(&Connection) -> StoreResult<()> + Send {
        move |conn| {
            conn.execute("INSERT INTO rows (value) VALUES (?1)", [value])?;
            Ok(())
        }
    }

    /// Runs `jobs` as one batch; answers each job's outcome and the rows then stored.
    fn run_batch(jobs: Vec<(Box<dyn Job>, Answer)>) -> (Vec<StoreResult<()>>, Vec<String>) {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE rows (value TEXT PRIMARY KEY)")
            .unwrap();
        let mut state = WriterState {
            signer: None,
            guard: Arc::default(),
            committed: HashMap::new(),
            pending: HashMap::new(),
        };
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let outcomes = commit_batch(&mut conn, &mut state, &mut batch, || 0);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.complete(outcome);
        }
        let answered = answers
            .iter_mut()
            .map(|answer| answer.try_recv().unwrap())
            .collect();
        let rows = conn
            .prepare("SELECT value FROM rows ORDER BY value")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (answered, rows)
    }

    #[test]
    fn a_job_in_a_savepoint_fails_alone_even_after_writing() {
        let (answered, rows) = run_batch(vec![
            job(Containment::Batch, insert("a")),
            job(Containment::Savepoint, |conn| {
                insert("b")(conn)?;
                insert("a")(conn)
            }),
            job(Containment::Batch, insert("c")),
        ]);
        assert!(answered[0].is_ok() && answered[2].is_ok());
        assert!(answered[1].is_err());
        assert_eq!(rows, ["a", "c"]);
    }

    #[test]
    fn a_job_without_a_savepoint_that_fails_before_writing_fails_alone() {
        let (answered, rows) = run_batch(vec![
            job(Containment::Batch, insert("a")),
            job(Containment::Batch, |_| {
                Err(StoreError::Conflict("refused before writing".into()))
            }),
            // A statement that fails is undone by SQLite: nothing was written.
            job(Containment::Batch, insert("a")),
            job(Containment::Batch, insert("c")),
        ]);
        assert!(answered[0].is_ok() && answered[3].is_ok());
        assert!(matches!(answered[1], Err(StoreError::Conflict(_))));
        assert!(answered[2].is_err());
        assert_eq!(rows, ["a", "c"]);
    }

    #[test]
    fn a_job_without_a_savepoint_that_fails_after_writing_fails_its_whole_batch() {
        let (answered, rows) = run_batch(vec![
            job(Containment::Savepoint, insert("a")),
            job(Containment::Batch, |conn| {
                insert("b")(conn)?;
                insert("a")(conn)
            }),
            job(Containment::Batch, insert("c")),
        ]);
        assert!(
            answered
                .iter()
                .all(|outcome| matches!(outcome, Err(StoreError::Unavailable(_)))),
            "{answered:?}"
        );
        assert!(rows.is_empty(), "nothing of the batch may remain: {rows:?}");
    }
}
