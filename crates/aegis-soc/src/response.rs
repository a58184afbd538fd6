//! The response engine: what the SOC does about a new incident, by the tenant's autonomy
//! level (README, "The SOC plane"). Pure: the consumer applies the plan in the incident's transaction.

use aegis_core::correlate::RuleKind;
use aegis_core::model::{AutonomyLevel, RiskTier, Severity};
use aegis_store::AutomaticResponse;
use serde_json::{Value, json};

/// What to attach to a new incident and what to do at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponsePlan {
    /// L2 and up: the action an operator can apply with `POST /v1/incidents/:id/apply`.
    pub recommended: Option<Value>,
    pub automatic: AutomaticResponse,
}

/// Rules whose incidents L3 contains by freezing the agent.
fn contained_at_l3(rule: RuleKind) -> bool {
    matches!(
        rule,
        RuleKind::DenyStorm | RuleKind::Runaway | RuleKind::ApprovalFlood
    )
}

pub fn plan(
    level: AutonomyLevel,
    rule: RuleKind,
    severity: Severity,
    incident_id: &str,
) -> ResponsePlan {
    if severity < Severity::High || level < AutonomyLevel::L2 {
        return ResponsePlan::default();
    }
    let reason = format!("contained by the SOC: {rule} incident {incident_id}");
    let recommended = Some(json!({"action": "freeze", "reason": reason}));
    let automatic = match level {
        AutonomyLevel::L4 => AutomaticResponse {
            freeze: Some(reason),
            // After an operator unfreezes, writes still need approval until stepped down.
            raise_risk_tier: Some(RiskTier::High),
            reject_pending_approvals: rule == RuleKind::ApprovalFlood,
        },
        AutonomyLevel::L3 if contained_at_l3(rule) => AutomaticResponse {
            freeze: Some(reason),
            raise_risk_tier: None,
            // A flood's pending requests are what people might approve by mistake.
            reject_pending_approvals: rule == RuleKind::ApprovalFlood,
        },
        _ => AutomaticResponse::default(),
    };
    ResponsePlan {
        recommended,
        automatic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_does_what_it_promises() {
        let storm = |level| plan(level, RuleKind::DenyStorm, Severity::High, "inc_1");
        assert_eq!(storm(AutonomyLevel::L0), ResponsePlan::default());
        assert_eq!(storm(AutonomyLevel::L1), ResponsePlan::default());
        let l2 = storm(AutonomyLevel::L2);
        assert_eq!(l2.recommended.as_ref().unwrap()["action"], "freeze");
        assert_eq!(l2.automatic, AutomaticResponse::default());
        let l3 = storm(AutonomyLevel::L3);
        assert!(l3.automatic.freeze.as_deref().unwrap().contains("inc_1"));
        assert_eq!(l3.automatic.raise_risk_tier, None);
        let l4 = storm(AutonomyLevel::L4);
        assert_eq!(l4.automatic.raise_risk_tier, Some(RiskTier::High));
    }

    #[test]
    fn l3_contains_storms_and_runaways_only() {
        let exfil = plan(
            AutonomyLevel::L3,
            RuleKind::DataExfiltration,
            Severity::High,
            "inc_2",
        );
        assert!(exfil.automatic.freeze.is_none() && exfil.recommended.is_some());
        let runaway = plan(
            AutonomyLevel::L3,
            RuleKind::Runaway,
            Severity::High,
            "inc_3",
        );
        assert!(runaway.automatic.freeze.is_some());
        let low = plan(
            AutonomyLevel::L4,
            RuleKind::DenyStorm,
            Severity::Medium,
            "inc_4",
        );
        assert_eq!(low, ResponsePlan::default());
    }
}
