//! Detection rules: one event → at most a few alerts. Pure.

use aegis_core::model::{ActionRisk, Severity, SourceTrust, Verdict};
use aegis_store::mcp::{DEFINITION_CHANGED, mcp_event};
use aegis_store::{DecisionEvent, event_kind};

/// An alert a rule raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: &'static str,
    pub severity: Severity,
    pub summary: String,
}

/// Alerts for one decision.
pub fn detect_decision(agent_id: &str, d: &DecisionEvent) -> Vec<Detection> {
    let mut found = Vec::new();
    if d.decision != Verdict::Deny {
        return found;
    }
    if d.mutates_state && d.source_trust.is_unvouched() {
        found.push(Detection {
            kind: "untrusted_write_denied",
            severity: if d.source_trust == SourceTrust::MaliciousSuspected {
                Severity::High
            } else {
                Severity::Medium
            },
            summary: format!(
                "agent {agent_id} tried a state-changing call {}/{} driven by {} content; denied",
                d.tool, d.action, d.source_trust
            ),
        });
    }
    if d.risk == ActionRisk::Critical {
        found.push(Detection {
            kind: "critical_action_denied",
            severity: Severity::High,
            summary: format!(
                "agent {agent_id} was denied the critical-risk action {}/{}",
                d.tool, d.action
            ),
        });
    }
    found
}

/// The alert for an event of the log whose payload cannot be read (`reason`): whatever it
/// recorded, the SOC cannot act on it, and only an edit of the database or damage makes one.
pub fn detect_unreadable(kind: &str, reason: &str) -> Detection {
    Detection {
        kind: "event_unreadable",
        severity: Severity::High,
        // Stored text: quoted, as data.
        summary: format!(
            "a {kind:?} event of the log cannot be read ({reason:?}): the database was edited \
             or damaged; the SOC skipped the event"
        ),
    }
}

/// Alerts for events other than decisions.
pub fn detect_other(
    kind: &str,
    agent_id: Option<&str>,
    payload: &serde_json::Value,
) -> Option<Detection> {
    if kind == mcp_event::TOOL_DEFINITION_CHANGED {
        let field = |name: &str| payload.get(name).and_then(|v| v.as_str()).unwrap_or("?");
        // The names come from an upstream server: quoted, as data.
        return Some(Detection {
            kind: DEFINITION_CHANGED,
            severity: Severity::High,
            summary: format!(
                "the definition of tool {:?} of MCP server {:?} changed since it was pinned; \
                 it is withheld from every agent until an admin accepts it \
                 (POST /v1/mcp/servers/{}/tools/{{tool}}/accept)",
                field("tool"),
                field("server"),
                field("server_id"),
            ),
        });
    }
    if kind == crate::integrity::CHAIN_BROKEN_EVENT {
        return Some(Detection {
            kind: "receipt_chain_broken",
            severity: Severity::Critical,
            summary: "the receipt chain failed verification (tampering or corruption); \
                      POST /v1/receipts/verify names the first bad receipt"
                .to_owned(),
        });
    }
    if kind == event_kind::APPROVAL_MISMATCH {
        // A call that tries to ride on an approval it does not match (swapped parameters,
        // a used, rejected or expired approval, another agent's): the approval's binding to
        // one exact call is being probed.
        return Some(Detection {
            kind: "approval_mismatch",
            severity: Severity::High,
            summary: format!(
                "agent {} named an approval its call cannot use; the call was denied",
                agent_id.unwrap_or("(unknown)")
            ),
        });
    }
    (kind == event_kind::AUTH_DEAD_TOKEN).then(|| Detection {
        kind: "dead_token_used",
        severity: Severity::High,
        summary: format!(
            "a revoked or rotated-away token of agent {} was presented to /v1/authorize",
            agent_id.unwrap_or("(unknown)")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(trust: SourceTrust, mutates_state: bool, risk: ActionRisk) -> DecisionEvent {
        DecisionEvent {
            decision_id: "dec_1".into(),
            decision: Verdict::Deny,
            tool: "github".into(),
            action: "merge".into(),
            mutates_state,
            egress: false,
            sensitive: false,
            contained: false,
            risk,
            risk_score: 50,
            source_trust: trust,
            run_id: None,
            approval_id: None,
        }
    }

    #[test]
    fn untrusted_denied_writes_alert_with_severity_by_provenance() {
        let found = detect_decision(
            "a",
            &deny(SourceTrust::UntrustedExternal, true, ActionRisk::Low),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].kind, found[0].severity),
            ("untrusted_write_denied", Severity::Medium)
        );
        let malicious = detect_decision(
            "a",
            &deny(SourceTrust::MaliciousSuspected, true, ActionRisk::Low),
        );
        assert_eq!(malicious[0].severity, Severity::High);
        assert!(
            detect_decision(
                "a",
                &deny(SourceTrust::TrustedInternalSigned, true, ActionRisk::Low)
            )
            .is_empty()
        );
        assert!(
            detect_decision(
                "a",
                &deny(SourceTrust::UntrustedExternal, false, ActionRisk::Low)
            )
            .is_empty()
        );
    }

    #[test]
    fn every_unvouched_source_alerts_and_only_suspected_malice_is_high() {
        for trust in SourceTrust::ALL.iter().copied() {
            let found = detect_decision("a", &deny(trust, true, ActionRisk::Low));
            let expected = match trust {
                SourceTrust::MaliciousSuspected => vec![Severity::High],
                SourceTrust::UntrustedExternal | SourceTrust::Unknown => vec![Severity::Medium],
                SourceTrust::TrustedInternalSigned
                | SourceTrust::TrustedInternalUnsigned
                | SourceTrust::SemiTrustedCustomer => vec![],
            };
            let severities: Vec<Severity> = found.iter().map(|d| d.severity).collect();
            assert_eq!(severities, expected, "{trust}");
        }
    }

    #[test]
    fn a_changed_mcp_tool_definition_raises_one_high_alert_naming_it() {
        let payload = serde_json::json!({
            "server_id": "mcp_1", "server": "notes", "tool": "read_note",
            "pinned_hash": "aa", "new_hash": "bb",
        });
        let found = detect_other(mcp_event::TOOL_DEFINITION_CHANGED, None, &payload).unwrap();
        assert_eq!(
            (found.kind, found.severity),
            ("tool_definition_changed", Severity::High)
        );
        assert!(found.summary.contains("\"read_note\"") && found.summary.contains("\"notes\""));
        assert!(detect_other(mcp_event::TOOL_DEFINITION_ACCEPTED, None, &payload).is_none());
    }

    #[test]
    fn critical_denies_and_dead_tokens_alert() {
        let found = detect_decision(
            "a",
            &deny(
                SourceTrust::TrustedInternalSigned,
                false,
                ActionRisk::Critical,
            ),
        );
        assert_eq!(found[0].kind, "critical_action_denied");
        let mut allowed = deny(SourceTrust::MaliciousSuspected, true, ActionRisk::Critical);
        allowed.decision = Verdict::Allow;
        assert!(detect_decision("a", &allowed).is_empty());
        assert_eq!(
            detect_other(
                event_kind::AUTH_DEAD_TOKEN,
                Some("a"),
                &serde_json::Value::Null
            )
            .unwrap()
            .kind,
            "dead_token_used"
        );
        assert!(
            detect_other(
                event_kind::AGENT_FROZEN,
                Some("a"),
                &serde_json::Value::Null
            )
            .is_none()
        );
        let mismatch = detect_other(
            event_kind::APPROVAL_MISMATCH,
            Some("a"),
            &serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!(
            (mismatch.kind, mismatch.severity),
            ("approval_mismatch", Severity::High)
        );
        let broken = detect_other(
            crate::integrity::CHAIN_BROKEN_EVENT,
            None,
            &serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!(
            (broken.kind, broken.severity),
            ("receipt_chain_broken", Severity::Critical)
        );
    }
}
