//! Per-tenant webhook subscriptions (admin only): create, list, delete, send a test, and
//! read a subscription's deliveries. URLs must be http(s) and must not resolve to private,
//! loopback, link-local or otherwise internal addresses (SSRF) unless the deployment allows
//! it (`AEGIS_WEBHOOK_ALLOW_PRIVATE=true`). Secrets are shown once and never returned again.

use crate::auth::{Admin, Operator, new_id};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, QueryParams};
use crate::routes::{Listed, PageQuery};
use crate::state::SharedState;
use aegis_core::timestamp::format_millis;
use aegis_store::{Delivery, NewDelivery, NewWebhook, Webhook};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;
use utoipa::ToSchema;

/// Notification kinds a subscription may filter on.
pub const NOTIFICATION_KINDS: &[&str] = &[
    "deny",
    "require_approval",
    "alert",
    "incident",
    "response_action",
];
/// Sink name of a subscription's deliveries (the notifier uses the same scheme).
fn sink(webhook_id: &str) -> String {
    format!("sub:{webhook_id}")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// `json` (default) | `slack`.
    pub format: Option<String>,
    /// Only these kinds: `deny`, `require_approval`, `alert`, `incident`, `response_action`.
    pub events: Option<Vec<String>>,
    /// HMAC signing secret; generated when absent.
    pub secret: Option<String>,
}

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

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
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

/// Whether an address is internal: loopback, private, link-local, CGNAT, unspecified,
/// broadcast/multicast, documentation, or IPv6 ULA / link-local (and IPv4-mapped forms).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a subscription URL: http(s), a host, and (unless allowed) no internal address.
async fn check_url(raw: &str, allow_private: bool) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::invalid_field("url", why.to_owned());
    if raw.len() > 2048 {
        return Err(bad("must be at most 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| bad("must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad("must name a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let resolved = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| bad("the host name did not resolve in time"))?
            .map_err(|_| bad("the host name does not resolve"))?;
            resolved.map(|a| a.ip()).collect()
        }
    };
    if addresses.is_empty() {
        return Err(bad("the host name does not resolve"));
    }
    if addresses.into_iter().any(is_internal) {
        return Err(bad(
            "must not point to a private, loopback, link-local or internal address",
        ));
    }
    Ok(())
}

/// Subscribe a URL to this tenant's notifications.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    security(("operator_key" = [])),
    responses((status = 201, body = CreatedWebhook), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    check_url(&body.url, state.settings.webhook_allow_private).await?;
    let format = body.format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "slack") {
        return Err(ApiError::invalid_field(
            "format",
            "must be \"json\" or \"slack\"",
        ));
    }
    if let Some(events) = &body.events {
        if events.is_empty() {
            return Err(ApiError::invalid_field("events", "must not be empty"));
        }
        if let Some(unknown) = events
            .iter()
            .find(|e| !NOTIFICATION_KINDS.contains(&e.as_str()))
        {
            return Err(ApiError::invalid_field(
                "events",
                format!(
                    "unknown kind {unknown:?}; use {}",
                    NOTIFICATION_KINDS.join(", ")
                ),
            ));
        }
    }
    let secret = match body.secret {
        Some(secret) if secret.len() < 16 || secret.len() > 256 => {
            return Err(ApiError::invalid_field(
                "secret",
                "must be 16 to 256 characters",
            ));
        }
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|_| ApiError::unavailable("cannot generate a secret right now"))?;
            format!("whsec_{}", hex::encode(bytes))
        }
    };
    let webhook = state
        .store
        .create_webhook(
            &operator.tenant,
            NewWebhook {
                id: new_id("whk"),
                url: body.url,
                format,
                events: body.events,
                secret: Some(secret.clone()),
                created_at_ms: crate::now_ms(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            view: webhook.into(),
            secret,
        }),
    ))
}

/// This tenant's webhook subscriptions (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("operator_key" = [])),
    responses((status = 200, body = [WebhookView])))]
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
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_webhook(&operator.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a test delivery to a subscription.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody)))]
pub async fn test_webhook(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let webhook = own_webhook(&state, &operator, &id).await?;
    let delivery_id = new_id("dlv");
    let now = crate::now_ms();
    let summary = "test notification from AegisAgent";
    let body = if webhook.format == "slack" {
        json!({
            "text": format!("AegisAgent: {summary} (tenant {})", operator.tenant),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("*AegisAgent: test* · severity *info*\n{summary}")}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("tenant `{}`", operator.tenant)}]}
            ]
        })
    } else {
        json!({
            "delivery_id": delivery_id, "tenant_id": operator.tenant, "agent_id": null,
            "kind": "test", "severity": "info", "summary": summary, "count": 0,
            "first_at": format_millis(now), "last_at": format_millis(now),
            "decision_ids": [], "alert_ids": [], "incident_ids": [], "response_ids": [], "items": []
        })
    };
    state
        .store
        .enqueue_delivery(NewDelivery {
            id: delivery_id.clone(),
            tenant_id: operator.tenant.clone(),
            sink: sink(&webhook.id),
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
    responses((status = 200, body = [DeliveryView]), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Listed<DeliveryView>> {
    let webhook = own_webhook(&state, &operator, &id).await?;
    let mut page = query.page()?;
    let limit = page.limit;
    page.limit += 1;
    let rows = state
        .store
        .list_deliveries(&operator.tenant, &sink(&webhook.id), page)
        .await?;
    Ok(Listed::paged(rows, limit, |d| d.cursor, DeliveryView::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
