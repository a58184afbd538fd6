//! The HTTP side of the operator CLI: one request with the operator key, and the answer or
//! a [`Failure`] that says in one line what went wrong.

use super::Call;
use super::table::inert;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// The environment variable holding the operator key.
const KEY_VARIABLE: &str = "AEGIS_KEY";

/// Longest wait for an answer: a responder's narrative may wait on the LLM narrator.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of the response header that carries the next page's cursor.
const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// Why a command failed, each with its own exit code (the README lists them).
#[derive(Debug)]
pub enum Failure {
    /// Not the gateway's doing: no usable key or `--url` (nothing was sent), or the answer
    /// could not be written to standard output.
    Local(String),
    /// 404: the agent, incident or approval does not exist (in this tenant).
    NotFound(String),
    /// Another 4xx: a bad key (401), a role too low (403), a state that does not allow it
    /// (409), an invalid value (422).
    Refused(String),
    /// The gateway could not be reached, did not answer in time, failed (5xx), or answered
    /// something that is not the API's JSON.
    Unreachable(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Local(_) => 1,
            Failure::NotFound(_) => 3,
            Failure::Refused(_) => 4,
            Failure::Unreachable(_) => 5,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Failure::Local(message)
        | Failure::NotFound(message)
        | Failure::Refused(message)
        | Failure::Unreachable(message)) = self;
        f.write_str(message)
    }
}

/// A successful answer: the body as sent, parsed, and the next page's cursor if any.
pub struct Answer {
    pub body: String,
    pub json: Value,
    pub next_cursor: Option<String>,
}

pub struct Gateway {
    http: reqwest::Client,
    base: url::Url,
    authorization: HeaderValue,
}

impl Gateway {
    /// The gateway at `base` (an `http(s)://` URL without query), with the key in `AEGIS_KEY`.
    pub fn from_env(base: &str) -> Result<Gateway, Failure> {
        let key = std::env::var(KEY_VARIABLE).unwrap_or_default();
        if key.trim().is_empty() {
            return Err(Failure::Local(format!(
                "{KEY_VARIABLE} is not set: export an operator key (aok_…) in it"
            )));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                Failure::Local(format!(
                    "{KEY_VARIABLE} holds characters no operator key has"
                ))
            })?;
        authorization.set_sensitive(true);
        let base = url::Url::parse(base)
            .map_err(|error| Failure::Local(format!("--url {base}: {error}")))?;
        // Error lines name the URL, and its credentials would go out beside the key.
        if !base.username().is_empty() || base.password().is_some() {
            return Err(Failure::Local(
                "--url must not carry a user or password: the operator key goes in AEGIS_KEY"
                    .into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            .build()
            .map_err(|error| Failure::Local(format!("cannot set up HTTP: {error}")))?;
        Ok(Gateway {
            http,
            base,
            authorization,
        })
    }

    pub async fn send(&self, call: &Call) -> Result<Answer, Failure> {
        let url = self.url_of(call);
        let what = format!("{} {}", call.method, url.path());
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        let next_cursor = response
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .and_then(|cursor| cursor.to_str().ok())
            .map(inert);
        let body = response
            .text()
            .await
            .map_err(|error| self.unreachable(&error))?;
        if !status.is_success() {
            return Err(refusal(&what, status, &body));
        }
        let json = serde_json::from_str(&body).map_err(|_| {
            Failure::Unreachable(format!(
                "{what}: {status} with an answer that is not JSON: is {} an AegisAgent gateway?",
                self.base
            ))
        })?;
        Ok(Answer {
            body,
            json,
            next_cursor,
        })
    }

    /// `{base}/v1/{segments…}?{filters}`: each segment percent-encoded, so an id cannot
    /// reach another route.
    fn url_of(&self, call: &Call) -> url::Url {
        let mut url = self.base.clone();
        // The base is an http(s) URL (checked by --url), which can always take segments.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("v1").extend(&call.path);
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        url
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        if error.is_timeout() {
            return Failure::Unreachable(format!(
                "the gateway at {} did not answer within {} s",
                self.base,
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        // reqwest's own text names the URL; the innermost cause says what happened.
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        Failure::Unreachable(format!(
            "cannot reach the gateway at {}: {cause}",
            self.base
        ))
    }
}

/// The one line for an error answer: what was asked, the status, and the gateway's own
/// `{"error": {"code", "message", "field"}}` when it sent one.
fn refusal(what: &str, status: StatusCode, body: &str) -> Failure {
    let error = serde_json::from_str::<Value>(body).ok();
    let error = error.as_ref().map(|body| &body["error"]);
    let text = |key: &str| error.and_then(|error| error[key].as_str()).map(inert);
    let mut line = format!("{what}: {status}");
    if let (Some(code), Some(message)) = (text("code"), text("message")) {
        line = format!("{line}: {code}: {message}");
    }
    if let Some(field) = text("field") {
        line = format!("{line} (field `{field}`)");
    }
    match status {
        StatusCode::NOT_FOUND => Failure::NotFound(line),
        StatusCode::UNAUTHORIZED => Failure::Refused(format!(
            "{line} (is {KEY_VARIABLE} an operator key of this gateway?)"
        )),
        status if status.is_client_error() => Failure::Refused(line),
        _ => Failure::Unreachable(line),
    }
}
