//! Tenant settings changes, written once for both backends: which `tenants` columns each
//! setter sets, to what, and what its `tenant.settings_changed` event says. A backend only
//! binds the values and runs the UPDATE with the event in one writer transaction
//! ([`crate::AdminStore::change_tenant_settings`]).

use crate::approvals::ApprovalSettings;
use crate::{DenyStormOverride, RateLimits, RiskEscalation};
use aegis_core::correlate::ExfiltrationReads;
use aegis_core::model::AutonomyLevel;
use serde_json::json;

/// A value for one `tenants` column. Each keeps its SQL type even when it is NULL, because
/// PostgreSQL checks a parameter's type against its column's (the integer settings columns
/// are all `BIGINT` there, `INTEGER` in SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettingValue {
    Int(Option<i64>),
    Text(Option<&'static str>),
}

impl SettingValue {
    fn int(value: impl Into<i64>) -> Self {
        SettingValue::Int(Some(value.into()))
    }

    fn optional_int(value: Option<u32>) -> Self {
        SettingValue::Int(value.map(i64::from))
    }
}

/// One change to a tenant's settings: the columns it sets and the payload of the
/// `tenant.settings_changed` event that records it. Built only by the constructors below,
/// one per setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsChange {
    columns: Vec<(&'static str, SettingValue)>,
    payload: serde_json::Value,
}

impl SettingsChange {
    pub(crate) fn risk_escalation(escalation: RiskEscalation) -> Self {
        SettingsChange {
            columns: vec![
                (
                    "denial_threshold",
                    SettingValue::int(escalation.denial_threshold),
                ),
                (
                    "escalation_window_minutes",
                    SettingValue::int(escalation.window_minutes),
                ),
            ],
            payload: json!({"risk_escalation": escalation}),
        }
    }

    pub(crate) fn autonomy_override(level: Option<AutonomyLevel>, actor: &str) -> Self {
        SettingsChange {
            columns: vec![(
                "soc_autonomy_level",
                SettingValue::Text(level.map(AutonomyLevel::as_str)),
            )],
            payload: json!({"soc_autonomy_level": level, "actor": actor}),
        }
    }

    pub(crate) fn deny_storm_override(deny_storm: DenyStormOverride, actor: &str) -> Self {
        SettingsChange {
            columns: vec![
                (
                    "deny_storm_n",
                    SettingValue::optional_int(deny_storm.threshold),
                ),
                (
                    "deny_storm_window_secs",
                    SettingValue::optional_int(deny_storm.window_secs),
                ),
            ],
            payload: json!({"deny_storm": deny_storm, "actor": actor}),
        }
    }

    pub(crate) fn rate_limits(rate_limits: RateLimits, actor: &str) -> Self {
        SettingsChange {
            columns: vec![
                (
                    "rate_per_sec",
                    SettingValue::optional_int(rate_limits.per_sec),
                ),
                ("rate_burst", SettingValue::optional_int(rate_limits.burst)),
            ],
            payload: json!({"rate_limits": rate_limits, "actor": actor}),
        }
    }

    pub(crate) fn mutating_budget(mutating_per_hour: Option<u32>, actor: &str) -> Self {
        SettingsChange {
            columns: vec![(
                "mutating_per_hour",
                SettingValue::optional_int(mutating_per_hour),
            )],
            payload: json!({"mutating_per_hour": mutating_per_hour, "actor": actor}),
        }
    }

    pub(crate) fn exfiltration_reads(reads: ExfiltrationReads, actor: &str) -> Self {
        SettingsChange {
            columns: vec![(
                "exfiltration_reads",
                SettingValue::Text(Some(reads.as_str())),
            )],
            payload: json!({"exfiltration_reads": reads, "actor": actor}),
        }
    }

    pub(crate) fn approval_settings(settings: ApprovalSettings, actor: &str) -> Self {
        SettingsChange {
            columns: vec![
                ("approval_ttl_secs", SettingValue::int(settings.ttl_secs)),
                (
                    "approvals_required",
                    SettingValue::int(settings.approvals_required),
                ),
            ],
            payload: json!({"approvals": settings, "actor": actor}),
        }
    }

    pub(crate) fn retention(min_days: Option<u32>, actor: &str) -> Self {
        SettingsChange {
            columns: vec![("retention_min_days", SettingValue::optional_int(min_days))],
            payload: json!({"retention": {"min_days": min_days}, "actor": actor}),
        }
    }

    /// The UPDATE of the tenant's row for both backends: `$1`… are [`Self::values`] in order,
    /// the last one the tenant id (SQLite numbers `$N` parameters in order of appearance, as
    /// it does for the crate's other shared SQL).
    pub(crate) fn update_sql(&self) -> String {
        let assignments: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, (column, _))| format!("{column} = ${}", index + 1))
            .collect();
        format!(
            "UPDATE tenants SET {} WHERE id = ${}",
            assignments.join(", "),
            self.columns.len() + 1
        )
    }

    /// The values of the UPDATE's parameters, in order (the tenant id follows them).
    pub(crate) fn values(&self) -> impl Iterator<Item = &SettingValue> {
        self.columns.iter().map(|(_, value)| value)
    }

    /// The payload of the change's `tenant.settings_changed` event.
    pub(crate) fn into_payload(self) -> serde_json::Value {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_numbers_values_then_the_tenant() {
        let change = SettingsChange::rate_limits(
            RateLimits {
                per_sec: Some(5),
                burst: None,
            },
            "ops",
        );
        assert_eq!(
            change.update_sql(),
            "UPDATE tenants SET rate_per_sec = $1, rate_burst = $2 WHERE id = $3"
        );
        assert_eq!(
            change.values().copied().collect::<Vec<_>>(),
            [SettingValue::Int(Some(5)), SettingValue::Int(None)]
        );
    }
}
