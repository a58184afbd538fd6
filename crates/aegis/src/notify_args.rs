//! `aegis serve` settings of the notification plane (webhooks, Slack, delivery worker).

use aegis_core::model::AutonomyLevel;
use aegis_soc::deliver::DeliverConfig;
use aegis_soc::notify::NotifyConfig;
use clap::Args;
use std::time::Duration;

#[derive(Args)]
pub struct NotifyArgs {
    /// Generic JSON webhook that receives every tenant's notifications.
    #[arg(long, env = "AEGIS_WEBHOOK_URL", hide_env_values = true)]
    webhook_url: Option<String>,
    /// Slack incoming webhook that receives every tenant's notifications.
    #[arg(long, env = "AEGIS_SLACK_WEBHOOK_URL", hide_env_values = true)]
    slack_webhook_url: Option<String>,
    /// Slack app signing secret: Slack messages about approvals carry Approve/Reject buttons,
    /// and `POST /v1/callbacks/slack` accepts the clicks Slack signs with it.
    #[arg(long, env = "AEGIS_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<String>,
    /// HMAC-SHA256 secret that signs deliveries to the two URLs above.
    #[arg(long, env = "AEGIS_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Notifications for one agent within this many seconds of its last message are
    /// gathered into the next one.
    #[arg(long, env = "AEGIS_NOTIFY_COALESCE_SECS", default_value_t = 10)]
    notify_coalesce_secs: u64,
    /// Give up on a delivery this many seconds after it was queued.
    #[arg(long, env = "AEGIS_WEBHOOK_MAX_RETRY_SECS", default_value_t = 86_400)]
    webhook_max_retry_secs: u64,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "AEGIS_WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    webhook_retry_base_ms: u64,
    /// Longest delay between two attempts, in seconds.
    #[arg(long, env = "AEGIS_WEBHOOK_RETRY_MAX_DELAY_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    webhook_retry_max_delay_secs: u64,
    /// Consecutive failures after which an endpoint is paused.
    #[arg(long, env = "AEGIS_WEBHOOK_CIRCUIT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    webhook_circuit_threshold: u32,
    /// How long a failing endpoint is paused, in seconds.
    #[arg(long, env = "AEGIS_WEBHOOK_CIRCUIT_PAUSE_SECS", default_value_t = 60)]
    webhook_circuit_pause_secs: u64,
    /// Deliveries in flight at once.
    #[arg(long, env = "AEGIS_WEBHOOK_MAX_IN_FLIGHT", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    webhook_max_in_flight: u64,
    /// Deliveries of one tenant in flight at once (its share of the above).
    #[arg(long, env = "AEGIS_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    webhook_max_in_flight_per_tenant: u64,
    /// Seconds one POST may take.
    #[arg(long, env = "AEGIS_WEBHOOK_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    webhook_timeout_secs: u64,
    /// Let API subscriptions target private, loopback and link-local addresses.
    #[arg(long, env = "AEGIS_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
}

impl NotifyArgs {
    /// `public_url`: the base of incident links in messages (none without it).
    pub fn notify_config(
        &self,
        default_autonomy: Option<AutonomyLevel>,
        public_url: Option<String>,
    ) -> NotifyConfig {
        NotifyConfig {
            default_autonomy: default_autonomy.unwrap_or(AutonomyLevel::L1),
            coalesce: Duration::from_secs(self.notify_coalesce_secs),
            env_json: self.webhook_url.is_some(),
            env_slack: self.slack_webhook_url.is_some(),
            public_url,
            slack_buttons: self.slack_signing_secret.is_some(),
            ..NotifyConfig::default()
        }
    }

    pub fn deliver_config(&self) -> DeliverConfig {
        DeliverConfig {
            env_json_url: self.webhook_url.clone(),
            env_slack_url: self.slack_webhook_url.clone(),
            env_secret: self.webhook_secret.clone(),
            max_retry: Duration::from_secs(self.webhook_max_retry_secs),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            retry_cap: Duration::from_secs(self.webhook_retry_max_delay_secs),
            breaker_threshold: self.webhook_circuit_threshold,
            breaker_pause: Duration::from_secs(self.webhook_circuit_pause_secs),
            max_in_flight: self.webhook_max_in_flight as usize,
            max_in_flight_per_tenant: self.webhook_max_in_flight_per_tenant as usize,
            timeout: Duration::from_secs(self.webhook_timeout_secs),
            allow_private: self.webhook_allow_private,
            ..DeliverConfig::default()
        }
    }
}
