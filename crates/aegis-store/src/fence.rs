//! The freshness fence of the action plane, shared by both stores' writers.
//!
//! A gateway decides from its cached agent ([`crate::Agent`]), which may be older than the
//! log it records into: another replica may have frozen the agent, stepped its risk tier up
//! or rotated its token since, and the change reaches this replica's cache asynchronously.
//! So the writer reads the agent's stored version inside the transaction that records the
//! decision, after taking the lock that orders the log (PostgreSQL: the `log_head` row;
//! SQLite: the one writer's `BEGIN IMMEDIATE`). Every change committed before that decision
//! in log order is visible then; a decision made from an older version is never recorded as
//! anything but a deny (fail closed), and the caller answers what was recorded.

use crate::NewDecision;
use aegis_core::model::Verdict;

/// Turns `d` into a deny when it was made from an older agent version than `stored` (`None`:
/// the agent row is gone). Returns the deny's reason when it did. A deny stays as it is:
/// refusing is right whatever changed. The refusal is marked `contained`, as a frozen
/// agent's are: it says nothing about the agent's behaviour, so it counts towards no
/// escalation and no SOC rule.
pub(crate) fn fence_stale_agent(d: &mut NewDecision, stored: Option<i64>) -> Option<String> {
    if d.verdict == Verdict::Deny || stored == Some(d.agent_version) {
        return None;
    }
    let reason = match stored {
        Some(version) => format!(
            "the agent changed while this call was decided (version {} -> {version}); denied, retry the call",
            d.agent_version
        ),
        None => "the agent no longer exists".to_owned(),
    };
    d.verdict = Verdict::Deny;
    d.contained = true;
    d.reason.clone_from(&reason);
    d.matched_policies.clear();
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RiskEscalation, TenantId, TraceContext};
    use aegis_core::model::{ActionRisk, SourceTrust};

    fn decided(verdict: Verdict, agent_version: i64) -> NewDecision {
        NewDecision {
            id: "dec_1".into(),
            tenant_id: TenantId::new("acme"),
            agent_id: "agt_1".into(),
            request_id: None,
            tool: "github".into(),
            action: "get_file".into(),
            resource: None,
            mutates_state: false,
            egress: false,
            sensitive: false,
            contained: false,
            throttled: false,
            risk: ActionRisk::Low,
            source_trust: SourceTrust::TrustedInternalSigned,
            verdict,
            risk_score: 5,
            reason: "allowed by policy".into(),
            matched_policies: vec!["allow-reads".into()],
            action_hash: "0".repeat(64),
            trace: TraceContext::default(),
            created_at_ms: 0,
            escalation: RiskEscalation::default(),
            agent_version,
            approval: None,
            tool_definition_hash: None,
        }
    }

    #[test]
    fn a_decision_from_the_current_version_is_recorded_as_made() {
        let mut d = decided(Verdict::Allow, 3);
        assert_eq!(fence_stale_agent(&mut d, Some(3)), None);
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.matched_policies, ["allow-reads"]);
    }

    #[test]
    fn an_allow_or_approval_request_from_an_older_version_becomes_a_contained_deny() {
        for verdict in [Verdict::Allow, Verdict::RequireApproval] {
            let mut d = decided(verdict, 3);
            let reason = fence_stale_agent(&mut d, Some(4)).expect("fenced");
            assert_eq!(d.verdict, Verdict::Deny);
            assert!(d.contained);
            assert_eq!(d.reason, reason);
            assert!(reason.contains("3 -> 4"), "{reason}");
            assert!(d.matched_policies.is_empty());
        }
        let mut gone = decided(Verdict::Allow, 3);
        assert!(fence_stale_agent(&mut gone, None).is_some());
        assert_eq!(gone.verdict, Verdict::Deny);
    }

    #[test]
    fn a_deny_from_an_older_version_stays_as_it_was() {
        let mut d = decided(Verdict::Deny, 3);
        d.reason = "untrusted write".into();
        assert_eq!(fence_stale_agent(&mut d, Some(9)), None);
        assert_eq!((d.verdict, d.contained), (Verdict::Deny, false));
        assert_eq!(d.reason, "untrusted write");
    }
}
