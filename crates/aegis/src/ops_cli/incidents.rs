//! `aegis incidents list|get|ack|close|apply|narrate|graph`.

use super::table::Column;
use super::{Call, PageArgs, TimedPageArgs, ToCall, View};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum IncidentsCommand {
    /// The tenant's incidents, newest first, filtered as `GET /v1/incidents` (viewer).
    List(IncidentFilters),
    /// One incident: its evidence span and the responses taken (viewer).
    Get { id: String },
    /// Acknowledge an open incident (responder).
    Ack { id: String },
    /// Close the incident, recording who and why (responder).
    Close {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Carry out the incident's recommended action, offered at autonomy L2 (responder).
    Apply { id: String },
    /// A narrative of the incident built from its recorded evidence (viewer; a responder's
    /// first read of a changed incident stores a new one).
    Narrate {
        id: String,
        /// Write and store a new narrative even if the stored one is current (responder).
        #[arg(long)]
        renew: bool,
    },
    /// The incident's evidence graph, one row per edge: each decision with its agent, run,
    /// tool, policies, receipt, and the responses taken (viewer).
    Graph {
        id: String,
        /// RFC 3339: only decisions at or after.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Args)]
pub struct IncidentFilters {
    /// open, acknowledged or closed.
    #[arg(long)]
    status: Option<String>,
    /// low, medium, high or critical.
    #[arg(long)]
    severity: Option<String>,
    /// e.g. deny_storm, runaway, data_exfiltration, trust_escalation.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    agent_id: Option<String>,
    #[command(flatten)]
    timed_page: TimedPageArgs,
}

const INCIDENTS: &[Column] = &[
    Column::new("ID", "/id"),
    Column::new("KIND", "/kind"),
    Column::new("SEVERITY", "/severity"),
    Column::new("STATUS", "/status"),
    Column::new("AGENT", "/agent_id"),
    Column::new("EVIDENCE", "/evidence_count"),
    Column::new("OPENED", "/opened_at"),
    Column::new("SUMMARY", "/summary"),
];

/// What `incidents get` shows beyond the list's columns.
const INCIDENT_DETAIL: &[Column] = &[
    Column::new("ACKNOWLEDGED BY", "/acknowledged_by"),
    Column::new("CLOSED BY", "/closed_by"),
    Column::new("CLOSE REASON", "/close_reason"),
    Column::new("RECOMMENDED", "/recommended_action"),
    Column::each("RESPONSES", "/response_actions", "action"),
    Column::new("FIRST EVIDENCE", "/evidence/first_at"),
    Column::new("LAST EVIDENCE", "/evidence/last_at"),
];

const EDGES: &[Column] = &[
    Column::new("FROM", "/source"),
    Column::new("EDGE", "/type"),
    Column::new("TO", "/target"),
];

impl ToCall for IncidentsCommand {
    fn into_call(self) -> Call {
        let incident = View::Record(&[INCIDENTS, INCIDENT_DETAIL]);
        match self {
            IncidentsCommand::List(filters) => Call::get(&["incidents"], View::Rows(INCIDENTS))
                .filter("status", filters.status)
                .filter("severity", filters.severity)
                .filter("kind", filters.kind)
                .filter("agent_id", filters.agent_id)
                .timed_page(filters.timed_page),
            IncidentsCommand::Get { id } => Call::get(&["incidents", &id], incident),
            IncidentsCommand::Ack { id } => Call::post(&["incidents", &id, "ack"], incident),
            IncidentsCommand::Close { id, reason } => {
                Call::post(&["incidents", &id, "close"], incident).reason(reason)
            }
            IncidentsCommand::Apply { id } => Call::post(&["incidents", &id, "apply"], incident),
            IncidentsCommand::Narrate { id, renew: false } => {
                Call::get(&["incidents", &id, "narrate"], View::Narrative)
            }
            IncidentsCommand::Narrate { id, renew: true } => {
                Call::post(&["incidents", &id, "narrate"], View::Narrative)
            }
            IncidentsCommand::Graph { id, since, page } => {
                Call::get(&["graph", "incident", &id], View::RowsAt("/edges", EDGES))
                    .filter("since", since)
                    .page(page)
            }
        }
    }
}
