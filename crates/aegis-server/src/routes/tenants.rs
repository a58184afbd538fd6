//! Tenant settings.

use crate::auth::{Admin, Operator, Viewer};
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::openapi::{JsonWriteErrors, OperatorErrors, StoreErrors};
use crate::operations;
use crate::state::SharedState;
use crate::validate::{in_range, optional_whole, whole};
use aegis_core::approval;
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::model::AutonomyLevel;
use aegis_store::approvals::ApprovalSettings;
use aegis_store::archive::MAX_RETENTION_DAYS;
use aegis_store::{DenyStormOverride, RiskEscalation, TenantSettings};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskEscalationBody {
    /// Denies within the window that step the agent's risk tier up one level
    /// (`operations::MAX_ESCALATION_THRESHOLD`).
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "whole")]
    pub denial_threshold: u32,
    /// Length of the trailing window in minutes
    /// (`operations::MAX_ESCALATION_WINDOW_MINUTES`).
    #[schema(minimum = 1, maximum = 10080)]
    #[serde(deserialize_with = "whole")]
    pub window_minutes: u32,
}

impl From<TenantSettings> for RiskEscalationBody {
    fn from(settings: TenantSettings) -> Self {
        RiskEscalationBody {
            denial_threshold: settings.risk_escalation.denial_threshold,
            window_minutes: settings.risk_escalation.window_minutes,
        }
    }
}

/// The tenant's risk-tier escalation settings.
#[utoipa::path(get, path = "/v1/tenants/risk-escalation", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The settings", body = RiskEscalationBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_risk_escalation(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<RiskEscalationBody>> {
    Ok(Json(state.store.tenant(&operator.tenant).await?.into()))
}

/// Change the escalation settings (admin).
#[utoipa::path(put, path = "/v1/tenants/risk-escalation", tag = "tenants", request_body = RiskEscalationBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The settings now in force", body = RiskEscalationBody),
        JsonWriteErrors,
    ))]
pub async fn put_risk_escalation(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<RiskEscalationBody>,
) -> ApiResult<Json<RiskEscalationBody>> {
    let escalation = RiskEscalation {
        denial_threshold: body.denial_threshold,
        window_minutes: body.window_minutes,
    };
    let stored = operations::set_risk_escalation(&state, &operator, escalation).await?;
    Ok(Json(stored.into()))
}

/// Where the effective autonomy level came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutonomySource {
    /// `tenants.soc_autonomy_level`.
    Tenant,
    /// `AEGIS_SOC_AUTONOMY_LEVEL`.
    Env,
    /// Neither: `L1`.
    Default,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SocAutonomyView {
    /// The effective level.
    pub level: AutonomyLevel,
    pub source: AutonomySource,
    /// The tenant's stored override, or null.
    #[serde(rename = "override")]
    pub override_level: Option<AutonomyLevel>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SocAutonomyBody {
    /// `L0`…`L4`, or null to clear the tenant override.
    #[schema(required = true)]
    #[serde(deserialize_with = "Option::deserialize")]
    pub level: Option<AutonomyLevel>,
}

/// The level in force for a tenant with `override_level`: its own, else the environment's,
/// else `L1`.
pub fn autonomy_view(
    state: &SharedState,
    override_level: Option<AutonomyLevel>,
) -> SocAutonomyView {
    let (level, source) = match (override_level, state.settings.env_autonomy) {
        (Some(level), _) => (level, AutonomySource::Tenant),
        (None, Some(level)) => (level, AutonomySource::Env),
        (None, None) => (AutonomyLevel::L1, AutonomySource::Default),
    };
    SocAutonomyView {
        level,
        source,
        override_level,
    }
}

/// The SOC autonomy level in force for this tenant, and where it comes from.
#[utoipa::path(get, path = "/v1/tenants/soc-autonomy", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The level in force", body = SocAutonomyView),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_soc_autonomy(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<SocAutonomyView>> {
    let settings = state.store.tenant(&operator.tenant).await?;
    Ok(Json(autonomy_view(&state, settings.autonomy_override)))
}

/// Set (or clear, with null) the tenant's autonomy level (admin).
#[utoipa::path(put, path = "/v1/tenants/soc-autonomy", tag = "tenants", request_body = SocAutonomyBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The level now in force", body = SocAutonomyView),
        JsonWriteErrors,
    ))]
pub async fn put_soc_autonomy(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<SocAutonomyBody>,
) -> ApiResult<Json<SocAutonomyView>> {
    let settings = state
        .store
        .set_autonomy_override(&operator.tenant, body.level, &operator.actor())
        .await?;
    Ok(Json(autonomy_view(&state, settings.autonomy_override)))
}

/// Both fields are required (null where the default applies; `optional_whole` does not
/// default a missing field): a PUT replaces the whole
/// override, so a forgotten field never clears a setting silently.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyStormBody {
    /// Denies in the window that open a deny_storm incident (`MAX_BURST_THRESHOLD`); null
    /// for the gateway default. The incident then lasts until fewer than half as many are left
    /// in the window.
    #[schema(minimum = 1, maximum = 1000, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub threshold: Option<u32>,
    /// Trailing window in seconds (`operations::MAX_DENY_STORM_WINDOW_SECS`); null for the
    /// gateway default.
    #[schema(minimum = 1, maximum = 86400, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub window_secs: Option<u32>,
}

impl From<TenantSettings> for DenyStormBody {
    fn from(settings: TenantSettings) -> Self {
        DenyStormBody {
            threshold: settings.deny_storm.threshold,
            window_secs: settings.deny_storm.window_secs,
        }
    }
}

/// The tenant's deny-storm overrides (null: the gateway default applies).
#[utoipa::path(get, path = "/v1/tenants/deny-storm", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The overrides", body = DenyStormBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_deny_storm(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<DenyStormBody>> {
    Ok(Json(state.store.tenant(&operator.tenant).await?.into()))
}

/// Override the deny-storm rule for this tenant (admin).
#[utoipa::path(put, path = "/v1/tenants/deny-storm", tag = "tenants", request_body = DenyStormBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The overrides now in force", body = DenyStormBody),
        JsonWriteErrors,
    ))]
pub async fn put_deny_storm(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<DenyStormBody>,
) -> ApiResult<Json<DenyStormBody>> {
    let deny_storm = DenyStormOverride {
        threshold: body.threshold,
        window_secs: body.window_secs,
    };
    let stored = operations::set_deny_storm(&state, &operator, deny_storm).await?;
    Ok(Json(stored.into()))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExfiltrationBody {
    /// Which actions are the "read" of the data_exfiltration rule: `sensitive` (the default:
    /// only actions registered with `sensitive: true`) or `non_mutating` (the older rule:
    /// any action that changes nothing).
    pub reads: ExfiltrationReads,
}

impl From<TenantSettings> for ExfiltrationBody {
    fn from(settings: TenantSettings) -> Self {
        ExfiltrationBody {
            reads: settings.exfiltration_reads,
        }
    }
}

/// Which actions count as reads for the tenant's data_exfiltration rule.
#[utoipa::path(get, path = "/v1/tenants/exfiltration", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The setting", body = ExfiltrationBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_exfiltration(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<ExfiltrationBody>> {
    Ok(Json(state.store.tenant(&operator.tenant).await?.into()))
}

/// Choose which actions count as reads for data_exfiltration (admin).
#[utoipa::path(put, path = "/v1/tenants/exfiltration", tag = "tenants", request_body = ExfiltrationBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The setting now in force", body = ExfiltrationBody),
        JsonWriteErrors,
    ))]
pub async fn put_exfiltration(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<ExfiltrationBody>,
) -> ApiResult<Json<ExfiltrationBody>> {
    let stored = state
        .store
        .set_exfiltration_reads(&operator.tenant, body.reads, &operator.actor())
        .await?;
    Ok(Json(stored.into()))
}

/// How the tenant's approvals work.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSettingsBody {
    /// How long an approval can be decided and then used, in seconds (60 to 604800;
    /// default 900).
    #[schema(minimum = 60, maximum = 604800)]
    #[serde(deserialize_with = "whole")]
    pub ttl_secs: u32,
    /// Distinct operator keys that must approve: 1, or 2 for the two-person rule. Applies to
    /// approvals requested from now on.
    #[schema(minimum = 1, maximum = 2)]
    #[serde(deserialize_with = "whole")]
    pub approvals_required: u8,
}

impl From<TenantSettings> for ApprovalSettingsBody {
    fn from(settings: TenantSettings) -> Self {
        ApprovalSettingsBody {
            ttl_secs: settings.approvals.ttl_secs,
            approvals_required: settings.approvals.approvals_required,
        }
    }
}

/// The tenant's approval settings.
#[utoipa::path(get, path = "/v1/tenants/approvals", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The settings", body = ApprovalSettingsBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_approval_settings(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<ApprovalSettingsBody>> {
    Ok(Json(state.store.tenant(&operator.tenant).await?.into()))
}

/// Change the approval settings (admin).
#[utoipa::path(put, path = "/v1/tenants/approvals", tag = "tenants", request_body = ApprovalSettingsBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The settings now in force", body = ApprovalSettingsBody),
        JsonWriteErrors,
    ))]
pub async fn put_approval_settings(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<ApprovalSettingsBody>,
) -> ApiResult<Json<ApprovalSettingsBody>> {
    in_range(
        "ttl_secs",
        body.ttl_secs,
        approval::MIN_TTL_SECS..=approval::MAX_TTL_SECS,
    )?;
    in_range(
        "approvals_required",
        body.approvals_required,
        1..=approval::MAX_APPROVALS_REQUIRED,
    )?;
    let settings = ApprovalSettings {
        ttl_secs: body.ttl_secs,
        approvals_required: body.approvals_required,
    };
    let stored = state
        .store
        .set_approval_settings(&operator.tenant, settings, &operator.actor())
        .await?;
    Ok(Json(stored.into()))
}

/// The tenant's retention: archiving (`aegis archive`) never takes a decision younger than
/// `min_days` days. The gateway deletes nothing on its own; this only bounds what an archive
/// may take.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Days a decision stays in the database at least; null for no minimum.
    #[schema(minimum = 1, maximum = 36500, required = true)]
    #[serde(deserialize_with = "optional_whole")]
    pub min_days: Option<u32>,
}

/// The tenant's retention.
#[utoipa::path(get, path = "/v1/tenants/retention", tag = "tenants", security(("operator_key" = [])),
    responses(
        (status = 200, description = "The retention", body = RetentionBody),
        OperatorErrors,
        StoreErrors,
    ))]
pub async fn get_retention(
    State(state): State<SharedState>,
    operator: Operator<Viewer>,
) -> ApiResult<Json<RetentionBody>> {
    let min_days = state.store.retention_min_days(&operator.tenant).await?;
    Ok(Json(RetentionBody { min_days }))
}

/// Set the tenant's retention (admin).
#[utoipa::path(put, path = "/v1/tenants/retention", tag = "tenants", request_body = RetentionBody,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The retention now in force", body = RetentionBody),
        JsonWriteErrors,
    ))]
pub async fn put_retention(
    State(state): State<SharedState>,
    operator: Operator<Admin>,
    JsonBody(body): JsonBody<RetentionBody>,
) -> ApiResult<Json<RetentionBody>> {
    if let Some(days) = body.min_days {
        in_range("min_days", days, 1..=MAX_RETENTION_DAYS)?;
    }
    let store = state.store.as_ref();
    store
        .set_retention_min_days(&operator.tenant, body.min_days, &operator.actor())
        .await?;
    let min_days = store.retention_min_days(&operator.tenant).await?;
    Ok(Json(RetentionBody { min_days }))
}
