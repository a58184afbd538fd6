//! The PostgreSQL statements of approvals; what they mean is `crate::approvals`. Every write
//! runs in the writer's batch transaction under the `log_head` lock, so the conditional
//! update that consumes an approval has one winner across all replicas.

use super::rows::get;
use super::tx::PgRead;
use super::writer::WriterState;
use super::{NewEventRow, prepared};
use crate::approvals::{
    APPROVAL_COLUMNS, ApprovalRecord, ApprovalSettings, GateStep, StoredApproval,
};
use crate::{NewDecision, StoreError, StoreResult, approvals, event_kind};
use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;
use tokio_postgres::Row;

/// An approval row, as of `now_ms`.
fn record(row: Option<Row>, now_ms: i64) -> StoreResult<Option<ApprovalRecord>> {
    row.map(|row| StoredApproval::read(&row)?.into_record(now_ms))
        .transpose()
}

/// The approval rules of one decision, in its transaction, before its event and receipt are
/// sealed (they record the verdict the gate leaves).
pub(crate) async fn gate(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    d: &mut NewDecision,
) -> StoreResult<()> {
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let now = d.created_at_ms;
    let named = match &gate.named {
        Some(id) => {
            approvals::load(&mut PgRead { client: tx }, d.tenant_id.as_str(), id, now).await?
        }
        None => None,
    };
    match approvals::gate_step(d, gate, named.clone(), now) {
        GateStep::Pass => Ok(()),
        GateStep::ConsumeNamed { approval_id } => match consume(tx, d, Some(&approval_id)).await? {
            Some(consumed) => record_consumed(tx, state, d, consumed).await,
            None => {
                let why = "the approval was used already";
                refuse(tx, state, d, &approval_id, why, named).await
            }
        },
        GateStep::Refuse { approval_id, why } => {
            refuse(tx, state, d, &approval_id, &why, named).await
        }
        GateStep::ConsumeOrRequest => {
            if let Some(consumed) = consume(tx, d, None).await? {
                return record_consumed(tx, state, d, consumed).await;
            }
            if let Some(pending) = pending(tx, d).await? {
                approvals::requested(d, &pending);
                return Ok(());
            }
            request(tx, state, d).await
        }
    }
}

/// Marks the oldest approved, unexpired approval of this agent and hash (the named one if
/// given) consumed by `d`: a conditional update, so of many uses exactly one wins.
async fn consume(
    tx: &Transaction<'_>,
    d: &NewDecision,
    named: Option<&str>,
) -> StoreResult<Option<ApprovalRecord>> {
    let sql = format!(
        "UPDATE approvals SET status = 'consumed', consumed_by_decision_id = $1
         WHERE id = (SELECT id FROM approvals
                      WHERE tenant_id = $2 AND agent_id = $3 AND action_hash = $4
                        AND status = 'approved' AND expires_at > $5
                        AND ($6::text IS NULL OR id = $6)
                      ORDER BY requested_seq LIMIT 1)
           AND status = 'approved'
         RETURNING {APPROVAL_COLUMNS}"
    );
    let row = tx
        .query_opt(
            &prepared(tx, &sql).await?,
            &[
                &d.id,
                &d.tenant_id.as_str(),
                &d.agent_id,
                &d.action_hash,
                &d.created_at_ms,
                &named,
            ],
        )
        .await?;
    record(row, d.created_at_ms)
}

async fn append(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    d: &NewDecision,
    kind: &str,
    approval_id: &str,
    payload: &Value,
) -> StoreResult<i64> {
    state
        .append_event(
            tx,
            NewEventRow {
                tenant_id: d.tenant_id.as_str(),
                kind,
                agent_id: Some(&d.agent_id),
                subject_id: Some(approval_id),
                payload,
            },
        )
        .await
}

async fn record_consumed(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    d: &mut NewDecision,
    approval: ApprovalRecord,
) -> StoreResult<()> {
    let approval_id = approval.id.clone();
    let payload = approvals::consumed(d, approval);
    append(
        tx,
        state,
        d,
        event_kind::APPROVAL_CONSUMED,
        &approval_id,
        &payload,
    )
    .await?;
    Ok(())
}

async fn refuse(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    d: &mut NewDecision,
    approval_id: &str,
    why: &str,
    named: Option<ApprovalRecord>,
) -> StoreResult<()> {
    let payload = approvals::refused(d, approval_id, why, named.as_ref());
    append(
        tx,
        state,
        d,
        event_kind::APPROVAL_MISMATCH,
        approval_id,
        &payload,
    )
    .await?;
    Ok(())
}

async fn pending(tx: &Transaction<'_>, d: &NewDecision) -> StoreResult<Option<ApprovalRecord>> {
    let sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals
         WHERE tenant_id = $1 AND agent_id = $2 AND action_hash = $3
           AND status = 'pending' AND expires_at > $4
         ORDER BY requested_seq DESC LIMIT 1"
    );
    let row = tx
        .query_opt(
            &prepared(tx, &sql).await?,
            &[
                &d.tenant_id.as_str(),
                &d.agent_id,
                &d.action_hash,
                &d.created_at_ms,
            ],
        )
        .await?;
    record(row, d.created_at_ms)
}

/// Creates the approval a `require_approval` decision asks for, with its event.
async fn request(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    d: &mut NewDecision,
) -> StoreResult<()> {
    let row = tx
        .query_one(
            &prepared(
                tx,
                "SELECT approval_ttl_secs, approvals_required FROM tenants WHERE id = $1",
            )
            .await?,
            &[&d.tenant_id.as_str()],
        )
        .await?;
    let (ttl_secs, required): (i64, i64) = (get(&row, 0)?, get(&row, 1)?);
    let settings = ApprovalSettings {
        ttl_secs: u32::try_from(ttl_secs)
            .map_err(|_| StoreError::Corrupt("tenants.approval_ttl_secs".into()))?,
        approvals_required: u8::try_from(required)
            .map_err(|_| StoreError::Corrupt("tenants.approvals_required".into()))?,
    };
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let mut approval = approvals::new_approval(d, gate, settings);
    let payload = approvals::requested_event(&approval);
    approval.requested_seq = append(
        tx,
        state,
        d,
        event_kind::APPROVAL_REQUESTED,
        &approval.id,
        &payload,
    )
    .await?;
    let sql = format!(
        "INSERT INTO approvals ({APPROVAL_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
    );
    tx.execute(
        &prepared(tx, &sql).await?,
        &[
            &approval.id,
            &approval.tenant_id.as_str(),
            &approval.agent_id,
            &approval.status.as_str(),
            &approval.action_hash,
            &approval.decision_id,
            &approval.tool,
            &approval.action,
            &approval.resource,
            &approval.parameters.to_string(),
            &approval.mutates_state,
            &approval.risk.as_str(),
            &i64::from(approval.risk_score),
            &approval.reason,
            &approval.run_id,
            &i64::from(approval.required),
            &approvals::votes_json(&approval.approvals),
            &Option::<String>::None,
            &Option::<String>::None,
            &approval.created_at_ms,
            &approval.expires_at_ms,
            &approval.requested_seq,
        ],
    )
    .await?;
    approvals::requested(d, &approval);
    Ok(())
}
