//! The evidence graph: incident, run or agent → decisions → agent, run, tool, policies,
//! receipts (verified true/false) and response actions. Every graph is built with a fixed
//! number of queries, however many decisions it holds (`evidence::EvidenceReads`).

use crate::auth::{Operator, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::evidence::{Graph, GraphBuilder, incident_graph as build_incident_graph, keyring};
use crate::extract::{Path, QueryParams};
use crate::openapi::{Invalid, NotFound, OperatorErrors, StoreErrors, Unreadable};
use crate::routes::{Cursor, Limit, NEXT_CURSOR_HEADER, page};
use crate::state::SharedState;
use crate::validate::Timestamp;
use aegis_store::{DecisionFilter, IncidentFilter, Page};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use utoipa::IntoParams;

/// Default number of decisions in one graph.
const DEFAULT_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// RFC 3339: only decisions at or after this time.
    #[param(inline)]
    pub since: Option<Timestamp>,
    /// Most decisions in the graph: 1 to 1000, default 200 (`truncated` says when hit).
    #[param(inline)]
    pub limit: Option<Limit>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentGraphQuery {
    /// RFC 3339: only decisions at or after this time.
    #[param(inline)]
    pub since: Option<Timestamp>,
    /// Decisions per page, newest first: 1 to 1000, default 200. When more exist, `truncated`
    /// is true and `X-Next-Cursor` names the next page.
    #[param(inline)]
    pub limit: Option<Limit>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

/// Everything behind one incident: the incident, its response actions and its decisions
/// (newest first, one page of `limit`), each with its agent, run, tool, policies and verified
/// receipt.
#[utoipa::path(get, path = "/v1/graph/incident/{id}", tag = "evidence", params(("id" = String, Path), IncidentGraphQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The incident's evidence graph", body = Graph, headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn incident_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<IncidentGraphQuery>,
) -> ApiResult<(HeaderMap, Json<Graph>)> {
    let page = page(query.limit, query.cursor, DEFAULT_LIMIT);
    let since = Timestamp::millis(query.since);
    let store = state.store.as_ref();
    let detail = store.incident(&operator.tenant, &id).await?;
    let keys = keyring(store).await?;
    let (graph, next_cursor) =
        build_incident_graph(store, &operator.tenant, &detail, &keys, since, page).await?;
    let mut headers = HeaderMap::new();
    if let Some(cursor) = next_cursor {
        headers.insert(NEXT_CURSOR_HEADER, HeaderValue::from(cursor));
    }
    Ok((headers, Json(graph)))
}

/// Every decision of one run (newest first up to the limit).
#[utoipa::path(get, path = "/v1/graph/run/{run_id}", tag = "evidence", params(("run_id" = String, Path), GraphQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The run's evidence graph", body = Graph),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn run_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(run_id): Path<String>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> ApiResult<Json<Graph>> {
    let limit = Limit::or(query.limit, DEFAULT_LIMIT);
    let filter = DecisionFilter {
        run_id: Some(run_id.clone()),
        since_ms: Timestamp::millis(query.since),
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
    let keys = keyring(store).await?;
    let mut graph = GraphBuilder::new(store, &operator.tenant, &keys);
    graph.node("run", &run_id, json!({}));
    graph.decisions(&decisions).await?;
    if truncated {
        graph.truncate();
    }
    Ok(Json(graph.finish()))
}

/// An agent's history: its decisions (newest first up to the limit) and its incidents.
#[utoipa::path(get, path = "/v1/graph/agent/{id}", tag = "evidence", params(("id" = String, Path), GraphQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The agent's evidence graph", body = Graph),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        Invalid,
        NotFound,
    ))]
pub async fn agent_graph(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> ApiResult<Json<Graph>> {
    let limit = Limit::or(query.limit, DEFAULT_LIMIT);
    let since_ms = Timestamp::millis(query.since);
    let store = state.store.as_ref();
    let tenant = &operator.tenant;
    let agent = store.agent(tenant, &id).await?;
    let mut decisions = store
        .list_decisions(
            tenant,
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
    let mut incidents = store
        .list_incidents(
            tenant,
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
    incidents.truncate(limit as usize);
    let incident_ids: Vec<String> = incidents.iter().map(|i| i.id.clone()).collect();
    let shown: HashSet<&str> = incident_ids.iter().map(String::as_str).collect();
    let responses = store.response_actions(tenant, &incident_ids).await?;
    let decision_ids: Vec<String> = decisions.iter().map(|d| d.id.clone()).collect();
    let links = store.evidence_links(tenant, &decision_ids).await?;

    let keys = keyring(store).await?;
    let mut graph = GraphBuilder::new(store, tenant, &keys);
    graph.node(
        "agent",
        &agent.id,
        json!({"name": agent.name, "status": agent.status, "risk_tier": agent.risk_tier}),
    );
    graph.decisions(&decisions).await?;
    for incident in &incidents {
        graph.incident(incident, &responses);
    }
    for link in links
        .iter()
        .filter(|l| shown.contains(l.incident_id.as_str()))
    {
        graph.edge(
            &crate::evidence::node_id("incident", &link.incident_id),
            &crate::evidence::node_id("decision", &link.decision_id),
            "evidence",
        );
    }
    if truncated {
        graph.truncate();
    }
    Ok(Json(graph.finish()))
}
