//! Evidence queries: single receipts, receipt pages newest first, checkpoints from a seq,
//! and incident narratives.

use super::prepared;
use super::rows::{checkpoint_from_row, get, receipt_from_row};
use crate::*;
use aegis_core::receipt::{Checkpoint, Receipt};
use deadpool_postgres::{GenericClient, Transaction};

pub(super) async fn receipt<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<Receipt> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT body, hash FROM receipts WHERE tenant_id = $1 AND id = $2",
            )
            .await?,
            &[&tenant.as_str(), &id],
        )
        .await?
        .ok_or(StoreError::NotFound("receipt"))?;
    receipt_from_row(&row)
}

pub(super) async fn receipts_newest<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    page: Page,
) -> StoreResult<Vec<Receipt>> {
    client
        .query(
            &prepared(
                client,
                "SELECT body, hash FROM receipts WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            )
            .await?,
            &[
                &tenant.as_str(),
                &page.before.unwrap_or(i64::MAX),
                &i64::from(page.limit),
            ],
        )
        .await?
        .iter()
        .map(receipt_from_row)
        .collect()
}

pub(super) async fn checkpoints_from<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    client
        .query(
            &prepared(
                client,
                "SELECT tenant_id, seq, head_hash, key_id, signed_at, signature FROM receipt_checkpoints
                 WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            )
            .await?,
            &[&tenant.as_str(), &(from_seq as i64), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(checkpoint_from_row)
        .collect()
}

pub(super) async fn put_narrative(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    narrative: &NarrativeRecord,
) -> StoreResult<()> {
    let evidence = serde_json::to_string(&narrative.evidence)
        .map_err(|e| StoreError::Corrupt(format!("narrative evidence: {e}")))?;
    tx.execute(
        &prepared(
            tx,
            "INSERT INTO incident_narratives (tenant_id, incident_id, generated_by, narrative, evidence, generated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, incident_id) DO UPDATE SET generated_by = excluded.generated_by,
               narrative = excluded.narrative, evidence = excluded.evidence, generated_at = excluded.generated_at",
        )
        .await?,
        &[
            &tenant.as_str(),
            &narrative.incident_id,
            &narrative.generated_by,
            &narrative.narrative,
            &evidence,
            &narrative.generated_at_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn narrative<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    incident_id: &str,
) -> StoreResult<Option<NarrativeRecord>> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT incident_id, generated_by, narrative, evidence, generated_at FROM incident_narratives
                 WHERE tenant_id = $1 AND incident_id = $2",
            )
            .await?,
            &[&tenant.as_str(), &incident_id],
        )
        .await?;
    row.map(|row| {
        let evidence: String = get(&row, 3)?;
        Ok(NarrativeRecord {
            incident_id: get(&row, 0)?,
            generated_by: get(&row, 1)?,
            narrative: get(&row, 2)?,
            evidence: serde_json::from_str(&evidence)
                .map_err(|e| StoreError::Corrupt(format!("narrative evidence: {e}")))?,
            generated_at_ms: get(&row, 4)?,
        })
    })
    .transpose()
}
