//! The tenant's receipt chain over HTTP: list, read, verify one, verify a range, public keys.

use crate::auth::{Operator, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::evidence::{keyring, verify_stored_receipt};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::{BodyRefused, Invalid, NotFound, OperatorErrors, StoreErrors, Unreadable};
use crate::routes::{Listed, PageQuery};
use crate::state::SharedState;
use crate::validate::optional_whole;
use aegis_core::receipt::Receipt;
use aegis_core::timestamp::format_millis;
use aegis_store::chain::{ChainWalk, WalkStart};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most receipts one `POST /v1/receipts/verify` checks.
pub const MAX_RANGE: u64 = 100_000;

/// A stored receipt: the body fields of `docs/receipts.md` and `hash`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub receipt: Receipt,
}

/// Receipts of this tenant's chain, newest first: a bare JSON array (cursor: `seq`).
#[utoipa::path(get, path = "/v1/receipts", tag = "receipts", params(PageQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Receipts, newest first", body = [ReceiptView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_receipts(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Listed<ReceiptView>> {
    let page = query.page();
    let rows = state
        .store
        .receipts_newest(&operator.tenant, page.with_next_row())
        .await?;
    Ok(Listed::paged(
        rows,
        page,
        |r| r.body.seq as i64,
        |receipt| ReceiptView { receipt },
    ))
}

/// One receipt.
#[utoipa::path(get, path = "/v1/receipts/{id}", tag = "receipts", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The receipt", body = ReceiptView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_receipt(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReceiptView>> {
    let receipt = state.store.receipt(&operator.tenant, &id).await?;
    Ok(Json(ReceiptView { receipt }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptVerification {
    pub receipt_id: String,
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Verifies one receipt: its hash, its link to the previous receipt, and the signed
/// checkpoint covering it.
#[utoipa::path(get, path = "/v1/receipts/{id}/verify", tag = "receipts", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Whether the receipt verifies", body = ReceiptVerification),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn verify_receipt(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReceiptVerification>> {
    let store = state.store.as_ref();
    let receipt = store.receipt(&operator.tenant, &id).await?;
    let keys = keyring(store).await?;
    let verdict = verify_stored_receipt(store, &operator.tenant, &receipt, &keys).await?;
    Ok(Json(ReceiptVerification {
        receipt_id: receipt.body.id,
        verified: verdict.is_ok(),
        reason: verdict.err().map(|b| b.kind.to_string()),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeBody {
    /// First seq to check (default 1).
    #[serde(default, deserialize_with = "optional_whole")]
    pub from_seq: Option<u64>,
    /// Last seq to check (default: the head, at most 100 000 receipts after `from_seq`).
    #[serde(default, deserialize_with = "optional_whole")]
    pub to_seq: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BadReceipt {
    pub receipt_id: String,
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RangeVerification {
    pub verified: bool,
    /// Receipts checked before the answer (up to and including the first bad one).
    pub checked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<BadReceipt>,
}

/// Verifies a range of this tenant's chain with the chain verifier (at most 100 000
/// receipts per call), from one consistent snapshot: the range is anchored at the stored
/// hash of `from_seq - 1` and must end covered by a signed checkpoint.
#[utoipa::path(post, path = "/v1/receipts/verify", tag = "receipts", request_body = Option<RangeBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Whether the range verifies", body = RangeVerification),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn verify_range(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    JsonBody(body): JsonBody<RangeBody>,
) -> ApiResult<Json<RangeVerification>> {
    let from = body.from_seq.unwrap_or(1).max(1);
    let to = body.to_seq.unwrap_or(from.saturating_add(MAX_RANGE - 1));
    if to < from {
        return Err(ApiError::invalid_field(
            "to_seq",
            "must be at least from_seq",
        ));
    }
    if to - from >= MAX_RANGE {
        return Err(ApiError::invalid_field(
            "to_seq",
            format!("at most {MAX_RANGE} receipts per call"),
        ));
    }
    let store = state.store.as_ref();
    let keys = keyring(store).await?;
    let walk = ChainWalk {
        from: WalkStart::Stored(from),
        through: Some(to),
        max: MAX_RANGE,
    };
    let audit = store.audit_chain(&operator.tenant, walk, &keys).await?;
    Ok(Json(RangeVerification {
        verified: audit.outcome.is_ok(),
        checked: audit.checked,
        first_bad: audit.outcome.err().map(|brk| BadReceipt {
            receipt_id: brk.receipt_id,
            seq: brk.seq,
            reason: brk.kind.to_string(),
        }),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyView {
    pub key_id: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    pub created_at: String,
}

/// Every public key that signed this gateway's checkpoints.
#[utoipa::path(get, path = "/v1/receipts/keys", tag = "receipts", operation_id = "list_receipt_keys",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The tenant's operator keys, without secrets", body = [PublicKeyView]),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn list_keys(
    State(state): State<SharedState>,
    _operator: Operator<Viewer>,
) -> ApiResult<Listed<PublicKeyView>> {
    let keys = state.store.signing_keys().await?;
    Ok(Listed::all(
        keys.into_iter()
            .map(|k| PublicKeyView {
                key_id: k.key_id,
                public_key: k.public_key,
                created_at: format_millis(k.created_at_ms),
            })
            .collect(),
    ))
}
