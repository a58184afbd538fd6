//! `aegis settings show|set-soc-autonomy|set-deny-storm|set-risk-escalation|set-rate-limits|
//! set-budgets`: the tenant's SOC settings the deny-storm runbook reads and tunes, and the
//! action plane's rate limit and budget.

use super::{Call, ToCall, View};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// One of the tenant's SOC settings (viewer); null means the gateway default applies.
    Show { setting: Setting },
    /// Set the tenant's SOC autonomy level (admin).
    SetSocAutonomy {
        /// L0 to L4, or `default` for the gateway's (AEGIS_SOC_AUTONOMY_LEVEL).
        level: String,
    },
    /// Override the deny-storm rule (admin). This replaces the whole override: an option
    /// left out goes back to the gateway default.
    SetDenyStorm {
        /// Denies within the window that open an incident, 1 to 1000.
        #[arg(long)]
        threshold: Option<u32>,
        /// The trailing window in seconds, 1 to 86400.
        #[arg(long)]
        window_secs: Option<u32>,
    },
    /// Set when denies step an agent's risk tier up (admin).
    SetRiskEscalation {
        /// Denies within the window that raise the tier one level.
        #[arg(long)]
        denial_threshold: u32,
        /// The trailing window in minutes.
        #[arg(long)]
        window_minutes: u32,
    },
    /// Set each agent's token bucket (admin); without options, no limit. Like
    /// `set-deny-storm`, it replaces the whole setting.
    SetRateLimits {
        /// Calls a second each agent may make, 1 to 100000.
        #[arg(long)]
        per_agent_per_sec: Option<u32>,
        /// Calls at once after a pause (default: one second's worth), 1 to 1000000.
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Set each agent's budget of calls that change state (admin); without the option,
    /// none.
    SetBudgets {
        /// Such calls per hour, 1 to 1000000.
        #[arg(long)]
        mutating_per_hour: Option<u32>,
    },
}

/// A setting, named as its path under `/v1/tenants/`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Setting {
    SocAutonomy,
    DenyStorm,
    RiskEscalation,
    RateLimits,
    Budgets,
}

impl Setting {
    fn path(self) -> [&'static str; 2] {
        let name = match self {
            Setting::SocAutonomy => "soc-autonomy",
            Setting::DenyStorm => "deny-storm",
            Setting::RiskEscalation => "risk-escalation",
            Setting::RateLimits => "rate-limits",
            Setting::Budgets => "budgets",
        };
        ["tenants", name]
    }
}

impl ToCall for SettingsCommand {
    fn into_call(self) -> Call {
        match self {
            SettingsCommand::Show { setting } => Call::get(&setting.path(), View::Fields),
            SettingsCommand::SetSocAutonomy { level } => {
                let level = (level != "default").then_some(level);
                Call::put(
                    &Setting::SocAutonomy.path(),
                    json!({ "level": level }),
                    View::Fields,
                )
            }
            SettingsCommand::SetDenyStorm {
                threshold,
                window_secs,
            } => Call::put(
                &Setting::DenyStorm.path(),
                json!({ "threshold": threshold, "window_secs": window_secs }),
                View::Fields,
            ),
            SettingsCommand::SetRiskEscalation {
                denial_threshold,
                window_minutes,
            } => Call::put(
                &Setting::RiskEscalation.path(),
                json!({ "denial_threshold": denial_threshold, "window_minutes": window_minutes }),
                View::Fields,
            ),
            SettingsCommand::SetRateLimits {
                per_agent_per_sec,
                burst,
            } => Call::put(
                &Setting::RateLimits.path(),
                json!({ "per_agent_per_sec": per_agent_per_sec, "burst": burst }),
                View::Fields,
            ),
            SettingsCommand::SetBudgets { mutating_per_hour } => Call::put(
                &Setting::Budgets.path(),
                json!({ "mutating_per_hour": mutating_per_hour }),
                View::Fields,
            ),
        }
    }
}
