//! The SOC plane of AegisAgent.
//!
//! A [`consumer::Consumer`] follows the durable event log (never the request path): detection
//! rules turn single events into alerts ([`detect`]), the correlation state machines of
//! `aegis_core::correlate` turn many into incidents, and the response engine ([`response`])
//! decides, by the tenant's autonomy level, what to attach or do. Everything a batch produced
//! is committed with the consumer's cursor, so a restart resumes exactly where it stopped.

pub mod anchor;
pub mod consumer;
pub mod deliver;
pub mod detect;
pub mod egress;
pub mod expiry;
pub mod integrity;
pub mod notify;
pub mod response;
pub mod slack;
pub mod slack_actions;

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

/// A consumer of the event log: it processes what follows its cursor in steps, each committed
/// with its cursor, and can reload its state from the database after a failed step.
pub(crate) trait LogConsumer {
    /// What the logs call it.
    const NAME: &'static str;
    fn store(&self) -> &dyn aegis_store::EventLog;
    fn idle_poll(&self) -> Duration;
    /// Processes one batch; returns whether there was anything to do.
    async fn step(&mut self) -> aegis_store::StoreResult<bool>;
    /// Drops in-memory state that may be ahead of the database, and reloads it.
    async fn reload(&mut self) -> aegis_store::StoreResult<()>;
}

/// How long a consumer lets new commits accumulate before its next step. Every step is a
/// transaction (an fsync) on the one writer the request path also uses; without the pause,
/// under load, each consumer would commit as often as the request path does. At 1000 events
/// a step it still follows up to 40k events/s.
const LINGER: Duration = Duration::from_millis(25);

/// Runs `consumer` until `shutdown` turns true: steps while there is work, then waits for the
/// next commit (or `idle_poll`) plus [`LINGER`]; after a failed step reloads and retries a
/// second later.
pub(crate) async fn follow_log<C: LogConsumer>(
    mut consumer: C,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut commits = consumer.store().committed_seq();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match consumer.step().await {
            Ok(true) => {
                // More may be waiting; a short pause lets it accumulate into one step.
                tokio::time::sleep(LINGER).await;
                continue;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, consumer = C::NAME, "batch failed; retrying from the saved state");
                if let Err(error) = consumer.reload().await {
                    tracing::error!(%error, consumer = C::NAME, "cannot reload the saved state");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::select! {
            _ = commits.changed() => tokio::time::sleep(LINGER).await,
            _ = tokio::time::sleep(consumer.idle_poll()) => {}
            _ = shutdown.changed() => {}
        }
    }
}
