//! `aegis agents list|get|freeze|unfreeze|revoke|rotate-token|set-risk-tier`.

use super::table::Column;
use super::{Call, PageArgs, ToCall, View};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// The tenant's agents, newest first (viewer).
    List(PageArgs),
    /// One agent and its status (viewer).
    Get { id: String },
    /// Freeze the agent: each of its calls is a recorded deny naming the reason, until it
    /// is unfrozen (responder).
    Freeze {
        id: String,
        /// Why; every refusal of the agent's calls names it.
        #[arg(long)]
        reason: String,
    },
    /// Let a frozen agent work again (responder). A revoked agent stays revoked.
    Unfreeze { id: String },
    /// Revoke the agent for good: its tokens answer 401 from then on (admin).
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Issue the agent a new token, printed once; the old one stops working at once (admin).
    RotateToken { id: String },
    /// Set the agent's risk tier, e.g. step it down after escalation (admin).
    SetRiskTier {
        id: String,
        /// low, medium or high.
        tier: String,
    },
}

const AGENTS: &[Column] = &[
    Column::new("ID", "/id"),
    Column::new("NAME", "/name"),
    Column::new("STATUS", "/status"),
    Column::new("STATUS REASON", "/status_reason"),
    Column::new("RISK TIER", "/risk_tier"),
    Column::new("UPDATED", "/updated_at"),
];

/// What `agents get` shows beyond the list's columns.
const AGENT_DETAIL: &[Column] = &[Column::new("CREATED", "/created_at")];

const ROTATED: &[Column] = &[
    Column::new("AGENT", "/agent_id"),
    Column::new("NEW TOKEN", "/agent_token"),
];

impl ToCall for AgentsCommand {
    fn into_call(self) -> Call {
        let agent = View::Record(&[AGENTS, AGENT_DETAIL]);
        match self {
            AgentsCommand::List(page) => Call::get(&["agents"], View::Rows(AGENTS)).page(page),
            AgentsCommand::Get { id } => Call::get(&["agents", &id], agent),
            AgentsCommand::Freeze { id, reason } => {
                Call::post(&["agents", &id, "freeze"], agent).reason(Some(reason))
            }
            AgentsCommand::Unfreeze { id } => Call::post(&["agents", &id, "unfreeze"], agent),
            AgentsCommand::Revoke { id, reason } => {
                Call::post(&["agents", &id, "revoke"], agent).reason(reason)
            }
            AgentsCommand::RotateToken { id } => {
                Call::post(&["agents", &id, "rotate-token"], View::Record(&[ROTATED]))
            }
            AgentsCommand::SetRiskTier { id, tier } => {
                Call::patch(&["agents", &id], json!({ "risk_tier": tier }), agent)
            }
        }
    }
}
