//! Console sign-in: an operator pastes an operator key once; the console opens a session in
//! the database (so it survives restarts and is valid on every replica) and gives the
//! browser only a random session id, in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! when the gateway is reached over https) that expires with the session. The key itself is
//! never stored in the browser.
//!
//! Every request re-reads the key behind the session, so revoking the key ends its sessions
//! and its role decides what each request may do. Every state change also carries the
//! session's CSRF token, derived from the session id, which a page from another site cannot
//! read.

use crate::page::{ConsoleError, FormBody, Page};
use aegis_core::model::Role;
use aegis_server::SharedState;
use aegis_server::auth::{Operator, RequiredRole, Viewer, hash_secret, new_secret};
use aegis_server::error::ApiError;
use aegis_store::{NewConsoleSession, OperatorKey, SecretHash};
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie, scoped to the console's paths.
const COOKIE_NAME: &str = "aegis_console";
/// Prefix of session ids (never shown; only in the cookie).
const SESSION_PREFIX: &str = "acs_";
/// How long a session lasts after sign-in.
pub const SESSION_TTL_SECS: i64 = 8 * 60 * 60;
/// Longest operator key the sign-in form reads.
const MAX_KEY_CHARS: usize = 200;

/// A signed-in browser: the session's id hash, the key behind it, and its CSRF token.
pub struct SignedIn {
    id_hash: SecretHash,
    key: OperatorKey,
    /// Put in every form; checked on every state change.
    pub csrf: String,
}

impl SignedIn {
    pub fn role(&self) -> Role {
        self.key.role
    }

    /// The operator for reading pages (any role).
    pub fn viewer(&self) -> Result<Operator<Viewer>, ConsoleError> {
        Ok(Operator::from_key(self.key.clone())?)
    }

    /// The operator for a state change: refused (403) without this session's CSRF token,
    /// and refused (403) when the key's role does not grant `R`, whatever the page offered.
    pub fn act<R: RequiredRole>(&self, csrf: Option<&str>) -> Result<Operator<R>, ConsoleError> {
        let presented = csrf.unwrap_or_default().as_bytes();
        if !bool::from(presented.ct_eq(self.csrf.as_bytes())) {
            return Err(ApiError {
                field: Some("csrf".to_owned()),
                ..ApiError::forbidden(
                    "this form is missing the session's CSRF token (or has another session's): reload the page and try again",
                )
            }
            .into());
        }
        Ok(Operator::from_key(self.key.clone())?)
    }

    /// The page chrome for this operator.
    pub fn page<'a>(&'a self, title: &'a str) -> Page<'a> {
        Page::signed_in(title, self.role(), &self.csrf)
    }
}

/// The CSRF token of a session: a hash of its id, so only a holder of the cookie (or a page
/// the server rendered for it) knows it, and nothing more has to be stored.
fn csrf_token(session_id: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"aegis-console-csrf\0");
    digest.update(session_id.as_bytes());
    hex::encode(digest.finalize())
}

/// The session id the browser sent, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|value| value.starts_with(SESSION_PREFIX))
}

impl SignedIn {
    /// The session of a request's cookie, if it is open and its key is not revoked.
    pub async fn from_headers(
        state: &SharedState,
        headers: &HeaderMap,
    ) -> Result<Self, ConsoleError> {
        let session_id = session_cookie(headers).ok_or(ConsoleError::SignInNeeded)?;
        let id_hash = hash_secret(session_id);
        let key = state
            .store
            .console_session_key(id_hash, aegis_server::now_ms())
            .await?
            .filter(|key| key.revoked_at_ms.is_none())
            .ok_or(ConsoleError::SignInNeeded)?;
        Ok(SignedIn {
            id_hash,
            csrf: csrf_token(session_id),
            key,
        })
    }
}

impl FromRequestParts<SharedState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        SignedIn::from_headers(state, &parts.headers).await
    }
}

/// `GET /console/sign-in`.
pub async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, problem: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in to the SOC console" }
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        form.sign-in method="post" action="/console/sign-in" {
            label for="key" { "Operator key" }
            input #key name="key" type="password" autocomplete="off" required
                maxlength=(MAX_KEY_CHARS) aria-describedby="key-help";
            p #key-help.help {
                "Paste an operator key (aok_…). It is sent once; the console keeps a session and forgets the key."
            }
            button type="submit" { "Sign in" }
        }
    };
    (status, Page::signed_out("Sign in").render(body)).into_response()
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
}

/// `POST /console/sign-in`: checks the key as the API does and opens a session.
pub async fn sign_in(
    State(state): State<SharedState>,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return sign_in_form(
            StatusCode::BAD_REQUEST,
            Some("Send the form from this page."),
        );
    };
    let key = form.key.trim();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return sign_in_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Operator key: paste the whole key (aok_…)."),
        );
    }
    let operator = match Operator::<Viewer>::from_secret(&state, key).await {
        Ok(operator) => operator,
        Err(error) if error.status == StatusCode::UNAUTHORIZED => {
            return sign_in_form(
                StatusCode::UNAUTHORIZED,
                Some("This operator key is not valid (unknown, revoked, or an agent token)."),
            );
        }
        Err(error) => return ConsoleError::from(error).into_response(),
    };
    match open_session(&state, operator).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn open_session(
    state: &SharedState,
    operator: Operator<Viewer>,
) -> Result<Response, ConsoleError> {
    let (session_id, id_hash) = new_secret(SESSION_PREFIX)?;
    let now = aegis_server::now_ms();
    state
        .store
        .open_console_session(NewConsoleSession {
            id_hash,
            tenant_id: operator.tenant.clone(),
            key_id: operator.key_id.clone(),
            created_at_ms: now,
            expires_at_ms: now + SESSION_TTL_SECS * 1000,
        })
        .await
        .map_err(ApiError::from)?;
    tracing::info!(tenant = %operator.tenant, key_id = %operator.key_id, "console session opened");
    let cookie = session_cookie_header(state, &session_id, SESSION_TTL_SECS);
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/console/incidents")).into_response())
}

fn session_cookie_header(state: &SharedState, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.settings.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/console; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie text is ASCII")
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /console/sign-out`: ends the session in the database and clears the cookie.
pub async fn sign_out(
    State(state): State<SharedState>,
    session: SignedIn,
    FormBody(form): FormBody<CsrfForm>,
) -> Result<Response, ConsoleError> {
    session.act::<Viewer>(form.csrf.as_deref())?;
    state
        .store
        .end_console_session(session.id_hash)
        .await
        .map_err(ApiError::from)?;
    let cookie = session_cookie_header(&state, "", 0);
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/console/sign-in")).into_response())
}
