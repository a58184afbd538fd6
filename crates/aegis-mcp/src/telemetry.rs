//! What MCP gateway mode records through the `metrics` facade (a no-op unless the embedding
//! process installed a recorder). Labels are a fixed set of outcomes: server and tool names
//! are tenant data, unbounded, and never a label.

use std::time::Duration;

/// Calls by outcome (`aegis_mcp_calls_total{outcome}`).
pub const CALLS: &str = "aegis_mcp_calls_total";
/// Time an allowed call took upstream, answered or not (`aegis_mcp_upstream_duration_seconds`).
pub const UPSTREAM_DURATION: &str = "aegis_mcp_upstream_duration_seconds";

/// How one `tools/call` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Allowed, and the upstream's result passed on.
    Forwarded,
    Denied,
    ApprovalRequired,
    /// Allowed, but the upstream failed, timed out or answered over the size limit.
    UpstreamFailed,
    /// No decision could be recorded, so nothing was forwarded.
    Undecided,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Forwarded => "forwarded",
            CallOutcome::Denied => "denied",
            CallOutcome::ApprovalRequired => "approval_required",
            CallOutcome::UpstreamFailed => "upstream_failed",
            CallOutcome::Undecided => "undecided",
        }
    }
}

pub(crate) fn call_ended(outcome: CallOutcome) {
    metrics::counter!(CALLS, "outcome" => outcome.as_str()).increment(1);
}

pub(crate) fn upstream_answered(after: Duration) {
    metrics::histogram!(UPSTREAM_DURATION).record(after.as_secs_f64());
}
