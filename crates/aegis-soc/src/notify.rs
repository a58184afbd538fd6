//! The notification consumer: follows the event log from its own cursor ([`CONSUMER`]),
//! picks what operators must hear about (denies, approval requests, high/critical alerts and
//! incidents, automatic responses), coalesces bursts per agent, and queues one delivery per
//! sink in the `deliveries` table, in the same transaction as its new cursor and its
//! coalescing state (`NotificationStore::apply_notify_batch`). A crash before that commit repeats the
//! batch from the saved state; after it, nothing is repeated. It never touches the network:
//! the delivery worker ([`crate::deliver`]) sends what is queued.
//!
//! Coalescing: the first notification for an agent is queued at once; later ones within
//! `coalesce` of the last message for that agent are gathered and queued together when the
//! interval has passed, with their count, first/last times and every id. Nothing is dropped.
//! What is gathered for an agent is always its notified events from the first one held back
//! up to the cursor, so the saved state is that first seq alone ([`CoalesceRecord`]); after a
//! restart the items are read again from the log. A burst of denies thus costs each pass
//! only the events it read, however long the burst lasts.

use crate::consumer::effective_autonomy;
use crate::{slack, slack_actions};
use aegis_core::model::{AutonomyLevel, Severity, Verdict};
use aegis_core::timestamp::format_millis;
use aegis_store::{
    CoalesceRecord, Event, EventKinds, EventLog, NewDelivery, NotificationStore, NotifyBatch,
    StoreResult, TenantId, Webhook, event_kind,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Name of this consumer's cursor.
pub const CONSUMER: &str = "notify";
const BATCH: u32 = 1000;
/// The events the notifier reads: the kinds [`item_of`] may notify and the settings change
/// that makes it forget a tenant's autonomy level, without the allowed decisions, so the
/// allows that make up most of the log cost it nothing.
const READ: EventKinds = EventKinds::of(&[
    event_kind::DECISION,
    event_kind::ALERT_RAISED,
    event_kind::INCIDENT_OPENED,
    event_kind::RESPONSE_ACTION,
    event_kind::TENANT_SETTINGS_CHANGED,
])
.except_allows();
/// Sink names of the deployment-wide sinks (env).
pub const ENV_JSON_SINK: &str = "env:json";
pub const ENV_SLACK_SINK: &str = "env:slack";
/// Prefix of per-tenant subscription sinks: `sub:<webhook id>`.
pub const SUBSCRIPTION_SINK_PREFIX: &str = "sub:";

/// The sink name of a subscription's deliveries.
pub fn subscription_sink(webhook_id: &str) -> String {
    format!("{SUBSCRIPTION_SINK_PREFIX}{webhook_id}")
}
/// Notification kinds, also the values of a subscription's `events` filter.
pub const KINDS: &[&str] = &[
    "deny",
    "require_approval",
    "alert",
    "incident",
    "response_action",
];
/// Items listed one by one in a Slack message (the count and JSON sinks carry every one).
const SLACK_MAX_ITEMS: usize = 20;

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `AEGIS_SOC_AUTONOMY_LEVEL`, for tenants without an override.
    pub default_autonomy: AutonomyLevel,
    /// `AEGIS_NOTIFY_COALESCE_SECS`.
    pub coalesce: Duration,
    /// `AEGIS_WEBHOOK_URL` is set.
    pub env_json: bool,
    /// `AEGIS_SLACK_WEBHOOK_URL` is set.
    pub env_slack: bool,
    /// `AEGIS_PUBLIC_URL`, for links to incidents and approvals.
    pub public_url: Option<String>,
    /// `AEGIS_SLACK_SIGNING_SECRET` is set: Slack messages carry Approve/Reject buttons, which
    /// the gateway's `POST /v1/callbacks/slack` can then authenticate.
    pub slack_buttons: bool,
    /// How often to look for due coalesced messages and new events without a commit signal.
    pub idle_poll: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            default_autonomy: AutonomyLevel::L1,
            coalesce: Duration::from_secs(10),
            env_json: false,
            env_slack: false,
            public_url: None,
            slack_buttons: false,
            idle_poll: Duration::from_millis(250),
        }
    }
}

/// One thing to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// One of [`KINDS`].
    pub kind: String,
    /// The decision, alert, incident or response id.
    pub id: String,
    pub severity: Severity,
    pub summary: String,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// The approval a `require_approval` decision asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    pub seq: i64,
}

#[derive(Debug, Clone, Default)]
struct Coalesce {
    last_sent_at_ms: Option<i64>,
    pending: Vec<Item>,
}

type AgentKey = (TenantId, String);

pub struct Notifier {
    store: Arc<dyn NotificationStore>,
    config: NotifyConfig,
    cursor: i64,
    states: HashMap<AgentKey, Coalesce>,
    autonomy: HashMap<TenantId, AutonomyLevel>,
    now_ms: fn() -> i64,
}

impl Notifier {
    /// Loads the cursor and the saved coalescing state.
    pub async fn start(
        store: Arc<dyn NotificationStore>,
        config: NotifyConfig,
    ) -> StoreResult<Self> {
        let mut notifier = Notifier {
            store,
            config,
            cursor: 0,
            states: HashMap::new(),
            autonomy: HashMap::new(),
            now_ms: aegis_store::now_ms,
        };
        notifier.load_saved().await?;
        Ok(notifier)
    }

    async fn load_saved(&mut self) -> StoreResult<()> {
        self.cursor = self.store.consumer_cursor(CONSUMER).await?;
        self.autonomy.clear();
        self.states.clear();
        let mut held_from: HashMap<AgentKey, i64> = HashMap::new();
        for saved in self.store.coalesce_states().await? {
            let key = (saved.tenant_id, saved.agent_id);
            if let Some(seq) = saved.pending_from_seq {
                held_from.insert(key.clone(), seq);
            }
            self.states.insert(
                key,
                Coalesce {
                    last_sent_at_ms: Some(saved.last_sent_at_ms),
                    pending: Vec::new(),
                },
            );
        }
        self.gather_held(&held_from).await
    }

    /// Reads again what was held back at the last save: each agent's notified events from
    /// its first held seq up to the cursor.
    async fn gather_held(&mut self, held_from: &HashMap<AgentKey, i64>) -> StoreResult<()> {
        let Some(first) = held_from.values().min() else {
            return Ok(());
        };
        let (mut after, cursor) = (first - 1, self.cursor);
        loop {
            let events = self.read(after, cursor).await?;
            for event in &events {
                let Some((key, item)) = self.notified(event).await? else {
                    continue;
                };
                if held_from.get(&key).is_some_and(|from| event.seq >= *from) {
                    self.states.entry(key).or_default().pending.push(item);
                }
            }
            match events.last() {
                Some(last) if events.len() == BATCH as usize => after = last.seq,
                _ => return Ok(()),
            }
        }
    }

    /// The next batch of the events the notifier reads with `after < seq <= up_to`.
    async fn read(&self, after: i64, up_to: i64) -> StoreResult<Vec<Event>> {
        (self.store)
            .events_of_kinds(after, up_to, READ, BATCH)
            .await
    }

    /// What `event` notifies and for which agent, if anything: one of the notified kinds, of
    /// a tenant whose autonomy level is above L0. A settings change forgets the tenant's level.
    async fn notified(&mut self, event: &Event) -> StoreResult<Option<(AgentKey, Item)>> {
        if event.kind == event_kind::TENANT_SETTINGS_CHANGED {
            self.autonomy.remove(&event.tenant_id);
            return Ok(None);
        }
        let Some(item) = item_of(event) else {
            return Ok(None);
        };
        if self.autonomy_of(&event.tenant_id).await? == AutonomyLevel::L0 {
            return Ok(None);
        }
        let key = (
            event.tenant_id.clone(),
            event.agent_id.clone().unwrap_or_default(),
        );
        Ok(Some((key, item)))
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::follow_log(self, shutdown).await
    }

    /// Processes new events and queues coalesced messages that are due. Returns whether
    /// it committed anything.
    async fn process_next(&mut self) -> StoreResult<bool> {
        let now = (self.now_ms)();
        let coalesce_ms = self.config.coalesce.as_millis() as i64;
        let head = *self.store.committed_seq().borrow();
        let events = self.read(self.cursor, head).await?;
        // A full batch may stop short of the head; anything less read all the way to it.
        let cursor = match events.last() {
            Some(last) if events.len() == BATCH as usize => last.seq,
            _ => head.max(self.cursor),
        };
        let mut touched: HashSet<AgentKey> = HashSet::new();
        let mut messages: Vec<(AgentKey, Vec<Item>)> = Vec::new();
        for event in &events {
            let Some((key, item)) = self.notified(event).await? else {
                continue;
            };
            let state = self.states.entry(key.clone()).or_default();
            let quiet = state
                .last_sent_at_ms
                .is_none_or(|last| now - last >= coalesce_ms);
            if state.pending.is_empty() && quiet {
                state.last_sent_at_ms = Some(now);
                messages.push((key.clone(), vec![item]));
            } else {
                state.pending.push(item);
            }
            touched.insert(key);
        }
        for (key, state) in self.states.iter_mut() {
            let due = state
                .last_sent_at_ms
                .is_none_or(|last| now - last >= coalesce_ms);
            if !state.pending.is_empty() && due {
                state.last_sent_at_ms = Some(now);
                messages.push((key.clone(), std::mem::take(&mut state.pending)));
                touched.insert(key.clone());
            }
        }
        if cursor == self.cursor && touched.is_empty() {
            return Ok(false);
        }
        let mut batch = NotifyBatch {
            consumer: CONSUMER.into(),
            after: self.cursor,
            cursor,
            ..NotifyBatch::default()
        };
        let mut subscriptions: HashMap<TenantId, Vec<Webhook>> = HashMap::new();
        for ((tenant_id, agent_id), items) in messages {
            if !subscriptions.contains_key(&tenant_id) {
                let list = self.store.list_webhooks(&tenant_id).await?;
                subscriptions.insert(tenant_id.clone(), list);
            }
            let message = Message {
                tenant_id: &tenant_id,
                agent_id: &agent_id,
                items: &items,
                public_url: self.config.public_url.as_deref(),
                slack_buttons: self.config.slack_buttons,
            };
            let mut queue = |sink: String, render: &dyn Fn(&str) -> Value| {
                let id = format!("dlv_{}", uuid::Uuid::now_v7().simple());
                batch.deliveries.push(NewDelivery {
                    body: render(&id).to_string(),
                    id,
                    tenant_id: tenant_id.clone(),
                    sink,
                    agent_id: (!agent_id.is_empty()).then(|| agent_id.clone()),
                    created_at_ms: now,
                });
            };
            if self.config.env_json {
                queue(ENV_JSON_SINK.into(), &|id| message.json(id));
            }
            if self.config.env_slack {
                queue(ENV_SLACK_SINK.into(), &|_| message.slack());
            }
            for webhook in &subscriptions[&tenant_id] {
                let selected: Vec<Item> = match &webhook.events {
                    Some(kinds) => items
                        .iter()
                        .filter(|i| kinds.contains(&i.kind))
                        .cloned()
                        .collect(),
                    None => items.clone(),
                };
                if selected.is_empty() {
                    continue;
                }
                let message = Message {
                    items: &selected,
                    ..message
                };
                let sink = subscription_sink(&webhook.id);
                if webhook.format == "slack" {
                    queue(sink, &|_| message.slack());
                } else {
                    queue(sink, &|id| message.json(id));
                }
            }
        }
        batch.coalesce = touched
            .into_iter()
            .filter_map(|key| {
                let state = self.states.get(&key)?;
                Some(CoalesceRecord {
                    last_sent_at_ms: state.last_sent_at_ms.unwrap_or(0),
                    pending_from_seq: state.pending.first().map(|item| item.seq),
                    tenant_id: key.0,
                    agent_id: key.1,
                })
            })
            .collect();
        let queued = batch.deliveries.len();
        self.store.apply_notify_batch(batch).await?;
        self.cursor = cursor;
        if queued > 0 {
            tracing::debug!(queued, cursor, "notifications queued");
        }
        Ok(true)
    }

    async fn autonomy_of(&mut self, tenant_id: &TenantId) -> StoreResult<AutonomyLevel> {
        if let Some(level) = self.autonomy.get(tenant_id) {
            return Ok(*level);
        }
        let settings = self.store.tenant(tenant_id).await?;
        let level = effective_autonomy(&settings, self.config.default_autonomy);
        self.autonomy.insert(tenant_id.clone(), level);
        Ok(level)
    }
}

fn str_field(payload: &Value, name: &str) -> Option<String> {
    payload.get(name)?.as_str().map(str::to_owned)
}

fn severity_field(payload: &Value) -> Option<Severity> {
    Severity::deserialize(payload.get("severity")?).ok()
}

/// What an event reports, if it is one of the notified kinds (each of them in
/// [`READ`]). No raw parameters.
pub fn item_of(event: &Event) -> Option<Item> {
    let mut approval_id = None;
    let (kind, id, severity, summary, incident_id) = match event.kind.as_str() {
        event_kind::DECISION => {
            let d = event.payload.decision().ok()?;
            let kind = match d.decision {
                Verdict::Deny => "deny",
                Verdict::RequireApproval => "require_approval",
                _ => return None,
            };
            let summary = format!(
                "{kind}: {}/{} (risk {}, score {}, source {})",
                d.tool, d.action, d.risk, d.risk_score, d.source_trust,
            );
            approval_id = d
                .approval_id
                .clone()
                .filter(|_| d.decision == Verdict::RequireApproval);
            (kind, d.decision_id.clone(), d.risk.into(), summary, None)
        }
        event_kind::ALERT_RAISED | event_kind::INCIDENT_OPENED => {
            let p = event.payload.as_json();
            let severity = severity_field(&p)?;
            if severity < Severity::High {
                return None;
            }
            let (kind, id_field) = if event.kind == event_kind::ALERT_RAISED {
                ("alert", "alert_id")
            } else {
                ("incident", "incident_id")
            };
            let id = str_field(&p, id_field)?;
            let summary = format!(
                "{kind} {}: {}",
                str_field(&p, "kind").unwrap_or_default(),
                str_field(&p, "summary").unwrap_or_default()
            );
            let incident_id = (kind == "incident").then(|| id.clone());
            (kind, id, severity, summary, incident_id)
        }
        event_kind::RESPONSE_ACTION => {
            let p = event.payload.as_json();
            if p.get("mode").and_then(Value::as_str) != Some("automatic") {
                return None;
            }
            let summary = format!(
                "automatic response {}: {}",
                str_field(&p, "action").unwrap_or_default(),
                str_field(&p, "detail").unwrap_or_default()
            );
            (
                "response_action",
                str_field(&p, "response_id")?,
                Severity::High,
                summary,
                str_field(&p, "incident_id"),
            )
        }
        _ => return None,
    };
    Some(Item {
        kind: kind.into(),
        id,
        severity,
        summary,
        at_ms: event.created_at_ms,
        incident_id,
        approval_id,
        seq: event.seq,
    })
}

/// One message about one agent, rendered per sink format.
#[derive(Clone, Copy)]
struct Message<'a> {
    tenant_id: &'a TenantId,
    agent_id: &'a str,
    items: &'a [Item],
    public_url: Option<&'a str>,
    slack_buttons: bool,
}

impl Message<'_> {
    fn kind(&self) -> &str {
        match self.items {
            [first, rest @ ..] if rest.iter().all(|i| i.kind == first.kind) => &first.kind,
            _ => "mixed",
        }
    }

    fn severity(&self) -> Severity {
        self.items
            .iter()
            .map(|i| i.severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    fn first_at(&self) -> i64 {
        self.items.iter().map(|i| i.at_ms).min().unwrap_or_default()
    }

    fn last_at(&self) -> i64 {
        self.items.iter().map(|i| i.at_ms).max().unwrap_or_default()
    }

    fn summary(&self) -> String {
        match self.items {
            [one] => one.summary.clone(),
            items => {
                let mut counts: Vec<(&str, usize)> = Vec::new();
                for item in items {
                    match counts.iter_mut().find(|(k, _)| *k == item.kind) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((&item.kind, 1)),
                    }
                }
                let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
                format!(
                    "{} notifications for agent {} between {} and {}: {}",
                    items.len(),
                    self.agent_label(),
                    format_millis(self.first_at()),
                    format_millis(self.last_at()),
                    parts.join(", ")
                )
            }
        }
    }

    fn agent_label(&self) -> &str {
        if self.agent_id.is_empty() {
            "(none)"
        } else {
            self.agent_id
        }
    }

    fn ids(&self, kinds: &[&str]) -> Vec<&str> {
        self.items
            .iter()
            .filter(|i| kinds.contains(&i.kind.as_str()))
            .map(|i| i.id.as_str())
            .collect()
    }

    fn approval_ids(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter_map(|i| i.approval_id.as_deref())
            .collect()
    }

    fn incident_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for id in self.items.iter().filter_map(|i| i.incident_id.as_deref()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The generic JSON body.
    fn json(&self, delivery_id: &str) -> Value {
        json!({
            "delivery_id": delivery_id,
            "tenant_id": self.tenant_id,
            "agent_id": (!self.agent_id.is_empty()).then_some(self.agent_id),
            "kind": self.kind(),
            "severity": self.severity(),
            "summary": self.summary(),
            "count": self.items.len(),
            "first_at": format_millis(self.first_at()),
            "last_at": format_millis(self.last_at()),
            "decision_ids": self.ids(&["deny", "require_approval"]),
            "alert_ids": self.ids(&["alert"]),
            "incident_ids": self.incident_ids(),
            "approval_ids": self.approval_ids(),
            "response_ids": self.ids(&["response_action"]),
            "items": self.items.iter().map(|i| json!({
                "kind": i.kind,
                "id": i.id,
                "severity": i.severity,
                "summary": i.summary,
                "at": format_millis(i.at_ms),
                "incident_id": i.incident_id,
                "approval_id": i.approval_id,
            })).collect::<Vec<_>>(),
        })
    }

    /// A Slack incoming-webhook body: `text` (fallback) and `blocks`. Summaries carry
    /// agent-chosen names, so they are shown literally ([`crate::slack`]).
    fn slack(&self) -> Value {
        let severity = self.severity();
        let fallback = format!(
            "[{}] AegisAgent {} for agent {} (tenant {}): {}",
            severity.as_str().to_uppercase(),
            self.kind(),
            self.agent_label(),
            self.tenant_id,
            self.summary()
        );
        let mut blocks = vec![
            json!({"type": "section", "text": slack::markup(&format!(
                "*AegisAgent: {}* · severity *{}*",
                self.kind(),
                severity.as_str()
            ))}),
            json!({"type": "section", "text": slack::literal(&self.summary())}),
        ];
        if self.items.len() > 1 {
            let mut lines: Vec<String> = self
                .items
                .iter()
                .take(SLACK_MAX_ITEMS)
                .map(|i| format!("• {} {} — {}", i.id, i.kind, i.summary))
                .collect();
            if self.items.len() > SLACK_MAX_ITEMS {
                lines.push(format!(
                    "… and {} more (every id is in the JSON webhook and the API)",
                    self.items.len() - SLACK_MAX_ITEMS
                ));
            }
            blocks.push(json!({"type": "section", "text": slack::literal(&lines.join("\n"))}));
        }
        let mut context = format!(
            "tenant {} · agent {} · {} event(s) {} – {}",
            slack::code(self.tenant_id.as_str()),
            slack::code(self.agent_label()),
            self.items.len(),
            format_millis(self.first_at()),
            format_millis(self.last_at())
        );
        if let Some(base) = self.public_url {
            for id in self.incident_ids() {
                let id = slack::escape_within(id, 200);
                context.push_str(&format!(
                    " · <{}/v1/incidents/{id}|incident {id}>",
                    slack::escape_within(base.trim_end_matches('/'), 1000)
                ));
            }
        }
        if let Some(base) = self.public_url {
            for id in self.approval_ids() {
                let id = slack::escape_within(id, 200);
                context.push_str(&format!(
                    " · <{}/v1/approvals/{id}|approval {id}>",
                    slack::escape_within(base.trim_end_matches('/'), 1000)
                ));
            }
        }
        blocks.push(json!({"type": "context", "elements": [slack::markup(&context)]}));
        if self.slack_buttons {
            for id in self.approval_ids().into_iter().take(SLACK_MAX_ITEMS) {
                blocks.push(slack_actions::buttons(self.tenant_id.as_str(), id));
            }
        }
        slack::message(&fallback, blocks)
    }
}

/// The body of a test delivery (`POST /v1/webhooks/{id}/test`) in a sink's format.
pub fn test_message(format: &str, tenant_id: &TenantId, delivery_id: &str, now_ms: i64) -> Value {
    let summary = "test notification from AegisAgent";
    if format == "slack" {
        return slack::message(
            &format!("AegisAgent: {summary} (tenant {tenant_id})"),
            vec![
                json!({"type": "section", "text": slack::markup(&format!("*AegisAgent: test* · severity *info*\n{summary}"))}),
                json!({"type": "context", "elements": [slack::markup(&format!("tenant {}", slack::code(tenant_id.as_str())))]}),
            ],
        );
    }
    json!({
        "delivery_id": delivery_id, "tenant_id": tenant_id, "agent_id": null,
        "kind": "test", "severity": "info", "summary": summary, "count": 0,
        "first_at": format_millis(now_ms), "last_at": format_millis(now_ms),
        "decision_ids": [], "alert_ids": [], "incident_ids": [], "approval_ids": [], "response_ids": [], "items": []
    })
}

impl crate::LogConsumer for Notifier {
    const NAME: &'static str = CONSUMER;

    fn store(&self) -> &dyn EventLog {
        self.store.as_ref()
    }

    fn idle_poll(&self) -> Duration {
        self.config.idle_poll
    }

    async fn step(&mut self) -> StoreResult<bool> {
        self.process_next().await
    }

    async fn reload(&mut self) -> StoreResult<()> {
        self.load_saved().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::model::{ActionRisk, SourceTrust};
    use aegis_store::{DecisionEvent, EventPayload};

    fn item(kind: &str, id: &str, at_ms: i64) -> Item {
        Item {
            kind: kind.into(),
            id: id.into(),
            severity: Severity::High,
            summary: format!("{kind} <b>&"),
            at_ms,
            incident_id: (kind == "incident").then(|| id.into()),
            approval_id: None,
            seq: at_ms,
        }
    }

    #[test]
    fn a_coalesced_json_message_counts_and_lists_every_id() {
        let tenant = TenantId::new("acme");
        let items = vec![
            item("deny", "d1", 1_000),
            item("deny", "d2", 2_000),
            item("incident", "inc1", 3_000),
        ];
        let m = Message {
            tenant_id: &tenant,
            agent_id: "a1",
            items: &items,
            public_url: Some("https://aegis.example/"),
            slack_buttons: false,
        };
        let body = m.json("dlv_1");
        assert_eq!(body["count"], 3);
        assert_eq!(body["kind"], "mixed");
        assert_eq!(body["decision_ids"], json!(["d1", "d2"]));
        assert_eq!(body["incident_ids"], json!(["inc1"]));
        assert_eq!(body["first_at"], format_millis(1_000));
        assert_eq!(body["last_at"], format_millis(3_000));
        let slack = m.slack();
        assert!(slack["text"].is_string());
        let blocks = slack["blocks"].as_array().unwrap();
        let context = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(context.contains("<https://aegis.example/v1/incidents/inc1|incident inc1>"));
        assert!(!slack.to_string().contains("<b>"));
    }

    /// A deny of `tool`/`action` as the notifier reports it.
    fn deny_of(tool: &str, action: &str) -> Item {
        item_of(&Event {
            seq: 7,
            tenant_id: TenantId::new("acme"),
            kind: event_kind::DECISION.into(),
            agent_id: Some("agt_1".into()),
            subject_id: None,
            payload: EventPayload::Decision(DecisionEvent {
                decision_id: "dec_1".into(),
                decision: Verdict::Deny,
                tool: tool.into(),
                action: action.into(),
                mutates_state: true,
                egress: false,
                sensitive: false,
                contained: false,
                risk: ActionRisk::High,
                risk_score: 85,
                source_trust: SourceTrust::UntrustedExternal,
                run_id: None,
                approval_id: None,
            }),
            unreadable: None,
            created_at_ms: 1_000,
        })
        .expect("a deny is notified")
    }

    fn slack_of(items: &[Item]) -> Value {
        let tenant = TenantId::new("acme");
        Message {
            tenant_id: &tenant,
            agent_id: "agt_1",
            items,
            public_url: None,
            slack_buttons: false,
        }
        .slack()
    }

    /// Every text object of a Slack body: (type, text, the object).
    fn text_objects(value: &Value, out: &mut Vec<(String, String, Value)>) {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(kind)), Some(Value::String(text))) =
                    (map.get("type"), map.get("text"))
                {
                    out.push((kind.clone(), text.clone(), value.clone()));
                }
                map.values().for_each(|v| text_objects(v, out));
            }
            Value::Array(list) => list.iter().for_each(|v| text_objects(v, out)),
            _ => {}
        }
    }

    /// The mrkdwn of a message (which must not depend on agent text).
    fn markup_of(body: &Value) -> Vec<String> {
        let mut objects = Vec::new();
        text_objects(body, &mut objects);
        objects
            .into_iter()
            .filter(|(kind, ..)| kind == "mrkdwn")
            .map(|(_, text, _)| text)
            .collect()
    }

    /// Slack for `count` denies of `tool`/`action`.
    fn slack_for(tool: &str, action: &str, count: usize) -> Value {
        let items: Vec<Item> = (0..count).map(|_| deny_of(tool, action)).collect();
        slack_of(&items)
    }

    /// A rendering without control sequences: mrkdwn only of the gateway's own words (the
    /// same as for harmless names), agent text only in plain_text and in the fallback
    /// (mrkdwn off), and every text escaped (no bare `&`, `<`, `>`, no split entity).
    fn assert_literal(tool: &str, action: &str, count: usize) -> Value {
        let body = slack_for(tool, action, count);
        assert_eq!(body["mrkdwn"], false, "the fallback is not mrkdwn");
        let fallback = body["text"].as_str().unwrap();
        assert!(
            crate::slack::tests::unescape(fallback).is_some(),
            "{fallback:?}"
        );
        assert!(fallback.len() <= crate::slack::MAX_TEXT);
        let mut objects = Vec::new();
        text_objects(&body, &mut objects);
        for (kind, text, object) in &objects {
            match kind.as_str() {
                "plain_text" => assert_eq!(object["emoji"], false, "{object}"),
                "mrkdwn" => assert_eq!(object["verbatim"], true, "{object}"),
                other => panic!("unexpected text type {other}"),
            }
            assert!(!text.is_empty() && text.len() <= 3000, "{object}");
            assert!(crate::slack::tests::unescape(text).is_some(), "{object}");
        }
        let harmless = slack_for("github", "merge", count);
        assert_eq!(
            markup_of(&body),
            markup_of(&harmless),
            "mrkdwn carries no agent text"
        );
        body
    }

    #[test]
    fn agent_chosen_names_are_shown_literally_in_slack() {
        let body = assert_literal(
            "*RESOLVED: false positive*\n<!channel> _ok_ ~x~ `y`",
            "Re-enable here: https://evil.example/u <https://evil.example|click>",
            1,
        );
        let summary = &body["blocks"][1]["text"];
        assert_eq!(summary["type"], "plain_text");
        let shown = summary["text"].as_str().unwrap();
        assert!(shown.contains("*RESOLVED: false positive*"), "{shown}");
        assert!(shown.contains("&lt;!channel&gt;"), "{shown}");
        assert!(
            shown.contains("&lt;https://evil.example|click&gt;"),
            "{shown}"
        );
        let fallback = body["text"].as_str().unwrap();
        assert!(
            fallback.contains("&lt;!channel&gt;") && !fallback.contains("<!"),
            "{fallback}"
        );
    }

    #[test]
    fn the_test_message_for_slack_is_literal_too() {
        let body = test_message("slack", &TenantId::new("acme"), "dlv_1", 1_000);
        assert_eq!(body["mrkdwn"], false);
        let mut objects = Vec::new();
        text_objects(&body, &mut objects);
        assert!(
            objects
                .iter()
                .all(|(kind, _, o)| kind != "mrkdwn" || o["verbatim"] == true)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_agent_text_renders_without_control_sequences(
            tool in proptest::prelude::any::<String>(),
            action in ".{0,4000}",
            coalesced in 1usize..30,
        ) {
            assert_literal(&tool, &action, coalesced);
        }
    }
}
