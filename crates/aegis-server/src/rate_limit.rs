//! Rate limits and budgets of the action plane. An agent's calls pass through up to two GCRA
//! token buckets (`governor`) before any policy is evaluated: its rate (`per_sec` calls a
//! second, `burst` at once; the agent's own, else its tenant's) and, for calls that change
//! state, its tenant's budget (`mutating_per_hour`: that many at once, refilled at that many
//! an hour). A call a bucket refuses is recorded as a deny like any other (the authorize use
//! case, [`crate::action_plane`]), with the time until the bucket admits a call again.
//!
//! The buckets live in this process's memory: a restart refills them, and each replica
//! keeps its own, so `N` replicas admit up to `N` times a limit between them
//! (`docs/replicas.md`). A bucket is replaced, full, when its limit changes. When neither the
//! tenant nor the agent has a limit, the call costs two `Option` checks: no lock, no lookup.

use aegis_core::decision::{BUDGET_POLICY_ID, RATE_LIMIT_POLICY_ID};
use aegis_store::RateLimits;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

/// Bounds of the settings: a rate above these is no limit in practice, so a larger value is
/// a mistake, refused naming its field.
pub const MAX_PER_SEC: u32 = 100_000;
pub const MAX_BURST: u32 = 1_000_000;
pub const MAX_MUTATING_PER_HOUR: u32 = 1_000_000;

/// The bucket `limits` describe: `burst` defaults to one second's worth. `None` without a
/// rate (the stores refuse zero, so zero cannot reach here).
pub fn rate_quota(limits: RateLimits) -> Option<Quota> {
    let per_sec = NonZeroU32::new(limits.per_sec?)?;
    let burst = limits.burst.and_then(NonZeroU32::new).unwrap_or(per_sec);
    Some(Quota::per_second(per_sec).allow_burst(burst))
}

/// The budget bucket of `mutating_per_hour`.
pub fn budget_quota(mutating_per_hour: Option<u32>) -> Option<Quota> {
    NonZeroU32::new(mutating_per_hour?).map(Quota::per_hour)
}

/// The buckets that apply to one agent's calls, resolved from the cached tenant and agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentLimits {
    pub rate: Option<Quota>,
    pub mutating: Option<Quota>,
}

impl AgentLimits {
    /// The agent's own rate, else the tenant's; the tenant's budget. `None` when nothing
    /// limits the agent.
    pub fn resolve(
        agent_rate: Option<Quota>,
        tenant_rate: Option<Quota>,
        tenant_mutating: Option<Quota>,
    ) -> Option<AgentLimits> {
        let rate = agent_rate.or(tenant_rate);
        (rate.is_some() || tenant_mutating.is_some()).then_some(AgentLimits {
            rate,
            mutating: tenant_mutating,
        })
    }
}

/// Why a call was refused before policy, and when the agent may call again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub policy_id: &'static str,
    pub reason: String,
    /// Until the bucket admits a call again, in whole milliseconds (at least 1).
    pub retry_after_ms: u64,
}

/// Every agent's buckets in this process, kept across cache reloads of agents and tenants
/// (a freeze or a settings change must not refill them).
#[derive(Default)]
pub struct Limiters {
    rates: Buckets,
    budgets: Buckets,
}

impl Limiters {
    /// Takes one call of `agent_id` from its rate bucket and, if the call changes state,
    /// from its budget; the first that is empty refuses it.
    pub fn admit(
        &self,
        agent_id: &str,
        limits: AgentLimits,
        mutates_state: bool,
    ) -> Result<(), OverLimit> {
        if let Some(quota) = limits.rate {
            self.rates
                .take(agent_id, quota)
                .map_err(|retry_after_ms| OverLimit {
                    policy_id: RATE_LIMIT_POLICY_ID,
                    reason: format!(
                        "rate_limited: over {} calls per second (burst {}); retry after {retry_after_ms} ms",
                        per_second(quota),
                        quota.burst_size()
                    ),
                    retry_after_ms,
                })?;
        }
        if let Some(quota) = limits.mutating.filter(|_| mutates_state) {
            self.budgets
                .take(agent_id, quota)
                .map_err(|retry_after_ms| OverLimit {
                    policy_id: BUDGET_POLICY_ID,
                    reason: format!(
                        "budget_exceeded: over {} calls that change state per hour; retry after {retry_after_ms} ms",
                        quota.burst_size()
                    ),
                    retry_after_ms,
                })?;
        }
        Ok(())
    }
}

/// The calls a second a rate quota replenishes (it was built from a whole number).
fn per_second(quota: Quota) -> u128 {
    1_000_000_000 / quota.replenish_interval().as_nanos().max(1)
}

/// One bucket per agent, with the quota it was made for.
#[derive(Default)]
struct Buckets(RwLock<HashMap<String, Arc<Bucket>>>);

struct Bucket {
    quota: Quota,
    limiter: DefaultDirectRateLimiter,
}

impl Buckets {
    /// Takes one cell from the agent's bucket for `quota` (a new, full one if the agent has
    /// none or one for another quota); `Err` carries the milliseconds until one is free.
    fn take(&self, agent_id: &str, quota: Quota) -> Result<(), u64> {
        let bucket = self.bucket(agent_id, quota);
        bucket.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            u64::try_from(wait.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }

    fn bucket(&self, agent_id: &str, quota: Quota) -> Arc<Bucket> {
        if let Some(bucket) = self.0.read().get(agent_id)
            && bucket.quota == quota
        {
            return Arc::clone(bucket);
        }
        let mut buckets = self.0.write();
        let bucket = buckets
            .entry(agent_id.to_owned())
            .or_insert_with(|| Bucket::new(quota));
        if bucket.quota != quota {
            *bucket = Bucket::new(quota);
        }
        Arc::clone(bucket)
    }
}

impl Bucket {
    fn new(quota: Quota) -> Arc<Bucket> {
        Arc::new(Bucket {
            quota,
            limiter: DefaultDirectRateLimiter::direct(quota),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32, burst: u32) -> AgentLimits {
        AgentLimits {
            rate: rate_quota(RateLimits {
                per_sec: Some(per_sec),
                burst: Some(burst),
            }),
            mutating: None,
        }
    }

    #[test]
    fn nothing_set_resolves_to_no_limits() {
        assert!(AgentLimits::resolve(None, None, None).is_none());
        assert!(rate_quota(RateLimits::default()).is_none());
        assert!(budget_quota(None).is_none());
    }

    #[test]
    fn the_agents_own_rate_replaces_the_tenants() {
        let own = rate_quota(RateLimits {
            per_sec: Some(100),
            burst: None,
        });
        let tenant = rate_quota(RateLimits {
            per_sec: Some(1),
            burst: Some(1),
        });
        let resolved = AgentLimits::resolve(own, tenant, None).unwrap();
        assert_eq!(resolved.rate, own);
        assert_eq!(own.unwrap().burst_size().get(), 100);
    }

    #[test]
    fn a_burst_is_admitted_then_refused_with_a_wait() {
        let limiters = Limiters::default();
        let limits = limits(1, 2);
        assert!(limiters.admit("agt_a", limits, false).is_ok());
        assert!(limiters.admit("agt_a", limits, false).is_ok());
        let over = limiters.admit("agt_a", limits, false).unwrap_err();
        assert_eq!(over.policy_id, RATE_LIMIT_POLICY_ID);
        assert!(
            over.reason
                .starts_with("rate_limited: over 1 calls per second (burst 2)")
        );
        assert!((1..=1000).contains(&over.retry_after_ms), "{over:?}");
        // Another agent has its own bucket.
        assert!(limiters.admit("agt_b", limits, false).is_ok());
    }

    #[test]
    fn a_changed_limit_starts_a_full_bucket() {
        let limiters = Limiters::default();
        assert!(limiters.admit("agt_a", limits(1, 1), false).is_ok());
        assert!(limiters.admit("agt_a", limits(1, 1), false).is_err());
        assert!(limiters.admit("agt_a", limits(1, 2), false).is_ok());
    }

    #[test]
    fn the_budget_counts_only_calls_that_change_state() {
        let limiters = Limiters::default();
        let limits = AgentLimits {
            rate: None,
            mutating: budget_quota(Some(2)),
        };
        for _ in 0..5 {
            assert!(limiters.admit("agt_a", limits, false).is_ok());
        }
        assert!(limiters.admit("agt_a", limits, true).is_ok());
        assert!(limiters.admit("agt_a", limits, true).is_ok());
        let over = limiters.admit("agt_a", limits, true).unwrap_err();
        assert_eq!(over.policy_id, BUDGET_POLICY_ID);
        assert!(over.reason.starts_with("budget_exceeded: over 2 calls"));
        // One call every half hour refills it.
        assert!(
            (1_000..=1_800_000).contains(&over.retry_after_ms),
            "{over:?}"
        );
    }
}
