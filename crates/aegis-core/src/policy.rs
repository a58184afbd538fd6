//! Policy evaluation with Cedar (README, "Policy").
//!
//! A [`PolicyEngine`] is compiled once per policy change (default pack + the tenant's own
//! policies, validated against `policies/aegis.cedarschema`) and then shared read-only by
//! every authorize call: evaluation builds two small entities and one request, nothing else.
//!
//! Cedar has two effects; AegisAgent needs three verdicts. A forbid annotated
//! `@outcome("require_approval")` is an *approval policy*: when the only forbids that hold are
//! approval policies and the call would be permitted without them, the verdict is
//! `require_approval`. Any other forbid, or no permit at all, is `deny`. An evaluation error
//! in any policy is a `deny` too (Cedar would skip an erroring forbid; we fail closed).

use crate::model::{ActionRisk, AgentStatus, RiskTier, SourceTrust, Verdict};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

mod limits;
pub use limits::{MAX_POLICY_BYTES, MAX_POLICY_DEPTH, MAX_POLICY_NESTING};

/// The Cedar schema every policy is validated against.
pub const SCHEMA_TEXT: &str = include_str!("../policies/aegis.cedarschema");
/// The default policy pack.
pub const DEFAULT_PACK_TEXT: &str = include_str!("../policies/default.cedar");
/// Policy ids with this prefix belong to the default pack.
pub const RESERVED_PREFIX: &str = "aegis-";

const OUTCOME_ANNOTATION: &str = "outcome";
const REASON_ANNOTATION: &str = "reason";

struct Vocabulary {
    schema: Schema,
    agent_type: EntityTypeName,
    tool_type: EntityTypeName,
    tool_action_type: EntityTypeName,
    call_action: EntityUid,
    default_pack: Vec<Policy>,
}

static VOCABULARY: LazyLock<Vocabulary> = LazyLock::new(|| {
    let (schema, _warnings) =
        Schema::from_cedarschema_str(SCHEMA_TEXT).expect("the shipped schema parses");
    let type_name = |name| EntityTypeName::from_str(name).expect("valid type name");
    let default_pack = parse_pack(DEFAULT_PACK_TEXT).expect("the shipped default pack parses");
    Vocabulary {
        schema,
        agent_type: type_name("Aegis::Agent"),
        tool_type: type_name("Aegis::Tool"),
        tool_action_type: type_name("Aegis::ToolAction"),
        call_action: EntityUid::from_type_name_and_id(
            type_name("Aegis::Action"),
            EntityId::new("call"),
        ),
        default_pack,
    }
});

/// Parses a multi-policy text, naming each policy after its `@id` annotation.
fn parse_pack(text: &str) -> Result<Vec<Policy>, PolicyError> {
    let set = PolicySet::from_str(text).map_err(|e| PolicyError::parse(text, &e))?;
    set.policies()
        .map(|policy| {
            let id = policy
                .annotation("id")
                .ok_or_else(|| PolicyError::Invalid {
                    message: "every policy of the pack needs an @id annotation".into(),
                    location: None,
                })?;
            Ok(policy.new_id(PolicyId::new(id)))
        })
        .collect()
}

/// A tenant's own policy, as stored: one Cedar policy per id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    pub id: String,
    pub text: String,
}

/// A policy that was refused, with where in its text the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy id is not acceptable ([`validate_policy_id`]).
    #[error("policy id: {0}")]
    InvalidId(String),
    /// The text is larger or nested deeper than Cedar may safely parse
    /// ([`MAX_POLICY_BYTES`], [`MAX_POLICY_NESTING`], [`MAX_POLICY_DEPTH`]).
    #[error("{message}{}", location_suffix(.location))]
    OverLimit {
        message: String,
        /// `line:column` (1-based) where the limit was exceeded.
        location: Option<String>,
    },
    /// The text does not parse, or does not validate against the schema.
    #[error("{message}{}", location_suffix(.location))]
    Invalid {
        message: String,
        /// `line:column` (1-based) in the policy text, when Cedar says where.
        location: Option<String>,
    },
}

impl PolicyError {
    /// The field of a policy document at fault: `id` or `text`.
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::InvalidId(_) => "id",
            PolicyError::OverLimit { .. } | PolicyError::Invalid { .. } => "text",
        }
    }

    /// `line:column` (1-based) in the policy text, when known.
    pub fn location(&self) -> Option<&str> {
        match self {
            PolicyError::InvalidId(_) => None,
            PolicyError::OverLimit { location, .. } | PolicyError::Invalid { location, .. } => {
                location.as_deref()
            }
        }
    }

    fn parse(text: &str, error: &dyn miette::Diagnostic) -> Self {
        let location = error
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|label| line_column(text, label.offset()));
        let message = match error.help() {
            Some(help) => format!("{error}: {help}"),
            None => error.to_string(),
        };
        PolicyError::Invalid { message, location }
    }
}

fn location_suffix(location: &Option<String>) -> String {
    location
        .as_ref()
        .map(|l| format!(" (at {l})"))
        .unwrap_or_default()
}

fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{column}")
}

/// Checks that `id` is acceptable for a tenant policy.
pub fn validate_policy_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err("may contain only ASCII letters, digits and - _ . :".into());
    }
    if id.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "ids starting with {RESERVED_PREFIX:?} are reserved for the default pack"
        ));
    }
    Ok(())
}

/// Facts about one call, as the policy sees them.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub agent_id: &'a str,
    pub risk_tier: RiskTier,
    pub status: AgentStatus,
    pub tool: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub source_trust: SourceTrust,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub risk_score: u8,
    pub registered: bool,
}

/// What the policies decided, before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub verdict: Verdict,
    pub matched_policies: Vec<String>,
    pub reason: String,
}

/// A compiled, validated policy set for one tenant.
pub struct PolicyEngine {
    all: PolicySet,
    /// The same set without approval policies: "would this be permitted at all?"
    without_approvals: PolicySet,
    approval_ids: HashSet<PolicyId>,
    reasons: HashMap<PolicyId, String>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.all.policies().count())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// The default pack alone.
    pub fn default_pack() -> Self {
        Self::compile(&[]).expect("the default pack validates")
    }

    /// Compiles the default pack plus a tenant's policies, validating the whole set.
    pub fn compile(tenant_policies: &[PolicyDocument]) -> Result<Self, PolicyError> {
        let vocabulary = &*VOCABULARY;
        let mut policies = vocabulary.default_pack.clone();
        for doc in tenant_policies {
            policies.push(parse_tenant_policy(doc)?);
        }

        let mut all = PolicySet::new();
        let mut without_approvals = PolicySet::new();
        let mut approval_ids = HashSet::new();
        let mut reasons = HashMap::new();
        for policy in policies {
            let id = policy.id().clone();
            if let Some(reason) = policy.annotation(REASON_ANNOTATION) {
                reasons.insert(id.clone(), reason.to_owned());
            }
            let is_approval = policy.annotation(OUTCOME_ANNOTATION) == Some("require_approval");
            if is_approval {
                approval_ids.insert(id.clone());
            } else {
                without_approvals
                    .add(policy.clone())
                    .map_err(duplicate_id)?;
            }
            all.add(policy).map_err(duplicate_id)?;
        }

        let validation =
            Validator::new(vocabulary.schema.clone()).validate(&all, ValidationMode::Strict);
        if let Some(error) = validation.validation_errors().next() {
            let text = tenant_policies
                .iter()
                .find(|doc| doc.id == error.policy_id().to_string())
                .map_or("", |doc| doc.text.as_str());
            return Err(PolicyError::parse(text, error));
        }

        Ok(PolicyEngine {
            all,
            without_approvals,
            approval_ids,
            reasons,
            authorizer: Authorizer::new(),
        })
    }

    /// Decides one call. Pure: the same input always gives the same outcome.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> PolicyOutcome {
        let (request, entities) = match build_request(input) {
            Ok(parts) => parts,
            Err(message) => {
                return fail_closed(format!("cannot build the policy request: {message}"));
            }
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.all, &entities);
        if let Some(error) = response.diagnostics().errors().next() {
            return fail_closed(format!("policy evaluation error: {error}"));
        }
        let determining: Vec<&PolicyId> = response.diagnostics().reason().collect();

        if response.decision() == Decision::Allow {
            return self.outcome(Verdict::Allow, &determining);
        }
        if determining.is_empty() {
            let reason = if input.registered {
                format!("no policy permits {}/{}", input.tool, input.action)
            } else {
                format!(
                    "tool action {}/{} is not registered; unregistered actions are denied by default",
                    input.tool, input.action
                )
            };
            return PolicyOutcome {
                verdict: Verdict::Deny,
                matched_policies: Vec::new(),
                reason,
            };
        }
        let only_approvals = determining.iter().all(|id| self.approval_ids.contains(*id));
        if only_approvals {
            let permitted =
                self.authorizer
                    .is_authorized(&request, &self.without_approvals, &entities);
            if permitted.decision() == Decision::Allow
                && permitted.diagnostics().errors().next().is_none()
            {
                return self.outcome(Verdict::RequireApproval, &determining);
            }
        }
        let hard_forbids: Vec<&PolicyId> = determining
            .iter()
            .copied()
            .filter(|id| !self.approval_ids.contains(*id))
            .collect();
        if hard_forbids.is_empty() {
            // Only approval policies held, but nothing would permit the call anyway.
            return PolicyOutcome {
                verdict: Verdict::Deny,
                matched_policies: sorted_ids(&determining),
                reason: format!("no policy permits {}/{}", input.tool, input.action),
            };
        }
        self.outcome(Verdict::Deny, &hard_forbids)
    }

    fn outcome(&self, verdict: Verdict, determining: &[&PolicyId]) -> PolicyOutcome {
        let matched = sorted_ids(determining);
        let reason = determining
            .iter()
            .filter_map(|id| self.reasons.get(*id))
            .min()
            .cloned()
            .unwrap_or_else(|| format!("{verdict} by policy {}", matched.join(", ")));
        PolicyOutcome {
            verdict,
            matched_policies: matched,
            reason,
        }
    }
}

/// Policy ids in a stable order (Cedar reports them in hash-set order).
fn sorted_ids(ids: &[&PolicyId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

fn duplicate_id(error: cedar_policy::PolicySetError) -> PolicyError {
    PolicyError::Invalid {
        message: error.to_string(),
        location: None,
    }
}

fn parse_tenant_policy(doc: &PolicyDocument) -> Result<Policy, PolicyError> {
    validate_policy_id(&doc.id).map_err(PolicyError::InvalidId)?;
    limits::check_policy_text(&doc.text)?;
    let set = PolicySet::from_str(&doc.text).map_err(|e| PolicyError::parse(&doc.text, &e))?;
    let mut policies = set.policies();
    let (Some(policy), None) = (policies.next(), policies.next()) else {
        return Err(PolicyError::Invalid {
            message: "the text must hold exactly one policy (templates are not supported)".into(),
            location: None,
        });
    };
    if set.templates().next().is_some() {
        return Err(PolicyError::Invalid {
            message: "templates are not supported".into(),
            location: None,
        });
    }
    Ok(policy.new_id(PolicyId::new(&doc.id)))
}

fn fail_closed(reason: String) -> PolicyOutcome {
    PolicyOutcome {
        verdict: Verdict::Deny,
        matched_policies: Vec::new(),
        reason,
    }
}

fn build_request(input: &PolicyInput<'_>) -> Result<(Request, Entities), String> {
    let v = &*VOCABULARY;
    let principal =
        EntityUid::from_type_name_and_id(v.agent_type.clone(), EntityId::new(input.agent_id));
    let tool = EntityUid::from_type_name_and_id(v.tool_type.clone(), EntityId::new(input.tool));
    let resource = EntityUid::from_type_name_and_id(
        v.tool_action_type.clone(),
        EntityId::new(format!("{}::{}", input.tool, input.action)),
    );
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());

    let agent = Entity::new(
        principal.clone(),
        HashMap::from([
            ("risk_tier".to_owned(), string(input.risk_tier.as_str())),
            ("status".to_owned(), string(input.status.as_str())),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    let tool_action = Entity::new(
        resource.clone(),
        HashMap::from([
            ("tool".to_owned(), string(input.tool)),
            ("action".to_owned(), string(input.action)),
        ]),
        HashSet::from([tool]),
    )
    .map_err(|e| e.to_string())?;
    let entities =
        Entities::from_entities([agent, tool_action], None).map_err(|e| e.to_string())?;

    let mut context = vec![
        (
            "source_trust".to_owned(),
            string(input.source_trust.as_str()),
        ),
        (
            "mutates_state".to_owned(),
            RestrictedExpression::new_bool(input.mutates_state),
        ),
        ("risk".to_owned(), string(input.risk.as_str())),
        (
            "risk_score".to_owned(),
            RestrictedExpression::new_long(input.risk_score.into()),
        ),
        (
            "registered".to_owned(),
            RestrictedExpression::new_bool(input.registered),
        ),
    ];
    if let Some(target) = input.target {
        context.push(("target".to_owned(), string(target)));
    }
    let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
    let request = Request::new(principal, v.call_action.clone(), resource, context, None)
        .map_err(|e| e.to_string())?;
    Ok((request, entities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(source_trust: SourceTrust, mutates_state: bool) -> PolicyInput<'static> {
        PolicyInput {
            agent_id: "agt_1",
            risk_tier: RiskTier::Low,
            status: AgentStatus::Active,
            tool: "github",
            action: "merge_pull_request",
            target: Some("payments#1"),
            source_trust,
            mutates_state,
            risk: ActionRisk::Medium,
            risk_score: 40,
            registered: true,
        }
    }

    #[test]
    fn default_pack_matches_the_spec() {
        let engine = PolicyEngine::default_pack();
        use SourceTrust::*;
        for trust in SourceTrust::ALL {
            assert_eq!(
                engine.evaluate(&input(*trust, false)).verdict,
                Verdict::Allow,
                "read from {trust}"
            );
        }
        let write = |t| engine.evaluate(&input(t, true));
        assert_eq!(write(TrustedInternalSigned).verdict, Verdict::Allow);
        assert_eq!(write(TrustedInternalUnsigned).verdict, Verdict::Allow);
        assert_eq!(write(SemiTrustedCustomer).verdict, Verdict::RequireApproval);
        let denied = write(UntrustedExternal);
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.matched_policies, vec!["aegis-deny-untrusted-writes"]);
        assert!(denied.reason.contains("untrusted"));
        assert_eq!(write(MaliciousSuspected).verdict, Verdict::Deny);
        assert_eq!(write(Unknown).verdict, Verdict::Deny);
    }

    #[test]
    fn high_tier_writes_need_approval_but_reads_do_not() {
        let engine = PolicyEngine::default_pack();
        let mut call = input(SourceTrust::TrustedInternalSigned, true);
        call.risk_tier = RiskTier::High;
        let outcome = engine.evaluate(&call);
        assert_eq!(outcome.verdict, Verdict::RequireApproval);
        assert_eq!(
            outcome.matched_policies,
            vec!["aegis-approve-high-tier-writes"]
        );
        call.mutates_state = false;
        assert_eq!(engine.evaluate(&call).verdict, Verdict::Allow);
        call.mutates_state = true;
        call.source_trust = SourceTrust::UntrustedExternal;
        assert_eq!(
            engine.evaluate(&call).verdict,
            Verdict::Deny,
            "a hard forbid beats approval"
        );
    }

    #[test]
    fn unregistered_actions_are_denied_unless_a_tenant_permits_them() {
        let mut call = input(SourceTrust::TrustedInternalSigned, false);
        call.registered = false;
        let outcome = PolicyEngine::default_pack().evaluate(&call);
        assert_eq!(outcome.verdict, Verdict::Deny);
        assert!(
            outcome.reason.contains("not registered"),
            "{}",
            outcome.reason
        );

        let tenant = PolicyEngine::compile(&[PolicyDocument {
            id: "allow-search".into(),
            text: r#"permit (principal, action, resource in Aegis::Tool::"github") when { !context.mutates_state };"#.into(),
        }])
        .unwrap();
        assert_eq!(tenant.evaluate(&call).verdict, Verdict::Allow);
        // Semi-trusted unregistered writes: approval policies hold, but nothing permits.
        let mut write = input(SourceTrust::SemiTrustedCustomer, true);
        write.registered = false;
        assert_eq!(tenant.evaluate(&write).verdict, Verdict::Deny);
    }

    #[test]
    fn tenant_policies_can_tighten_with_context() {
        let engine = PolicyEngine::compile(&[PolicyDocument {
            id: "no-prod-merges".into(),
            text: r#"@reason("production merges are frozen")
forbid (principal, action, resource)
when { context has target && context.target like "payments*" };"#
                .into(),
        }])
        .unwrap();
        let outcome = engine.evaluate(&input(SourceTrust::TrustedInternalSigned, true));
        assert_eq!(outcome.verdict, Verdict::Deny);
        assert_eq!(outcome.reason, "production merges are frozen");
        assert_eq!(outcome.matched_policies, vec!["no-prod-merges"]);
    }

    #[test]
    fn bad_policies_are_refused_with_a_location() {
        let parse = PolicyEngine::compile(&[PolicyDocument {
            id: "broken".into(),
            text: "permit (principal, action, resource)\nwhen { context.mutates_state &&& true };"
                .into(),
        }])
        .unwrap_err();
        assert!(matches!(parse, PolicyError::Invalid { .. }), "{parse:?}");
        assert_eq!(
            parse.location().map(|l| l.starts_with("2:")),
            Some(true),
            "{parse}"
        );

        let invalid = PolicyEngine::compile(&[PolicyDocument {
            id: "typo".into(),
            text: "permit (principal, action, resource)\nwhen { context.source_trusted == \"x\" };"
                .into(),
        }])
        .unwrap_err();
        assert!(invalid.location().is_some(), "{invalid}");
        assert_eq!(invalid.field(), "text");

        for bad_id in ["", "aegis-allow-reads", "has space"] {
            let doc = PolicyDocument {
                id: bad_id.into(),
                text: "permit (principal, action, resource);".into(),
            };
            let error = PolicyEngine::compile(&[doc]).unwrap_err();
            assert_eq!(error.field(), "id", "id {bad_id:?}: {error}");
        }
        let two = PolicyDocument {
            id: "two".into(),
            text: "permit (principal, action, resource); permit (principal, action, resource);"
                .into(),
        };
        assert!(PolicyEngine::compile(&[two]).is_err());
    }

    fn arb_input() -> impl Strategy<Value = (SourceTrust, bool, RiskTier, ActionRisk, bool)> {
        (
            prop::sample::select(SourceTrust::ALL),
            any::<bool>(),
            prop::sample::select(RiskTier::ALL),
            prop::sample::select(ActionRisk::ALL),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn untrusted_writes_are_never_allowed((trust, mutates, tier, risk, registered) in arb_input()) {
            let engine = PolicyEngine::default_pack();
            let mut call = input(trust, mutates);
            call.risk_tier = tier;
            call.risk = risk;
            call.registered = registered;
            let outcome = engine.evaluate(&call);
            if mutates && trust.is_unvouched() {
                prop_assert_eq!(outcome.verdict, Verdict::Deny);
            }
            if !registered {
                prop_assert_eq!(outcome.verdict, Verdict::Deny);
            }
            if outcome.verdict == Verdict::Allow {
                prop_assert!(!outcome.matched_policies.is_empty());
            }
            prop_assert_eq!(engine.evaluate(&call), outcome, "evaluation is deterministic");
        }
    }
}
