//! What both stores write, decided once: event payloads, receipt bodies, and the rules of
//! agent changes and incident steps. The SQLite and PostgreSQL stores differ only in how they
//! talk to their database; a receipt or an event must not depend on which one recorded it.

use crate::schema::{StoredRow, parse_column};
use crate::*;
use aegis_core::model::{AgentStatus, RiskTier, Verdict};
use aegis_core::receipt::{
    PrintedReceipt, RECEIPT_SCHEMA_VERSION, Receipt, ReceiptApproval, ReceiptBody,
};
use aegis_core::timestamp::format_millis;
use serde_json::{Value, json};

/// An event row read with the decision row it records, in the order of
/// [`crate::schema::EventQueries`]. A decision's event is stored without its payload and its
/// subject since migration `0020_decision_event_from_decision` (`payload = ''`): they
/// repeated the decision row, so they are rebuilt from that row when read. Every other
/// event, and a decision event stored before, keeps them.
pub(crate) struct StoredEvent {
    seq: i64,
    tenant_id: String,
    kind: String,
    agent_id: Option<String>,
    subject_id: Option<String>,
    /// The stored payload, `''` for a decision's; an error if the column does not read.
    payload: Result<String, String>,
    created_at_ms: i64,
    /// The decision's columns: `None` unless the payload is rebuilt and the row is there; an
    /// error if the joined row does not read.
    decision: Result<Option<DecisionEventColumns>, String>,
}

/// [`crate::schema::EVENT_DECISION_COLUMNS`], as read.
struct DecisionEventColumns {
    id: String,
    verdict: String,
    tool: String,
    action: String,
    mutates_state: bool,
    egress: bool,
    sensitive: bool,
    contained: bool,
    risk: String,
    risk_score: i64,
    source_trust: String,
    run_id: Option<String>,
    approval_id: Option<String>,
}

impl DecisionEventColumns {
    /// The joined decision's columns; all NULL when no decision row was joined.
    fn read(row: &(impl crate::schema::StoredRow + ?Sized)) -> StoreResult<Option<Self>> {
        let Some(id) = row.text(7)? else {
            return Ok(None);
        };
        Ok(Some(DecisionEventColumns {
            id,
            verdict: row.required_text(8)?,
            tool: row.required_text(9)?,
            action: row.required_text(10)?,
            mutates_state: row.required_flag(11)?,
            egress: row.required_flag(12)?,
            sensitive: row.required_flag(13)?,
            contained: row.required_flag(14)?,
            risk: row.required_text(15)?,
            risk_score: row.required_int(16)?,
            source_trust: row.required_text(17)?,
            run_id: row.text(18)?,
            approval_id: row.text(19)?,
        }))
    }

    /// The payload of its `decision` event.
    fn into_payload(self) -> StoreResult<DecisionEvent> {
        let risk_score = u8::try_from(self.risk_score)
            .map_err(|_| StoreError::Corrupt(format!("risk score {}", self.risk_score)))?;
        Ok(DecisionEvent {
            decision: parse_column(&self.verdict)?,
            risk: parse_column(&self.risk)?,
            source_trust: parse_column(&self.source_trust)?,
            decision_id: self.id,
            tool: self.tool,
            action: self.action,
            mutates_state: self.mutates_state,
            egress: self.egress,
            sensitive: self.sensitive,
            contained: self.contained,
            risk_score,
            run_id: self.run_id,
            approval_id: self.approval_id,
        })
    }
}

impl StoredEvent {
    /// Reads a row of a [`crate::schema::EventQueries`] read.
    pub fn read(row: &(impl crate::schema::StoredRow + ?Sized)) -> StoreResult<Self> {
        Ok(StoredEvent {
            seq: row.required_int(0)?,
            tenant_id: row.required_text(1)?,
            kind: row.required_text(2)?,
            agent_id: row.text(3)?,
            subject_id: row.text(4)?,
            payload: row.required_text(5).map_err(|e| e.to_string()),
            created_at_ms: row.required_int(6)?,
            decision: DecisionEventColumns::read(row).map_err(|e| e.to_string()),
        })
    }

    /// The event as it was recorded. A payload that cannot be read (only an edit of the
    /// database or damage does that: pruning writes a decision event's payload out before
    /// its decision row goes) reads as `null`, with the reason in [`Event::unreadable`]: one
    /// such row must not stop every reader of the log at it.
    pub fn into_event(self) -> Event {
        let subject_id = match &self.decision {
            Ok(Some(d)) => Some(d.id.clone()),
            _ => self.subject_id,
        };
        let (payload, unreadable) = match read_payload(self.payload, self.decision) {
            Ok(payload) => (payload, None),
            Err(reason) => (EventPayload::UNREADABLE, Some(reason)),
        };
        Event {
            seq: self.seq,
            tenant_id: TenantId::new(self.tenant_id),
            kind: self.kind,
            agent_id: self.agent_id,
            subject_id,
            payload,
            unreadable,
            created_at_ms: self.created_at_ms,
        }
    }
}

/// The payload of a [`StoredEvent`]: as recorded, or rebuilt from its decision row when the
/// recorded one is `''`.
fn read_payload(
    stored: Result<String, String>,
    decision: Result<Option<DecisionEventColumns>, String>,
) -> Result<EventPayload, String> {
    let stored = stored.map_err(|e| format!("payload: {e}"))?;
    if !stored.is_empty() {
        return serde_json::from_str(&stored)
            .map(EventPayload::Recorded)
            .map_err(|e| format!("payload: {e}"));
    }
    match decision {
        Ok(Some(d)) => d
            .into_payload()
            .map(EventPayload::Decision)
            .map_err(|e| format!("decision row: {e}")),
        Ok(None) => Err("its decision row is missing".to_owned()),
        Err(e) => Err(format!("decision row: {e}")),
    }
}

/// What the approval gate made of a decision, if it met an approval.
pub(crate) fn approval_answer(d: &NewDecision) -> Option<&crate::approvals::ApprovalAnswer> {
    d.approval.as_ref().and_then(|gate| gate.answer.as_ref())
}

/// The approval a decision met (asked for or used): its `approval_id` column, which its
/// event's payload names.
pub(crate) fn met_approval_id(d: &NewDecision) -> Option<&str> {
    approval_answer(d).map(|answer| answer.approval.id.as_str())
}

/// Whether a decision counts towards risk-tier escalation: denies do, except containment
/// refusals (a frozen agent's calls), which are the freeze working, not new behaviour.
pub(crate) fn counts_towards_escalation(d: &NewDecision) -> bool {
    d.verdict == Verdict::Deny && !d.contained
}

/// The values of the placeholders of
/// [`TIER_AND_EARLIER_DENIES_SQL`](crate::schema::TIER_AND_EARLIER_DENIES_SQL) for a deny:
/// the agent, the start of the tenant's window and the count past which more denies change
/// nothing.
pub(crate) fn earlier_denies_params(d: &NewDecision) -> (&str, i64, i64) {
    let window_start = d.created_at_ms - i64::from(d.escalation.window_minutes) * 60_000;
    let enough = i64::from(d.escalation.denial_threshold.saturating_sub(1));
    (&d.agent_id, window_start, enough)
}

/// Whether decision `earlier`, logged at `earlier_seq` before deny `d` but not written yet,
/// is a row [`TIER_AND_EARLIER_DENIES_SQL`](crate::schema::TIER_AND_EARLIER_DENIES_SQL)
/// would count for `d`, the agent's tier having last changed at `tier_changed_seq`: the
/// query's filter, for a writer that holds a batch's rows back until its end.
pub(crate) fn counts_as_earlier_deny(
    earlier: &NewDecision,
    earlier_seq: i64,
    d: &NewDecision,
    tier_changed_seq: i64,
) -> bool {
    let (agent, window_start, _) = earlier_denies_params(d);
    earlier.agent_id == agent
        && counts_towards_escalation(earlier)
        && earlier_seq > tier_changed_seq
        && earlier.created_at_ms >= window_start
}

/// The tier change a deny brings, if any, from what
/// [`TIER_AND_EARLIER_DENIES_SQL`](crate::schema::TIER_AND_EARLIER_DENIES_SQL) read.
pub(crate) fn escalation_due(
    d: &NewDecision,
    tier: &str,
    earlier_denies: i64,
) -> StoreResult<Option<(RiskTier, RiskTier)>> {
    let tier: RiskTier = crate::schema::parse_column(tier)?;
    let earlier = u32::try_from(earlier_denies).unwrap_or(u32::MAX);
    Ok(tier
        .after_deny(earlier, d.escalation.denial_threshold)
        .map(|next| (tier, next)))
}

/// A decision's receipt, linked to the chain head it extends, and its hash. Its body is not
/// stored: [`StoredReceipt`] rebuilds it from the decision row.
pub(crate) struct SealedReceipt {
    pub body: ReceiptBody,
    pub hash: String,
}

/// A decision's receipt as far as it can be made before the writer knows its place in the
/// chain: its body and that body printed in JCS form around the place ([`PrintedReceipt`]).
/// Drafted on the caller's task, so that the writer, the one thread every decision waits on,
/// only places and hashes it.
pub(crate) struct ReceiptDraft {
    body: ReceiptBody,
    printed: PrintedReceipt,
    created_at_ms: i64,
}

/// The receipt of `d`, to be sealed by [`seal_receipt`].
pub(crate) fn draft_receipt(d: &NewDecision) -> StoreResult<ReceiptDraft> {
    let body = ReceiptBody {
        v: RECEIPT_SCHEMA_VERSION,
        id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: d.tenant_id.as_str().to_owned(),
        // The chain position, which the writer sets when it seals the receipt.
        seq: 0,
        prev_hash: String::new(),
        decision_id: d.id.clone(),
        agent_id: d.agent_id.clone(),
        tool: d.tool.clone(),
        action: d.action.clone(),
        decision: d.verdict.as_str().to_owned(),
        risk_score: d.risk_score,
        matched_policies: d.matched_policies.clone(),
        action_hash: d.action_hash.clone(),
        created_at: format_millis(d.created_at_ms),
        approval: consumed_approval(d).cloned(),
        tool_definition_hash: d.tool_definition_hash.clone(),
    };
    let printed = body
        .printed()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(ReceiptDraft {
        body,
        printed,
        created_at_ms: d.created_at_ms,
    })
}

impl ReceiptDraft {
    /// Whether the draft is still the receipt of `d`. The freshness fence and the approval
    /// gate run in the writer, after the draft was made, and may change the verdict or the
    /// approval the receipt names.
    fn describes(&self, d: &NewDecision) -> bool {
        // Every field is named, so that a field added to the body must be compared here.
        let ReceiptBody {
            v: _,
            id: _,
            seq: _,
            prev_hash: _,
            created_at: _,
            tenant_id,
            decision_id,
            agent_id,
            tool,
            action,
            decision,
            risk_score,
            matched_policies,
            action_hash,
            approval,
            tool_definition_hash,
        } = &self.body;
        self.created_at_ms == d.created_at_ms
            && tenant_id == d.tenant_id.as_str()
            && *decision_id == d.id
            && *agent_id == d.agent_id
            && *tool == d.tool
            && *action == d.action
            && decision == d.verdict.as_str()
            && *risk_score == d.risk_score
            && *matched_policies == d.matched_policies
            && *action_hash == d.action_hash
            && approval.as_ref() == consumed_approval(d)
            && *tool_definition_hash == d.tool_definition_hash
    }
}

/// The approval an allow consumed, which its receipt names.
fn consumed_approval(d: &NewDecision) -> Option<&ReceiptApproval> {
    approval_answer(d).and_then(|answer| answer.consumed.as_ref())
}

/// The receipt of `d` at the head of its chain, after receipt `prev_seq` of hash `prev_hash`:
/// `draft` placed there, or a new draft if the writer changed `d` since it was made.
pub(crate) fn seal_receipt(
    d: &NewDecision,
    draft: ReceiptDraft,
    prev_seq: u64,
    prev_hash: &str,
) -> StoreResult<SealedReceipt> {
    let draft = if draft.describes(d) {
        draft
    } else {
        draft_receipt(d)?
    };
    let seq = prev_seq + 1;
    let hash = draft
        .printed
        .hash_at(seq, prev_hash)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(SealedReceipt {
        body: ReceiptBody {
            seq,
            prev_hash: prev_hash.to_owned(),
            ..draft.body
        },
        hash,
    })
}

/// The consumed approval of a sealed receipt as the decision row keeps it (JSON), the one
/// field of a receipt body besides `tool_definition_hash` that no other decision column holds.
pub(crate) fn receipt_approval_column(receipt: &SealedReceipt) -> StoreResult<Option<String>> {
    receipt
        .body
        .approval
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("receipt approval: {e}")))
}

/// A receipt row read with the decision row it records, in the order of
/// [`crate::schema::ReceiptQueries`]. The decision's fields are `None` when its row is gone.
pub(crate) struct StoredReceipt {
    /// The canonical body, for a receipt stored before its body was rebuilt from the
    /// decision row (migration `0019_receipt_from_decision`); `""` for one stored since.
    pub body: String,
    pub hash: String,
    pub id: String,
    pub tenant_id: String,
    pub seq: i64,
    pub decision_id: String,
    pub prev_hash: Option<String>,
    pub agent_id: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub risk_score: Option<i64>,
    pub matched_policies: Option<String>,
    pub action_hash: Option<String>,
    pub created_at_ms: Option<i64>,
    pub approval: Option<String>,
    pub tool_definition_hash: Option<String>,
}

impl StoredReceipt {
    /// Reads a row of a [`crate::schema::ReceiptQueries`] read.
    pub fn read(row: &(impl crate::schema::StoredRow + ?Sized)) -> StoreResult<Self> {
        Ok(StoredReceipt {
            body: row.required_text(0)?,
            hash: row.required_text(1)?,
            id: row.required_text(2)?,
            tenant_id: row.required_text(3)?,
            seq: row.required_int(4)?,
            decision_id: row.required_text(5)?,
            prev_hash: row.text(6)?,
            agent_id: row.text(7)?,
            tool: row.text(8)?,
            action: row.text(9)?,
            decision: row.text(10)?,
            risk_score: row.int(11)?,
            matched_policies: row.text(12)?,
            action_hash: row.text(13)?,
            created_at_ms: row.int(14)?,
            approval: row.text(15)?,
            tool_definition_hash: row.text(16)?,
        })
    }

    /// The receipt as it was sealed, if nothing was edited since: the stored body, or one
    /// rebuilt from the decision row (schema v1, the only version written without a body).
    ///
    /// Nothing read here is trusted: the audit hashes the result and compares it with the
    /// stored hash, which the chain and the signed checkpoints cover. So an unreadable or
    /// missing decision row is not an error here but a body without a verdict
    /// (`decision: ""`), which no sealed body has: its hash check fails and the audit reports
    /// the receipt as tampered with, as it would an edited body.
    pub fn into_receipt(self) -> StoreResult<Receipt> {
        if !self.body.is_empty() {
            let body: ReceiptBody = serde_json::from_str(&self.body)
                .map_err(|e| StoreError::Corrupt(format!("receipt body: {e}")))?;
            return Ok(Receipt {
                body,
                hash: self.hash,
            });
        }
        let matched_policies = self
            .matched_policies
            .as_deref()
            .map(serde_json::from_str::<Vec<String>>);
        let approval = self
            .approval
            .as_deref()
            .map(serde_json::from_str::<ReceiptApproval>)
            .transpose();
        let risk_score = self.risk_score.map(u8::try_from);
        let readable = matches!(matched_policies, Some(Ok(_)))
            && approval.is_ok()
            && matches!(risk_score, Some(Ok(_)))
            && self.created_at_ms.is_some();
        let decision = match self.decision {
            Some(decision) if readable => decision,
            _ => String::new(),
        };
        let body = ReceiptBody {
            v: RECEIPT_SCHEMA_VERSION,
            id: self.id,
            tenant_id: self.tenant_id,
            seq: u64::try_from(self.seq)
                .map_err(|_| StoreError::Corrupt(format!("receipt seq {}", self.seq)))?,
            decision_id: self.decision_id,
            agent_id: self.agent_id.unwrap_or_default(),
            tool: self.tool.unwrap_or_default(),
            action: self.action.unwrap_or_default(),
            decision,
            risk_score: risk_score.and_then(Result::ok).unwrap_or_default(),
            matched_policies: matched_policies.and_then(Result::ok).unwrap_or_default(),
            action_hash: self.action_hash.unwrap_or_default(),
            created_at: format_millis(self.created_at_ms.unwrap_or_default()),
            prev_hash: self.prev_hash.unwrap_or_default(),
            approval: approval.ok().flatten(),
            tool_definition_hash: self.tool_definition_hash,
        };
        Ok(Receipt {
            body,
            hash: self.hash,
        })
    }
}

/// The payload of an escalation's `agent.risk_tier_changed` event.
pub(crate) fn escalation_event(d: &NewDecision, from: RiskTier, to: RiskTier) -> Value {
    json!({
        "from": from,
        "to": to,
        "cause": "escalation",
        // The count that stepped the tier up: the threshold, reached by this deny.
        "denials": d.escalation.denial_threshold,
        "window_minutes": d.escalation.window_minutes,
    })
}

/// Whether `change` does anything to `agent`: `Ok(false)` for a freeze of a frozen agent or
/// an unfreeze of an active one; `Conflict` for any change to a revoked agent.
pub(crate) fn agent_change_applies(agent: &Agent, change: &AgentChange) -> StoreResult<bool> {
    if agent.status == AgentStatus::Revoked {
        return Err(StoreError::Conflict(match change.kind {
            AgentChangeKind::Revoke { .. } => "the agent is already revoked".into(),
            _ => "the agent is revoked; revocation is terminal".into(),
        }));
    }
    Ok(match change.kind {
        AgentChangeKind::Freeze { .. } => agent.status != AgentStatus::Frozen,
        AgentChangeKind::Unfreeze => agent.status != AgentStatus::Active,
        _ => true,
    })
}

/// The event kind and payload that record `change` of `agent` (its state before).
pub(crate) fn agent_change_event(agent: &Agent, change: &AgentChange) -> (&'static str, Value) {
    let actor = &change.actor;
    match &change.kind {
        AgentChangeKind::Freeze { reason } => (
            event_kind::AGENT_FROZEN,
            json!({"reason": reason, "actor": actor}),
        ),
        AgentChangeKind::Unfreeze => (event_kind::AGENT_UNFROZEN, json!({"actor": actor})),
        AgentChangeKind::Revoke { reason } => (
            event_kind::AGENT_REVOKED,
            json!({"reason": reason, "actor": actor}),
        ),
        AgentChangeKind::RotateToken { .. } => {
            (event_kind::AGENT_TOKEN_ROTATED, json!({"actor": actor}))
        }
        AgentChangeKind::SetRiskTier { risk_tier } => (
            event_kind::AGENT_RISK_TIER_CHANGED,
            json!({"from": agent.risk_tier, "to": risk_tier, "cause": "operator", "actor": actor}),
        ),
        AgentChangeKind::SetRateLimits { rate_limits } => (
            event_kind::AGENT_RATE_LIMITS_CHANGED,
            json!({"from": agent.rate_limits, "to": rate_limits, "actor": actor}),
        ),
    }
}

/// An operator applying an incident's recommendation: what to do to the agent.
pub(crate) struct Recommendation {
    /// The action's name, as recorded on the response (`freeze`).
    pub action: String,
    pub reason: String,
    pub change: AgentChangeKind,
}

/// Checks that `step` is allowed for the incident as it stands; for
/// [`IncidentStep::ApplyRecommendation`], returns what to apply. Invalid steps are
/// `Conflict`.
pub(crate) fn check_incident_step(
    detail: &IncidentDetail,
    step: &IncidentStep,
) -> StoreResult<Option<Recommendation>> {
    let incident = &detail.incident;
    match step {
        IncidentStep::Acknowledge => {
            if incident.status != incident_status::OPEN {
                return Err(StoreError::Conflict(format!(
                    "the incident is {}; only open incidents can be acknowledged",
                    incident.status
                )));
            }
            Ok(None)
        }
        IncidentStep::Close { .. } => {
            if incident.status == incident_status::CLOSED {
                return Err(StoreError::Conflict(
                    "the incident is already closed".into(),
                ));
            }
            Ok(None)
        }
        IncidentStep::ApplyRecommendation => {
            let Some(recommended) = &incident.recommended_action else {
                return Err(StoreError::Conflict(
                    "the incident has no recommended action".into(),
                ));
            };
            if incident.status == incident_status::CLOSED {
                return Err(StoreError::Conflict("the incident is closed".into()));
            }
            if detail.response_actions.iter().any(|r| r.mode == "applied") {
                return Err(StoreError::Conflict(
                    "the recommended action was already applied".into(),
                ));
            }
            let action = recommended
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let reason = recommended
                .get("reason")
                .and_then(Value::as_str)
                .map_or_else(
                    || format!("recommended by incident {}", incident.id),
                    str::to_owned,
                );
            let change = match action {
                "freeze" => AgentChangeKind::Freeze {
                    reason: reason.clone(),
                },
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unknown recommended action {other:?}"
                    )));
                }
            };
            Ok(Some(Recommendation {
                action: action.to_owned(),
                reason,
                change,
            }))
        }
    }
}

/// The event kind and payload that record an acknowledge or close step.
pub(crate) fn incident_step_event(
    incident: &IncidentRecord,
    step: &IncidentStep,
    actor: &str,
) -> Option<(&'static str, Value)> {
    let id = &incident.id;
    match step {
        IncidentStep::Acknowledge => Some((
            event_kind::INCIDENT_ACKNOWLEDGED,
            json!({"incident_id": id, "kind": incident.kind, "actor": actor}),
        )),
        IncidentStep::Close { reason } => Some((
            event_kind::INCIDENT_CLOSED,
            json!({"incident_id": id, "kind": incident.kind, "actor": actor, "reason": reason}),
        )),
        IncidentStep::ApplyRecommendation => None,
    }
}

/// Refuses to apply a recommendation to an agent that is no longer active.
pub(crate) fn check_recommendation_target(agent: &Agent) -> StoreResult<()> {
    if agent.status != AgentStatus::Active {
        return Err(StoreError::Conflict(format!(
            "the agent is already {}",
            agent.status
        )));
    }
    Ok(())
}

/// The payload of an `alert.raised` event.
pub(crate) fn alert_event(alert: &NewAlert) -> Value {
    json!({
        "alert_id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "summary": alert.summary,
        "source_seq": alert.source_seq,
    })
}

/// The payload of an `incident.opened` event.
pub(crate) fn incident_opened_event(incident: &NewIncident) -> Value {
    json!({
        "incident_id": incident.id,
        "kind": incident.kind,
        "severity": incident.severity,
        "agent_id": incident.agent_id,
        "summary": incident.summary,
        "evidence_seqs": incident.evidence.iter().map(|e| e.event_seq).collect::<Vec<_>>(),
        "recommended_action": incident.recommended_action,
    })
}

/// The payload of a `response.action` event.
pub(crate) fn response_event(
    response_id: &str,
    incident_id: &str,
    action: &str,
    mode: &str,
    actor: &str,
    detail: &str,
) -> Value {
    json!({
        "response_id": response_id,
        "incident_id": incident_id,
        "action": action,
        "mode": mode,
        "actor": actor,
        "detail": detail,
    })
}

/// The evidence an incident shows: its first items and, from its most recent ones (newest
/// first, as read), those not already among the first, in log order.
pub(crate) fn evidence_summary(
    first: Vec<EvidenceItem>,
    mut recent_newest_first: Vec<EvidenceItem>,
) -> EvidenceSummary {
    let shown_up_to = first.last().map_or(i64::MIN, |e| e.event_seq);
    recent_newest_first.retain(|e| e.event_seq > shown_up_to);
    recent_newest_first.reverse();
    EvidenceSummary {
        first,
        recent: recent_newest_first,
    }
}

/// A narrative's `evidence` and `basis` columns (JSON text).
pub(crate) fn narrative_columns(
    narrative: &NarrativeRecord,
) -> StoreResult<(String, Option<String>)> {
    let json = |what: &str, value: serde_json::Result<String>| {
        value.map_err(|e| StoreError::Corrupt(format!("narrative {what}: {e}")))
    };
    Ok((
        json("evidence", serde_json::to_string(&narrative.evidence))?,
        narrative
            .basis
            .as_ref()
            .map(|basis| json("basis", serde_json::to_string(basis)))
            .transpose()?,
    ))
}

/// A stored narrative from its columns.
pub(crate) fn narrative_from_columns(
    incident_id: String,
    generated_by: String,
    narrative: String,
    evidence: &str,
    generated_at_ms: i64,
    basis: Option<&str>,
) -> StoreResult<NarrativeRecord> {
    let corrupt =
        |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("narrative {what}: {e}"));
    Ok(NarrativeRecord {
        incident_id,
        generated_by,
        narrative,
        evidence: serde_json::from_str(evidence).map_err(|e| corrupt("evidence", e))?,
        generated_at_ms,
        basis: basis
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("basis", e))?,
    })
}

/// A due delivery, as [`fair_claim`] ranks it.
pub(crate) struct DueDelivery {
    pub id: String,
    pub tenant_id: TenantId,
    pub next_attempt_at_ms: i64,
    /// Queue order among deliveries due at the same time.
    pub order: i64,
}

impl DueDelivery {
    /// A row of `SELECT id, tenant_id, next_attempt_at, <ordinal>`.
    pub fn read(row: &dyn StoredRow) -> StoreResult<Result<Self, UnreadableDelivery>> {
        UnreadableDelivery::or_else(row, 3, |row| {
            Ok(DueDelivery {
                id: row.required_text(0)?,
                tenant_id: TenantId::new(row.required_text(1)?),
                next_attempt_at_ms: row.required_int(2)?,
                order: row.required_int(3)?,
            })
        })
    }
}

/// A queued delivery whose row does not read (only an edit of the database or damage does
/// that), named by its ordinal: SQLite's rowid or PostgreSQL's `BIGSERIAL NOT NULL`, which
/// always read, where its id might not. Left pending, it would be met by every claim and
/// fail each one, holding up every tenant's notifications.
#[derive(Debug)]
pub(crate) struct UnreadableDelivery {
    pub ordinal: i64,
    pub reason: String,
}

impl UnreadableDelivery {
    /// `read(row)`, or the row as unreadable if that fails; only its ordinal (column
    /// `ordinal`) failing to read is an error.
    pub fn or_else<T>(
        row: &dyn StoredRow,
        ordinal: usize,
        read: impl FnOnce(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Result<T, Self>> {
        let ordinal = row.required_int(ordinal)?;
        Ok(read(row).map_err(|error| UnreadableDelivery {
            ordinal,
            reason: error.to_string(),
        }))
    }
}

/// What a driver's claim read: the deliveries to start, in the order [`fair_claim`] picked
/// them, and the due rows that did not read.
#[derive(Default)]
pub(crate) struct ClaimedDeliveries {
    pub deliveries: Vec<Delivery>,
    pub unreadable: Vec<UnreadableDelivery>,
}

impl ClaimedDeliveries {
    /// The due rows read: those that read ranked by [`fair_claim`] (the ids to claim), the
    /// rest set aside as unreadable.
    pub fn pick(
        due: Vec<Result<DueDelivery, UnreadableDelivery>>,
        claim: &DeliveryClaim,
    ) -> (Vec<String>, Self) {
        let mut claimed = ClaimedDeliveries::default();
        let mut readable = Vec::with_capacity(due.len());
        for row in due {
            match row {
                Ok(due) => readable.push(due),
                Err(unreadable) => claimed.unreadable.push(unreadable),
            }
        }
        (fair_claim(readable, claim), claimed)
    }

    /// Adds the claimed rows read (`crate::rows::claimed_delivery`), in `picked`'s order.
    pub fn add(&mut self, picked: &[String], rows: Vec<Result<Delivery, UnreadableDelivery>>) {
        let mut by_id = std::collections::HashMap::new();
        for row in rows {
            match row {
                Ok(delivery) => {
                    by_id.insert(delivery.id.clone(), delivery);
                }
                Err(unreadable) => self.unreadable.push(unreadable),
            }
        }
        self.deliveries = picked.iter().filter_map(|id| by_id.remove(id)).collect();
    }
}

/// Which due deliveries the worker claims: round-robin over tenants, so that one tenant
/// with a backlog of slow endpoints never holds every slot. Each tenant's deliveries take
/// turns after the ones it already has in flight (its oldest due first); lower turns go
/// first, and within a turn the longest-waiting delivery; no tenant goes above
/// `claim.per_tenant` in flight, and no more than `claim.limit` are claimed.
pub(crate) fn fair_claim(mut due: Vec<DueDelivery>, claim: &DeliveryClaim) -> Vec<String> {
    let mut turns: std::collections::HashMap<&TenantId, u32> = std::collections::HashMap::new();
    for (_, tenant) in &claim.in_flight {
        *turns.entry(tenant).or_default() += 1;
    }
    due.sort_by_key(|d| (d.next_attempt_at_ms, d.order));
    let mut ranked: Vec<(u32, i64, i64, &str)> = Vec::new();
    for delivery in &due {
        let turn = turns.entry(&delivery.tenant_id).or_default();
        if *turn < claim.per_tenant {
            ranked.push((
                *turn,
                delivery.next_attempt_at_ms,
                delivery.order,
                &delivery.id,
            ));
            *turn += 1;
        }
    }
    ranked.sort_unstable();
    ranked
        .into_iter()
        .take(claim.limit as usize)
        .map(|(.., id)| id.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(id: &str, tenant: &str, at: i64) -> DueDelivery {
        DueDelivery {
            id: id.into(),
            tenant_id: TenantId::new(tenant),
            next_attempt_at_ms: at,
            order: at,
        }
    }

    fn claim(limit: u32, per_tenant: u32, in_flight: &[(&str, &str)]) -> DeliveryClaim {
        DeliveryClaim {
            now_ms: 1_000,
            limit,
            per_tenant,
            in_flight: in_flight
                .iter()
                .map(|(id, tenant)| ((*id).into(), TenantId::new(*tenant)))
                .collect(),
        }
    }

    #[test]
    fn a_backlog_of_one_tenant_does_not_hold_back_another() {
        // The attacker's 40 deliveries are all older than the victim's one.
        let mut list: Vec<DueDelivery> = (0..40)
            .map(|i| due(&format!("a{i}"), "attacker", i))
            .collect();
        list.push(due("v0", "victim", 100));
        let picked = fair_claim(list, &claim(16, 4, &[]));
        assert_eq!(picked, ["a0", "v0", "a1", "a2", "a3"]);
    }

    #[test]
    fn deliveries_in_flight_count_against_their_tenant() {
        let list = vec![
            due("a5", "attacker", 5),
            due("a6", "attacker", 6),
            due("v1", "victim", 9),
        ];
        let picked = fair_claim(
            list,
            &claim(
                16,
                4,
                &[("a1", "attacker"), ("a2", "attacker"), ("a3", "attacker")],
            ),
        );
        // The attacker has one turn left, after the victim's first.
        assert_eq!(picked, ["v1", "a5"]);
        let list = vec![due("a5", "attacker", 5)];
        let full = [
            ("a1", "attacker"),
            ("a2", "attacker"),
            ("a3", "attacker"),
            ("a4", "attacker"),
        ];
        assert!(fair_claim(list, &claim(16, 4, &full)).is_empty());
    }

    #[test]
    fn never_more_than_the_free_slots() {
        let list: Vec<DueDelivery> = (0..10)
            .map(|i| due(&format!("d{i}"), &format!("t{}", i % 3), i))
            .collect();
        assert_eq!(fair_claim(list, &claim(2, 4, &[])), ["d0", "d1"]);
        assert!(fair_claim(vec![due("d", "t", 1)], &claim(0, 4, &[])).is_empty());
    }
}
