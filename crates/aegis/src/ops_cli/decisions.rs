//! `aegis decisions list`.

use super::table::Column;
use super::{Call, TimedPageArgs, ToCall, View};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DecisionsCommand {
    /// The tenant's decisions, newest first, filtered as `GET /v1/decisions` (viewer).
    List(DecisionFilters),
}

#[derive(Args)]
pub struct DecisionFilters {
    #[arg(long)]
    agent_id: Option<String>,
    /// allow, deny or require_approval.
    #[arg(long)]
    decision: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    run_id: Option<String>,
    #[command(flatten)]
    timed_page: TimedPageArgs,
}

const DECISIONS: &[Column] = &[
    Column::new("ID", "/decision_id"),
    Column::new("AT", "/created_at"),
    Column::new("AGENT", "/agent_id"),
    Column::new("DECISION", "/decision"),
    Column::new("TOOL", "/tool"),
    Column::new("ACTION", "/action"),
    Column::new("RESOURCE", "/resource"),
    Column::new("SOURCE", "/source_trust"),
    Column::new("RISK SCORE", "/risk_score"),
    Column::new("REASON", "/reason"),
];

impl ToCall for DecisionsCommand {
    fn into_call(self) -> Call {
        let DecisionsCommand::List(filters) = self;
        Call::get(&["decisions"], View::Rows(DECISIONS))
            .filter("agent_id", filters.agent_id)
            .filter("decision", filters.decision)
            .filter("tool", filters.tool)
            .filter("action", filters.action)
            .filter("run_id", filters.run_id)
            .timed_page(filters.timed_page)
    }
}
