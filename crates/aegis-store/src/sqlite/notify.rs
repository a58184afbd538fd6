//! Notification tables as SQLite keeps them: webhook subscriptions, the delivery queue and
//! its claims, coalescing state. What a notify batch writes is `crate::notify`.

use super::rows::{read_opt, read_rows};
use crate::records;
use crate::schema::WEBHOOK_COLUMNS;
use crate::*;
use rusqlite::{Connection, OptionalExtension, params};

const DELIVERY_COLUMNS: &str = "id, tenant_id, sink, agent_id, body, status, attempts, next_attempt_at, last_error, created_at, delivered_at, rowid";

pub(super) fn coalesce_states(conn: &Connection) -> StoreResult<Vec<CoalesceRecord>> {
    Ok(conn
        .prepare_cached(crate::schema::COALESCE_STATES_SQL)?
        .query_map([], |row| {
            Ok(CoalesceRecord {
                tenant_id: TenantId::new(row.get::<_, String>(0)?),
                agent_id: row.get(1)?,
                last_sent_at_ms: row.get(2)?,
                pending_from_seq: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// Claims due deliveries by [`records::fair_claim`]. Nothing is leased: this process is the
/// only claimer, and `claim.in_flight` keeps what it is sending out of the next claim.
pub(super) fn claim_deliveries(
    conn: &Connection,
    claim: &DeliveryClaim,
) -> StoreResult<Vec<Delivery>> {
    let in_flight: Vec<&str> = claim.in_flight.iter().map(|(id, _)| id.as_str()).collect();
    let in_flight = serde_json::Value::from(in_flight).to_string();
    // Each tenant's oldest due deliveries, as many as it could be given.
    let due = conn
        .prepare_cached(
            "SELECT id, tenant_id, next_attempt_at, ordinal FROM (
                 SELECT id, tenant_id, next_attempt_at, rowid AS ordinal,
                        ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at, rowid) AS turn
                 FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at <= ?1
                   AND id NOT IN (SELECT value FROM json_each(?2))
             ) WHERE turn <= ?3",
        )?
        .query_map(params![claim.now_ms, in_flight, claim.per_tenant], |row| {
            Ok(records::DueDelivery {
                id: row.get(0)?,
                tenant_id: TenantId::new(row.get::<_, String>(1)?),
                next_attempt_at_ms: row.get(2)?,
                order: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let picked = records::fair_claim(due, claim);
    let mut rows: std::collections::HashMap<String, Delivery> = read_rows(
        conn,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))"
        ),
        [serde_json::Value::from(picked.clone()).to_string()],
        crate::rows::delivery,
    )?
    .into_iter()
    .map(|delivery| (delivery.id.clone(), delivery))
    .collect();
    Ok(picked.iter().filter_map(|id| rows.remove(id)).collect())
}

pub(super) fn finish_delivery(
    conn: &Connection,
    id: &str,
    outcome: &DeliveryOutcome,
) -> StoreResult<()> {
    // Only a pending delivery changes: a delivered one stays delivered.
    match outcome {
        DeliveryOutcome::Delivered { at_ms } => conn.execute(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![id, at_ms],
        )?,
        DeliveryOutcome::Retry {
            next_attempt_at_ms,
            error,
        } => conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
             WHERE id = ?1 AND status = 'pending'",
            params![id, next_attempt_at_ms, error],
        )?,
        DeliveryOutcome::Failed { error } => conn.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?2
             WHERE id = ?1 AND status = 'pending'",
            params![id, error],
        )?,
        DeliveryOutcome::Deferred { next_attempt_at_ms } => conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?2 WHERE id = ?1 AND status = 'pending'",
            params![id, next_attempt_at_ms],
        )?,
    };
    Ok(())
}

pub(super) fn list_deliveries(
    conn: &Connection,
    tenant: &TenantId,
    sink: &str,
    page: Page,
) -> StoreResult<Vec<Delivery>> {
    read_rows(
        conn,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE tenant_id = ?1 AND sink = ?2 AND rowid < ?3
             ORDER BY rowid DESC LIMIT ?4"
        ),
        params![
            tenant.as_str(),
            sink,
            page.before.unwrap_or(i64::MAX),
            page.limit
        ],
        crate::rows::delivery,
    )
}

/// The stored (sealed, plain) secret columns of one of the tenant's live subscriptions.
pub(super) fn webhook_secret_columns(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<(Option<String>, Option<String>)> {
    Ok(conn
        .prepare_cached(
            "SELECT sealed_secret, secret FROM webhook_subscriptions
             WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        )?
        .query_row(params![tenant.as_str(), id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?
        .unwrap_or((None, None)))
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

pub(super) fn list_webhooks(conn: &Connection, tenant: &TenantId) -> StoreResult<Vec<Webhook>> {
    read_rows(
        conn,
        &format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions
             WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
        ),
        [tenant.as_str()],
        crate::rows::webhook,
    )
}

pub(super) fn webhook_by_id(conn: &Connection, id: &str) -> StoreResult<Option<Webhook>> {
    read_opt(
        conn,
        &format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions WHERE id = ?1 AND deleted_at IS NULL"
        ),
        [id],
        crate::rows::webhook,
    )
}
