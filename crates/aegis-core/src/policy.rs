//! Policy evaluation with Cedar (README, "Policy").
//!
//! A [`PolicyEngine`] is compiled once per policy change (default pack + the tenant's own
//! policies, validated against `policies/aegis.cedarschema`) and then shared read-only by
//! every authorize call. The agent ([`PolicyPrincipal`]) and a registered tool action
//! ([`PolicyResource`]) are Cedar entities built once and cached by the caller beside what
//! they describe; their entity set for a registered action is built once too
//! (`entity_sets.rs`), so a call builds only its context and request.
//!
//! The compiled set is sliced by resource scope: a policy scoped to one tool
//! (`resource in Aegis::Tool::"github"`, or `==`/`in` one of its tool actions) is evaluated only
//! for calls of that tool, every other policy for every call ([`PolicyEngine::compile`]). A
//! policy outside the called tool's slice cannot hold for the call (its scope is false, and
//! Cedar evaluates nothing else of it), so the answer is the one of the whole set.
//!
//! Cedar has two effects; AegisAgent needs three verdicts. A forbid annotated
//! `@outcome("require_approval")` is an *approval policy*: when the only forbids that hold are
//! approval policies and the call would be permitted without them, the verdict is
//! `require_approval`. Any other forbid, or no permit at all, is `deny`. An evaluation error
//! in any policy is a `deny` too (Cedar would skip an erroring forbid; we fail closed).

use crate::model::{ActionRisk, AgentStatus, RiskTier, SourceTrust, Verdict};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Policy, PolicyId, PolicySet, Request, ResourceConstraint, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

mod entity_sets;
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

/// Separates the tool from the action in a tool action's entity id: `github::merge`.
const TOOL_ACTION_SEPARATOR: &str = "::";

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// The agent as policies and the decision see it: `principal`, with its `risk_tier` and
/// `status`. Built once per agent snapshot: the server keeps it beside the cached agent, so
/// it is dropped and rebuilt whenever the agent changes.
#[derive(Debug, Clone)]
pub struct PolicyPrincipal {
    id: String,
    risk_tier: RiskTier,
    status: AgentStatus,
    uid: EntityUid,
    /// The Cedar entity, or why it could not be built: a call then fails closed.
    entity: Result<Entity, String>,
}

impl PolicyPrincipal {
    pub fn new(agent_id: &str, risk_tier: RiskTier, status: AgentStatus) -> Self {
        let uid = EntityUid::from_type_name_and_id(
            VOCABULARY.agent_type.clone(),
            EntityId::new(agent_id),
        );
        let entity = Entity::new(
            uid.clone(),
            HashMap::from([
                ("risk_tier".to_owned(), string(risk_tier.as_str())),
                ("status".to_owned(), string(status.as_str())),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string());
        PolicyPrincipal {
            id: agent_id.to_owned(),
            risk_tier,
            status,
            uid,
            entity,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn risk_tier(&self) -> RiskTier {
        self.risk_tier
    }

    pub fn status(&self) -> AgentStatus {
        self.status
    }
}

/// A tool action as policies see it: `resource`, an `Aegis::ToolAction` whose only parent is
/// its `Aegis::Tool`. A registered action's is built once per catalog load and cached with the
/// catalog; an unregistered one is built for its call (a client may name anything).
#[derive(Debug, Clone)]
pub struct PolicyResource {
    tool: String,
    action: String,
    uid: EntityUid,
    /// The Cedar entity, or why it could not be built: a call then fails closed.
    entity: Result<Entity, String>,
}

impl PolicyResource {
    pub fn new(tool: &str, action: &str) -> Self {
        let vocabulary = &*VOCABULARY;
        let parent =
            EntityUid::from_type_name_and_id(vocabulary.tool_type.clone(), EntityId::new(tool));
        let uid = EntityUid::from_type_name_and_id(
            vocabulary.tool_action_type.clone(),
            EntityId::new(format!("{tool}{TOOL_ACTION_SEPARATOR}{action}")),
        );
        let entity = Entity::new(
            uid.clone(),
            HashMap::from([
                ("tool".to_owned(), string(tool)),
                ("action".to_owned(), string(action)),
            ]),
            HashSet::from([parent]),
        )
        .map_err(|e| e.to_string());
        PolicyResource {
            tool: tool.to_owned(),
            action: action.to_owned(),
            uid,
            entity,
        }
    }

    pub fn tool(&self) -> &str {
        &self.tool
    }

    pub fn action(&self) -> &str {
        &self.action
    }
}

/// Facts about one call, as the policy sees them.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub principal: &'a PolicyPrincipal,
    pub resource: &'a PolicyResource,
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

/// A part of the compiled policy set, as Cedar evaluates it.
#[derive(Default)]
struct Slice {
    all: PolicySet,
    /// The same policies without approval policies: "would this be permitted at all?"
    without_approvals: PolicySet,
}

impl Slice {
    fn add(&mut self, policy: Policy, is_approval: bool) -> Result<(), PolicyError> {
        if !is_approval {
            self.without_approvals
                .add(policy.clone())
                .map_err(duplicate_id)?;
        }
        self.all.add(policy).map_err(duplicate_id)
    }
}

/// What Cedar decided over the slices evaluated for one call, combined as Cedar combines the
/// policies of one set: any satisfied forbid denies, else any satisfied permit allows, else
/// deny.
#[derive(Default)]
struct Answer {
    permits: Vec<PolicyId>,
    forbids: Vec<PolicyId>,
    /// The evaluation error of the erroring policy with the least id (Cedar reports errors in
    /// no particular order; this one does not depend on the slicing either).
    error: Option<(PolicyId, String)>,
}

impl Answer {
    fn allowed(&self) -> bool {
        self.forbids.is_empty() && !self.permits.is_empty()
    }

    /// Cedar's determining policies: the satisfied forbids of a deny, the satisfied permits of
    /// an allow, none when nothing permits.
    fn determining(&self) -> Vec<&PolicyId> {
        let ids = if self.forbids.is_empty() {
            &self.permits
        } else {
            &self.forbids
        };
        ids.iter().collect()
    }
}

/// A compiled, validated policy set for one tenant, sliced by resource scope.
pub struct PolicyEngine {
    /// Policies that may apply to a call of any tool.
    shared: Slice,
    /// Per tool, the policies whose resource scope only that tool's calls can meet.
    by_tool: HashMap<String, Slice>,
    approval_ids: HashSet<PolicyId>,
    reasons: HashMap<PolicyId, String>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scoped: usize = self
            .by_tool
            .values()
            .map(|s| s.all.policies().count())
            .sum();
        f.debug_struct("PolicyEngine")
            .field("shared", &self.shared.all.policies().count())
            .field("scoped", &scoped)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// The default pack alone.
    pub fn default_pack() -> Self {
        Self::compile(&[]).expect("the default pack validates")
    }

    /// Compiles the default pack plus a tenant's policies, validating the whole set, and
    /// slices it by resource scope (`scoped_tools`).
    pub fn compile(tenant_policies: &[PolicyDocument]) -> Result<Self, PolicyError> {
        Self::compile_sliced(tenant_policies, scoped_tools)
    }

    /// Compiles with `tools_of` naming the tools each policy can apply to (`None`: any).
    fn compile_sliced(
        tenant_policies: &[PolicyDocument],
        tools_of: fn(&Policy) -> Option<Vec<String>>,
    ) -> Result<Self, PolicyError> {
        let vocabulary = &*VOCABULARY;
        let mut policies = vocabulary.default_pack.clone();
        for doc in tenant_policies {
            policies.push(parse_tenant_policy(doc)?);
        }

        // Validated (and checked for duplicate ids) as one set, whatever the slices.
        let mut whole = PolicySet::new();
        let mut shared = Slice::default();
        let mut by_tool: HashMap<String, Slice> = HashMap::new();
        let mut approval_ids = HashSet::new();
        let mut reasons = HashMap::new();
        for policy in policies {
            let id = policy.id().clone();
            if let Some(reason) = policy.annotation(REASON_ANNOTATION) {
                reasons.insert(id.clone(), reason.to_owned());
            }
            let is_approval = policy.annotation(OUTCOME_ANNOTATION) == Some("require_approval");
            if is_approval {
                approval_ids.insert(id);
            }
            match tools_of(&policy) {
                None => shared.add(policy.clone(), is_approval)?,
                Some(tools) => {
                    for tool in tools {
                        by_tool
                            .entry(tool)
                            .or_default()
                            .add(policy.clone(), is_approval)?;
                    }
                }
            }
            whole.add(policy).map_err(duplicate_id)?;
        }

        let validation =
            Validator::new(vocabulary.schema.clone()).validate(&whole, ValidationMode::Strict);
        if let Some(error) = validation.validation_errors().next() {
            let text = tenant_policies
                .iter()
                .find(|doc| doc.id == error.policy_id().to_string())
                .map_or("", |doc| doc.text.as_str());
            return Err(PolicyError::parse(text, error));
        }

        Ok(PolicyEngine {
            shared,
            by_tool,
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
        let scoped = self.by_tool.get(input.resource.tool());
        let answer = self.authorize(&request, &entities, scoped, |slice| &slice.all);
        if let Some((_, error)) = &answer.error {
            return fail_closed(format!("policy evaluation error: {error}"));
        }
        let determining = answer.determining();

        if answer.allowed() {
            return self.outcome(Verdict::Allow, &determining);
        }
        let (tool, action) = (input.resource.tool(), input.resource.action());
        if determining.is_empty() {
            let reason = if input.registered {
                format!("no policy permits {tool}/{action}")
            } else {
                format!(
                    "tool action {tool}/{action} is not registered; unregistered actions are denied by default"
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
            let permitted = self.authorize(&request, &entities, scoped, |slice| {
                &slice.without_approvals
            });
            if permitted.allowed() && permitted.error.is_none() {
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
                reason: format!("no policy permits {tool}/{action}"),
            };
        }
        self.outcome(Verdict::Deny, &hard_forbids)
    }

    /// Evaluates the shared slice and, if the called tool has one, its own slice.
    fn authorize(
        &self,
        request: &Request,
        entities: &Entities,
        scoped: Option<&Slice>,
        set: fn(&Slice) -> &PolicySet,
    ) -> Answer {
        let mut answer = Answer::default();
        for slice in std::iter::once(&self.shared).chain(scoped) {
            let response = self.authorizer.is_authorized(request, set(slice), entities);
            for error in response.diagnostics().errors() {
                let AuthorizationError::PolicyEvaluationError(failed) = error;
                let id = failed.policy_id();
                if answer.error.as_ref().is_none_or(|(least, _)| id < least) {
                    answer.error = Some((id.clone(), error.to_string()));
                }
            }
            let satisfied = response.diagnostics().reason().cloned();
            match response.decision() {
                Decision::Allow => answer.permits.extend(satisfied),
                Decision::Deny => answer.forbids.extend(satisfied),
            }
        }
        answer
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

/// The tools whose calls can meet a policy's resource scope, or `None` when a call of any
/// tool may (no scope, a type test, or a scope this does not recognise). A call's resource is
/// `Aegis::ToolAction::"<tool>::<action>"` and its only ancestor `Aegis::Tool::"<tool>"`
/// ([`PolicyResource`]), so:
/// - `in`/`==` a tool: only that tool's calls (`==` a tool never holds at all);
/// - `in`/`==` a tool action: only that action's calls. A tool name may itself contain the
///   separator, so every place it occurs in the id names a candidate tool.
fn scoped_tools(policy: &Policy) -> Option<Vec<String>> {
    let vocabulary = &*VOCABULARY;
    let scope = match policy.resource_constraint() {
        ResourceConstraint::In(uid)
        | ResourceConstraint::Eq(uid)
        | ResourceConstraint::IsIn(_, uid) => uid,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => return None,
    };
    let id = scope.id().unescaped();
    if scope.type_name() == &vocabulary.tool_type {
        return Some(vec![id.to_owned()]);
    }
    if scope.type_name() != &vocabulary.tool_action_type {
        return None;
    }
    let tools: Vec<String> = (0..id.len())
        .filter(|&at| id.as_bytes()[at..].starts_with(TOOL_ACTION_SEPARATOR.as_bytes()))
        .map(|at| id[..at].to_owned())
        .collect();
    (!tools.is_empty()).then_some(tools)
}

/// Policy ids in a stable order (Cedar reports them in hash-set order), as written. Cedar's
/// `Display` of an id escapes it a char at a time (more work than the rest of an outcome),
/// and escapes nothing in ours: tenants' ids pass [`validate_policy_id`], the default pack's
/// are ours (`default_pack_ids_print_as_written`, `tenant_ids_print_as_written`).
fn sorted_ids(ids: &[&PolicyId]) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .iter()
        .map(|id| AsRef::<str>::as_ref(*id).to_owned())
        .collect();
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

/// The call's request and entities: the entity set of its agent and tool action (kept for
/// a registered action, `entity_sets.rs`), and the context.
fn build_request(input: &PolicyInput<'_>) -> Result<(Request, Arc<Entities>), String> {
    let entities = entity_sets::entity_set(input.principal, input.resource, input.registered)?;

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
    let request = Request::new(
        input.principal.uid.clone(),
        VOCABULARY.call_action.clone(),
        input.resource.uid.clone(),
        context,
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok((request, entities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The active agent `agt_1`, at each risk tier.
    static AGENTS: LazyLock<Vec<PolicyPrincipal>> = LazyLock::new(|| {
        RiskTier::ALL
            .iter()
            .map(|tier| PolicyPrincipal::new("agt_1", *tier, AgentStatus::Active))
            .collect()
    });
    static MERGE: LazyLock<PolicyResource> =
        LazyLock::new(|| PolicyResource::new("github", "merge_pull_request"));

    fn agent(tier: RiskTier) -> &'static PolicyPrincipal {
        AGENTS
            .iter()
            .find(|agent| agent.risk_tier() == tier)
            .expect("one agent per tier")
    }

    fn input(source_trust: SourceTrust, mutates_state: bool) -> PolicyInput<'static> {
        PolicyInput {
            principal: agent(RiskTier::Low),
            resource: &MERGE,
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
        call.principal = agent(RiskTier::High);
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

    /// The ids a decision names are the ids as written ([`sorted_ids`]), which is what
    /// Cedar prints for every id of the default pack.
    #[test]
    fn default_pack_ids_print_as_written() {
        for policy in &VOCABULARY.default_pack {
            let id = policy.id();
            assert_eq!(id.to_string(), AsRef::<str>::as_ref(id));
        }
    }

    proptest! {
        /// And for every id a tenant may give. Drawn from more characters than an id may
        /// hold, so that widening what `validate_policy_id` accepts to one Cedar escapes
        /// fails here.
        #[test]
        fn tenant_ids_print_as_written(id in "[A-Za-z0-9._:\\-\"\\\\\n\t é{}]{1,12}") {
            if validate_policy_id(&id).is_ok() {
                prop_assert_eq!(PolicyId::new(&id).to_string(), id);
            }
        }
    }

    proptest! {
        #[test]
        fn untrusted_writes_are_never_allowed((trust, mutates, tier, risk, registered) in arb_input()) {
            let engine = PolicyEngine::default_pack();
            let mut call = input(trust, mutates);
            call.principal = agent(tier);
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

    /// Tools and actions of the slicing tests. `a` and `a::b` overlap on purpose: the tool
    /// action `a::b::x` is `x` of `a::b` and `b::x` of `a`.
    const TOOLS: &[&str] = &["t0", "t1", "a", "a::b"];
    const ACTIONS: &[&str] = &["x", "b::x"];
    /// Conditions of generated policies; the last one fails to evaluate (overflow) whenever
    /// the risk score is above 1, to exercise the fail-closed path.
    const CONDITIONS: &[&str] = &[
        "true",
        "context.mutates_state",
        "!context.mutates_state",
        "context.registered",
        r#"principal.risk_tier == "high""#,
        r#"context.source_trust == "untrusted_external""#,
        "context.risk_score > 40",
        r#"resource.action == "x""#,
        r#"context has target && context.target like "pay*""#,
        "context.risk_score * 9223372036854775807 > 1",
    ];

    /// A resource scope: `(kind, tool, action)`, see [`scope_text`].
    type Scope = (u8, &'static str, &'static str);

    fn scope_text((kind, tool, action): Scope) -> String {
        match kind {
            0 => "resource".into(),
            1 => format!(r#"resource in Aegis::Tool::"{tool}""#),
            2 => format!(r#"resource == Aegis::ToolAction::"{tool}::{action}""#),
            3 => format!(r#"resource in Aegis::ToolAction::"{tool}::{action}""#),
            4 => "resource is Aegis::ToolAction".into(),
            _ => format!(r#"resource is Aegis::ToolAction in Aegis::Tool::"{tool}""#),
        }
    }

    /// `(forbid, approval, scope, condition)`
    type GeneratedPolicy = (bool, bool, Scope, &'static str);

    fn arb_policy() -> impl Strategy<Value = GeneratedPolicy> {
        (
            any::<bool>(),
            any::<bool>(),
            (
                0u8..6,
                prop::sample::select(TOOLS),
                prop::sample::select(ACTIONS),
            ),
            prop::sample::select(CONDITIONS),
        )
    }

    fn documents(policies: &[GeneratedPolicy]) -> Vec<PolicyDocument> {
        policies
            .iter()
            .enumerate()
            .map(|(i, &(forbid, approval, scope, condition))| {
                let annotation = if forbid && approval {
                    "@outcome(\"require_approval\")\n"
                } else {
                    ""
                };
                let effect = if forbid { "forbid" } else { "permit" };
                PolicyDocument {
                    id: format!("p{i}"),
                    text: format!(
                        "{annotation}{effect} (principal, action, {}) when {{ {condition} }};",
                        scope_text(scope)
                    ),
                }
            })
            .collect()
    }

    /// Everything a generated call varies: tier, tool, action, trust, writes, risk, score,
    /// registered, target.
    type GeneratedCall = (
        RiskTier,
        &'static str,
        &'static str,
        SourceTrust,
        bool,
        ActionRisk,
        u8,
        bool,
        Option<&'static str>,
    );

    fn arb_call() -> impl Strategy<Value = GeneratedCall> {
        (
            prop::sample::select(RiskTier::ALL),
            prop::sample::select([TOOLS, &["elsewhere"]].concat()),
            prop::sample::select(ACTIONS),
            prop::sample::select(SourceTrust::ALL),
            any::<bool>(),
            prop::sample::select(ActionRisk::ALL),
            0u8..=100,
            any::<bool>(),
            proptest::option::of(prop::sample::select(&["payments#1", "docs"][..])),
        )
    }

    /// Sorted ids, for comparing sets Cedar reports in no particular order.
    fn sorted<'a>(ids: impl IntoIterator<Item = &'a PolicyId>) -> Vec<String> {
        let mut ids: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
        ids.sort();
        ids
    }

    proptest! {
        /// Slicing by resource scope changes nothing: the sliced engine answers every call as
        /// the same engine unsliced, and its combined slices give the decision and the
        /// determining policies Cedar gives for the whole set.
        #[test]
        fn the_sliced_set_answers_as_the_whole_set(
            policies in prop::collection::vec(arb_policy(), 0..12),
            calls in prop::collection::vec(arb_call(), 1..8),
        ) {
            let docs = documents(&policies);
            let sliced = PolicyEngine::compile(&docs).expect("generated policies validate");
            let whole = PolicyEngine::compile_sliced(&docs, |_| None).expect("the same set");
            prop_assert!(whole.by_tool.is_empty());
            for (tier, tool, action, trust, mutates, risk, score, registered, target) in calls {
                let principal = PolicyPrincipal::new("agt_1", tier, AgentStatus::Active);
                let resource = PolicyResource::new(tool, action);
                let call = PolicyInput {
                    principal: &principal,
                    resource: &resource,
                    target,
                    source_trust: trust,
                    mutates_state: mutates,
                    risk,
                    risk_score: score,
                    registered,
                };
                prop_assert_eq!(sliced.evaluate(&call), whole.evaluate(&call), "{:?}", call);

                let (request, entities) = build_request(&call).expect("a well-formed call");
                let cedar = Authorizer::new().is_authorized(&request, &whole.shared.all, &entities);
                let answer = sliced.authorize(
                    &request,
                    &entities,
                    sliced.by_tool.get(tool),
                    |slice| &slice.all,
                );
                prop_assert_eq!(answer.allowed(), cedar.decision() == Decision::Allow);
                prop_assert_eq!(sorted(answer.determining()), sorted(cedar.diagnostics().reason()));
                prop_assert_eq!(
                    answer.error.is_some(),
                    cedar.diagnostics().errors().next().is_some()
                );
            }
        }
    }

    /// The measured case of the issue: 300 policies scoped to other tools leave a call of
    /// `github` with the default pack alone.
    #[test]
    fn policies_scoped_to_other_tools_are_not_evaluated_for_a_call() {
        let docs: Vec<PolicyDocument> = (0..300)
            .map(|n| PolicyDocument {
                id: format!("tool{n}-writes"),
                text: format!(
                    r#"forbid (principal, action, resource in Aegis::Tool::"tool{n}") when {{ context.mutates_state }};"#
                ),
            })
            .collect();
        let engine = PolicyEngine::compile(&docs).unwrap();
        assert_eq!(engine.by_tool.len(), 300);
        assert!(
            engine
                .by_tool
                .values()
                .all(|s| s.all.policies().count() == 1)
        );
        assert!(!engine.by_tool.contains_key("github"));
        assert_eq!(
            engine.shared.all.policies().count(),
            VOCABULARY.default_pack.len()
        );

        let write = input(SourceTrust::TrustedInternalSigned, true);
        assert_eq!(engine.evaluate(&write).verdict, Verdict::Allow);
        let tool7 = PolicyResource::new("tool7", "merge_pull_request");
        let outcome = engine.evaluate(&PolicyInput {
            resource: &tool7,
            ..write
        });
        assert_eq!(outcome.verdict, Verdict::Deny);
        assert_eq!(outcome.matched_policies, vec!["tool7-writes"]);
    }

    #[test]
    fn a_tool_action_scope_goes_to_every_tool_its_id_can_name() {
        let engine = PolicyEngine::compile(&[
            PolicyDocument {
                id: "one-action".into(),
                text: r#"permit (principal, action, resource == Aegis::ToolAction::"a::b::x");"#
                    .into(),
            },
            PolicyDocument {
                id: "any-tool".into(),
                text: r#"permit (principal, action, resource is Aegis::ToolAction);"#.into(),
            },
        ])
        .unwrap();
        let mut tools: Vec<&str> = engine.by_tool.keys().map(String::as_str).collect();
        tools.sort();
        assert_eq!(tools, vec!["a", "a::b"]);
        assert!(
            engine
                .shared
                .all
                .policy(&PolicyId::new("any-tool"))
                .is_some()
        );
    }
}
