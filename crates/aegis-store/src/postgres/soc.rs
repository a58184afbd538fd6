//! SOC tables as PostgreSQL reads them: alerts, incidents with their evidence and
//! responses, correlator state. What the SOC writes is `crate::soc`.

use super::prepared;
use super::rows::*;
use crate::records;
use crate::schema::{CORRELATOR_STATE_SQL, EVIDENCE_ITEM_COLUMNS};
use crate::*;
use deadpool_postgres::{GenericClient, Transaction};

/// Joins each event to its incident unless already joined (`crate::soc::apply_batch`), in
/// one statement for the batch rather than two round trips per event: a storm joins every
/// later event of the agent to its incident. The incidents whose evidence grew get their
/// `updated_at` in the same statement.
pub(super) async fn add_evidence(
    tx: &Transaction<'_>,
    appends: &[EvidenceAppend],
    now: i64,
) -> StoreResult<()> {
    if appends.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = appends.iter().map(|a| a.tenant_id.as_str()).collect();
    let incidents: Vec<&str> = appends.iter().map(|a| a.incident_id.as_str()).collect();
    let seqs: Vec<i64> = appends.iter().map(|a| a.evidence.event_seq).collect();
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
        .map(|row| crate::rows::alert(row))
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
        .map(|row| crate::rows::incident(row))
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
    let incident = crate::rows::incident(&row)?;
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
        .map(|row| crate::rows::response_action(row))
        .collect::<StoreResult<_>>()?;
    Ok(IncidentDetail {
        incident,
        evidence,
        response_actions,
    })
}

pub(super) async fn correlator_states<C: GenericClient>(
    client: &C,
) -> StoreResult<Vec<CorrelatorStateRecord>> {
    client
        .query(&prepared(client, CORRELATOR_STATE_SQL).await?, &[])
        .await?
        .iter()
        .map(|row| crate::rows::correlator_state(row))
        .collect()
}
