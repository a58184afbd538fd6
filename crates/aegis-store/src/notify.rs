//! The notification role ([`NotificationStore`]) once for both stores: what the notifier
//! writes (over [`WriteTx`]: a webhook subscription created or deleted, a delivery queued
//! for a sink or finished, a notify consumer's batch of deliveries and coalescing state with
//! its cursor) and what it reads (over [`ReadRows`]), run by any [`Backend`]. Claiming due
//! deliveries is the driver's ([`Backend::claim_deliveries`]): only PostgreSQL's replicas
//! must lease what they claim.

use crate::backend::Backend;
use crate::records::UnreadableDelivery;
use crate::schema::{COALESCE_STATES_SQL, DELIVERY_SUMMARY_COLUMNS, WEBHOOK_COLUMNS};
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{
    CoalesceRecord, Delivery, DeliveryClaim, DeliveryOutcome, DeliverySummary, NewDelivery,
    NewWebhook, NotificationStore, NotifyBatch, Page, StoreError, StoreResult, TenantId, Webhook,
    event_kind, now_ms, schema, secrets, soc,
};
use async_trait::async_trait;
use serde_json::json;
use std::sync::LazyLock;

#[async_trait]
impl<B: Backend> NotificationStore for B {
    async fn apply_notify_batch(&self, batch: NotifyBatch) -> StoreResult<()> {
        self.run_leader_rule(move |tx| {
            Box::pin(async move { apply_batch(tx, &batch, now_ms()).await })
        })
        .await
    }

    async fn coalesce_states(&self) -> StoreResult<Vec<CoalesceRecord>> {
        self.run_read(|rows| {
            Box::pin(async move {
                rows.query_rows(COALESCE_STATES_SQL, &[], crate::rows::coalesce_record)
                    .await
            })
        })
        .await
    }

    async fn claim_deliveries(&self, claim: DeliveryClaim) -> StoreResult<Vec<Delivery>> {
        let claimed = Backend::claim_deliveries(self, claim).await?;
        if !claimed.unreadable.is_empty() {
            fail_unreadable_deliveries(self, claimed.unreadable).await;
        }
        Ok(claimed.deliveries)
    }

    async fn finish_delivery(&self, id: &str, outcome: DeliveryOutcome) -> StoreResult<()> {
        let id = id.to_owned();
        self.run_rule(move |tx| Box::pin(async move { finish_delivery(tx, &id, &outcome).await }))
            .await
    }

    async fn defer_deliveries(&self, ids: Vec<String>, next_attempt_at_ms: i64) -> StoreResult<()> {
        self.run_rule(move |tx| {
            Box::pin(async move {
                let deferred = DeliveryOutcome::Deferred { next_attempt_at_ms };
                for id in &ids {
                    finish_delivery(tx, id, &deferred).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn enqueue_delivery(&self, delivery: NewDelivery) -> StoreResult<()> {
        self.run_rule(move |tx| {
            Box::pin(async move { insert_deliveries(tx, std::slice::from_ref(&delivery)).await })
        })
        .await
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        sink: &str,
        page: Page,
    ) -> StoreResult<Vec<DeliverySummary>> {
        let (tenant, sink) = (tenant.clone(), sink.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DELIVERY_SUMMARY_COLUMNS}, {ordinal} FROM deliveries
                     WHERE tenant_id = $1 AND sink = $2 AND {ordinal} < $3
                     ORDER BY {ordinal} DESC LIMIT $4",
                    ordinal = B::ORDINAL,
                );
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::text(&sink),
                    SqlValue::int(page.before.unwrap_or(i64::MAX)),
                    SqlValue::int(i64::from(page.limit)),
                ];
                rows.query_rows(&sql, &params, crate::rows::delivery_summary)
                    .await
            })
        })
        .await
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<Webhook>> {
        static OF_TENANT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions
                 WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
            )
        });
        self.tenant_rows(OF_TENANT.as_str(), tenant, crate::rows::webhook)
            .await
    }

    async fn webhook_by_id(&self, webhook_id: &str) -> StoreResult<Option<Webhook>> {
        static BY_ID: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions
                 WHERE id = $1 AND deleted_at IS NULL"
            )
        });
        let id = webhook_id.to_owned();
        self.run_read(move |rows| {
            Box::pin(async move {
                rows.query_opt(&BY_ID, &[SqlValue::text(&id)], crate::rows::webhook)
                    .await
            })
        })
        .await
    }

    async fn webhook_signing_secret(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
    ) -> StoreResult<Option<String>> {
        let (owner, id) = (tenant.clone(), webhook_id.to_owned());
        let (sealed, plain) = self
            .run_read(move |rows| {
                Box::pin(async move {
                    let key = [SqlValue::text(owner.as_str()), SqlValue::text(&id)];
                    let columns = rows
                        .query_opt(
                            "SELECT sealed_secret, secret FROM webhook_subscriptions
                             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                            &key,
                            |row| Ok((row.text(0)?, row.text(1)?)),
                        )
                        .await?;
                    Ok(columns.unwrap_or((None, None)))
                })
            })
            .await?;
        secrets::stored_secret(self.secrets(), tenant, webhook_id, sealed, plain)
    }
}

/// Marks each queued delivery whose row does not read failed, with the reason, by its
/// ordinal: nothing can be sent for it, and left pending it would fail every claim. A write
/// that fails is logged and left for the next claim, which meets the rows again; the
/// deliveries claimed beside them still go out.
async fn fail_unreadable_deliveries<B: Backend>(store: &B, unreadable: Vec<UnreadableDelivery>) {
    for row in &unreadable {
        tracing::error!(
            ordinal = row.ordinal,
            reason = %row.reason,
            "a queued delivery's row cannot be read; marked failed"
        );
    }
    let failed = store
        .run_rule(move |tx| {
            Box::pin(async move {
                let errors: Vec<_> = (unreadable.iter())
                    .map(|row| format!("its stored row cannot be read: {}", row.reason))
                    .collect();
                let params: Vec<_> = (unreadable.iter().zip(&errors))
                    .map(|(row, error)| [SqlValue::int(row.ordinal), SqlValue::text(error)])
                    .collect();
                tx.execute_each(B::FAIL_DELIVERY_BY_ORDINAL, &params).await
            })
        })
        .await;
    if let Err(error) = failed {
        tracing::error!(%error, "cannot mark unreadable deliveries failed");
    }
}

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

/// Queues each delivery unless one with its id is queued already (a batch applied again
/// after a crash queues nothing twice).
async fn insert_deliveries(tx: &mut impl WriteTx, deliveries: &[NewDelivery]) -> StoreResult<()> {
    let rows: Vec<_> = (deliveries.iter())
        .map(|d| {
            [
                SqlValue::text(&d.id),
                SqlValue::text(d.tenant_id.as_str()),
                SqlValue::text(&d.sink),
                SqlValue::Text(d.agent_id.as_deref()),
                SqlValue::text(&d.body),
                SqlValue::int(d.created_at_ms),
            ]
        })
        .collect();
    tx.execute_each(
        "INSERT INTO deliveries (id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
         ON CONFLICT (id) DO NOTHING",
        &rows,
    )
    .await?;
    Ok(())
}

/// Records how a delivery attempt went. Only a pending delivery changes: a delivered one
/// stays delivered.
async fn finish_delivery(
    tx: &mut impl WriteTx,
    id: &str,
    outcome: &DeliveryOutcome,
) -> StoreResult<()> {
    match outcome {
        DeliveryOutcome::Delivered { at_ms } => {
            tx.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                     delivered_at = $2, last_error = NULL
                 WHERE id = $1 AND status = 'pending'",
                &[SqlValue::text(id), SqlValue::int(*at_ms)],
            )
            .await?
        }
        DeliveryOutcome::Retry {
            next_attempt_at_ms,
            error,
        } => {
            tx.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
                 WHERE id = $1 AND status = 'pending'",
                &[
                    SqlValue::text(id),
                    SqlValue::int(*next_attempt_at_ms),
                    SqlValue::text(error),
                ],
            )
            .await?
        }
        DeliveryOutcome::Failed { error } => {
            tx.execute(
                "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = $2
                 WHERE id = $1 AND status = 'pending'",
                &[SqlValue::text(id), SqlValue::text(error)],
            )
            .await?
        }
        DeliveryOutcome::Deferred { next_attempt_at_ms } => {
            tx.execute(
                "UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1 AND status = 'pending'",
                &[SqlValue::text(id), SqlValue::int(*next_attempt_at_ms)],
            )
            .await?
        }
    };
    Ok(())
}

/// Applies a notify consumer's batch and moves its cursor from `batch.after` to
/// `batch.cursor`.
pub(crate) async fn apply_batch(
    tx: &mut impl WriteTx,
    batch: &NotifyBatch,
    now: i64,
) -> StoreResult<()> {
    insert_deliveries(tx, &batch.deliveries).await?;
    let coalesce: Vec<_> = (batch.coalesce.iter())
        .map(|state| {
            [
                SqlValue::text(state.tenant_id.as_str()),
                SqlValue::text(&state.agent_id),
                SqlValue::int(state.last_sent_at_ms),
                SqlValue::Int(state.pending_from_seq),
            ]
        })
        .collect();
    tx.execute_each(schema::SAVE_COALESCE_SQL, &coalesce)
        .await?;
    soc::advance_cursor(tx, &batch.consumer, batch.after, batch.cursor, now).await
}
