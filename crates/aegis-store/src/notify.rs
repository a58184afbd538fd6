//! What the notifier writes, once for both stores ([`crate::tx::WriteTx`]): a delivery queued
//! for a sink, and a notify consumer's batch of deliveries and coalescing state with its
//! cursor. A backend runs these in its writer transaction (`sqlite::notify`,
//! `postgres::notify` keep the reads and the delivery queue's claims).

use crate::tx::{SqlValue, WriteTx};
use crate::{NewDelivery, NotifyBatch, StoreResult, schema, soc};

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
