//! Evidence: per-receipt verification against the store (the one place the graph, the
//! receipts API and the evidence export check a receipt), the evidence graph builder and the
//! incident narrative (deterministic, or an optional OpenAI-compatible LLM with fallback).

use aegis_core::receipt::{ChainBreak, Checkpoint, KeyRing, Receipt, verify_receipt_in_place};
use aegis_core::timestamp::format_millis;
use aegis_store::{DecisionRecord, IncidentDetail, Store, StoreResult, TenantId};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

/// Longest forward walk from a receipt to the checkpoint covering it. Checkpoints are signed
/// per commit batch, so real walks are a batch long.
const MAX_FORWARD: u64 = 100_000;

pub use aegis_store::chain::keyring;

/// The first checkpoint at or after `seq`, if any.
pub async fn covering_checkpoint(
    store: &dyn Store,
    tenant: &TenantId,
    seq: u64,
) -> StoreResult<Option<Checkpoint>> {
    Ok(store
        .checkpoints_from(tenant, seq, 1)
        .await?
        .into_iter()
        .next())
}

/// Verifies one stored receipt where it stands: hash, link to the stored predecessor, and
/// coverage by the first signed checkpoint at or after it (walking forward to its head).
pub async fn verify_stored_receipt(
    store: &dyn Store,
    tenant: &TenantId,
    receipt: &Receipt,
    keys: &KeyRing,
) -> StoreResult<Result<(), ChainBreak>> {
    let seq = receipt.body.seq;
    let predecessor = if seq > 1 {
        store
            .receipts(tenant, seq - 2, 1)
            .await?
            .into_iter()
            .find(|r| r.body.seq == seq - 1)
            .map(|r| r.hash)
    } else {
        None
    };
    let checkpoint = covering_checkpoint(store, tenant, seq).await?;
    let forward = match &checkpoint {
        Some(cp) if cp.body.seq > seq => {
            let span = (cp.body.seq - seq).min(MAX_FORWARD);
            store.receipts(tenant, seq, span as u32).await?
        }
        _ => Vec::new(),
    };
    Ok(verify_receipt_in_place(
        receipt,
        predecessor.as_deref(),
        &forward,
        checkpoint.as_ref(),
        keys,
    ))
}

/// An edge of the evidence graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `{"nodes", "edges", "truncated"}`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Graph {
    /// `{"id", "type", ...}`; types: incident, decision, agent, run, tool, policy, receipt,
    /// response_action.
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<Value>,
    pub edges: Vec<GraphEdge>,
    /// Whether the decision limit cut the graph short.
    pub truncated: bool,
}

/// Builds a graph without duplicate nodes or edges.
pub struct GraphBuilder<'a> {
    store: &'a dyn Store,
    tenant: TenantId,
    keys: KeyRing,
    graph: Graph,
    nodes: HashSet<String>,
    edges: HashSet<GraphEdge>,
}

pub fn node_id(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

impl<'a> GraphBuilder<'a> {
    pub async fn new(store: &'a dyn Store, tenant: &TenantId) -> StoreResult<Self> {
        Ok(GraphBuilder {
            store,
            tenant: tenant.clone(),
            keys: keyring(store).await?,
            graph: Graph::default(),
            nodes: HashSet::new(),
            edges: HashSet::new(),
        })
    }

    /// Adds a node (`fields` is an object) and returns its graph id.
    pub fn node(&mut self, kind: &str, id: &str, fields: Value) -> String {
        let gid = node_id(kind, id);
        if self.nodes.insert(gid.clone()) {
            let mut node = json!({"id": gid, "type": kind, "ref": id});
            if let (Some(node), Value::Object(fields)) = (node.as_object_mut(), fields) {
                node.extend(fields);
            }
            self.graph.nodes.push(node);
        }
        gid
    }

    pub fn edge(&mut self, source: &str, target: &str, kind: &str) {
        let edge = GraphEdge {
            source: source.to_owned(),
            target: target.to_owned(),
            kind: kind.to_owned(),
        };
        if self.edges.insert(edge.clone()) {
            self.graph.edges.push(edge);
        }
    }

    pub fn truncate(&mut self) {
        self.graph.truncated = true;
    }

    pub fn agent(&mut self, agent_id: &str) -> String {
        self.node("agent", agent_id, json!({}))
    }

    /// The incident, its agent and its response actions (decisions are added separately).
    pub fn incident(&mut self, detail: &IncidentDetail) -> String {
        let i = &detail.incident;
        let incident = self.node(
            "incident",
            &i.id,
            json!({"kind": i.kind, "severity": i.severity, "status": i.status,
                   "summary": i.summary, "opened_at": format_millis(i.opened_at_ms)}),
        );
        let agent = self.agent(&i.agent_id);
        self.edge(&incident, &agent, "concerns");
        for r in &detail.response_actions {
            let action = self.node(
                "response_action",
                &r.id,
                json!({"action": r.action, "mode": r.mode, "actor": r.actor, "detail": r.detail,
                       "created_at": format_millis(r.created_at_ms)}),
            );
            self.edge(&incident, &action, "response");
            self.edge(&action, &agent, "targets");
        }
        incident
    }

    /// A decision with its agent, run, tool, policies and (verified) receipt.
    pub async fn decision(&mut self, d: &DecisionRecord) -> StoreResult<String> {
        let decision = self.node(
            "decision",
            &d.id,
            json!({"decision_id": d.id, "decision": d.verdict, "risk_score": d.risk_score,
                   "reason": d.reason, "matched_policies": d.matched_policies, "tool": d.tool,
                   "action": d.action, "resource": d.resource, "agent_id": d.agent_id,
                   "run_id": d.trace.run_id, "event_seq": d.event_seq,
                   "created_at": format_millis(d.created_at_ms)}),
        );
        let agent = self.agent(&d.agent_id);
        self.edge(&decision, &agent, "made_by");
        if let Some(run_id) = &d.trace.run_id {
            let run = self.node("run", run_id, json!({"trace_id": d.trace.trace_id}));
            self.edge(&decision, &run, "in_run");
            self.edge(&run, &agent, "run_by");
        }
        let tool = self.node("tool", &d.tool, json!({}));
        self.edge(&decision, &tool, "calls");
        for policy in &d.matched_policies {
            let policy = self.node("policy", policy, json!({}));
            self.edge(&decision, &policy, "matched");
        }
        let receipt = match self.store.receipt(&self.tenant, &d.receipt_id).await {
            Ok(receipt) => {
                let verdict =
                    verify_stored_receipt(self.store, &self.tenant, &receipt, &self.keys).await?;
                json!({"receipt_id": receipt.body.id, "seq": receipt.body.seq,
                       "hash": receipt.hash, "prev_hash": receipt.body.prev_hash,
                       "verified": verdict.is_ok(),
                       "reason": verdict.err().map(|b| b.kind.to_string())})
            }
            Err(aegis_store::StoreError::NotFound(_)) => {
                json!({"receipt_id": d.receipt_id, "verified": false, "reason": "receipt missing"})
            }
            Err(error) => return Err(error),
        };
        let receipt = self.node("receipt", &d.receipt_id, receipt);
        self.edge(&decision, &receipt, "receipt");
        Ok(decision)
    }

    pub fn finish(self) -> Graph {
        self.graph
    }
}

/// What a narrative is built from: the incident and its decisions, nothing else.
pub struct NarrativeInput<'a> {
    pub detail: &'a IncidentDetail,
    pub decisions: &'a [DecisionRecord],
}

/// How the denied calls of an incident look, as the runbook reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One tool/action/resource repeated.
    RetryLoop,
    /// Varied actions or resources.
    Probing,
    /// Too few denies, or a mix.
    Unclear,
}

/// Classifies the denied calls: one repeated call is a retry loop; three or more distinct
/// (tool, action, resource) calls making up at least half the denies is probing.
pub fn classify(decisions: &[DecisionRecord]) -> Pattern {
    let denies: Vec<&DecisionRecord> = decisions
        .iter()
        .filter(|d| d.verdict == aegis_core::model::Verdict::Deny)
        .collect();
    let distinct: HashSet<(&str, &str, Option<&str>)> = denies
        .iter()
        .map(|d| (d.tool.as_str(), d.action.as_str(), d.resource.as_deref()))
        .collect();
    if denies.len() >= 2 && distinct.len() == 1 {
        Pattern::RetryLoop
    } else if distinct.len() >= 3 && distinct.len() * 2 >= denies.len() {
        Pattern::Probing
    } else {
        Pattern::Unclear
    }
}

/// The deterministic narrative: Markdown and the ids it cites.
pub fn deterministic_narrative(input: &NarrativeInput<'_>) -> (String, Vec<String>) {
    use std::fmt::Write;
    let i = &input.detail.incident;
    let decisions = input.decisions;
    let mut evidence = vec![i.id.clone(), i.agent_id.clone()];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Incident `{}`: {} ({})\n\nStatus **{}**. Agent `{}`. {}\n",
        i.id, i.kind, i.severity, i.status, i.agent_id, i.summary
    );

    let _ = writeln!(md, "### What the evidence shows\n");
    let count = |v: aegis_core::model::Verdict| decisions.iter().filter(|d| d.verdict == v).count();
    let (deny, allow, approval) = (
        count(aegis_core::model::Verdict::Deny),
        count(aegis_core::model::Verdict::Allow),
        count(aegis_core::model::Verdict::RequireApproval),
    );
    let first = decisions.iter().map(|d| d.created_at_ms).min();
    let last = decisions.iter().map(|d| d.created_at_ms).max();
    let _ = writeln!(
        md,
        "- {} decisions behind the incident: {deny} denied, {allow} allowed, {approval} requiring approval.",
        decisions.len()
    );
    if let (Some(first), Some(last)) = (first, last) {
        let _ = writeln!(
            md,
            "- Time span: {} to {} ({} ms).",
            format_millis(first),
            format_millis(last),
            last - first
        );
    }
    let mut calls: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut policies = BTreeSet::new();
    for d in decisions {
        *calls
            .entry((
                d.tool.clone(),
                d.action.clone(),
                d.resource.clone().unwrap_or_else(|| "-".into()),
            ))
            .or_default() += 1;
        policies.extend(d.matched_policies.iter().cloned());
        evidence.push(d.id.clone());
    }
    let _ = writeln!(md, "- Calls (tool/action on resource):");
    for ((tool, action, resource), n) in &calls {
        let _ = writeln!(md, "  - `{tool}/{action}` on `{resource}`: {n}×");
    }
    if let Some(max) = decisions.iter().map(|d| d.risk_score).max() {
        let _ = writeln!(md, "- Highest risk score: {max}.");
    }
    if !policies.is_empty() {
        let names: Vec<String> = policies.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(md, "- Policies that decided: {}.", names.join(", "));
    }
    if let Some(reason) = decisions
        .iter()
        .find(|d| d.verdict == aegis_core::model::Verdict::Deny)
        .map(|d| &d.reason)
    {
        let _ = writeln!(md, "- Deny reason (first): {reason}");
    }

    let _ = writeln!(md, "\n### Assessment\n");
    let pattern = classify(decisions);
    match pattern {
        Pattern::RetryLoop => {
            let _ = writeln!(
                md,
                "**Likely a retry loop**: every denied call was the same tool, action and resource. \
                 This is the common case, a misconfigured agent retrying a denied action."
            );
        }
        Pattern::Probing => {
            let _ = writeln!(
                md,
                "**Possible probing**: the denied calls varied across {} distinct actions/resources. \
                 An agent (or whoever steers it) may be searching for an allowed action; rarer than a \
                 single repeated mistake but more urgent.",
                calls.len()
            );
        }
        Pattern::Unclear => {
            let _ = writeln!(
                md,
                "**No clear pattern**: neither a single repeated call nor widely varied calls. Review \
                 the decisions listed in the evidence graph."
            );
        }
    }

    let _ = writeln!(md, "\n### What the response engine did\n");
    if input.detail.response_actions.is_empty() {
        let _ = writeln!(
            md,
            "- Nothing automatic (the tenant's autonomy level only notifies or recommends)."
        );
    }
    for r in &input.detail.response_actions {
        evidence.push(r.id.clone());
        let _ = writeln!(
            md,
            "- {}: `{}` ({}, by {}): {}",
            format_millis(r.created_at_ms),
            r.action,
            r.mode,
            r.actor,
            r.detail
        );
    }

    let base = "http://127.0.0.1:8080";
    let auth = "-H \"Authorization: Bearer $AGENT_TOKEN\"";
    let (agent, incident) = (&i.agent_id, &i.id);
    let _ = writeln!(md, "\n### Next steps (runbook)\n");
    let _ = writeln!(
        md,
        "Evidence graph: `curl -s {auth} \"{base}/v1/graph/incident/{incident}\"`\n"
    );
    let freeze = format!(
        "curl -s -X POST {auth} \"{base}/v1/agents/{agent}/freeze\" -d '{{\"reason\": \"deny storm: investigating\"}}'"
    );
    let unfreeze = format!("curl -s -X POST {auth} \"{base}/v1/agents/{agent}/unfreeze\"");
    let revoke = format!("curl -s -X POST {auth} \"{base}/v1/agents/{agent}/revoke\"");
    let rotate = format!("curl -s -X POST {auth} \"{base}/v1/agents/{agent}/rotate-token\"");
    let close = format!(
        "curl -s -X POST {auth} \"{base}/v1/incidents/{incident}/close\" -d '{{\"reason\": \"handled\"}}'"
    );
    if pattern == Pattern::Probing {
        let _ = writeln!(
            md,
            "Suspected attack: freeze now, then revoke instead of unfreezing, and rotate the token if it may have leaked.\n\n```sh\n{freeze}\n{revoke}\n{rotate}\n{close}\n```"
        );
    } else {
        let _ = writeln!(
            md,
            "Misconfigured agent: freeze while you fix the caller, then unfreeze and close.\n\n```sh\n{freeze}\n# ... fix the calling code/config ...\n{unfreeze}\n{close}\n```\n\nIf it turns out to be an attack: `{revoke}` and `{rotate}`."
        );
    }
    let _ = writeln!(
        md,
        "\n_Generated deterministically from recorded evidence only._"
    );
    evidence.dedup();
    (md, evidence)
}

/// The optional OpenAI-compatible narrator (`AEGIS_NARRATOR_*`).
#[derive(Debug, Clone)]
pub struct NarratorConfig {
    /// Base URL (`.../v1`) or the full `.../chat/completions` URL.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl NarratorConfig {
    fn endpoint(&self) -> String {
        let url = self.url.trim_end_matches('/');
        if url.ends_with("/chat/completions") {
            url.to_owned()
        } else {
            format!("{url}/chat/completions")
        }
    }
}

/// The redacted evidence an LLM sees: ids, kinds, counts, tool/action names, verdicts, risk
/// scores, policy ids and times. No parameters, resources, reasons, tokens or keys.
pub fn redacted_evidence(input: &NarrativeInput<'_>) -> Value {
    let i = &input.detail.incident;
    json!({
        "incident": {"id": i.id, "kind": i.kind, "severity": i.severity, "status": i.status,
                     "agent_id": i.agent_id, "opened_at": format_millis(i.opened_at_ms)},
        "decisions": input.decisions.iter().map(|d| json!({
            "decision_id": d.id, "decision": d.verdict, "tool": d.tool, "action": d.action,
            "risk_score": d.risk_score, "matched_policies": d.matched_policies,
            "created_at": format_millis(d.created_at_ms)})).collect::<Vec<_>>(),
        "response_actions": input.detail.response_actions.iter().map(|r| json!({
            "id": r.id, "action": r.action, "mode": r.mode,
            "created_at": format_millis(r.created_at_ms)})).collect::<Vec<_>>(),
    })
}

const SYSTEM_PROMPT: &str = "You are a security analyst. Write a short root-cause narrative in \
Markdown for the incident described by the JSON evidence. Use only that evidence; say whether \
the denied calls look like a retry loop (one repeated tool/action) or probing (varied actions). \
Your text is advisory; it cannot change any decision.";

/// Asks the LLM; `None` on any failure or timeout (the caller falls back).
pub async fn llm_narrative(config: &NarratorConfig, input: &NarrativeInput<'_>) -> Option<String> {
    let body = json!({
        "model": config.model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": redacted_evidence(input).to_string()},
        ],
    });
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .ok()?;
    let mut request = client.post(config.endpoint()).json(&body);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let call = async {
        let response = request.send().await.ok()?.error_for_status().ok()?;
        let answer: Value = response.json().await.ok()?;
        answer["choices"][0]["message"]["content"]
            .as_str()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    match tokio::time::timeout(config.timeout, call).await {
        Ok(Some(text)) => Some(text),
        Ok(None) => {
            tracing::warn!("the narrator endpoint failed; using the deterministic narrative");
            None
        }
        Err(_) => {
            tracing::warn!("the narrator endpoint timed out; using the deterministic narrative");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::model::{ActionRisk, SourceTrust, Verdict};
    use aegis_store::TraceContext;

    fn deny(action: &str, resource: &str) -> DecisionRecord {
        DecisionRecord {
            id: format!("dec_{action}_{resource}"),
            tenant_id: TenantId::new("t"),
            event_seq: 1,
            agent_id: "agt_1".into(),
            request_id: None,
            tool: "github".into(),
            action: action.into(),
            resource: Some(resource.into()),
            mutates_state: true,
            risk: ActionRisk::High,
            source_trust: SourceTrust::UntrustedExternal,
            verdict: Verdict::Deny,
            risk_score: 85,
            reason: "denied".into(),
            matched_policies: vec!["p".into()],
            action_hash: String::new(),
            trace: TraceContext::default(),
            receipt_id: "rcpt_1".into(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn repeated_calls_are_a_retry_loop_and_varied_calls_probing() {
        let same: Vec<_> = (0..5).map(|_| deny("merge", "r1")).collect();
        assert_eq!(classify(&same), Pattern::RetryLoop);
        let varied: Vec<_> = (0..5).map(|i| deny(&format!("a{i}"), "r1")).collect();
        assert_eq!(classify(&varied), Pattern::Probing);
        let resources: Vec<_> = (0..5).map(|i| deny("merge", &format!("r{i}"))).collect();
        assert_eq!(classify(&resources), Pattern::Probing);
        let mut mixed: Vec<_> = (0..8).map(|_| deny("merge", "r1")).collect();
        mixed.push(deny("push", "r2"));
        assert_eq!(classify(&mixed), Pattern::Unclear);
        assert_eq!(classify(&[]), Pattern::Unclear);
    }
}
