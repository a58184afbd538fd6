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
            block_tool: None,
        },
        AutonomyLevel::L3 if contained_at_l3(rule) => AutomaticResponse {
            freeze: Some(reason),
            raise_risk_tier: None,
            // A flood's pending requests are what people might approve by mistake.
            reject_pending_approvals: rule == RuleKind::ApprovalFlood,
            block_tool: None,
        },
        _ => AutomaticResponse::default(),
    };
    ResponsePlan {
        recommended,
        automatic,
    }
}

/// What a `tool_definition_changed` incident does. The pin withholds the tool from every
/// agent of the tenant until an admin accepts the new definition, at every level; from L3 on
/// the incident also records that block as its automatic response, so the incident says what
/// contains it (accepting the definition lifts the block and closes the incident).
pub fn definition_changed(level: AutonomyLevel, server_id: &str, tool: &str) -> AutomaticResponse {
    if level < AutonomyLevel::L3 {
        return AutomaticResponse::default();
    }
    AutomaticResponse {
        block_tool: Some(format!(
            "MCP tool {tool:?} of server {server_id} blocked for every agent of the tenant until \
             an admin accepts its new definition (POST /v1/mcp/servers/{server_id}/tools/{{tool}}/accept)"
        )),
        ..AutomaticResponse::default()
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
    fn a_changed_definition_records_its_tenant_wide_block_from_l3() {
        for level in [AutonomyLevel::L0, AutonomyLevel::L1, AutonomyLevel::L2] {
            assert_eq!(
                definition_changed(level, "mcp_1", "read_note"),
                AutomaticResponse::default()
            );
        }
        for level in [AutonomyLevel::L3, AutonomyLevel::L4] {
            let response = definition_changed(level, "mcp_1", "read_note");
            let detail = response.block_tool.unwrap();
            assert!(detail.contains("\"read_note\"") && detail.contains("every agent"));
            assert!(response.freeze.is_none() && response.raise_risk_tier.is_none());
        }
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
