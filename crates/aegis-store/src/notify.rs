//! What the notifier writes, once for both stores ([`crate::tx::WriteTx`]): a webhook
//! subscription created or deleted, a delivery queued for a sink, and a notify consumer's
//! batch of deliveries and coalescing state with its cursor. A backend runs these in its writer transaction (`sqlite::notify`,
//! `postgres::notify` keep the reads and the delivery queue's claims).

use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{
    NewDelivery, NewWebhook, NotifyBatch, StoreError, StoreResult, TenantId, Webhook, event_kind,
    schema, soc,
};
use serde_json::json;

/// Stores the tenant's subscription with the event that records it; `sealed_secret` is its
/// signing secret as [`crate::SecretsKey::seal`] made it (never the secret itself). The
/// event leaves the URL out: a Slack incoming-webhook URL is itself a credential.
pub(crate) async fn create_webhook(
    tx: &mut impl WriteTx,
    tenant: &TenantId,
    webhook: &NewWebhook,
    sealed_secret: Option<&str>,
) -> StoreResult<Webhook> {
    let events = webhook
        .events
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
    tx.execute(
        "INSERT INTO webhook_subscriptions (id, tenant_id, url, format, events, sealed_secret, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            SqlValue::text(&webhook.id),
            SqlValue::text(tenant.as_str()),
            SqlValue::text(&webhook.url),
            SqlValue::text(&webhook.format),
            SqlValue::Text(events.as_deref()),
            SqlValue::Text(sealed_secret),
            SqlValue::int(webhook.created_at_ms),
        ],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id: tenant.as_str(),
        kind: event_kind::WEBHOOK_CREATED,
        agent_id: None,
        subject_id: Some(&webhook.id),
        payload: json!({
            "webhook_id": webhook.id,
            "format": webhook.format,
            "events": webhook.events,
            "actor": webhook.actor,
        }),
    })
    .await?;
    Ok(Webhook {
        id: webhook.id.clone(),
        tenant_id: tenant.clone(),
        url: webhook.url.clone(),
        format: webhook.format.clone(),
        events: webhook.events.clone(),
        created_at_ms: webhook.created_at_ms,
    })
}

/// Deletes the tenant's live subscription at `at`, dropping its secret, with the event that
/// records it; `NotFound` if it has none by that id.
pub(crate) async fn delete_webhook(
    tx: &mut impl WriteTx,
    tenant: &TenantId,
    webhook_id: &str,
    actor: &str,
    at: i64,
) -> StoreResult<()> {
    let changed = tx
        .execute(
            "UPDATE webhook_subscriptions SET deleted_at = $3, secret = NULL, sealed_secret = NULL
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[
                SqlValue::text(tenant.as_str()),
                SqlValue::text(webhook_id),
                SqlValue::int(at),
            ],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound("webhook"));
    }
    tx.append_event(EventDraft {
        tenant_id: tenant.as_str(),
        kind: event_kind::WEBHOOK_DELETED,
        agent_id: None,
        subject_id: Some(webhook_id),
        payload: json!({"webhook_id": webhook_id, "actor": actor}),
    })
    .await?;
    Ok(())
}

/// Queues a delivery unless one with its id is queued already (a batch applied again after a
/// crash queues nothing twice).
pub(crate) async fn insert_delivery(tx: &mut impl WriteTx, d: &NewDelivery) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO deliveries (id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
         ON CONFLICT (id) DO NOTHING",
        &[
            SqlValue::text(&d.id),
            SqlValue::text(d.tenant_id.as_str()),
            SqlValue::text(&d.sink),
            SqlValue::Text(d.agent_id.as_deref()),
            SqlValue::text(&d.body),
            SqlValue::int(d.created_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Applies a notify consumer's batch and moves its cursor from `batch.after` to
/// `batch.cursor`.
pub(crate) async fn apply_batch(
    tx: &mut impl WriteTx,
    batch: &NotifyBatch,
    now: i64,
) -> StoreResult<()> {
    for delivery in &batch.deliveries {
        insert_delivery(tx, delivery).await?;
    }
    for state in &batch.coalesce {
        tx.execute(
            schema::SAVE_COALESCE_SQL,
            &[
                SqlValue::text(state.tenant_id.as_str()),
                SqlValue::text(&state.agent_id),
                SqlValue::int(state.last_sent_at_ms),
                SqlValue::Int(state.pending_from_seq),
            ],
        )
        .await?;
    }
    soc::advance_cursor(tx, &batch.consumer, batch.after, batch.cursor, now).await
}
