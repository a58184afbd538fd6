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
//! use aegis_server::{AppState, Settings, router};
//! let app = router(AppState::new(store, Settings::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

pub mod auth;
pub mod coherence;
pub mod error;
pub mod evidence;
pub mod extract;
pub mod live_feed;
pub mod markdown;
pub mod routes;
pub mod serve;
pub mod state;
mod validate;

pub use aegis_store::now_ms;
pub use state::{AppState, Settings, SharedState};

use crate::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use routes::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "AegisAgent gateway", description = "Authorization gateway between AI agents and their tools."),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["agent_token", "operator_key"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The API router and its OpenAPI document, built from the same declarations.
pub fn api() -> (Router<SharedState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
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
        .split_for_parts()
}

/// The complete application: API, `/openapi.json`, JSON 404s and the body limit.
pub fn router(state: SharedState) -> Router {
    let (api, openapi) = api();
    let openapi = std::sync::Arc::new(openapi);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let openapi = std::sync::Arc::clone(&openapi);
            async move { axum::Json(openapi.as_ref().clone()) }
        }),
    )
    .fallback(|| async { ApiError::not_found("route") })
    .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
    .with_state(state)
}
