//! Per-tenant webhook subscriptions (admin only): create, list, delete, send a test, and
//! read a subscription's deliveries. URLs must be http(s) and must not resolve to private,
//! loopback, link-local or otherwise internal addresses (SSRF, `aegis_soc::egress`, checked
//! again at every delivery) unless the deployment allows it
//! (`AEGIS_WEBHOOK_ALLOW_PRIVATE=true`). Secrets are shown once and never returned again.
//! Creating and deleting are use cases ([`operations::create_webhook`]), shared with the console.

use crate::auth::{Admin, Operator, new_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::{
    BodyRefused, Forbidden, Invalid, NotFound, OperatorErrors, StoreErrors, Unreadable,
};
use crate::operations;
use crate::routes::{Listed, PageQuery};
use crate::state::SharedState;
use aegis_core::timestamp::format_millis;
use aegis_soc::notify::{KINDS, subscription_sink, test_message};
use aegis_store::{DeliverySummary, NewDelivery, Webhook};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Default `json`.
    pub format: Option<WebhookFormat>,
    /// Only these kinds.
    #[schema(min_items = 1, inline)]
    pub events: Option<Vec<EventKind>>,
    /// HMAC signing secret, 16 to 256 characters; generated when absent.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    Json,
    Slack,
}

impl WebhookFormat {
    pub const ALL: [WebhookFormat; 2] = [WebhookFormat::Json, WebhookFormat::Slack];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// One of the notification kinds ([`KINDS`]).
#[derive(Debug, Clone)]
pub struct EventKind(pub String);

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kind = String::deserialize(deserializer)?;
        if KINDS.contains(&kind.as_str()) {
            Ok(EventKind(kind))
        } else {
            Err(serde::de::Error::custom(format!(
                "unknown kind {kind:?}; use {}",
                KINDS.join(", ")
            )))
        }
    }
}

impl PartialSchema for EventKind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(KINDS.iter().copied()))
            .into()
    }
}

impl ToSchema for EventKind {}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub format: String,
    pub events: Option<Vec<String>>,
    pub created_at: String,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: w.id,
            url: w.url,
            format: w.format,
            events: w.events,
            created_at: format_millis(w.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub view: WebhookView,
    /// The signing secret, shown only here.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// `pending` | `delivered` | `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<DeliverySummary> for DeliveryView {
    fn from(d: DeliverySummary) -> Self {
        DeliveryView {
            id: d.id,
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error,
            next_attempt_at: format_millis(d.next_attempt_at_ms),
            created_at: format_millis(d.created_at_ms),
            delivered_at: d.delivered_at_ms.map(format_millis),
        }
    }
}

/// Subscribe a URL to this tenant's notifications.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    security(("operator_key" = [])),
    responses(
        (status = 201, description = "The subscription and its signing secret (shown only here)", body = CreatedWebhook),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        Invalid,
        BodyRefused,
    ))]
pub async fn create_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let created = operations::create_webhook(&state, &operator, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// This tenant's webhook subscriptions (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The subscriptions, without secrets", body = [WebhookView]),
        OperatorErrors,
        StoreErrors,
        Forbidden,
    ))]
pub async fn list_webhooks(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
) -> ApiResult<Listed<WebhookView>> {
    let list = state.store.list_webhooks(&operator.tenant).await?;
    Ok(Listed::all(
        list.into_iter().map(WebhookView::from).collect(),
    ))
}

async fn own_webhook(
    state: &SharedState,
    operator: &Operator<Admin>,
    id: &str,
) -> ApiResult<Webhook> {
    state
        .store
        .webhook_by_id(id)
        .await?
        .filter(|w| w.tenant_id == operator.tenant)
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// Delete a subscription; its pending deliveries are not sent.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 204, description = "The subscription is deleted"),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
    ))]
pub async fn delete_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    operations::delete_webhook(&state, &operator, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a test delivery to a subscription.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 202, description = "A test delivery is queued", body = DeliveryView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
    ))]
pub async fn test_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let webhook = own_webhook(&state, &operator, &id).await?;
    let delivery_id = new_id("dlv");
    let now = crate::now_ms();
    let body = test_message(&webhook.format, &operator.tenant, &delivery_id, now);
    state
        .store
        .enqueue_delivery(NewDelivery {
            id: delivery_id.clone(),
            tenant_id: operator.tenant.clone(),
            sink: subscription_sink(&webhook.id),
            agent_id: None,
            body: body.to_string(),
            created_at_ms: now,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryView {
            id: delivery_id,
            status: "pending".into(),
            attempts: 0,
            last_error: None,
            next_attempt_at: format_millis(now),
            created_at: format_millis(now),
            delivered_at: None,
        }),
    ))
}

/// A subscription's deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), PageQuery), security(("operator_key" = [])),
    responses(
        (status = 200, description = "The subscription's deliveries, newest first", body = [DeliveryView]),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn list_deliveries(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Listed<DeliveryView>> {
    let webhook = own_webhook(&state, &operator, &id).await?;
    let page = query.page();
    let rows = state
        .store
        .list_deliveries(
            &operator.tenant,
            &subscription_sink(&webhook.id),
            page.with_next_row(),
        )
        .await?;
    Ok(Listed::paged(rows, page, |d| d.cursor, DeliveryView::from))
}
