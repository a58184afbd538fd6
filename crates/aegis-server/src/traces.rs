//! OpenTelemetry traces of requests, when the binary exports them (an OTLP endpoint is
//! configured; see `aegis/src/traces.rs`). The `request` span of
//! [`crate::telemetry::observe_request`] becomes a server span named by method and route
//! template, whose parent is the caller's W3C `traceparent`, with the response status, the
//! tenant and, for a decision, its id and outcome. These are OpenTelemetry attributes set on
//! the span itself, so the access log's fields stay as they are; and every function here
//! returns at once when traces are off (one relaxed load).
//!
//! What a span never carries: a credential, a request or response body (parameters,
//! resources, reasons), a query string, or any header but `traceparent` and `tracestate`.

use aegis_core::model::Verdict;
use aegis_store::TenantId;
use axum::http::{HeaderMap, Method};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Turns the span attributes on. The binary calls it once it has installed the
/// OpenTelemetry layer (without that layer the attributes would go nowhere).
pub fn export() {
    EXPORTING.store(true, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes the request's span a server span, before it is first entered (OpenTelemetry fixes
/// a span's name and parent when it starts). `route` is the router's template, so ids in the
/// path never name a span.
pub(crate) fn start_request(
    span: &tracing::Span,
    method: &Method,
    route: Option<&str>,
    headers: &HeaderMap,
) {
    if !exporting() {
        return;
    }
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    span.record("otel.name", name.as_str());
    span.record("otel.kind", "server");
    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&TraceHeaders(headers))
    });
    // Fails only for a span this layer does not trace (filtered out): nothing to parent.
    let _ = span.set_parent(caller);
    span.set_attribute("http.request.method", method.as_str().to_owned());
    if let Some(route) = route {
        span.set_attribute("http.route", route.to_owned());
    }
}

/// Records the response status; a 5xx marks the span as failed.
pub(crate) fn finish_request(span: &tracing::Span, status: u16) {
    if !exporting() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(Status::error("server error"));
    }
}

/// Names the tenant of the current request's span (its credential's).
pub(crate) fn record_tenant(tenant: &TenantId) {
    if exporting() {
        tracing::Span::current().set_attribute("aegis.tenant", tenant.as_str().to_owned());
    }
}

/// Names the decision the current request recorded, and its outcome.
pub(crate) fn record_decision(decision_id: &str, verdict: Verdict) {
    if exporting() {
        let span = tracing::Span::current();
        span.set_attribute("aegis.decision_id", decision_id.to_owned());
        span.set_attribute("aegis.decision", verdict.as_str());
    }
}

/// The request headers as the propagator reads them; it asks only for its own
/// (`traceparent`, `tracestate`).
struct TraceHeaders<'a>(&'a HeaderMap);

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
