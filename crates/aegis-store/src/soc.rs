//! The SOC role ([`SocStore`]) once for both stores: what the SOC plane writes (over
//! [`WriteTx`]: a consumer's batch of alerts, incidents and evidence with each incident's
//! automatic response, an operator's step on an incident, an incident's narrative, and the
//! consumer cursor every batch moves) and what it reads (over [`ReadRows`]: alerts,
//! incidents with their evidence and responses, narratives, correlator states), run by any
//! [`Backend`]. Only joining evidence is the driver's (`WriteTx::add_evidence`).

use crate::backend::Backend;
use crate::schema::{
    ALERT_COLUMNS, CORRELATOR_STATE_SQL, EVIDENCE_ITEM_COLUMNS, INCIDENT_COLUMNS, NARRATIVE_SQL,
    RESPONSE_ACTION_COLUMNS, RESPONSE_ENGINE,
};
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{
    Agent, AgentChange, AgentChangeKind, AlertFilter, AlertRecord, CorrelatorStateRecord,
    EVIDENCE_SHOWN_FIRST, EVIDENCE_SHOWN_RECENT, IncidentDetail, IncidentFilter, IncidentRecord,
    IncidentStep, NarrativeRecord, NewAlert, NewIncident, SocApplied, SocBatch, SocStore,
    StoreError, StoreResult, TenantId, agents, approvals, event_kind, now_ms, records,
};
use aegis_core::model::AgentStatus;
use async_trait::async_trait;
use std::sync::LazyLock;

#[async_trait]
impl<B: Backend> SocStore for B {
    async fn apply_soc_batch(&self, batch: SocBatch) -> StoreResult<SocApplied> {
        self.run_leader_rule(move |tx| {
            Box::pin(async move { apply_batch(tx, &batch, now_ms()).await })
        })
        .await
    }

    async fn correlator_states(&self) -> StoreResult<Vec<CorrelatorStateRecord>> {
        self.run_read(|rows| {
            Box::pin(async move {
                rows.query_rows(CORRELATOR_STATE_SQL, &[], crate::rows::correlator_state)
                    .await
            })
        })
        .await
    }

    async fn list_alerts(
        &self,
        tenant: &TenantId,
        filter: AlertFilter,
    ) -> StoreResult<Vec<AlertRecord>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move { list_alerts(rows, &tenant, &filter).await })
        })
        .await
    }

    async fn list_incidents(
        &self,
        tenant: &TenantId,
        filter: IncidentFilter,
    ) -> StoreResult<Vec<IncidentRecord>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move { list_incidents(rows, &tenant, &filter).await })
        })
        .await
    }

    async fn incident(&self, tenant: &TenantId, incident_id: &str) -> StoreResult<IncidentDetail> {
        let (tenant, incident_id) = (tenant.clone(), incident_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move { load_incident(rows, tenant.as_str(), &incident_id).await })
        })
        .await
    }

    async fn step_incident(
        &self,
        tenant: &TenantId,
        incident_id: &str,
        step: IncidentStep,
        actor: &str,
    ) -> StoreResult<(IncidentDetail, Option<Agent>)> {
        let (tenant, incident_id, actor) =
            (tenant.clone(), incident_id.to_owned(), actor.to_owned());
        self.run_rule(move |tx| {
            Box::pin(async move {
                step_incident(tx, tenant.as_str(), &incident_id, &step, &actor, now_ms()).await
            })
        })
        .await
    }

    async fn put_narrative(
        &self,
        tenant: &TenantId,
        narrative: NarrativeRecord,
    ) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.run_rule(move |tx| {
            Box::pin(async move { put_narrative(tx, tenant.as_str(), &narrative).await })
        })
        .await
    }

    async fn narrative(
        &self,
        tenant: &TenantId,
        incident_id: &str,
    ) -> StoreResult<Option<NarrativeRecord>> {
        let (tenant, incident_id) = (tenant.clone(), incident_id.to_owned());
        self.run_read(move |rows| {
            Box::pin(async move {
                let key = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::text(&incident_id),
                ];
                rows.query_opt(NARRATIVE_SQL, &key, crate::rows::narrative)
                    .await
            })
        })
        .await
    }
}

/// The tenant's alerts that pass `f`, newest first (`page.before` is an exclusive seq).
async fn list_alerts(
    rows: &mut impl ReadRows,
    tenant: &TenantId,
    f: &AlertFilter,
) -> StoreResult<Vec<AlertRecord>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE tenant_id = $1 AND event_seq < $2
               AND (CAST($3 AS TEXT) IS NULL OR severity = $3)
               AND (CAST($4 AS TEXT) IS NULL OR kind = $4)
               AND (CAST($5 AS TEXT) IS NULL OR agent_id = $5)
               AND (CAST($6 AS BIGINT) IS NULL OR created_at >= $6)
               AND (CAST($7 AS BIGINT) IS NULL OR created_at < $7)
             ORDER BY event_seq DESC LIMIT $8"
        )
    });
    let params = [
        SqlValue::text(tenant.as_str()),
        SqlValue::int(f.page.before.unwrap_or(i64::MAX)),
        SqlValue::Text(f.severity.map(|s| s.as_str())),
        SqlValue::Text(f.kind.as_deref()),
        SqlValue::Text(f.agent_id.as_deref()),
        SqlValue::Int(f.since_ms),
        SqlValue::Int(f.until_ms),
        SqlValue::int(i64::from(f.page.limit)),
    ];
    rows.query_rows(&SQL, &params, crate::rows::alert).await
}

/// The tenant's incidents that pass `f`, newest first (`page.before` is an exclusive seq).
async fn list_incidents(
    rows: &mut impl ReadRows,
    tenant: &TenantId,
    f: &IncidentFilter,
) -> StoreResult<Vec<IncidentRecord>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE tenant_id = $1 AND event_seq < $2
               AND (CAST($3 AS TEXT) IS NULL OR status = $3)
               AND (CAST($4 AS TEXT) IS NULL OR severity = $4)
               AND (CAST($5 AS TEXT) IS NULL OR kind = $5)
               AND (CAST($6 AS TEXT) IS NULL OR agent_id = $6)
               AND (CAST($7 AS BIGINT) IS NULL OR opened_at >= $7)
               AND (CAST($8 AS BIGINT) IS NULL OR opened_at < $8)
             ORDER BY event_seq DESC LIMIT $9"
        )
    });
    let params = [
        SqlValue::text(tenant.as_str()),
        SqlValue::int(f.page.before.unwrap_or(i64::MAX)),
        SqlValue::Text(f.status.as_deref()),
        SqlValue::Text(f.severity.map(|s| s.as_str())),
        SqlValue::Text(f.kind.as_deref()),
        SqlValue::Text(f.agent_id.as_deref()),
        SqlValue::Int(f.since_ms),
        SqlValue::Int(f.until_ms),
        SqlValue::int(i64::from(f.page.limit)),
    ];
    rows.query_rows(&SQL, &params, crate::rows::incident).await
}

/// The tenant's incident as the read API shows it, with the ends of its evidence and its
/// responses; `NotFound` if it has none by that id.
pub(crate) async fn load_incident(
    rows: &mut impl ReadRows,
    tenant_id: &str,
    incident_id: &str,
) -> StoreResult<IncidentDetail> {
    static BY_ID: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant_id = $1 AND id = $2")
    });
    static RESPONSES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {RESPONSE_ACTION_COLUMNS} FROM response_actions
             WHERE incident_id = $1 ORDER BY event_seq"
        )
    });
    let incident = rows
        .query_opt(
            &BY_ID,
            &[SqlValue::text(tenant_id), SqlValue::text(incident_id)],
            crate::rows::incident,
        )
        .await?
        .ok_or(StoreError::NotFound("incident"))?;
    let evidence = records::evidence_summary(
        evidence_end(rows, incident_id, EvidenceEnd::First).await?,
        evidence_end(rows, incident_id, EvidenceEnd::Recent).await?,
    );
    let response_actions = rows
        .query_rows(
            &RESPONSES,
            &[SqlValue::text(incident_id)],
            crate::rows::response_action,
        )
        .await?;
    Ok(IncidentDetail {
        incident,
        evidence,
        response_actions,
    })
}

/// Which end of an incident's evidence a read shows.
#[derive(Clone, Copy)]
enum EvidenceEnd {
    /// The first [`EVIDENCE_SHOWN_FIRST`] items.
    First,
    /// The last [`EVIDENCE_SHOWN_RECENT`] items, newest first.
    Recent,
}

async fn evidence_end(
    rows: &mut impl ReadRows,
    incident_id: &str,
    end: EvidenceEnd,
) -> StoreResult<Vec<crate::EvidenceItem>> {
    static ENDS: LazyLock<[String; 2]> = LazyLock::new(|| {
        ["ASC", "DESC"].map(|order| {
            format!(
                "SELECT {EVIDENCE_ITEM_COLUMNS}
                 FROM incident_evidence e JOIN events ev ON ev.seq = e.event_seq
                 WHERE e.incident_id = $1 ORDER BY e.event_seq {order} LIMIT $2"
            )
        })
    });
    let (sql, limit) = match end {
        EvidenceEnd::First => (&ENDS[0], EVIDENCE_SHOWN_FIRST),
        EvidenceEnd::Recent => (&ENDS[1], EVIDENCE_SHOWN_RECENT),
    };
    let params = [SqlValue::text(incident_id), SqlValue::int(i64::from(limit))];
    rows.query_rows(sql, &params, crate::rows::evidence_item)
        .await
}

/// Applies a SOC consumer's batch and moves its cursor from `batch.after` to `batch.cursor`.
pub(crate) async fn apply_batch(
    tx: &mut impl WriteTx,
    batch: &SocBatch,
    now: i64,
) -> StoreResult<SocApplied> {
    let mut applied = SocApplied::default();
    for alert in &batch.alerts {
        insert_alert(tx, alert).await?;
    }
    let repeats: Vec<_> = (batch.alert_repeats.iter())
        .map(|repeat| {
            [
                SqlValue::text(repeat.tenant_id.as_str()),
                SqlValue::text(&repeat.alert_id),
                SqlValue::int(repeat.count),
            ]
        })
        .collect();
    tx.execute_each(
        "UPDATE alerts SET count = count + $3 WHERE tenant_id = $1 AND id = $2",
        &repeats,
    )
    .await?;
    for incident in &batch.incidents {
        if open_incident(tx, incident, &mut applied).await? {
            applied.opened.push(incident.id.clone());
        }
    }
    tx.add_evidence(&batch.evidence, now).await?;
    for append in &batch.evidence {
        let Some(reason) = &append.recontain else {
            continue;
        };
        let tenant_id = append.tenant_id.as_str();
        let open_for = tx
            .query_opt(
                "SELECT agent_id FROM incidents WHERE tenant_id = $1 AND id = $2 AND status <> 'closed'",
                &[SqlValue::text(tenant_id), SqlValue::text(&append.incident_id)],
                |row| row.required_text(0),
            )
            .await?;
        if let Some(agent_id) = open_for {
            let target = IncidentTarget {
                tenant_id,
                incident_id: &append.incident_id,
                agent_id: &agent_id,
            };
            freeze_if_active(tx, &target, reason, now, &mut applied).await?;
        }
    }
    let states: Vec<_> = (batch.correlator_states.iter())
        .map(|saved| {
            [
                SqlValue::text(saved.tenant_id.as_str()),
                SqlValue::text(&saved.agent_id),
                SqlValue::text(&saved.state),
            ]
        })
        .collect();
    tx.execute_each(
        "INSERT INTO correlator_state (tenant_id, agent_id, state) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, agent_id) DO UPDATE SET state = excluded.state",
        &states,
    )
    .await?;
    advance_cursor(tx, &batch.consumer, batch.after, batch.cursor, now).await?;
    Ok(applied)
}

/// Moves a consumer's cursor from `after` to `cursor`, refusing if another consumer already
/// moved it (only one may apply each stretch of the log). No row lock is needed: the
/// writer's transaction holds the database's write lock (SQLite) or `log_head`
/// (PostgreSQL), so no other writer runs between the read and the write.
pub(crate) async fn advance_cursor(
    tx: &mut impl WriteTx,
    consumer: &str,
    after: i64,
    cursor: i64,
    now: i64,
) -> StoreResult<()> {
    let stored = tx
        .query_opt(
            "SELECT seq FROM consumer_cursors WHERE name = $1",
            &[SqlValue::text(consumer)],
            |row| row.required_int(0),
        )
        .await?
        .unwrap_or(0);
    // Exactly where the batch started: a cursor moved past it means another instance
    // applied that stretch, one behind it that the batch would skip events.
    if stored != after {
        return Err(StoreError::Conflict(format!(
            "consumer {consumer} is at {stored}, not at this batch's start {after}: another instance is running"
        )));
    }
    tx.execute(
        "INSERT INTO consumer_cursors (name, seq, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
        &[
            SqlValue::text(consumer),
            SqlValue::int(cursor),
            SqlValue::int(now),
        ],
    )
    .await?;
    Ok(())
}

/// Inserts the alert unless one of its kind already names its source event, with the
/// `alert.raised` event that records it.
async fn insert_alert(tx: &mut impl WriteTx, alert: &NewAlert) -> StoreResult<()> {
    let tenant_id = alert.tenant_id.as_str();
    let inserted = tx
        .execute(
            "INSERT INTO alerts (id, tenant_id, kind, severity, agent_id, source_seq, summary, event_seq, created_at, count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)
             ON CONFLICT (tenant_id, kind, source_seq) DO NOTHING",
            &[
                SqlValue::text(&alert.id),
                SqlValue::text(tenant_id),
                SqlValue::text(&alert.kind),
                SqlValue::text(alert.severity.as_str()),
                SqlValue::Text(alert.agent_id.as_deref()),
                SqlValue::int(alert.source_seq),
                SqlValue::text(&alert.summary),
                SqlValue::int(alert.created_at_ms),
                SqlValue::int(alert.count),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(());
    }
    let seq = tx
        .append_event(EventDraft {
            tenant_id,
            kind: event_kind::ALERT_RAISED,
            agent_id: alert.agent_id.as_deref(),
            subject_id: Some(&alert.id),
            payload: records::alert_event(alert),
        })
        .await?;
    tx.execute(
        "UPDATE alerts SET event_seq = $1 WHERE id = $2",
        &[SqlValue::int(seq), SqlValue::text(&alert.id)],
    )
    .await?;
    Ok(())
}

/// Inserts the incident unless its dedup key exists; then its evidence and its automatic
/// response. Returns whether it was new.
async fn open_incident(
    tx: &mut impl WriteTx,
    incident: &NewIncident,
    applied: &mut SocApplied,
) -> StoreResult<bool> {
    let tenant_id = incident.tenant_id.as_str();
    let recommended_action = incident
        .recommended_action
        .as_ref()
        .map(ToString::to_string);
    let inserted = tx
        .execute(
            "INSERT INTO incidents (id, tenant_id, kind, severity, status, agent_id, dedup_key, summary,
                 recommended_action, opened_at, updated_at, event_seq)
             VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $9, 0)
             ON CONFLICT DO NOTHING",
            &[
                SqlValue::text(&incident.id),
                SqlValue::text(tenant_id),
                SqlValue::text(&incident.kind),
                SqlValue::text(incident.severity.as_str()),
                SqlValue::text(&incident.agent_id),
                SqlValue::text(&incident.dedup_key),
                SqlValue::text(&incident.summary),
                SqlValue::Text(recommended_action.as_deref()),
                SqlValue::int(incident.opened_at_ms),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    for item in &incident.evidence {
        tx.execute(
            "INSERT INTO incident_evidence (incident_id, event_seq) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[SqlValue::text(&incident.id), SqlValue::int(item.event_seq)],
        )
        .await?;
    }
    let seq = tx
        .append_event(EventDraft {
            tenant_id,
            kind: event_kind::INCIDENT_OPENED,
            agent_id: Some(&incident.agent_id),
            subject_id: Some(&incident.id),
            payload: records::incident_opened_event(incident),
        })
        .await?;
    tx.execute(
        "UPDATE incidents SET event_seq = $1 WHERE id = $2",
        &[SqlValue::int(seq), SqlValue::text(&incident.id)],
    )
    .await?;

    let at = incident.opened_at_ms;
    let target = IncidentTarget {
        tenant_id,
        incident_id: &incident.id,
        agent_id: &incident.agent_id,
    };
    if let Some(reason) = &incident.response.freeze {
        freeze_if_active(tx, &target, reason, at, applied).await?;
    }
    if incident.response.reject_pending_approvals {
        let rejected =
            approvals::reject_pending(tx, tenant_id, &incident.agent_id, &incident.id, at).await?;
        if rejected > 0 {
            let response = Response::automatic("reject_pending_approvals");
            let detail = format!("{rejected} pending approval(s) rejected");
            insert_response(tx, &target, &response, &detail, at).await?;
        }
    }
    if let Some(detail) = &incident.response.block_tool {
        insert_response(tx, &target, &Response::automatic("block_tool"), detail, at).await?;
    }
    if let Some(tier) = incident.response.raise_risk_tier {
        let agent = tx.load_agent(tenant_id, &incident.agent_id).await?;
        if agent.status != AgentStatus::Revoked && agent.risk_tier < tier {
            let change = AgentChange {
                kind: AgentChangeKind::SetRiskTier { risk_tier: tier },
                actor: RESPONSE_ENGINE.into(),
                at_ms: at,
            };
            let raised = agents::change_agent(tx, tenant_id, &agent.id, &change).await?;
            let detail = format!(
                "risk tier {} → {tier}: later writes need approval",
                agent.risk_tier
            );
            let response = Response::automatic("raise_risk_tier");
            insert_response(tx, &target, &response, &detail, at).await?;
            applied.agents_changed.push(raised);
        }
    }
    Ok(true)
}

/// An incident and its agent, as a response names them.
struct IncidentTarget<'a> {
    tenant_id: &'a str,
    incident_id: &'a str,
    agent_id: &'a str,
}

/// A response action as recorded: what was done, how (`automatic` by the response engine,
/// `applied` by an operator taking the recommendation) and by whom.
struct Response<'a> {
    action: &'a str,
    mode: &'a str,
    actor: &'a str,
}

impl Response<'static> {
    fn automatic(action: &'static str) -> Self {
        Response {
            action,
            mode: "automatic",
            actor: RESPONSE_ENGINE,
        }
    }
}

/// The automatic freeze of an incident's response: applied to the agent as it is now, so
/// only an active agent is frozen (and the response recorded).
async fn freeze_if_active(
    tx: &mut impl WriteTx,
    target: &IncidentTarget<'_>,
    reason: &str,
    at: i64,
    applied: &mut SocApplied,
) -> StoreResult<()> {
    let agent = tx.load_agent(target.tenant_id, target.agent_id).await?;
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
    let frozen = agents::change_agent(tx, target.tenant_id, &agent.id, &change).await?;
    insert_response(tx, target, &Response::automatic("freeze"), reason, at).await?;
    applied.agents_changed.push(frozen);
    Ok(())
}

/// Records a response taken on an incident's agent, with its `response.action` event.
async fn insert_response(
    tx: &mut impl WriteTx,
    target: &IncidentTarget<'_>,
    response: &Response<'_>,
    detail: &str,
    at: i64,
) -> StoreResult<()> {
    let id = format!("rsp_{}", uuid::Uuid::now_v7().simple());
    let seq = tx
        .append_event(EventDraft {
            tenant_id: target.tenant_id,
            kind: event_kind::RESPONSE_ACTION,
            agent_id: Some(target.agent_id),
            subject_id: Some(&id),
            payload: records::response_event(
                &id,
                target.incident_id,
                response.action,
                response.mode,
                response.actor,
                detail,
            ),
        })
        .await?;
    tx.execute(
        "INSERT INTO response_actions (id, tenant_id, incident_id, agent_id, action, mode, actor, detail, event_seq, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            SqlValue::text(&id),
            SqlValue::text(target.tenant_id),
            SqlValue::text(target.incident_id),
            SqlValue::text(target.agent_id),
            SqlValue::text(response.action),
            SqlValue::text(response.mode),
            SqlValue::text(response.actor),
            SqlValue::text(detail),
            SqlValue::int(seq),
            SqlValue::int(at),
        ],
    )
    .await?;
    Ok(())
}

/// An operator's step on an incident (acknowledge, close, apply its recommendation), with
/// the event that records it; the incident after it and the agent it changed, if any.
pub(crate) async fn step_incident(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    incident_id: &str,
    step: &IncidentStep,
    actor: &str,
    now: i64,
) -> StoreResult<(IncidentDetail, Option<Agent>)> {
    let detail = load_incident(tx, tenant_id, incident_id).await?;
    let incident = &detail.incident;
    let recommendation = records::check_incident_step(&detail, step)?;
    match step {
        IncidentStep::Acknowledge => {
            tx.execute(
                "UPDATE incidents SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, updated_at = $1
                 WHERE id = $3",
                &[
                    SqlValue::int(now),
                    SqlValue::text(actor),
                    SqlValue::text(incident_id),
                ],
            )
            .await?;
        }
        IncidentStep::Close { reason } => {
            tx.execute(
                "UPDATE incidents SET status = 'closed', closed_at = $1, closed_by = $2, close_reason = $3, updated_at = $1
                 WHERE id = $4",
                &[
                    SqlValue::int(now),
                    SqlValue::text(actor),
                    SqlValue::Text(reason.as_deref()),
                    SqlValue::text(incident_id),
                ],
            )
            .await?;
        }
        IncidentStep::ApplyRecommendation => {}
    }
    if let Some((kind, payload)) = records::incident_step_event(incident, step, actor) {
        tx.append_event(EventDraft {
            tenant_id,
            kind,
            agent_id: Some(&incident.agent_id),
            subject_id: Some(incident_id),
            payload,
        })
        .await?;
    }
    let mut changed_agent = None;
    if let Some(recommended) = recommendation {
        let agent = tx.load_agent(tenant_id, &incident.agent_id).await?;
        records::check_recommendation_target(&agent)?;
        let change = AgentChange {
            kind: recommended.change,
            actor: actor.to_owned(),
            at_ms: now,
        };
        changed_agent = Some(agents::change_agent(tx, tenant_id, &agent.id, &change).await?);
        let target = IncidentTarget {
            tenant_id,
            incident_id,
            agent_id: &incident.agent_id,
        };
        let response = Response {
            action: &recommended.action,
            mode: "applied",
            actor,
        };
        insert_response(tx, &target, &response, &recommended.reason, now).await?;
    }
    Ok((
        load_incident(tx, tenant_id, incident_id).await?,
        changed_agent,
    ))
}

/// Stores the incident's narrative, replacing the one before it.
pub(crate) async fn put_narrative(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    narrative: &NarrativeRecord,
) -> StoreResult<()> {
    let (evidence, basis) = records::narrative_columns(narrative)?;
    tx.execute(
        "INSERT INTO incident_narratives (tenant_id, incident_id, generated_by, narrative, evidence, generated_at, basis)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, incident_id) DO UPDATE SET generated_by = excluded.generated_by,
           narrative = excluded.narrative, evidence = excluded.evidence, generated_at = excluded.generated_at,
           basis = excluded.basis",
        &[
            SqlValue::text(tenant_id),
            SqlValue::text(&narrative.incident_id),
            SqlValue::text(&narrative.generated_by),
            SqlValue::text(&narrative.narrative),
            SqlValue::text(&evidence),
            SqlValue::int(narrative.generated_at_ms),
            SqlValue::Text(basis.as_deref()),
        ],
    )
    .await?;
    Ok(())
}
