//! The SOC console: the deny-storm runbook in a browser, served by the gateway itself at
//! `/console`.
//!
//! Pages are rendered on the server from compile-time templates ([maud]); the one script
//! and stylesheet are compiled into the binary and a strict Content-Security-Policy forbids
//! anything else, so the console never makes a request to another host. The console holds
//! no rule of its own: every page reads through the store calls the API's handlers use, and
//! every button calls the same use case as the API route of the same act
//! ([`aegis_server::operations`]), with the operator the session stands for.
//!
//! Sign-in turns a pasted operator key into a server-side session ([`session`]); the key's
//! role decides which buttons a page offers and, again, whether the server carries an act
//! out. The incident list follows the live event feed through a WebSocket that the session
//! authenticates (`feed`).
//!
//! ```no_run
//! # async fn run(state: aegis_server::SharedState) -> std::io::Result<()> {
//! use aegis_server::serve::{ReadTimeouts, serve};
//! let app = aegis_server::router_with(state, aegis_console::routes());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app, ReadTimeouts::default(), std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

mod actions;
mod assets;
mod feed;
mod graph;
mod page;
mod pages;
pub mod session;

use actions::{Act, button};
use aegis_core::approval::Verdict;
use aegis_server::SharedState;
use axum::Router;
use axum::routing::{get, post};
use pages::Thresholds;

/// The console's routes, all under `/console`, to merge into the gateway's router.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/console", get(pages::home))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/incidents", get(pages::incidents))
        .route("/console/incidents/{id}", get(pages::incident))
        .route(
            "/console/incidents/{id}/acknowledge",
            button(Act::AcknowledgeIncident),
        )
        .route("/console/incidents/{id}/close", button(Act::CloseIncident))
        .route(
            "/console/incidents/{id}/apply",
            button(Act::ApplyRecommendation),
        )
        .route("/console/agents", get(pages::agents))
        .route("/console/agents/{id}", get(pages::agent))
        .route("/console/agents/{id}/freeze", button(Act::FreezeAgent))
        .route("/console/agents/{id}/unfreeze", button(Act::UnfreezeAgent))
        .route("/console/agents/{id}/revoke", button(Act::RevokeAgent))
        .route(
            "/console/agents/{id}/rotate-token",
            post(actions::rotate_token),
        )
        .route("/console/approvals", get(pages::approvals))
        .route(
            "/console/approvals/{id}/approve",
            button(Act::DecideApproval(Verdict::Approve)),
        )
        .route(
            "/console/approvals/{id}/reject",
            button(Act::DecideApproval(Verdict::Reject)),
        )
        .route("/console/decisions", get(pages::decisions))
        .route("/console/settings", get(pages::settings))
        .route("/console/settings/autonomy", post(actions::set_autonomy))
        .route(
            "/console/settings/deny-storm",
            actions::save_thresholds(Thresholds::DenyStorm),
        )
        .route(
            "/console/settings/risk-escalation",
            actions::save_thresholds(Thresholds::RiskEscalation),
        )
        .route("/console/settings/policies", post(actions::save_policy))
        .route(
            "/console/settings/policies/{id}/delete",
            button(Act::DeletePolicy),
        )
        .route("/console/settings/webhooks", post(actions::add_webhook))
        .route(
            "/console/settings/webhooks/{id}/delete",
            button(Act::DeleteWebhook),
        )
        .route("/console/feed", get(feed::feed))
        .route("/console/assets/console.js", get(assets::script))
        .route("/console/assets/console.css", get(assets::style))
        .layer(axum::middleware::map_response(page::security_headers))
}
