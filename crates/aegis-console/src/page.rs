//! The chrome around every page (navigation, the operator's role, sign-out), the one error
//! page, and the headers every console answer carries.

use aegis_core::model::Role;
use aegis_server::error::ApiError;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;

/// Only this origin, for everything: no inline script or style, no request to another host,
/// no framing. The live feed's WebSocket is same-origin too (`connect-src 'self'`).
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the console's security headers to an answer.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The pages of the navigation bar: (path, label).
const NAVIGATION: &[(&str, &str)] = &[
    ("/console/incidents", "Incidents"),
    ("/console/approvals", "Approvals"),
    ("/console/agents", "Agents"),
    ("/console/decisions", "Decisions"),
    ("/console/settings", "Settings"),
];

/// A page being rendered: its title and, when signed in, the operator's role and the
/// session's CSRF token (for the sign-out form).
pub struct Page<'a> {
    title: &'a str,
    signed_in: Option<(Role, &'a str)>,
}

impl<'a> Page<'a> {
    pub fn signed_out(title: &'a str) -> Self {
        Page {
            title,
            signed_in: None,
        }
    }

    pub fn signed_in(title: &'a str, role: Role, csrf: &'a str) -> Self {
        Page {
            title,
            signed_in: Some((role, csrf)),
        }
    }

    pub fn render(&self, body: Markup) -> Html<String> {
        Html(
            html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta name="viewport" content="width=device-width, initial-scale=1";
                        title { (self.title) " · AegisAgent console" }
                        link rel="stylesheet" href="/console/assets/console.css";
                        script src="/console/assets/console.js" defer {}
                    }
                    body {
                        header.top {
                            a.brand href="/console" { "AegisAgent" }
                            @if let Some((role, csrf)) = self.signed_in {
                                nav aria-label="Console pages" {
                                    @for (path, label) in NAVIGATION {
                                        a href=(path) { (label) }
                                    }
                                }
                                span.role title="The role of the operator key you signed in with" { (role.as_str()) }
                                form.sign-out method="post" action="/console/sign-out" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                        main { (body) }
                    }
                }
            }
            .into_string(),
        )
    }
}

/// Why a console request failed: not signed in (a page redirects to the sign-in form), or
/// the API's own error, shown as a page with the same status, code and field.
#[derive(Debug)]
pub enum ConsoleError {
    SignInNeeded,
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        ConsoleError::Api(error)
    }
}

impl From<aegis_store::StoreError> for ConsoleError {
    fn from(error: aegis_store::StoreError) -> Self {
        ConsoleError::Api(error.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let error = match self {
            ConsoleError::SignInNeeded => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::Api(error) => error,
        };
        let body = html! {
            h1 { "That did not work" }
            p.error role="alert" {
                (error.message)
                @if let Some(field) = &error.field { " (field: " code { (field) } ")" }
            }
            p.help { "Status " (error.status.as_u16()) ", code " code { (error.code) } ". "
                a href="/console/incidents" { "Back to the incidents" } }
        };
        (error.status, Page::signed_out("Error").render(body)).into_response()
    }
}

pub type ConsoleResult<T = Response> = Result<T, ConsoleError>;

/// A form body (`application/x-www-form-urlencoded`); one that cannot be read answers the
/// error page naming the problem.
pub struct FormBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FormBody<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(FormBody(value)),
            Err(rejection) => Err(form_error(rejection).into()),
        }
    }
}

fn form_error(rejection: FormRejection) -> ApiError {
    ApiError::new(
        if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        },
        "unreadable_form",
        format!("the form cannot be read: {}", rejection.body_text()),
    )
}

/// A timestamp shown in the viewer's time zone (the script rewrites it; without script it
/// reads as UTC).
pub fn timestamp(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) { (rfc3339) } }
}

/// A timestamp of Unix milliseconds.
pub fn timestamp_ms(ms: i64) -> Markup {
    timestamp(&aegis_core::timestamp::format_millis(ms))
}
