//! Incidents and alerts raised by the SOC: list, read, acknowledge, close, apply.

use crate::auth::{Operator, Responder, Viewer};
use crate::error::ApiResult;
use crate::evidence::incident_decisions_page;
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::{
    Conflict, Forbidden, Invalid, JsonWriteErrors, NotFound, OperatorErrors, StoreErrors,
    Unreadable,
};
use crate::operations;
use crate::routes::agents::ReasonBody;
use crate::routes::decisions::DecisionView;
use crate::routes::{Cursor, DEFAULT_LIMIT, Limit, Listed, PageQuery, page};
use crate::state::SharedState;
use crate::validate::{Text, Timestamp};
use aegis_core::model::Severity;
use aegis_core::timestamp::format_millis;
use aegis_store::{
    AlertFilter, AlertRecord, EvidenceItem, IncidentDetail, IncidentFilter, IncidentRecord,
    IncidentStep, Page, incident_status,
};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub id: String,
    /// `deny_storm` | `runaway` | `data_exfiltration` | `trust_escalation`.
    pub kind: String,
    pub severity: Severity,
    /// `open` | `acknowledged` | `closed`.
    pub status: String,
    pub agent_id: String,
    pub summary: String,
    pub opened_at: String,
    pub updated_at: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub closed_at: Option<String>,
    pub closed_by: Option<String>,
    pub close_reason: Option<String>,
    /// At autonomy L2 and up: the action `POST /v1/incidents/{id}/apply` carries out.
    #[schema(value_type = Option<Object>)]
    pub recommended_action: Option<Value>,
    pub evidence_count: i64,
    /// Position of the `incident.opened` event in the log.
    pub event_seq: i64,
}

impl From<IncidentRecord> for IncidentView {
    fn from(i: IncidentRecord) -> Self {
        IncidentView {
            id: i.id,
            kind: i.kind,
            severity: i.severity,
            status: i.status,
            agent_id: i.agent_id,
            summary: i.summary,
            opened_at: format_millis(i.opened_at_ms),
            updated_at: format_millis(i.updated_at_ms),
            acknowledged_at: i.acknowledged_at_ms.map(format_millis),
            acknowledged_by: i.acknowledged_by,
            closed_at: i.closed_at_ms.map(format_millis),
            closed_by: i.closed_by,
            close_reason: i.close_reason,
            recommended_action: i.recommended_action,
            evidence_count: i.evidence_count,
            event_seq: i.event_seq,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseActionView {
    pub id: String,
    pub action: String,
    /// `automatic` (response engine) | `applied` (an operator applied the recommendation).
    pub mode: String,
    pub actor: String,
    pub detail: String,
    pub agent_id: String,
    pub event_seq: i64,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentDetailView {
    #[serde(flatten)]
    pub incident: IncidentView,
    /// A bounded view of the evidence, however much there is (`evidence_count`); page
    /// through all of it with `GET /v1/incidents/{id}/decisions`.
    pub evidence: EvidenceSummaryView,
    pub response_actions: Vec<ResponseActionView>,
}

/// The first and last evidence of an incident and the items at either end.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceSummaryView {
    pub first_seq: Option<i64>,
    pub first_at: Option<String>,
    pub last_seq: Option<i64>,
    pub last_at: Option<String>,
    /// The first 25 items, in log order.
    pub first: Vec<EvidenceItemView>,
    /// The most recent 25 items not in `first`, in log order.
    pub recent: Vec<EvidenceItemView>,
    /// How many items are in neither list.
    pub omitted: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceItemView {
    pub event_seq: i64,
    pub decision_id: Option<String>,
    pub recorded_at: String,
}

impl From<EvidenceItem> for EvidenceItemView {
    fn from(e: EvidenceItem) -> Self {
        EvidenceItemView {
            event_seq: e.event_seq,
            decision_id: e.decision_id,
            recorded_at: format_millis(e.recorded_at_ms),
        }
    }
}

impl From<IncidentDetail> for IncidentDetailView {
    fn from(d: IncidentDetail) -> Self {
        let summary = &d.evidence;
        let evidence = EvidenceSummaryView {
            first_seq: summary.earliest().map(|e| e.event_seq),
            first_at: summary.earliest().map(|e| format_millis(e.recorded_at_ms)),
            last_seq: summary.latest().map(|e| e.event_seq),
            last_at: summary.latest().map(|e| format_millis(e.recorded_at_ms)),
            omitted: d.incident.evidence_count
                - (summary.first.len() + summary.recent.len()) as i64,
            first: d.evidence.first.into_iter().map(Into::into).collect(),
            recent: d.evidence.recent.into_iter().map(Into::into).collect(),
        };
        IncidentDetailView {
            incident: d.incident.into(),
            evidence,
            response_actions: d
                .response_actions
                .into_iter()
                .map(|r| ResponseActionView {
                    id: r.id,
                    action: r.action,
                    mode: r.mode,
                    actor: r.actor,
                    detail: r.detail,
                    agent_id: r.agent_id,
                    event_seq: r.event_seq,
                    created_at: format_millis(r.created_at_ms),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    #[param(inline)]
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub agent_id: Option<String>,
    /// RFC 3339; opened at or after.
    #[param(inline)]
    pub since: Option<Timestamp>,
    /// RFC 3339; opened before.
    #[param(inline)]
    pub until: Option<Timestamp>,
    #[param(inline)]
    pub limit: Option<Limit>,
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

impl IncidentQuery {
    /// The store filter of this query (reading the page's rows and the next one's first), and
    /// the page.
    pub fn into_filter(self) -> (IncidentFilter, Page) {
        let page = page(self.limit, self.cursor, DEFAULT_LIMIT);
        let filter = IncidentFilter {
            since_ms: Timestamp::millis(self.since),
            until_ms: Timestamp::millis(self.until),
            status: self.status.map(|status| status.as_str().to_owned()),
            severity: self.severity,
            kind: self.kind,
            agent_id: self.agent_id,
            page: page.with_next_row(),
        };
        (filter, page)
    }
}

/// The `status` filter of incidents.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Closed,
}

impl IncidentStatus {
    pub const ALL: [IncidentStatus; 3] = [
        IncidentStatus::Open,
        IncidentStatus::Acknowledged,
        IncidentStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => incident_status::OPEN,
            IncidentStatus::Acknowledged => incident_status::ACKNOWLEDGED,
            IncidentStatus::Closed => incident_status::CLOSED,
        }
    }
}

/// Incidents of this tenant, newest first: a bare JSON array.
#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", params(IncidentQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Incidents, newest first", body = [IncidentView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_incidents(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<IncidentQuery>,
) -> ApiResult<Listed<IncidentView>> {
    let (filter, page) = query.into_filter();
    let rows = state.store.list_incidents(&operator.tenant, filter).await?;
    Ok(Listed::paged(
        rows,
        page,
        |i| i.event_seq,
        IncidentView::from,
    ))
}

/// One incident with the seqs and decisions behind it and the response actions taken.
#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The incident", body = IncidentDetailView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_incident(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentDetailView>> {
    Ok(Json(
        state.store.incident(&operator.tenant, &id).await?.into(),
    ))
}

/// Every decision behind an incident, newest first: a bare JSON array of decisions paged
/// like `GET /v1/decisions` (`X-Next-Cursor`).
#[utoipa::path(get, path = "/v1/incidents/{id}/decisions", tag = "incidents", params(("id" = String, Path), PageQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The incident's decisions, newest first", body = [DecisionView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn list_incident_decisions(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Listed<DecisionView>> {
    let (decisions, next_cursor) = incident_decisions_page(
        state.store.as_ref(),
        &operator.tenant,
        &id,
        None,
        query.page(),
    )
    .await?;
    Ok(Listed {
        items: decisions.into_iter().map(DecisionView::from).collect(),
        next_cursor,
    })
}

/// Acknowledge an open incident (409 otherwise).
#[utoipa::path(post, path = "/v1/incidents/{id}/ack", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The acknowledged incident", body = IncidentDetailView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
        Conflict,
    ))]
pub async fn ack_incident(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentDetailView>> {
    step(&state, &operator, &id, IncidentStep::Acknowledge).await
}

/// Close an incident, recording who and why (409 if already closed).
#[utoipa::path(post, path = "/v1/incidents/{id}/close", tag = "incidents", params(("id" = String, Path)), request_body = Option<ReasonBody>,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The closed incident", body = IncidentDetailView),
        JsonWriteErrors,
        NotFound,
        Conflict,
    ))]
pub async fn close_incident(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<IncidentDetailView>> {
    step(
        &state,
        &operator,
        &id,
        IncidentStep::Close {
            reason: body.reason.map(Text::into_string),
        },
    )
    .await
}

/// Carry out the incident's recommended action (autonomy L2).
#[utoipa::path(post, path = "/v1/incidents/{id}/apply", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The incident with the recommended response applied", body = IncidentDetailView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
        Conflict,
    ))]
pub async fn apply_recommendation(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentDetailView>> {
    step(&state, &operator, &id, IncidentStep::ApplyRecommendation).await
}

async fn step(
    state: &SharedState,
    operator: &Operator<Responder>,
    id: &str,
    step: IncidentStep,
) -> ApiResult<Json<IncidentDetailView>> {
    operations::step_incident(state, operator, id, step)
        .await
        .map(|detail| Json(detail.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: String,
    pub kind: String,
    pub severity: Severity,
    pub agent_id: Option<String>,
    pub summary: String,
    /// The event that raised it.
    pub source_seq: i64,
    pub event_seq: i64,
    pub created_at: String,
    /// Detections it stands for: repeats of its kind for its agent within a minute of it
    /// count into it instead of raising alerts of their own.
    pub count: i64,
}

impl From<AlertRecord> for AlertView {
    fn from(a: AlertRecord) -> Self {
        AlertView {
            id: a.id,
            kind: a.kind,
            severity: a.severity,
            agent_id: a.agent_id,
            summary: a.summary,
            source_seq: a.source_seq,
            event_seq: a.event_seq,
            created_at: format_millis(a.created_at_ms),
            count: a.count,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub agent_id: Option<String>,
    #[param(inline)]
    pub since: Option<Timestamp>,
    #[param(inline)]
    pub until: Option<Timestamp>,
    #[param(inline)]
    pub limit: Option<Limit>,
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

/// Alerts raised by detection rules, newest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "incidents", params(AlertQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Alerts, newest first", body = [AlertView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_alerts(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<AlertQuery>,
) -> ApiResult<Listed<AlertView>> {
    let page = page(query.limit, query.cursor, DEFAULT_LIMIT);
    let filter = AlertFilter {
        since_ms: Timestamp::millis(query.since),
        until_ms: Timestamp::millis(query.until),
        severity: query.severity,
        kind: query.kind,
        agent_id: query.agent_id,
        page: page.with_next_row(),
    };
    let rows = state.store.list_alerts(&operator.tenant, filter).await?;
    Ok(Listed::paged(rows, page, |a| a.event_seq, AlertView::from))
}
