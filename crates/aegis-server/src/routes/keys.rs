//! Operator keys (admin only): create, list, revoke.

use crate::auth::{Admin, Operator, new_operator_key};
use crate::error::ApiResult;
use crate::extract::{JsonBody, Path};
use crate::openapi::{
    Conflict, Forbidden, JsonWriteErrors, NotFound, OperatorErrors, StoreErrors, Unreadable,
};
use crate::routes::Listed;
use crate::state::SharedState;
use crate::validate::Text;
use aegis_core::model::Role;
use aegis_core::timestamp::format_millis;
use aegis_store::OperatorKey;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub role: Role,
    #[schema(inline)]
    pub name: Option<Text<200>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub role: Role,
    pub name: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<OperatorKey> for KeyView {
    fn from(key: OperatorKey) -> Self {
        KeyView {
            id: key.id,
            role: key.role,
            name: key.name,
            created_at: format_millis(key.created_at_ms),
            revoked_at: key.revoked_at_ms.map(format_millis),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The secret, shown once; only its hash is stored.
    pub key: String,
}

/// Create an operator key for this tenant.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The key and its secret (shown only here)", body = CreatedKey),
        JsonWriteErrors,
    ))]
pub async fn create_key(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let (secret, key) = new_operator_key(body.role, body.name)?;
    let key = state
        .store
        .create_operator_key(&operator.tenant, key)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            view: key.into(),
            key: secret,
        }),
    ))
}

/// List this tenant's operator keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tenant's operator keys, without secrets", body = [KeyView]),
        OperatorErrors,
        StoreErrors,
        Forbidden,
    ))]
pub async fn list_keys(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
) -> ApiResult<Listed<KeyView>> {
    let keys = state.store.list_operator_keys(&operator.tenant).await?;
    Ok(Listed::all(keys.into_iter().map(KeyView::from).collect()))
}

/// Revoke an operator key; it answers 401 from then on. The tenant's last active admin key
/// cannot be revoked (409 `last_admin_key`): a tenant always keeps a way to manage itself.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
        Conflict,
    ))]
pub async fn revoke_key(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    Ok(Json(
        state
            .store
            .revoke_operator_key(&operator.tenant, &id)
            .await?
            .into(),
    ))
}
