//! The buttons: each is a form that posts the session's CSRF token to one route here, which
//! checks the token and the role ([`SignedIn::act`]), calls the same use case as the API
//! route of the same act, and sends the browser back to the page it came from.

use crate::page::{ConsoleResult, FormBody};
use crate::session::SignedIn;
use aegis_core::model::AutonomyLevel;
use aegis_server::SharedState;
use aegis_server::auth::{Admin, Responder};
use aegis_server::error::ApiError;
use aegis_server::extract::Path;
use aegis_server::operations;
use aegis_server::routes::agents::Reason as ReasonText;
use aegis_store::IncidentStep;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

/// Whether a button's form asks for a reason.
#[derive(Clone, Copy)]
pub enum Reason {
    None,
    Optional,
}

/// A button as a form: posts the CSRF token, where to go back to and, where the act takes
/// one, a reason. `confirm` is the question the script asks before sending it.
pub fn form(
    action: &str,
    label: &str,
    csrf: &str,
    back: &str,
    confirm: Option<&str>,
    reason: Reason,
) -> Markup {
    html! {
        form.action method="post" action=(action) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="back" value=(back);
            @if let Reason::Optional = reason {
                label { "Reason" input name="reason" maxlength="2000" placeholder="why (recorded)"; }
            }
            button type="submit" { (label) }
        }
    }
}

/// The body of every button's form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActForm {
    csrf: Option<String>,
    back: Option<String>,
    reason: Option<String>,
}

impl ActForm {
    /// The reason, if one was typed (blank means none), checked as the API checks it.
    fn reason(&self) -> Result<Option<String>, ApiError> {
        match self.reason.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(reason) => ReasonText::parse(reason.to_owned())
                .map(|reason| Some(reason.into_string()))
                .map_err(|problem| ApiError::invalid_field("reason", problem)),
        }
    }

    /// Back to the console page the form came from; anything else goes to `fallback`.
    fn back(&self, fallback: &str) -> Redirect {
        let back = self.back.as_deref().filter(|back| is_console_path(back));
        Redirect::to(back.unwrap_or(fallback))
    }
}

/// A path inside the console (never another host: no scheme, no `//`, no backslash).
fn is_console_path(path: &str) -> bool {
    path.starts_with("/console/")
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.?=&%".contains(&b))
}

pub async fn acknowledge(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Responder>(form.csrf.as_deref())?;
    operations::step_incident(&state, &operator, &id, IncidentStep::Acknowledge).await?;
    Ok(form.back("/console/incidents").into_response())
}

pub async fn close(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Responder>(form.csrf.as_deref())?;
    let reason = form.reason()?;
    operations::step_incident(&state, &operator, &id, IncidentStep::Close { reason }).await?;
    Ok(form.back("/console/incidents").into_response())
}

pub async fn apply(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Responder>(form.csrf.as_deref())?;
    operations::step_incident(&state, &operator, &id, IncidentStep::ApplyRecommendation).await?;
    Ok(form.back("/console/incidents").into_response())
}

pub async fn freeze(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Responder>(form.csrf.as_deref())?;
    let reason = form.reason()?;
    operations::freeze_agent(&state, &operator, &id, reason).await?;
    Ok(form.back(&format!("/console/agents/{id}")).into_response())
}

pub async fn unfreeze(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Responder>(form.csrf.as_deref())?;
    operations::unfreeze_agent(&state, &operator, &id).await?;
    Ok(form.back(&format!("/console/agents/{id}")).into_response())
}

pub async fn revoke(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Admin>(form.csrf.as_deref())?;
    let reason = form.reason()?;
    operations::revoke_agent(&state, &operator, &id, reason).await?;
    Ok(form.back(&format!("/console/agents/{id}")).into_response())
}

/// Shows the new token on a page of its own, once (the page is not cached).
pub async fn rotate_token(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
    FormBody(form): FormBody<ActForm>,
) -> ConsoleResult {
    let operator = session.act::<Admin>(form.csrf.as_deref())?;
    let token = operations::rotate_agent_token(&state, &operator, &id).await?;
    let body = html! {
        h1 { "New token for agent " code { (id) } }
        p { "Give this token to the agent now: it is shown only this once, and the previous token already answers 401." }
        p { output #new-token.secret { (token) } }
        p { a href=(format!("/console/agents/{id}")) { "Back to the agent" } }
    };
    Ok(session.page("New token").render(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutonomyForm {
    csrf: Option<String>,
    level: Option<String>,
}

/// Sets (or clears, with an empty level) the tenant's SOC autonomy override.
pub async fn set_autonomy(
    State(state): State<SharedState>,
    session: SignedIn,
    FormBody(form): FormBody<AutonomyForm>,
) -> ConsoleResult {
    let operator = session.act::<Admin>(form.csrf.as_deref())?;
    let level = match form.level.as_deref().unwrap_or_default() {
        "" => None,
        level => Some(
            level
                .parse::<AutonomyLevel>()
                .map_err(|unknown| ApiError::invalid_field("level", unknown.to_string()))?,
        ),
    };
    state
        .store
        .set_autonomy_override(&operator.tenant, level, &operator.actor())
        .await
        .map_err(ApiError::from)?;
    Ok(Redirect::to("/console/settings").into_response())
}
