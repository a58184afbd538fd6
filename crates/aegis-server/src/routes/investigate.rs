//! Incident narrative and the self-contained evidence bundle.

use crate::auth::{Operator, Viewer};
use crate::error::{ApiResult, ErrorBody};
use crate::evidence::{
    NarrativeInput, covering_checkpoint, deterministic_narrative, keyring, llm_narrative,
    verify_stored_receipt,
};
use crate::routes::graph::incident_decisions;
use crate::routes::incidents::IncidentDetailView;
use crate::state::SharedState;
use aegis_core::receipt::ExportedReceipt;
use aegis_core::timestamp::format_millis;
use aegis_store::{NarrativeRecord, TenantId};
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Most decisions a narrative or a bundle covers.
const MAX_DECISIONS: u32 = 1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct NarrativeView {
    pub incident_id: String,
    /// Markdown.
    pub narrative: String,
    /// `deterministic`, or `llm:<model>` (advisory text from the configured endpoint).
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

async fn narrate_incident(
    state: &SharedState,
    tenant: &TenantId,
    id: &str,
) -> ApiResult<NarrativeRecord> {
    let store = state.store.as_ref();
    let detail = store.incident(tenant, id).await?;
    let (decisions, _) = incident_decisions(
        store,
        tenant,
        detail
            .evidence
            .iter()
            .filter_map(|e| e.decision_id.as_deref()),
        None,
        MAX_DECISIONS,
    )
    .await?;
    let input = NarrativeInput {
        detail: &detail,
        decisions: &decisions,
    };
    let (text, evidence) = deterministic_narrative(&input);
    let (narrative, generated_by) = match &state.settings.narrator {
        Some(config) => match llm_narrative(config, &input).await {
            Some(text) => (text, format!("llm:{}", config.model)),
            None => (text, "deterministic (llm fallback)".to_owned()),
        },
        None => (text, "deterministic".to_owned()),
    };
    let record = NarrativeRecord {
        incident_id: detail.incident.id.clone(),
        generated_by,
        narrative,
        evidence,
        generated_at_ms: crate::now_ms(),
    };
    store.put_narrative(tenant, record.clone()).await?;
    Ok(record)
}

/// A root-cause narrative built only from the incident's recorded evidence. Deterministic by
/// default; with `AEGIS_NARRATOR_URL` an OpenAI-compatible endpoint writes it from redacted
/// evidence (fallback to the deterministic text on error or timeout). Advisory only.
#[utoipa::path(get, path = "/v1/incidents/{id}/narrate", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses((status = 200, body = NarrativeView), (status = 404, body = ErrorBody)))]
pub async fn narrate(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<NarrativeView>> {
    Ok(Json(
        narrate_incident(&state, &operator.tenant, &id)
            .await?
            .into(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceBundle {
    pub bundle_version: u32,
    pub generated_at: String,
    pub incident: IncidentDetailView,
    /// The decisions behind the incident, in log order.
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
    /// The latest stored narrative, or a fresh deterministic one.
    pub narrative: NarrativeView,
    /// Whether more decisions exist than the bundle holds (1000).
    pub truncated: bool,
}

/// One self-contained JSON bundle of everything behind an incident.
#[utoipa::path(get, path = "/v1/incidents/{id}/evidence", tag = "incidents", params(("id" = String, Path)),
    security(("operator_key" = [])),
    responses((status = 200, body = EvidenceBundle), (status = 404, body = ErrorBody)))]
pub async fn evidence_bundle(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<EvidenceBundle>> {
    let store = state.store.as_ref();
    let tenant = &operator.tenant;
    let detail = store.incident(tenant, &id).await?;
    let (decisions, truncated) = incident_decisions(
        store,
        tenant,
        detail
            .evidence
            .iter()
            .filter_map(|e| e.decision_id.as_deref()),
        None,
        MAX_DECISIONS,
    )
    .await?;
    let key_records = store.signing_keys().await?;
    let hex_keys: HashMap<&str, &str> = key_records
        .iter()
        .map(|k| (k.key_id.as_str(), k.public_key.as_str()))
        .collect();
    let keys = keyring(store).await?;
    let mut receipts = Vec::new();
    let mut receipt_verification = HashMap::new();
    for d in &decisions {
        let receipt = store.receipt(tenant, &d.receipt_id).await?;
        let verdict = verify_stored_receipt(store, tenant, &receipt, &keys).await?;
        receipt_verification.insert(
            receipt.body.id.clone(),
            json!({"verified": verdict.is_ok(), "reason": verdict.err().map(|b| b.kind.to_string())}),
        );
        if let Some(checkpoint) = covering_checkpoint(store, tenant, receipt.body.seq).await? {
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
    let narrative = match store.narrative(tenant, &id).await? {
        Some(n) => n,
        None => narrate_incident(&state, tenant, &id).await?,
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
