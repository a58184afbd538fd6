//! The SOC's one write that SQLite does its own way; the rest of the SOC role is
//! `crate::soc`.

use crate::*;
use rusqlite::{Connection, params};
use std::collections::BTreeSet;

/// Joins each event to its incident unless already joined (`crate::soc::apply_batch`); the
/// incidents whose evidence grew get their `updated_at` once, not once per event: a storm
/// joins every later event of the agent to its incident.
///
/// Whether the incident is the tenant's is asked once per incident, and each event is then
/// a single-row insert. Written as one `INSERT … SELECT` per event it cost twice as much:
/// SQLite opens a statement journal (a savepoint) for any insert fed by a `SELECT`, since
/// it may write several rows.
pub(super) fn add_evidence(
    conn: &Connection,
    appends: &[EvidenceAppend],
    now: i64,
) -> StoreResult<()> {
    let mut owner =
        conn.prepare_cached("SELECT 1 FROM incidents WHERE tenant_id = ?1 AND id = ?2")?;
    let mut owned = BTreeSet::new();
    for incident in appends.iter().map(incident_of).collect::<BTreeSet<_>>() {
        if owner.exists(params![incident.0, incident.1])? {
            owned.insert(incident);
        }
    }
    let mut add = conn.prepare_cached(
        "INSERT INTO incident_evidence (incident_id, event_seq) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?;
    let mut grown = BTreeSet::new();
    for append in appends.iter().filter(|a| owned.contains(&incident_of(a))) {
        if add.execute(params![append.incident_id, append.evidence.event_seq])? > 0 {
            grown.insert(append.incident_id.as_str());
        }
    }
    for incident_id in grown {
        conn.prepare_cached("UPDATE incidents SET updated_at = ?1 WHERE id = ?2")?
            .execute(params![now, incident_id])?;
    }
    Ok(())
}

/// The (tenant, incident) an evidence append names.
fn incident_of(append: &EvidenceAppend) -> (&str, &str) {
    (append.tenant_id.as_str(), append.incident_id.as_str())
}
