//! What the gateway tells whoever runs it: Prometheus metrics and one access log line per
//! request.
//!
//! Metrics go through the `metrics` facade. The binary installs the Prometheus recorder
//! ([`Metrics::install`]) before it opens the store, so the store's writers, the SOC
//! consumer and the request path all record into it; without a recorder (in-process tests,
//! library use) every metric is a no-op. `/metrics` ([`Metrics::render`]) first reads what
//! only the database knows (consumer cursors, undelivered notifications, pending approvals)
//! and the process's own figures, then renders the text format.
//!
//! Label values are bounded: routes are the router's path templates, decisions and
//! incident kinds are fixed sets, sinks are grouped by kind, and the tenant label names
//! only the first [`TenantLabels`] cap of tenants a process sees (the rest share
//! `other`). No agent, decision or request id is ever a label.

use aegis_core::model::Verdict;
use aegis_store::{EventLog, TenantId};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Tenants a process labels by name before it counts the rest as `other`
/// (`AEGIS_METRICS_MAX_TENANTS`).
pub const DEFAULT_MAX_TENANT_LABELS: usize = 100;

/// The label value of tenants beyond the cap.
pub const OTHER_TENANTS: &str = "other";

/// Upper bounds of latency histograms, in seconds: a durable authorize takes about a
/// millisecond, a loaded one tens.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Upper bounds of the writers' batch sizes (a batch holds at most 256 jobs).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The response header that carries the request id (taken from the request when it sends a
/// well-formed one, else made here).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The installed Prometheus recorder and what `/metrics` adds at scrape time.
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    /// Delivery backlog label pairs seen so far: one that empties is set to zero rather
    /// than left at its last value.
    backlog_labels: Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the process-wide Prometheus recorder. Call once, before the store opens.
    pub fn install() -> Result<Metrics, String> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("aegis_writer_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .map_err(|e| e.to_string())?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
        describe();
        let process = metrics_process::Collector::default();
        process.describe();
        Ok(Metrics {
            handle,
            process,
            backlog_labels: Mutex::default(),
        })
    }

    /// Folds recorded histogram samples into their buckets; call every few seconds so that
    /// memory stays flat between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition, after reading the store's backlogs and the process's
    /// figures. A store that cannot answer leaves its gauges at their last values and is
    /// counted in `aegis_metrics_store_read_failures_total`; the rest still renders.
    pub async fn render(&self, store: &dyn EventLog) -> String {
        match store.operations().await {
            Ok(snapshot) => self.record_backlogs(store, snapshot),
            Err(error) => {
                tracing::warn!(%error, "cannot read the store's backlogs for /metrics");
                metrics::counter!("aegis_metrics_store_read_failures_total").increment(1);
            }
        }
        self.process.collect();
        self.handle.render()
    }

    fn record_backlogs(&self, store: &dyn EventLog, snapshot: aegis_store::OperationsSnapshot) {
        let head = *store.committed_seq().borrow();
        let now_ms = crate::now_ms();
        let age_secs = |since_ms: i64| (now_ms - since_ms).max(0) as f64 / 1000.0;
        metrics::gauge!("aegis_event_log_head").set(head as f64);
        metrics::gauge!("aegis_approvals_pending").set(snapshot.pending_approvals as f64);
        for position in snapshot.consumers {
            let consumer = position.consumer;
            metrics::gauge!("aegis_consumer_lag_events", "consumer" => consumer.clone())
                .set((head - position.cursor).max(0) as f64);
            metrics::gauge!("aegis_consumer_lag_seconds", "consumer" => consumer)
                .set(position.oldest_unconsumed_at_ms.map_or(0.0, age_secs));
        }
        let mut seen = self.backlog_labels.lock();
        let mut emptied: HashSet<(String, String)> = seen.clone();
        let mut oldest_pending: Vec<(String, f64)> = Vec::new();
        for backlog in snapshot.deliveries {
            let labels = (backlog.sink.clone(), backlog.status.clone());
            emptied.remove(&labels);
            seen.insert(labels);
            if backlog.status == "pending" {
                oldest_pending.push((backlog.sink.clone(), age_secs(backlog.oldest_created_at_ms)));
            }
            metrics::gauge!("aegis_deliveries", "sink" => backlog.sink, "status" => backlog.status)
                .set(backlog.count as f64);
        }
        for (sink, status) in emptied {
            if status == "pending" {
                oldest_pending.push((sink.clone(), 0.0));
            }
            metrics::gauge!("aegis_deliveries", "sink" => sink, "status" => status).set(0.0);
        }
        for (sink, age) in oldest_pending {
            metrics::gauge!("aegis_delivery_oldest_pending_age_seconds", "sink" => sink).set(age);
        }
    }
}

/// Help text for every metric the gateway records (promtool wants one for each).
fn describe() {
    metrics::describe_counter!(
        "aegis_decisions_total",
        "Authorize decisions answered by this process, by decision and tenant"
    );
    metrics::describe_histogram!(
        "aegis_authorize_duration_seconds",
        Unit::Seconds,
        "Time from receiving POST /v1/authorize to its answer, decision durably recorded"
    );
    metrics::describe_counter!(
        "aegis_http_requests_total",
        "HTTP requests answered, by route template and status"
    );
    metrics::describe_histogram!(
        "aegis_writer_batch_size",
        Unit::Count,
        "Jobs committed per group-commit transaction of the store's writer"
    );
    metrics::describe_histogram!(
        "aegis_writer_commit_duration_seconds",
        Unit::Seconds,
        "Time to apply and commit one writer batch"
    );
    metrics::describe_gauge!(
        "aegis_writer_queue_depth",
        Unit::Count,
        "Jobs waiting for the store's writer after its last batch"
    );
    metrics::describe_gauge!(
        "aegis_event_log_head",
        "Highest committed event seq this process knows of"
    );
    metrics::describe_gauge!(
        "aegis_consumer_lag_events",
        Unit::Count,
        "Events committed that the named log consumer has not consumed yet"
    );
    metrics::describe_gauge!(
        "aegis_consumer_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event the named log consumer has not consumed yet"
    );
    metrics::describe_gauge!(
        "aegis_approvals_pending",
        Unit::Count,
        "Approvals of every tenant waiting for operators (neither decided nor expired)"
    );
    metrics::describe_counter!(
        "aegis_incidents_opened_total",
        "Incidents opened by this process's SOC consumer, by kind"
    );
    metrics::describe_gauge!(
        "aegis_deliveries",
        Unit::Count,
        "Notification deliveries not delivered, by sink kind and status (pending or failed)"
    );
    metrics::describe_gauge!(
        "aegis_delivery_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending delivery, by sink kind"
    );
    metrics::describe_counter!(
        aegis_mcp::telemetry::CALLS,
        "MCP tools/call requests of this process, by outcome (forwarded, denied, approval_required, upstream_failed, undecided)"
    );
    metrics::describe_histogram!(
        aegis_mcp::telemetry::UPSTREAM_DURATION,
        Unit::Seconds,
        "Time an allowed MCP call took at its upstream server, answered or not"
    );
    metrics::describe_counter!(
        crate::coherence::CACHE_FLUSHES,
        "Times this process dropped every cached agent and tenant view because it could not read the changes committed to the log"
    );
    metrics::describe_counter!(
        "aegis_metrics_store_read_failures_total",
        "Scrapes of /metrics whose store backlogs could not be read"
    );
}

/// Which tenants get their own label value: the first `cap` a process sees, for as long as
/// it runs. Prometheus keeps one series per value, so the cap bounds the series whatever
/// the number of tenants; the totals stay exact (`other` holds the rest).
pub struct TenantLabels {
    cap: usize,
    labelled: Mutex<HashSet<TenantId>>,
}

impl TenantLabels {
    pub fn new(cap: usize) -> Self {
        TenantLabels {
            cap,
            labelled: Mutex::default(),
        }
    }

    pub fn label(&self, tenant: &TenantId) -> String {
        let mut labelled = self.labelled.lock();
        if labelled.contains(tenant) || labelled.len() < self.cap {
            labelled.insert(tenant.clone());
            tenant.as_str().to_owned()
        } else {
            OTHER_TENANTS.to_owned()
        }
    }
}

/// One tenant's `aegis_decisions_total` counters, one per decision, made once with the
/// tenant's runtime so that counting costs an atomic add.
pub struct DecisionCounters {
    by_verdict: Vec<(Verdict, Counter)>,
}

impl DecisionCounters {
    pub fn new(tenant_label: String) -> Self {
        let by_verdict = (Verdict::ALL.iter())
            .map(|&verdict| {
                let counter = metrics::counter!(
                    "aegis_decisions_total",
                    "decision" => verdict.as_str(),
                    "tenant" => tenant_label.clone()
                );
                (verdict, counter)
            })
            .collect();
        DecisionCounters { by_verdict }
    }

    pub fn count(&self, verdict: Verdict) {
        if let Some((_, counter)) = self.by_verdict.iter().find(|(v, _)| *v == verdict) {
            counter.increment(1);
        }
    }
}

/// Longest request id taken from a client; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 64;

/// The client's `X-Request-Id` when it is short and plain (letters, digits, `-`, `_`, `.`),
/// so a log line never carries what a client smuggled into it; else a fresh id.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|id| {
            let id = id.as_bytes();
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .cloned()
        .unwrap_or_else(fresh_request_id)
}

/// `req_` and a UUIDv7 in hex, written in place: this runs on every request.
fn fresh_request_id() -> HeaderValue {
    const PREFIX: &[u8] = b"req_";
    let mut id = [0u8; PREFIX.len() + uuid::fmt::Simple::LENGTH];
    id[..PREFIX.len()].copy_from_slice(PREFIX);
    uuid::Uuid::now_v7()
        .simple()
        .encode_lower(&mut id[PREFIX.len()..]);
    HeaderValue::from_bytes(&id).expect("ASCII letters, digits and `_` make a header value")
}

/// `aegis_http_requests_total` handles by status and route template, made once each, so that
/// counting a request costs a read lock and an atomic add instead of building, hashing and
/// looking up a labelled key (a profile of `/healthz` put that at ~1,200 instructions).
/// Both label sets are bounded: the router's templates and HTTP's statuses. A handle made
/// before the recorder is installed would count nowhere, so the binary installs it first.
static REQUEST_COUNTERS: LazyLock<RwLock<HashMap<u16, HashMap<String, Counter>>>> =
    LazyLock::new(RwLock::default);

fn count_request(route: &str, status: u16) {
    let known = REQUEST_COUNTERS
        .read()
        .get(&status)
        .and_then(|routes| routes.get(route))
        .cloned();
    let counter = known.unwrap_or_else(|| {
        REQUEST_COUNTERS
            .write()
            .entry(status)
            .or_default()
            .entry(route.to_owned())
            .or_insert_with(|| {
                metrics::counter!("aegis_http_requests_total", "route" => route.to_owned(), "status" => status.to_string())
            })
            .clone()
    });
    counter.increment(1);
}

/// Middleware on every route: answers with the request's `X-Request-Id`, counts it, times
/// authorize calls, and — when access logging is on (`AEGIS_LOG=info`, or
/// `aegis::access=info`) or traces are exported — runs it in a `request` span (request id,
/// method, route template; the authenticating extractor adds the tenant) and logs one access
/// line with status and latency. The span shares the access line's target, so the default
/// filter turns both off: the log layer formatting the span's fields was a fifth of a
/// `/healthz` request's instructions. Nothing from headers other than the request id (and,
/// for traces, `traceparent`), nor any body, query or credential, reaches the span or the
/// line.
pub async fn observe_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id(&request);
    let span = tracing::info_span!(
        target: "aegis::access",
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        route,
        tenant = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    crate::traces::start_request(
        &span,
        request.method(),
        matched.as_ref().map(MatchedPath::as_str),
        request.headers(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    crate::traces::finish_request(&span, status);
    response.headers_mut().insert(REQUEST_ID, id);
    if route == "/v1/authorize" {
        metrics::histogram!("aegis_authorize_duration_seconds").record(latency.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(target: "aegis::access", status, latency_ms = millis(latency), "request answered");
    });
    count_request(route, status);
    response
}

/// Milliseconds with microsecond precision, as log lines show latency.
fn millis(latency: Duration) -> f64 {
    (latency.as_micros() as f64) / 1000.0
}

/// Names the request's tenant in its span, once its credential is known.
pub fn record_tenant(tenant: &TenantId) {
    tracing::Span::current().record("tenant", tenant.as_str());
    crate::traces::record_tenant(tenant);
}
