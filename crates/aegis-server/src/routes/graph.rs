//! The evidence graph: incident, run or agent → decisions → agent, run, tool, policies,
//! receipts (verified true/false) and response actions.

use crate::auth::{Operator, Viewer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::evidence::{Graph, GraphBuilder};
use crate::extract::QueryParams;
use crate::state::SharedState;
use crate::validate;
use aegis_store::{DecisionFilter, DecisionRecord, IncidentFilter, Page, Store, TenantId};
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

/// Default and largest number of decisions in one graph.
const DEFAULT_LIMIT: u32 = 200;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
pub struct GraphQuery {
    /// RFC 3339: only decisions at or after this time.
    pub since: Option<String>,
    /// Most decisions in the graph: 1 to 1000, default 200 (`truncated` says when hit).
    pub limit: Option<u32>,
}

impl GraphQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                "must be between 1 and 1000",
            )),
        }
    }
}

/// The decisions behind an incident, in log order (at most `limit`, and whether more exist).
pub async fn incident_decisions(
    store: &dyn Store,
    tenant: &TenantId,
    decision_ids: impl Iterator<Item = &str>,
    since_ms: Option<i64>,
    limit: u32,
) -> ApiResult<(Vec<DecisionRecord>, bool)> {
    let mut decisions = Vec::new();
    for id in decision_ids {
        let decision = store.decision(tenant, id).await?;
        if since_ms.is_some_and(|since| decision.created_at_ms < since) {
            continue;
        }
        if decisions.len() == limit as usize {
            return Ok((decisions, true));
        }
        decisions.push(decision);
    }
    Ok((decisions, false))
}

/// Everything behind one incident.
#[utoipa::path(get, path = "/v1/graph/incident/{id}", tag = "evidence", params(("id" = String, Path), GraphQuery),
    security(("operator_key" = [])),
    responses((status = 200, body = Graph), (status = 404, body = ErrorBody)))]
pub async fn incident_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> ApiResult<Json<Graph>> {
    let limit = query.limit()?;
    let since = validate::timestamp("since", query.since.as_deref())?;
    let store = state.store.as_ref();
    let detail = store.incident(&operator.tenant, &id).await?;
    let (decisions, truncated) = incident_decisions(
        store,
        &operator.tenant,
        detail
            .evidence
            .iter()
            .filter_map(|e| e.decision_id.as_deref()),
        since,
        limit,
    )
    .await?;
    let mut graph = GraphBuilder::new(store, &operator.tenant).await?;
    let incident = graph.incident(&detail);
    for d in &decisions {
        let decision = graph.decision(d).await?;
        graph.edge(&incident, &decision, "evidence");
    }
    if truncated {
        graph.truncate();
    }
    Ok(Json(graph.finish()))
}

/// Every decision of one run (newest first up to the limit).
#[utoipa::path(get, path = "/v1/graph/run/{run_id}", tag = "evidence", params(("run_id" = String, Path), GraphQuery),
    security(("operator_key" = [])),
    responses((status = 200, body = Graph), (status = 404, body = ErrorBody)))]
pub async fn run_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(run_id): Path<String>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> ApiResult<Json<Graph>> {
    let limit = query.limit()?;
    let filter = DecisionFilter {
        run_id: Some(run_id.clone()),
        since_ms: validate::timestamp("since", query.since.as_deref())?,
        page: Page {
            before: None,
            limit: limit + 1,
        },
        ..DecisionFilter::default()
    };
    let store = state.store.as_ref();
    let mut decisions = store.list_decisions(&operator.tenant, filter).await?;
    if decisions.is_empty() {
        return Err(ApiError::not_found("run"));
    }
    let truncated = decisions.len() > limit as usize;
    decisions.truncate(limit as usize);
    let mut graph = GraphBuilder::new(store, &operator.tenant).await?;
    graph.node("run", &run_id, json!({}));
    for d in &decisions {
        graph.decision(d).await?;
    }
    if truncated {
        graph.truncate();
    }
    Ok(Json(graph.finish()))
}

/// An agent's history: its decisions (newest first up to the limit) and its incidents.
#[utoipa::path(get, path = "/v1/graph/agent/{id}", tag = "evidence", params(("id" = String, Path), GraphQuery),
    security(("operator_key" = [])),
    responses((status = 200, body = Graph), (status = 404, body = ErrorBody)))]
pub async fn agent_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> ApiResult<Json<Graph>> {
    let limit = query.limit()?;
    let since_ms = validate::timestamp("since", query.since.as_deref())?;
    let store = state.store.as_ref();
    let agent = store.agent(&operator.tenant, &id).await?;
    let mut decisions = store
        .list_decisions(
            &operator.tenant,
            DecisionFilter {
                agent_id: Some(id.clone()),
                since_ms,
                page: Page {
                    before: None,
                    limit: limit + 1,
                },
                ..DecisionFilter::default()
            },
        )
        .await?;
    let mut truncated = decisions.len() > limit as usize;
    decisions.truncate(limit as usize);
    let incidents = store
        .list_incidents(
            &operator.tenant,
            IncidentFilter {
                agent_id: Some(id.clone()),
                since_ms,
                page: Page {
                    before: None,
                    limit: limit + 1,
                },
                ..IncidentFilter::default()
            },
        )
        .await?;
    truncated |= incidents.len() > limit as usize;

    let mut graph = GraphBuilder::new(store, &operator.tenant).await?;
    graph.node(
        "agent",
        &agent.id,
        json!({"name": agent.name, "status": agent.status, "risk_tier": agent.risk_tier}),
    );
    let mut shown = std::collections::HashSet::new();
    for d in &decisions {
        graph.decision(d).await?;
        shown.insert(d.id.clone());
    }
    for incident in incidents.iter().take(limit as usize) {
        let detail = store.incident(&operator.tenant, &incident.id).await?;
        let node = graph.incident(&detail);
        for e in &detail.evidence {
            if let Some(decision) = e.decision_id.as_deref().filter(|d| shown.contains(*d)) {
                graph.edge(
                    &node,
                    &crate::evidence::node_id("decision", decision),
                    "evidence",
                );
            }
        }
    }
    if truncated {
        graph.truncate();
    }
    Ok(Json(graph.finish()))
}
