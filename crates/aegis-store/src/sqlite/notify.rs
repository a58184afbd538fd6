//! Notification tables as SQLite keeps them: webhook subscriptions, the delivery queue and
//! its claims, coalescing state. What a notify batch writes is `crate::notify`.

use super::rows::read_rows;
use crate::records;
use crate::*;
use rusqlite::{Connection, params};

pub(crate) const DELIVERY_COLUMNS: &str = "id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, last_error, created_at, delivered_at, rowid";
pub(crate) const FAIL_DELIVERY_BY_ORDINAL: &str = "UPDATE deliveries SET status = 'failed', last_error = $2 \
     WHERE rowid = $1 AND status = 'pending'";

/// Claims due deliveries by [`records::fair_claim`]. Nothing is leased: this process is the
/// only claimer, and `claim.in_flight` keeps what it is sending out of the next claim.
pub(super) fn claim_deliveries(
    conn: &Connection,
    claim: &DeliveryClaim,
) -> StoreResult<records::ClaimedDeliveries> {
    let in_flight: Vec<&str> = claim.in_flight.iter().map(|(id, _)| id.as_str()).collect();
    let in_flight = serde_json::Value::from(in_flight).to_string();
    // Each tenant's oldest due deliveries, as many as it could be given.
    let due = read_rows(
        conn,
        "SELECT id, tenant_id, next_attempt_at, ordinal FROM (
             SELECT id, tenant_id, next_attempt_at, rowid AS ordinal,
                    ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at, rowid) AS turn
             FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= ?1
               AND id NOT IN (SELECT value FROM json_each(?2))
         ) WHERE turn <= ?3",
        params![claim.now_ms, in_flight, claim.per_tenant],
        records::DueDelivery::read,
    )?;
    let (picked, mut claimed) = records::ClaimedDeliveries::pick(due, claim);
    let rows = read_rows(
        conn,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))"
        ),
        [serde_json::Value::from(picked.clone()).to_string()],
        crate::rows::claimed_delivery,
    )?;
    claimed.add(&picked, rows);
    Ok(claimed)
}

/// Seals every secret still stored in plain text (rows written before secrets were sealed);
/// returns how many.
pub(super) fn seal_plain_secrets(conn: &Connection, key: &SecretsKey) -> StoreResult<usize> {
    let plain: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT id, tenant_id, secret FROM webhook_subscriptions WHERE secret IS NOT NULL",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, tenant, secret) in &plain {
        let sealed = key.seal(&TenantId::new(tenant.as_str()), id, secret)?;
        conn.execute(
            "UPDATE webhook_subscriptions SET sealed_secret = ?2, secret = NULL
             WHERE id = ?1 AND secret IS NOT NULL",
            params![id, sealed],
        )?;
    }
    Ok(plain.len())
}
