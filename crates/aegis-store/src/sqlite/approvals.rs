//! The SQLite statements of approvals; what they mean is `crate::approvals`.

use super::append_event;
use super::rows::read_opt;
use super::tx::SqliteConn;
use crate::approvals::{
    APPROVAL_COLUMNS, ApprovalRecord, ApprovalSettings, GateStep, StoredApproval,
};
use crate::{NewDecision, StoreResult, approvals, event_kind};
use rusqlite::{Connection, params};

/// The approval rules of one decision, in its transaction, before its event and receipt are
/// written (they record the verdict the gate leaves).
pub(crate) fn gate(conn: &mut Connection, d: &mut NewDecision) -> StoreResult<()> {
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let now = d.created_at_ms;
    let named = match &gate.named {
        Some(id) => SqliteConn::run(conn, async |rows| {
            approvals::load(rows, d.tenant_id.as_str(), id, now).await
        })?,
        None => None,
    };
    match approvals::gate_step(d, gate, named.clone(), now) {
        GateStep::Pass => Ok(()),
        GateStep::ConsumeNamed { approval_id } => match consume(conn, d, Some(&approval_id))? {
            Some(consumed) => record_consumed(conn, d, consumed),
            None => refuse(
                conn,
                d,
                &approval_id,
                "the approval was used already",
                named,
            ),
        },
        GateStep::Refuse { approval_id, why } => refuse(conn, d, &approval_id, &why, named),
        GateStep::ConsumeOrRequest => {
            if let Some(consumed) = consume(conn, d, None)? {
                return record_consumed(conn, d, consumed);
            }
            if let Some(pending) = pending(conn, d)? {
                approvals::requested(d, &pending);
                return Ok(());
            }
            request(conn, d)
        }
    }
}

/// Marks the oldest approved, unexpired approval of this agent and hash (the named one if
/// given) consumed by `d`: a conditional update, so of many uses exactly one wins.
fn consume(
    conn: &Connection,
    d: &NewDecision,
    named: Option<&str>,
) -> StoreResult<Option<ApprovalRecord>> {
    read_opt(
        conn,
        &format!(
            "UPDATE approvals SET status = 'consumed', consumed_by_decision_id = ?1
             WHERE id = (SELECT id FROM approvals
                          WHERE tenant_id = ?2 AND agent_id = ?3 AND action_hash = ?4
                            AND status = 'approved' AND expires_at > ?5 AND (?6 IS NULL OR id = ?6)
                          ORDER BY requested_seq LIMIT 1)
               AND status = 'approved'
             RETURNING {APPROVAL_COLUMNS}"
        ),
        params![
            d.id,
            d.tenant_id.as_str(),
            d.agent_id,
            d.action_hash,
            d.created_at_ms,
            named
        ],
        StoredApproval::read,
    )?
    .map(|row| row.into_record(d.created_at_ms))
    .transpose()
}

fn record_consumed(
    conn: &Connection,
    d: &mut NewDecision,
    approval: ApprovalRecord,
) -> StoreResult<()> {
    let approval_id = approval.id.clone();
    let payload = approvals::consumed(d, approval);
    append_event(
        conn,
        d.tenant_id.as_str(),
        event_kind::APPROVAL_CONSUMED,
        Some(&d.agent_id),
        Some(&approval_id),
        &payload,
    )?;
    Ok(())
}

fn refuse(
    conn: &Connection,
    d: &mut NewDecision,
    approval_id: &str,
    why: &str,
    named: Option<ApprovalRecord>,
) -> StoreResult<()> {
    let payload = approvals::refused(d, approval_id, why, named.as_ref());
    append_event(
        conn,
        d.tenant_id.as_str(),
        event_kind::APPROVAL_MISMATCH,
        Some(&d.agent_id),
        Some(approval_id),
        &payload,
    )?;
    Ok(())
}

fn pending(conn: &Connection, d: &NewDecision) -> StoreResult<Option<ApprovalRecord>> {
    read_opt(
        conn,
        &format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE tenant_id = ?1 AND agent_id = ?2 AND action_hash = ?3
               AND status = 'pending' AND expires_at > ?4
             ORDER BY requested_seq DESC LIMIT 1"
        ),
        params![
            d.tenant_id.as_str(),
            d.agent_id,
            d.action_hash,
            d.created_at_ms
        ],
        StoredApproval::read,
    )?
    .map(|row| row.into_record(d.created_at_ms))
    .transpose()
}

/// Creates the approval a `require_approval` decision asks for, with its event.
fn request(conn: &Connection, d: &mut NewDecision) -> StoreResult<()> {
    let settings = conn
        .prepare_cached("SELECT approval_ttl_secs, approvals_required FROM tenants WHERE id = ?1")?
        .query_row([d.tenant_id.as_str()], |row| {
            Ok(ApprovalSettings {
                ttl_secs: row.get(0)?,
                approvals_required: row.get(1)?,
            })
        })?;
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let mut approval = approvals::new_approval(d, gate, settings);
    approval.requested_seq = append_event(
        conn,
        d.tenant_id.as_str(),
        event_kind::APPROVAL_REQUESTED,
        Some(&d.agent_id),
        Some(&approval.id),
        &approvals::requested_event(&approval),
    )?;
    conn.prepare_cached(&format!(
        "INSERT INTO approvals ({APPROVAL_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
    ))?
    .execute(params![
        approval.id,
        approval.tenant_id.as_str(),
        approval.agent_id,
        approval.status.as_str(),
        approval.action_hash,
        approval.decision_id,
        approval.tool,
        approval.action,
        approval.resource,
        approval.parameters.to_string(),
        approval.mutates_state,
        approval.risk.as_str(),
        approval.risk_score,
        approval.reason,
        approval.run_id,
        approval.required,
        approvals::votes_json(&approval.approvals),
        Option::<String>::None,
        Option::<String>::None,
        approval.created_at_ms,
        approval.expires_at_ms,
        approval.requested_seq,
    ])?;
    approvals::requested(d, &approval);
    Ok(())
}
