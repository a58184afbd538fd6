//! The decision function: everything the gateway knows about one call in, a verdict out.
//!
//! Pure and deterministic, so it can be property-tested and replayed. The server gathers
//! the facts (agent snapshot, registered tool metadata, compiled policies); recording the
//! outcome is the storage layer's job.

use crate::model::{ActionRisk, AgentStatus, RiskTier, SourceTrust, Verdict};
use crate::policy::{PolicyEngine, PolicyInput, PolicyPrincipal, PolicyResource};

/// Policy id reported when a frozen agent is denied before policy evaluation.
pub const FROZEN_POLICY_ID: &str = "aegis-agent-frozen";
/// Policy ids reported when the gateway's rate limit or budget denies a call before policy
/// evaluation.
pub const RATE_LIMIT_POLICY_ID: &str = "aegis-rate-limit";
pub const BUDGET_POLICY_ID: &str = "aegis-budget";

/// The authenticated agent as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct AgentFacts<'a> {
    /// Its id, status and risk tier, with the entity policies see (cached with the agent).
    pub principal: &'a PolicyPrincipal,
    pub frozen_reason: Option<&'a str>,
}

/// What the server registered about a tool action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredAction {
    pub mutates_state: bool,
    pub risk: ActionRisk,
    /// Sends data outside the organisation; the SOC's exfiltration rule watches these.
    pub egress: bool,
    /// Returns data the agent could leak: the reads of the SOC's exfiltration rule.
    pub sensitive: bool,
}

/// The proposed call, with the server's facts where it has them.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// The tool and action called, with the entity policies see (cached with a registered
    /// action).
    pub resource: &'a PolicyResource,
    pub target: Option<&'a str>,
    /// What the client claimed; it may only tighten the registered value.
    pub claimed_mutates_state: Option<bool>,
    pub source_trust: SourceTrust,
    pub registered: Option<RegisteredAction>,
}

/// The verdict and everything recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionOutcome {
    pub verdict: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    /// The facts the policy saw, after server facts overrode the client's.
    pub mutates_state: bool,
    pub risk: ActionRisk,
    /// Denied only because the agent is not active (frozen): containment at work, which
    /// counts towards no escalation and no SOC rule.
    pub contained: bool,
}

/// Risk score 0–100: the action's intrinsic risk, raised by writes, by less trusted sources
/// (in the order of [`SourceTrust::distrust_rank`]) and by the agent's risk tier.
/// Unregistered actions count as high risk.
pub fn risk_score(risk: ActionRisk, mutates_state: bool, trust: SourceTrust, tier: RiskTier) -> u8 {
    let base = match risk {
        ActionRisk::Low => 10,
        ActionRisk::Medium => 30,
        ActionRisk::High => 55,
        ActionRisk::Critical => 80,
    };
    let writes = if mutates_state { 10 } else { 0 };
    let provenance = match trust {
        SourceTrust::TrustedInternalSigned => 0,
        SourceTrust::TrustedInternalUnsigned => 3,
        SourceTrust::SemiTrustedCustomer => 10,
        SourceTrust::Unknown => 15,
        SourceTrust::UntrustedExternal => 20,
        SourceTrust::MaliciousSuspected => 35,
    };
    let tier = match tier {
        RiskTier::Low => 0,
        RiskTier::Medium => 5,
        RiskTier::High => 10,
    };
    (base + writes + provenance + tier).min(100)
}

impl CallFacts<'_> {
    /// Whether the call changes state and how risky it is: the registration's facts, which
    /// the client's claim may only tighten; an unregistered action counts as high risk.
    pub fn assessed(&self) -> (bool, ActionRisk) {
        let claimed = self.claimed_mutates_state.unwrap_or(false);
        match self.registered {
            Some(registered) => (registered.mutates_state || claimed, registered.risk),
            None => (claimed, ActionRisk::High),
        }
    }
}

/// Decides one call for one agent.
pub fn decide(
    engine: &PolicyEngine,
    agent: AgentFacts<'_>,
    call: CallFacts<'_>,
) -> DecisionOutcome {
    let (mutates_state, risk) = call.assessed();
    let principal = agent.principal;
    let risk_score = risk_score(
        risk,
        mutates_state,
        call.source_trust,
        principal.risk_tier(),
    );

    if principal.status() != AgentStatus::Active {
        let reason = match agent.frozen_reason {
            Some(why) if principal.status() == AgentStatus::Frozen => {
                format!("agent is frozen: {why}")
            }
            _ => format!("agent is {}", principal.status()),
        };
        return DecisionOutcome {
            verdict: Verdict::Deny,
            risk_score,
            reason,
            matched_policies: vec![FROZEN_POLICY_ID.to_owned()],
            mutates_state,
            risk,
            contained: true,
        };
    }

    let outcome = engine.evaluate(&PolicyInput {
        principal,
        resource: call.resource,
        target: call.target,
        source_trust: call.source_trust,
        mutates_state,
        risk,
        risk_score,
        registered: call.registered.is_some(),
    });
    DecisionOutcome {
        verdict: outcome.verdict,
        risk_score,
        reason: outcome.reason,
        matched_policies: outcome.matched_policies,
        mutates_state,
        risk,
        contained: false,
    }
}

/// A call of an active agent that the gateway's rate limit or budget refuses before any
/// policy is evaluated: a deny under `policy_id` with the call's risk score, which counts
/// like a policy's deny (escalation, the SOC's rules), unlike a frozen agent's refusal.
pub fn over_limit(
    agent: AgentFacts<'_>,
    call: CallFacts<'_>,
    policy_id: &str,
    reason: String,
) -> DecisionOutcome {
    let (mutates_state, risk) = call.assessed();
    DecisionOutcome {
        verdict: Verdict::Deny,
        risk_score: risk_score(
            risk,
            mutates_state,
            call.source_trust,
            agent.principal.risk_tier(),
        ),
        reason,
        matched_policies: vec![policy_id.to_owned()],
        mutates_state,
        risk,
        contained: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// `agt_1` of risk tier low, in each status.
    static PRINCIPALS: LazyLock<Vec<PolicyPrincipal>> = LazyLock::new(|| {
        AgentStatus::ALL
            .iter()
            .map(|status| PolicyPrincipal::new("agt_1", RiskTier::Low, *status))
            .collect()
    });
    static MERGE: LazyLock<PolicyResource> =
        LazyLock::new(|| PolicyResource::new("github", "merge_pull_request"));

    fn agent(status: AgentStatus) -> AgentFacts<'static> {
        AgentFacts {
            principal: PRINCIPALS
                .iter()
                .find(|principal| principal.status() == status)
                .expect("one principal per status"),
            frozen_reason: Some("deny storm — investigating"),
        }
    }

    fn call(
        registered: Option<RegisteredAction>,
        claimed: Option<bool>,
        trust: SourceTrust,
    ) -> CallFacts<'static> {
        CallFacts {
            resource: &MERGE,
            target: None,
            claimed_mutates_state: claimed,
            source_trust: trust,
            registered,
        }
    }

    const WRITE: RegisteredAction = RegisteredAction {
        mutates_state: true,
        risk: ActionRisk::High,
        egress: false,
        sensitive: false,
    };
    const READ: RegisteredAction = RegisteredAction {
        mutates_state: false,
        risk: ActionRisk::Low,
        egress: false,
        sensitive: true,
    };

    #[test]
    fn a_call_over_a_limit_is_a_deny_that_counts_with_the_facts_policy_would_see() {
        let engine = PolicyEngine::default_pack();
        for (registered, claimed) in [(Some(READ), None), (Some(READ), Some(true)), (None, None)] {
            let facts = call(registered, claimed, SourceTrust::TrustedInternalSigned);
            let over = over_limit(
                agent(AgentStatus::Active),
                facts,
                RATE_LIMIT_POLICY_ID,
                "rate_limited: over 1 calls per second".into(),
            );
            let judged = decide(&engine, agent(AgentStatus::Active), facts);
            assert_eq!(over.verdict, Verdict::Deny);
            assert!(!over.contained, "counted like a policy's deny");
            assert_eq!(over.matched_policies, vec![RATE_LIMIT_POLICY_ID]);
            assert_eq!(
                (over.mutates_state, over.risk, over.risk_score),
                (judged.mutates_state, judged.risk, judged.risk_score)
            );
        }
    }

    #[test]
    fn frozen_agents_are_denied_with_the_freeze_reason() {
        let engine = PolicyEngine::default_pack();
        let outcome = decide(
            &engine,
            agent(AgentStatus::Frozen),
            call(Some(READ), None, SourceTrust::TrustedInternalSigned),
        );
        assert_eq!(outcome.verdict, Verdict::Deny);
        assert!(outcome.reason.contains("frozen") && outcome.reason.contains("deny storm"));
        assert_eq!(outcome.matched_policies, vec![FROZEN_POLICY_ID]);
        assert!(
            outcome.contained,
            "a refusal of the freeze, not new behaviour"
        );
        let active = decide(
            &engine,
            agent(AgentStatus::Active),
            call(Some(WRITE), None, SourceTrust::UntrustedExternal),
        );
        assert_eq!(active.verdict, Verdict::Deny);
        assert!(!active.contained);
    }

    #[test]
    fn server_facts_override_the_client() {
        let engine = PolicyEngine::default_pack();
        // The client says "read-only" but the server registered a write: untrusted → deny.
        let lied = decide(
            &engine,
            agent(AgentStatus::Active),
            call(Some(WRITE), Some(false), SourceTrust::UntrustedExternal),
        );
        assert_eq!((lied.verdict, lied.mutates_state), (Verdict::Deny, true));
        // The client may tighten: a registered read claimed as a write is treated as a write.
        let tightened = decide(
            &engine,
            agent(AgentStatus::Active),
            call(Some(READ), Some(true), SourceTrust::UntrustedExternal),
        );
        assert_eq!(
            (tightened.verdict, tightened.mutates_state),
            (Verdict::Deny, true)
        );
    }

    proptest! {
        #[test]
        fn risk_score_is_bounded_and_monotonic_in_trust(
            risk in prop::sample::select(ActionRisk::ALL),
            mutates in any::<bool>(),
            tier in prop::sample::select(RiskTier::ALL),
        ) {
            let signed = risk_score(risk, mutates, SourceTrust::TrustedInternalSigned, tier);
            let malicious = risk_score(risk, mutates, SourceTrust::MaliciousSuspected, tier);
            prop_assert!(signed <= malicious && malicious <= 100);
            prop_assert!(risk_score(risk, false, SourceTrust::Unknown, tier) <= risk_score(risk, true, SourceTrust::Unknown, tier));
        }

        #[test]
        fn a_less_trusted_source_never_lowers_the_risk_score(
            risk in prop::sample::select(ActionRisk::ALL),
            mutates in any::<bool>(),
            tier in prop::sample::select(RiskTier::ALL),
            a in prop::sample::select(SourceTrust::ALL),
            b in prop::sample::select(SourceTrust::ALL),
        ) {
            let score = |trust| risk_score(risk, mutates, trust, tier);
            if a.distrust_rank() < b.distrust_rank() {
                prop_assert!(score(a) <= score(b), "{a} scores {} and {b} {}", score(a), score(b));
                // Below the cap, every step down in trust raises the score.
                let uncapped = |trust| risk_score(ActionRisk::Low, false, trust, RiskTier::Low);
                prop_assert!(uncapped(a) < uncapped(b));
            }
            // So tightening a call's trust never lowers its score either.
            prop_assert!(score(a.tighten(b)) >= score(a).max(score(b)));
        }

        #[test]
        fn non_active_agents_are_always_denied(
            trust in prop::sample::select(SourceTrust::ALL),
            claimed in proptest::option::of(any::<bool>()),
            registered in proptest::option::of(prop::sample::select(vec![READ, WRITE])),
        ) {
            let engine = PolicyEngine::default_pack();
            let outcome = decide(&engine, agent(AgentStatus::Frozen), call(registered, claimed, trust));
            prop_assert_eq!(outcome.verdict, Verdict::Deny);
        }
    }
}
