//! Request extractors that answer in the API's error shape.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body, accepted whatever the `Content-Type` (curl's `-d` sends a form type, as the
/// runbook does). An empty body reads as `{}`, so optional bodies may be left out.
/// Syntax errors answer 400; missing or ill-typed fields answer 422 naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "payload_too_large",
                        "the request body exceeds 1 MiB",
                    )
                } else if body_timed_out(&rejection) {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body stopped arriving before its end",
                    )
                } else {
                    ApiError::new(status, "invalid_body", rejection.body_text())
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(text).map(JsonBody)
    }
}

/// Whether reading the body failed because the client paused longer than the body read
/// timeout ([`crate::serve::ReadTimeouts::body`]).
fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(rejection), |error| error.source())
        .any(|error| error.is::<tower_http::timeout::TimeoutError>())
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let field = missing_field(&message)
                    .map(|name| {
                        if path == "." {
                            name.to_owned()
                        } else {
                            format!("{path}.{name}")
                        }
                    })
                    .unwrap_or(path);
                ApiError::invalid_field(field, strip_position(&message))
            }
            // serde_json reports a wrong-typed enum (e.g. a number where a variant name is
            // expected) as a syntax error; if the text is valid JSON, it is a field error.
            // (Parsed as a `Value`, which keeps the recursion limit: nesting deeper than 127
            // levels stays a syntax error, where skipping it as `IgnoredAny` would not.)
            _ if path != "." && serde_json::from_slice::<serde_json::Value>(bytes).is_ok() => {
                ApiError::invalid_field(path, "has the wrong type or an unknown value")
            }
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {inner}"),
            ),
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// serde reports a missing field as "missing field `name`" at the parent's path.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters, with parse errors in the API's error shape.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("invalid query string: {error}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        tool_call: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        tool: String,
        count: Option<u32>,
    }

    #[test]
    fn errors_name_the_field() {
        let missing = parse_json::<Outer>(br#"{"tool_call": {}}"#).unwrap_err();
        assert_eq!(
            (missing.status.as_u16(), missing.field.as_deref()),
            (422, Some("tool_call.tool"))
        );
        let top = parse_json::<Outer>(b"{}").unwrap_err();
        assert_eq!(top.field.as_deref(), Some("tool_call"));
        let typed =
            parse_json::<Outer>(br#"{"tool_call": {"tool": "t", "count": "x"}}"#).unwrap_err();
        assert_eq!(typed.field.as_deref(), Some("tool_call.count"));
        let syntax = parse_json::<Outer>(b"{nope").unwrap_err();
        assert_eq!((syntax.status.as_u16(), syntax.code), (400, "invalid_json"));
        let trailing = parse_json::<Outer>(br#"{"tool_call": {"tool": "t"}} x"#).unwrap_err();
        assert_eq!(trailing.status.as_u16(), 400);
    }

    /// Request JSON is parsed with serde_json's recursion limit (127 nested arrays or
    /// objects) on, so no JSON value from a request is deeper than that.
    #[test]
    fn json_deeper_than_the_recursion_limit_is_refused() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse_json::<serde_json::Value>(nested(127).as_bytes()).is_ok());
        let error = parse_json::<serde_json::Value>(nested(128).as_bytes()).unwrap_err();
        assert_eq!((error.status.as_u16(), error.code), (400, "invalid_json"));
        assert!(
            error.message.contains("recursion limit"),
            "{}",
            error.message
        );
        // Also below the top level, where a syntax error could pass for a field's type.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Call {
            parameters: serde_json::Value,
        }
        let body = format!("{{\"parameters\": {}}}", nested(127));
        let error = parse_json::<Call>(body.as_bytes()).unwrap_err();
        assert_eq!((error.status.as_u16(), error.code), (400, "invalid_json"));
        assert!(
            error.message.contains("recursion limit"),
            "{}",
            error.message
        );
    }
}
