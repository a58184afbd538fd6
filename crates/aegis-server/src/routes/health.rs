//! Liveness and readiness, without authentication.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use axum::Json;
use axum::extract::State;
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
