//! Notification tables as PostgreSQL keeps them: webhook subscriptions, the delivery queue
//! and its claims, coalescing state. What a notify batch writes is `crate::notify`.

use super::prepared;
use super::rows::get;
use crate::records;
use crate::*;
use deadpool_postgres::GenericClient;

/// Deliveries page and queue by `ordinal` here (SQLite uses its rowid).
pub(crate) const DELIVERY_COLUMNS: &str = "id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, last_error, created_at, delivered_at, ordinal";
pub(crate) const FAIL_DELIVERY_BY_ORDINAL: &str = "UPDATE deliveries SET status = 'failed', last_error = $2 \
     WHERE ordinal = $1 AND status = 'pending'";

/// How long a delivery claimed by [`due_deliveries`] stays away from other claims; the
/// outcome recorded by [`finish_delivery`] replaces it.
const CLAIM_LEASE_MS: i64 = 60_000;

/// Claims due deliveries by [`records::fair_claim`] and leases them for [`CLAIM_LEASE_MS`],
/// so no other replica claims them meanwhile. Only the picked rows are leased, and only if
/// still due and unclaimed when locked: a row another replica leased in between is skipped.
pub(super) async fn claim_deliveries<C: GenericClient>(
    client: &C,
    claim: &DeliveryClaim,
) -> StoreResult<records::ClaimedDeliveries> {
    let in_flight: Vec<&str> = claim.in_flight.iter().map(|(id, _)| id.as_str()).collect();
    // Each tenant's oldest due deliveries, as many as it could be given.
    let due: Vec<_> = client
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
        .map(|row| records::DueDelivery::read(row))
        .collect::<StoreResult<_>>()?;
    let (picked, mut claimed) = records::ClaimedDeliveries::pick(due, claim);
    if picked.is_empty() {
        return Ok(claimed);
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
    let rows = client
        .query(
            &statement,
            &[&picked, &claim.now_ms, &(claim.now_ms + CLAIM_LEASE_MS)],
        )
        .await?
        .iter()
        .map(|row| crate::rows::claimed_delivery(row))
        .collect::<StoreResult<_>>()?;
    claimed.add(&picked, rows);
    Ok(claimed)
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
