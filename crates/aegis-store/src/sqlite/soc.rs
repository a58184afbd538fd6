//! SOC tables as SQLite reads them: alerts, incidents with their evidence and responses,
//! correlator state. What the SOC writes is `crate::soc`.

use super::rows::*;
use crate::records;
use crate::schema::*;
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

pub(super) fn list_alerts(
    conn: &Connection,
    tenant: &TenantId,
    f: &AlertFilter,
) -> StoreResult<Vec<AlertRecord>> {
    read_rows(
        conn,
        &format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE tenant_id = ?1 AND event_seq < ?2
               AND (?3 IS NULL OR severity = ?3) AND (?4 IS NULL OR kind = ?4)
               AND (?5 IS NULL OR agent_id = ?5)
               AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)
             ORDER BY event_seq DESC LIMIT ?8"
        ),
        params![
            tenant.as_str(),
            f.page.before.unwrap_or(i64::MAX),
            f.severity.map(|s| s.as_str()),
            f.kind,
            f.agent_id,
            f.since_ms,
            f.until_ms,
            f.page.limit
        ],
        crate::rows::alert,
    )
}

pub(super) fn list_incidents(
    conn: &Connection,
    tenant: &TenantId,
    f: &IncidentFilter,
) -> StoreResult<Vec<IncidentRecord>> {
    read_rows(
        conn,
        &format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE tenant_id = ?1 AND event_seq < ?2
               AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR severity = ?4)
               AND (?5 IS NULL OR kind = ?5) AND (?6 IS NULL OR agent_id = ?6)
               AND (?7 IS NULL OR opened_at >= ?7) AND (?8 IS NULL OR opened_at < ?8)
             ORDER BY event_seq DESC LIMIT ?9"
        ),
        params![
            tenant.as_str(),
            f.page.before.unwrap_or(i64::MAX),
            f.status,
            f.severity.map(|s| s.as_str()),
            f.kind,
            f.agent_id,
            f.since_ms,
            f.until_ms,
            f.page.limit
        ],
        crate::rows::incident,
    )
}

/// The first (`ASC`) or most recent (`DESC`) evidence items of an incident.
fn evidence_end(
    conn: &Connection,
    incident_id: &str,
    order: &str,
    limit: u32,
) -> StoreResult<Vec<EvidenceItem>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EVIDENCE_ITEM_COLUMNS}
             FROM incident_evidence e JOIN events ev ON ev.seq = e.event_seq
             WHERE e.incident_id = ?1 ORDER BY e.event_seq {order} LIMIT ?2"
        ))?
        .query_map(params![incident_id, limit], |row| {
            Ok(EvidenceItem {
                event_seq: row.get(0)?,
                decision_id: row.get(1)?,
                recorded_at_ms: row.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

pub(super) fn load_incident(
    conn: &Connection,
    tenant_id: &str,
    incident_id: &str,
) -> StoreResult<IncidentDetail> {
    let incident = read_opt(
        conn,
        &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant_id = ?1 AND id = ?2"),
        [tenant_id, incident_id],
        crate::rows::incident,
    )?
    .ok_or(StoreError::NotFound("incident"))?;
    let evidence = records::evidence_summary(
        evidence_end(conn, incident_id, "ASC", EVIDENCE_SHOWN_FIRST)?,
        evidence_end(conn, incident_id, "DESC", EVIDENCE_SHOWN_RECENT)?,
    );
    let response_actions = read_rows(
        conn,
        &format!(
            "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions WHERE incident_id = ?1 ORDER BY event_seq"
        ),
        [incident_id],
        crate::rows::response_action,
    )?;
    Ok(IncidentDetail {
        incident,
        evidence,
        response_actions,
    })
}

pub(super) fn correlator_states(conn: &Connection) -> StoreResult<Vec<CorrelatorStateRecord>> {
    super::rows::read_rows(
        conn,
        CORRELATOR_STATE_SQL,
        [],
        crate::rows::correlator_state,
    )
}
