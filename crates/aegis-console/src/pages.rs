//! The pages a person reads: incidents, one incident (graph, timeline, narrative), approvals,
//! agents, one agent, decisions, settings. Each reads through the same store calls and use
//! cases as the matching API route and renders what it got; every string from the store is
//! escaped by the templates (nothing here is ever marked as pre-escaped).

use crate::graph;
use crate::page::{ConsoleError, ConsoleResult, timestamp, timestamp_ms};
use crate::session::SignedIn;
use aegis_core::approval::{ApprovalStatus, Verdict as ApprovalVerdict, vote};
use aegis_core::model::{AgentStatus, AutonomyLevel, Role, Verdict};
use aegis_core::policy::{PolicyDocument, PolicyError};
use aegis_server::SharedState;
use aegis_server::error::ApiError;
use aegis_server::evidence::{incident_graph, keyring};
use aegis_server::extract::{Path, QueryParams, SearchForm};
use aegis_server::routes::decisions::DecisionQuery;
use aegis_server::routes::incidents::{IncidentQuery, IncidentStatus};
use aegis_server::routes::investigate::incident_narrative;
use aegis_server::routes::tenants::autonomy_view;
use aegis_server::routes::webhooks::WebhookFormat;
use aegis_store::approvals::{ApprovalFilter, ApprovalRecord};
use aegis_store::{Agent, DecisionFilter, DecisionRecord, Page};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

/// Decisions drawn on an incident's graph (the most recent ones).
const GRAPH_DECISIONS: u32 = 200;
/// Rows of the incident, agent and decision lists.
const LIST_ROWS: u32 = 100;
/// Recent decisions shown on an agent's page.
const AGENT_DECISIONS: u32 = 20;

/// `GET /console`: the incidents when signed in, else the sign-in form.
pub async fn home(session: Result<SignedIn, ConsoleError>) -> Response {
    match session {
        Ok(_) => Redirect::to("/console/incidents").into_response(),
        Err(_) => Redirect::to("/console/sign-in").into_response(),
    }
}

/// What a role may do, as the pages offer it (the server checks again on every action).
pub struct Offers {
    pub respond: bool,
    pub administer: bool,
}

impl Offers {
    pub fn of(role: Role) -> Self {
        Offers {
            respond: role.grants(Role::Responder),
            administer: role.grants(Role::Admin),
        }
    }
}

/// `GET /console/incidents`: the incident list, refreshed live by the script.
pub async fn incidents(
    State(state): State<SharedState>,
    session: SignedIn,
    QueryParams(query): QueryParams<IncidentQuery>,
) -> ConsoleResult {
    let operator = session.viewer()?;
    let selected = query.status.map(IncidentStatus::as_str);
    let log_head = *state.store.committed_seq().borrow();
    let (filter, page) = query.into_filter();
    let rows = state.store.list_incidents(&operator.tenant, filter).await?;
    let (incidents, more) = page.split(rows, |i| i.event_seq);
    let body = html! {
        h1 { "Incidents" }
        nav.tabs aria-label="Incident status" {
            a href="/console/incidents" aria-current=[selected.is_none().then_some("page")] { "All" }
            @for status in IncidentStatus::ALL {
                a href=(format!("/console/incidents?status={}", status.as_str()))
                    aria-current=[(selected == Some(status.as_str())).then_some("page")] { (status.as_str()) }
            }
        }
        p #live-status.live-status aria-live="polite" { "Live updates: connecting…" }
        div #incidents data-live-incidents data-since=(log_head) {
            @if incidents.is_empty() {
                p.empty { "No incidents here. Incidents open when the SOC's correlation rules fire (a deny storm, a runaway agent, data exfiltration); new ones appear on this page as they open, without a reload." }
            } @else {
                div.table-scroll {
                    table {
                        thead { tr { th { "Opened" } th { "Kind" } th { "Severity" } th { "Status" } th { "Agent" } th { "Evidence" } th { "Summary" } } }
                        tbody {
                            @for incident in &incidents {
                                tr data-incident=(incident.id) {
                                    td { (timestamp_ms(incident.opened_at_ms)) }
                                    td { a href=(format!("/console/incidents/{}", incident.id)) { (incident.kind) } }
                                    td { span class=(format!("severity severity-{}", incident.severity.as_str())) { (incident.severity.as_str()) } }
                                    td { span class=(format!("status status-{}", incident.status)) { (incident.status) } }
                                    td { a href=(format!("/console/agents/{}", incident.agent_id)) { (incident.agent_id) } }
                                    td { (incident.evidence_count) }
                                    td { (incident.summary) }
                                }
                            }
                        }
                    }
                }
                @if more.is_some() {
                    p.help { "Showing the " (page.limit) " most recent; narrow the list with the status tabs or use " code { "GET /v1/incidents" } " to page further." }
                }
            }
        }
    };
    Ok(session.page("Incidents").render(body).into_response())
}

/// `GET /console/incidents/{id}`: everything behind one incident and what can be done.
pub async fn incident(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult {
    let operator = session.viewer()?;
    let store = state.store.as_ref();
    let detail = store.incident(&operator.tenant, &id).await?;
    let keys = keyring(store).await?;
    let page = Page {
        before: None,
        limit: GRAPH_DECISIONS,
    };
    let (graph, _) = incident_graph(store, &operator.tenant, &detail, &keys, None, page).await?;
    let narrative = incident_narrative(&state, &operator, &detail).await?;
    let agent = store
        .agent(&operator.tenant, &detail.incident.agent_id)
        .await?;
    let incident = &detail.incident;
    let offers = Offers::of(session.role());
    let back = format!("/console/incidents/{}", incident.id);
    let mut timeline: Vec<&Value> = graph
        .nodes
        .iter()
        .filter(|node| node["type"] == "decision")
        .collect();
    timeline.sort_by_key(|node| node["event_seq"].as_i64());
    let body = html! {
        h1 { "Incident " span.kind { (incident.kind) } }
        dl.facts {
            dt { "Severity" } dd { span class=(format!("severity severity-{}", incident.severity.as_str())) { (incident.severity.as_str()) } }
            dt { "Status" } dd #incident-status { span class=(format!("status status-{}", incident.status)) { (incident.status) } }
            dt { "Agent" } dd { a href=(format!("/console/agents/{}", agent.id)) { (agent.name) " (" (agent.id) ")" } " · " (agent.status.as_str()) }
            dt { "Opened" } dd { (timestamp_ms(incident.opened_at_ms)) }
            dt { "Evidence" } dd { (incident.evidence_count) " events" }
            dt { "Summary" } dd { (incident.summary) }
            @if let (Some(at), Some(by)) = (incident.acknowledged_at_ms, &incident.acknowledged_by) {
                dt { "Acknowledged" } dd { (timestamp_ms(at)) " by " (by) }
            }
            @if let (Some(at), Some(by)) = (incident.closed_at_ms, &incident.closed_by) {
                dt { "Closed" } dd { (timestamp_ms(at)) " by " (by) @if let Some(reason) = &incident.close_reason { ": " (reason) } }
            }
            @if let Some(action) = &incident.recommended_action {
                dt { "Recommended" } dd { code { (action.to_string()) } }
            }
        }
        @if offers.respond {
            section.actions aria-label="Incident actions" {
                h2 { "Respond" }
                div.buttons {
                    @if incident.status == "open" {
                        (crate::actions::form(&format!("/console/incidents/{}/acknowledge", incident.id), "Acknowledge", &session.csrf, &back, None, crate::actions::Reason::None))
                    }
                    @if incident.recommended_action.is_some() && incident.status != "closed" {
                        (crate::actions::form(&format!("/console/incidents/{}/apply", incident.id), "Apply recommendation", &session.csrf, &back, Some("Apply the recommended response to this agent?"), crate::actions::Reason::None))
                    }
                    @if incident.status != "closed" {
                        (crate::actions::form(&format!("/console/incidents/{}/close", incident.id), "Close", &session.csrf, &back, Some("Close this incident?"), crate::actions::Reason::Optional))
                    }
                    (agent_actions(&agent, &offers, &session.csrf, &back))
                }
            }
        }
        section aria-labelledby="graph-title" {
            h2 #graph-title { "Evidence graph" }
            p.help { "Decisions, their receipts (✓ verified, ✗ unverified), the agent and run, tools and matched policies, and the responses taken. Hover a node for details." }
            (graph::render(&graph))
        }
        section aria-labelledby="narrative-title" {
            h2 #narrative-title { "Narrative" }
            p.help { "Written by " (narrative.generated_by) " at " (timestamp_ms(narrative.generated_at_ms)) "." }
            pre.narrative { (narrative.narrative) }
        }
        section aria-labelledby="timeline-title" {
            h2 #timeline-title { "Timeline" }
            @if timeline.is_empty() {
                p.empty { "No decisions are linked to this incident." }
            } @else {
                div.table-scroll { table.timeline {
                    thead { tr { th { "When" } th { "Decision" } th { "Call" } th { "Risk" } th { "Reason" } th { "Policies" } } }
                    tbody {
                        @for node in &timeline {
                            tr {
                                td { (timestamp(node["created_at"].as_str().unwrap_or_default())) }
                                td { (verdict_badge(node["decision"].as_str().unwrap_or_default())) }
                                td { code { (node["tool"].as_str().unwrap_or_default()) "." (node["action"].as_str().unwrap_or_default()) } }
                                td { (node["risk_score"].to_string()) }
                                td { (node["reason"].as_str().unwrap_or_default()) }
                                td { @for policy in node["matched_policies"].as_array().into_iter().flatten() { code { (policy.as_str().unwrap_or_default()) } " " } }
                            }
                        }
                    }
                } }
            }
        }
        @if !detail.response_actions.is_empty() {
            section aria-labelledby="responses-title" {
                h2 #responses-title { "Responses taken" }
                ul { @for action in &detail.response_actions {
                    li { (timestamp_ms(action.created_at_ms)) " · " (action.action) " (" (action.mode) ") by " (action.actor) ": " (action.detail) }
                } }
            }
        }
    };
    Ok(session.page("Incident").render(body).into_response())
}

fn verdict_badge(verdict: &str) -> Markup {
    html! { span class=(format!("verdict verdict-{verdict}")) { (verdict) } }
}

/// The lifecycle buttons of an agent, as far as its status and the operator's role allow.
pub fn agent_actions(agent: &Agent, offers: &Offers, csrf: &str, back: &str) -> Markup {
    use crate::actions::{Reason, form};
    let path = |act: &str| format!("/console/agents/{}/{act}", agent.id);
    html! {
        @if offers.respond && agent.status == AgentStatus::Active {
            (form(&path("freeze"), "Freeze agent", csrf, back, Some("Freeze this agent? Its calls are denied until it is unfrozen."), Reason::Optional))
        }
        @if offers.respond && agent.status == AgentStatus::Frozen {
            (form(&path("unfreeze"), "Unfreeze agent", csrf, back, None, Reason::None))
        }
        @if offers.administer && agent.status != AgentStatus::Revoked {
            (form(&path("revoke"), "Revoke agent", csrf, back, Some("Revoke this agent for good? Its tokens stop working and it cannot be unfrozen."), Reason::Optional))
            (form(&path("rotate-token"), "Rotate token", csrf, back, Some("Issue a new token? The current one stops working at once."), Reason::None))
        }
    }
}

/// `GET /console/agents`.
pub async fn agents(State(state): State<SharedState>, session: SignedIn) -> ConsoleResult {
    let operator = session.viewer()?;
    let page = Page {
        before: None,
        limit: LIST_ROWS,
    };
    let rows = state
        .store
        .list_agents(&operator.tenant, page.with_next_row())
        .await?;
    let (agents, more) = page.split(rows, |agent| agent.cursor);
    let body = html! {
        h1 { "Agents" }
        @if agents.is_empty() {
            p.empty { "No agents are registered yet. Register one with " code { "POST /v1/agents" } " (admin key); it then authorizes its tool calls with the token it gets." }
        } @else {
            div.table-scroll { table {
                thead { tr { th { "Name" } th { "Status" } th { "Risk tier" } th { "Registered" } th { "Id" } } }
                tbody { @for agent in &agents {
                    tr {
                        td { a href=(format!("/console/agents/{}", agent.id)) { (agent.name) } }
                        td { span class=(format!("status status-{}", agent.status.as_str())) { (agent.status.as_str()) } }
                        td { (agent.risk_tier.as_str()) }
                        td { (timestamp_ms(agent.created_at_ms)) }
                        td { code { (agent.id) } }
                    }
                } }
            } }
            @if more.is_some() { p.help { "Showing the " (LIST_ROWS) " most recent; " code { "GET /v1/agents" } " pages through all." } }
        }
    };
    Ok(session.page("Agents").render(body).into_response())
}

/// `GET /console/agents/{id}`: status, risk tier, recent decisions, lifecycle buttons.
pub async fn agent(
    State(state): State<SharedState>,
    session: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult {
    let operator = session.viewer()?;
    let agent = state.store.agent(&operator.tenant, &id).await?;
    let filter = DecisionFilter {
        agent_id: Some(agent.id.clone()),
        page: Page {
            before: None,
            limit: AGENT_DECISIONS,
        },
        ..DecisionFilter::default()
    };
    let decisions = state.store.list_decisions(&operator.tenant, filter).await?;
    let offers = Offers::of(session.role());
    let back = format!("/console/agents/{}", agent.id);
    let body = html! {
        h1 { "Agent " (agent.name) }
        dl.facts {
            dt { "Id" } dd { code { (agent.id) } }
            dt { "Status" } dd #agent-status { span class=(format!("status status-{}", agent.status.as_str())) { (agent.status.as_str()) } }
            @if let Some(reason) = &agent.status_reason { dt { "Why" } dd { (reason) } }
            dt { "Risk tier" } dd { (agent.risk_tier.as_str()) }
            dt { "Registered" } dd { (timestamp_ms(agent.created_at_ms)) }
            dt { "Last change" } dd { (timestamp_ms(agent.updated_at_ms)) }
        }
        @if offers.respond && agent.status != AgentStatus::Revoked {
            section.actions aria-label="Agent actions" {
                h2 { "Lifecycle" }
                div.buttons { (agent_actions(&agent, &offers, &session.csrf, &back)) }
            }
        }
        section aria-labelledby="recent-title" {
            h2 #recent-title { "Recent decisions" }
            (decision_table(&decisions, "This agent has not asked for any tool call yet."))
            p.help { a href=(format!("/console/decisions?agent_id={}", agent.id)) { "Search all of its decisions" } }
        }
    };
    Ok(session.page("Agent").render(body).into_response())
}

fn decision_table(decisions: &[DecisionRecord], empty: &str) -> Markup {
    html! {
        @if decisions.is_empty() {
            p.empty { (empty) }
        } @else {
            div.table-scroll { table {
                thead { tr { th { "When" } th { "Decision" } th { "Agent" } th { "Call" } th { "Risk" } th { "Reason" } th { "Policies" } } }
                tbody { @for d in decisions {
                    tr data-decision=(d.id) {
                        td { (timestamp_ms(d.created_at_ms)) }
                        td { (verdict_badge(d.verdict.as_str())) }
                        td { a href=(format!("/console/agents/{}", d.agent_id)) { code { (d.agent_id) } } }
                        td { code { (d.tool) "." (d.action) } @if let Some(resource) = &d.resource { " on " code { (resource) } } }
                        td { (d.risk_score) }
                        td { (d.reason) }
                        td { @for policy in &d.matched_policies { code { (policy) } " " } }
                    }
                } }
            } }
        }
    }
}

/// `GET /console/decisions`: the decision log with the API's filters.
pub async fn decisions(
    State(state): State<SharedState>,
    session: SignedIn,
    SearchForm(query): SearchForm<DecisionQuery>,
) -> ConsoleResult {
    let operator = session.viewer()?;
    let field = |value: &Option<String>| value.clone().unwrap_or_default();
    let (agent_id, tool, action, run_id) = (
        field(&query.agent_id),
        field(&query.tool),
        field(&query.action),
        field(&query.run_id),
    );
    let verdict = query.decision;
    let (filter, page) = query.into_filter();
    let rows = state.store.list_decisions(&operator.tenant, filter).await?;
    let (decisions, next) = page.split(rows, |d| d.event_seq);
    let body = html! {
        h1 { "Decisions" }
        form.search method="get" action="/console/decisions" {
            span.field { label for="q-agent" { "Agent id" } input #q-agent name="agent_id" value=(agent_id); }
            span.field { label for="q-decision" { "Decision" }
                select #q-decision name="decision" {
                    option value="" selected[verdict.is_none()] { "any" }
                    @for v in Verdict::ALL { option value=(v.as_str()) selected[verdict == Some(*v)] { (v.as_str()) } }
                }
            }
            span.field { label for="q-tool" { "Tool" } input #q-tool name="tool" value=(tool); }
            span.field { label for="q-action" { "Action" } input #q-action name="action" value=(action); }
            span.field { label for="q-run" { "Run id" } input #q-run name="run_id" value=(run_id); }
            button type="submit" { "Search" }
        }
        (decision_table(&decisions, "No decision matches. Clear a filter, or wait for agents to call POST /v1/authorize."))
        @if let Some(cursor) = next {
            p { a href=(next_page_link(&agent_id, verdict, &tool, &action, &run_id, cursor)) { "Older decisions" } }
        }
    };
    Ok(session.page("Decisions").render(body).into_response())
}

fn next_page_link(
    agent_id: &str,
    verdict: Option<Verdict>,
    tool: &str,
    action: &str,
    run_id: &str,
    cursor: i64,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("agent_id", agent_id),
        ("decision", verdict.map_or("", Verdict::as_str)),
        ("tool", tool),
        ("action", action),
        ("run_id", run_id),
    ] {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    query.append_pair("cursor", &cursor.to_string());
    format!("/console/decisions?{}", query.finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// The approval just approved or rejected from this page, to say where it now stands.
    decided: Option<String>,
}

/// `GET /console/approvals`: the tenant's calls waiting for a person, each with everything
/// there is to judge and, for a responder or admin, Approve and Reject.
pub async fn approvals(
    State(state): State<SharedState>,
    session: SignedIn,
    QueryParams(query): QueryParams<ApprovalsQuery>,
) -> ConsoleResult {
    let operator = session.viewer()?;
    let page = Page {
        before: None,
        limit: LIST_ROWS,
    };
    let filter = ApprovalFilter {
        status: Some(ApprovalStatus::Pending),
        page: page.with_next_row(),
        ..ApprovalFilter::default()
    };
    let rows = state.store.list_approvals(&operator.tenant, filter).await?;
    let (pending, more) = page.split(rows, |approval| approval.requested_seq);
    let decided = match query.decided {
        Some(id) => Some(state.store.approval(&operator.tenant, &id).await?),
        None => None,
    };
    let offers = Offers::of(session.role());
    let now_ms = aegis_server::now_ms();
    let body = html! {
        h1 { "Approvals" }
        @if let Some(decided) = &decided {
            p #decided.notice role="status" { (decided_notice(decided)) }
        }
        @if pending.is_empty() {
            p.empty { "No call is waiting for approval: nothing to decide now. A call lands here when a policy answers " code { "require_approval" } " (reload the page to see new ones); the agent then waits for the answer or repeats the call, which is allowed once it is approved. Your approval is recorded with the key you signed in with and named in the call's receipt." }
        } @else {
            p.help { "Approve lets exactly this call (same tool, action, resource and parameters) through once, when the agent repeats it before the approval expires; Reject denies it. The parameters are the agent's own: read them before you decide." }
            @for approval in &pending {
                (approval_card(approval, &operator.key_id, &offers, &session.csrf, now_ms))
            }
            @if more.is_some() {
                p.help { "Showing the " (LIST_ROWS) " most recent; " code { "GET /v1/approvals?status=pending" } " pages through all." }
            }
        }
    };
    Ok(session.page("Approvals").render(body).into_response())
}

/// Where an approval stands after a vote from this page.
fn decided_notice(approval: &ApprovalRecord) -> Markup {
    let votes = approval.approvals.len();
    html! {
        @match approval.status {
            ApprovalStatus::Approved => {
                "Approved: the agent's identical call is allowed once, until " (timestamp_ms(approval.expires_at_ms)) "."
            }
            ApprovalStatus::Pending => {
                "Your approval is recorded (" (votes) " of " (approval.required) "): another operator key must approve too."
            }
            ApprovalStatus::Rejected => { "Rejected: the agent's call stays denied." }
            status => { "This approval is " (status.as_str()) "." }
        }
    }
}

/// One pending call: what the agent asked, why it waits, who approved so far, and the
/// buttons the operator's role allows.
fn approval_card(
    approval: &ApprovalRecord,
    key_id: &str,
    offers: &Offers,
    csrf: &str,
    now_ms: i64,
) -> Markup {
    use crate::actions::{Reason, form};
    let path = |act: &str| format!("/console/approvals/{}/{act}", approval.id);
    let back = format!("/console/approvals?decided={}", approval.id);
    let heading = format!("approval-{}", approval.id);
    let approver_ids = approval.approver_ids();
    // The core's vote rule, asked in advance: a key that already approved is not offered
    // Approve again (the two-person rule needs another key).
    let approve = vote(
        approval.facts(&approver_ids),
        key_id,
        ApprovalVerdict::Approve,
        now_ms,
    );
    let parameters = serde_json::to_string_pretty(&approval.parameters).unwrap_or_default();
    html! {
        article.approval data-approval=(approval.id) aria-labelledby=(heading) {
            h2 #(heading) {
                code { (approval.tool) "." (approval.action) }
                @if let Some(resource) = &approval.resource { " on " code { (resource) } }
            }
            dl.facts {
                dt { "Agent" } dd { a href=(format!("/console/agents/{}", approval.agent_id)) { code { (approval.agent_id) } } }
                dt { "Tool" } dd { code { (approval.tool) } }
                dt { "Action" } dd { code { (approval.action) } @if approval.mutates_state { " (changes state)" } @else { " (reads only)" } }
                dt { "Resource" } dd { @if let Some(resource) = &approval.resource { code { (resource) } } @else { "none named" } }
                dt { "Risk" } dd { (approval.risk.as_str()) " · score " (approval.risk_score) }
                dt { "Why it waits" } dd { (approval.reason) }
                dt { "Run" } dd { @if let Some(run) = &approval.run_id { code { (run) } } @else { "none named" } }
                dt { "Requested" } dd { (timestamp_ms(approval.created_at_ms)) }
                dt { "Expires" } dd { (timestamp_ms(approval.expires_at_ms)) }
                dt { "Approvals" } dd.approval-count {
                    (approval.approvals.len()) " of " (approval.required) " required"
                    @if approval.required > 1 { " (two-person rule: two different operator keys)" }
                }
                @if !approval.approvals.is_empty() {
                    dt { "Approved by" } dd { ul.votes { @for vote in &approval.approvals {
                        li { (vote.key_name) " · " (timestamp_ms(vote.at_ms)) @if let Some(reason) = &vote.reason { ": " (reason) } }
                    } } }
                }
            }
            h3 { "Parameters" }
            pre.parameters { (parameters) }
            @if offers.respond {
                div.buttons {
                    @match approve {
                        Ok(_) => (form(&path("approve"), "Approve", csrf, &back, Some("Approve this call? The agent's identical call is then allowed once."), Reason::Optional)),
                        Err(refused) => p.help { "You cannot approve: " (refused.to_string()) "." },
                    }
                    (form(&path("reject"), "Reject", csrf, &back, Some("Reject this call? The agent's call stays denied."), Reason::Optional))
                }
            }
        }
    }
}

/// The thresholds an admin edits on the Settings page, one form each.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Thresholds {
    DenyStorm,
    RiskEscalation,
}

impl Thresholds {
    /// Its fields: the name (the API's field name, so a refusal names the input) and label.
    pub fn fields(self) -> [(&'static str, &'static str); 2] {
        match self {
            Thresholds::DenyStorm => [
                ("threshold", "Deny-storm denies"),
                ("window_secs", "Deny-storm window (seconds)"),
            ],
            Thresholds::RiskEscalation => [
                ("denial_threshold", "Escalation denies"),
                ("window_minutes", "Escalation window (minutes)"),
            ],
        }
    }

    fn action(self) -> &'static str {
        match self {
            Thresholds::DenyStorm => "/console/settings/deny-storm",
            Thresholds::RiskEscalation => "/console/settings/risk-escalation",
        }
    }

    fn button(self) -> &'static str {
        match self {
            Thresholds::DenyStorm => "Save deny storm",
            Thresholds::RiskEscalation => "Save risk escalation",
        }
    }
}

/// A form of the Settings page the server refused: what was typed, and why.
pub enum Refused {
    Thresholds {
        form: Thresholds,
        typed: [(&'static str, String); 2],
        error: ApiError,
    },
    /// The new-policy form, or (`replacing`) the form of the policy of that id.
    Policy {
        replacing: bool,
        typed: PolicyDocument,
        error: PolicyError,
    },
    Webhook {
        url: String,
        format: WebhookFormat,
        error: ApiError,
    },
}

/// `GET /console/settings`: the tenant's SOC settings, webhooks and policies.
pub async fn settings(State(state): State<SharedState>, session: SignedIn) -> ConsoleResult {
    settings_page(&state, &session, None).await
}

/// The Settings page; with `refused`, answered 422 with that form as it was typed and the
/// reason next to it.
pub async fn settings_page(
    state: &SharedState,
    session: &SignedIn,
    refused: Option<Refused>,
) -> ConsoleResult {
    use crate::actions::{Reason, form};
    let operator = session.viewer()?;
    let tenant = state.store.tenant(&operator.tenant).await?;
    let autonomy = autonomy_view(state, tenant.autonomy_override);
    let webhooks = state.store.list_webhooks(&operator.tenant).await?;
    let policies = state.store.policies(&operator.tenant).await?;
    let offers = Offers::of(session.role());
    let stored = |value: Option<u32>| value.map(|n| n.to_string()).unwrap_or_default();
    let deny_storm = [
        stored(tenant.deny_storm.threshold),
        stored(tenant.deny_storm.window_secs),
    ];
    let risk_escalation = [
        tenant.risk_escalation.denial_threshold.to_string(),
        tenant.risk_escalation.window_minutes.to_string(),
    ];
    let body = html! {
        h1 { "Settings" }
        section aria-labelledby="autonomy-title" {
            h2 #autonomy-title { "SOC autonomy" }
            p { "In force: " strong #autonomy-level { (autonomy.level.as_str()) } " (from " (format!("{:?}", autonomy.source).to_lowercase()) ")." }
            @if offers.administer {
                form.setting method="post" action="/console/settings/autonomy" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="level" { "Tenant override" }
                    select #level name="level" {
                        option value="" selected[autonomy.override_level.is_none()] { "none (gateway default)" }
                        @for level in AutonomyLevel::ALL {
                            option value=(level.as_str()) selected[autonomy.override_level == Some(*level)] { (level.as_str()) }
                        }
                    }
                    button type="submit" { "Save autonomy level" }
                }
            }
        }
        section aria-labelledby="thresholds-title" {
            h2 #thresholds-title { "Thresholds" }
            dl.facts {
                dt { "Deny storm" } dd #deny-storm {
                    (tenant.deny_storm.threshold.map_or("gateway default".to_owned(), |n| format!("{n} denies")))
                    " within "
                    (tenant.deny_storm.window_secs.map_or("the gateway default window".to_owned(), |s| format!("{s} s")))
                }
                dt { "Risk escalation" } dd #risk-escalation { (tenant.risk_escalation.denial_threshold) " denies within " (tenant.risk_escalation.window_minutes) " min" }
            }
            @if offers.administer {
                (threshold_form(Thresholds::DenyStorm, deny_storm, &session.csrf, refused.as_ref()))
                (threshold_form(Thresholds::RiskEscalation, risk_escalation, &session.csrf, refused.as_ref()))
                p.help { "Leave a deny-storm field empty for the gateway default. A deny storm opens an incident; each escalation steps the agent's risk tier up one level." }
            } @else {
                p.help { "An admin key changes them here or with " code { "PUT /v1/tenants/deny-storm" } " and " code { "PUT /v1/tenants/risk-escalation" } "." }
            }
        }
        section aria-labelledby="webhooks-title" {
            h2 #webhooks-title { "Webhooks" }
            @if webhooks.is_empty() {
                p.empty { "No webhook subscriptions: incidents reach no other system." }
            } @else {
                ul.webhooks {
                    @for hook in &webhooks {
                        li {
                            code { (hook.url) } " · " (hook.format) " · since " (timestamp_ms(hook.created_at_ms))
                            @if offers.administer {
                                (form(&format!("/console/settings/webhooks/{}/delete", hook.id), "Delete webhook", &session.csrf, "/console/settings", Some("Delete this webhook? Its pending deliveries are not sent."), Reason::None))
                            }
                        }
                    }
                }
            }
            @if offers.administer {
                (webhook_form(&session.csrf, refused.as_ref()))
            } @else {
                p.help { "An admin key adds and deletes webhooks here or with " code { "POST /v1/webhooks" } "." }
            }
        }
        section aria-labelledby="policies-title" {
            h2 #policies-title { "Policies" }
            p.help { "Tenant policies are Cedar policies, one per id, in force over the default pack as soon as they are saved. A policy is checked against the schema with the whole set before it is saved: a refused one is not saved." }
            @if policies.is_empty() {
                p.empty { "Only the default policy pack applies." }
            }
            @for policy in &policies {
                @if offers.administer {
                    (policy_form(Some(policy), &session.csrf, refused.as_ref()))
                } @else {
                    details { summary { code { (policy.id) } } pre { (policy.text) } }
                }
            }
            @if offers.administer {
                (policy_form(None, &session.csrf, refused.as_ref()))
            } @else {
                p.help { "An admin key edits them here or with " code { "PUT /v1/policies/{id}" } "." }
            }
        }
    };
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, session.page("Settings").render(body)).into_response())
}

/// One thresholds form with the values `stored`, or as typed when it was `refused`, and the
/// reason it was refused under it, its input marked invalid.
fn threshold_form(
    form: Thresholds,
    stored: [String; 2],
    csrf: &str,
    refused: Option<&Refused>,
) -> Markup {
    let refused = match refused {
        Some(Refused::Thresholds {
            form: refused_form,
            typed,
            error,
        }) if *refused_form == form => Some((typed, error)),
        _ => None,
    };
    let fields = form.fields();
    let value = |index: usize| match refused {
        Some((typed, _)) => typed[index].1.clone(),
        None => stored[index].clone(),
    };
    let invalid =
        |name: &str| refused.is_some_and(|(_, error)| error.field.as_deref() == Some(name));
    html! {
        form.setting method="post" action=(form.action()) {
            input type="hidden" name="csrf" value=(csrf);
            @for (index, (name, label)) in fields.iter().enumerate() {
                label {
                    (label)
                    input name=(name) value=(value(index)) inputmode="numeric" size="8"
                        placeholder=[(form == Thresholds::DenyStorm).then_some("gateway default")]
                        aria-invalid=[invalid(name).then_some("true")]
                        aria-describedby=[invalid(name).then_some("thresholds-problem")];
                }
            }
            button type="submit" { (form.button()) }
        }
        @if let Some((_, error)) = refused {
            @let label = fields.iter().find(|(name, _)| error.field.as_deref() == Some(*name)).map_or("", |(_, label)| *label);
            p #thresholds-problem.error role="alert" { "Not saved: " (label) " " (error.message) "." }
        }
    }
}

/// The form that adds a webhook (`refused`: as typed, with why under it).
fn webhook_form(csrf: &str, refused: Option<&Refused>) -> Markup {
    let refused = match refused {
        Some(Refused::Webhook { url, format, error }) => Some((url, *format, error)),
        _ => None,
    };
    let invalid = refused.is_some().then_some("true");
    html! {
        form.setting method="post" action="/console/settings/webhooks" {
            input type="hidden" name="csrf" value=(csrf);
            label {
                "Webhook URL"
                input name="url" type="url" required placeholder="https://hooks.example.com/aegis"
                    value=[refused.map(|(url, _, _)| url)]
                    aria-invalid=[invalid] aria-describedby=[invalid.map(|_| "webhook-problem")];
            }
            label {
                "Format"
                select name="format" {
                    @for format in WebhookFormat::ALL {
                        option value=(format.as_str()) selected[refused.is_some_and(|(_, typed, _)| typed.as_str() == format.as_str())] { (format.as_str()) }
                    }
                }
            }
            button type="submit" { "Add webhook" }
        }
        @if let Some((_, _, error)) = refused {
            p #webhook-problem.error role="alert" { "Not added: " (error.field.as_deref().unwrap_or("webhook")) " " (error.message) "." }
        }
    }
}

/// The form of a stored policy (replace, and its delete button) or, with none, the form that
/// adds one. When Cedar refused what was typed into it, it holds the text as typed and says
/// why under it, quoting the line at fault with a caret under the column.
fn policy_form(stored: Option<&PolicyDocument>, csrf: &str, refused: Option<&Refused>) -> Markup {
    use crate::actions::{Reason, form};
    let refused = match refused {
        Some(Refused::Policy {
            replacing,
            typed,
            error,
        }) if *replacing == stored.is_some()
            && stored.is_none_or(|stored| stored.id == typed.id) =>
        {
            Some((typed, error))
        }
        _ => None,
    };
    let text = refused
        .map(|(typed, _)| typed)
        .or(stored)
        .map(|doc| doc.text.as_str());
    let id = refused
        .map(|(typed, _)| typed)
        .or(stored)
        .map(|doc| doc.id.as_str());
    let invalid = |field: &str| {
        refused
            .is_some_and(|(_, error)| error.field() == field)
            .then_some("true")
    };
    let button = match stored {
        Some(_) => "Replace policy",
        None => "Add policy",
    };
    let problem_id = format!(
        "policy-problem-{}",
        stored.map_or("new", |stored| stored.id.as_str())
    );
    html! {
        details.policy open[refused.is_some() || stored.is_none()] {
            summary { @match stored { Some(stored) => code { (stored.id) }, None => "New policy" } }
            form.policy method="post" action="/console/settings/policies" {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(stored) = stored {
                    input type="hidden" name="id" value=(stored.id);
                    input type="hidden" name="replace" value="true";
                } @else {
                    label {
                        "Policy id"
                        input name="id" required maxlength="64" value=[id]
                            aria-invalid=[invalid("id")] aria-describedby=[invalid("id").map(|_| problem_id.as_str())];
                    }
                }
                label {
                    "Cedar policy"
                    textarea name="text" rows="8" spellcheck="false"
                        aria-invalid=[invalid("text")] aria-describedby=[invalid("text").map(|_| problem_id.as_str())] { (text.unwrap_or_default()) }
                }
                button type="submit" { (button) }
            }
            @if let Some((typed, error)) = refused {
                (policy_problem(&problem_id, &typed.text, error))
            }
            @if let Some(stored) = stored {
                (form(&format!("/console/settings/policies/{}/delete", stored.id), "Delete policy", csrf, "/console/settings", Some("Delete this policy? It stops applying at once."), Reason::None))
            }
        }
    }
}

/// Why Cedar (or the id rule) refused a policy: the message, and where it says the problem
/// is, the line quoted with a caret under the column.
fn policy_problem(problem_id: &str, text: &str, error: &PolicyError) -> Markup {
    let message = match error {
        PolicyError::InvalidId(why) => format!("the policy id {why}"),
        PolicyError::OverLimit { message, .. } | PolicyError::Invalid { message, .. } => {
            message.clone()
        }
    };
    let at = error.location().and_then(|location| {
        let (line, column) = location.split_once(':')?;
        let (line, column) = (line.parse::<usize>().ok()?, column.parse::<usize>().ok()?);
        let quoted = text.lines().nth(line.checked_sub(1)?)?;
        // The column counts bytes; the caret is placed under the character there.
        let before = quoted.get(..column.saturating_sub(1)).unwrap_or(quoted);
        Some((line, column, quoted, " ".repeat(before.chars().count())))
    });
    html! {
        div #(problem_id).error role="alert" {
            @match &at {
                Some((line, column, _, _)) => p { "Not saved: line " (line) ", column " (column) ": " (message) },
                None => p { "Not saved: " (message) },
            }
            @if let Some((line, _, quoted, caret)) = &at {
                pre.offending aria-label=(format!("line {line}")) { (quoted) "\n" (caret) "^" }
            }
        }
    }
}
