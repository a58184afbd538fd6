//! SOC tables: alerts, incidents, evidence, response actions, consumer cursors.

use super::rows::*;
use super::{append_event, change_agent_tx, load_agent};
use crate::records;
use crate::schema::RESPONSE_ENGINE;
use crate::schema::*;
use crate::*;
use aegis_core::model::AgentStatus;
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn apply_batch(
    conn: &Connection,
    batch: &SocBatch,
    now: i64,
) -> StoreResult<SocApplied> {
    let mut applied = SocApplied::default();
    for alert in &batch.alerts {
        insert_alert(conn, alert)?;
    }
    for repeat in &batch.alert_repeats {
        conn.prepare_cached(
            "UPDATE alerts SET count = count + ?3 WHERE tenant_id = ?1 AND id = ?2",
        )?
        .execute(params![
            repeat.tenant_id.as_str(),
            repeat.alert_id,
            repeat.count
        ])?;
    }
    for incident in &batch.incidents {
        if open_incident(conn, incident, &mut applied)? {
            applied.opened.push(incident.id.clone());
        }
    }
    // The incidents whose evidence grew get their `updated_at` once per batch, not once per
    // event: a storm joins every later event of the agent to its incident.
    let mut grown = std::collections::BTreeSet::new();
    for append in &batch.evidence {
        let added = conn
            .prepare_cached(
                "INSERT INTO incident_evidence (incident_id, event_seq)
                 SELECT id, ?3 FROM incidents WHERE tenant_id = ?1 AND id = ?2
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
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
    for append in &batch.evidence {
        if let Some(reason) = &append.recontain {
            let open_for: Option<String> = conn
                .prepare_cached(
                    "SELECT agent_id FROM incidents WHERE tenant_id = ?1 AND id = ?2 AND status <> 'closed'",
                )?
                .query_row(
                    params![append.tenant_id.as_str(), append.incident_id],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(agent_id) = open_for {
                let target = IncidentTarget {
                    tenant_id: append.tenant_id.as_str(),
                    incident_id: &append.incident_id,
                    agent_id: &agent_id,
                };
                freeze_if_active(conn, &target, reason, now, &mut applied)?;
            }
        }
    }
    let mut save_state = conn.prepare_cached(
        "INSERT INTO correlator_state (tenant_id, agent_id, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id, agent_id) DO UPDATE SET state = excluded.state",
    )?;
    for saved in &batch.correlator_states {
        save_state.execute(params![
            saved.tenant_id.as_str(),
            saved.agent_id,
            saved.state.to_string()
        ])?;
    }
    super::advance_cursor(conn, &batch.consumer, batch.after, batch.cursor, now)?;
    Ok(applied)
}

fn insert_alert(conn: &Connection, alert: &NewAlert) -> StoreResult<()> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO alerts (id, tenant_id, kind, severity, agent_id, source_seq, summary, event_seq, created_at, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9)
             ON CONFLICT (tenant_id, kind, source_seq) DO NOTHING",
        )?
        .execute(params![
            alert.id,
            alert.tenant_id.as_str(),
            alert.kind,
            alert.severity.as_str(),
            alert.agent_id,
            alert.source_seq,
            alert.summary,
            alert.created_at_ms,
            alert.count
        ])?;
    if inserted == 0 {
        return Ok(());
    }
    let seq = append_event(
        conn,
        alert.tenant_id.as_str(),
        event_kind::ALERT_RAISED,
        alert.agent_id.as_deref(),
        Some(&alert.id),
        &records::alert_event(alert),
    )?;
    conn.prepare_cached("UPDATE alerts SET event_seq = ?1 WHERE id = ?2")?
        .execute(params![seq, alert.id])?;
    Ok(())
}

/// Inserts the incident unless its dedup key exists; then its evidence and its automatic
/// response. Returns whether it was new.
fn open_incident(
    conn: &Connection,
    incident: &NewIncident,
    applied: &mut SocApplied,
) -> StoreResult<bool> {
    let tenant_id = incident.tenant_id.as_str();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO incidents (id, tenant_id, kind, severity, status, agent_id, dedup_key, summary,
                 recommended_action, opened_at, updated_at, event_seq)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?9, ?9, 0)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            incident.id,
            tenant_id,
            incident.kind,
            incident.severity.as_str(),
            incident.agent_id,
            incident.dedup_key,
            incident.summary,
            incident.recommended_action.as_ref().map(|v| v.to_string()),
            incident.opened_at_ms,
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    let mut evidence = conn.prepare_cached(
        "INSERT INTO incident_evidence (incident_id, event_seq) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?;
    for item in &incident.evidence {
        evidence.execute(params![incident.id, item.event_seq])?;
    }
    let seq = append_event(
        conn,
        tenant_id,
        event_kind::INCIDENT_OPENED,
        Some(&incident.agent_id),
        Some(&incident.id),
        &records::incident_opened_event(incident),
    )?;
    conn.prepare_cached("UPDATE incidents SET event_seq = ?1 WHERE id = ?2")?
        .execute(params![seq, incident.id])?;

    let at = incident.opened_at_ms;
    if let Some(reason) = &incident.response.freeze {
        let target = IncidentTarget {
            tenant_id,
            incident_id: &incident.id,
            agent_id: &incident.agent_id,
        };
        freeze_if_active(conn, &target, reason, at, applied)?;
    }
    if incident.response.reject_pending_approvals {
        let rejected = super::approvals::reject_pending(
            conn,
            tenant_id,
            &incident.agent_id,
            &incident.id,
            at,
        )?;
        if rejected > 0 {
            let detail = format!("{rejected} pending approval(s) rejected");
            record_response(
                conn,
                incident,
                "reject_pending_approvals",
                "automatic",
                RESPONSE_ENGINE,
                &detail,
                at,
            )?;
        }
    }
    if let Some(detail) = &incident.response.block_tool {
        record_response(
            conn,
            incident,
            "block_tool",
            "automatic",
            RESPONSE_ENGINE,
            detail,
            at,
        )?;
    }
    if let Some(tier) = incident.response.raise_risk_tier {
        let agent = load_agent(conn, tenant_id, &incident.agent_id)?;
        if agent.status != AgentStatus::Revoked && agent.risk_tier < tier {
            let change = AgentChange {
                kind: AgentChangeKind::SetRiskTier { risk_tier: tier },
                actor: RESPONSE_ENGINE.into(),
                at_ms: at,
            };
            let raised = change_agent_tx(conn, tenant_id, &agent.id, &change)?;
            let detail = format!(
                "risk tier {} → {tier}: later writes need approval",
                agent.risk_tier
            );
            record_response(
                conn,
                incident,
                "raise_risk_tier",
                "automatic",
                RESPONSE_ENGINE,
                &detail,
                at,
            )?;
            applied.agents_changed.push(raised);
        }
    }
    Ok(true)
}

/// An incident and its agent, as an automatic response names them.
struct IncidentTarget<'a> {
    tenant_id: &'a str,
    incident_id: &'a str,
    agent_id: &'a str,
}

/// The automatic freeze of an incident's response: applied to the agent as it is now, so
/// only an active agent is frozen (and the response recorded).
fn freeze_if_active(
    conn: &Connection,
    target: &IncidentTarget<'_>,
    reason: &str,
    at: i64,
    applied: &mut SocApplied,
) -> StoreResult<()> {
    let agent = load_agent(conn, target.tenant_id, target.agent_id)?;
    if agent.status != AgentStatus::Active {
        return Ok(());
    }
    let change = AgentChange {
        kind: AgentChangeKind::Freeze {
            reason: reason.to_owned(),
        },
        actor: RESPONSE_ENGINE.into(),
        at_ms: at,
    };
    let frozen = change_agent_tx(conn, target.tenant_id, &agent.id, &change)?;
    insert_response(
        conn,
        target.tenant_id,
        target.incident_id,
        target.agent_id,
        "freeze",
        "automatic",
        RESPONSE_ENGINE,
        reason,
        at,
    )?;
    applied.agents_changed.push(frozen);
    Ok(())
}

fn record_response(
    conn: &Connection,
    incident: &NewIncident,
    action: &str,
    mode: &str,
    actor: &str,
    detail: &str,
    at: i64,
) -> StoreResult<()> {
    insert_response(
        conn,
        incident.tenant_id.as_str(),
        &incident.id,
        &incident.agent_id,
        action,
        mode,
        actor,
        detail,
        at,
    )
}

#[allow(clippy::too_many_arguments)]
fn insert_response(
    conn: &Connection,
    tenant_id: &str,
    incident_id: &str,
    agent_id: &str,
    action: &str,
    mode: &str,
    actor: &str,
    detail: &str,
    at: i64,
) -> StoreResult<()> {
    let id = format!("rsp_{}", uuid::Uuid::now_v7().simple());
    let seq = append_event(
        conn,
        tenant_id,
        event_kind::RESPONSE_ACTION,
        Some(agent_id),
        Some(&id),
        &records::response_event(&id, incident_id, action, mode, actor, detail),
    )?;
    conn.prepare_cached(
        "INSERT INTO response_actions (id, tenant_id, incident_id, agent_id, action, mode, actor, detail, event_seq, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![id, tenant_id, incident_id, agent_id, action, mode, actor, detail, seq, at])?;
    Ok(())
}

pub(super) fn list_alerts(
    conn: &Connection,
    tenant: &TenantId,
    f: &AlertFilter,
) -> StoreResult<Vec<AlertRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE tenant_id = ?1 AND event_seq < ?2
               AND (?3 IS NULL OR severity = ?3) AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR agent_id = ?5)
               AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)
             ORDER BY event_seq DESC LIMIT ?8"
        ))?
        .query_map(
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
            alert_from_row,
        )?
        .collect::<Result<_, _>>()?)
}

pub(super) fn list_incidents(
    conn: &Connection,
    tenant: &TenantId,
    f: &IncidentFilter,
) -> StoreResult<Vec<IncidentRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE tenant_id = ?1 AND event_seq < ?2
               AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR severity = ?4)
               AND (?5 IS NULL OR kind = ?5) AND (?6 IS NULL OR agent_id = ?6)
               AND (?7 IS NULL OR opened_at >= ?7) AND (?8 IS NULL OR opened_at < ?8)
             ORDER BY event_seq DESC LIMIT ?9"
        ))?
        .query_map(
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
            incident_from_row,
        )?
        .collect::<Result<_, _>>()?)
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
    let incident = conn
        .prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant_id = ?1 AND id = ?2"
        ))?
        .query_row([tenant_id, incident_id], incident_from_row)
        .optional()?
        .ok_or(StoreError::NotFound("incident"))?;
    let evidence = records::evidence_summary(
        evidence_end(conn, incident_id, "ASC", EVIDENCE_SHOWN_FIRST)?,
        evidence_end(conn, incident_id, "DESC", EVIDENCE_SHOWN_RECENT)?,
    );
    let response_actions = conn
        .prepare_cached(&format!(
            "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions WHERE incident_id = ?1 ORDER BY event_seq"
        ))?
        .query_map([incident_id], response_action_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(IncidentDetail {
        incident,
        evidence,
        response_actions,
    })
}

pub(super) fn step_incident(
    conn: &Connection,
    tenant_id: &str,
    incident_id: &str,
    step: &IncidentStep,
    actor: &str,
    now: i64,
) -> StoreResult<(IncidentDetail, Option<Agent>)> {
    let detail = load_incident(conn, tenant_id, incident_id)?;
    let incident = &detail.incident;
    let recommendation = records::check_incident_step(&detail, step)?;
    let mut changed_agent = None;
    match step {
        IncidentStep::Acknowledge => {
            conn.execute(
                "UPDATE incidents SET status = 'acknowledged', acknowledged_at = ?1, acknowledged_by = ?2, updated_at = ?1
                 WHERE id = ?3",
                params![now, actor, incident_id],
            )?;
        }
        IncidentStep::Close { reason } => {
            conn.execute(
                "UPDATE incidents SET status = 'closed', closed_at = ?1, closed_by = ?2, close_reason = ?3, updated_at = ?1
                 WHERE id = ?4",
                params![now, actor, reason, incident_id],
            )?;
        }
        IncidentStep::ApplyRecommendation => {}
    }
    if let Some((kind, payload)) = records::incident_step_event(incident, step, actor) {
        append_event(
            conn,
            tenant_id,
            kind,
            Some(&incident.agent_id),
            Some(incident_id),
            &payload,
        )?;
    }
    if let Some(recommended) = recommendation {
        let agent = load_agent(conn, tenant_id, &incident.agent_id)?;
        records::check_recommendation_target(&agent)?;
        let change = AgentChange {
            kind: recommended.change,
            actor: actor.to_owned(),
            at_ms: now,
        };
        changed_agent = Some(change_agent_tx(conn, tenant_id, &agent.id, &change)?);
        insert_response(
            conn,
            tenant_id,
            incident_id,
            &incident.agent_id,
            &recommended.action,
            "applied",
            actor,
            &recommended.reason,
            now,
        )?;
    }
    Ok((load_incident(conn, tenant_id, incident_id)?, changed_agent))
}

pub(super) fn correlator_states(conn: &Connection) -> StoreResult<Vec<CorrelatorStateRecord>> {
    conn.prepare_cached("SELECT tenant_id, agent_id, state FROM correlator_state")?
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .map(|row| {
            let (tenant_id, agent_id, state) = row?;
            Ok(CorrelatorStateRecord {
                tenant_id: TenantId::new(tenant_id),
                agent_id,
                state: serde_json::from_str(&state)
                    .map_err(|e| StoreError::Corrupt(format!("correlator state: {e}")))?,
            })
        })
        .collect()
}
