//! The OpenAPI document's shared parts: the security schemes and the error answers routes
//! have in common, each declared once and listed by every route it applies to (the `responses`
//! of each `#[utoipa::path]`). Every error answer has the body [`ErrorBody`].
//!
//! Which 4xx a route answers follows one rule (README, "Errors"): 400 when the request cannot
//! be read, 422 when a field is missing, unknown, of the wrong type or out of range.

use crate::error::ErrorBody;
use std::collections::BTreeMap;
use utoipa::openapi::RefOr;
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AegisAgent gateway",
        description = "Authorization gateway between AI agents and their tools. Every error \
            answer is `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

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

/// What every route that takes an operator key may answer about it.
#[derive(IntoResponses)]
pub enum OperatorErrors {
    /// No operator key, or one that is unknown or revoked, or an agent token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}

/// What routes that need more than the viewer role may answer.
#[derive(IntoResponses)]
pub enum Forbidden {
    /// The key's role does not grant this route.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// What the action plane may answer about its credential.
#[derive(IntoResponses)]
pub enum AgentErrors {
    /// No agent token, or one that is unknown, rotated away or revoked.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}

/// What every route that reads or writes the database may answer when it cannot.
#[derive(IntoResponses)]
pub enum StoreErrors {
    /// Stored data failed a consistency check.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The database is unavailable, or the tenant's receipt chain is broken: nothing was
    /// recorded (on the action plane, treat the call as denied).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A policy that the gateway cannot store (the policy routes' 400).
#[derive(IntoResponses)]
pub enum PolicyRefused {
    /// The JSON or the policy does not parse or validate, or is over a size or nesting
    /// limit, or a path segment is not UTF-8; `error.field` says where.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// The request cannot be read (routes with a JSON body or a path parameter).
#[derive(IntoResponses)]
pub enum Unreadable {
    /// The JSON body does not parse (`invalid_json`), or a path segment is not UTF-8
    /// (`invalid_path`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// A field is wrong (routes with a JSON body or query parameters).
#[derive(IntoResponses)]
pub enum Invalid {
    /// A body field or query parameter is missing, unknown, of the wrong type or out of
    /// range; `error.field` names it (`invalid_field`).
    #[response(status = 422)]
    UnprocessableEntity(ErrorBody),
}

/// The body is refused before it is read (routes with a JSON body).
#[derive(IntoResponses)]
pub enum BodyRefused {
    /// The body is larger than the gateway's limit (`AEGIS_MAX_BODY_BYTES`, 1 MiB).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not sent as `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// What any route may answer before it is reached (the layers of [`crate::router`]).
#[derive(IntoResponses)]
pub enum Refused {
    /// The request target (path and query) is longer than [`crate::MAX_URI_BYTES`].
    #[response(status = 414)]
    UriTooLong(ErrorBody),
}

/// Lists [`Refused`] on every operation of `openapi`: the layer answers in front of every
/// route, so it is declared here once rather than in each route's `responses`.
pub fn add_layer_answers(openapi: &mut utoipa::openapi::OpenApi) {
    let refused = Refused::responses();
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
            &mut item.query,
        ];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.extend(refused.clone());
        }
    }
}

/// The resource named in the path does not exist in the caller's tenant.
#[derive(IntoResponses)]
pub enum NotFound {
    /// Nothing with this id in the caller's tenant.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The change conflicts with the resource's state.
#[derive(IntoResponses)]
pub enum Conflict {
    /// The resource's state does not allow this change (e.g. unfreezing a revoked agent).
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// What a route that changes something answers when it needs more than the viewer role and
/// reads a JSON body: [`OperatorErrors`], [`Forbidden`], [`StoreErrors`], and the body's
/// [`Unreadable`], [`Invalid`] and [`BodyRefused`]. A route lists beside it only what its
/// resource adds ([`NotFound`], [`Conflict`]).
pub struct JsonWriteErrors;

impl IntoResponses for JsonWriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            OperatorErrors::responses(),
            Forbidden::responses(),
            StoreErrors::responses(),
            Unreadable::responses(),
            Invalid::responses(),
            BodyRefused::responses(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
