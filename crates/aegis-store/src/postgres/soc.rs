//! SOC tables: alerts, incidents, evidence, response actions, consumer cursors.

use super::rows::*;
use super::writer::WriterState;
use super::{append_event, change_agent_tx, load_agent, prepared};
use crate::records;
use crate::schema::{EVIDENCE_ITEM_COLUMNS, RESPONSE_ENGINE};
use crate::*;
use aegis_core::model::AgentStatus;
use deadpool_postgres::{GenericClient, Transaction};

pub(super) async fn apply_batch(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    batch: &SocBatch,
    now: i64,
) -> StoreResult<SocApplied> {
    let mut applied = SocApplied::default();
    for alert in &batch.alerts {
        insert_alert(tx, state, alert).await?;
    }
    for repeat in &batch.alert_repeats {
        tx.execute(
            &prepared(
                tx,
                "UPDATE alerts SET count = count + $3 WHERE tenant_id = $1 AND id = $2",
            )
            .await?,
            &[&repeat.tenant_id.as_str(), &repeat.alert_id, &repeat.count],
        )
        .await?;
    }
    for incident in &batch.incidents {
        if open_incident(tx, state, incident, &mut applied).await? {
            applied.opened.push(incident.id.clone());
        }
    }
    // One statement for the batch's evidence, not two round trips per event: a storm joins
    // every later event of the agent to its incident.
    let appends = &batch.evidence;
    let tenants: Vec<&str> = appends.iter().map(|a| a.tenant_id.as_str()).collect();
    let incidents: Vec<&str> = appends.iter().map(|a| a.incident_id.as_str()).collect();
    let seqs: Vec<i64> = appends.iter().map(|a| a.evidence.event_seq).collect();
    if !seqs.is_empty() {
        // The incidents whose evidence grew get their `updated_at` in the same statement.
        tx.execute(
            &prepared(
                tx,
                "WITH added AS (
                     INSERT INTO incident_evidence (incident_id, event_seq)
                     SELECT i.id, a.event_seq
                     FROM UNNEST($1::text[], $2::text[], $3::bigint[])
                          AS a (tenant_id, incident_id, event_seq)
                     JOIN incidents i ON i.tenant_id = a.tenant_id AND i.id = a.incident_id
                     ON CONFLICT DO NOTHING
                     RETURNING incident_id)
                 UPDATE incidents SET updated_at = $4 WHERE id IN (SELECT incident_id FROM added)",
            )
            .await?,
            &[&tenants, &incidents, &seqs, &now],
        )
        .await?;
    }
    for append in &batch.evidence {
        if let Some(reason) = &append.recontain {
            let open_for = tx
                .query_opt(
                    &prepared(
                        tx,
                        "SELECT agent_id FROM incidents WHERE tenant_id = $1 AND id = $2 AND status <> 'closed'",
                    )
                    .await?,
                    &[&append.tenant_id.as_str(), &append.incident_id],
                )
                .await?;
            if let Some(row) = open_for {
                let agent_id: String = get(&row, 0)?;
                let target = IncidentTarget {
                    tenant_id: append.tenant_id.as_str(),
                    incident_id: &append.incident_id,
                    agent_id: &agent_id,
                };
                freeze_if_active(tx, state, &target, reason, now, &mut applied).await?;
            }
        }
    }
    let save_state = prepared(
        tx,
        "INSERT INTO correlator_state (tenant_id, agent_id, state) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, agent_id) DO UPDATE SET state = excluded.state",
    )
    .await?;
    for saved in &batch.correlator_states {
        tx.execute(
            &save_state,
            &[
                &saved.tenant_id.as_str(),
                &saved.agent_id,
                &saved.state.to_string(),
            ],
        )
        .await?;
    }
    advance_cursor(tx, &batch.consumer, batch.after, batch.cursor, now).await?;
    Ok(applied)
}

/// Moves a consumer's cursor from `after` to `cursor`, refusing if another consumer already
/// moved it past `after` (only one may apply each stretch of the log). Read and write need no
/// row lock: the writer's transaction holds `log_head`, so no other replica writes between.
pub(super) async fn advance_cursor(
    tx: &Transaction<'_>,
    consumer: &str,
    after: i64,
    cursor: i64,
    now: i64,
) -> StoreResult<()> {
    let stored: i64 = tx
        .query_opt(
            &prepared(tx, "SELECT seq FROM consumer_cursors WHERE name = $1").await?,
            &[&consumer],
        )
        .await?
        .map(|row| get(&row, 0))
        .transpose()?
        .unwrap_or(0);
    // Exactly where the batch started: a cursor moved past it means another instance
    // applied that stretch, one behind it that the batch would skip events.
    if stored != after {
        return Err(StoreError::Conflict(format!(
            "consumer {consumer} is at {stored}, not at this batch's start {after}: another instance is running"
        )));
    }
    tx.execute(
        &prepared(
            tx,
            "INSERT INTO consumer_cursors (name, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
        )
        .await?,
        &[&consumer, &cursor, &now],
    )
    .await?;
    Ok(())
}

async fn insert_alert(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    alert: &NewAlert,
) -> StoreResult<()> {
    let inserted = tx
        .execute(
            &prepared(
                tx,
                "INSERT INTO alerts (id, tenant_id, kind, severity, agent_id, source_seq, summary, event_seq, created_at, count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)
                 ON CONFLICT (tenant_id, kind, source_seq) DO NOTHING",
            )
            .await?,
            &[
                &alert.id,
                &alert.tenant_id.as_str(),
                &alert.kind,
                &alert.severity.as_str(),
                &alert.agent_id,
                &alert.source_seq,
                &alert.summary,
                &alert.created_at_ms,
                &alert.count,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(());
    }
    let seq = append_event(
        tx,
        state,
        alert.tenant_id.as_str(),
        event_kind::ALERT_RAISED,
        alert.agent_id.as_deref(),
        Some(&alert.id),
        &records::alert_event(alert),
    )
    .await?;
    tx.execute(
        &prepared(tx, "UPDATE alerts SET event_seq = $1 WHERE id = $2").await?,
        &[&seq, &alert.id],
    )
    .await?;
    Ok(())
}

/// Inserts the incident unless its dedup key exists; then its evidence and its automatic
/// response. Returns whether it was new.
async fn open_incident(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    incident: &NewIncident,
    applied: &mut SocApplied,
) -> StoreResult<bool> {
    let tenant_id = incident.tenant_id.as_str();
    let inserted = tx
        .execute(
            &prepared(
                tx,
                "INSERT INTO incidents (id, tenant_id, kind, severity, status, agent_id, dedup_key, summary,
                     recommended_action, opened_at, updated_at, event_seq)
                 VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $9, 0)
                 ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &incident.id,
                &tenant_id,
                &incident.kind,
                &incident.severity.as_str(),
                &incident.agent_id,
                &incident.dedup_key,
                &incident.summary,
                &incident.recommended_action.as_ref().map(|v| v.to_string()),
                &incident.opened_at_ms,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    let evidence = prepared(
        tx,
        "INSERT INTO incident_evidence (incident_id, event_seq) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .await?;
    for item in &incident.evidence {
        tx.execute(&evidence, &[&incident.id, &item.event_seq])
            .await?;
    }
    let seq = append_event(
        tx,
        state,
        tenant_id,
        event_kind::INCIDENT_OPENED,
        Some(&incident.agent_id),
        Some(&incident.id),
        &records::incident_opened_event(incident),
    )
    .await?;
    tx.execute(
        &prepared(tx, "UPDATE incidents SET event_seq = $1 WHERE id = $2").await?,
        &[&seq, &incident.id],
    )
    .await?;

    let at = incident.opened_at_ms;
    if let Some(reason) = &incident.response.freeze {
        let target = IncidentTarget {
            tenant_id,
            incident_id: &incident.id,
            agent_id: &incident.agent_id,
        };
        freeze_if_active(tx, state, &target, reason, at, applied).await?;
    }
    if incident.response.reject_pending_approvals {
        let rejected = super::approvals::reject_pending(
            tx,
            state,
            tenant_id,
            &incident.agent_id,
            &incident.id,
            at,
        )
        .await?;
        if rejected > 0 {
            let detail = format!("{rejected} pending approval(s) rejected");
            record_response(
                tx,
                state,
                incident,
                "reject_pending_approvals",
                "automatic",
                RESPONSE_ENGINE,
                &detail,
                at,
            )
            .await?;
        }
    }
    if let Some(detail) = &incident.response.block_tool {
        record_response(
            tx,
            state,
            incident,
            "block_tool",
            "automatic",
            RESPONSE_ENGINE,
            detail,
            at,
        )
        .await?;
    }
    if let Some(tier) = incident.response.raise_risk_tier {
        let agent = load_agent(tx, tenant_id, &incident.agent_id).await?;
        if agent.status != AgentStatus::Revoked && agent.risk_tier < tier {
            let change = AgentChange {
                kind: AgentChangeKind::SetRiskTier { risk_tier: tier },
                actor: RESPONSE_ENGINE.into(),
                at_ms: at,
            };
            let raised = change_agent_tx(tx, state, tenant_id, &agent.id, &change).await?;
            let detail = format!(
                "risk tier {} → {tier}: later writes need approval",
                agent.risk_tier
            );
            record_response(
                tx,
                state,
                incident,
                "raise_risk_tier",
                "automatic",
                RESPONSE_ENGINE,
                &detail,
                at,
            )
            .await?;
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
async fn freeze_if_active(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    target: &IncidentTarget<'_>,
    reason: &str,
    at: i64,
    applied: &mut SocApplied,
) -> StoreResult<()> {
    let agent = load_agent(tx, target.tenant_id, target.agent_id).await?;
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
    let frozen = change_agent_tx(tx, state, target.tenant_id, &agent.id, &change).await?;
    insert_response(
        tx,
        state,
        target.tenant_id,
        target.incident_id,
        target.agent_id,
        "freeze",
        "automatic",
        RESPONSE_ENGINE,
        reason,
        at,
    )
    .await?;
    applied.agents_changed.push(frozen);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn record_response(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    incident: &NewIncident,
    action: &str,
    mode: &str,
    actor: &str,
    detail: &str,
    at: i64,
) -> StoreResult<()> {
    insert_response(
        tx,
        state,
        incident.tenant_id.as_str(),
        &incident.id,
        &incident.agent_id,
        action,
        mode,
        actor,
        detail,
        at,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn insert_response(
    tx: &Transaction<'_>,
    state: &mut WriterState,
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
        tx,
        state,
        tenant_id,
        event_kind::RESPONSE_ACTION,
        Some(agent_id),
        Some(&id),
        &records::response_event(&id, incident_id, action, mode, actor, detail),
    )
    .await?;
    tx.execute(
        &prepared(
            tx,
            "INSERT INTO response_actions (id, tenant_id, incident_id, agent_id, action, mode, actor, detail, event_seq, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?,
        &[
            &id,
            &tenant_id,
            &incident_id,
            &agent_id,
            &action,
            &mode,
            &actor,
            &detail,
            &seq,
            &at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn list_alerts<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    f: &AlertFilter,
) -> StoreResult<Vec<AlertRecord>> {
    let statement = prepared(
        client,
        &format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE tenant_id = $1 AND event_seq < $2
               AND ($3::text IS NULL OR severity = $3) AND ($4::text IS NULL OR kind = $4)
               AND ($5::text IS NULL OR agent_id = $5)
               AND ($6::bigint IS NULL OR created_at >= $6) AND ($7::bigint IS NULL OR created_at < $7)
             ORDER BY event_seq DESC LIMIT $8"
        ),
    )
    .await?;
    client
        .query(
            &statement,
            &[
                &tenant.as_str(),
                &f.page.before.unwrap_or(i64::MAX),
                &f.severity.map(|s| s.as_str()),
                &f.kind,
                &f.agent_id,
                &f.since_ms,
                &f.until_ms,
                &i64::from(f.page.limit),
            ],
        )
        .await?
        .iter()
        .map(alert_from_row)
        .collect()
}

pub(super) async fn list_incidents<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    f: &IncidentFilter,
) -> StoreResult<Vec<IncidentRecord>> {
    let statement = prepared(
        client,
        &format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE tenant_id = $1 AND event_seq < $2
               AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR severity = $4)
               AND ($5::text IS NULL OR kind = $5) AND ($6::text IS NULL OR agent_id = $6)
               AND ($7::bigint IS NULL OR opened_at >= $7) AND ($8::bigint IS NULL OR opened_at < $8)
             ORDER BY event_seq DESC LIMIT $9"
        ),
    )
    .await?;
    client
        .query(
            &statement,
            &[
                &tenant.as_str(),
                &f.page.before.unwrap_or(i64::MAX),
                &f.status,
                &f.severity.map(|s| s.as_str()),
                &f.kind,
                &f.agent_id,
                &f.since_ms,
                &f.until_ms,
                &i64::from(f.page.limit),
            ],
        )
        .await?
        .iter()
        .map(incident_from_row)
        .collect()
}

/// The first (`ASC`) or most recent (`DESC`) evidence items of an incident.
async fn evidence_end<C: GenericClient>(
    client: &C,
    incident_id: &str,
    order: &str,
    limit: u32,
) -> StoreResult<Vec<EvidenceItem>> {
    let sql = format!(
        "SELECT {EVIDENCE_ITEM_COLUMNS}
         FROM incident_evidence e JOIN events ev ON ev.seq = e.event_seq
         WHERE e.incident_id = $1 ORDER BY e.event_seq {order} LIMIT $2"
    );
    client
        .query(
            &prepared(client, &sql).await?,
            &[&incident_id, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(EvidenceItem {
                event_seq: get(row, 0)?,
                decision_id: get(row, 1)?,
                recorded_at_ms: get(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn load_incident<C: GenericClient>(
    client: &C,
    tenant_id: &str,
    incident_id: &str,
) -> StoreResult<IncidentDetail> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant_id = $1 AND id = $2"
                ),
            )
            .await?,
            &[&tenant_id, &incident_id],
        )
        .await?
        .ok_or(StoreError::NotFound("incident"))?;
    let incident = incident_from_row(&row)?;
    let evidence = records::evidence_summary(
        evidence_end(client, incident_id, "ASC", EVIDENCE_SHOWN_FIRST).await?,
        evidence_end(client, incident_id, "DESC", EVIDENCE_SHOWN_RECENT).await?,
    );
    let response_actions = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions WHERE incident_id = $1 ORDER BY event_seq"
                ),
            )
            .await?,
            &[&incident_id],
        )
        .await?
        .iter()
        .map(response_action_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(IncidentDetail {
        incident,
        evidence,
        response_actions,
    })
}

pub(super) async fn step_incident(
    tx: &Transaction<'_>,
    state: &mut WriterState,
    tenant_id: &str,
    incident_id: &str,
    step: &IncidentStep,
    actor: &str,
    now: i64,
) -> StoreResult<(IncidentDetail, Option<Agent>)> {
    let detail = load_incident(tx, tenant_id, incident_id).await?;
    let incident = &detail.incident;
    let recommendation = records::check_incident_step(&detail, step)?;
    let mut changed_agent = None;
    match step {
        IncidentStep::Acknowledge => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE incidents SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, updated_at = $1
                     WHERE id = $3",
                )
                .await?,
                &[&now, &actor, &incident_id],
            )
            .await?;
        }
        IncidentStep::Close { reason } => {
            tx.execute(
                &prepared(
                    tx,
                    "UPDATE incidents SET status = 'closed', closed_at = $1, closed_by = $2, close_reason = $3, updated_at = $1
                     WHERE id = $4",
                )
                .await?,
                &[&now, &actor, reason, &incident_id],
            )
            .await?;
        }
        IncidentStep::ApplyRecommendation => {}
    }
    if let Some((kind, payload)) = records::incident_step_event(incident, step, actor) {
        append_event(
            tx,
            state,
            tenant_id,
            kind,
            Some(&incident.agent_id),
            Some(incident_id),
            &payload,
        )
        .await?;
    }
    if let Some(recommended) = recommendation {
        let agent = load_agent(tx, tenant_id, &incident.agent_id).await?;
        records::check_recommendation_target(&agent)?;
        let change = AgentChange {
            kind: recommended.change,
            actor: actor.to_owned(),
            at_ms: now,
        };
        changed_agent = Some(change_agent_tx(tx, state, tenant_id, &agent.id, &change).await?);
        insert_response(
            tx,
            state,
            tenant_id,
            incident_id,
            &incident.agent_id,
            &recommended.action,
            "applied",
            actor,
            &recommended.reason,
            now,
        )
        .await?;
    }
    Ok((
        load_incident(tx, tenant_id, incident_id).await?,
        changed_agent,
    ))
}

pub(super) async fn correlator_states<C: GenericClient>(
    client: &C,
) -> StoreResult<Vec<CorrelatorStateRecord>> {
    client
        .query(
            &prepared(
                client,
                "SELECT tenant_id, agent_id, state FROM correlator_state",
            )
            .await?,
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let state: String = get(row, 2)?;
            Ok(CorrelatorStateRecord {
                tenant_id: TenantId::new(get::<String>(row, 0)?),
                agent_id: get(row, 1)?,
                state: serde_json::from_str(&state)
                    .map_err(|e| StoreError::Corrupt(format!("correlator state: {e}")))?,
            })
        })
        .collect()
}
