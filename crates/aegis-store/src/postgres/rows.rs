//! Row mappers for the PostgreSQL store. Column lists are shared (`crate::schema`) where the
//! schemas agree; the two backends differ only in how a row is read.

pub(super) use crate::schema::parse_column;
use crate::*;
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::receipt::{Checkpoint, CheckpointBody, RECEIPT_SCHEMA_VERSION, Receipt};
use std::str::FromStr;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

pub(super) use crate::schema::{
    ALERT_COLUMNS, DECISION_COLUMNS, INCIDENT_COLUMNS, KEY_COLUMNS, RESPONSE_ACTION_COLUMNS,
    TENANT_COLUMNS, constant_time_eq,
};

/// Agents page by `ordinal` here (SQLite pages by its rowid).
pub(super) const AGENT_COLUMNS: &str = "id, tenant_id, name, status, status_reason, risk_tier, created_at, updated_at, ordinal, version, rate_per_sec, rate_burst";

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

fn enum_at<T: FromStr>(row: &Row, index: usize) -> StoreResult<T> {
    parse_column(&get::<String>(row, index)?)
}

fn u32_at(row: &Row, index: usize) -> StoreResult<u32> {
    let value: i64 = get(row, index)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("column {index}: {value}")))
}

fn opt_u32_at(row: &Row, index: usize) -> StoreResult<Option<u32>> {
    get::<Option<i64>>(row, index)?
        .map(|value| {
            u32::try_from(value)
                .map_err(|_| StoreError::Corrupt(format!("column {index}: {value}")))
        })
        .transpose()
}

pub(super) fn json_at(row: &Row, index: usize) -> StoreResult<Option<serde_json::Value>> {
    get::<Option<String>>(row, index)?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
        })
        .transpose()
}

pub(super) fn tenant_from_row(row: &Row) -> StoreResult<TenantSettings> {
    Ok(TenantSettings {
        id: TenantId::new(get::<String>(row, 0)?),
        risk_escalation: RiskEscalation {
            denial_threshold: u32_at(row, 1)?,
            window_minutes: u32_at(row, 2)?,
        },
        created_at_ms: get(row, 3)?,
        autonomy_override: get::<Option<String>>(row, 4)?
            .map(|level| parse_column(&level))
            .transpose()?,
        deny_storm: DenyStormOverride {
            threshold: opt_u32_at(row, 5)?,
            window_secs: opt_u32_at(row, 6)?,
        },
        exfiltration_reads: get::<Option<String>>(row, 7)?
            .map(|reads| parse_column(&reads))
            .transpose()?
            .unwrap_or(ExfiltrationReads::Sensitive),
        approvals: crate::approvals::ApprovalSettings {
            ttl_secs: u32_at(row, 8)?,
            approvals_required: u8::try_from(u32_at(row, 9)?)
                .map_err(|_| StoreError::Corrupt("column 9: approvals_required".into()))?,
        },
        rate_limits: RateLimits {
            per_sec: opt_u32_at(row, 10)?,
            burst: opt_u32_at(row, 11)?,
        },
        mutating_per_hour: opt_u32_at(row, 12)?,
    })
}

pub(super) fn key_from_row(row: &Row) -> StoreResult<OperatorKey> {
    Ok(OperatorKey {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        name: get(row, 2)?,
        role: enum_at(row, 3)?,
        created_at_ms: get(row, 4)?,
        revoked_at_ms: get(row, 5)?,
    })
}

pub(super) fn agent_from_row(row: &Row) -> StoreResult<Agent> {
    Ok(Agent {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        name: get(row, 2)?,
        status: enum_at(row, 3)?,
        status_reason: get(row, 4)?,
        risk_tier: enum_at(row, 5)?,
        created_at_ms: get(row, 6)?,
        updated_at_ms: get(row, 7)?,
        cursor: get(row, 8)?,
        version: get(row, 9)?,
        rate_limits: RateLimits {
            per_sec: opt_u32_at(row, 10)?,
            burst: opt_u32_at(row, 11)?,
        },
    })
}

pub(super) fn decision_from_row(row: &Row) -> StoreResult<DecisionRecord> {
    let matched: String = get(row, 14)?;
    let risk_score: i64 = get(row, 12)?;
    Ok(DecisionRecord {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        event_seq: get(row, 2)?,
        agent_id: get(row, 3)?,
        request_id: get(row, 4)?,
        tool: get(row, 5)?,
        action: get(row, 6)?,
        resource: get(row, 7)?,
        mutates_state: get(row, 8)?,
        risk: enum_at(row, 9)?,
        source_trust: enum_at(row, 10)?,
        verdict: enum_at(row, 11)?,
        risk_score: u8::try_from(risk_score)
            .map_err(|_| StoreError::Corrupt(format!("risk score {risk_score}")))?,
        reason: get(row, 13)?,
        matched_policies: serde_json::from_str(&matched)
            .map_err(|e| StoreError::Corrupt(format!("matched policies: {e}")))?,
        action_hash: get(row, 15)?,
        trace: TraceContext {
            run_id: get(row, 16)?,
            trace_id: get(row, 17)?,
            parent_run_id: get(row, 18)?,
        },
        receipt_id: get(row, 19)?,
        created_at_ms: get(row, 20)?,
    })
}

/// A row of an [`EVENT_SQL`] read.
pub(super) fn event_from_row(row: &Row) -> StoreResult<Event> {
    crate::records::StoredEvent::read(row)?.into_event()
}

/// The event reads in PostgreSQL's placeholders, as written. The decision is joined through
/// a fenced (`OFFSET 0`) lateral subquery for the reason [`RECEIPT_SQL`] is: one probe of the
/// unique index on `event_seq` per event read, whatever the statistics say.
pub(super) static EVENT_SQL: std::sync::LazyLock<crate::schema::EventQueries> =
    std::sync::LazyLock::new(|| {
        let join = format!(
            "LEFT JOIN LATERAL (SELECT {} FROM decisions
                                WHERE e.payload = '' AND event_seq = e.seq OFFSET 0) d ON true",
            crate::schema::EVENT_DECISION_COLUMNS
        );
        crate::schema::EventQueries::new(join, str::to_owned)
    });

pub(super) fn alert_from_row(row: &Row) -> StoreResult<AlertRecord> {
    Ok(AlertRecord {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        kind: get(row, 2)?,
        severity: enum_at(row, 3)?,
        agent_id: get(row, 4)?,
        source_seq: get(row, 5)?,
        summary: get(row, 6)?,
        event_seq: get(row, 7)?,
        created_at_ms: get(row, 8)?,
        count: get(row, 9)?,
    })
}

pub(super) fn incident_from_row(row: &Row) -> StoreResult<IncidentRecord> {
    Ok(IncidentRecord {
        id: get(row, 0)?,
        tenant_id: TenantId::new(get::<String>(row, 1)?),
        kind: get(row, 2)?,
        severity: enum_at(row, 3)?,
        status: get(row, 4)?,
        agent_id: get(row, 5)?,
        summary: get(row, 6)?,
        recommended_action: json_at(row, 7)?,
        opened_at_ms: get(row, 8)?,
        updated_at_ms: get(row, 9)?,
        acknowledged_at_ms: get(row, 10)?,
        acknowledged_by: get(row, 11)?,
        closed_at_ms: get(row, 12)?,
        closed_by: get(row, 13)?,
        close_reason: get(row, 14)?,
        event_seq: get(row, 15)?,
        evidence_count: get(row, 16)?,
    })
}

pub(super) fn checkpoint_from_row(row: &Row) -> StoreResult<Checkpoint> {
    Ok(Checkpoint {
        body: CheckpointBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: get(row, 0)?,
            seq: get::<i64>(row, 1)? as u64,
            head_hash: get(row, 2)?,
            key_id: get(row, 3)?,
            signed_at: get(row, 4)?,
        },
        signature: get(row, 5)?,
    })
}

/// A receipt from its `body, hash` columns.
pub(super) fn response_action_from_row(row: &Row) -> StoreResult<ResponseActionRecord> {
    Ok(ResponseActionRecord {
        id: get(row, 0)?,
        incident_id: get(row, 1)?,
        agent_id: get(row, 2)?,
        action: get(row, 3)?,
        mode: get(row, 4)?,
        actor: get(row, 5)?,
        detail: get(row, 6)?,
        event_seq: get(row, 7)?,
        created_at_ms: get(row, 8)?,
    })
}

impl crate::schema::StoredRow for Row {
    fn text(&self, index: usize) -> StoreResult<Option<String>> {
        get(self, index)
    }

    fn int(&self, index: usize) -> StoreResult<Option<i64>> {
        get(self, index)
    }

    fn flag(&self, index: usize) -> StoreResult<Option<bool>> {
        get(self, index)
    }
}

/// A row of a [`crate::schema::ReceiptQueries`] read.
pub(super) fn receipt_from_row(row: &Row) -> StoreResult<Receipt> {
    crate::records::StoredReceipt::read(row)?.into_receipt()
}

/// The receipt reads in PostgreSQL's placeholders, as written. The decision is joined
/// through a fenced (`OFFSET 0`) lateral subquery so that the planner probes the decision's
/// primary key once per receipt: with a plain join and statistics that lag a growing table,
/// it hashed every decision of the tenant for a page of 500 receipts.
pub(super) static RECEIPT_SQL: std::sync::LazyLock<crate::schema::ReceiptQueries> =
    std::sync::LazyLock::new(|| {
        let join = format!(
            "LEFT JOIN LATERAL (SELECT {} FROM decisions
                                WHERE id = r.decision_id AND tenant_id = r.tenant_id OFFSET 0) d ON true",
            crate::schema::RECEIPT_DECISION_COLUMNS
        );
        crate::schema::ReceiptQueries::new(join, str::to_owned)
    });
