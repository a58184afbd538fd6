//! Incident narrative and the self-contained evidence bundle.
//!
//! A narrative is stored beside its incident with the incident state it describes (its
//! basis: status, evidence count, latest evidence and response). Reads serve the stored one
//! while the incident still has that basis, so a viewer's read never writes and never calls
//! the LLM. Only a responder writes one: `POST .../narrate`, or a `GET` that finds none
//! current (as the runbook does). A viewer who finds none current gets the deterministic
//! narrative of the incident as it stands, computed on the spot and not stored.

use crate::auth::{Operator, Responder, Viewer};
use crate::error::ApiResult;
use crate::evidence::{
    NarrativeInput, deterministic_narrative, incident_decisions_page, keyring, llm_analysis,
    verify_stored_receipts, with_llm_analysis,
};
use crate::extract::Path;
use crate::openapi::{Forbidden, NotFound, OperatorErrors, StoreErrors, Unreadable};
use crate::routes::incidents::IncidentDetailView;
use crate::state::SharedState;
use aegis_core::model::Role;
use aegis_core::receipt::ExportedReceipt;
use aegis_core::timestamp::format_millis;
use aegis_store::{DecisionRecord, IncidentDetail, NarrativeRecord, Page, TenantId};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Most decisions a narrative or a bundle covers (the most recent ones).
const MAX_DECISIONS: u32 = 1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct NarrativeView {
    pub incident_id: String,
    /// Markdown. Strings the gateway did not write are shown as code spans; an LLM's analysis
    /// is a plain-text code block after the deterministic narrative.
    pub narrative: String,
    /// `deterministic`, `deterministic (llm fallback)` or `llm:<model>`.
    pub generated_by: String,
    pub generated_at: String,
    /// Ids the narrative is built from.
    pub evidence: Vec<String>,
}

impl From<NarrativeRecord> for NarrativeView {
    fn from(n: NarrativeRecord) -> Self {
        NarrativeView {
            incident_id: n.incident_id,
            narrative: n.narrative,
            generated_by: n.generated_by,
            generated_at: format_millis(n.generated_at_ms),
            evidence: n.evidence,
        }
    }
}

/// The most recent decisions behind an incident (at most [`MAX_DECISIONS`]), in log order,
/// and whether older ones were left out.
async fn recent_decisions(
    state: &SharedState,
    tenant: &TenantId,
    incident_id: &str,
) -> ApiResult<(Vec<DecisionRecord>, bool)> {
    let page = Page {
        before: None,
        limit: MAX_DECISIONS,
    };
    let (mut decisions, older) =
        incident_decisions_page(state.store.as_ref(), tenant, incident_id, None, page).await?;
    decisions.reverse();
    Ok((decisions, older.is_some()))
}

/// A narrative of the incident as it stands, written now: deterministic, followed by the
/// LLM's analysis when `ask_llm` and a narrator is configured.
async fn write_narrative(
    state: &SharedState,
    tenant: &TenantId,
    detail: &IncidentDetail,
    ask_llm: bool,
) -> ApiResult<NarrativeRecord> {
    let (decisions, _) = recent_decisions(state, tenant, &detail.incident.id).await?;
    let input = NarrativeInput {
        detail,
        decisions: &decisions,
        public_url: &state.settings.public_url,
    };
    let (text, evidence) = deterministic_narrative(&input);
    let (narrative, generated_by) = match state.settings.narrator.as_ref().filter(|_| ask_llm) {
        Some(config) => match llm_analysis(config, &input).await {
            Some(analysis) => (
                with_llm_analysis(&text, &config.model, &analysis),
                format!("llm:{}", config.model),
            ),
            None => (text, "deterministic (llm fallback)".to_owned()),
        },
        None => (text, "deterministic".to_owned()),
    };
    Ok(NarrativeRecord {
        incident_id: detail.incident.id.clone(),
        generated_by,
        narrative,
        evidence,
        generated_at_ms: crate::now_ms(),
        basis: Some(detail.narrative_basis()),
    })
}

/// The stored narrative while the incident still has the basis it was written from.
async fn current_narrative(
    state: &SharedState,
    tenant: &TenantId,
    detail: &IncidentDetail,
) -> ApiResult<Option<NarrativeRecord>> {
    let stored = state.store.narrative(tenant, &detail.incident.id).await?;
    let basis = detail.narrative_basis();
    Ok(stored.filter(|n| n.basis.as_ref() == Some(&basis)))
}

/// Writes a new narrative (with the LLM when configured) and stores it.
async fn renew_narrative(
    state: &SharedState,
    tenant: &TenantId,
    detail: &IncidentDetail,
) -> ApiResult<NarrativeRecord> {
    let record = write_narrative(state, tenant, detail, true).await?;
    state.store.put_narrative(tenant, record.clone()).await?;
    Ok(record)
}

/// The narrative an operator reading the incident gets: the stored one while the incident is
/// unchanged; otherwise a responder's read writes and stores a new one, and a viewer's gets
/// the deterministic narrative, not stored (a viewer's read never writes or calls the LLM).
/// The API's `GET .../narrate` and the console's incident page both read it here.
pub async fn incident_narrative(
    state: &SharedState,
    operator: &Operator<Viewer>,
    detail: &IncidentDetail,
) -> ApiResult<NarrativeRecord> {
    let tenant = &operator.tenant;
    Ok(match current_narrative(state, tenant, detail).await? {
        Some(stored) => stored,
        None if operator.role.grants(Role::Responder) => {
            renew_narrative(state, tenant, detail).await?
        }
        None => write_narrative(state, tenant, detail, false).await?,
    })
}

/// A root-cause narrative built only from the incident's recorded evidence. The stored one
/// while the incident is unchanged; otherwise a responder's request writes and stores a new
/// one (with `AEGIS_NARRATOR_URL`, an OpenAI-compatible endpoint adds an advisory analysis of
/// redacted evidence; the deterministic text alone on error or timeout), and a viewer's gets
/// the deterministic narrative, not stored. A viewer's request never writes or calls the LLM.
#[utoipa::path(get, path = "/v1/incidents/{id}/narrate", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The stored narrative", body = NarrativeView),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn narrate(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<NarrativeView>> {
    let detail = state.store.incident(&operator.tenant, &id).await?;
    let narrative = incident_narrative(&state, &operator, &detail).await?;
    Ok(Json(narrative.into()))
}

/// Writes and stores a new narrative of the incident as it stands, whether or not the
/// stored one is current (with the LLM's analysis when a narrator is configured).
#[utoipa::path(post, path = "/v1/incidents/{id}/narrate", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "A fresh narrative", body = NarrativeView),
        OperatorErrors,
        StoreErrors,
        Forbidden,
        Unreadable,
        NotFound,
    ))]
pub async fn renarrate(
    State(state): State<SharedState>,
    operator: Operator<Responder>,
    Path(id): Path<String>,
) -> ApiResult<Json<NarrativeView>> {
    let tenant = &operator.tenant;
    let detail = state.store.incident(tenant, &id).await?;
    Ok(Json(renew_narrative(&state, tenant, &detail).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceBundle {
    pub bundle_version: u32,
    pub generated_at: String,
    pub incident: IncidentDetailView,
    /// The most recent decisions behind the incident (up to 1000), in log order.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<Value>,
    /// One object per receipt in the line format of `aegis receipts export` (write each as a
    /// line to check them with `aegis receipts verify FILE`).
    #[schema(value_type = Vec<Object>)]
    pub receipts: Vec<ExportedReceipt>,
    /// Per receipt id: whether the gateway verified it in place, and why not.
    #[schema(value_type = Object)]
    pub receipt_verification: HashMap<String, Value>,
    #[schema(value_type = Vec<Object>)]
    pub public_keys: Vec<Value>,
    /// The stored narrative while the incident is unchanged, else the deterministic one of
    /// the incident as it stands (not stored).
    pub narrative: NarrativeView,
    /// Whether older decisions exist than the bundle holds (1000).
    pub truncated: bool,
}

/// One self-contained JSON bundle of everything behind an incident. Reads only.
#[utoipa::path(get, path = "/v1/incidents/{id}/evidence", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The incident's evidence bundle", body = EvidenceBundle),
        OperatorErrors,
        StoreErrors,
        Unreadable,
        NotFound,
    ))]
pub async fn evidence_bundle(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<EvidenceBundle>> {
    let store = state.store.as_ref();
    let tenant = &operator.tenant;
    let detail = store.incident(tenant, &id).await?;
    let (decisions, truncated) = recent_decisions(&state, tenant, &id).await?;
    let key_records = store.signing_keys().await?;
    let hex_keys: HashMap<&str, &str> = key_records
        .iter()
        .map(|k| (k.key_id.as_str(), k.public_key.as_str()))
        .collect();
    let keys = keyring(store).await?;
    let receipt_ids: Vec<String> = decisions.iter().map(|d| d.receipt_id.clone()).collect();
    let stored_receipts = store.receipts_by_id(tenant, &receipt_ids).await?;
    let checks = verify_stored_receipts(store, tenant, &stored_receipts, &keys).await?;
    let mut receipts = Vec::new();
    let mut receipt_verification = HashMap::new();
    for (receipt, check) in stored_receipts.into_iter().zip(checks) {
        receipt_verification.insert(
            receipt.body.id.clone(),
            json!({"verified": check.verdict.is_ok(), "reason": check.verdict.err().map(|b| b.kind.to_string())}),
        );
        if let Some(checkpoint) = check.checkpoint {
            let public_key = hex_keys
                .get(checkpoint.body.key_id.as_str())
                .map(|k| (*k).to_owned())
                .unwrap_or_default();
            receipts.push(ExportedReceipt {
                receipt,
                checkpoint,
                public_key,
            });
        }
    }
    let narrative = match current_narrative(&state, tenant, &detail).await? {
        Some(stored) => stored,
        None => write_narrative(&state, tenant, &detail, false).await?,
    };
    let decisions = decisions
        .into_iter()
        .map(|d| {
            serde_json::to_value(crate::routes::decisions::DecisionView::from(d))
                .unwrap_or(Value::Null)
        })
        .collect();
    Ok(Json(EvidenceBundle {
        bundle_version: 1,
        generated_at: format_millis(crate::now_ms()),
        incident: detail.into(),
        decisions,
        receipts,
        receipt_verification,
        public_keys: key_records
            .into_iter()
            .map(|k| json!({"key_id": k.key_id, "public_key": k.public_key, "created_at": format_millis(k.created_at_ms)}))
            .collect(),
        narrative: narrative.into(),
        truncated,
    }))
}
