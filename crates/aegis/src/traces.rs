//! OpenTelemetry traces of `aegis serve`, exported over OTLP/HTTP (protobuf) when the
//! standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! The SDK reads the rest of the standard variables itself (headers, timeout, sampler,
//! batching, resource attributes, `OTEL_SERVICE_NAME`, default `aegis`). Spans are batched on
//! the SDK's own thread and flushed at a clean shutdown.
//!
//! What is traced is the `aegis::access` target's spans only: each request's server span
//! (`aegis-server/src/traces.rs` names it and its attributes) and the store writer's batch
//! spans, linked to the requests they commit. No log event becomes a span event.

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// The one protocol this build speaks; the SDK would fall back to it silently.
const HTTP_PROTOBUF: &str = "http/protobuf";
/// The target of the spans exported (`aegis-server`'s request span, the writers' batches).
const TRACED_TARGET: &str = "aegis::access";

fn set(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|value| !value.is_empty())
}

/// The exporter, when an OTLP endpoint is configured (and `OTEL_SDK_DISABLED` is not
/// `true`); `None` leaves tracing entirely off.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    pub fn from_env() -> anyhow::Result<Option<Traces>> {
        if !ENDPOINTS.iter().any(|var| set(var).is_some())
            || set("OTEL_SDK_DISABLED")
                .is_some_and(|disabled| disabled.eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        // The first one set wins, as in the SDK.
        if let Some((var, protocol)) = PROTOCOLS
            .iter()
            .find_map(|var| set(var).map(|protocol| (var, protocol)))
            && protocol != HTTP_PROTOBUF
        {
            bail!("{var}={protocol}: traces are exported over {HTTP_PROTOBUF} only");
        }
        // The exporter's HTTP client needs one; installed already when MCP came first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("cannot set up the OTLP trace exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Some(Traces { provider }))
    }

    /// The layer that turns the traced target's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        // Only the attributes the spans name: no source location, thread, target or
        // busy/idle timings.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("aegis"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && metadata.target() == TRACED_TARGET
            }))
    }

    /// Exports the spans still queued; call after the last request.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::error!(%error, "cannot flush the last spans");
        }
    }
}

/// What the SDK detects (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named `aegis`
/// unless one of them names the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    match unnamed {
        true => Resource::builder().with_service_name("aegis").build(),
        false => detected,
    }
}
