//! Correlation rules of the SOC plane (README, "The SOC plane"): many decisions of one agent → incidents.
//!
//! One [`AgentCorrelator`] holds the state of one (tenant, agent). The caller feeds it that
//! agent's decision events in log order ([`AgentCorrelator::observe`]) and gets back
//! [`Finding`]s: [`Finding::Opened`] becomes a new incident, [`Finding::Joined`] appends one seq
//! to the evidence of the incident the same rule opened last for this agent. Everything runs
//! on *event* time (Unix milliseconds, supplied by the caller); nothing here reads a clock.
//!
//! # Rules
//!
//! | rule | condition, in the trailing window `[t - W, t]` (both ends included) | defaults |
//! |---|---|---|
//! | `deny_storm` | at least `N` denies | 5 in 60 s |
//! | `runaway` | at least `N` decisions of any verdict | 20 in 10 s |
//! | `data_exfiltration` | a read (allowed or `require_approval`) followed by an external send (any verdict) | 5 min |
//! | `trust_escalation` | a deny followed by an allow of the same (tool, action) | 60 s |
//!
//! All four are `high`. Reads and sends are classified by the caller from registered tool
//! metadata ([`ActionClass`]); nothing here guesses from names. A denied read does not count
//! towards exfiltration (the agent never got the data), a `require_approval` read does (once
//! approved it runs without another decision, and the approver agreed to a read, not to a
//! send), and a send counts whatever its verdict: the attempt is the signal. For
//! `trust_escalation` only a real `allow` completes the pattern.
//!
//! # Fire once, join, re-arm
//!
//! A rule's *condition* is a property of the trailing window. The rule **fires once**, at the
//! event that makes the condition true; while it stays true, further matching events **join**
//! that incident's evidence; the rule **re-arms** only once an event finds the condition false
//! (evaluated at that event's time, before counting the event itself), and only then can a
//! new incident open. So one storm is one incident — an operator sees "5 denies, then 12
//! more", not 13 incidents — and a storm that ended and started again is a new incident.
//!
//! For the threshold rules this collapses to a rule per counted event: with `c` the number of
//! counted events in `[t - W, t]` *before* this one, it opens an incident when `c == N - 1`
//! (this event brings the count to N), joins when `c >= N`, and does nothing otherwise. So a
//! storm that runs at exactly the threshold rate can dip to `N - 1` and open a second
//! incident: re-arming is defined by the count, not by a quiet period. `deny_storm` and
//! `runaway` share this one mechanism (a trailing-window threshold detector).
//!
//! For the sequence rules (`data_exfiltration`, `trust_escalation`) the condition is "a
//! matched pair completed within the trailing window": an external send with a counted read
//! at most W before it, or an allow with a deny of the same (tool, action) at most W before
//! it. A burst of sends after one read is one incident; a pair more than W after the last
//! matched pair is a new one. `trust_escalation` is tracked per (tool, action).
//!
//! # Evidence
//!
//! An `Opened` threshold incident carries exactly the N seqs that made the count, all within
//! W of each other; each later counted event joins with its own seq. An `Opened` sequence
//! incident carries the precursor seqs (reads, or denies of that tool/action) still in the
//! window, then the trigger seq; a later matched trigger joins the precursors not yet
//! reported, then itself. No seq is reported twice to one incident. (When a storm dips to
//! N - 1 and climbs back, the new incident's N seqs may include denies of the previous one:
//! they belong to both windows.)
//!
//! # Replays, restarts and ordering
//!
//! * Idempotence: an event whose `seq` is not above the last seq seen is ignored, so replaying
//!   events already observed is a no-op.
//! * Findings are a pure function of the events. The trigger seq of a finding
//!   ([`Finding::trigger_seq`]) is therefore a stable idempotency key: if the consumer
//!   crashes between writing an incident and advancing its cursor, observing the event again
//!   yields the same `Opened` with the same trigger seq.
//! * Restart, exact: persist [`AgentCorrelator::snapshot`] (serde) with the cursor and
//!   [`AgentCorrelator::restore`] it.
//! * Restart, by replay: [`AgentCorrelator::rebuild`] from the agent's events with
//!   `at_ms >= last_at_ms - CorrelationConfig::replay_horizon_ms()`, in seq order. This
//!   reproduces the exact state when event times are non-decreasing in seq and the lane cap
//!   of a sequence rule was not hit during the replayed span.
//! * Out-of-order event times (clock skew between replicas) are clamped to the latest time
//!   already seen for the agent: the event counts as happening then. This is deterministic,
//!   never drops an event and keeps windows monotone; a late event can only expire later.
//!
//! # Bounded memory
//!
//! A threshold detector keeps at most N (time, seq) pairs; a sequence rule keeps at most
//! `max_precursors` precursors per lane and `max_keys` lanes (the least recently active lane is
//! evicted first; under that much key churn an evicted lane may open a fresh incident later).
//! Everything older than the window is pruned at every event, and once
//! [`AgentCorrelator::is_idle_at`] holds the whole correlator can be dropped.
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
//!     }));
//! }
//! assert_eq!(findings.len(), 2);
//! assert!(matches!(&findings[0], Finding::Opened { rule: RuleKind::DenyStorm, evidence, .. } if evidence == &[1, 2, 3, 4, 5]));
//! assert_eq!(findings[1], Finding::Joined { rule: RuleKind::DenyStorm, seq: 6 });
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Severity, Verdict};

crate::model::wire_enum! {
    /// A correlation rule; the wire spelling is the incident `kind`.
    RuleKind {
        DenyStorm => "deny_storm",
        Runaway => "runaway",
        DataExfiltration => "data_exfiltration",
        TrustEscalation => "trust_escalation",
    }
}

impl RuleKind {
    /// Severity of the incidents this rule opens.
    pub const fn severity(self) -> Severity {
        match self {
            RuleKind::DenyStorm
            | RuleKind::Runaway
            | RuleKind::DataExfiltration
            | RuleKind::TrustEscalation => Severity::High,
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

/// One decision of the agent, as the correlator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationEvent<'a> {
    /// The event-log sequence number; strictly increasing per database.
    pub seq: i64,
    /// Event time, Unix milliseconds.
    pub at_ms: i64,
    pub verdict: Verdict,
    pub tool: &'a str,
    pub action: &'a str,
    pub class: ActionClass,
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
    /// One more seq for the evidence of the incident `rule` opened last for this agent.
    Joined { rule: RuleKind, seq: i64 },
}

impl Finding {
    /// The rule behind this finding.
    pub fn rule(&self) -> RuleKind {
        match self {
            Finding::Opened { rule, .. } | Finding::Joined { rule, .. } => *rule,
        }
    }

    /// The seq that produced an `Opened` (its last evidence), or the seq a `Joined` adds:
    /// with the rule and the agent, a stable idempotency key.
    pub fn trigger_seq(&self) -> i64 {
        match self {
            Finding::Opened { evidence, .. } => evidence.last().copied().unwrap_or_default(),
            Finding::Joined { seq, .. } => *seq,
        }
    }
}

/// A trailing-window threshold: `threshold` events within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstConfig {
    /// N; 0 is treated as 1.
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
}

impl Default for CorrelationConfig {
    /// 5 denies in 60 s, 20 decisions in 10 s, read → send within 5 min, deny → allow of the
    /// same tool/action within 60 s; 16 precursors per lane, 64 lanes.
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
        }
    }
}

impl CorrelationConfig {
    /// How far back (ms before the last event) a [`AgentCorrelator::rebuild`] must replay:
    /// the longest threshold window, or twice the longest sequence window (whether the
    /// last matched pair is still in the window depends on precursors one window before it).
    pub fn replay_horizon_ms(&self) -> i64 {
        let bursts = millis(self.deny_storm.window).max(millis(self.runaway.window));
        let follows = millis(self.data_exfiltration.window)
            .max(millis(self.trust_escalation.window))
            .saturating_mul(2);
        bursts.max(follows)
    }

    /// The longest window of any rule: after that much quiet, no state matters any more.
    fn longest_window_ms(&self) -> i64 {
        [
            self.deny_storm.window,
            self.runaway.window,
            self.data_exfiltration.window,
            self.trust_escalation.window,
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

    /// Resumes from a [`snapshot`](Self::snapshot), possibly under a new configuration.
    /// After a threshold is raised, counts only include the events kept under the old one
    /// until the window has turned over.
    pub fn restore(config: CorrelationConfig, state: CorrelatorState) -> Self {
        AgentCorrelator { config, state }
    }

    /// Replays history (in seq order) to rebuild the state, discarding the findings: they
    /// were handled before the restart. See [`CorrelationConfig::replay_horizon_ms`].
    pub fn rebuild<'a>(
        config: CorrelationConfig,
        history: impl IntoIterator<Item = CorrelationEvent<'a>>,
    ) -> Self {
        let mut correlator = AgentCorrelator::new(config);
        for event in history {
            correlator.observe(event);
        }
        correlator
    }

    /// The state to persist next to the consumer's cursor.
    pub fn snapshot(&self) -> CorrelatorState {
        self.state.clone()
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
        self.state
            .last_at_ms
            .is_none_or(|last| at_ms.saturating_sub(last) > self.config.longest_window_ms())
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

        let mut findings = Vec::new();
        findings.extend(state.deny_storm.observe(
            &config.deny_storm,
            RuleKind::DenyStorm,
            at,
            event.seq,
            event.verdict == Verdict::Deny,
        ));
        findings.extend(state.runaway.observe(
            &config.runaway,
            RuleKind::Runaway,
            at,
            event.seq,
            true,
        ));
        let exfiltration_role = match (event.class, event.verdict) {
            (ActionClass::Read, Verdict::Allow | Verdict::RequireApproval) => Role::Precursor,
            (ActionClass::ExternalSend, _) => Role::Trigger,
            _ => Role::Neither,
        };
        state.data_exfiltration.observe(
            &config.data_exfiltration,
            RuleKind::DataExfiltration,
            Stamp { at, seq: event.seq },
            ("", ""),
            exfiltration_role,
            &mut findings,
        );
        let escalation_role = match event.verdict {
            Verdict::Deny => Role::Precursor,
            Verdict::Allow => Role::Trigger,
            Verdict::RequireApproval => Role::Neither,
        };
        state.trust_escalation.observe(
            &config.trust_escalation,
            RuleKind::TrustEscalation,
            Stamp { at, seq: event.seq },
            (event.tool, event.action),
            escalation_role,
            &mut findings,
        );
        findings
    }
}

/// A (time, seq) pair of a counted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    at: i64,
    seq: i64,
}

/// The trailing-window threshold detector behind `deny_storm` and `runaway`.
///
/// Keeps the last N counted events still in the window: the count reaches N exactly when N
/// are kept. Invariant after every event: `open` ⇔ the window holds N counted events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WindowedBurst {
    recent: VecDeque<Stamp>,
    open: bool,
}

impl WindowedBurst {
    fn observe(
        &mut self,
        config: &BurstConfig,
        rule: RuleKind,
        at: i64,
        seq: i64,
        counts: bool,
    ) -> Option<Finding> {
        let threshold = config.threshold.max(1);
        let since = at.saturating_sub(millis(config.window));
        while self.recent.front().is_some_and(|s| s.at < since) {
            self.recent.pop_front();
        }
        while self.recent.len() > threshold {
            self.recent.pop_front(); // only after a threshold was lowered
        }
        // Re-arm: the count in the window, before this event, has dropped below N.
        if self.recent.len() < threshold {
            self.open = false;
        }
        if !counts {
            return None;
        }
        self.recent.push_back(Stamp { at, seq });
        if self.recent.len() > threshold {
            self.recent.pop_front();
        }
        if self.open {
            Some(Finding::Joined { rule, seq })
        } else if self.recent.len() == threshold {
            self.open = true;
            Some(Finding::Opened {
                rule,
                severity: rule.severity(),
                evidence: self.recent.iter().map(|s| s.seq).collect(),
            })
        } else {
            None
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
    /// Highest precursor seq already reported to the open incident.
    reported_upto: Option<i64>,
    /// Seq of the lane's latest precursor or matched trigger, for eviction.
    touched: i64,
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
    fn observe(
        &mut self,
        config: &FollowConfig,
        rule: RuleKind,
        Stamp { at, seq }: Stamp,
        key: (&str, &str),
        role: Role,
        findings: &mut Vec<Finding>,
    ) {
        let since = at.saturating_sub(millis(config.window));
        let max_precursors = config.max_precursors.max(1);
        self.lanes.retain_mut(|lane| {
            while lane.precursors.front().is_some_and(|p| p.at < since) {
                lane.precursors.pop_front();
            }
            while lane.precursors.len() > max_precursors {
                lane.precursors.pop_front(); // only after the cap was lowered
            }
            // Re-arm: no matched pair left in the window, before this event.
            if lane.matched_at.is_some_and(|m| m < since) {
                lane.matched_at = None;
                lane.reported_upto = None;
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
                lane.precursors.push_back(Stamp { at, seq });
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
                        precursors: VecDeque::from([Stamp { at, seq }]),
                        matched_at: None,
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
                if lane.matched_at.is_some() {
                    let reported = lane.reported_upto;
                    findings.extend(
                        lane.precursors
                            .iter()
                            .filter(|p| reported.is_none_or(|r| p.seq > r))
                            .map(|p| Finding::Joined { rule, seq: p.seq }),
                    );
                    findings.push(Finding::Joined { rule, seq });
                } else {
                    let mut evidence: Vec<i64> = lane.precursors.iter().map(|p| p.seq).collect();
                    evidence.push(seq);
                    findings.push(Finding::Opened {
                        rule,
                        severity: rule.severity(),
                        evidence,
                    });
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

    fn joined(rule: RuleKind, seq: i64) -> Finding {
        Finding::Joined { rule, seq }
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
        assert_eq!(config.replay_horizon_ms(), 600 * SEC);
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
                "trust_escalation"
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
        assert_eq!(findings[0].trigger_seq(), 5);
    }

    #[test]
    fn ten_denies_in_the_window_open_once_and_join_five() {
        let mut c = correlator();
        let findings = feed(&mut c, (1..=10).map(|i| deny(i, T0 + i * SEC)));
        let mut expected = vec![opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5])];
        expected.extend((6..=10).map(|i| joined(RuleKind::DenyStorm, i)));
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
                joined(RuleKind::DenyStorm, 6),
                joined(RuleKind::DenyStorm, 7),
                opened(RuleKind::DenyStorm, &[8, 9, 10, 11, 12]),
                joined(RuleKind::DenyStorm, 13),
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

    #[test]
    fn a_dip_below_the_threshold_re_arms() {
        let mut c = correlator();
        let mut findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i * SEC)));
        // At +62 s the window [2 s, 62 s] holds 4 denies: below N, so this deny opens anew.
        findings.extend(c.observe(deny(6, T0 + 62 * SEC)));
        assert_eq!(
            findings,
            [
                opened(RuleKind::DenyStorm, &[1, 2, 3, 4, 5]),
                opened(RuleKind::DenyStorm, &[2, 3, 4, 5, 6]),
            ]
        );
    }

    #[test]
    fn replaying_seen_events_is_a_no_op() {
        let mut c = correlator();
        let events: Vec<_> = (1..=8).map(|i| deny(i, T0 + i * SEC)).collect();
        assert_eq!(feed(&mut c, events.clone()).len(), 4);
        let before = c.snapshot();
        assert!(feed(&mut c, events.clone()).is_empty());
        assert!(feed(&mut c, events[3..].iter().copied()).is_empty());
        assert_eq!(c.snapshot(), before);
        assert_eq!(c.last_seq(), Some(8));
        // A new seq is observed again.
        assert_eq!(
            c.observe(deny(9, T0 + 9 * SEC)),
            [joined(RuleKind::DenyStorm, 9)]
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
            [joined(RuleKind::DenyStorm, 6)]
        );
    }

    #[test]
    fn frozen_agent_denies_count_like_any_deny() {
        // The caller passes a frozen agent's refusals as denies; nothing else is needed.
        let mut c = correlator();
        let findings = feed(&mut c, (1..=5).map(|i| deny(i, T0 + i)));
        assert_eq!(of_rule(&findings, RuleKind::DenyStorm).len(), 1);
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
                joined(RuleKind::Runaway, 21),
                joined(RuleKind::Runaway, 22),
            ]
        );
        // 20 decisions spread over more than 10 s: nothing.
        let mut c = correlator();
        assert!(feed(&mut c, (1..=40).map(|i| event(i, 600))).is_empty());
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
                joined(RuleKind::DataExfiltration, 3),
                joined(RuleKind::DataExfiltration, 4),
                joined(RuleKind::DataExfiltration, 5),
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
                joined(RuleKind::TrustEscalation, 5),
                joined(RuleKind::TrustEscalation, 6),
                joined(RuleKind::TrustEscalation, 7),
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
        assert_eq!(state.deny_storm.recent.len(), 5);
        assert_eq!(state.runaway.recent.len(), 20);
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
        let json = serde_json::to_string(&c.snapshot()).unwrap();
        let state: CorrelatorState = serde_json::from_str(&json).unwrap();
        let mut restored = AgentCorrelator::restore(CorrelationConfig::default(), state);
        assert_eq!(restored, c);
        assert_eq!(
            restored.observe(deny(8, T0 + 8 * SEC)),
            [joined(RuleKind::DenyStorm, 8)]
        );
    }

    #[test]
    fn rebuild_by_replay_discards_old_findings_and_continues() {
        let events: Vec<_> = (1..=7).map(|i| deny(i, T0 + i * SEC)).collect();
        let mut c = AgentCorrelator::rebuild(CorrelationConfig::default(), events.clone());
        assert_eq!(c.last_seq(), Some(7));
        // Re-delivering the overlap is harmless; the storm is still the same incident.
        assert!(feed(&mut c, events).is_empty());
        assert_eq!(
            c.observe(deny(8, T0 + 8 * SEC)),
            [joined(RuleKind::DenyStorm, 8)]
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
        let mut c = AgentCorrelator::restore(lower, c.snapshot());
        // The kept denies are cut to the newest N and no incident is open under the new
        // threshold, so the next deny opens one with the newest N.
        assert_eq!(
            c.observe(deny(5, T0 + 5 * SEC)),
            [opened(RuleKind::DenyStorm, &[3, 4, 5])]
        );
    }

    // ---- property tests -------------------------------------------------------------------

    /// One generated event: time step (may go backwards), verdict, class, tool/action lane.
    type Step = (i64, Verdict, ActionClass, usize);

    const KEYS: [(&str, &str); 3] = [
        ("github", "merge_pull_request"),
        ("github", "close_issue"),
        ("slack", "post_message"),
    ];

    fn steps(allow_backwards: bool) -> impl Strategy<Value = Vec<Step>> {
        let backwards = if allow_backwards { -3_000i64 } else { 0 };
        let delta = prop_oneof![
            3 => 0i64..1_500,
            2 => 0i64..15_000,
            1 => backwards..1,
        ];
        let step = (
            delta,
            prop::sample::select(Verdict::ALL),
            prop::sample::select(ActionClass::ALL),
            0usize..KEYS.len(),
        );
        prop::collection::vec(step, 0..120)
    }

    /// The events for `steps`: seqs increase with gaps, times start at T0.
    fn events(steps: &[Step], gaps: &[i64]) -> Vec<CorrelationEvent<'static>> {
        let mut at = T0;
        let mut seq = 0;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(delta, verdict, class, key))| {
                at += delta;
                seq += 1 + gaps.get(i).copied().unwrap_or(0);
                CorrelationEvent {
                    seq,
                    at_ms: at,
                    verdict,
                    tool: KEYS[key].0,
                    action: KEYS[key].1,
                    class,
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

    /// Brute-force threshold rule, straight from the definition: a counted event opens when
    /// the trailing-window count before it is N - 1, joins when it is at least N.
    fn reference_burst(
        events: &[CorrelationEvent<'_>],
        counts: impl Fn(&CorrelationEvent<'_>) -> bool,
        rule: RuleKind,
        n: usize,
        w: i64,
    ) -> Vec<Vec<Finding>> {
        let times = effective_times(events);
        (0..events.len())
            .map(|i| {
                if !counts(&events[i]) {
                    return vec![];
                }
                let in_window: Vec<usize> = (0..i)
                    .filter(|&j| counts(&events[j]) && times[j] >= times[i] - w)
                    .collect();
                if in_window.len() >= n {
                    vec![joined(rule, events[i].seq)]
                } else if in_window.len() + 1 == n {
                    let mut evidence: Vec<i64> = in_window.iter().map(|&j| events[j].seq).collect();
                    evidence.push(events[i].seq);
                    vec![opened(rule, &evidence)]
                } else {
                    vec![]
                }
            })
            .collect()
    }

    /// Brute-force sequence rule: a trigger matches when a precursor of its lane lies within
    /// W before it; it joins when an earlier matched trigger of its lane does too.
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
                    let mut found: Vec<Finding> = precursors
                        .iter()
                        .filter(|p| !reported.contains(*p))
                        .map(|&p| joined(rule, p))
                        .collect();
                    found.push(joined(rule, events[i].seq));
                    reported.extend(precursors);
                    found
                } else {
                    let mut evidence = precursors.clone();
                    evidence.push(events[i].seq);
                    reported.extend(precursors);
                    vec![opened(rule, &evidence)]
                }
            })
            .collect()
    }

    fn config_strategy() -> impl Strategy<Value = CorrelationConfig> {
        (
            1usize..=6,
            0u64..=20_000,
            1usize..=8,
            0u64..=10_000,
            0u64..=20_000,
            0u64..=20_000,
        )
            .prop_map(|(n, w, rn, rw, xw, tw)| CorrelationConfig {
                deny_storm: BurstConfig {
                    threshold: n,
                    window: Duration::from_millis(w),
                },
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn deny_storm_matches_the_brute_force_definition(
            config in config_strategy(),
            steps in steps(true),
            gaps in prop::collection::vec(0i64..3, 120),
        ) {
            let events = events(&steps, &gaps);
            let n = config.deny_storm.threshold;
            let w = millis(config.deny_storm.window);
            let actual = per_event(&events, config, RuleKind::DenyStorm);
            let is_deny = |e: &CorrelationEvent<'_>| e.verdict == Verdict::Deny;
            let expected = reference_burst(&events, is_deny, RuleKind::DenyStorm, n, w);
            prop_assert_eq!(&actual, &expected);

            // Stated directly, the invariants the reference implies.
            let times = effective_times(&events);
            let at_of = |seq: i64| times[events.iter().position(|e| e.seq == seq).unwrap()];
            let mut incident = std::collections::BTreeSet::new();
            for (i, found) in actual.iter().enumerate() {
                prop_assert!(found.len() <= 1);
                for finding in found {
                    prop_assert!(is_deny(&events[i]));
                    match finding {
                        Finding::Opened { evidence, severity, .. } => {
                            prop_assert_eq!(*severity, Severity::High);
                            prop_assert_eq!(evidence.len(), n);
                            prop_assert!(evidence.windows(2).all(|p| p[0] < p[1]));
                            prop_assert_eq!(*evidence.last().unwrap(), events[i].seq);
                            prop_assert!(evidence.iter().all(|&s| is_deny(&events[events.iter().position(|e| e.seq == s).unwrap()])));
                            prop_assert!(at_of(*evidence.last().unwrap()) - at_of(evidence[0]) <= w);
                            incident = evidence.iter().copied().collect();
                        }
                        Finding::Joined { seq, .. } => {
                            // Only while a storm is open: N denies already in the window.
                            let t = times[i];
                            let before = (0..i).filter(|&j| is_deny(&events[j]) && times[j] >= t - w).count();
                            prop_assert!(!incident.is_empty() && before >= n, "joined without an open storm");
                            prop_assert!(incident.insert(*seq), "seq {} reported twice", seq);
                        }
                    }
                }
            }
            // With fewer than N denies in total, nothing ever fires.
            if events.iter().filter(|e| is_deny(e)).count() < n {
                prop_assert!(actual.iter().all(Vec::is_empty));
            }
        }

        #[test]
        fn runaway_matches_the_brute_force_definition(
            config in config_strategy(),
            steps in steps(true),
        ) {
            let events = events(&steps, &[]);
            let expected = reference_burst(
                &events,
                |_| true,
                RuleKind::Runaway,
                config.runaway.threshold,
                millis(config.runaway.window),
            );
            prop_assert_eq!(per_event(&events, config, RuleKind::Runaway), expected);
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
            let before = c.snapshot();
            let cut = if events.is_empty() { 0 } else { cut.index(events.len() + 1) };
            prop_assert!(feed(&mut c, events[..cut].iter().copied()).is_empty());
            prop_assert!(feed(&mut c, events.iter().copied()).is_empty());
            prop_assert_eq!(c.snapshot(), before);
        }

        #[test]
        fn snapshot_and_restore_at_any_point_is_transparent(
            config in config_strategy(),
            steps in steps(true),
            cut in any::<prop::sample::Index>(),
        ) {
            let events = events(&steps, &[]);
            let cut = if events.is_empty() { 0 } else { cut.index(events.len() + 1) };
            let mut straight = AgentCorrelator::new(config);
            let expected = feed(&mut straight, events.iter().copied());

            let mut first = AgentCorrelator::new(config);
            let mut actual = feed(&mut first, events[..cut].iter().copied());
            let json = serde_json::to_vec(&first.snapshot()).unwrap();
            let state: CorrelatorState = serde_json::from_slice(&json).unwrap();
            let mut second = AgentCorrelator::restore(config, state);
            actual.extend(feed(&mut second, events[cut..].iter().copied()));
            prop_assert_eq!(actual, expected);
            prop_assert_eq!(second, straight);
        }

        #[test]
        fn rebuilding_from_the_replay_horizon_reproduces_the_state(
            config in config_strategy(),
            steps in steps(false),
            cut in any::<prop::sample::Index>(),
            max_precursors in 1usize..4,
        ) {
            prop_assume!(!steps.is_empty());
            let config = CorrelationConfig {
                data_exfiltration: FollowConfig { max_precursors, ..config.data_exfiltration },
                trust_escalation: FollowConfig { max_precursors, ..config.trust_escalation },
                ..config
            };
            let events = events(&steps, &[]);
            let cut = 1 + cut.index(events.len());
            let mut live = AgentCorrelator::new(config);
            feed(&mut live, events[..cut].iter().copied());

            let last_at = events[cut - 1].at_ms;
            let since = last_at - config.replay_horizon_ms();
            let history = events[..cut].iter().copied().filter(|e| e.at_ms >= since);
            let mut rebuilt = AgentCorrelator::rebuild(config, history);
            prop_assert_eq!(rebuilt.snapshot(), live.snapshot());
            prop_assert_eq!(
                feed(&mut rebuilt, events[cut..].iter().copied()),
                feed(&mut live, events[cut..].iter().copied())
            );
        }
    }
}
