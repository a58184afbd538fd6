//! Notification tables as PostgreSQL keeps them: webhook subscriptions, the delivery queue
//! and its claims, coalescing state. What a notify batch writes is `crate::notify`.

use super::prepared;
use super::rows::get;
use crate::records;
use crate::schema::WEBHOOK_COLUMNS;
use crate::*;
use deadpool_postgres::{GenericClient, Transaction};

/// Deliveries page and queue by `ordinal` here (SQLite uses its rowid).
const DELIVERY_COLUMNS: &str = "id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, last_error, created_at, delivered_at, ordinal";

/// How long a delivery claimed by [`due_deliveries`] stays away from other claims; the
/// outcome recorded by [`finish_delivery`] replaces it.
const CLAIM_LEASE_MS: i64 = 60_000;

pub(super) async fn coalesce_states<C: GenericClient>(
    client: &C,
) -> StoreResult<Vec<CoalesceRecord>> {
    client
        .query(
            &prepared(client, crate::schema::COALESCE_STATES_SQL).await?,
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(CoalesceRecord {
                tenant_id: TenantId::new(get::<String>(row, 0)?),
                agent_id: get(row, 1)?,
                last_sent_at_ms: get(row, 2)?,
                pending_from_seq: get(row, 3)?,
            })
        })
        .collect()
}

/// Claims due deliveries by [`records::fair_claim`] and leases them for [`CLAIM_LEASE_MS`],
/// so no other replica claims them meanwhile. Only the picked rows are leased, and only if
/// still due and unclaimed when locked: a row another replica leased in between is skipped.
pub(super) async fn claim_deliveries<C: GenericClient>(
    client: &C,
    claim: &DeliveryClaim,
) -> StoreResult<Vec<Delivery>> {
    let in_flight: Vec<&str> = claim.in_flight.iter().map(|(id, _)| id.as_str()).collect();
    // Each tenant's oldest due deliveries, as many as it could be given.
    let due = client
        .query(
            &prepared(
                client,
                "SELECT id, tenant_id, next_attempt_at, ordinal FROM (
                     SELECT id, tenant_id, next_attempt_at, ordinal,
                            ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at, ordinal) AS turn
                     FROM deliveries
                     WHERE status = 'pending' AND next_attempt_at <= $1 AND id <> ALL($2)
                 ) due WHERE turn <= $3",
            )
            .await?,
            &[&claim.now_ms, &in_flight, &i64::from(claim.per_tenant)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(records::DueDelivery {
                id: get(row, 0)?,
                tenant_id: TenantId::new(get::<String>(row, 1)?),
                next_attempt_at_ms: get(row, 2)?,
                order: get(row, 3)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let picked = records::fair_claim(due, claim);
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    // Returned as they were before the claim (the due time, not the lease).
    let statement = prepared(
        client,
        &format!(
            "WITH due AS (
                 SELECT id, next_attempt_at FROM deliveries
                 WHERE id = ANY($1) AND status = 'pending' AND next_attempt_at <= $2
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE deliveries SET next_attempt_at = $3
                 FROM due WHERE deliveries.id = due.id
                 RETURNING deliveries.id, deliveries.tenant_id, deliveries.sink, deliveries.agent_id,
                     deliveries.body, deliveries.status, deliveries.attempts, due.next_attempt_at,
                     deliveries.last_error, deliveries.created_at, deliveries.delivered_at,
                     deliveries.ordinal
             )
             SELECT {DELIVERY_COLUMNS} FROM claimed"
        ),
    )
    .await?;
    let mut rows: std::collections::HashMap<String, Delivery> = client
        .query(
            &statement,
            &[&picked, &claim.now_ms, &(claim.now_ms + CLAIM_LEASE_MS)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::delivery(row).map(|d| (d.id.clone(), d)))
        .collect::<StoreResult<_>>()?;
    Ok(picked.iter().filter_map(|id| rows.remove(id)).collect())
}

pub(super) async fn finish_delivery(
    tx: &Transaction<'_>,
    id: &str,
    outcome: &DeliveryOutcome,
) -> StoreResult<()> {
    // Only a pending delivery changes: a delivered one stays delivered.
    match outcome {
        DeliveryOutcome::Delivered { at_ms } => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = $2, last_error = NULL
                     WHERE id = $1 AND status = 'pending'",
                )
                .await?,
                &[&id, at_ms],
            )
            .await?
        }
        DeliveryOutcome::Retry {
            next_attempt_at_ms,
            error,
        } => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
                     WHERE id = $1 AND status = 'pending'",
                )
                .await?,
                &[&id, next_attempt_at_ms, error],
            )
            .await?
        }
        DeliveryOutcome::Failed { error } => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = $2
                     WHERE id = $1 AND status = 'pending'",
                )
                .await?,
                &[&id, error],
            )
            .await?
        }
        DeliveryOutcome::Deferred { next_attempt_at_ms } => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1 AND status = 'pending'",
                )
                .await?,
                &[&id, next_attempt_at_ms],
            )
            .await?
        }
    };
    Ok(())
}

pub(super) async fn list_deliveries<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    sink: &str,
    page: Page,
) -> StoreResult<Vec<Delivery>> {
    client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE tenant_id = $1 AND sink = $2 AND ordinal < $3
                     ORDER BY ordinal DESC LIMIT $4"
                ),
            )
            .await?,
            &[
                &tenant.as_str(),
                &sink,
                &page.before.unwrap_or(i64::MAX),
                &i64::from(page.limit),
            ],
        )
        .await?
        .iter()
        .map(|row| crate::rows::delivery(row))
        .collect()
}

pub(super) async fn list_webhooks<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> StoreResult<Vec<Webhook>> {
    client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions
                     WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
                ),
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?
        .iter()
        .map(|row| crate::rows::webhook(row))
        .collect()
}

pub(super) async fn webhook_by_id<C: GenericClient>(
    client: &C,
    id: &str,
) -> StoreResult<Option<Webhook>> {
    client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL"
                ),
            )
            .await?,
            &[&id],
        )
        .await?
        .as_ref()
        .map(|row| crate::rows::webhook(row))
        .transpose()
}

/// The stored (sealed, plain) secret columns of one of the tenant's live subscriptions.
pub(super) async fn webhook_secret_columns<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<(Option<String>, Option<String>)> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT sealed_secret, secret FROM webhook_subscriptions
                 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .await?,
            &[&tenant.as_str(), &id],
        )
        .await?;
    row.map_or(Ok((None, None)), |row| Ok((get(&row, 0)?, get(&row, 1)?)))
}

/// Seals every secret still stored in plain text (rows written before secrets were sealed,
/// or by an older replica during an upgrade); returns how many. Replicas starting together
/// may both seal a row: the last write wins, and either opens with the shared key.
pub(super) async fn seal_plain_secrets(
    pool: &deadpool_postgres::Pool,
    key: &SecretsKey,
) -> StoreResult<usize> {
    let client = pool.get().await?;
    let plain = client
        .query(
            "SELECT id, tenant_id, secret FROM webhook_subscriptions WHERE secret IS NOT NULL",
            &[],
        )
        .await?;
    for row in &plain {
        let (id, tenant, secret): (String, String, String) =
            (get(row, 0)?, get(row, 1)?, get(row, 2)?);
        let sealed = key.seal(&TenantId::new(tenant.as_str()), &id, &secret)?;
        client
            .execute(
                "UPDATE webhook_subscriptions SET sealed_secret = $2, secret = NULL
                 WHERE id = $1 AND secret IS NOT NULL",
                &[&id, &sealed],
            )
            .await?;
    }
    Ok(plain.len())
}
