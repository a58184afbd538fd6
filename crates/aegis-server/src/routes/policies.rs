//! Tenant policies over the default pack. Every change goes through
//! [`change_policy`]: compiled and validated against the
//! schema with the tenant's whole set before it is stored, the compiled set then replacing
//! the active one atomically.

use crate::auth::{Admin, Operator, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path};
use crate::openapi::{
    BodyRefused, Conflict, Forbidden, Invalid, NotFound, OperatorErrors, PolicyRefused,
    StoreErrors, Unreadable,
};
use crate::operations::{PolicyChange, change_policy};
use crate::routes::Listed;
use crate::state::SharedState;
use aegis_core::policy::{DEFAULT_PACK_TEXT, PolicyDocument, SCHEMA_TEXT};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// One Cedar policy. `@reason("…")` sets the reason reported with decisions;
    /// `@outcome("require_approval")` on a forbid asks for approval instead of denying.
    /// A text over 64 KiB or nested deeper than the parser's limits answers 400 naming the limit.
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    /// As `aegis_core::policy::validate_policy_id` accepts it.
    #[schema(pattern = "^(?!aegis-)[A-Za-z0-9._:-]{1,64}$")]
    pub id: String,
    /// As in `PolicyBody`.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyCatalog {
    /// The schema every policy is validated against.
    pub schema: &'static str,
    /// The default pack, always active beneath tenant policies.
    pub default_pack: &'static str,
}

/// The tenant's own policies.
#[utoipa::path(get, path = "/v1/policies", tag = "policies", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tenant's policies", body = [PolicyView]),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn list_policies(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Listed<PolicyView>> {
    let docs = state.store.policies(&operator.tenant).await?;
    Ok(Listed::all(
        docs.into_iter()
            .map(|d| PolicyView {
                id: d.id,
                text: d.text,
            })
            .collect(),
    ))
}

/// The Cedar schema and the default pack.
#[utoipa::path(get, path = "/v1/policies/schema", tag = "policies", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The schema and the default pack", body = PolicyCatalog),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn policy_schema(_operator: Operator<Viewer>) -> Json<PolicyCatalog> {
    Json(PolicyCatalog {
        schema: SCHEMA_TEXT,
        default_pack: DEFAULT_PACK_TEXT,
    })
}

/// Add a policy; 409 if the id exists.
#[utoipa::path(post, path = "/v1/policies", tag = "policies", request_body = NewPolicy,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The stored policy", body = PolicyView),
        PolicyRefused,
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Invalid,
        BodyRefused,
        Conflict,
    ))]
pub async fn create_policy(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<NewPolicy>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    let view = PolicyView {
        id: body.id.clone(),
        text: body.text.clone(),
    };
    let change = PolicyChange::Create(PolicyDocument {
        id: body.id,
        text: body.text,
    });
    change_policy(&state, &operator, change).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Create or replace a policy by id.
#[utoipa::path(put, path = "/v1/policies/{id}", tag = "policies", params(("id" = String, Path, pattern = "^(?!aegis-)[A-Za-z0-9._:-]{1,64}$")), request_body = PolicyBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The policy is replaced", body = PolicyView),
        (status = 201, description = "The policy is created", body = PolicyView),
        PolicyRefused,
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Invalid,
        BodyRefused,
        NotFound,
    ))]
pub async fn put_policy(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PolicyBody>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    let view = PolicyView {
        id: id.clone(),
        text: body.text.clone(),
    };
    let change = PolicyChange::Put(PolicyDocument {
        id,
        text: body.text,
    });
    let existed = change_policy(&state, &operator, change).await?;
    Ok((
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(view),
    ))
}

/// One policy.
#[utoipa::path(get, path = "/v1/policies/{id}", tag = "policies", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The policy", body = PolicyView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_policy(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    let doc = state
        .store
        .policies(&operator.tenant)
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::not_found("policy"))?;
    Ok(Json(PolicyView {
        id: doc.id,
        text: doc.text,
    }))
}

/// Delete a policy.
#[utoipa::path(delete, path = "/v1/policies/{id}", tag = "policies", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 204, description = "The policy is deleted"),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
    ))]
pub async fn delete_policy(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    change_policy(&state, &operator, PolicyChange::Delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
