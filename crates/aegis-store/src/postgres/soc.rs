//! The SOC's one write that PostgreSQL does its own way; the rest of the SOC role is
//! `crate::soc`.

use super::prepared;
use crate::*;
use deadpool_postgres::{GenericClient, Transaction};

/// Joins each event to its incident unless already joined (`crate::soc::apply_batch`), in
/// one statement for the batch rather than two round trips per event: a storm joins every
/// later event of the agent to its incident. The incidents whose evidence grew get their
/// `updated_at` in the same statement.
pub(super) async fn add_evidence(
    tx: &Transaction<'_>,
    appends: &[EvidenceAppend],
    now: i64,
) -> StoreResult<()> {
    if appends.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = appends.iter().map(|a| a.tenant_id.as_str()).collect();
    let incidents: Vec<&str> = appends.iter().map(|a| a.incident_id.as_str()).collect();
    let seqs: Vec<i64> = appends.iter().map(|a| a.evidence.event_seq).collect();
    tx.execute(
        &prepared(
            tx,
            "WITH added AS (
                 INSERT INTO incident_evidence (incident_id, event_seq)
                 SELECT i.id, a.event_seq
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[])
                      AS a (tenant_id, incident_id, event_seq)
                 JOIN incidents i ON i.tenant_id = a.tenant_id AND i.id = a.incident_id
                 ON CONFLICT DO NOTHING
                 RETURNING incident_id)
             UPDATE incidents SET updated_at = $4 WHERE id IN (SELECT incident_id FROM added)",
        )
        .await?,
        &[&tenants, &incidents, &seqs, &now],
    )
    .await?;
    Ok(())
}
