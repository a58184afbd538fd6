//! The buttons: each is a form that posts the session's CSRF token to one route here, which
//! checks the token and the role ([`SignedIn::act`]), calls the same use case as the API
//! route of the same act, and sends the browser back to the page it came from.

use crate::page::{ConsoleResult, FormBody};
use crate::pages::{self, Refused, Thresholds};
use crate::session::SignedIn;
use aegis_core::approval::Verdict;
use aegis_core::model::AutonomyLevel;
use aegis_core::policy::PolicyDocument;
use aegis_server::SharedState;
use aegis_server::auth::{Admin, Operator, Responder};
use aegis_server::error::ApiError;
use aegis_server::extract::Path;
use aegis_server::operations::{self, PolicyChange, PolicyChangeError};
use aegis_server::routes::agents::Reason as ReasonText;
use aegis_server::routes::webhooks::{CreateWebhook, WebhookFormat};
use aegis_store::{DenyStormOverride, IncidentStep, RiskEscalation};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{MethodRouter, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;

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

/// The buttons that do one act on the incident, agent, approval, policy or webhook their path
/// names. Each is a row here, routed with [`button`]. Each arm spells out the role its act
/// needs, and the compiler holds it to the role its use case's signature demands, so it cannot
/// differ from the API route of the same act.
#[derive(Clone, Copy)]
pub enum Act {
    AcknowledgeIncident,
    ApplyRecommendation,
    CloseIncident,
    FreezeAgent,
    UnfreezeAgent,
    RevokeAgent,
    /// Approve or reject a call held for approval, as the session's operator key.
    DecideApproval(Verdict),
    DeletePolicy,
    DeleteWebhook,
}

impl Act {
    /// Checks the form's CSRF token and the key's role (before reading anything else in the
    /// form), then carries the act out on `id`.
    async fn carry_out(
        self,
        state: &SharedState,
        session: &SignedIn,
        id: &str,
        form: &ActForm,
    ) -> ConsoleResult<()> {
        let csrf = form.csrf.as_deref();
        match self {
            Act::AcknowledgeIncident => {
                let operator = session.act::<Responder>(csrf)?;
                operations::step_incident(state, &operator, id, IncidentStep::Acknowledge).await?;
            }
            Act::ApplyRecommendation => {
                let operator = session.act::<Responder>(csrf)?;
                let step = IncidentStep::ApplyRecommendation;
                operations::step_incident(state, &operator, id, step).await?;
            }
            Act::CloseIncident => {
                let operator = session.act::<Responder>(csrf)?;
                let step = IncidentStep::Close {
                    reason: form.reason()?,
                };
                operations::step_incident(state, &operator, id, step).await?;
            }
            Act::FreezeAgent => {
                let operator = session.act::<Responder>(csrf)?;
                operations::freeze_agent(state, &operator, id, form.reason()?).await?;
            }
            Act::UnfreezeAgent => {
                let operator = session.act::<Responder>(csrf)?;
                operations::unfreeze_agent(state, &operator, id).await?;
            }
            Act::RevokeAgent => {
                let operator = session.act::<Admin>(csrf)?;
                operations::revoke_agent(state, &operator, id, form.reason()?).await?;
            }
            Act::DecideApproval(verdict) => {
                let operator = session.act::<Responder>(csrf)?;
                let reason = form.reason()?;
                operations::decide_approval(state, &operator, id, verdict, reason).await?;
            }
            Act::DeletePolicy => {
                let operator = session.act::<Admin>(csrf)?;
                let change = PolicyChange::Delete(id.to_owned());
                operations::change_policy(state, &operator, change)
                    .await
                    .map_err(ApiError::from)?;
            }
            Act::DeleteWebhook => {
                let operator = session.act::<Admin>(csrf)?;
                operations::delete_webhook(state, &operator, id).await?;
            }
        }
        Ok(())
    }

    /// Where the browser goes afterwards when the form does not name a console page.
    fn fallback(self, id: &str) -> String {
        match self {
            Act::AcknowledgeIncident | Act::ApplyRecommendation | Act::CloseIncident => {
                "/console/incidents".to_owned()
            }
            Act::FreezeAgent | Act::UnfreezeAgent | Act::RevokeAgent => {
                format!("/console/agents/{id}")
            }
            Act::DecideApproval(_) => "/console/approvals".to_owned(),
            Act::DeletePolicy | Act::DeleteWebhook => "/console/settings".to_owned(),
        }
    }
}

/// The route of a button (`POST …/{id}/…`): `act` on the path's id, then back to the page
/// the form came from.
pub fn button(act: Act) -> MethodRouter<SharedState> {
    post(
        move |State(state): State<SharedState>,
              session: SignedIn,
              Path(id): Path<String>,
              FormBody(form): FormBody<ActForm>| async move {
            act.carry_out(&state, &session, &id, &form).await?;
            ConsoleResult::Ok(form.back(&act.fallback(&id)).into_response())
        },
    )
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

/// The route of a thresholds form on the Settings page: saved through the API's use case
/// (and so its bounds), then back to the page; a refused value (422) shows the page again
/// with the form as typed and the reason, any other error the error page.
pub fn save_thresholds(form: Thresholds) -> MethodRouter<SharedState> {
    post(
        move |State(state): State<SharedState>,
              session: SignedIn,
              FormBody(fields): FormBody<HashMap<String, String>>| async move {
            let operator = session.act::<Admin>(fields.get("csrf").map(String::as_str))?;
            let typed = form
                .fields()
                .map(|(name, _)| (name, fields.get(name).cloned().unwrap_or_default()));
            match save(form, &state, &operator, &typed).await {
                Ok(()) => Ok(Redirect::to("/console/settings").into_response()),
                Err(error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
                    let refused = Refused::Thresholds { form, typed, error };
                    pages::settings_page(&state, &session, Some(refused)).await
                }
                Err(error) => Err(error.into()),
            }
        },
    )
}

/// Reads the typed fields of `form` and saves them.
async fn save(
    form: Thresholds,
    state: &SharedState,
    operator: &Operator<Admin>,
    [first, second]: &[(&str, String); 2],
) -> Result<(), ApiError> {
    match form {
        // An empty field: the gateway default.
        Thresholds::DenyStorm => {
            let deny_storm = DenyStormOverride {
                threshold: optional_whole(first)?,
                window_secs: optional_whole(second)?,
            };
            operations::set_deny_storm(state, operator, deny_storm).await?;
        }
        Thresholds::RiskEscalation => {
            let escalation = RiskEscalation {
                denial_threshold: required_whole(first)?,
                window_minutes: required_whole(second)?,
            };
            operations::set_risk_escalation(state, operator, escalation).await?;
        }
    }
    Ok(())
}

/// The whole number typed into a field; empty is none.
fn optional_whole((field, text): &(&str, String)) -> Result<Option<u32>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(number) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(number)),
        _ => Err(ApiError::invalid_field(*field, "must be a whole number")),
    }
}

/// The whole number typed into a field that must not be empty.
fn required_whole(typed: &(&str, String)) -> Result<u32, ApiError> {
    optional_whole(typed)?.ok_or_else(|| ApiError::invalid_field(typed.0, "is required"))
}

/// A policy form: the new-policy form, or (`replace` set) the form of a stored policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyForm {
    csrf: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    text: String,
    replace: Option<String>,
}

/// `POST /console/settings/policies`: adds a policy under a new id or replaces a stored one,
/// through the API's use case; a policy Cedar (or the id rule) refuses shows the page again
/// with the policy as typed and where the problem is.
pub async fn save_policy(
    State(state): State<SharedState>,
    session: SignedIn,
    FormBody(form): FormBody<PolicyForm>,
) -> ConsoleResult {
    let operator = session.act::<Admin>(form.csrf.as_deref())?;
    let replacing = form.replace.is_some();
    // Browsers send a textarea's line breaks as CRLF: stored as LF, like a policy put
    // through the API.
    let typed = PolicyDocument {
        id: form.id,
        text: form.text.replace("\r\n", "\n"),
    };
    let change = if replacing {
        PolicyChange::Put(typed.clone())
    } else {
        PolicyChange::Create(typed.clone())
    };
    match operations::change_policy(&state, &operator, change).await {
        Ok(_) => Ok(Redirect::to("/console/settings#policies-title").into_response()),
        Err(PolicyChangeError::Refused(error)) => {
            let refused = Refused::Policy {
                replacing,
                typed,
                error,
            };
            pages::settings_page(&state, &session, Some(refused)).await
        }
        Err(PolicyChangeError::Other(error)) => Err(error.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookForm {
    csrf: Option<String>,
    #[serde(default)]
    url: String,
    format: WebhookFormat,
}

/// `POST /console/settings/webhooks`: subscribes a URL through the API's use case (and so
/// its SSRF rule), then shows the signing secret once, on a page of its own, as the API
/// answers it once. A refused URL shows the Settings page again with the form as typed.
pub async fn add_webhook(
    State(state): State<SharedState>,
    session: SignedIn,
    FormBody(form): FormBody<WebhookForm>,
) -> ConsoleResult {
    let operator = session.act::<Admin>(form.csrf.as_deref())?;
    let request = CreateWebhook {
        url: form.url.clone(),
        format: Some(form.format),
        events: None,
        secret: None,
    };
    let created = match operations::create_webhook(&state, &operator, request).await {
        Ok(created) => created,
        Err(error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let refused = Refused::Webhook {
                url: form.url,
                format: form.format,
                error,
            };
            return pages::settings_page(&state, &session, Some(refused)).await;
        }
        Err(error) => return Err(error.into()),
    };
    let body = html! {
        h1 { "Webhook added" }
        p { "Notifications are now sent to " code { (created.view.url) } " (" (created.view.format) ")." }
        p { "Each delivery is signed with this secret. Keep it in the receiving system now: it is shown only this once." }
        p { output #webhook-secret.secret { (created.secret) } }
        p { a href="/console/settings#webhooks-title" { "Back to Settings" } }
    };
    Ok(session.page("Webhook added").render(body).into_response())
}
