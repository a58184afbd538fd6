//! Request extractors that answer in the API's error shape.
//!
//! The rule for 400 and 422 (README, "Errors"): 400 when the request cannot be read — JSON
//! that does not parse, a path segment that is not UTF-8; 422 `invalid_field` when it reads
//! but a field (body or query) is missing, unknown, of the wrong type or out of range, with
//! the field named.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// A JSON body. It must be sent as `application/json` (or a `+json` type), or as
/// `application/x-www-form-urlencoded`: curl's `-d` sends that type, as the README's and the
/// runbook's command lines do, and a form body is never valid here, so the body is read as
/// JSON all the same. Any other type answers 415. An empty body (no bytes at all) reads as
/// `{}`, whatever its type, and so does `null`, so optional bodies may be left out; a body of
/// only whitespace is not JSON (400), and any other non-object answers 422 `invalid_body`. Syntax errors answer 400; missing, unknown or
/// ill-typed fields answer 422 naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = is_json_type(request.headers());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "payload_too_large",
                        "the request body is larger than this gateway accepts",
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
        if bytes.is_empty() {
            return parse_json(b"{}").map(JsonBody);
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let text = bytes.trim_ascii();
        match text {
            // What generated clients send for a body they leave out.
            b"null" => parse_json(b"{}"),
            [b'{', ..] => parse_json(text),
            // Not an object: serde would read an array as the struct's fields in order.
            // (Parsed as a `Value`, which keeps the recursion limit; see `parse_json`.)
            _ => Err(match serde_json::from_slice::<serde_json::Value>(text) {
                Ok(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    "the body must be a JSON object",
                ),
                Err(error) => malformed(error),
            }),
        }
        .map(JsonBody)
    }
}

/// Whether reading the body failed because the client paused longer than the body read
/// timeout ([`crate::serve::ReadTimeouts::body`]).
fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(rejection), |error| error.source())
        .any(|error| error.is::<tower_http::timeout::TimeoutError>())
}

/// Whether the request's `Content-Type` is one a JSON body is read from (see [`JsonBody`]).
fn is_json_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "application/x-www-form-urlencoded"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Most bodies read: the path to a field at fault is tracked only when reading a body again
/// that did not. Tracking it wraps every field's deserialiser: it was 44 % of the cost of
/// reading an authorize request (callgrind, 13.2k instructions against 7.4k).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).or_else(|_| parse_json_naming_the_field(bytes))
}

fn parse_json_naming_the_field<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                field_error(&path, &strip_position(&inner.to_string()))
            }
            // serde_json reports a wrong-typed enum (e.g. a number where a variant name is
            // expected) as a syntax error; if the text is valid JSON, it is a field error.
            // (Parsed as a `Value`, which keeps the recursion limit: nesting deeper than 127
            // levels stays a syntax error, where skipping it as `IgnoredAny` would not.)
            _ if path != "." && serde_json::from_slice::<serde_json::Value>(bytes).is_ok() => {
                ApiError::invalid_field(path, "has the wrong type or an unknown value")
            }
            _ => malformed(inner),
        }
    })?;
    deserializer.end().map_err(malformed)?;
    Ok(value)
}

/// 400: the body is not JSON.
fn malformed(error: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("malformed JSON: {error}"),
    )
}

/// A 422 naming the field at fault. serde reports a missing or repeated field as "missing
/// field `name`" or "duplicate field `name`" at the parent's path (`.` at the top); an
/// unknown one ("unknown field `name`, …") at its own path.
fn field_error(path: &str, message: &str) -> ApiError {
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix)?.split('`').next());
    let field = match named {
        Some(name) if path == "." => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path.to_owned(),
    };
    ApiError::invalid_field(field, message)
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters. A parameter that is unknown, repeated where one is expected, or does
/// not parse as its type answers 422 naming it, as a body field would.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(QueryParams)
    }
}

fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        field_error(&path, &error.into_inner().to_string())
    })
}

/// The query of a search form sent by a browser: as [`QueryParams`], except that a field
/// left blank (sent as `name=`) sets no filter.
pub struct SearchForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for SearchForm<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let filled = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(query.as_bytes()).filter(|(_, value)| !value.is_empty()),
            )
            .finish();
        parse_query(&filled).map(SearchForm)
    }
}

/// Path parameters; a segment that does not decode (e.g. percent-encoded bytes that are
/// not UTF-8) answers 400 `invalid_path` instead of axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    rejection.body_text(),
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
