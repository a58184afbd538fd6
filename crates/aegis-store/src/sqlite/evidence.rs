//! Evidence queries: single receipts, receipt pages newest first, checkpoints from a seq,
//! and incident narratives.

use super::rows::checkpoint_from_row;
use crate::*;
use aegis_core::receipt::{Checkpoint, Receipt, ReceiptBody};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn receipt_from_parts(body: String, hash: String) -> StoreResult<Receipt> {
    let body: ReceiptBody = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("receipt body: {e}")))?;
    Ok(Receipt { body, hash })
}

pub(super) fn receipt(conn: &Connection, tenant: &TenantId, id: &str) -> StoreResult<Receipt> {
    let row = conn
        .prepare_cached("SELECT body, hash FROM receipts WHERE tenant_id = ?1 AND id = ?2")?
        .query_row([tenant.as_str(), id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?
        .ok_or(StoreError::NotFound("receipt"))?;
    receipt_from_parts(row.0, row.1)
}

pub(super) fn receipts_newest(
    conn: &Connection,
    tenant: &TenantId,
    page: Page,
) -> StoreResult<Vec<Receipt>> {
    conn.prepare_cached(
        "SELECT body, hash FROM receipts WHERE tenant_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
    )?
    .query_map(
        params![tenant.as_str(), page.before.unwrap_or(i64::MAX), page.limit],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )?
    .map(|row| {
        let (body, hash) = row?;
        receipt_from_parts(body, hash)
    })
    .collect()
}

pub(super) fn checkpoints_from(
    conn: &Connection,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    Ok(conn
        .prepare_cached(
            "SELECT tenant_id, seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
             WHERE tenant_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?
        .query_map(
            params![tenant.as_str(), from_seq as i64, limit],
            checkpoint_from_row,
        )?
        .collect::<Result<_, _>>()?)
}

pub(super) fn put_narrative(
    conn: &Connection,
    tenant: &TenantId,
    narrative: &NarrativeRecord,
) -> StoreResult<()> {
    let evidence = serde_json::to_string(&narrative.evidence)
        .map_err(|e| StoreError::Corrupt(format!("narrative evidence: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO incident_narratives (tenant_id, incident_id, generated_by, narrative, evidence, generated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant_id, incident_id) DO UPDATE SET generated_by = excluded.generated_by,
           narrative = excluded.narrative, evidence = excluded.evidence, generated_at = excluded.generated_at",
    )?
    .execute(params![
        tenant.as_str(),
        narrative.incident_id,
        narrative.generated_by,
        narrative.narrative,
        evidence,
        narrative.generated_at_ms
    ])?;
    Ok(())
}

pub(super) fn narrative(
    conn: &Connection,
    tenant: &TenantId,
    incident_id: &str,
) -> StoreResult<Option<NarrativeRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT incident_id, generated_by, narrative, evidence, generated_at FROM incident_narratives
             WHERE tenant_id = ?1 AND incident_id = ?2",
        )?
        .query_row([tenant.as_str(), incident_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    row.map(
        |(incident_id, generated_by, narrative, evidence, generated_at_ms)| {
            Ok(NarrativeRecord {
                incident_id,
                generated_by,
                narrative,
                evidence: serde_json::from_str(&evidence)
                    .map_err(|e| StoreError::Corrupt(format!("narrative evidence: {e}")))?,
                generated_at_ms,
            })
        },
    )
    .transpose()
}
