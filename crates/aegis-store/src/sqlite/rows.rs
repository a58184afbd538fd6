//! Column lists and row mappers, one per stored type.

use crate::*;
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::receipt::{Checkpoint, CheckpointBody, RECEIPT_SCHEMA_VERSION};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use std::str::FromStr;

pub(crate) const AGENT_COLUMNS: &str = "id, tenant_id, name, status, status_reason, risk_tier, created_at, updated_at, rowid, version, \
     rate_per_sec, rate_burst";

impl crate::schema::StoredRow for Row<'_> {
    fn text(&self, index: usize) -> StoreResult<Option<String>> {
        Ok(self.get(index)?)
    }

    fn int(&self, index: usize) -> StoreResult<Option<i64>> {
        Ok(self.get(index)?)
    }

    fn flag(&self, index: usize) -> StoreResult<Option<bool>> {
        Ok(self.get(index)?)
    }
}

fn enum_at<T: FromStr>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            Type::Text,
            format!("unexpected stored value {text:?}").into(),
        )
    })
}

pub(super) fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<TenantSettings> {
    Ok(TenantSettings {
        id: TenantId::new(row.get::<_, String>(0)?),
        risk_escalation: RiskEscalation {
            denial_threshold: row.get(1)?,
            window_minutes: row.get(2)?,
        },
        created_at_ms: row.get(3)?,
        autonomy_override: row
            .get::<_, Option<String>>(4)?
            .map(|level| {
                level.parse().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        4,
                        Type::Text,
                        format!("autonomy level {level:?}").into(),
                    )
                })
            })
            .transpose()?,
        deny_storm: DenyStormOverride {
            threshold: row.get(5)?,
            window_secs: row.get(6)?,
        },
        exfiltration_reads: row
            .get::<_, Option<String>>(7)?
            .map(|reads| {
                reads.parse().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        7,
                        Type::Text,
                        format!("exfiltration reads {reads:?}").into(),
                    )
                })
            })
            .transpose()?
            .unwrap_or(ExfiltrationReads::Sensitive),
        approvals: crate::approvals::ApprovalSettings {
            ttl_secs: row.get(8)?,
            approvals_required: row.get(9)?,
        },
        rate_limits: RateLimits {
            per_sec: row.get(10)?,
            burst: row.get(11)?,
        },
        mutating_per_hour: row.get(12)?,
    })
}

fn json_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    row.get::<_, Option<String>>(index)?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, e.into()))
        })
        .transpose()
}

pub(super) fn incident_from_row(row: &Row<'_>) -> rusqlite::Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        kind: row.get(2)?,
        severity: enum_at(row, 3)?,
        status: row.get(4)?,
        agent_id: row.get(5)?,
        summary: row.get(6)?,
        recommended_action: json_at(row, 7)?,
        opened_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
        acknowledged_at_ms: row.get(10)?,
        acknowledged_by: row.get(11)?,
        closed_at_ms: row.get(12)?,
        closed_by: row.get(13)?,
        close_reason: row.get(14)?,
        event_seq: row.get(15)?,
        evidence_count: row.get(16)?,
    })
}

pub(super) fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        kind: row.get(2)?,
        severity: enum_at(row, 3)?,
        agent_id: row.get(4)?,
        source_seq: row.get(5)?,
        summary: row.get(6)?,
        event_seq: row.get(7)?,
        created_at_ms: row.get(8)?,
        count: row.get(9)?,
    })
}

/// Runs `sql` and reads each row with `read`, a reader written once for both backends (over
/// [`crate::schema::StoredRow`]), so that its errors are the store's, not the driver's.
pub(super) fn read_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    read: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut values = Vec::new();
    while let Some(row) = rows.next()? {
        values.push(read(row)?);
    }
    Ok(values)
}

/// Runs a read of [`EVENT_SQL`] (or of its `matching`).
pub(super) fn read_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Event>> {
    read_rows(conn, sql, params, |row| {
        crate::records::StoredEvent::read(row)?.into_event()
    })
}

/// The event reads in SQLite's placeholders; SQLite looks each event's decision up by the
/// unique index on `event_seq`.
pub(super) static EVENT_SQL: std::sync::LazyLock<crate::schema::EventQueries> =
    std::sync::LazyLock::new(|| {
        crate::schema::EventQueries::new(
            "LEFT JOIN decisions d ON e.payload = '' AND d.event_seq = e.seq".to_owned(),
            super::numbered_placeholders,
        )
    });

pub(super) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<OperatorKey> {
    Ok(OperatorKey {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        name: row.get(2)?,
        role: enum_at(row, 3)?,
        created_at_ms: row.get(4)?,
        revoked_at_ms: row.get(5)?,
    })
}

pub(super) fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        name: row.get(2)?,
        status: enum_at(row, 3)?,
        status_reason: row.get(4)?,
        risk_tier: enum_at(row, 5)?,
        created_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
        cursor: row.get(8)?,
        version: row.get(9)?,
        rate_limits: RateLimits {
            per_sec: row.get(10)?,
            burst: row.get(11)?,
        },
    })
}

pub(super) fn decision_from_row(row: &Row<'_>) -> rusqlite::Result<DecisionRecord> {
    let matched: String = row.get(14)?;
    Ok(DecisionRecord {
        id: row.get(0)?,
        tenant_id: TenantId::new(row.get::<_, String>(1)?),
        event_seq: row.get(2)?,
        agent_id: row.get(3)?,
        request_id: row.get(4)?,
        tool: row.get(5)?,
        action: row.get(6)?,
        resource: row.get(7)?,
        mutates_state: row.get(8)?,
        risk: enum_at(row, 9)?,
        source_trust: enum_at(row, 10)?,
        verdict: enum_at(row, 11)?,
        risk_score: row.get(12)?,
        reason: row.get(13)?,
        matched_policies: serde_json::from_str(&matched)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(14, Type::Text, e.into()))?,
        action_hash: row.get(15)?,
        trace: TraceContext {
            run_id: row.get(16)?,
            trace_id: row.get(17)?,
            parent_run_id: row.get(18)?,
        },
        receipt_id: row.get(19)?,
        created_at_ms: row.get(20)?,
    })
}

pub(super) fn response_action_from_row(row: &Row<'_>) -> rusqlite::Result<ResponseActionRecord> {
    Ok(ResponseActionRecord {
        id: row.get(0)?,
        incident_id: row.get(1)?,
        agent_id: row.get(2)?,
        action: row.get(3)?,
        mode: row.get(4)?,
        actor: row.get(5)?,
        detail: row.get(6)?,
        event_seq: row.get(7)?,
        created_at_ms: row.get(8)?,
    })
}

pub(super) fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        body: CheckpointBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: row.get(0)?,
            seq: row.get::<_, i64>(1)? as u64,
            head_hash: row.get(2)?,
            key_id: row.get(3)?,
            signed_at: row.get(4)?,
        },
        signature: row.get(5)?,
    })
}
