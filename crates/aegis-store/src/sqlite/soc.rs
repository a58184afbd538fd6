//! The SOC's one write that SQLite does its own way; the rest of the SOC role is
//! `crate::soc`.

use crate::*;
use rusqlite::{Connection, params};

/// Joins each event to its incident unless already joined (`crate::soc::apply_batch`); the
/// incidents whose evidence grew get their `updated_at` once, not once per event: a storm
/// joins every later event of the agent to its incident.
pub(super) fn add_evidence(
    conn: &Connection,
    appends: &[EvidenceAppend],
    now: i64,
) -> StoreResult<()> {
    let mut grown = std::collections::BTreeSet::new();
    let mut add = conn.prepare_cached(
        "INSERT INTO incident_evidence (incident_id, event_seq)
         SELECT id, ?3 FROM incidents WHERE tenant_id = ?1 AND id = ?2
         ON CONFLICT DO NOTHING",
    )?;
    for append in appends {
        let added = add.execute(params![
            append.tenant_id.as_str(),
            append.incident_id,
            append.evidence.event_seq,
        ])?;
        if added > 0 {
            grown.insert(append.incident_id.as_str());
        }
    }
    for incident_id in grown {
        conn.prepare_cached("UPDATE incidents SET updated_at = ?1 WHERE id = ?2")?
            .execute(params![now, incident_id])?;
    }
    Ok(())
}
