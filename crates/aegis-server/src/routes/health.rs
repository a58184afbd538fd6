//! Liveness and readiness, without authentication.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::telemetry::Metrics;
use aegis_store::EventLog;
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// How long `/readyz` waits for its commit to go through the writer: a replica that cannot
/// commit within this takes no traffic.
const COMMIT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses(
        (status = 200, description = "The process is up", body = Health),
    ))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers and this process can commit to it: a commit goes through the
/// writer, behind the writes already queued, within 2 s. 503 otherwise (code
/// `not_ready`, the reason in the message), until commits succeed again.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<SharedState>) -> ApiResult<Json<Health>> {
    let not_ready = |reason: String| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        )
    };
    state
        .store
        .ping()
        .await
        .map_err(|e| not_ready(format!("database not reachable: {e}")))?;
    match tokio::time::timeout(COMMIT_CHECK_TIMEOUT, state.store.check_commit()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => Err(not_ready(format!("cannot commit: {e}"))),
        Err(_) => Err(not_ready(format!(
            "cannot commit: no commit within {} s",
            COMMIT_CHECK_TIMEOUT.as_secs()
        ))),
    }
}

/// The Prometheus text format content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics, without authentication like the health checks (no label names an
/// agent, a decision or a credential). 404 when this listener does not serve them: the
/// gateway runs without metrics, or serves them on `AEGIS_METRICS_LISTEN` instead.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 404, description = "Metrics are not served on this listener", body = ErrorBody),
    ))]
pub async fn metrics(State(state): State<SharedState>) -> ApiResult<impl IntoResponse> {
    let metrics = (state.settings.metrics.as_ref())
        .ok_or_else(|| ApiError::not_found("metrics on this listener"))?;
    Ok(render_metrics(metrics, state.store.as_ref()).await)
}

/// The answer of a metrics scrape, on the API listener or on `AEGIS_METRICS_LISTEN`.
pub async fn render_metrics(metrics: &Metrics, store: &dyn EventLog) -> impl IntoResponse + use<> {
    let text = metrics.render(store).await;
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], text)
}
