//! The rules of approvals: a `require_approval` decision asks people to allow one exact call,
//! once.
//!
//! An approval is bound to one agent and one action hash (the exact tool, action, resource
//! and parameters). Its life: `pending` → `approved` (enough distinct operator keys said
//! yes) or `rejected` (one said no); an approved approval is `consumed` by the first
//! matching call of its agent. Time alone moves a pending or approved approval to
//! `expired`: nothing has to write for that to happen, the status is computed from
//! `expires_at` whenever an approval is read, decided or used ([`effective_status`]).
//!
//! Pure: the store applies these rules inside the transaction that changes an approval, so
//! whatever the backend, the rule is this one.

use crate::model::wire_enum;

wire_enum! {
    unordered
    /// Where an approval stands.
    ApprovalStatus {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Expired => "expired",
        Consumed => "consumed",
    }
}

/// How long an approval stays open when the tenant set nothing (seconds).
pub const DEFAULT_TTL_SECS: u32 = 900;
/// Bounds of the tenant's `ttl_secs`: at least a minute, at most a week.
pub const MIN_TTL_SECS: u32 = 60;
pub const MAX_TTL_SECS: u32 = 7 * 24 * 60 * 60;
/// Distinct operator keys that must approve, when the tenant set nothing.
pub const DEFAULT_APPROVALS_REQUIRED: u8 = 1;
/// The two-person rule is the strictest setting.
pub const MAX_APPROVALS_REQUIRED: u8 = 2;

/// The status an approval has at `now_ms`: a pending or approved approval whose time is up
/// is expired, whatever is stored.
pub fn effective_status(stored: ApprovalStatus, expires_at_ms: i64, now_ms: i64) -> ApprovalStatus {
    match stored {
        ApprovalStatus::Pending | ApprovalStatus::Approved if now_ms >= expires_at_ms => {
            ApprovalStatus::Expired
        }
        status => status,
    }
}

/// An approval as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalFacts<'a> {
    pub stored: ApprovalStatus,
    pub expires_at_ms: i64,
    /// Distinct approving keys needed (1, or 2 under the two-person rule).
    pub required: u8,
    /// The keys that approved so far.
    pub approved_by: &'a [&'a str],
}

/// What an operator says about a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

/// Why a vote is refused (the API's 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefused {
    #[error("the approval is {0}, not pending")]
    NotPending(ApprovalStatus),
    #[error("this key already approved it; another operator key must approve")]
    AlreadyApprovedByKey,
}

/// The status after `key_id` votes at `now_ms`. Only a pending approval can be decided; one
/// rejection rejects it; it is approved when `required` distinct keys approved (the same key
/// twice counts once, and is refused the second time).
pub fn vote(
    approval: ApprovalFacts<'_>,
    key_id: &str,
    verdict: Verdict,
    now_ms: i64,
) -> Result<ApprovalStatus, VoteRefused> {
    let status = effective_status(approval.stored, approval.expires_at_ms, now_ms);
    if status != ApprovalStatus::Pending {
        return Err(VoteRefused::NotPending(status));
    }
    match verdict {
        Verdict::Reject => Ok(ApprovalStatus::Rejected),
        Verdict::Approve if approval.approved_by.contains(&key_id) => {
            Err(VoteRefused::AlreadyApprovedByKey)
        }
        Verdict::Approve if approval.approved_by.len() + 1 >= usize::from(approval.required) => {
            Ok(ApprovalStatus::Approved)
        }
        Verdict::Approve => Ok(ApprovalStatus::Pending),
    }
}

/// Why a call may not use the approval it names: the call is denied and the SOC alerted
/// (`approval.mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseRefused {
    #[error("the call differs from the one approved (action hash mismatch)")]
    DifferentCall,
    #[error("the approval belongs to another agent")]
    OtherAgent,
    #[error("the approval is {0}")]
    NotUsable(ApprovalStatus),
}

/// Whether a call of `agent_id` with `action_hash` may consume an approval at `now_ms`:
/// only its own agent, only the exact call, only while approved and unexpired.
pub fn check_use(
    approval: ApprovalFacts<'_>,
    approval_agent_id: &str,
    approval_hash: &str,
    agent_id: &str,
    action_hash: &str,
    now_ms: i64,
) -> Result<(), UseRefused> {
    if approval_agent_id != agent_id {
        return Err(UseRefused::OtherAgent);
    }
    if approval_hash != action_hash {
        return Err(UseRefused::DifferentCall);
    }
    match effective_status(approval.stored, approval.expires_at_ms, now_ms) {
        ApprovalStatus::Approved => Ok(()),
        status => Err(UseRefused::NotUsable(status)),
    }
}

/// When an approval requested at `requested_at_ms` expires under a TTL of `ttl_secs`.
pub fn expires_at(requested_at_ms: i64, ttl_secs: u32) -> i64 {
    requested_at_ms.saturating_add(i64::from(ttl_secs) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts<'a>(stored: ApprovalStatus, required: u8, by: &'a [&'a str]) -> ApprovalFacts<'a> {
        ApprovalFacts {
            stored,
            expires_at_ms: 1_000,
            required,
            approved_by: by,
        }
    }

    #[test]
    fn time_expires_pending_and_approved_only() {
        use ApprovalStatus::*;
        for (stored, at_999, at_1000) in [
            (Pending, Pending, Expired),
            (Approved, Approved, Expired),
            (Rejected, Rejected, Rejected),
            (Consumed, Consumed, Consumed),
            (Expired, Expired, Expired),
        ] {
            assert_eq!(effective_status(stored, 1_000, 999), at_999);
            assert_eq!(effective_status(stored, 1_000, 1_000), at_1000);
        }
    }

    #[test]
    fn one_key_approves_unless_two_are_required() {
        let single = facts(ApprovalStatus::Pending, 1, &[]);
        assert_eq!(
            vote(single, "k1", Verdict::Approve, 0),
            Ok(ApprovalStatus::Approved)
        );
        let two = facts(ApprovalStatus::Pending, 2, &[]);
        assert_eq!(
            vote(two, "k1", Verdict::Approve, 0),
            Ok(ApprovalStatus::Pending)
        );
        let one_in = facts(ApprovalStatus::Pending, 2, &["k1"]);
        assert_eq!(
            vote(one_in, "k1", Verdict::Approve, 0),
            Err(VoteRefused::AlreadyApprovedByKey)
        );
        assert_eq!(
            vote(one_in, "k2", Verdict::Approve, 0),
            Ok(ApprovalStatus::Approved)
        );
        assert_eq!(
            vote(one_in, "k1", Verdict::Reject, 0),
            Ok(ApprovalStatus::Rejected)
        );
    }

    #[test]
    fn only_pending_unexpired_approvals_can_be_decided() {
        for stored in [
            ApprovalStatus::Approved,
            ApprovalStatus::Rejected,
            ApprovalStatus::Consumed,
        ] {
            assert_eq!(
                vote(facts(stored, 1, &[]), "k", Verdict::Approve, 0),
                Err(VoteRefused::NotPending(stored))
            );
        }
        assert_eq!(
            vote(
                facts(ApprovalStatus::Pending, 1, &[]),
                "k",
                Verdict::Reject,
                1_000
            ),
            Err(VoteRefused::NotPending(ApprovalStatus::Expired))
        );
    }

    #[test]
    fn use_needs_same_agent_same_hash_and_an_unexpired_approval() {
        let approved = facts(ApprovalStatus::Approved, 1, &["k"]);
        assert_eq!(check_use(approved, "a", "h", "a", "h", 999), Ok(()));
        assert_eq!(
            check_use(approved, "a", "h", "b", "h", 999),
            Err(UseRefused::OtherAgent)
        );
        assert_eq!(
            check_use(approved, "a", "h", "a", "x", 999),
            Err(UseRefused::DifferentCall)
        );
        assert_eq!(
            check_use(approved, "a", "h", "a", "h", 1_000),
            Err(UseRefused::NotUsable(ApprovalStatus::Expired))
        );
        for stored in [
            ApprovalStatus::Pending,
            ApprovalStatus::Rejected,
            ApprovalStatus::Consumed,
        ] {
            assert_eq!(
                check_use(facts(stored, 1, &[]), "a", "h", "a", "h", 0),
                Err(UseRefused::NotUsable(stored))
            );
        }
    }

    fn any_status() -> impl Strategy<Value = ApprovalStatus> {
        prop::sample::select(ApprovalStatus::ALL)
    }

    proptest! {
        /// Whatever the votes, an approval is approved only after `required` distinct keys
        /// approved it, and never after a rejection.
        #[test]
        fn approval_needs_required_distinct_keys(
            required in 1u8..=MAX_APPROVALS_REQUIRED,
            votes in prop::collection::vec((0usize..3, any::<bool>()), 0..8),
        ) {
            let keys = ["k0", "k1", "k2"];
            let mut status = ApprovalStatus::Pending;
            let mut approved_by: Vec<&str> = Vec::new();
            for (key, approve) in votes {
                let verdict = if approve { Verdict::Approve } else { Verdict::Reject };
                let facts = ApprovalFacts { stored: status, expires_at_ms: i64::MAX, required, approved_by: &approved_by };
                match vote(facts, keys[key], verdict, 0) {
                    Ok(next) => {
                        prop_assert_eq!(status, ApprovalStatus::Pending);
                        if approve { approved_by.push(keys[key]); }
                        status = next;
                    }
                    Err(_) => prop_assert!(status != ApprovalStatus::Pending || approved_by.contains(&keys[key])),
                }
                let distinct: std::collections::BTreeSet<_> = approved_by.iter().collect();
                prop_assert_eq!(distinct.len(), approved_by.len());
                if status == ApprovalStatus::Approved {
                    prop_assert_eq!(approved_by.len(), usize::from(required));
                }
            }
        }

        /// A use succeeds only for the approved, unexpired approval of the same agent and
        /// hash; time never revives an approval.
        #[test]
        fn use_is_granted_only_to_the_exact_approved_call(
            stored in any_status(),
            now in 0i64..2_000,
            same_agent in any::<bool>(),
            same_hash in any::<bool>(),
        ) {
            let facts = ApprovalFacts { stored, expires_at_ms: 1_000, required: 1, approved_by: &[] };
            let granted = check_use(facts, "a", "h", if same_agent { "a" } else { "b" }, if same_hash { "h" } else { "x" }, now).is_ok();
            prop_assert_eq!(granted, same_agent && same_hash && stored == ApprovalStatus::Approved && now < 1_000);
            let later = effective_status(stored, 1_000, now + 1_000);
            prop_assert!(later != ApprovalStatus::Pending && later != ApprovalStatus::Approved);
        }
    }
}
