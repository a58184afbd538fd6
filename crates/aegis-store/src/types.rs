use aegis_core::correlate::ExfiltrationReads;
use aegis_core::model::{
    ActionRisk, AgentStatus, AutonomyLevel, RiskTier, Role, Severity, SourceTrust, Verdict,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A tenant id. Only credentials (and `aegis init`) produce one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Wraps an id already checked by [`TenantId::validate`] or read from storage.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Tenant ids are 1–64 characters of ASCII letters, digits, `-`, `_` and `.`.
    pub fn validate(id: &str) -> Result<(), &'static str> {
        if id.is_empty() || id.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("may contain only ASCII letters, digits, '-', '_' and '.'");
        }
        Ok(())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a secret (agent token or operator key). Secrets themselves are never stored.
pub type SecretHash = [u8; 32];

/// Risk-tier escalation settings (`GET|PUT /v1/tenants/risk-escalation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RiskEscalation {
    pub denial_threshold: u32,
    pub window_minutes: u32,
}

impl Default for RiskEscalation {
    fn default() -> Self {
        RiskEscalation {
            denial_threshold: 5,
            window_minutes: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    pub id: TenantId,
    pub risk_escalation: RiskEscalation,
    /// `tenants.soc_autonomy_level`; `None` means the gateway default applies.
    pub autonomy_override: Option<AutonomyLevel>,
    pub deny_storm: DenyStormOverride,
    /// Which actions are reads for `data_exfiltration` (`tenants.exfiltration_reads`).
    pub exfiltration_reads: ExfiltrationReads,
    pub approvals: crate::approvals::ApprovalSettings,
    /// Every agent's token bucket, unless the agent has its own (`Agent::rate_limits`).
    pub rate_limits: RateLimits,
    /// Most calls that change state one agent may make per hour; `None`: no budget.
    pub mutating_per_hour: Option<u32>,
    pub created_at_ms: i64,
}

/// A token bucket of the action plane: `per_sec` calls a second, `burst` at once. `None`
/// for `per_sec` means no limit; `None` for `burst` means one second's worth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimits {
    pub per_sec: Option<u32>,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct NewOperatorKey {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    pub secret_hash: SecretHash,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorKey {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub role: Role,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub risk_tier: RiskTier,
    pub token_hash: SecretHash,
    pub actor: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub status: AgentStatus,
    /// Why the agent is frozen or revoked, as the operator or the SOC said.
    pub status_reason: Option<String>,
    pub risk_tier: RiskTier,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Paging cursor: agents list newest first, by this value.
    pub cursor: i64,
    /// Bumped by every change of the agent's row (status, risk tier, token rotation): a
    /// decision made from an older version is stale (see [`NewDecision::agent_version`]).
    pub version: i64,
    /// The agent's own token bucket, in place of the tenant's; `per_sec: None`: none.
    pub rate_limits: RateLimits,
}

/// Who a presented agent token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    /// The agent's current token.
    Current(Agent),
    /// A token that was rotated away, or whose agent was revoked: it must answer 401.
    Dead {
        tenant_id: TenantId,
        agent_id: String,
    },
}

/// A lifecycle change of an agent, made by `actor` (an operator key id or the SOC).
#[derive(Debug, Clone)]
pub struct AgentChange {
    pub kind: AgentChangeKind,
    pub actor: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub enum AgentChangeKind {
    Freeze { reason: String },
    Unfreeze,
    Revoke { reason: Option<String> },
    RotateToken { new_token_hash: SecretHash },
    SetRiskTier { risk_tier: RiskTier },
    SetRateLimits { rate_limits: RateLimits },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolAction {
    pub action: String,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    /// Sends data outside the organisation (e-mail, upload, webhook): the "send" half of
    /// the data-exfiltration rule.
    pub egress: bool,
    /// Returns data the agent could leak (a data source): the "read" half of the rule.
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredToolAction {
    pub tool: String,
    #[serde(flatten)]
    pub action: ToolAction,
}

/// Cursor paging, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only items older than this cursor (exclusive).
    pub before: Option<i64>,
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            before: None,
            limit: 50,
        }
    }
}

impl Page {
    /// What to read for this page: its rows and one more, which only tells whether another
    /// page follows ([`Page::split`]).
    pub fn with_next_row(self) -> Page {
        Page {
            limit: self.limit + 1,
            ..self
        }
    }

    /// Rows read newest first with [`Page::with_next_row`] → this page's rows and, when the
    /// extra row says another page follows, its cursor (the last row's).
    pub fn split<S>(
        self,
        mut rows: Vec<S>,
        cursor_of: impl Fn(&S) -> i64,
    ) -> (Vec<S>, Option<i64>) {
        let next_cursor = if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(cursor_of)
        } else {
            None
        };
        (rows, next_cursor)
    }
}

/// Tracing context of a multi-hop run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TraceContext {
    pub run_id: Option<String>,
    pub trace_id: Option<String>,
    pub parent_run_id: Option<String>,
}

/// A decision to record, fully decided by the caller.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub id: String,
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub request_id: Option<String>,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    pub mutates_state: bool,
    /// The registered action sends data outside (see `ToolAction::egress`).
    pub egress: bool,
    /// The registered action is a data source (see `ToolAction::sensitive`).
    pub sensitive: bool,
    /// A deny issued only because the agent is frozen: recorded, but counted towards no
    /// escalation and no SOC rule.
    pub contained: bool,
    /// A deny of the gateway's rate limit or budget: counted like any deny, but a retry
    /// with the same `request_id` meets the limit afresh instead of this answer.
    pub throttled: bool,
    pub risk: ActionRisk,
    pub source_trust: SourceTrust,
    pub verdict: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    pub action_hash: String,
    pub trace: TraceContext,
    pub created_at_ms: i64,
    /// The tenant's escalation settings at decision time (denies only count toward them).
    pub escalation: RiskEscalation,
    /// The [`Agent::version`] the decision was made from. The writer compares it with the
    /// stored one in the transaction that records the decision: if the agent changed since,
    /// anything but a deny is recorded as a deny instead (`crate::fence`).
    pub agent_version: i64,
    /// Set only when the policy answered `require_approval` or the call named an approval:
    /// the writer then applies the approval rules in the decision's transaction
    /// (`crate::approvals`).
    pub approval: Option<crate::approvals::ApprovalGate>,
    /// The pinned definition an MCP call was decided against (its receipt names it).
    pub tool_definition_hash: Option<String>,
}

/// What recording produced: where the decision sits in the log and its receipt. For a retry
/// (`replayed`), those of the decision recorded the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDecision {
    pub event_seq: i64,
    pub receipt_id: String,
    pub receipt_seq: u64,
    pub receipt_hash: String,
    pub prev_hash: String,
    /// Set when this deny stepped the agent's risk tier up.
    pub escalated_to: Option<RiskTier>,
    /// Set when the agent had changed since the decision was made: the call was recorded
    /// as a deny with this reason, and must be answered so.
    pub stale_agent: Option<String>,
    /// The approval the decision met, and what it made of the decision: the verdict and
    /// reason recorded are those of [`RecordedDecision::verdict`].
    pub approval: Option<crate::approvals::ApprovalAnswer>,
    /// The verdict and reason as recorded (after the fence and the approval gate).
    pub verdict: Verdict,
    pub reason: String,
    pub matched_policies: Vec<String>,
    /// Set when the agent had already asked with this `request_id` (`crate::requests`):
    /// nothing was recorded, and the call must be answered with this earlier decision.
    pub replayed: Option<PriorDecision>,
}

/// A decision recorded earlier for the same agent and `request_id`, answered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorDecision {
    pub decision_id: String,
    pub verdict: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub event_seq: i64,
    pub agent_id: String,
    pub request_id: Option<String>,
    pub tool: String,
    pub action: String,
    pub resource: Option<String>,
    pub mutates_state: bool,
    pub risk: ActionRisk,
    pub source_trust: SourceTrust,
    pub verdict: Verdict,
    pub risk_score: u8,
    pub reason: String,
    pub matched_policies: Vec<String>,
    pub action_hash: String,
    pub trace: TraceContext,
    pub receipt_id: String,
    pub created_at_ms: i64,
}

/// Filters of `GET /v1/decisions`; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    pub agent_id: Option<String>,
    pub verdict: Option<Verdict>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub run_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub page: Page,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub key_id: String,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    pub created_at_ms: i64,
}

/// Which events a read of the log by kind returns ([`crate::EventLog::events_of_kinds`]).
#[derive(Debug, Clone, Copy)]
pub struct EventKinds {
    pub(crate) names: &'static [&'static str],
    pub(crate) allowed_decisions: bool,
}

impl EventKinds {
    /// Every event whose kind is one of `names`.
    pub const fn of(names: &'static [&'static str]) -> Self {
        EventKinds {
            names,
            allowed_decisions: true,
        }
    }

    /// The same events but the allowed decisions: those whose decision row says `allow`.
    /// An allowed call notifies nobody, and allows are most of the log.
    pub const fn except_allows(self) -> Self {
        EventKinds {
            names: self.names,
            allowed_decisions: false,
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub kind: String,
    pub agent_id: Option<String>,
    pub subject_id: Option<String>,
    pub payload: EventPayload,
    /// Why the payload could not be read, when it could not (an edit of the database or
    /// damage); the payload is then `null`. Readers skip such an event rather than stop at
    /// it; the SOC raises an `event_unreadable` alert for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    pub created_at_ms: i64,
}

/// What an event says. Both forms serialise to the same JSON an event's payload has always
/// had; they differ in what reading one costs, and `==` tells them apart (compare
/// [`EventPayload::as_json`] to compare what they say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EventPayload {
    /// A decision's event, rebuilt from its decisions row: the SOC reads every decision, and
    /// its fields are read where they are instead of through a JSON tree built for each.
    Decision(DecisionEvent),
    /// Any other event's payload as recorded, and a decision's stored with its payload
    /// (before migration `0020_decision_event_from_decision`, or written out by pruning).
    Recorded(serde_json::Value),
}

impl EventPayload {
    /// A payload that could not be read ([`Event::unreadable`]).
    pub const UNREADABLE: EventPayload = EventPayload::Recorded(serde_json::Value::Null);

    /// The decision a `decision` event records, from either form: a recorded payload
    /// written before a field existed reads that field as absent.
    pub fn decision(&self) -> Result<std::borrow::Cow<'_, DecisionEvent>, serde_json::Error> {
        match self {
            EventPayload::Decision(decision) => Ok(std::borrow::Cow::Borrowed(decision)),
            EventPayload::Recorded(value) => {
                DecisionEvent::deserialize(value).map(std::borrow::Cow::Owned)
            }
        }
    }

    /// The payload as JSON; borrowed unless it is a decision's.
    pub fn as_json(&self) -> std::borrow::Cow<'_, serde_json::Value> {
        match self {
            EventPayload::Decision(decision) => std::borrow::Cow::Owned(
                serde_json::to_value(decision).expect("strings, flags and enums serialise"),
            ),
            EventPayload::Recorded(value) => std::borrow::Cow::Borrowed(value),
        }
    }
}

/// The JSON text of the payload.
impl fmt::Display for EventPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// The payload of a `decision` event, in the order its fields have always been written.
/// Fields added after the first release read as absent from a payload recorded before them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEvent {
    pub decision_id: String,
    pub decision: Verdict,
    pub tool: String,
    pub action: String,
    pub mutates_state: bool,
    #[serde(default)]
    pub egress: bool,
    #[serde(default)]
    pub sensitive: bool,
    /// Refused only because the agent is frozen (see `aegis_core::correlate`).
    #[serde(default)]
    pub contained: bool,
    pub risk: ActionRisk,
    pub risk_score: u8,
    pub source_trust: SourceTrust,
    pub run_id: Option<String>,
    /// The approval a `require_approval` decision asked for, or an allow used.
    #[serde(default)]
    pub approval_id: Option<String>,
}

/// Kinds of events on the log.
pub mod event_kind {
    pub const DECISION: &str = "decision";
    pub const AGENT_CREATED: &str = "agent.created";
    pub const AGENT_FROZEN: &str = "agent.frozen";
    pub const AGENT_UNFROZEN: &str = "agent.unfrozen";
    pub const AGENT_REVOKED: &str = "agent.revoked";
    pub const AGENT_TOKEN_ROTATED: &str = "agent.token_rotated";
    pub const AGENT_RISK_TIER_CHANGED: &str = "agent.risk_tier_changed";
    pub const AGENT_RATE_LIMITS_CHANGED: &str = "agent.rate_limits_changed";
    pub const TOOL_REGISTERED: &str = "tool.registered";
    pub const POLICY_PUT: &str = "policy.put";
    pub const POLICY_DELETED: &str = "policy.deleted";
    pub const KEY_CREATED: &str = "key.created";
    pub const KEY_REVOKED: &str = "key.revoked";
    pub const TENANT_CREATED: &str = "tenant.created";
    pub const TENANT_SETTINGS_CHANGED: &str = "tenant.settings_changed";
    pub const WEBHOOK_CREATED: &str = "webhook.created";
    pub const WEBHOOK_DELETED: &str = "webhook.deleted";
    pub const AUTH_DEAD_TOKEN: &str = "auth.dead_token";
    pub const ALERT_RAISED: &str = "alert.raised";
    pub const INCIDENT_OPENED: &str = "incident.opened";
    pub const INCIDENT_ACKNOWLEDGED: &str = "incident.acknowledged";
    pub const INCIDENT_CLOSED: &str = "incident.closed";
    pub const RESPONSE_ACTION: &str = "response.action";
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    pub const APPROVAL_APPROVED: &str = "approval.approved";
    pub const APPROVAL_REJECTED: &str = "approval.rejected";
    pub const APPROVAL_EXPIRED: &str = "approval.expired";
    pub const APPROVAL_CONSUMED: &str = "approval.consumed";
    pub const APPROVAL_MISMATCH: &str = "approval.mismatch";
}

/// Per-tenant overrides of the deny-storm rule; `None` means the gateway default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DenyStormOverride {
    pub threshold: Option<u32>,
    pub window_secs: Option<u32>,
}

/// Status of an incident: `open` → `acknowledged` → `closed`.
pub mod incident_status {
    pub const OPEN: &str = "open";
    pub const ACKNOWLEDGED: &str = "acknowledged";
    pub const CLOSED: &str = "closed";
}

/// An alert raised by a detection rule from one event.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub severity: Severity,
    pub agent_id: Option<String>,
    pub source_seq: i64,
    pub summary: String,
    pub created_at_ms: i64,
    /// Detections it counts when raised: its own and those of its window in the same batch
    /// (`aegis_core::correlate::AgentCorrelator::count_alert`).
    pub count: i64,
}

/// More detections counted into an alert an earlier batch raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRepeat {
    pub tenant_id: TenantId,
    pub alert_id: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub severity: Severity,
    pub agent_id: Option<String>,
    pub source_seq: i64,
    pub summary: String,
    pub event_seq: i64,
    pub created_at_ms: i64,
    /// Detections of its kind for its agent within its window, itself included.
    pub count: i64,
}

/// What the response engine does when it opens an incident (by autonomy level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutomaticResponse {
    /// Freeze the agent with this reason (L3/L4).
    pub freeze: Option<String>,
    /// Raise the agent's risk tier so later writes need approval (L4).
    pub raise_risk_tier: Option<RiskTier>,
    /// Reject the agent's pending approvals (an `approval_flood` contained at L3/L4), each
    /// with its `approval.rejected` event.
    pub reject_pending_approvals: bool,
    /// Record, with this detail, that an MCP tool is blocked for every agent of the tenant
    /// (a `tool_definition_changed` incident at L3/L4): the block itself is the pin, which
    /// withholds the tool until an admin accepts its definition.
    pub block_tool: Option<String>,
}

/// An incident to open, unless its `dedup_key` already exists for the tenant.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub severity: Severity,
    pub agent_id: String,
    pub dedup_key: String,
    pub summary: String,
    /// Event seqs behind it (with the decision each one records).
    pub evidence: Vec<EvidenceRef>,
    /// L2: the action an operator can apply with one call.
    pub recommended_action: Option<serde_json::Value>,
    pub response: AutomaticResponse,
    pub opened_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceRef {
    /// The event joined; the decision it records, if any, is read through it.
    pub event_seq: i64,
}

/// One more event behind an existing incident.
#[derive(Debug, Clone)]
pub struct EvidenceAppend {
    pub tenant_id: TenantId,
    pub incident_id: String,
    pub evidence: EvidenceRef,
    /// Freeze the incident's agent again with this reason, if it is active when the batch
    /// applies and the incident is not closed: an agent unfrozen while the incident that
    /// contained it goes on (L3/L4).
    pub recontain: Option<String>,
}

/// Everything one pass of the SOC consumer produced, applied atomically with its cursor.
#[derive(Debug, Clone, Default)]
pub struct SocBatch {
    pub consumer: String,
    /// The cursor this batch was computed from. If the stored cursor is already past it,
    /// another consumer (a deposed or a new leader) got there first: the batch is refused.
    pub after: i64,
    /// The cursor after this batch: the highest event seq it covers.
    pub cursor: i64,
    pub alerts: Vec<NewAlert>,
    pub alert_repeats: Vec<AlertRepeat>,
    pub incidents: Vec<NewIncident>,
    pub evidence: Vec<EvidenceAppend>,
    /// Correlation state of the agents this batch touched.
    pub correlator_states: Vec<CorrelatorStateRecord>,
}

/// The saved correlation windows of one agent: JSON text the SOC writes and reads, opaque to
/// the store (so the SOC serialises it straight to text, without building a JSON tree first).
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatorStateRecord {
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub state: String,
}

/// What applying a [`SocBatch`] changed.
#[derive(Debug, Clone, Default)]
pub struct SocApplied {
    /// Incidents actually inserted (others already existed).
    pub opened: Vec<String>,
    /// Agents changed by automatic responses.
    pub agents_changed: Vec<Agent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseActionRecord {
    pub id: String,
    pub incident_id: String,
    pub agent_id: String,
    pub action: String,
    pub mode: String,
    pub actor: String,
    pub detail: String,
    pub event_seq: i64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub severity: Severity,
    pub status: String,
    pub agent_id: String,
    pub summary: String,
    pub recommended_action: Option<serde_json::Value>,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub closed_at_ms: Option<i64>,
    pub closed_by: Option<String>,
    pub close_reason: Option<String>,
    pub event_seq: i64,
    pub evidence_count: i64,
}

/// An incident with a bounded view of its evidence and the response actions taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentDetail {
    pub incident: IncidentRecord,
    pub evidence: EvidenceSummary,
    pub response_actions: Vec<ResponseActionRecord>,
}

/// A decision behind an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceLink {
    pub incident_id: String,
    pub decision_id: String,
}

/// How many evidence items an incident shows from the start of its evidence and from the end
/// (`SocStore::incident`); the rest is paged through [`crate::EvidenceReads::incident_decisions`].
pub const EVIDENCE_SHOWN_FIRST: u32 = 25;
pub const EVIDENCE_SHOWN_RECENT: u32 = 25;

/// One event behind an incident and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceItem {
    pub event_seq: i64,
    pub decision_id: Option<String>,
    pub recorded_at_ms: i64,
}

/// A bounded view of an incident's evidence, however much of it there is (the count is
/// [`IncidentRecord::evidence_count`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceSummary {
    /// The first [`EVIDENCE_SHOWN_FIRST`] items, in log order.
    pub first: Vec<EvidenceItem>,
    /// The most recent [`EVIDENCE_SHOWN_RECENT`] items that are not in `first`, in log order.
    pub recent: Vec<EvidenceItem>,
}

impl EvidenceSummary {
    pub fn earliest(&self) -> Option<&EvidenceItem> {
        self.first.first()
    }

    pub fn latest(&self) -> Option<&EvidenceItem> {
        self.recent.last().or(self.first.last())
    }
}

impl IncidentDetail {
    /// What a narrative of this incident is written from.
    pub fn narrative_basis(&self) -> NarrativeBasis {
        NarrativeBasis {
            status: self.incident.status.clone(),
            evidence_count: self.incident.evidence_count,
            latest_evidence_seq: self.evidence.latest().map(|e| e.event_seq),
            latest_response_seq: self.response_actions.iter().map(|r| r.event_seq).max(),
        }
    }
}

/// The state of an incident a narrative describes. Evidence and response actions are only
/// ever added, so an unchanged basis means unchanged input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarrativeBasis {
    pub status: String,
    pub evidence_count: i64,
    pub latest_evidence_seq: Option<i64>,
    pub latest_response_seq: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<String>,
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub agent_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub page: Page,
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub severity: Option<Severity>,
    pub kind: Option<String>,
    pub agent_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub page: Page,
}

/// An operator's step on an incident.
#[derive(Debug, Clone)]
pub enum IncidentStep {
    Acknowledge,
    Close {
        reason: Option<String>,
    },
    /// Carry out the recommended action (L2).
    ApplyRecommendation,
}

// Notifications.

/// Status of a queued delivery: `pending` → `delivered` | `failed`.
pub mod delivery_status {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
}

/// A webhook subscription to create. `secret` is kept, sealed, only to sign deliveries.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub url: String,
    /// `json` | `slack`.
    pub format: String,
    /// Notification kinds to send; `None` = every kind.
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    /// Who subscribed it (`key:<id>`), for its `webhook.created` event.
    pub actor: String,
    pub created_at_ms: i64,
}

/// A stored subscription (its secret only through `NotificationStore::webhook_signing_secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub tenant_id: TenantId,
    pub url: String,
    pub format: String,
    pub events: Option<Vec<String>>,
    pub created_at_ms: i64,
}

/// A message to queue for one sink.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The `X-Aegis-Delivery` value, stable across retries.
    pub id: String,
    pub tenant_id: TenantId,
    /// `env:json`, `env:slack` or `sub:<subscription id>`.
    pub sink: String,
    pub agent_id: Option<String>,
    /// The exact bytes to POST.
    pub body: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub tenant_id: TenantId,
    pub sink: String,
    pub agent_id: Option<String>,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// Paging cursor (newest first).
    pub cursor: i64,
}

/// A queued delivery as a sink's listing shows it: how it is going, without the body,
/// tenant, sink and agent, which the listing does not show, so a row whose body no longer
/// reads still lists (the delivery worker reads the whole row, [`Delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    pub id: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// Paging cursor (newest first).
    pub cursor: i64,
}

/// What the delivery worker can start now, for [`crate::NotificationStore::claim_deliveries`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryClaim {
    pub now_ms: i64,
    /// Free delivery slots: no more than this many deliveries are claimed.
    pub limit: u32,
    /// No tenant gets more than this many deliveries in flight at once.
    pub per_tenant: u32,
    /// Deliveries the worker has in flight, with their tenants: never claimed again while
    /// there, and counted against their tenant's share.
    pub in_flight: Vec<(String, TenantId)>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered {
        at_ms: i64,
    },
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    /// Not attempted (endpoint paused): try again later without counting an attempt.
    Deferred {
        next_attempt_at_ms: i64,
    },
}

/// Coalescing state of one agent (opaque JSON `pending` owned by the notifier).
#[derive(Debug, Clone, PartialEq)]
pub struct CoalesceRecord {
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub last_sent_at_ms: i64,
    /// The seq of the first event gathered for the agent's next message, if any: that
    /// message holds the agent's notified events from there up to the consumer's cursor, so
    /// they are found again in the log instead of being saved a second time.
    pub pending_from_seq: Option<i64>,
}

/// Everything one pass of the notification consumer produced, applied with its cursor.
#[derive(Debug, Clone, Default)]
pub struct NotifyBatch {
    pub consumer: String,
    /// The cursor this batch was computed from (a fence, as [`SocBatch::after`]).
    pub after: i64,
    pub cursor: i64,
    pub deliveries: Vec<NewDelivery>,
    pub coalesce: Vec<CoalesceRecord>,
}

/// A narrative generated for an incident (advisory text, kept with the incident).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NarrativeRecord {
    pub incident_id: String,
    /// `deterministic`, or `llm:<model>` when an LLM endpoint wrote it.
    pub generated_by: String,
    /// Markdown.
    pub narrative: String,
    /// The ids the narrative cites (incident, agent, decisions, response actions).
    pub evidence: Vec<String>,
    pub generated_at_ms: i64,
    /// What it was written from; `None` for narratives stored before bases were kept.
    pub basis: Option<NarrativeBasis>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn denied_send() -> DecisionEvent {
        DecisionEvent {
            decision_id: "dec_1".into(),
            decision: Verdict::Deny,
            tool: "mail".into(),
            action: "send".into(),
            mutates_state: true,
            egress: true,
            sensitive: false,
            contained: false,
            risk: ActionRisk::High,
            risk_score: 87,
            source_trust: SourceTrust::UntrustedExternal,
            run_id: Some("run_7".into()),
            approval_id: None,
        }
    }

    #[test]
    fn a_rebuilt_decision_prints_as_its_recorded_payload_would() {
        let rebuilt = EventPayload::Decision(denied_send());
        let recorded = EventPayload::Recorded(rebuilt.as_json().into_owned());
        assert_eq!(rebuilt.to_string(), recorded.to_string());
        assert_eq!(recorded.decision().unwrap().into_owned(), denied_send());
    }

    #[test]
    fn a_decision_payload_recorded_before_a_field_existed_reads_it_as_absent() {
        // The payload as the first release wrote it: no egress, sensitive, contained or
        // approval_id.
        let first_release = EventPayload::Recorded(json!({
            "decision_id": "dec_1", "decision": "deny", "tool": "mail", "action": "send",
            "mutates_state": true, "risk": "high", "risk_score": 87,
            "source_trust": "untrusted_external", "run_id": "run_7",
        }));
        let read = first_release.decision().unwrap();
        assert_eq!(
            *read,
            DecisionEvent {
                egress: false,
                ..denied_send()
            }
        );
        let not_a_decision = EventPayload::Recorded(json!({"tool": "mail"}));
        assert!(not_a_decision.decision().is_err());
    }
}
