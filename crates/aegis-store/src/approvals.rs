//! Approvals in storage: the records, and what both backends do the same way when a decision
//! meets an approval (the gate), when an operator decides one, when the sweep expires them
//! and when the SOC rejects an agent's pending ones. The rules themselves are
//! `aegis_core::approval`; all four are written once here over `WriteTx`, the gate run by
//! each backend's decision write inside its batch transaction.
//!
//! Expiry needs no writer: a stored `pending` or `approved` approval past `expires_at` reads
//! as `expired` everywhere ([`aegis_core::approval::effective_status`]). The leader's sweep
//! ([`crate::AdminStore::expire_approvals`]) later stores the status and appends the
//! `approval.expired` event, in bounded batches.

use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{NewDecision, Page, StoreError, StoreResult, TenantId, event_kind};
use aegis_core::approval::{ApprovalFacts, ApprovalStatus, UseRefused};
use aegis_core::model::{ActionRisk, Verdict};
use aegis_core::receipt::ReceiptApproval;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// What a decision asks of approvals: set by the server only when the policy answered
/// `require_approval` or the call named an approval, so other calls cost nothing here.
#[derive(Debug, Clone)]
pub struct ApprovalGate {
    /// The `approval_id` the call named.
    pub named: Option<String>,
    /// The id a new approval gets, if this call creates one.
    pub new_id: String,
    /// The call's parameters, shown to the people asked.
    pub parameters: Value,
    /// What the writer did, once it did.
    pub(crate) answer: Option<ApprovalAnswer>,
}

impl ApprovalGate {
    pub fn new(named: Option<String>, new_id: String, parameters: Value) -> Self {
        ApprovalGate {
            named,
            new_id,
            parameters,
            answer: None,
        }
    }
}

/// The approval a decision met, as the authorize answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRef {
    pub id: String,
    pub status: ApprovalStatus,
    pub expires_at_ms: i64,
    pub action_hash: String,
}

/// How an approval changed a decision, recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAnswer {
    pub approval: ApprovalRef,
    /// Set when the decision consumed the approval: named in its receipt.
    pub consumed: Option<ReceiptApproval>,
}

/// One operator's approval or rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    pub key_id: String,
    /// The key's name, or its id when it has none.
    pub key_name: String,
    pub at_ms: i64,
    pub reason: Option<String>,
}

/// A stored approval, with its status as of the read.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub status: ApprovalStatus,
    pub action_hash: String,
    /// The decision that asked for it.
    pub decision_id: String,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    pub parameters: Value,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub risk_score: u8,
    pub reason: String,
    pub run_id: Option<String>,
    pub required: u8,
    pub approvals: Vec<ApprovalVote>,
    pub rejected_by: Option<ApprovalVote>,
    pub consumed_by_decision_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// Seq of its `approval.requested` event: the list's order and cursor.
    pub requested_seq: i64,
}

impl ApprovalRecord {
    /// The facts the core rules take.
    pub fn facts<'a>(&self, approved_by: &'a [&'a str]) -> ApprovalFacts<'a> {
        ApprovalFacts {
            stored: self.status,
            expires_at_ms: self.expires_at_ms,
            required: self.required,
            approved_by,
        }
    }

    pub fn approver_ids(&self) -> Vec<&str> {
        self.approvals.iter().map(|v| v.key_id.as_str()).collect()
    }

    pub(crate) fn reference(&self) -> ApprovalRef {
        ApprovalRef {
            id: self.id.clone(),
            status: self.status,
            expires_at_ms: self.expires_at_ms,
            action_hash: self.action_hash.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub agent_id: Option<String>,
    pub since_ms: Option<i64>,
    pub page: Page,
}

/// A tenant's approval settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApprovalSettings {
    pub ttl_secs: u32,
    pub approvals_required: u8,
}

/// An operator's vote, as the store applies it.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    pub verdict: aegis_core::approval::Verdict,
    pub vote: ApprovalVote,
}

/// Whether the condition of [`status_condition`] reads the time (pending and approved lapse
/// into expired): only then does a list bind it, since both drivers refuse an unused parameter.
pub(crate) fn status_reads_time(status: ApprovalStatus) -> bool {
    !matches!(status, ApprovalStatus::Rejected | ApprovalStatus::Consumed)
}

/// The SQL condition, over the `approvals` columns, for approvals whose status at `now` is
/// `status` (`now` is the placeholder of the read's time): expiry is computed, not stored.
pub(crate) fn status_condition(status: ApprovalStatus, now: &str) -> String {
    match status {
        ApprovalStatus::Pending | ApprovalStatus::Approved => {
            format!("status = '{}' AND expires_at > {now}", status.as_str())
        }
        ApprovalStatus::Expired => format!(
            "(status = 'expired' OR (status IN ('pending', 'approved') AND expires_at <= {now}))"
        ),
        ApprovalStatus::Rejected | ApprovalStatus::Consumed => {
            format!("status = '{}'", status.as_str())
        }
    }
}

/// What the gate does for a decision, decided from what the backend read.
pub(crate) enum GateStep {
    /// Nothing to do (a deny stays a deny; an allow that named no approval).
    Pass,
    /// Consume the named approval (conditionally: only if still approved).
    ConsumeNamed { approval_id: String },
    /// Deny the call: the named approval cannot be used.
    Refuse { approval_id: String, why: String },
    /// Consume an approved approval of this agent and hash if there is one, else reuse the
    /// pending one or create one.
    ConsumeOrRequest,
}

/// The first step of the gate: `named` is the approval the call named, as read (`None`
/// when it does not exist in the tenant).
pub(crate) fn gate_step(
    d: &NewDecision,
    gate: &ApprovalGate,
    named: Option<ApprovalRecord>,
    now_ms: i64,
) -> GateStep {
    // Freeze, revoke, a stale agent and a policy deny all win over any approval.
    if d.verdict == Verdict::Deny {
        return GateStep::Pass;
    }
    let Some(named_id) = &gate.named else {
        return match d.verdict {
            Verdict::RequireApproval => GateStep::ConsumeOrRequest,
            _ => GateStep::Pass,
        };
    };
    let Some(approval) = named else {
        return GateStep::Refuse {
            approval_id: named_id.clone(),
            why: "no such approval".to_owned(),
        };
    };
    let ids = approval.approver_ids();
    let waiting = approval.agent_id == d.agent_id
        && approval.action_hash == d.action_hash
        && approval.status == ApprovalStatus::Pending;
    if waiting && d.verdict == Verdict::RequireApproval {
        // Asking again, by id, while people decide: the same approval, no alarm.
        return GateStep::ConsumeOrRequest;
    }
    match aegis_core::approval::check_use(
        approval.facts(&ids),
        &approval.agent_id,
        &approval.action_hash,
        &d.agent_id,
        &d.action_hash,
        now_ms,
    ) {
        Ok(()) => GateStep::ConsumeNamed {
            approval_id: approval.id,
        },
        Err(UseRefused::OtherAgent) => GateStep::Refuse {
            approval_id: named_id.clone(),
            // Another agent's approval is reported as missing: it is not this agent's to see.
            why: "no such approval".to_owned(),
        },
        Err(why) => GateStep::Refuse {
            approval_id: named_id.clone(),
            why: why.to_string(),
        },
    }
}

/// The approval rules of one decision, in its writer transaction, before its event and
/// receipt are sealed (they record the verdict the gate leaves). A decision without a gate
/// returns at once.
pub(crate) async fn gate(tx: &mut impl WriteTx, d: &mut NewDecision) -> StoreResult<()> {
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let now = d.created_at_ms;
    let named = match &gate.named {
        Some(id) => load(tx, d.tenant_id.as_str(), id, now).await?,
        None => None,
    };
    match gate_step(d, gate, named.clone(), now) {
        GateStep::Pass => Ok(()),
        GateStep::ConsumeNamed { approval_id } => match consume(tx, d, Some(&approval_id)).await? {
            Some(approval) => {
                let approval_id = approval.id.clone();
                let payload = consumed(d, approval);
                append(tx, d, event_kind::APPROVAL_CONSUMED, &approval_id, payload).await
            }
            None => {
                let why = "the approval was used already";
                let payload = refused(d, &approval_id, why, named.as_ref());
                append(tx, d, event_kind::APPROVAL_MISMATCH, &approval_id, payload).await
            }
        },
        GateStep::Refuse { approval_id, why } => {
            let payload = refused(d, &approval_id, &why, named.as_ref());
            append(tx, d, event_kind::APPROVAL_MISMATCH, &approval_id, payload).await
        }
        GateStep::ConsumeOrRequest => {
            if let Some(approval) = consume(tx, d, None).await? {
                let approval_id = approval.id.clone();
                let payload = consumed(d, approval);
                return append(tx, d, event_kind::APPROVAL_CONSUMED, &approval_id, payload).await;
            }
            if let Some(pending) = pending(tx, d).await? {
                requested(d, &pending);
                return Ok(());
            }
            request(tx, d).await
        }
    }
}

/// Marks the oldest approved, unexpired approval of this agent and hash (the named one if
/// given) consumed by `d`: a conditional update, so of many uses exactly one wins (the
/// writer's transaction serialises them; on PostgreSQL across replicas too, under
/// `log_head`).
async fn consume(
    tx: &mut impl WriteTx,
    d: &NewDecision,
    named: Option<&str>,
) -> StoreResult<Option<ApprovalRecord>> {
    static CONSUME: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE approvals SET status = 'consumed', consumed_by_decision_id = $1
             WHERE id = (SELECT id FROM approvals
                          WHERE tenant_id = $2 AND agent_id = $3 AND action_hash = $4
                            AND status = 'approved' AND expires_at > $5
                            AND (CAST($6 AS TEXT) IS NULL OR id = $6)
                          ORDER BY requested_seq LIMIT 1)
               AND status = 'approved'
             RETURNING {APPROVAL_COLUMNS}"
        )
    });
    tx.query_opt(
        &CONSUME,
        &[
            SqlValue::text(&d.id),
            SqlValue::text(d.tenant_id.as_str()),
            SqlValue::text(&d.agent_id),
            SqlValue::text(&d.action_hash),
            SqlValue::int(d.created_at_ms),
            SqlValue::Text(named),
        ],
        |row| StoredApproval::read(row)?.into_record(d.created_at_ms),
    )
    .await
}

/// The newest pending, unexpired approval of this agent and hash: asking again while people
/// decide reuses it.
async fn pending(tx: &mut impl WriteTx, d: &NewDecision) -> StoreResult<Option<ApprovalRecord>> {
    static PENDING: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE tenant_id = $1 AND agent_id = $2 AND action_hash = $3
               AND status = 'pending' AND expires_at > $4
             ORDER BY requested_seq DESC LIMIT 1"
        )
    });
    tx.query_opt(
        &PENDING,
        &[
            SqlValue::text(d.tenant_id.as_str()),
            SqlValue::text(&d.agent_id),
            SqlValue::text(&d.action_hash),
            SqlValue::int(d.created_at_ms),
        ],
        |row| StoredApproval::read(row)?.into_record(d.created_at_ms),
    )
    .await
}

/// Creates the approval a `require_approval` decision asks for, with its event.
async fn request(tx: &mut impl WriteTx, d: &mut NewDecision) -> StoreResult<()> {
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO approvals ({APPROVAL_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21, $22)"
        )
    });
    let settings = tx
        .query_opt(
            "SELECT approval_ttl_secs, approvals_required FROM tenants WHERE id = $1",
            &[SqlValue::text(d.tenant_id.as_str())],
            |row| {
                Ok(ApprovalSettings {
                    ttl_secs: u32::try_from(row.required_int(0)?)
                        .map_err(|_| StoreError::Corrupt("tenants.approval_ttl_secs".into()))?,
                    approvals_required: u8::try_from(row.required_int(1)?)
                        .map_err(|_| StoreError::Corrupt("tenants.approvals_required".into()))?,
                })
            },
        )
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
    let Some(gate) = d.approval.as_ref() else {
        return Ok(());
    };
    let mut approval = new_approval(d, gate, settings);
    approval.requested_seq = tx
        .append_event(EventDraft {
            tenant_id: d.tenant_id.as_str(),
            kind: event_kind::APPROVAL_REQUESTED,
            agent_id: Some(&d.agent_id),
            subject_id: Some(&approval.id),
            payload: requested_event(&approval),
        })
        .await?;
    let parameters = approval.parameters.to_string();
    let votes = votes_json(&approval.approvals);
    tx.execute(
        INSERT.as_str(),
        &[
            SqlValue::text(&approval.id),
            SqlValue::text(approval.tenant_id.as_str()),
            SqlValue::text(&approval.agent_id),
            SqlValue::text(approval.status.as_str()),
            SqlValue::text(&approval.action_hash),
            SqlValue::text(&approval.decision_id),
            SqlValue::text(&approval.tool),
            SqlValue::text(&approval.action),
            SqlValue::Text(approval.resource.as_deref()),
            SqlValue::text(&parameters),
            SqlValue::Bool(approval.mutates_state),
            SqlValue::text(approval.risk.as_str()),
            SqlValue::int(i64::from(approval.risk_score)),
            SqlValue::text(&approval.reason),
            SqlValue::Text(approval.run_id.as_deref()),
            SqlValue::int(i64::from(approval.required)),
            SqlValue::text(&votes),
            SqlValue::Text(None),
            SqlValue::Text(None),
            SqlValue::int(approval.created_at_ms),
            SqlValue::int(approval.expires_at_ms),
            SqlValue::int(approval.requested_seq),
        ],
    )
    .await?;
    requested(d, &approval);
    Ok(())
}

/// Appends the gate's event about `approval_id`, on behalf of the decision's agent.
async fn append(
    tx: &mut impl WriteTx,
    d: &NewDecision,
    kind: &'static str,
    approval_id: &str,
    payload: Value,
) -> StoreResult<()> {
    tx.append_event(EventDraft {
        tenant_id: d.tenant_id.as_str(),
        kind,
        agent_id: Some(&d.agent_id),
        subject_id: Some(approval_id),
        payload,
    })
    .await?;
    Ok(())
}

/// Turns the decision into the allow that consumed `approval` (already marked consumed).
pub(crate) fn consumed(d: &mut NewDecision, mut approval: ApprovalRecord) -> Value {
    let approved_by: Vec<String> = approval
        .approvals
        .iter()
        .map(|v| v.key_id.clone())
        .collect();
    let names: Vec<&str> = approval
        .approvals
        .iter()
        .map(|v| v.key_name.as_str())
        .collect();
    d.verdict = Verdict::Allow;
    d.reason = format!(
        "approved by {} (approval {}): {}",
        names.join(", "),
        approval.id,
        d.reason
    );
    approval.status = ApprovalStatus::Consumed;
    let event = json!({
        "approval_id": approval.id,
        "decision_id": d.id,
        "approved_by": approved_by,
    });
    set_answer(
        d,
        ApprovalAnswer {
            approval: approval.reference(),
            consumed: Some(ReceiptApproval {
                id: approval.id.clone(),
                approved_by,
            }),
        },
    );
    event
}

/// Turns the decision into a deny: the approval it named cannot be used. Returns the
/// `approval.mismatch` event's payload.
pub(crate) fn refused(
    d: &mut NewDecision,
    approval_id: &str,
    why: &str,
    approval: Option<&ApprovalRecord>,
) -> Value {
    d.verdict = Verdict::Deny;
    d.reason = format!("approval {approval_id} cannot be used: {why}");
    d.matched_policies = vec![MISMATCH_POLICY_ID.to_owned()];
    if let Some(approval) = approval.filter(|a| a.agent_id == d.agent_id) {
        set_answer(
            d,
            ApprovalAnswer {
                approval: approval.reference(),
                consumed: None,
            },
        );
    }
    json!({
        "approval_id": approval_id,
        "decision_id": d.id,
        "action_hash": d.action_hash,
        "why": why,
    })
}

/// The policy id a decision denied for an unusable approval reports.
pub const MISMATCH_POLICY_ID: &str = "aegis-approval-mismatch";

/// The decision stays `require_approval` and names `approval` (new or reused).
pub(crate) fn requested(d: &mut NewDecision, approval: &ApprovalRecord) {
    set_answer(
        d,
        ApprovalAnswer {
            approval: approval.reference(),
            consumed: None,
        },
    );
}

fn set_answer(d: &mut NewDecision, answer: ApprovalAnswer) {
    if let Some(gate) = d.approval.as_mut() {
        gate.answer = Some(answer);
    }
}

/// The approval a `require_approval` decision creates, before it is stored (its
/// `requested_seq` is its event's).
pub(crate) fn new_approval(
    d: &NewDecision,
    gate: &ApprovalGate,
    settings: ApprovalSettings,
) -> ApprovalRecord {
    ApprovalRecord {
        id: gate.new_id.clone(),
        tenant_id: d.tenant_id.clone(),
        agent_id: d.agent_id.clone(),
        status: ApprovalStatus::Pending,
        action_hash: d.action_hash.clone(),
        decision_id: d.id.clone(),
        tool: d.tool.clone(),
        action: d.action.clone(),
        resource: d.resource.clone(),
        parameters: gate.parameters.clone(),
        mutates_state: d.mutates_state,
        risk: d.risk,
        risk_score: d.risk_score,
        reason: d.reason.clone(),
        run_id: d.trace.run_id.clone(),
        required: settings.approvals_required,
        approvals: Vec::new(),
        rejected_by: None,
        consumed_by_decision_id: None,
        created_at_ms: d.created_at_ms,
        expires_at_ms: aegis_core::approval::expires_at(d.created_at_ms, settings.ttl_secs),
        requested_seq: 0,
    }
}

/// The `approval.requested` event's payload: what a person is asked, in short (the
/// parameters stay in the approval, never in events or notifications).
pub(crate) fn requested_event(approval: &ApprovalRecord) -> Value {
    json!({
        "approval_id": approval.id,
        "decision_id": approval.decision_id,
        "tool": approval.tool,
        "action": approval.action,
        "action_hash": approval.action_hash,
        "risk": approval.risk,
        "expires_at_ms": approval.expires_at_ms,
        "required": approval.required,
    })
}

/// Applies an operator's vote to `approval` under the core rules: the approval as it now
/// stands and the event to append, or `Conflict`.
pub(crate) fn apply_vote(
    mut approval: ApprovalRecord,
    decision: ApprovalDecision,
) -> crate::StoreResult<(ApprovalRecord, &'static str, Value)> {
    use aegis_core::approval::Verdict as Vote;
    let ids = approval.approver_ids();
    let next = aegis_core::approval::vote(
        approval.facts(&ids),
        &decision.vote.key_id,
        decision.verdict,
        decision.vote.at_ms,
    )
    .map_err(|refused| crate::StoreError::Conflict(refused.to_string()))?;
    approval.status = next;
    let kind = match decision.verdict {
        Vote::Approve => {
            approval.approvals.push(decision.vote.clone());
            event_kind::APPROVAL_APPROVED
        }
        Vote::Reject => {
            approval.rejected_by = Some(decision.vote.clone());
            event_kind::APPROVAL_REJECTED
        }
    };
    let payload = json!({
        "approval_id": approval.id,
        "key_id": decision.vote.key_id,
        "key_name": decision.vote.key_name,
        "status": approval.status,
        "approvals": approval.approvals.len(),
        "required": approval.required,
    });
    Ok((approval, kind, payload))
}

/// The tenant's approval as of `now_ms`; `None` if it has none by that id.
pub(crate) async fn load(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    approval_id: &str,
    now_ms: i64,
) -> StoreResult<Option<ApprovalRecord>> {
    static BY_ID: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2")
    });
    rows.query_opt(
        &BY_ID,
        &[SqlValue::text(tenant_id), SqlValue::text(approval_id)],
        |row| StoredApproval::read(row)?.into_record(now_ms),
    )
    .await
}

/// The tenant's approvals that pass `filter`, newest request first, as of `now_ms`.
pub(crate) async fn list(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    filter: &ApprovalFilter,
    now_ms: i64,
) -> StoreResult<Vec<ApprovalRecord>> {
    // Pending, approved and expired are computed from the time, so their filters bind the
    // read's time too.
    let status = filter.status.map_or_else(
        || "TRUE".to_owned(),
        |status| status_condition(status, "$6"),
    );
    let mut values = vec![
        SqlValue::text(tenant_id),
        SqlValue::int(filter.page.before.unwrap_or(i64::MAX)),
        SqlValue::Text(filter.agent_id.as_deref()),
        SqlValue::Int(filter.since_ms),
        SqlValue::int(i64::from(filter.page.limit)),
    ];
    if filter.status.is_some_and(status_reads_time) {
        values.push(SqlValue::int(now_ms));
    }
    let sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals
         WHERE tenant_id = $1 AND requested_seq < $2 AND (CAST($3 AS TEXT) IS NULL OR agent_id = $3)
           AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) AND {status}
         ORDER BY requested_seq DESC LIMIT $5"
    );
    rows.query_rows(&sql, &values, |row| {
        StoredApproval::read(row)?.into_record(now_ms)
    })
    .await
}

/// Applies an operator's vote in the writer's transaction, with the event that records it;
/// the approval after it.
pub(crate) async fn decide(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    approval_id: &str,
    decision: ApprovalDecision,
) -> StoreResult<ApprovalRecord> {
    let approval = load(tx, tenant_id, approval_id, decision.vote.at_ms)
        .await?
        .ok_or(StoreError::NotFound("approval"))?;
    let (approval, kind, payload) = apply_vote(approval, decision)?;
    let votes = votes_json(&approval.approvals);
    let rejected_by = approval.rejected_by.as_ref().map(vote_json);
    tx.execute(
        "UPDATE approvals SET status = $1, approvals = $2, rejected_by = $3
         WHERE tenant_id = $4 AND id = $5",
        &[
            SqlValue::text(approval.status.as_str()),
            SqlValue::text(&votes),
            SqlValue::Text(rejected_by.as_deref()),
            SqlValue::text(tenant_id),
            SqlValue::text(approval_id),
        ],
    )
    .await?;
    tx.append_event(EventDraft {
        tenant_id,
        kind,
        agent_id: Some(&approval.agent_id),
        subject_id: Some(approval_id),
        payload,
    })
    .await?;
    Ok(approval)
}

/// Stores `expired` on up to `limit` approvals whose time ran out, each with its
/// `approval.expired` event; returns how many.
pub(crate) async fn expire(tx: &mut impl WriteTx, now_ms: i64, limit: u32) -> StoreResult<usize> {
    let due: Vec<(String, String, String)> = tx
        .query_rows(
            "UPDATE approvals SET status = 'expired'
             WHERE id IN (SELECT id FROM approvals
                           WHERE status IN ('pending', 'approved') AND expires_at <= $1
                           ORDER BY expires_at LIMIT $2)
             RETURNING id, tenant_id, agent_id",
            &[SqlValue::int(now_ms), SqlValue::int(limit.into())],
            |row| {
                Ok((
                    row.required_text(0)?,
                    row.required_text(1)?,
                    row.required_text(2)?,
                ))
            },
        )
        .await?;
    for (id, tenant_id, agent_id) in &due {
        tx.append_event(EventDraft {
            tenant_id,
            kind: event_kind::APPROVAL_EXPIRED,
            agent_id: Some(agent_id),
            subject_id: Some(id),
            payload: expired_event(id),
        })
        .await?;
    }
    Ok(due.len())
}

/// Rejects every pending, unexpired approval of the agent (the SOC containing an
/// `approval_flood`), each with its `approval.rejected` event; returns how many.
pub(crate) async fn reject_pending(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    agent_id: &str,
    incident_id: &str,
    at_ms: i64,
) -> StoreResult<usize> {
    let vote = soc_rejection(incident_id, at_ms);
    let rejected = tx
        .query_rows(
            "UPDATE approvals SET status = 'rejected', rejected_by = $1
             WHERE tenant_id = $2 AND agent_id = $3 AND status = 'pending' AND expires_at > $4
             RETURNING id",
            &[
                SqlValue::text(&vote_json(&vote)),
                SqlValue::text(tenant_id),
                SqlValue::text(agent_id),
                SqlValue::int(at_ms),
            ],
            |row| row.required_text(0),
        )
        .await?;
    for id in &rejected {
        tx.append_event(EventDraft {
            tenant_id,
            kind: event_kind::APPROVAL_REJECTED,
            agent_id: Some(agent_id),
            subject_id: Some(id),
            payload: rejected_event(id, &vote),
        })
        .await?;
    }
    Ok(rejected.len())
}

/// The rejection the SOC's response engine records on a flooding agent's pending approvals.
pub(crate) fn soc_rejection(incident_id: &str, at_ms: i64) -> ApprovalVote {
    ApprovalVote {
        key_id: crate::schema::RESPONSE_ENGINE.to_owned(),
        key_name: "SOC response engine".to_owned(),
        at_ms,
        reason: Some(format!("rejected by the SOC: incident {incident_id}")),
    }
}

/// The `approval.rejected` event's payload of a rejection without an operator vote.
pub(crate) fn rejected_event(approval_id: &str, vote: &ApprovalVote) -> Value {
    json!({
        "approval_id": approval_id,
        "key_id": vote.key_id,
        "key_name": vote.key_name,
        "status": ApprovalStatus::Rejected,
    })
}

/// The `approval.expired` event's payload.
pub(crate) fn expired_event(approval_id: &str) -> Value {
    json!({ "approval_id": approval_id })
}

/// Serialises one vote for the `rejected_by` column.
pub(crate) fn vote_json(vote: &ApprovalVote) -> String {
    serde_json::to_string(vote).unwrap_or_else(|_| "null".into())
}

/// Serialises a vote list for its JSON column.
pub(crate) fn votes_json(votes: &[ApprovalVote]) -> String {
    serde_json::to_string(votes).unwrap_or_else(|_| "[]".into())
}

/// The operator key a Slack user acts as (`$1` tenant, `$2` Slack user), in the order of the
/// key row mappers.
pub(crate) const SLACK_APPROVER_KEY: &str =
    "SELECT k.id, k.tenant_id, k.name, k.role, k.created_at, k.revoked_at
     FROM slack_approvers s JOIN operator_keys k ON k.tenant_id = s.tenant_id AND k.id = s.key_id
     WHERE s.tenant_id = $1 AND s.slack_user_id = $2";

/// Registers (or replaces) the key a Slack user acts as: `$1` tenant, `$2` Slack user, `$3`
/// key id, `$4` created at (ms).
/// Maps a Slack user to the operator key whose role their votes carry (replacing any
/// earlier mapping of that user).
pub(crate) async fn put_slack_approver(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    slack_user_id: &str,
    key_id: &str,
    at: i64,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO slack_approvers (tenant_id, slack_user_id, key_id, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, slack_user_id) DO UPDATE SET key_id = excluded.key_id",
        &[
            SqlValue::text(tenant_id),
            SqlValue::text(slack_user_id),
            SqlValue::text(key_id),
            SqlValue::int(at),
        ],
    )
    .await?;
    Ok(())
}

/// The `approvals` columns every read selects, in [`StoredApproval`]'s order.
pub(crate) const APPROVAL_COLUMNS: &str = "id, tenant_id, agent_id, status, action_hash, decision_id, \
     tool, action, resource, parameters, mutates_state, risk, risk_score, reason, run_id, required, \
     approvals, rejected_by, consumed_by_decision_id, created_at, expires_at, requested_seq";

/// One `approvals` row as both backends read it, before its JSON columns are parsed.
pub(crate) struct StoredApproval {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub status: String,
    pub action_hash: String,
    pub decision_id: String,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    pub parameters: String,
    pub mutates_state: bool,
    pub risk: String,
    pub risk_score: i64,
    pub reason: String,
    pub run_id: Option<String>,
    pub required: i64,
    pub approvals: String,
    pub rejected_by: Option<String>,
    pub consumed_by_decision_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub requested_seq: i64,
}

impl StoredApproval {
    /// A row of `SELECT {APPROVAL_COLUMNS}`.
    pub fn read(row: &dyn crate::schema::StoredRow) -> StoreResult<Self> {
        Ok(StoredApproval {
            id: row.required_text(0)?,
            tenant_id: row.required_text(1)?,
            agent_id: row.required_text(2)?,
            status: row.required_text(3)?,
            action_hash: row.required_text(4)?,
            decision_id: row.required_text(5)?,
            tool: row.required_text(6)?,
            action: row.required_text(7)?,
            resource: row.text(8)?,
            parameters: row.required_text(9)?,
            mutates_state: row.required_flag(10)?,
            risk: row.required_text(11)?,
            risk_score: row.required_int(12)?,
            reason: row.required_text(13)?,
            run_id: row.text(14)?,
            required: row.required_int(15)?,
            approvals: row.required_text(16)?,
            rejected_by: row.text(17)?,
            consumed_by_decision_id: row.text(18)?,
            created_at_ms: row.required_int(19)?,
            expires_at_ms: row.required_int(20)?,
            requested_seq: row.required_int(21)?,
        })
    }

    /// The record, with its status as of `now_ms`.
    pub fn into_record(self, now_ms: i64) -> crate::StoreResult<ApprovalRecord> {
        let corrupt =
            |what: &str| crate::StoreError::Corrupt(format!("approval {}: {what}", self.id));
        let stored: ApprovalStatus = self.status.parse().map_err(|_| corrupt("status"))?;
        Ok(ApprovalRecord {
            status: aegis_core::approval::effective_status(stored, self.expires_at_ms, now_ms),
            tenant_id: TenantId::new(self.tenant_id.as_str()),
            parameters: serde_json::from_str(&self.parameters)
                .map_err(|_| corrupt("parameters"))?,
            risk: self.risk.parse().map_err(|_| corrupt("risk"))?,
            risk_score: u8::try_from(self.risk_score).map_err(|_| corrupt("risk_score"))?,
            required: u8::try_from(self.required).map_err(|_| corrupt("required"))?,
            approvals: serde_json::from_str(&self.approvals).map_err(|_| corrupt("approvals"))?,
            rejected_by: self
                .rejected_by
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("rejected_by"))?,
            id: self.id,
            agent_id: self.agent_id,
            action_hash: self.action_hash,
            decision_id: self.decision_id,
            tool: self.tool,
            action: self.action,
            resource: self.resource,
            mutates_state: self.mutates_state,
            reason: self.reason,
            run_id: self.run_id,
            consumed_by_decision_id: self.consumed_by_decision_id,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            requested_seq: self.requested_seq,
        })
    }
}
