//! Tenant settings changes, written once for both backends: which `tenants` columns each
//! setter sets, to what, and what its `tenant.settings_changed` event says. The rule that
//! runs one (the UPDATE, the settings after it, the event) is [`apply`].

use crate::approvals::ApprovalSettings;
use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{
    DenyStormOverride, RateLimits, RiskEscalation, StoreError, StoreResult, TenantSettings,
    event_kind,
};
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::model::AutonomyLevel;
use serde_json::json;

/// A setting's value. Each keeps its SQL type even when it is NULL, because PostgreSQL
/// checks a parameter's type against its column's (the integer settings columns are all
/// `BIGINT` there, `INTEGER` in SQLite).
fn int(value: impl Into<i64>) -> SqlValue<'static> {
    SqlValue::Int(Some(value.into()))
}

fn optional_int(value: Option<u32>) -> SqlValue<'static> {
    SqlValue::Int(value.map(i64::from))
}

/// One change to a tenant's settings: the columns it sets and the payload of the
/// `tenant.settings_changed` event that records it. Built only by the constructors below,
/// one per setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsChange {
    /// The UPDATE of the tenant's row: `$1`… are `values` in order, the last one the
    /// tenant id.
    update: &'static str,
    values: Vec<SqlValue<'static>>,
    payload: serde_json::Value,
}

impl SettingsChange {
    pub(crate) fn risk_escalation(escalation: RiskEscalation) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET denial_threshold = $1, escalation_window_minutes = $2 WHERE id = $3",
            values: vec![
                int(escalation.denial_threshold),
                int(escalation.window_minutes),
            ],
            payload: json!({"risk_escalation": escalation}),
        }
    }

    pub(crate) fn autonomy_override(level: Option<AutonomyLevel>, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET soc_autonomy_level = $1 WHERE id = $2",
            values: vec![SqlValue::Text(level.map(AutonomyLevel::as_str))],
            payload: json!({"soc_autonomy_level": level, "actor": actor}),
        }
    }

    pub(crate) fn deny_storm_override(deny_storm: DenyStormOverride, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET deny_storm_n = $1, deny_storm_window_secs = $2 WHERE id = $3",
            values: vec![
                optional_int(deny_storm.threshold),
                optional_int(deny_storm.window_secs),
            ],
            payload: json!({"deny_storm": deny_storm, "actor": actor}),
        }
    }

    pub(crate) fn rate_limits(rate_limits: RateLimits, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET rate_per_sec = $1, rate_burst = $2 WHERE id = $3",
            values: vec![
                optional_int(rate_limits.per_sec),
                optional_int(rate_limits.burst),
            ],
            payload: json!({"rate_limits": rate_limits, "actor": actor}),
        }
    }

    pub(crate) fn mutating_budget(mutating_per_hour: Option<u32>, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET mutating_per_hour = $1 WHERE id = $2",
            values: vec![optional_int(mutating_per_hour)],
            payload: json!({"mutating_per_hour": mutating_per_hour, "actor": actor}),
        }
    }

    pub(crate) fn exfiltration_reads(reads: ExfiltrationReads, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET exfiltration_reads = $1 WHERE id = $2",
            values: vec![SqlValue::text(reads.as_str())],
            payload: json!({"exfiltration_reads": reads, "actor": actor}),
        }
    }

    pub(crate) fn approval_settings(settings: ApprovalSettings, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET approval_ttl_secs = $1, approvals_required = $2 WHERE id = $3",
            values: vec![int(settings.ttl_secs), int(settings.approvals_required)],
            payload: json!({"approvals": settings, "actor": actor}),
        }
    }

    pub(crate) fn retention(min_days: Option<u32>, actor: &str) -> Self {
        SettingsChange {
            update: "UPDATE tenants SET retention_min_days = $1 WHERE id = $2",
            values: vec![optional_int(min_days)],
            payload: json!({"retention": {"min_days": min_days}, "actor": actor}),
        }
    }
}

/// Applies `change` to the tenant with the event that records it; the tenant's settings
/// after it, or `NotFound` (and nothing written) if it has none by that id.
pub(crate) async fn apply(
    tx: &mut impl WriteTx,
    tenant_id: &str,
    change: SettingsChange,
) -> StoreResult<TenantSettings> {
    let mut values = change.values;
    values.push(SqlValue::text(tenant_id));
    if tx.execute(change.update, &values).await? == 0 {
        return Err(StoreError::NotFound("tenant"));
    }
    let settings = tx
        .query_opt(
            &TENANT_BY_ID,
            &[SqlValue::text(tenant_id)],
            crate::rows::tenant,
        )
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
    tx.append_event(EventDraft {
        tenant_id,
        kind: event_kind::TENANT_SETTINGS_CHANGED,
        agent_id: None,
        subject_id: None,
        payload: change.payload,
    })
    .await?;
    Ok(settings)
}

/// One tenant's settings row.
static TENANT_BY_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM tenants WHERE id = $1",
        crate::schema::TENANT_COLUMNS
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setter's UPDATE numbers its values in order and then the tenant, so that
    /// [`apply`] binds each where it belongs.
    #[test]
    fn every_update_numbers_its_values_then_the_tenant() {
        let changes = [
            SettingsChange::risk_escalation(RiskEscalation::default()),
            SettingsChange::autonomy_override(None, "ops"),
            SettingsChange::deny_storm_override(DenyStormOverride::default(), "ops"),
            SettingsChange::rate_limits(
                RateLimits {
                    per_sec: Some(5),
                    burst: None,
                },
                "ops",
            ),
            SettingsChange::mutating_budget(Some(3), "ops"),
            SettingsChange::exfiltration_reads(ExfiltrationReads::Sensitive, "ops"),
            SettingsChange::approval_settings(
                ApprovalSettings {
                    ttl_secs: 600,
                    approvals_required: 2,
                },
                "ops",
            ),
            SettingsChange::retention(Some(30), "ops"),
        ];
        for change in changes {
            let placeholders: Vec<usize> = change
                .update
                .split('$')
                .skip(1)
                .map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().unwrap()
                })
                .collect();
            let expected: Vec<usize> = (1..=change.values.len() + 1).collect();
            assert_eq!(placeholders, expected, "{}", change.update);
            assert!(
                change
                    .update
                    .ends_with(&format!("WHERE id = ${}", change.values.len() + 1)),
                "{}",
                change.update
            );
        }
    }
}
