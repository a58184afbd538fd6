//! The SOC consumer: reads the event log in `seq` order from its persisted cursor, runs
//! detection and correlation, plans responses, and writes everything it found together with
//! its new cursor and the correlators' windows in one transaction
//! (`SocStore::apply_soc_batch`). A crash before that commit repeats the batch from the same
//! state; after it, nothing is repeated. Incident ids and dedup keys are derived from the
//! finding, so even a repeat could not open a second incident for one storm.

use crate::SocConfig;
use crate::detect::{detect_decision, detect_other, detect_unreadable};
use crate::response::plan;
use aegis_core::correlate::{
    ActionClass, ActionFacts, AgentCorrelator, AlertCount, CorrelationConfig, CorrelationEvent,
    CorrelatorState, ExfiltrationReads, Finding, RuleKind,
};
use aegis_core::model::AutonomyLevel;
use aegis_store::mcp::{DEFINITION_CHANGED, definition_changed_dedup_key, mcp_event};
use aegis_store::{
    Agent, AlertRepeat, CorrelatorStateRecord, Event, EventLog, EvidenceAppend, EvidenceRef,
    NewAlert, NewIncident, SocBatch, SocStore, StoreResult, TenantId, TenantSettings, event_kind,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Name of this consumer's cursor.
pub const CONSUMER: &str = "soc";
const BATCH: u32 = 1000;

/// Called with every agent an automatic response changed (to refresh caches).
pub type AgentChanged = Arc<dyn Fn(&Agent) + Send + Sync>;

type AgentKey = (TenantId, String);

struct TenantSoc {
    correlation: CorrelationConfig,
    autonomy: AutonomyLevel,
    exfiltration_reads: ExfiltrationReads,
}

pub struct Consumer {
    store: Arc<dyn SocStore>,
    config: SocConfig,
    on_agent_changed: AgentChanged,
    cursor: i64,
    correlators: HashMap<AgentKey, AgentCorrelator>,
    tenants: HashMap<TenantId, TenantSoc>,
}

impl Consumer {
    /// Loads the cursor and the saved correlation windows.
    pub async fn start(
        store: Arc<dyn SocStore>,
        config: SocConfig,
        on_agent_changed: AgentChanged,
    ) -> StoreResult<Self> {
        let cursor = store.consumer_cursor(CONSUMER).await?;
        let mut consumer = Consumer {
            store,
            config,
            on_agent_changed,
            cursor,
            correlators: HashMap::new(),
            tenants: HashMap::new(),
        };
        consumer.load_saved_windows().await?;
        Ok(consumer)
    }

    async fn load_saved_windows(&mut self) -> StoreResult<()> {
        self.correlators.clear();
        for saved in self.store.correlator_states().await? {
            let Ok(state) = serde_json::from_str::<CorrelatorState>(&saved.state) else {
                tracing::warn!(tenant_id = %saved.tenant_id, agent_id = %saved.agent_id, "unreadable correlator state; starting it empty");
                continue;
            };
            let config = self.tenant(&saved.tenant_id).await?.correlation;
            self.correlators.insert(
                (saved.tenant_id, saved.agent_id),
                AgentCorrelator::restore(config, state),
            );
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::follow_log(self, shutdown).await
    }

    /// Processes one batch of new events. Returns whether there was anything to process.
    async fn process_next(&mut self) -> StoreResult<bool> {
        let events = self.store.events_after(self.cursor, BATCH).await?;
        let Some(last) = events.last() else {
            return Ok(false);
        };
        let mut batch = SocBatch {
            consumer: CONSUMER.into(),
            after: self.cursor,
            cursor: last.seq,
            ..SocBatch::default()
        };
        let mut touched = HashSet::new();
        let mut alerts = AlertTally::default();
        for event in &events {
            self.observe(event, &mut batch, &mut alerts, &mut touched)
                .await?;
        }
        alerts.into_batch(&mut batch);
        batch.correlator_states = touched
            .into_iter()
            .filter_map(|key: AgentKey| {
                let state = serde_json::to_string(self.correlators.get(&key)?.snapshot()).ok()?;
                Some(CorrelatorStateRecord {
                    tenant_id: key.0,
                    agent_id: key.1,
                    state,
                })
            })
            .collect();
        // Kinds are a fixed set of rule names: a bounded label.
        let kinds: HashMap<String, String> = (batch.incidents.iter())
            .map(|incident| (incident.id.clone(), incident.kind.clone()))
            .collect();
        let applied = self.store.apply_soc_batch(batch).await?;
        self.cursor = last.seq;
        for opened in &applied.opened {
            if let Some(kind) = kinds.get(opened) {
                metrics::counter!("aegis_incidents_opened_total", "kind" => kind.clone())
                    .increment(1);
            }
        }
        for agent in &applied.agents_changed {
            tracing::info!(agent_id = %agent.id, status = %agent.status, "SOC response changed an agent");
            (self.on_agent_changed)(agent);
        }
        Ok(true)
    }

    async fn observe(
        &mut self,
        event: &Event,
        batch: &mut SocBatch,
        alerts: &mut AlertTally,
        touched: &mut HashSet<AgentKey>,
    ) -> StoreResult<()> {
        let tenant_id = &event.tenant_id;
        if let Some(reason) = &event.unreadable {
            tracing::error!(seq = event.seq, kind = ?event.kind, ?reason, "an event of the log cannot be read; alerting and skipping it");
            alerts.raise(alert(event, detect_unreadable(&event.kind, reason)));
            // A settings change is read from the tenant's row, not from its event.
            if event.kind != event_kind::TENANT_SETTINGS_CHANGED {
                return Ok(());
            }
        }
        if event.kind == event_kind::TENANT_SETTINGS_CHANGED {
            self.tenants.remove(tenant_id);
            let config = self.tenant(tenant_id).await?.correlation;
            for ((tenant, _), correlator) in self.correlators.iter_mut() {
                if tenant == tenant_id {
                    *correlator = AgentCorrelator::restore(config, correlator.snapshot().clone());
                }
            }
            return Ok(());
        }
        if event.kind == event_kind::INCIDENT_CLOSED {
            self.incident_closed(event, touched);
            return Ok(());
        }
        if event.kind != event_kind::DECISION {
            if let Some(found) = detect_other(
                &event.kind,
                event.agent_id.as_deref(),
                &event.payload.as_json(),
            ) {
                if event.kind == mcp_event::TOOL_DEFINITION_CHANGED {
                    self.definition_changed(event, &found, batch).await?;
                }
                alerts.raise(alert(event, found));
            }
            return Ok(());
        }
        let (Some(agent_id), Ok(decision)) = (event.agent_id.as_deref(), event.payload.decision())
        else {
            tracing::warn!(
                seq = event.seq,
                "decision event without a readable payload; skipped"
            );
            return Ok(());
        };

        let key: AgentKey = (tenant_id.clone(), agent_id.to_owned());
        let tenant = self.tenant(tenant_id).await?;
        let (correlation, autonomy) = (tenant.correlation, tenant.autonomy);
        let facts = ActionFacts {
            egress: decision.egress,
            sensitive: decision.sensitive,
            mutates_state: decision.mutates_state,
        };
        let class = ActionClass::of(facts, tenant.exfiltration_reads);
        let correlator = self
            .correlators
            .entry(key.clone())
            .or_insert_with(|| AgentCorrelator::new(correlation));
        let findings = correlator.observe(CorrelationEvent {
            seq: event.seq,
            at_ms: event.created_at_ms,
            verdict: decision.decision,
            tool: &decision.tool,
            action: &decision.action,
            class,
            contained: decision.contained,
        });
        // An agent repeating a denied call raises one alert per kind and window, counting
        // the rest into it: a storm writes its incident, not a row per deny.
        for found in detect_decision(agent_id, &decision) {
            match correlator.count_alert(found.kind, found.severity, event.seq, event.created_at_ms)
            {
                AlertCount::New => alerts.raise(alert(event, found)),
                AlertCount::Repeat { opened_by } => {
                    alerts.repeat(tenant_id, alert_id(tenant_id, found.kind, opened_by));
                }
                AlertCount::Replayed => {}
            }
        }
        touched.insert(key.clone());

        for finding in findings {
            match finding {
                Finding::Opened {
                    rule,
                    severity,
                    evidence,
                } => {
                    let trigger = evidence.last().copied().unwrap_or(event.seq);
                    let dedup_key = dedup_key(rule, agent_id, trigger);
                    let incident_id = incident_id(tenant_id, &dedup_key);
                    let response = plan(autonomy, rule, severity, &incident_id);
                    batch.incidents.push(NewIncident {
                        id: incident_id.clone(),
                        tenant_id: tenant_id.clone(),
                        kind: rule.as_str().into(),
                        severity,
                        agent_id: agent_id.to_owned(),
                        dedup_key,
                        summary: summary(rule, evidence.len(), &correlation, agent_id),
                        evidence: evidence
                            .iter()
                            .map(|&seq| EvidenceRef { event_seq: seq })
                            .collect(),
                        recommended_action: response.recommended,
                        response: response.automatic,
                        opened_at_ms: event.created_at_ms,
                    });
                }
                Finding::Joined {
                    rule,
                    opened_by,
                    seq,
                } => {
                    let incident_id = incident_id(tenant_id, &dedup_key(rule, agent_id, opened_by));
                    // An agent that was unfrozen while its incident goes on is contained
                    // again, as the incident's own response would (L3/L4); a containment
                    // refusal comes from an agent that is still frozen.
                    let recontain = (seq == event.seq && !decision.contained)
                        .then(|| plan(autonomy, rule, rule.severity(), &incident_id))
                        .and_then(|response| response.automatic.freeze);
                    batch.evidence.push(EvidenceAppend {
                        tenant_id: tenant_id.clone(),
                        incident_id,
                        evidence: EvidenceRef { event_seq: seq },
                        recontain,
                    });
                }
            }
        }
        Ok(())
    }

    /// A changed MCP tool definition opens one incident per new definition, on the agent
    /// whose request listed it; its response is planned by the tenant's autonomy level.
    async fn definition_changed(
        &mut self,
        event: &Event,
        found: &crate::detect::Detection,
        batch: &mut SocBatch,
    ) -> StoreResult<()> {
        let payload = event.payload.as_json();
        let field = |name: &str| payload.get(name).and_then(|v| v.as_str());
        let (Some(agent_id), Some(server_id), Some(tool), Some(new_hash)) = (
            event.agent_id.as_deref(),
            field("server_id"),
            field("tool"),
            field("new_hash"),
        ) else {
            tracing::warn!(
                seq = event.seq,
                "tool definition change without its fields; no incident"
            );
            return Ok(());
        };
        let dedup_key = definition_changed_dedup_key(server_id, tool, new_hash);
        let incident_id = incident_id(&event.tenant_id, &dedup_key);
        let autonomy = self.tenant(&event.tenant_id).await?.autonomy;
        batch.incidents.push(NewIncident {
            id: incident_id,
            tenant_id: event.tenant_id.clone(),
            kind: DEFINITION_CHANGED.into(),
            severity: found.severity,
            agent_id: agent_id.to_owned(),
            dedup_key,
            summary: found.summary.clone(),
            evidence: vec![EvidenceRef {
                event_seq: event.seq,
            }],
            recommended_action: None,
            response: crate::response::definition_changed(autonomy, server_id, tool),
            opened_at_ms: event.created_at_ms,
        });
        Ok(())
    }

    /// An operator closed an incident: if it is the one a rule has open for the agent, the
    /// rule ends it, so a storm that goes on opens a new incident instead of joining it.
    fn incident_closed(&mut self, event: &Event, touched: &mut HashSet<AgentKey>) {
        let payload = event.payload.as_json();
        let closed = payload.get("incident_id").and_then(|v| v.as_str());
        let rule = payload
            .get("kind")
            .and_then(|v| v.as_str())
            .and_then(|kind| kind.parse::<RuleKind>().ok());
        let (Some(agent_id), Some(closed), Some(rule)) = (event.agent_id.as_deref(), closed, rule)
        else {
            return;
        };
        let key: AgentKey = (event.tenant_id.clone(), agent_id.to_owned());
        let Some(correlator) = self.correlators.get_mut(&key) else {
            return;
        };
        for opened_by in correlator.open_incidents(rule) {
            if incident_id(&event.tenant_id, &dedup_key(rule, agent_id, opened_by)) == closed {
                correlator.incident_closed(rule, opened_by);
                touched.insert(key.clone());
            }
        }
    }

    /// The tenant's effective SOC settings (cached until its settings change).
    async fn tenant(&mut self, tenant_id: &TenantId) -> StoreResult<&TenantSoc> {
        if !self.tenants.contains_key(tenant_id) {
            let settings = self.store.tenant(tenant_id).await?;
            let mut correlation = self.config.correlation;
            if let Some(n) = settings.deny_storm.threshold {
                correlation.deny_storm.threshold = n as usize;
            }
            if let Some(secs) = settings.deny_storm.window_secs {
                correlation.deny_storm.window = Duration::from_secs(secs.into());
            }
            let autonomy = effective_autonomy(&settings, self.config.default_autonomy);
            self.tenants.insert(
                tenant_id.clone(),
                TenantSoc {
                    correlation,
                    autonomy,
                    exfiltration_reads: settings.exfiltration_reads,
                },
            );
        }
        Ok(&self.tenants[tenant_id])
    }
}

/// The tenant's autonomy level: `tenants.soc_autonomy_level` when set, else the gateway
/// default (`AEGIS_SOC_AUTONOMY_LEVEL`). Every SOC consumer reads it through here.
pub fn effective_autonomy(settings: &TenantSettings, default: AutonomyLevel) -> AutonomyLevel {
    settings.autonomy_override.unwrap_or(default)
}

/// One incident per (rule, agent, opening seq): the database refuses a second.
fn dedup_key(rule: RuleKind, agent_id: &str, opened_by: i64) -> String {
    format!("{rule}:{agent_id}:{opened_by}")
}

/// Deterministic: the same finding always names the same incident.
fn incident_id(tenant_id: &TenantId, dedup_key: &str) -> String {
    let digest = Sha256::digest(format!("{tenant_id}\n{dedup_key}").as_bytes());
    format!("inc_{digest:.32x}")
}

/// Deterministic: one alert per (kind, raising event), also when a batch is repeated.
fn alert_id(tenant_id: &TenantId, kind: &str, source_seq: i64) -> String {
    let digest = Sha256::digest(format!("{tenant_id}\n{kind}\n{source_seq}").as_bytes());
    format!("alr_{digest:.32x}")
}

fn alert(event: &Event, found: crate::detect::Detection) -> NewAlert {
    NewAlert {
        id: alert_id(&event.tenant_id, found.kind, event.seq),
        tenant_id: event.tenant_id.clone(),
        kind: found.kind.into(),
        severity: found.severity,
        agent_id: event.agent_id.clone(),
        source_seq: event.seq,
        summary: found.summary,
        created_at_ms: event.created_at_ms,
        count: 1,
    }
}

/// The alerts one batch raises, and the detections it counts into alerts: into one raised
/// in the same batch directly (it is inserted with its count), else one update per alert.
#[derive(Default)]
struct AlertTally {
    raised: Vec<NewAlert>,
    /// Index in `raised` by alert id.
    raised_at: HashMap<String, usize>,
    repeats: HashMap<String, AlertRepeat>,
}

impl AlertTally {
    fn raise(&mut self, alert: NewAlert) {
        self.raised_at.insert(alert.id.clone(), self.raised.len());
        self.raised.push(alert);
    }

    fn repeat(&mut self, tenant_id: &TenantId, alert_id: String) {
        if let Some(&index) = self.raised_at.get(&alert_id) {
            self.raised[index].count += 1;
            return;
        }
        self.repeats
            .entry(alert_id)
            .or_insert_with_key(|alert_id| AlertRepeat {
                tenant_id: tenant_id.clone(),
                alert_id: alert_id.clone(),
                count: 0,
            })
            .count += 1;
    }

    fn into_batch(self, batch: &mut SocBatch) {
        batch.alerts = self.raised;
        batch.alert_repeats = self.repeats.into_values().collect();
    }
}

fn summary(rule: RuleKind, evidence: usize, config: &CorrelationConfig, agent_id: &str) -> String {
    match rule {
        RuleKind::DenyStorm => format!(
            "{evidence} denies within {} s for agent {agent_id}",
            config.deny_storm.window.as_secs()
        ),
        RuleKind::Runaway => format!(
            "{evidence} decisions within {} s for agent {agent_id}: far above its normal rate",
            config.runaway.window.as_secs()
        ),
        RuleKind::DataExfiltration => {
            format!(
                "agent {agent_id} read data and then attempted an external send within {} s",
                config.data_exfiltration.window.as_secs()
            )
        }
        RuleKind::TrustEscalation => format!(
            "agent {agent_id} was denied and then allowed the same tool action within {} s: probing",
            config.trust_escalation.window.as_secs()
        ),
        RuleKind::ApprovalFlood => format!(
            "agent {agent_id} asked people to approve {evidence} calls within {} s: flooding approvers until one slips through",
            config.approval_flood.window.as_secs()
        ),
    }
}

impl crate::LogConsumer for Consumer {
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
        self.cursor = self.store.consumer_cursor(CONSUMER).await?;
        self.tenants.clear();
        self.load_saved_windows().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::canonical::sha256_hex;

    /// Incident and alert ids are derived, so a replayed batch names the same rows: they
    /// must stay the first 32 hex digits of their SHA-256 however they are printed.
    #[test]
    fn derived_ids_are_the_first_half_of_their_hash() {
        let tenant = TenantId::new("acme");
        let key = dedup_key(RuleKind::DenyStorm, "agt_1", 7);
        assert_eq!(key, "deny_storm:agt_1:7");
        let incident = sha256_hex(b"acme\ndeny_storm:agt_1:7");
        assert_eq!(
            incident_id(&tenant, &key),
            format!("inc_{}", &incident[..32])
        );
        let alert = sha256_hex(b"acme\nrepeated_denied_call\n42");
        assert_eq!(
            alert_id(&tenant, "repeated_denied_call", 42),
            format!("alr_{}", &alert[..32])
        );
    }
}
