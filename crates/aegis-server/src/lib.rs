//! The AegisAgent HTTP gateway.
//!
//! [`router`] builds the whole API over an [`AppState`]: the action plane
//! (`POST /v1/authorize`, agent tokens) and the management plane (`/v1/agents`, `/v1/keys`,
//! `/v1/tools`, `/v1/policies`, `/v1/decisions`, `/v1/tenants/*`, operator keys with roles).
//! The OpenAPI document at `/openapi.json` is generated from the same handler declarations
//! that build the router, so the two cannot drift.
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn aegis_store::Store>) -> std::io::Result<()> {
//! use aegis_server::serve::{ReadTimeouts, serve};
//! use aegis_server::{AppState, Settings, router};
//! let app = router(AppState::new(store, Settings::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app, ReadTimeouts::default(), std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod action_plane;
pub mod approvals;
pub mod auth;
pub mod coherence;
pub mod error;
pub mod evidence;
pub mod extract;
pub mod live_feed;
pub mod markdown;
pub mod mcp_gateway;
pub mod openapi;
pub mod operations;
pub mod rate_limit;
pub mod routes;
pub mod serve;
pub mod state;
pub mod telemetry;
pub mod traces;
pub mod validate;

pub use aegis_store::now_ms;
pub use state::{AppState, Settings, SharedState};

use crate::error::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use routes::*;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The API router and its OpenAPI document, built from the same declarations.
pub fn api() -> (Router<SharedState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(authorize::authorize))
        .routes(routes!(agents::create_agent, agents::list_agents))
        .routes(routes!(agents::get_agent, agents::patch_agent))
        .routes(routes!(agents::freeze_agent))
        .routes(routes!(agents::unfreeze_agent))
        .routes(routes!(agents::revoke_agent))
        .routes(routes!(agents::rotate_token))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(tools::register_tool, tools::list_tools))
        .routes(routes!(policies::list_policies, policies::create_policy))
        .routes(routes!(policies::policy_schema))
        .routes(routes!(
            policies::get_policy,
            policies::put_policy,
            policies::delete_policy
        ))
        .routes(routes!(decisions::list_decisions))
        .routes(routes!(decisions::get_decision))
        .routes(routes!(
            tenants::get_soc_autonomy,
            tenants::put_soc_autonomy
        ))
        .routes(routes!(tenants::get_deny_storm, tenants::put_deny_storm))
        .routes(routes!(
            tenants::get_approval_settings,
            tenants::put_approval_settings
        ))
        .routes(routes!(tenants::get_retention, tenants::put_retention))
        .routes(routes!(routes::approvals::list_approvals))
        .routes(routes!(routes::approvals::get_approval))
        .routes(routes!(routes::approvals::approve))
        .routes(routes!(routes::approvals::reject))
        .routes(routes!(slack::register_approver))
        .routes(routes!(slack::slack_callback))
        .routes(routes!(
            tenants::get_exfiltration,
            tenants::put_exfiltration
        ))
        .routes(routes!(incidents::list_incidents))
        .routes(routes!(incidents::get_incident))
        .routes(routes!(incidents::list_incident_decisions))
        .routes(routes!(incidents::ack_incident))
        .routes(routes!(incidents::close_incident))
        .routes(routes!(incidents::apply_recommendation))
        .routes(routes!(incidents::list_alerts))
        .routes(routes!(ws::events_feed))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(graph::incident_graph))
        .routes(routes!(graph::run_graph))
        .routes(routes!(graph::agent_graph))
        .routes(routes!(investigate::narrate, investigate::renarrate))
        .routes(routes!(investigate::evidence_bundle))
        .routes(routes!(receipts::list_receipts))
        .routes(routes!(receipts::list_keys))
        .routes(routes!(receipts::verify_range))
        .routes(routes!(receipts::get_receipt))
        .routes(routes!(receipts::verify_receipt))
        .routes(routes!(
            tenants::get_risk_escalation,
            tenants::put_risk_escalation
        ))
        .routes(routes!(
            rate_limits::get_rate_limits,
            rate_limits::put_rate_limits
        ))
        .routes(routes!(rate_limits::get_budgets, rate_limits::put_budgets))
        .routes(routes!(
            rate_limits::get_agent_rate_limits,
            rate_limits::put_agent_rate_limits
        ))
        .routes(routes!(mcp::create_mcp_server, mcp::list_mcp_servers))
        .routes(routes!(mcp::get_mcp_server, mcp::delete_mcp_server))
        .routes(routes!(mcp::list_mcp_tools))
        .routes(routes!(mcp::accept_mcp_tool))
        .routes(routes!(mcp::put_mcp_tool))
        .routes(routes!(mcp_stdio::report_listing))
        .routes(routes!(mcp_stdio::report_call))
        .split_for_parts();
    openapi::add_layer_answers(&mut openapi);
    (router, openapi)
}

/// Longest request target (path and query) the gateway reads. Longer ones answer 414 here,
/// in the JSON error shape, well before hyper's own limit (64 KiB, answered without a body).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The complete application: API, `/openapi.json`, and every answer outside a handler in the
/// JSON error shape: unknown routes (404), methods a route lacks (405, with `Allow`), request
/// targets over [`MAX_URI_BYTES`] (414); bodies over the limit (413) are refused by
/// [`extract::JsonBody`].
pub fn router(state: SharedState) -> impl App {
    router_with(state, Router::new())
}

/// What [`router`] returns: a service answering every request, cheap to clone for each
/// connection.
pub trait App:
    tower::Service<
        Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            Request,
            Response = Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// [`router`] with more routes outside the API (the console), which get the same limits
/// and the same answers to unknown routes. They are not in the OpenAPI document.
pub fn router_with(state: SharedState, extra: Router<SharedState>) -> impl App {
    let (api, openapi) = api();
    let openapi = std::sync::Arc::new(openapi);
    let max_body_bytes = state.settings.max_body_bytes;
    let routed = api
        .merge(extra)
        .route(
            // An MCP endpoint speaks JSON-RPC, not this API; it is described by the MCP
            // specification rather than the OpenAPI document.
            "/mcp/{server}",
            axum::routing::any(crate::mcp_gateway::mcp_endpoint),
        )
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = std::sync::Arc::clone(&openapi);
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not answer this method; see the Allow header",
            )
        })
        .fallback(|| async { ApiError::not_found("route") })
        // Inside the router, where the route a request matched is known (its metrics label).
        .layer(axum::middleware::from_fn(telemetry::observe_request))
        .with_state(state);
    // Around the router: `Router::layer` wraps each route in the layer, and every request
    // clones and boxes each wrapper on its way in (about a fifth of a no-op request's
    // instructions for these two). Neither needs the route.
    tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn(refuse_long_uris))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .service(routed)
}

async fn refuse_long_uris(request: Request, next: Next) -> Response {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The router of a listener that serves only `GET /metrics` (`AEGIS_METRICS_LISTEN`).
pub fn metrics_router(
    metrics: std::sync::Arc<telemetry::Metrics>,
    store: std::sync::Arc<dyn aegis_store::Store>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = std::sync::Arc::clone(&metrics);
                let store = std::sync::Arc::clone(&store);
                async move { routes::health::render_metrics(&metrics, store.as_ref()).await }
            }),
        )
        .fallback(|| async { ApiError::not_found("route") })
}
