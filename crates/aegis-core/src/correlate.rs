//! Correlation rules of the SOC plane: many decisions of one agent → incidents.
//!
//! One [`AgentCorrelator`] holds the state of one (tenant, agent). The caller feeds it that
//! agent's decision events in log order ([`AgentCorrelator::observe`]) and gets back
//! [`Finding`]s: [`Finding::Opened`] becomes a new incident, [`Finding::Joined`] appends one seq
//! to the evidence of the open incident it names. Everything runs on *event* time (Unix
//! milliseconds, supplied by the caller); nothing here reads a clock.
//!
//! # Rules
//!
//! | rule | condition, in the trailing window `[t - W, t]` (both ends included) | defaults |
//! |---|---|---|
//! | `deny_storm` | at least `N` denies | 5 in 60 s |
//! | `runaway` | at least `N` decisions of any verdict | 20 in 10 s |
//! | `data_exfiltration` | a read (allowed or `require_approval`) followed by an external send (any verdict) | 5 min |
//! | `trust_escalation` | a deny followed by an allow of the same (tool, action) | 60 s |
//! | `approval_flood` | at least `N` `require_approval` decisions (each asks people) | 10 in 300 s |
//!
//! All five are `high`: flooding people with approval requests until one is approved by
//! mistake is a known attack. Reads and sends are classified by the caller from registered tool
//! metadata ([`ActionClass::of`]); nothing here guesses from names. A denied read does not
//! count towards exfiltration (the agent never got the data), a `require_approval` read does
//! (once approved it runs without another decision, and the approver agreed to a read, not to
//! a send), and a send counts whatever its verdict: the attempt is the signal. For
//! `trust_escalation` only a real `allow` completes the pattern.
//!
//! # Containment refusals
//!
//! A decision with [`CorrelationEvent::contained`] set is a deny issued only because the agent
//! is frozen. It is recorded like any decision, but it is the containment working, not new
//! behaviour: it never opens an incident or counts towards opening one, is neither a
//! precursor nor a trigger of the sequence rules, and (in the store) does not count towards
//! risk-tier escalation. While a threshold incident (`deny_storm`, `runaway`) is open it joins
//! it as an attempt, and it keeps that incident from ending: an agent that keeps retrying
//! while frozen has not gone quiet.
//!
//! # Threshold rules: one storm, one incident
//!
//! With `c` the number of counted events in the trailing window `[t - W, t]` *before* the
//! event at `t` (containment refusals included unless said otherwise):
//!
//! * **Open.** A counted event that is not a containment refusal opens an incident when none
//!   of the rule is open for the agent and the window, this event included, holds at least
//!   `N` counted events that are not containment refusals.
//! * **Join.** While the incident is open, every counted event joins it.
//! * **End.** The incident ends at the first event (of any kind) that finds `2·c < N` — fewer
//!   than half the threshold left in the window, i.e. the agent has gone quiet — or when the
//!   caller reports it closed ([`AgentCorrelator::incident_closed`], an operator's close). Only
//!   then can the rule open again, and it needs `N` again.
//!
//! The gap between opening at `N` and ending below `N/2` is the hysteresis: a storm running
//! just above (or dipping just below) the threshold rate stays one incident, where a rule
//! that re-armed whenever the count fell to `N - 1` opened a new incident on almost every
//! deny. A storm that went quiet and started again is a new incident; so is one that goes on
//! past an operator's close (it is not silently added to the closed one).
//!
//! **Threshold changes** ([`AgentCorrelator::restore`] with a new configuration) apply at
//! once to the true count: the detector keeps every counted event of the window (up to
//! [`MAX_BURST_THRESHOLD`], the highest `N` accepted), not only the last `N`. A longer window
//! counts only the events the shorter one still held.
//!
//! # Sequence rules
//!
//! For `data_exfiltration` and `trust_escalation` the condition is "a matched pair completed
//! within the trailing window": an external send with a counted read at most W before it, or
//! an allow with a deny of the same (tool, action) at most W before it. The rule fires once,
//! at the trigger that completes the first pair; later matched triggers join while a matched
//! trigger lies within W; after that (or after an operator's close) a new pair is a new
//! incident. A burst of sends after one read is one incident. `trust_escalation` is tracked
//! per (tool, action), each lane with its own incident.
//!
//! # Evidence
//!
//! An `Opened` threshold incident carries every counted event of the window that is not a
//! containment refusal, oldest first, the trigger last: `N` seqs, or more when `N` was just
//! lowered or the storm outlived a close (such seqs then belong to both incidents). Each
//! later counted event joins with its own seq. An `Opened` sequence incident carries the
//! precursor seqs still in the window, then the trigger seq; a later matched trigger joins
//! the precursors not yet reported, then itself. A `Joined` names its incident by
//! `opened_by`, the trigger seq of the `Opened` that created it. No seq is reported twice to
//! one incident.
//!
//! # Replays, restarts and ordering
//!
//! * Idempotence: an event whose `seq` is not above the last seq seen is ignored, so replaying
//!   events already observed is a no-op.
//! * Findings are a pure function of the events (and of the closes and configurations, given
//!   at their place in the log). The trigger seq of an `Opened` is therefore a stable
//!   idempotency key: if the consumer crashes between writing an incident and advancing its
//!   cursor, observing the event again yields the same `Opened`.
//! * Restart: persist [`AgentCorrelator::snapshot`] (serde) with the cursor and
//!   [`AgentCorrelator::restore`] it.
//! * Event times should be non-decreasing in seq: the stores stamp each event with its commit
//!   time, never earlier than the event before it. Should an earlier time arrive anyway, it is
//!   clamped to the latest time already seen for the agent (deterministic, never drops an
//!   event, keeps windows monotone).
//!
//! # Alert coalescing
//!
//! Detection rules raise alerts from single decisions (the SOC's `detect.rs`); an agent
//! retrying a denied call would raise one per deny. [`AgentCorrelator::count_alert`] makes
//! that one alert per agent, kind and severity per window: the first detection raises the
//! alert and opens the window ([`CorrelationConfig::alert_window`], 60 s), every later one
//! within the window of that first one counts into it ([`AlertCount::Repeat`]), and the
//! first after it raises a new alert. Severity is part of the key so a more severe detection
//! (a suspected-malicious source) is never hidden in a lesser alert. Incidents are not
//! affected: the rules above see every decision.
//!
//! # Bounded memory
//!
//! A threshold detector keeps at most [`MAX_BURST_THRESHOLD`] (time, seq) pairs; a sequence
//! rule keeps at most `max_precursors` precursors per lane and `max_keys` lanes (the least
//! recently active lane is evicted first; under that much key churn an evicted lane may open
//! a fresh incident later). Everything older than the window is pruned at every event, and
//! once [`AgentCorrelator::is_idle_at`] holds the whole correlator can be dropped.
//!
//! ```
//! use aegis_core::correlate::{ActionClass, AgentCorrelator, CorrelationConfig, CorrelationEvent, Finding, RuleKind};
//! use aegis_core::model::Verdict;
//!
//! let mut agent = AgentCorrelator::new(CorrelationConfig::default());
//! let mut findings = Vec::new();
//! for seq in 1..=6 {
//!     findings.extend(agent.observe(CorrelationEvent {
//!         seq,
//!         at_ms: 1_000 * seq,
//!         verdict: Verdict::Deny,
//!         tool: "github",
//!         action: "merge_pull_request",
//!         class: ActionClass::Other,
//!         contained: false,
//!     }));
//! }
//! assert_eq!(findings.len(), 2);
//! assert!(matches!(&findings[0], Finding::Opened { rule: RuleKind::DenyStorm, evidence, .. } if evidence == &[1, 2, 3, 4, 5]));
//! assert_eq!(findings[1], Finding::Joined { rule: RuleKind::DenyStorm, opened_by: 5, seq: 6 });
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Severity, Verdict};

mod stamps;

/// The highest threshold `N` a threshold rule accepts, and so the most counted events its
/// detector keeps per agent: enough for any `N` to apply to a running window.
pub const MAX_BURST_THRESHOLD: usize = 1_000;

crate::model::wire_enum! {
    /// A correlation rule; the wire spelling is the incident `kind`.
    RuleKind {
        DenyStorm => "deny_storm",
        Runaway => "runaway",
        DataExfiltration => "data_exfiltration",
        TrustEscalation => "trust_escalation",
        ApprovalFlood => "approval_flood",
    }
}

impl RuleKind {
    /// Severity of the incidents this rule opens.
    pub const fn severity(self) -> Severity {
        match self {
            RuleKind::DenyStorm
            | RuleKind::Runaway
            | RuleKind::DataExfiltration
            | RuleKind::TrustEscalation
            | RuleKind::ApprovalFlood => Severity::High,
        }
    }
}

crate::model::wire_enum! {
    /// What a decided action does with data, from the tool's registered metadata:
    /// `read` (data the agent could leak), `external_send` (sends data outside the tenant:
    /// email, webhook, upload, public post), or `other`.
    ActionClass {
        Read => "read",
        ExternalSend => "external_send",
        Other => "other",
    }
}

crate::model::wire_enum! {
    /// Which actions are the "read" half of `data_exfiltration`, per tenant: `sensitive`
    /// (the default) counts only actions registered as data sources (`sensitive: true`);
    /// `non_mutating` is the older rule, any action that does not change state (a weather
    /// forecast followed by an e-mail then fires).
    ExfiltrationReads {
        Sensitive => "sensitive",
        NonMutating => "non_mutating",
    }
}

/// The registered facts of an action that classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionFacts {
    pub egress: bool,
    pub sensitive: bool,
    pub mutates_state: bool,
}

impl ActionClass {
    /// An action that sends data outside is a send; a data source (or, under
    /// [`ExfiltrationReads::NonMutating`], any action that changes nothing) is a read.
    pub fn of(facts: ActionFacts, reads: ExfiltrationReads) -> ActionClass {
        let read = match reads {
            ExfiltrationReads::Sensitive => facts.sensitive,
            ExfiltrationReads::NonMutating => facts.sensitive || !facts.mutates_state,
        };
        if facts.egress {
            ActionClass::ExternalSend
        } else if read {
            ActionClass::Read
        } else {
            ActionClass::Other
        }
    }
}

/// One decision of the agent, as the correlator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationEvent<'a> {
    /// The event-log sequence number; strictly increasing per database.
    pub seq: i64,
    /// Event time, Unix milliseconds: when the event was committed.
    pub at_ms: i64,
    pub verdict: Verdict,
    pub tool: &'a str,
    pub action: &'a str,
    pub class: ActionClass,
    /// A deny issued only because the agent is frozen (see the module docs).
    pub contained: bool,
}

/// What one event did to the incidents of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A new incident: the seqs behind it, in log order; the last one is the trigger.
    Opened {
        rule: RuleKind,
        severity: Severity,
        evidence: Vec<i64>,
    },
    /// One more seq for the evidence of the open incident of `rule` that the event at
    /// `opened_by` opened.
    Joined {
        rule: RuleKind,
        opened_by: i64,
        seq: i64,
    },
}

impl Finding {
    /// The rule behind this finding.
    pub fn rule(&self) -> RuleKind {
        match self {
            Finding::Opened { rule, .. } | Finding::Joined { rule, .. } => *rule,
        }
    }

    /// The seq that opened the incident this finding belongs to (an `Opened`'s last
    /// evidence): with the rule and the agent, a stable idempotency key of the incident.
    pub fn opened_by(&self) -> i64 {
        match self {
            Finding::Opened { evidence, .. } => evidence.last().copied().unwrap_or_default(),
            Finding::Joined { opened_by, .. } => *opened_by,
        }
    }
}

/// A trailing-window threshold: `threshold` events within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstConfig {
    /// N; taken within 1..=[`MAX_BURST_THRESHOLD`].
    pub threshold: usize,
    pub window: Duration,
}

/// A precursor followed by a trigger within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowConfig {
    pub window: Duration,
    /// Most precursors kept (and reported) per lane; 0 is treated as 1.
    pub max_precursors: usize,
    /// Most lanes (distinct keys) kept per agent; 0 is treated as 1.
    pub max_keys: usize,
}

/// Thresholds of every rule, for one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationConfig {
    pub deny_storm: BurstConfig,
    pub runaway: BurstConfig,
    pub data_exfiltration: FollowConfig,
    pub trust_escalation: FollowConfig,
    pub approval_flood: BurstConfig,
    /// How long an alert counts later detections of its kind for its agent (module docs,
    /// "Alert coalescing").
    pub alert_window: Duration,
}

impl Default for CorrelationConfig {
    /// 5 denies in 60 s, 20 decisions in 10 s, read → send within 5 min, deny → allow of the
    /// same tool/action within 60 s; 16 precursors per lane, 64 lanes; one alert per agent,
    /// kind and severity per 60 s.
    fn default() -> Self {
        const FOLLOW_LIMITS: FollowConfig = FollowConfig {
            window: Duration::ZERO,
            max_precursors: 16,
            max_keys: 64,
        };
        CorrelationConfig {
            deny_storm: BurstConfig {
                threshold: 5,
                window: Duration::from_secs(60),
            },
            runaway: BurstConfig {
                threshold: 20,
                window: Duration::from_secs(10),
            },
            data_exfiltration: FollowConfig {
                window: Duration::from_secs(5 * 60),
                ..FOLLOW_LIMITS
            },
            trust_escalation: FollowConfig {
                window: Duration::from_secs(60),
                ..FOLLOW_LIMITS
            },
            approval_flood: BurstConfig {
                threshold: 10,
                window: Duration::from_secs(300),
            },
            alert_window: Duration::from_secs(60),
        }
    }
}

impl CorrelationConfig {
    /// The longest window of any rule: after that much quiet, no state matters any more.
    fn longest_window_ms(&self) -> i64 {
        [
            self.deny_storm.window,
            self.runaway.window,
            self.data_exfiltration.window,
            self.trust_escalation.window,
            self.approval_flood.window,
            self.alert_window,
        ]
        .into_iter()
        .map(millis)
        .max()
        .unwrap_or_default()
    }
}

fn millis(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// The persistable state of one [`AgentCorrelator`], without its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelatorState {
    last_seq: Option<i64>,
    last_at_ms: Option<i64>,
    deny_storm: WindowedBurst,
    runaway: WindowedBurst,
    data_exfiltration: FollowedBy,
    trust_escalation: FollowedBy,
    /// Absent from states saved before the rule existed.
    #[serde(default)]
    approval_flood: WindowedBurst,
    /// The open alert of each (kind, severity) the agent raised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    alerts: Vec<AlertWindow>,
}

/// An alert raised for the agent and the window in which it counts later detections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AlertWindow {
    kind: String,
    severity: Severity,
    /// The seq of the event that raised the alert.
    opened_by: i64,
    opened_at: i64,
    /// The highest seq counted, so a replayed event is not counted twice.
    last_seq: i64,
}

/// What a detection does to the agent's alerts ([`AgentCorrelator::count_alert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertCount {
    /// Raise a new alert for this event.
    New,
    /// Count one more detection into the alert raised by the event at `opened_by`.
    Repeat { opened_by: i64 },
    /// This event was already counted.
    Replayed,
}

/// The correlation state machines of one (tenant, agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCorrelator {
    config: CorrelationConfig,
    state: CorrelatorState,
}

impl AgentCorrelator {
    /// A correlator that has seen nothing.
    pub fn new(config: CorrelationConfig) -> Self {
        AgentCorrelator {
            config,
            state: CorrelatorState::default(),
        }
    }

    /// Resumes from a [`snapshot`](Self::snapshot), possibly under a new configuration,
    /// which applies from the next event on (see the module docs on threshold changes).
    pub fn restore(config: CorrelationConfig, state: CorrelatorState) -> Self {
        AgentCorrelator { config, state }
    }

    /// The state to persist next to the consumer's cursor.
    pub fn snapshot(&self) -> &CorrelatorState {
        &self.state
    }

    /// The thresholds in force.
    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    /// The highest seq observed; events at or below it are ignored.
    pub fn last_seq(&self) -> Option<i64> {
        self.state.last_seq
    }

    /// Whether an event at `at_ms` would find every window empty, so that dropping this
    /// correlator changes no later finding (the consumer's cursor then stands in for
    /// [`last_seq`](Self::last_seq)).
    pub fn is_idle_at(&self, at_ms: i64) -> bool {
        let quiet_since = |last: i64| at_ms.saturating_sub(last) > self.config.longest_window_ms();
        self.state.last_at_ms.is_none_or(quiet_since)
            && self
                .state
                .alerts
                .iter()
                .all(|alert| quiet_since(alert.opened_at))
    }

    /// The `opened_by` seqs of the rule's incidents that are open for this agent (at most
    /// one for a threshold rule, one per lane for a sequence rule).
    pub fn open_incidents(&self, rule: RuleKind) -> Vec<i64> {
        let state = &self.state;
        match rule {
            RuleKind::DenyStorm => state.deny_storm.open.into_iter().collect(),
            RuleKind::Runaway => state.runaway.open.into_iter().collect(),
            RuleKind::DataExfiltration => state.data_exfiltration.open_incidents(),
            RuleKind::TrustEscalation => state.trust_escalation.open_incidents(),
            RuleKind::ApprovalFlood => state.approval_flood.open.into_iter().collect(),
        }
    }

    /// An operator closed the incident of `rule` opened at `opened_by`: it ends now, so
    /// later events cannot join it (a storm that goes on opens a new one). No effect if that
    /// incident is not the open one.
    pub fn incident_closed(&mut self, rule: RuleKind, opened_by: i64) {
        let state = &mut self.state;
        match rule {
            RuleKind::DenyStorm => state.deny_storm.close(opened_by),
            RuleKind::Runaway => state.runaway.close(opened_by),
            RuleKind::DataExfiltration => state.data_exfiltration.close(opened_by),
            RuleKind::TrustEscalation => state.trust_escalation.close(opened_by),
            RuleKind::ApprovalFlood => state.approval_flood.close(opened_by),
        }
    }

    /// A detection rule raised an alert of `kind` and `severity` for the agent from the event
    /// at `seq` (event time `at_ms`): is it a new alert, or one more of an alert in its window?
    /// (Module docs, "Alert coalescing".)
    pub fn count_alert(
        &mut self,
        kind: &str,
        severity: Severity,
        seq: i64,
        at_ms: i64,
    ) -> AlertCount {
        let window_ms = millis(self.config.alert_window);
        let alerts = &mut self.state.alerts;
        let Some(open) = alerts
            .iter_mut()
            .find(|alert| alert.kind == kind && alert.severity == severity)
        else {
            alerts.push(AlertWindow {
                kind: kind.to_owned(),
                severity,
                opened_by: seq,
                opened_at: at_ms,
                last_seq: seq,
            });
            return AlertCount::New;
        };
        if seq <= open.last_seq {
            return AlertCount::Replayed;
        }
        open.last_seq = seq;
        if at_ms.saturating_sub(open.opened_at) <= window_ms {
            return AlertCount::Repeat {
                opened_by: open.opened_by,
            };
        }
        open.opened_by = seq;
        open.opened_at = at_ms;
        AlertCount::New
    }

    /// Feeds one event; returns what it opened or joined, in [`RuleKind::ALL`] order.
    pub fn observe(&mut self, event: CorrelationEvent<'_>) -> Vec<Finding> {
        let config = &self.config;
        let state = &mut self.state;
        if state.last_seq.is_some_and(|last| event.seq <= last) {
            return Vec::new();
        }
        state.last_seq = Some(event.seq);
        let at = state
            .last_at_ms
            .map_or(event.at_ms, |last| last.max(event.at_ms));
        state.last_at_ms = Some(at);
        let stamp = Stamp {
            at,
            seq: event.seq,
            contained: event.contained,
        };

        let mut findings = Vec::new();
        findings.extend(state.deny_storm.observe(
            &config.deny_storm,
            RuleKind::DenyStorm,
            stamp,
            event.verdict == Verdict::Deny,
        ));
        findings.extend(
            state
                .runaway
                .observe(&config.runaway, RuleKind::Runaway, stamp, true),
        );
        let exfiltration_role = match (event.class, event.verdict) {
            _ if event.contained => Role::Neither,
            (ActionClass::Read, Verdict::Allow | Verdict::RequireApproval) => Role::Precursor,
            (ActionClass::ExternalSend, _) => Role::Trigger,
            _ => Role::Neither,
        };
        state.data_exfiltration.observe(
            &config.data_exfiltration,
            RuleKind::DataExfiltration,
            stamp,
            ("", ""),
            exfiltration_role,
            &mut findings,
        );
        let escalation_role = match event.verdict {
            _ if event.contained => Role::Neither,
            Verdict::Deny => Role::Precursor,
            Verdict::Allow => Role::Trigger,
            Verdict::RequireApproval => Role::Neither,
        };
        state.trust_escalation.observe(
            &config.trust_escalation,
            RuleKind::TrustEscalation,
            stamp,
            (event.tool, event.action),
            escalation_role,
            &mut findings,
        );
        findings.extend(state.approval_flood.observe(
            &config.approval_flood,
            RuleKind::ApprovalFlood,
            stamp,
            event.verdict == Verdict::RequireApproval,
        ));
        findings
    }
}

/// The time and seq of an event, and whether it was a containment refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    at: i64,
    seq: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    contained: bool,
}

/// The trailing-window threshold detector behind `deny_storm` and `runaway`, with the
/// open/join/end rule of the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WindowedBurst {
    /// Every counted event still in the window, oldest first, at most
    /// [`MAX_BURST_THRESHOLD`].
    #[serde(with = "stamps")]
    recent: VecDeque<Stamp>,
    /// The seq that opened the incident now open, if one is.
    #[serde(default)]
    open: Option<i64>,
}

impl WindowedBurst {
    fn observe(
        &mut self,
        config: &BurstConfig,
        rule: RuleKind,
        stamp: Stamp,
        counts: bool,
    ) -> Option<Finding> {
        let threshold = config.threshold.clamp(1, MAX_BURST_THRESHOLD);
        let since = stamp.at.saturating_sub(millis(config.window));
        while self.recent.front().is_some_and(|s| s.at < since) {
            self.recent.pop_front();
        }
        // End: fewer than half the threshold left in the window before this event.
        if 2 * self.recent.len() < threshold {
            self.open = None;
        }
        if !counts {
            return None;
        }
        self.recent.push_back(stamp);
        if self.recent.len() > MAX_BURST_THRESHOLD {
            self.recent.pop_front();
        }
        if let Some(opened_by) = self.open {
            return Some(Finding::Joined {
                rule,
                opened_by,
                seq: stamp.seq,
            });
        }
        if stamp.contained {
            return None;
        }
        let evidence: Vec<i64> = self
            .recent
            .iter()
            .filter(|s| !s.contained)
            .map(|s| s.seq)
            .collect();
        if evidence.len() < threshold {
            return None;
        }
        self.open = Some(stamp.seq);
        Some(Finding::Opened {
            rule,
            severity: rule.severity(),
            evidence,
        })
    }

    fn close(&mut self, opened_by: i64) {
        if self.open == Some(opened_by) {
            self.open = None;
        }
    }
}

/// What an event is to a [`FollowedBy`] rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Precursor,
    Trigger,
    Neither,
}

/// One key of a [`FollowedBy`] rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lane {
    tool: String,
    action: String,
    /// Precursors still in the window, oldest first, at most `max_precursors`.
    precursors: VecDeque<Stamp>,
    /// Time of the last matched trigger, while it is in the window: the incident is open.
    matched_at: Option<i64>,
    /// The trigger seq that opened the lane's open incident.
    #[serde(default)]
    opened_by: Option<i64>,
    /// Highest precursor seq already reported to the open incident.
    reported_upto: Option<i64>,
    /// Seq of the lane's latest precursor or matched trigger, for eviction.
    touched: i64,
}

impl Lane {
    fn end_incident(&mut self) {
        self.matched_at = None;
        self.opened_by = None;
        self.reported_upto = None;
    }
}

/// "A precursor, then a trigger within the window", per lane: the detector behind
/// `data_exfiltration` (one lane) and `trust_escalation` (one lane per tool/action).
///
/// Lanes are kept sorted by key and exist only while they hold something in the window, so
/// the state is canonical: the same window content gives the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FollowedBy {
    lanes: Vec<Lane>,
}

impl FollowedBy {
    fn open_incidents(&self) -> Vec<i64> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.opened_by)
            .collect()
    }

    fn close(&mut self, opened_by: i64) {
        for lane in &mut self.lanes {
            if lane.opened_by == Some(opened_by) {
                lane.end_incident();
            }
        }
        self.lanes
            .retain(|lane| !lane.precursors.is_empty() || lane.matched_at.is_some());
    }

    fn observe(
        &mut self,
        config: &FollowConfig,
        rule: RuleKind,
        stamp: Stamp,
        key: (&str, &str),
        role: Role,
        findings: &mut Vec<Finding>,
    ) {
        let Stamp { at, seq, .. } = stamp;
        let since = at.saturating_sub(millis(config.window));
        let max_precursors = config.max_precursors.max(1);
        self.lanes.retain_mut(|lane| {
            while lane.precursors.front().is_some_and(|p| p.at < since) {
                lane.precursors.pop_front();
            }
            while lane.precursors.len() > max_precursors {
                lane.precursors.pop_front(); // only after the cap was lowered
            }
            // End: no matched pair left in the window, before this event.
            if lane.matched_at.is_some_and(|m| m < since) {
                lane.end_incident();
            }
            !lane.precursors.is_empty() || lane.matched_at.is_some()
        });
        let position = self
            .lanes
            .binary_search_by(|lane| (lane.tool.as_str(), lane.action.as_str()).cmp(&key));
        match (role, position) {
            (Role::Neither, _) | (Role::Trigger, Err(_)) => {}
            (Role::Precursor, Ok(i)) => {
                let lane = &mut self.lanes[i];
                lane.precursors.push_back(stamp);
                if lane.precursors.len() > max_precursors {
                    lane.precursors.pop_front();
                }
                lane.touched = seq;
            }
            (Role::Precursor, Err(mut i)) => {
                if self.lanes.len() >= config.max_keys.max(1) {
                    let stalest = (0..self.lanes.len())
                        .min_by_key(|&j| self.lanes[j].touched)
                        .unwrap_or_default();
                    self.lanes.remove(stalest);
                    if stalest < i {
                        i -= 1;
                    }
                }
                self.lanes.insert(
                    i,
                    Lane {
                        tool: key.0.to_owned(),
                        action: key.1.to_owned(),
                        precursors: VecDeque::from([stamp]),
                        matched_at: None,
                        opened_by: None,
                        reported_upto: None,
                        touched: seq,
                    },
                );
            }
            (Role::Trigger, Ok(i)) => {
                let lane = &mut self.lanes[i];
                let Some(latest) = lane.precursors.back().map(|p| p.seq) else {
                    return; // the incident may be open, but this trigger matched nothing
                };
                match lane.opened_by {
                    Some(opened_by) => {
                        let reported = lane.reported_upto;
                        findings.extend(
                            lane.precursors
                                .iter()
                                .filter(|p| reported.is_none_or(|r| p.seq > r))
                                .map(|p| Finding::Joined {
                                    rule,
                                    opened_by,
                                    seq: p.seq,
                                }),
                        );
                        findings.push(Finding::Joined {
                            rule,
                            opened_by,
                            seq,
                        });
                    }
                    None => {
                        let mut evidence: Vec<i64> =
                            lane.precursors.iter().map(|p| p.seq).collect();
                        evidence.push(seq);
                        findings.push(Finding::Opened {
                            rule,
                            severity: rule.severity(),
                            evidence,
                        });
                        lane.opened_by = Some(seq);
                    }
                }
                lane.matched_at = Some(at);
                lane.reported_upto = Some(latest);
                lane.touched = seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;
    const SEC: i64 = 1_000;

    fn ev(seq: i64, at_ms: i64, verdict: Verdict) -> CorrelationEvent<'static> {
        CorrelationEvent {
            seq,
            at_ms,
            verdict,
            tool: "github",
            action: "merge_pull_request",
            class: ActionClass::Other,
            contained: false,
        }
    }

    fn deny(seq: i64, at_ms: i64) -> CorrelationEvent<'static> {
        ev(seq, at_ms, Verdict::Deny)
    }

    fn allow(seq: i64, at_ms: i64) -> CorrelationEvent<'static> {
        ev(seq, at_ms, Verdict::Allow)
    }

    fn feed<'a>(
        correlator: &mut AgentCorrelator,
        events: impl IntoIterator<Item = CorrelationEvent<'a>>,
    ) -> Vec<Finding> {
        events
            .into_iter()
            .flat_map(|e| correlator.observe(e))
            .collect()
    }

    fn of_rule(findings: &[Finding], rule: RuleKind) -> Vec<Finding> {
        findings
            .iter()
            .filter(|f| f.rule() == rule)
            .cloned()
            .collect()
    }

    fn opened(rule: RuleKind, evidence: &[i64]) -> Finding {
        Finding::Opened {
            rule,
            severity: Severity::High,
            evidence: evidence.to_vec(),
        }
    }

    fn joined(rule: RuleKind, opened_by: i64, seq: i64) -> Finding {
        Finding::Joined {
            rule,
            opened_by,
            seq,
        }
    }

    fn correlator() -> AgentCorrelator {
        AgentCorrelator::new(CorrelationConfig::default())
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = CorrelationConfig::default();
        assert_eq!(config.deny_storm.threshold, 5);
        assert_eq!(config.deny_storm.window, Duration::from_secs(60));
        assert_eq!(config.runaway.threshold, 20);
        assert_eq!(config.runaway.window, Duration::from_secs(10));
        assert_eq!(config.data_exfiltration.window, Duration::from_secs(300));
        assert_eq!(config.trust_escalation.window, Duration::from_secs(60));
        assert_eq!(config.approval_flood.threshold, 10);
        assert_eq!(config.approval_flood.window, Duration::from_secs(300));
    }

    #[test]
    fn rule_kinds_have_their_wire_names() {
        let names: Vec<_> = RuleKind::ALL.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            names,
            [
                "deny_storm",
                "runaway",
                "data_exfiltration",
                "trust_escalation",
                "approval_flood"
            ]
        );
        for rule in RuleKind::ALL {
            assert_eq!(rule.as_str().parse::<RuleKind>().unwrap(), *rule);
            assert_eq!(serde_json::to_string(rule).unwrap(), format!("\"{rule}\""));
            assert_eq!(rule.severity(), Severity::High);
        }
        assert!("storm".parse::<RuleKind>().is_err());
        for class in ActionClass::ALL {
            assert_eq!(class.as_str().parse::<ActionClass>().unwrap(), *class);
            assert_eq!(
                serde_json::to_string(class).unwrap(),
                format!("\"{class}\"")
            );
        }
    }

    #[test]
    fn five_denies_open_one_deny_storm_with_five_seqs() {
        let mut c = correlator();
        let findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i * SEC)));
        assert_eq!(findings, [opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])]);
        assert_eq!(findings[0].opened_by(), 5);
    }

    #[test]
    fn ten_denies_in_the_window_open_once_and_join_five() {
        let mut c = correlator();
        let findings = feed(&mut c, (1..=10).map(|i| deny(i, T0 + i * SEC)));
        let mut expected = vec![opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])];
        expected.extend((6..=10).map(|i| joined(RuleKind::DenyStorm, 5, i)));
        assert_eq!(findings, expected);
    }

    #[test]
    fn four_denies_never_fire() {
        let mut c = correlator();
        assert!(feed(&mut c, (1..=4).map(|i| deny(i, T0 + i * SEC))).is_empty());
        // Spread out, 5 denies never have 5 in one window either.
        let mut c = correlator();
        assert!(feed(&mut c, (1..=50).map(|i| deny(i, T0 + i * 16 * SEC))).is_empty());
    }

    #[test]
    fn allows_interleaved_do_not_count_for_deny_storm() {
        let mut c = correlator();
        let mut events = Vec::new();
        for i in 0..4 {
            events.push(deny(10 * i + 1, T0 + i * SEC));
            events.push(allow(10 * i + 2, T0 + i * SEC + 100));
            events.push(allow(10 * i + 3, T0 + i * SEC + 200));
        }
        assert!(of_rule(&feed(&mut c, events), RuleKind::DenyStorm).is_empty());
        let findings = feed(&mut c, [deny(100, T0 + 10 * SEC)]);
        assert_eq!(
            findings,
            [opened(RuleKind::DenyStorm, &[1, 11, 21, 31, 100])]
        );
    }

    #[test]
    fn the_window_includes_both_ends() {
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=4).map(|i| deny(i, T0 + i)));
        findings.extend(c.observe(deny(5, T0 + 1 + 60 * SEC)));
        assert_eq!(findings, [opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])]);
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=4).map(|i| deny(i, T0 + i)));
        findings.extend(c.observe(deny(5, T0 + 2 + 60 * SEC)));
        assert!(findings.is_empty());
    }

    #[test]
    fn a_new_storm_after_the_window_passes_is_a_new_incident() {
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=7).map(|i| deny(i, T0 + i * SEC)));
        // Quiet for longer than the window: the next deny finds the count below N and re-arms.
        let later = T0 + 200 * SEC;
        findings.extend(feed(&mut c, (8..=13).map(|i| deny(i, later + i * SEC))));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]),
                joined(RuleKind::DenyStorm, 5, 6),
                joined(RuleKind::DenyStorm, 5, 7),
                opened(RuleKind::DenyStorm, &[8, 9, 10, 11, 12]),
                joined(RuleKind::DenyStorm, 12, 13),
            ]
        );
    }

    #[test]
    fn a_sustained_storm_stays_one_incident() {
        // One deny every 10 s for 10 minutes: 6 or 7 in every 60 s window.
        let mut c = correlator();
        let findings = feed(&mut c, (0..60).map(|i| deny(i, T0 + i * 10 * SEC)));
        assert_eq!(findings[0], opened(RuleKind::DenyStorm, &[0, 1, 2, 3, 4]));
        assert_eq!(findings.len(), 56);
        assert!(
            findings[1..]
                .iter()
                .all(|f| matches!(f, Finding::Joined { .. }))
        );
    }

    fn burst(n: usize, window_ms: u64) -> CorrelationConfig {
        CorrelationConfig {
            deny_storm: BurstConfig {
                threshold: n,
                window: Duration::from_millis(window_ms),
            },
            ..CorrelationConfig::default()
        }
    }

    fn storm_findings(findings: &[Finding]) -> (usize, usize) {
        let storm = of_rule(findings, RuleKind::DenyStorm);
        let opened = storm
            .iter()
            .filter(|f| matches!(f, Finding::Opened { .. }))
            .count();
        (opened, storm.len() - opened)
    }

    #[test]
    fn a_storm_just_above_the_threshold_rate_is_one_incident() {
        // W = 2 s, N = 5, one deny every 0.45 s: 4 or 5 denies in every window. The count
        // before a deny is often N - 1, which used to open a new incident each time.
        let mut c = AgentCorrelator::new(burst(5, 2_000));
        let findings = feed(&mut c, (1..=12).map(|i| deny(i, T0 + i * 450)));
        assert_eq!(findings[0], opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]));
        assert_eq!(
            findings[1..],
            (6..=12)
                .map(|i| joined(RuleKind::DenyStorm, 5, i))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_dip_below_the_threshold_stays_the_same_incident_until_the_agent_goes_quiet() {
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i * SEC)));
        // At +62 s the window [2 s, 62 s] holds 4 denies: below N but not below N/2.
        findings.extend(c.observe(deny(6, T0 + 62 * SEC)));
        // At +124 s the window [64 s, 124 s] is empty: the storm ended, this deny counts anew.
        findings.extend(c.observe(deny(7, T0 + 124 * SEC)));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]),
                joined(RuleKind::DenyStorm, 5, 6),
            ]
        );
        assert!(c.open_incidents(RuleKind::DenyStorm).is_empty());
        // Two denies left in the window (fewer than 5/2) also end it.
        let mut c = correlator();
        feed(&mut c, (1..=5).map(|i| deny(i, T0 + i * SEC)));
        assert!(c.observe(deny(6, T0 + 64 * SEC)).is_empty()); // window [4, 64]: 4, 5 left
        assert!(c.open_incidents(RuleKind::DenyStorm).is_empty());
    }

    #[test]
    fn raising_the_threshold_mid_storm_keeps_one_incident_holding_every_deny() {
        let mut c = AgentCorrelator::new(burst(5, 2_000));
        let mut findings = feed(&mut c, (1..=6).map(|i| deny(i, T0 + i * 300)));
        let mut c = AgentCorrelator::restore(burst(8, 2_000), c.snapshot().clone());
        findings.extend(feed(&mut c, (7..=12).map(|i| deny(i, T0 + i * 300))));
        let mut expected = vec![opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])];
        expected.extend((6..=12).map(|i| joined(RuleKind::DenyStorm, 5, i)));
        assert_eq!(findings, expected);
    }

    #[test]
    fn a_new_threshold_counts_every_deny_already_in_the_window() {
        // Raised before the storm opened: the 8th deny in the window opens, with all 8.
        let mut c = AgentCorrelator::new(burst(5, 60_000));
        feed(&mut c, (1..=4).map(|i| deny(i, T0 + i * SEC)));
        let mut c = AgentCorrelator::restore(burst(8, 60_000), c.snapshot().clone());
        let findings = feed(&mut c, (5..=8).map(|i| deny(i, T0 + i * SEC)));
        assert_eq!(
            findings,
            [opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5, 6, 7, 8])]
        );
    }

    #[test]
    fn containment_refusals_never_open_anything() {
        let contained = |seq: i64, at_ms: i64| CorrelationEvent {
            contained: true,
            ..deny(seq, at_ms)
        };
        let config = CorrelationConfig {
            runaway: BurstConfig {
                threshold: 4,
                window: Duration::from_secs(10),
            },
            ..CorrelationConfig::default()
        };
        let mut c = AgentCorrelator::new(config);
        // A frozen agent retrying: nothing opens, and they do not count later either.
        assert!(feed(&mut c, (1..=10).map(|i| contained(i, T0 + i))).is_empty());
        assert!(feed(&mut c, (11..=13).map(|i| deny(i, T0 + 100 + i))).is_empty());
        // Freeze, one refused retry, unfreeze, a good call: not a trust escalation.
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                contained(1, T0),
                call(2, T0 + SEC, Verdict::Allow, "github", "merge_pull_request"),
            ],
        );
        assert!(findings.is_empty());
        // A refused send after a read is not exfiltration either.
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                classed(1, T0, Verdict::Allow, ActionClass::Read),
                CorrelationEvent {
                    contained: true,
                    ..classed(2, T0 + SEC, Verdict::Deny, ActionClass::ExternalSend)
                },
            ],
        );
        assert!(findings.is_empty());
    }

    #[test]
    fn containment_refusals_join_the_open_storm_and_keep_it_open() {
        let contained = |seq: i64, at_ms: i64| CorrelationEvent {
            contained: true,
            ..deny(seq, at_ms)
        };
        let mut c = AgentCorrelator::new(burst(5, 10_000));
        let mut findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i * SEC)));
        // Frozen now: its retries join as attempts, one every 2 s for a minute.
        findings.extend(feed(
            &mut c,
            (6..=35).map(|i| contained(i, T0 + 5 * SEC + (i - 5) * 2 * SEC)),
        ));
        // Unfrozen and still storming: the same incident.
        findings.extend(c.observe(deny(36, T0 + 66 * SEC)));
        let mut expected = vec![opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])];
        expected.extend((6..=36).map(|i| joined(RuleKind::DenyStorm, 5, i)));
        assert_eq!(findings, expected);
    }

    #[test]
    fn a_storm_that_goes_on_after_a_close_opens_a_new_incident() {
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=6).map(|i| deny(i, T0 + i * SEC)));
        assert_eq!(c.open_incidents(RuleKind::DenyStorm), [5]);
        c.incident_closed(RuleKind::DenyStorm, 3); // not the open one: no effect
        assert_eq!(c.open_incidents(RuleKind::DenyStorm), [5]);
        c.incident_closed(RuleKind::DenyStorm, 5);
        assert!(c.open_incidents(RuleKind::DenyStorm).is_empty());
        findings.extend(feed(&mut c, (7..=8).map(|i| deny(i, T0 + i * SEC))));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]),
                joined(RuleKind::DenyStorm, 5, 6),
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5, 6, 7]),
                joined(RuleKind::DenyStorm, 7, 8),
            ]
        );
        // A sequence rule's lane closes the same way.
        let mut c = correlator();
        let mut findings = feed(
            &mut c,
            [
                call(1, T0, Verdict::Deny, "github", "merge_pull_request"),
                call(2, T0 + 1, Verdict::Allow, "github", "merge_pull_request"),
            ],
        );
        assert_eq!(c.open_incidents(RuleKind::TrustEscalation), [2]);
        c.incident_closed(RuleKind::TrustEscalation, 2);
        findings.extend(feed(
            &mut c,
            [call(
                3,
                T0 + 2,
                Verdict::Allow,
                "github",
                "merge_pull_request",
            )],
        ));
        assert_eq!(
            of_rule(&findings, RuleKind::TrustEscalation),
            [
                opened(RuleKind::TrustEscalation, &[1, 2]),
                opened(RuleKind::TrustEscalation, &[1, 3]),
            ]
        );
    }

    #[test]
    fn replaying_seen_events_is_a_no_op() {
        let mut c = correlator();
        let events: Vec<_> = (1..=8).map(|i| deny(i, T0 + i * SEC)).collect();
        assert_eq!(feed(&mut c, events.clone()).len(), 4);
        let before = c.snapshot().clone();
        assert!(feed(&mut c, events.clone()).is_empty());
        assert!(feed(&mut c, events[3..].iter().copied()).is_empty());
        assert_eq!(c.snapshot(), &before);
        assert_eq!(c.last_seq(), Some(8));
        // A new seq is observed again.
        assert_eq!(
            c.observe(deny(9, T0 + 9 * SEC)),
            [joined(RuleKind::DenyStorm, 5, 9)]
        );
    }

    #[test]
    fn out_of_order_times_are_clamped_to_the_latest_seen() {
        let mut c = correlator();
        let mut findings = feed(&mut c, [deny(1, T0 + 100 * SEC)]);
        // Stamped 90 s earlier by a skewed replica: counted at T0 + 100 s.
        findings.extend(feed(&mut c, (2..=5).map(|i| deny(i, T0 + 10 * SEC))));
        assert_eq!(findings, [opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])]);
        // Without clamping these would already have left the window by T0 + 150 s.
        assert_eq!(
            c.observe(deny(6, T0 + 150 * SEC)),
            [joined(RuleKind::DenyStorm, 5, 6)]
        );
    }

    #[test]
    fn runaway_fires_at_twenty_decisions_in_ten_seconds() {
        let verdicts = [Verdict::Allow, Verdict::RequireApproval, Verdict::Allow];
        let event = |i: i64, step: i64| ev(i, T0 + i * step, verdicts[i as usize % 3]);
        let mut c = correlator();
        let findings = feed(&mut c, (1..=19).map(|i| event(i, 500)));
        assert!(of_rule(&findings, RuleKind::Runaway).is_empty());
        let findings = feed(&mut c, (20..=22).map(|i| event(i, 500)));
        let expected_evidence: Vec<i64> = (1..=20).collect();
        assert_eq!(
            findings,
            [
                opened(RuleKind::Runaway, &expected_evidence),
                joined(RuleKind::Runaway, 20, 21),
                joined(RuleKind::Runaway, 20, 22),
            ]
        );
        // 20 decisions spread over more than 10 s: no runaway.
        let mut c = correlator();
        let spread = feed(&mut c, (1..=40).map(|i| event(i, 600)));
        assert!(of_rule(&spread, RuleKind::Runaway).is_empty());
    }

    #[test]
    fn runaway_and_deny_storm_report_together_in_rule_order() {
        let config = CorrelationConfig {
            runaway: BurstConfig {
                threshold: 5,
                window: Duration::from_secs(10),
            },
            ..CorrelationConfig::default()
        };
        let mut c = AgentCorrelator::new(config);
        let findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i)));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]),
                opened(RuleKind::Runaway, &[1, 2, 3, 4, 5]),
            ]
        );
    }

    fn classed(
        seq: i64,
        at_ms: i64,
        verdict: Verdict,
        class: ActionClass,
    ) -> CorrelationEvent<'static> {
        let (tool, action) = match class {
            ActionClass::Read => ("drive", "read_file"),
            ActionClass::ExternalSend => ("gmail", "send_email"),
            ActionClass::Other => ("jira", "comment"),
        };
        CorrelationEvent {
            seq,
            at_ms,
            verdict,
            tool,
            action,
            class,
            contained: false,
        }
    }

    #[test]
    fn exfiltration_read_then_send_within_the_window_fires() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                classed(1, T0, Verdict::Allow, ActionClass::Read),
                classed(2, T0 + 10 * SEC, Verdict::Allow, ActionClass::Other),
                classed(3, T0 + 299 * SEC, Verdict::Allow, ActionClass::ExternalSend),
            ],
        );
        assert_eq!(findings, [opened(RuleKind::DataExfiltration, &[1, 3])]);
    }

    #[test]
    fn exfiltration_outside_the_window_or_in_the_wrong_order_does_not_fire() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                classed(1, T0, Verdict::Allow, ActionClass::Read),
                classed(2, T0 + 301 * SEC, Verdict::Allow, ActionClass::ExternalSend),
                // A send before the read is not exfiltration of what was read.
                classed(3, T0 + 400 * SEC, Verdict::Allow, ActionClass::ExternalSend),
                classed(4, T0 + 401 * SEC, Verdict::Allow, ActionClass::Read),
            ],
        );
        assert!(findings.is_empty());
    }

    #[test]
    fn exfiltration_needs_a_read_that_was_not_denied_but_any_send_attempt() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                classed(1, T0, Verdict::Deny, ActionClass::Read),
                classed(2, T0 + SEC, Verdict::Allow, ActionClass::ExternalSend),
            ],
        );
        assert!(of_rule(&findings, RuleKind::DataExfiltration).is_empty());
        let findings = feed(
            &mut c,
            [
                classed(3, T0 + 2 * SEC, Verdict::RequireApproval, ActionClass::Read),
                classed(4, T0 + 3 * SEC, Verdict::Deny, ActionClass::ExternalSend),
            ],
        );
        assert_eq!(
            of_rule(&findings, RuleKind::DataExfiltration),
            [opened(RuleKind::DataExfiltration, &[3, 4])]
        );
    }

    #[test]
    fn a_burst_of_sends_after_one_read_is_one_incident() {
        let mut c = correlator();
        let mut findings = feed(
            &mut c,
            [
                classed(1, T0, Verdict::Allow, ActionClass::Read),
                classed(2, T0 + SEC, Verdict::Allow, ActionClass::ExternalSend),
                classed(3, T0 + 2 * SEC, Verdict::Allow, ActionClass::ExternalSend),
                classed(4, T0 + 3 * SEC, Verdict::Allow, ActionClass::Read),
                classed(5, T0 + 4 * SEC, Verdict::Deny, ActionClass::ExternalSend),
            ],
        );
        // The read expired at +300 s but the last matched send (+4 s) has not: no match.
        findings.extend(c.observe(classed(
            6,
            T0 + 304 * SEC,
            Verdict::Allow,
            ActionClass::ExternalSend,
        )));
        // Much later, a new read and send: a new incident.
        findings.extend(feed(
            &mut c,
            [
                classed(7, T0 + 1000 * SEC, Verdict::Allow, ActionClass::Read),
                classed(
                    8,
                    T0 + 1001 * SEC,
                    Verdict::Allow,
                    ActionClass::ExternalSend,
                ),
            ],
        ));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DataExfiltration, &[1, 2]),
                joined(RuleKind::DataExfiltration, 2, 3),
                joined(RuleKind::DataExfiltration, 2, 4),
                joined(RuleKind::DataExfiltration, 2, 5),
                opened(RuleKind::DataExfiltration, &[7, 8]),
            ]
        );
    }

    fn call<'a>(
        seq: i64,
        at_ms: i64,
        verdict: Verdict,
        tool: &'a str,
        action: &'a str,
    ) -> CorrelationEvent<'a> {
        CorrelationEvent {
            seq,
            at_ms,
            verdict,
            tool,
            action,
            class: ActionClass::Other,
            contained: false,
        }
    }

    #[test]
    fn trust_escalation_deny_then_allow_of_the_same_action_fires() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                call(1, T0, Verdict::Deny, "github", "merge_pull_request"),
                call(2, T0 + SEC, Verdict::Deny, "github", "merge_pull_request"),
                call(3, T0 + 2 * SEC, Verdict::Allow, "github", "list_issues"),
                call(
                    4,
                    T0 + 30 * SEC,
                    Verdict::Allow,
                    "github",
                    "merge_pull_request",
                ),
                // More probing on the same action joins, with the new deny.
                call(
                    5,
                    T0 + 40 * SEC,
                    Verdict::Deny,
                    "github",
                    "merge_pull_request",
                ),
                call(
                    6,
                    T0 + 41 * SEC,
                    Verdict::Allow,
                    "github",
                    "merge_pull_request",
                ),
                call(
                    7,
                    T0 + 42 * SEC,
                    Verdict::Allow,
                    "github",
                    "merge_pull_request",
                ),
            ],
        );
        assert_eq!(
            of_rule(&findings, RuleKind::TrustEscalation),
            [
                opened(RuleKind::TrustEscalation, &[1, 2, 4]),
                joined(RuleKind::TrustEscalation, 4, 5),
                joined(RuleKind::TrustEscalation, 4, 6),
                joined(RuleKind::TrustEscalation, 4, 7),
            ]
        );
    }

    #[test]
    fn trust_escalation_needs_the_same_tool_action_within_the_window() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                call(1, T0, Verdict::Deny, "github", "merge_pull_request"),
                call(2, T0 + SEC, Verdict::Allow, "github", "close_pull_request"),
                call(
                    3,
                    T0 + 2 * SEC,
                    Verdict::Allow,
                    "gitlab",
                    "merge_pull_request",
                ),
                call(
                    4,
                    T0 + 3 * SEC,
                    Verdict::RequireApproval,
                    "github",
                    "merge_pull_request",
                ),
                call(
                    5,
                    T0 + 61 * SEC,
                    Verdict::Allow,
                    "github",
                    "merge_pull_request",
                ),
            ],
        );
        assert!(of_rule(&findings, RuleKind::TrustEscalation).is_empty());
    }

    #[test]
    fn trust_escalation_is_tracked_per_tool_action() {
        let mut c = correlator();
        let findings = feed(
            &mut c,
            [
                call(1, T0, Verdict::Deny, "github", "merge_pull_request"),
                call(2, T0, Verdict::Deny, "slack", "post_message"),
                call(3, T0 + SEC, Verdict::Allow, "slack", "post_message"),
                call(
                    4,
                    T0 + 2 * SEC,
                    Verdict::Allow,
                    "github",
                    "merge_pull_request",
                ),
            ],
        );
        assert_eq!(
            of_rule(&findings, RuleKind::TrustEscalation),
            [
                opened(RuleKind::TrustEscalation, &[2, 3]),
                opened(RuleKind::TrustEscalation, &[1, 4]),
            ]
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let config = CorrelationConfig::default();
        let mut c = AgentCorrelator::new(config);
        let tools: Vec<String> = (0..1_000).map(|i| format!("tool_{i}")).collect();
        for (i, tool) in tools.iter().enumerate() {
            let i = i as i64;
            c.observe(call(2 * i, T0 + i, Verdict::Deny, tool, "act"));
            c.observe(classed(
                2 * i + 1,
                T0 + i,
                Verdict::Allow,
                ActionClass::Read,
            ));
        }
        let state = c.snapshot();
        // Every deny of the window, up to the cap (1000 denies, 2000 decisions).
        assert_eq!(state.deny_storm.recent.len(), MAX_BURST_THRESHOLD);
        assert_eq!(state.runaway.recent.len(), MAX_BURST_THRESHOLD);
        assert_eq!(state.trust_escalation.lanes.len(), 64);
        assert_eq!(state.data_exfiltration.lanes.len(), 1);
        assert_eq!(state.data_exfiltration.lanes[0].precursors.len(), 16);
        // The most recently active lanes survived.
        assert!(
            state
                .trust_escalation
                .lanes
                .iter()
                .all(|lane| lane.tool.as_str() >= "tool_936")
        );
        // After a long quiet, one event prunes everything else.
        assert!(c.is_idle_at(T0 + 1_000 + 301 * SEC));
        assert!(!c.is_idle_at(T0 + 1_000 + 299 * SEC));
        c.observe(allow(5_000, T0 + 3_600 * SEC));
        let state = c.snapshot();
        assert_eq!(state.deny_storm.recent.len(), 0);
        assert_eq!(state.runaway.recent.len(), 1);
        assert!(state.trust_escalation.lanes.is_empty());
        assert!(state.data_exfiltration.lanes.is_empty());
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let mut c = correlator();
        feed(&mut c, (1..=6).map(|i| deny(i, T0 + i * SEC)));
        c.observe(call(
            7,
            T0 + 7 * SEC,
            Verdict::Allow,
            "github",
            "merge_pull_request",
        ));
        let json = serde_json::to_string(c.snapshot()).unwrap();
        let state: CorrelatorState = serde_json::from_str(&json).unwrap();
        let mut restored = AgentCorrelator::restore(CorrelationConfig::default(), state);
        assert_eq!(restored, c);
        assert_eq!(
            restored.observe(deny(8, T0 + 8 * SEC)),
            [joined(RuleKind::DenyStorm, 5, 8)]
        );
    }

    #[test]
    fn lowering_a_threshold_on_restore_is_safe() {
        let mut c = correlator();
        feed(&mut c, (1..=4).map(|i| deny(i, T0 + i * SEC)));
        let lower = CorrelationConfig {
            deny_storm: BurstConfig {
                threshold: 3,
                window: Duration::from_secs(60),
            },
            ..CorrelationConfig::default()
        };
        let mut c = AgentCorrelator::restore(lower, c.snapshot().clone());
        // No incident was open: the next deny opens one with every deny of the window.
        assert_eq!(
            c.observe(deny(5, T0 + 5 * SEC)),
            [opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])]
        );
    }

    // ---- property tests -------------------------------------------------------------------

    /// One generated event: time step (may go backwards), verdict, class, tool/action lane,
    /// and whether a deny is a containment refusal.
    type Step = (i64, Verdict, ActionClass, usize, bool);

    const KEYS: [(&str, &str); 3] = [
        ("github", "merge_pull_request"),
        ("github", "close_issue"),
        ("slack", "post_message"),
    ];

    fn step(allow_backwards: bool) -> impl Strategy<Value = Step> {
        let backwards = if allow_backwards { -3_000i64 } else { 0 };
        let delta = prop_oneof![
            3 => 0i64..1_500,
            2 => 0i64..15_000,
            1 => backwards..1,
        ];
        (
            delta,
            prop::sample::select(Verdict::ALL),
            prop::sample::select(ActionClass::ALL),
            0usize..KEYS.len(),
            prop::bool::weighted(0.2),
        )
    }

    fn steps(allow_backwards: bool) -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(step(allow_backwards), 0..120)
    }

    /// The events for `steps`: seqs increase with gaps, times start at T0.
    fn events(steps: &[Step], gaps: &[i64]) -> Vec<CorrelationEvent<'static>> {
        let mut at = T0;
        let mut seq = 0;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(delta, verdict, class, key, contained))| {
                at += delta;
                seq += 1 + gaps.get(i).copied().unwrap_or(0);
                CorrelationEvent {
                    seq,
                    at_ms: at,
                    verdict,
                    tool: KEYS[key].0,
                    action: KEYS[key].1,
                    class,
                    contained: contained && verdict == Verdict::Deny,
                }
            })
            .collect()
    }

    /// What the consumer does to a correlator, in log order.
    #[derive(Debug, Clone)]
    enum Op {
        Event(CorrelationEvent<'static>),
        /// The tenant's deny-storm setting changed.
        Configure(BurstConfig),
        /// An operator closed the open deny_storm incident.
        CloseOpen,
        /// An operator closed some other (older) deny_storm incident.
        CloseOther(i64),
    }

    fn burst_config() -> impl Strategy<Value = BurstConfig> {
        (1usize..=8, 0u64..=20_000).prop_map(|(threshold, w)| BurstConfig {
            threshold,
            window: Duration::from_millis(w),
        })
    }

    /// Events interleaved with setting changes and closes.
    fn script() -> impl Strategy<Value = Vec<Op>> {
        let action = prop_oneof![
            12 => step(true).prop_map(Some),
            1 => Just(None),
        ];
        let change = prop_oneof![
            2 => burst_config().prop_map(Op::Configure),
            2 => Just(Op::CloseOpen),
            1 => (0i64..130).prop_map(Op::CloseOther),
        ];
        (
            prop::collection::vec(action, 0..120),
            prop::collection::vec(change, 120),
        )
            .prop_map(|(actions, changes)| {
                let steps: Vec<Step> = actions.iter().flatten().copied().collect();
                let mut events = events(&steps, &[]).into_iter();
                actions
                    .iter()
                    .zip(changes)
                    .map(|(action, change)| match action {
                        Some(_) => Op::Event(events.next().expect("one event per step")),
                        None => change,
                    })
                    .collect()
            })
    }

    /// Runs `ops` through a new correlator the way the consumer does; findings per op.
    fn run_script(ops: &[Op], config: CorrelationConfig) -> Vec<Vec<Finding>> {
        run_script_on(&mut AgentCorrelator::new(config), ops)
    }

    fn run_script_on(c: &mut AgentCorrelator, ops: &[Op]) -> Vec<Vec<Finding>> {
        ops.iter()
            .map(|op| match op {
                Op::Event(e) => c.observe(*e),
                Op::Configure(deny_storm) => {
                    let config = CorrelationConfig {
                        deny_storm: *deny_storm,
                        ..*c.config()
                    };
                    *c = AgentCorrelator::restore(config, c.snapshot().clone());
                    vec![]
                }
                Op::CloseOpen => {
                    for opened_by in c.open_incidents(RuleKind::DenyStorm) {
                        c.incident_closed(RuleKind::DenyStorm, opened_by);
                    }
                    vec![]
                }
                Op::CloseOther(seq) => {
                    if !c.open_incidents(RuleKind::DenyStorm).contains(seq) {
                        c.incident_closed(RuleKind::DenyStorm, *seq);
                    }
                    vec![]
                }
            })
            .collect()
    }

    /// Brute-force threshold rule, straight from the module docs. For each event: the counted
    /// events still in its window are those whose time no event since (itself included) has
    /// pruned under the window then in force; the incident ends when fewer than N/2 of them
    /// are left; a counted event joins the open incident, or opens one when the window's
    /// events that are not containment refusals, with it, reach N.
    fn reference_burst(
        ops: &[Op],
        initial: BurstConfig,
        rule: RuleKind,
        counts: impl Fn(&CorrelationEvent<'_>) -> bool,
    ) -> Vec<Vec<Finding>> {
        let mut config = initial;
        let mut latest = i64::MIN;
        // Every event so far: (event, effective time, window in force at it).
        let mut seen: Vec<(CorrelationEvent<'_>, i64, i64)> = Vec::new();
        let mut open: Option<i64> = None;
        ops.iter()
            .map(|op| {
                let e = match op {
                    Op::Event(e) => e,
                    Op::Configure(new) => {
                        config = *new;
                        return vec![];
                    }
                    Op::CloseOpen => {
                        open = None;
                        return vec![];
                    }
                    Op::CloseOther(_) => return vec![],
                };
                latest = latest.max(e.at_ms);
                seen.push((*e, latest, millis(config.window)));
                let i = seen.len() - 1;
                let n = config.threshold.clamp(1, MAX_BURST_THRESHOLD);
                let window: Vec<&CorrelationEvent<'_>> = (0..i)
                    .filter(|&j| counts(&seen[j].0))
                    .filter(|&j| (j + 1..=i).all(|k| seen[j].1 >= seen[k].1 - seen[k].2))
                    .map(|j| &seen[j].0)
                    .collect();
                if 2 * window.len() < n {
                    open = None;
                }
                if !counts(e) {
                    return vec![];
                }
                if let Some(opened_by) = open {
                    return vec![joined(rule, opened_by, e.seq)];
                }
                let mut evidence: Vec<i64> = window
                    .iter()
                    .filter(|w| !w.contained)
                    .map(|w| w.seq)
                    .collect();
                evidence.push(e.seq);
                if e.contained || evidence.len() < n {
                    return vec![];
                }
                open = Some(e.seq);
                vec![opened(rule, &evidence)]
            })
            .collect()
    }

    /// Brute-force sequence rule: a trigger matches when a precursor of its lane lies within
    /// W before it; it joins when an earlier matched trigger of its lane does too, and then
    /// belongs to the incident the lane's last opening trigger opened.
    fn reference_follow(
        events: &[CorrelationEvent<'static>],
        role: impl Fn(&CorrelationEvent<'static>) -> Role,
        lane: impl Fn(&CorrelationEvent<'static>) -> (&'static str, &'static str),
        rule: RuleKind,
        w: i64,
    ) -> Vec<Vec<Finding>> {
        let times = effective_times(events);
        let mut reported = std::collections::BTreeSet::new();
        let mut matched = vec![false; events.len()];
        let mut opened_by = std::collections::HashMap::new();
        (0..events.len())
            .map(|i| {
                if role(&events[i]) != Role::Trigger {
                    return vec![];
                }
                let near =
                    |j: usize| lane(&events[j]) == lane(&events[i]) && times[j] >= times[i] - w;
                let precursors: Vec<i64> = (0..i)
                    .filter(|&j| near(j) && role(&events[j]) == Role::Precursor)
                    .map(|j| events[j].seq)
                    .collect();
                if precursors.is_empty() {
                    return vec![];
                }
                let open = (0..i).any(|j| matched[j] && near(j));
                matched[i] = true;
                if open {
                    let incident = opened_by[&lane(&events[i])];
                    let mut found: Vec<Finding> = precursors
                        .iter()
                        .filter(|p| !reported.contains(*p))
                        .map(|&p| joined(rule, incident, p))
                        .collect();
                    found.push(joined(rule, incident, events[i].seq));
                    reported.extend(precursors);
                    found
                } else {
                    opened_by.insert(lane(&events[i]), events[i].seq);
                    let mut evidence = precursors.clone();
                    evidence.push(events[i].seq);
                    reported.extend(precursors);
                    vec![opened(rule, &evidence)]
                }
            })
            .collect()
    }

    /// Event times as the rules see them: clamped to the latest seen.
    fn effective_times(events: &[CorrelationEvent<'_>]) -> Vec<i64> {
        let mut latest = i64::MIN;
        events
            .iter()
            .map(|e| {
                latest = latest.max(e.at_ms);
                latest
            })
            .collect()
    }

    fn config_strategy() -> impl Strategy<Value = CorrelationConfig> {
        (
            burst_config(),
            1usize..=8,
            0u64..=10_000,
            0u64..=20_000,
            0u64..=20_000,
        )
            .prop_map(|(deny_storm, rn, rw, xw, tw)| CorrelationConfig {
                deny_storm,
                runaway: BurstConfig {
                    threshold: rn,
                    window: Duration::from_millis(rw),
                },
                data_exfiltration: FollowConfig {
                    window: Duration::from_millis(xw),
                    max_precursors: 1_000,
                    max_keys: 64,
                },
                trust_escalation: FollowConfig {
                    window: Duration::from_millis(tw),
                    max_precursors: 1_000,
                    max_keys: 64,
                },
                ..CorrelationConfig::default()
            })
    }

    /// Findings of each event, one rule at a time.
    fn per_event(
        events: &[CorrelationEvent<'_>],
        config: CorrelationConfig,
        rule: RuleKind,
    ) -> Vec<Vec<Finding>> {
        let mut c = AgentCorrelator::new(config);
        events
            .iter()
            .map(|e| of_rule(&c.observe(*e), rule))
            .collect()
    }

    fn is_deny(e: &CorrelationEvent<'_>) -> bool {
        e.verdict == Verdict::Deny
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn deny_storm_matches_the_brute_force_definition(
            config in config_strategy(),
            ops in script(),
        ) {
            let actual: Vec<Vec<Finding>> = run_script(&ops, config)
                .iter()
                .map(|found| of_rule(found, RuleKind::DenyStorm))
                .collect();
            let expected = reference_burst(&ops, config.deny_storm, RuleKind::DenyStorm, is_deny);
            prop_assert_eq!(&actual, &expected);

            // Stated directly, the invariants the reference implies.
            let mut incidents: std::collections::BTreeMap<i64, std::collections::BTreeSet<i64>> =
                Default::default();
            let mut n = config.deny_storm.threshold;
            for (op, found) in ops.iter().zip(&actual) {
                if let Op::Configure(new) = op {
                    n = new.threshold;
                }
                prop_assert!(found.len() <= 1);
                let Op::Event(event) = op else { continue };
                for finding in found {
                    prop_assert!(is_deny(event));
                    match finding {
                        Finding::Opened { evidence, severity, .. } => {
                            prop_assert!(!event.contained, "a containment refusal opened an incident");
                            prop_assert_eq!(*severity, Severity::High);
                            prop_assert!(evidence.len() >= n);
                            prop_assert!(evidence.windows(2).all(|p| p[0] < p[1]));
                            prop_assert_eq!(*evidence.last().unwrap(), event.seq);
                            incidents.insert(event.seq, evidence.iter().copied().collect());
                        }
                        Finding::Joined { opened_by, seq, .. } => {
                            prop_assert_eq!(*seq, event.seq);
                            let incident = incidents.get_mut(opened_by);
                            prop_assert!(incident.is_some(), "joined an incident never opened");
                            prop_assert!(incident.unwrap().insert(*seq), "seq {} reported twice", seq);
                        }
                    }
                }
            }
            // With fewer than N denies that are not containment refusals, nothing fires.
            let real = ops.iter().filter(|op| matches!(op, Op::Event(e) if is_deny(e) && !e.contained)).count();
            let lowest = ops.iter().filter_map(|op| match op {
                Op::Configure(c) => Some(c.threshold),
                _ => None,
            }).chain([config.deny_storm.threshold]).min().unwrap();
            if real < lowest {
                prop_assert!(actual.iter().all(Vec::is_empty));
            }
        }

        #[test]
        fn a_storm_never_slower_than_the_threshold_rate_is_one_incident(
            n in 1usize..=8,
            w in 1i64..=20_000,
            gaps in prop::collection::vec(any::<prop::sample::Index>(), 8..80),
            allows in prop::collection::vec(prop::bool::weighted(0.3), 80),
        ) {
            // Every gap at most W/(N-1): N denies always fit in one window, but the count
            // before a deny may well be N - 1 (the near-threshold storm).
            let widest = if n == 1 { w } else { w / (n as i64 - 1) };
            let mut at = T0;
            let mut seq = 0;
            let mut events = Vec::new();
            for (gap, allow) in gaps.iter().zip(allows) {
                at += gap.index(widest as usize + 1) as i64;
                seq += 1;
                events.push(deny(seq, at));
                if allow {
                    seq += 1;
                    events.push(ev(seq, at, Verdict::Allow));
                }
            }
            let config = CorrelationConfig {
                deny_storm: BurstConfig { threshold: n, window: Duration::from_millis(w as u64) },
                ..CorrelationConfig::default()
            };
            let (opened, joined) = storm_findings(&per_event(&events, config, RuleKind::DenyStorm).concat());
            prop_assert_eq!(opened, 1);
            prop_assert_eq!(opened + joined, gaps.len() - (n - 1));
        }

        #[test]
        fn runaway_matches_the_brute_force_definition(
            config in config_strategy(),
            steps in steps(true),
        ) {
            let ops: Vec<Op> = events(&steps, &[]).into_iter().map(Op::Event).collect();
            let actual: Vec<Vec<Finding>> = run_script(&ops, config)
                .iter()
                .map(|found| of_rule(found, RuleKind::Runaway))
                .collect();
            prop_assert_eq!(actual, reference_burst(&ops, config.runaway, RuleKind::Runaway, |_| true));
        }

        #[test]
        fn sequence_rules_match_the_brute_force_definition(
            config in config_strategy(),
            steps in steps(true),
        ) {
            let events = events(&steps, &[]);
            let exfiltration = reference_follow(
                &events,
                |e| match (e.class, e.verdict) {
                    _ if e.contained => Role::Neither,
                    (ActionClass::Read, Verdict::Allow | Verdict::RequireApproval) => Role::Precursor,
                    (ActionClass::ExternalSend, _) => Role::Trigger,
                    _ => Role::Neither,
                },
                |_| ("", ""),
                RuleKind::DataExfiltration,
                millis(config.data_exfiltration.window),
            );
            prop_assert_eq!(per_event(&events, config, RuleKind::DataExfiltration), exfiltration);
            let escalation = reference_follow(
                &events,
                |e| match e.verdict {
                    _ if e.contained => Role::Neither,
                    Verdict::Deny => Role::Precursor,
                    Verdict::Allow => Role::Trigger,
                    Verdict::RequireApproval => Role::Neither,
                },
                |e| (e.tool, e.action),
                RuleKind::TrustEscalation,
                millis(config.trust_escalation.window),
            );
            prop_assert_eq!(per_event(&events, config, RuleKind::TrustEscalation), escalation);
        }

        #[test]
        fn replaying_any_prefix_again_changes_nothing(
            config in config_strategy(),
            steps in steps(true),
            cut in any::<prop::sample::Index>(),
        ) {
            let events = events(&steps, &[]);
            let mut c = AgentCorrelator::new(config);
            feed(&mut c, events.iter().copied());
            let before = c.snapshot().clone();
            let cut = if events.is_empty() { 0 } else { cut.index(events.len() + 1) };
            prop_assert!(feed(&mut c, events[..cut].iter().copied()).is_empty());
            prop_assert!(feed(&mut c, events.iter().copied()).is_empty());
            prop_assert_eq!(c.snapshot(), &before);
        }

        #[test]
        fn snapshot_and_restore_at_any_point_is_transparent(
            config in config_strategy(),
            ops in script(),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = if ops.is_empty() { 0 } else { cut.index(ops.len() + 1) };
            let expected = run_script(&ops, config);
            // Run the first part, persist, restore, run the rest: the same findings.
            let mut first = AgentCorrelator::new(config);
            let mut actual = run_script_on(&mut first, &ops[..cut]);
            let json = serde_json::to_vec(&first.snapshot()).unwrap();
            let state: CorrelatorState = serde_json::from_slice(&json).unwrap();
            let mut second = AgentCorrelator::restore(*first.config(), state);
            actual.extend(run_script_on(&mut second, &ops[cut..]));
            prop_assert_eq!(actual, expected);
        }
    }

    const UNTRUSTED: &str = "untrusted_write_denied";

    #[test]
    fn repeated_detections_count_into_one_alert_per_window() {
        let mut c = correlator();
        let mut count = |seq: i64, at: i64| c.count_alert(UNTRUSTED, Severity::Medium, seq, at);
        assert_eq!(count(1, T0), AlertCount::New);
        for seq in 2..=50 {
            assert_eq!(
                count(seq, T0 + seq * SEC),
                AlertCount::Repeat { opened_by: 1 },
                "seq {seq}"
            );
        }
        // The window is measured from the alert's first detection, both ends included.
        assert_eq!(
            count(60, T0 + 60 * SEC),
            AlertCount::Repeat { opened_by: 1 }
        );
        assert_eq!(count(61, T0 + 60 * SEC + 1), AlertCount::New);
        assert_eq!(
            count(62, T0 + 61 * SEC),
            AlertCount::Repeat { opened_by: 61 }
        );
        assert_eq!(count(62, T0 + 61 * SEC), AlertCount::Replayed);
    }

    #[test]
    fn alerts_are_kept_apart_by_kind_and_severity() {
        let mut c = correlator();
        assert_eq!(
            c.count_alert(UNTRUSTED, Severity::Medium, 1, T0),
            AlertCount::New
        );
        // A suspected-malicious source is not hidden in the medium alert.
        assert_eq!(
            c.count_alert(UNTRUSTED, Severity::High, 2, T0),
            AlertCount::New
        );
        assert_eq!(
            c.count_alert("critical_action_denied", Severity::High, 2, T0),
            AlertCount::New
        );
        assert_eq!(
            c.count_alert(UNTRUSTED, Severity::Medium, 3, T0),
            AlertCount::Repeat { opened_by: 1 }
        );
        assert_eq!(
            c.count_alert(UNTRUSTED, Severity::High, 3, T0),
            AlertCount::Repeat { opened_by: 2 }
        );
    }

    #[test]
    fn an_open_alert_survives_a_restart_and_keeps_the_agent_from_idling() {
        let mut c = correlator();
        c.count_alert(UNTRUSTED, Severity::Medium, 1, T0);
        let mut restored =
            AgentCorrelator::restore(CorrelationConfig::default(), c.snapshot().clone());
        assert_eq!(
            restored.count_alert(UNTRUSTED, Severity::Medium, 2, T0 + SEC),
            AlertCount::Repeat { opened_by: 1 }
        );
        assert!(!restored.is_idle_at(T0 + 59 * SEC));
        assert!(restored.is_idle_at(T0 + 301 * SEC));
        // A state saved before alerts were coalesced still loads.
        let old: CorrelatorState = serde_json::from_str(
            r#"{"last_seq":null,"last_at_ms":null,"deny_storm":{"recent":[]},"runaway":{"recent":[]},"data_exfiltration":{"lanes":[]},"trust_escalation":{"lanes":[]}}"#,
        )
        .unwrap();
        assert_eq!(old, CorrelatorState::default());
    }

    proptest! {
        /// Whatever the detections and their timing: each detection is counted exactly once,
        /// into an alert of its own kind and severity raised at most a window before it, and
        /// no two alerts of one kind and severity are raised within one window.
        #[test]
        fn every_detection_is_counted_once_into_an_alert_of_its_window(
            detections in prop::collection::vec(
                (0u8..3, 0i64..40 * SEC),
                1..80,
            ),
        ) {
            const KEYS: [(&str, Severity); 3] = [
                (UNTRUSTED, Severity::Medium),
                (UNTRUSTED, Severity::High),
                ("critical_action_denied", Severity::High),
            ];
            let window = millis(CorrelationConfig::default().alert_window);
            let mut c = correlator();
            let mut at = T0;
            // Per raised alert (key, opening seq): its opening time and its count.
            let mut alerts: std::collections::HashMap<(u8, i64), (i64, usize)> = Default::default();
            for (i, (key, gap)) in detections.iter().enumerate() {
                let seq = i as i64 + 1;
                at += gap;
                let (kind, severity) = KEYS[*key as usize];
                match c.count_alert(kind, severity, seq, at) {
                    AlertCount::New => {
                        let last_of_key = alerts
                            .iter()
                            .filter(|((k, _), _)| k == key)
                            .map(|(_, (opened_at, _))| *opened_at)
                            .max();
                        prop_assert!(last_of_key.is_none_or(|opened_at| at - opened_at > window));
                        alerts.insert((*key, seq), (at, 1));
                    }
                    AlertCount::Repeat { opened_by } => {
                        let (opened_at, count) = alerts.get_mut(&(*key, opened_by)).expect("a raised alert");
                        prop_assert!(at - *opened_at <= window);
                        *count += 1;
                    }
                    AlertCount::Replayed => prop_assert!(false, "seq {} is new", seq),
                }
                prop_assert_eq!(c.count_alert(kind, severity, seq, at), AlertCount::Replayed);
            }
            let counted: usize = alerts.values().map(|(_, count)| count).sum();
            prop_assert_eq!(counted, detections.len());
        }
    }
}
