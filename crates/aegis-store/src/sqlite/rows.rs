//! Column lists and row mappers, one per stored type.

use crate::*;
use aegis_core::receipt::{Checkpoint, CheckpointBody, RECEIPT_SCHEMA_VERSION};
use rusqlite::Row;
use rusqlite::types::Type;
use std::str::FromStr;
use subtle::ConstantTimeEq;

pub(super) const TENANT_COLUMNS: &str =
    "id, denial_threshold, escalation_window_minutes, created_at";
pub(super) const KEY_COLUMNS: &str = "id, tenant_id, name, role, created_at, revoked_at";
pub(super) const AGENT_COLUMNS: &str =
    "id, tenant_id, name, status, status_reason, risk_tier, created_at, updated_at, rowid";
pub(super) const DECISION_COLUMNS: &str = "id, tenant_id, event_seq, agent_id, request_id, tool, action, resource, \
     mutates_state, risk, source_trust, decision, risk_score, reason, matched_policies, action_hash, \
     run_id, trace_id, parent_run_id, receipt_id, created_at";

pub(super) fn constant_time_eq(stored: &[u8], presented: &[u8]) -> bool {
    stored.ct_eq(presented).into()
}

/// Parses a stored enum spelling; an unknown spelling means the row is corrupt.
pub(super) fn parse_column<T: FromStr>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("unexpected stored value {text:?}")))
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
    })
}

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
