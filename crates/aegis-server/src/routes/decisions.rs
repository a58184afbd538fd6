//! The decision log, read side.

use crate::auth::{Operator, Viewer};
use crate::error::ApiResult;
use crate::extract::{Path, QueryParams};
use crate::openapi::{Invalid, NotFound, OperatorErrors, StoreErrors, Unreadable};
use crate::routes::{Cursor, DEFAULT_LIMIT, Limit, Listed, page};
use crate::state::SharedState;
use crate::validate::Timestamp;
use aegis_core::model::{ActionRisk, SourceTrust, Verdict};
use aegis_core::timestamp::format_millis;
use aegis_store::{DecisionFilter, DecisionRecord};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub decision_id: String,
    pub agent_id: String,
    pub decision: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub source_trust: SourceTrust,
    pub action_hash: String,
    pub request_id: Option<String>,
    pub run_id: Option<String>,
    pub trace_id: Option<String>,
    pub parent_run_id: Option<String>,
    pub receipt_id: String,
    pub event_seq: i64,
    pub created_at: String,
}

impl From<DecisionRecord> for DecisionView {
    fn from(d: DecisionRecord) -> Self {
        DecisionView {
            decision_id: d.id,
            agent_id: d.agent_id,
            decision: d.verdict,
            risk_score: d.risk_score,
            reason: d.reason,
            matched_policies: d.matched_policies,
            tool: d.tool,
            action: d.action,
            resource: d.resource,
            mutates_state: d.mutates_state,
            risk: d.risk,
            source_trust: d.source_trust,
            action_hash: d.action_hash,
            request_id: d.request_id,
            run_id: d.trace.run_id,
            trace_id: d.trace.trace_id,
            parent_run_id: d.trace.parent_run_id,
            receipt_id: d.receipt_id,
            event_seq: d.event_seq,
            created_at: format_millis(d.created_at_ms),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DecisionQuery {
    pub agent_id: Option<String>,
    /// `allow` | `deny` | `require_approval`.
    pub decision: Option<Verdict>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub run_id: Option<String>,
    /// RFC 3339; decisions at or after.
    #[param(inline)]
    pub since: Option<Timestamp>,
    /// RFC 3339; decisions before.
    #[param(inline)]
    pub until: Option<Timestamp>,
    /// 1 to 1000, default 50.
    #[param(inline)]
    pub limit: Option<Limit>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

impl DecisionQuery {
    /// The store filter of this query (reading the page's rows and the next one's first), and
    /// the page.
    pub fn into_filter(self) -> (DecisionFilter, aegis_store::Page) {
        let page = page(self.limit, self.cursor, DEFAULT_LIMIT);
        let filter = DecisionFilter {
            since_ms: Timestamp::millis(self.since),
            until_ms: Timestamp::millis(self.until),
            agent_id: self.agent_id,
            verdict: self.decision,
            tool: self.tool,
            action: self.action,
            run_id: self.run_id,
            page: page.with_next_row(),
        };
        (filter, page)
    }
}

/// Decisions of this tenant, newest first, filtered.
#[utoipa::path(get, path = "/v1/decisions", tag = "decisions", params(DecisionQuery),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Decisions, newest first", body = [DecisionView], headers(("X-Next-Cursor" = String, description = "The cursor of the next page, when there is one"))),
        OperatorErrors,
        StoreErrors,
        Invalid,
    ))]
pub async fn list_decisions(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    QueryParams(query): QueryParams<DecisionQuery>,
) -> ApiResult<Listed<DecisionView>> {
    let (filter, page) = query.into_filter();
    let rows = state.store.list_decisions(&operator.tenant, filter).await?;
    Ok(Listed::paged(
        rows,
        page,
        |d| d.event_seq,
        DecisionView::from,
    ))
}

/// One decision.
#[utoipa::path(get, path = "/v1/decisions/{id}", tag = "decisions", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The decision", body = DecisionView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn get_decision(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<DecisionView>> {
    Ok(Json(
        state.store.decision(&operator.tenant, &id).await?.into(),
    ))
}
