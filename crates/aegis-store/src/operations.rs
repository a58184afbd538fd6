//! What the store tells an operator about itself: the group-commit writers report each batch
//! through the `metrics` facade (a no-op until the binary installs a recorder), and
//! [`EventLog::operations`](crate::EventLog::operations) reads the backlogs a dashboard watches
//! (consumer cursors behind the log head, deliveries waiting, approvals pending) when
//! `/metrics` is scraped.
//!
//! The snapshot's SQL is written once for both backends: it uses only what SQLite and
//! PostgreSQL spell alike, and no parameter but the time of the pending approvals' count.
//!
//! Traces: a write carries the span it was submitted in ([`submitter`]) when that span is
//! on (the request's, while access logging or trace export is), and each batch holding such
//! writes runs in a `writer.batch` span that follows from them ([`batch_span`]), which
//! OpenTelemetry exports as span links. Writes submitted outside a traced span carry
//! nothing and their batches make no span.

use crate::tx::{ReadRows, SqlValue};
use crate::{StoreError, StoreResult};
use metrics::{Gauge, Histogram};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// Where each log consumer stands, and when the oldest event it has not consumed yet was
/// committed (none: it has consumed everything).
pub(crate) const CONSUMER_CURSORS_SQL: &str = "\
    SELECT c.name, c.seq, \
           (SELECT e.created_at FROM events e WHERE e.seq > c.seq ORDER BY e.seq LIMIT 1) \
    FROM consumer_cursors c ORDER BY c.name";

/// Deliveries not delivered yet, per sink kind and status, with the oldest one's queue time.
/// Subscription sinks (`sub:<webhook id>`) are counted together, so the number of label
/// values does not grow with the number of subscriptions; delivered rows are history and not
/// counted (the table keeps them all).
pub(crate) const DELIVERY_BACKLOG_SQL: &str = "\
    SELECT CASE WHEN sink LIKE 'sub:%' THEN 'subscription' ELSE sink END AS sink_kind, \
           status, COUNT(*), MIN(created_at) \
    FROM deliveries WHERE status <> 'delivered' \
    GROUP BY sink_kind, status ORDER BY sink_kind, status";

/// Approvals of every tenant still waiting for operators at the time bound to `now` (the
/// backend's placeholder: the one parameter of the snapshot's SQL). The `IN` term is the
/// predicate of the `approvals_open` partial index, so both backends count from it.
fn pending_approvals_sql(now: &str) -> String {
    let pending =
        crate::approvals::status_condition(aegis_core::approval::ApprovalStatus::Pending, now);
    format!("SELECT COUNT(*) FROM approvals WHERE status IN ('pending', 'approved') AND {pending}")
}

/// The store's backlogs as of `now_ms`, read in one go.
pub(crate) async fn snapshot(
    rows: &mut impl ReadRows,
    now_ms: i64,
) -> StoreResult<OperationsSnapshot> {
    static PENDING_APPROVALS: LazyLock<String> = LazyLock::new(|| pending_approvals_sql("$1"));
    let consumers = rows
        .query_rows(CONSUMER_CURSORS_SQL, &[], |row| {
            Ok(ConsumerPosition {
                consumer: row.required_text(0)?,
                cursor: row.required_int(1)?,
                oldest_unconsumed_at_ms: row.int(2)?,
            })
        })
        .await?;
    let deliveries = rows
        .query_rows(DELIVERY_BACKLOG_SQL, &[], |row| {
            Ok(DeliveryBacklog {
                sink: row.required_text(0)?,
                status: row.required_text(1)?,
                count: row.required_int(2)?,
                oldest_created_at_ms: row.required_int(3)?,
            })
        })
        .await?;
    let pending_approvals = rows
        .query_opt(&PENDING_APPROVALS, &[SqlValue::int(now_ms)], |row| {
            row.required_int(0)
        })
        .await?
        .unwrap_or(0);
    Ok(OperationsSnapshot {
        consumers,
        deliveries,
        pending_approvals,
    })
}

/// The store's backlogs at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationsSnapshot {
    pub consumers: Vec<ConsumerPosition>,
    pub deliveries: Vec<DeliveryBacklog>,
    /// Approvals of every tenant waiting for operators (not decided, not expired).
    pub pending_approvals: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    pub consumer: String,
    /// The last event seq it consumed.
    pub cursor: i64,
    /// Commit time of the first event after `cursor`, if there is one.
    pub oldest_unconsumed_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryBacklog {
    /// `env:json`, `env:slack` (the deployment's sinks) or `subscription` (every API
    /// subscription).
    pub sink: String,
    /// `pending` (queued or retrying) or `failed` (gave up).
    pub status: String,
    pub count: i64,
    pub oldest_created_at_ms: i64,
}

/// Histograms and gauge of one group-commit writer, labelled with its backend. Made when the
/// writer starts: the handles bind to the recorder installed at that time.
pub(crate) struct WriterMetrics {
    batch_size: Histogram,
    commit_seconds: Histogram,
    queue_depth: Gauge,
}

impl WriterMetrics {
    pub fn new(store: &'static str) -> Self {
        WriterMetrics {
            batch_size: metrics::histogram!("aegis_writer_batch_size", "store" => store),
            commit_seconds: metrics::histogram!(
                "aegis_writer_commit_duration_seconds",
                "store" => store
            ),
            queue_depth: metrics::gauge!("aegis_writer_queue_depth", "store" => store),
        }
    }

    /// One batch of `jobs` took `took` to apply and commit; `still_queued` jobs arrived
    /// meanwhile or did not fit in it.
    pub fn batch(&self, jobs: usize, took: Duration, still_queued: usize) {
        self.batch_size.record(jobs as f64);
        self.commit_seconds.record(took.as_secs_f64());
        self.queue_depth.set(still_queued as f64);
    }
}

/// Upper bound of jobs per transaction, so one commit never holds callers for long.
pub(crate) const MAX_BATCH: usize = 256;

/// Fills `batch` with `first` and whatever is queued behind it, up to [`MAX_BATCH`]: a
/// writer never waits for more, so a lone write commits at once.
pub(crate) fn gather_batch<J>(batch: &mut Vec<J>, first: J, queue: &mut UnboundedReceiver<J>) {
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Queues `job` on a writer's `jobs` and waits for its `answer`; `Unavailable` if the writer
/// stopped before taking it or before committing it.
pub(crate) async fn submit_job<J, T>(
    jobs: &UnboundedSender<J>,
    job: J,
    answer: oneshot::Receiver<StoreResult<T>>,
) -> StoreResult<T> {
    jobs.send(job)
        .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
    answer
        .await
        .map_err(|_| StoreError::Unavailable("the writer stopped before committing".into()))?
}

/// The span a write is submitted in, when it is on; none otherwise, so an untraced write
/// carries nothing.
pub(crate) fn submitter() -> Option<tracing::Span> {
    let span = tracing::Span::current();
    (!span.is_disabled()).then_some(span)
}

/// The span of one batch of `jobs` writes to the `store` backend, following from the traced
/// spans its writes were submitted in; a disabled span when there are none. It shares the
/// request span's target, so one filter turns both on.
pub(crate) fn batch_span<'a>(
    store: &'static str,
    jobs: usize,
    submitters: impl Iterator<Item = &'a tracing::Span>,
) -> tracing::Span {
    let mut submitters = submitters.peekable();
    if submitters.peek().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "aegis::access",
        parent: None,
        "writer.batch",
        aegis.store = store,
        // As i64: OpenTelemetry has no unsigned integers (a usize would export as text).
        aegis.batch_size = jobs as i64,
    );
    for submitter in submitters {
        span.follows_from(submitter);
    }
    span
}
