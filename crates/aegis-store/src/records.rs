//! What both stores write, decided once: event payloads, receipt bodies, and the rules of
//! agent changes and incident steps. The SQLite and PostgreSQL stores differ only in how they
//! talk to their database; a receipt or an event must not depend on which one recorded it.

use crate::*;
use aegis_core::canonical::{canonical_json, sha256_hex};
use aegis_core::model::{AgentStatus, RiskTier, Verdict};
use aegis_core::receipt::{RECEIPT_SCHEMA_VERSION, ReceiptBody};
use aegis_core::timestamp::format_millis;
use serde_json::{Value, json};

/// The payload of a decision's `decision` event.
pub(crate) fn decision_event(d: &NewDecision) -> Value {
    json!({
        "decision_id": d.id,
        "decision": d.verdict,
        "tool": d.tool,
        "action": d.action,
        "mutates_state": d.mutates_state,
        "egress": d.egress,
        "sensitive": d.sensitive,
        "contained": d.contained,
        "risk": d.risk,
        "risk_score": d.risk_score,
        "source_trust": d.source_trust,
        "run_id": d.trace.run_id,
    })
}

/// Whether a decision counts towards risk-tier escalation: denies do, except containment
/// refusals (a frozen agent's calls), which are the freeze working, not new behaviour.
pub(crate) fn counts_towards_escalation(d: &NewDecision) -> bool {
    d.verdict == Verdict::Deny && !d.contained
}

/// A decision's receipt, linked to the chain head it extends, with the canonical JSON its
/// hash covers.
pub(crate) struct SealedReceipt {
    pub body: ReceiptBody,
    pub canonical: String,
    pub hash: String,
}

pub(crate) fn seal_receipt(
    d: &NewDecision,
    prev_seq: u64,
    prev_hash: &str,
) -> StoreResult<SealedReceipt> {
    let body = ReceiptBody {
        v: RECEIPT_SCHEMA_VERSION,
        id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: d.tenant_id.as_str().to_owned(),
        seq: prev_seq + 1,
        decision_id: d.id.clone(),
        agent_id: d.agent_id.clone(),
        tool: d.tool.clone(),
        action: d.action.clone(),
        decision: d.verdict.as_str().to_owned(),
        risk_score: d.risk_score,
        matched_policies: d.matched_policies.clone(),
        action_hash: d.action_hash.clone(),
        created_at: format_millis(d.created_at_ms),
        prev_hash: prev_hash.to_owned(),
    };
    let canonical = canonical_json(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let hash = sha256_hex(canonical.as_bytes());
    Ok(SealedReceipt {
        body,
        canonical,
        hash,
    })
}

/// The payload of an escalation's `agent.risk_tier_changed` event.
pub(crate) fn escalation_event(
    d: &NewDecision,
    from: RiskTier,
    to: RiskTier,
    denials: i64,
) -> Value {
    json!({
        "from": from,
        "to": to,
        "cause": "escalation",
        "denials": denials,
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
