//! The SOC plane of AegisAgent.
//!
//! A [`consumer::Consumer`] follows the durable event log (never the request path): detection
//! rules turn single events into alerts ([`detect`]), the correlation state machines of
//! `aegis_core::correlate` turn many into incidents, and the response engine ([`response`])
//! decides, by the tenant's autonomy level, what to attach or do. Everything a batch produced
//! is committed with the consumer's cursor, so a restart resumes exactly where it stopped.

pub mod consumer;
pub mod deliver;
pub mod detect;
pub mod integrity;
pub mod notify;
pub mod response;

use aegis_core::correlate::CorrelationConfig;
use aegis_core::model::AutonomyLevel;
use std::time::Duration;

/// Gateway-wide SOC settings; tenants override the autonomy level and the deny-storm rule.
#[derive(Debug, Clone, Copy)]
pub struct SocConfig {
    /// `AEGIS_SOC_AUTONOMY_LEVEL`, used where `tenants.soc_autonomy_level` is NULL.
    pub default_autonomy: AutonomyLevel,
    pub correlation: CorrelationConfig,
    /// How often to look at the log when no commit notification arrives.
    pub idle_poll: Duration,
}

impl Default for SocConfig {
    fn default() -> Self {
        SocConfig {
            default_autonomy: AutonomyLevel::L1,
            correlation: CorrelationConfig::default(),
            idle_poll: Duration::from_millis(500),
        }
    }
}
