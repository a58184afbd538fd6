//! `aegis approvals list|approve|reject`.

use super::table::Column;
use super::{Call, PageArgs, ToCall, View};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// The tenant's approvals, newest first, filtered as `GET /v1/approvals` (viewer).
    List(ApprovalFilters),
    /// Approve the call (responder). Under the two-person rule it stays pending until a
    /// second, different key approves.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject the call (responder).
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct ApprovalFilters {
    /// pending, approved, rejected, expired or consumed (as of now).
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    agent_id: Option<String>,
    /// RFC 3339: requested at or after.
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

const APPROVALS: &[Column] = &[
    Column::new("ID", "/id"),
    Column::new("STATUS", "/status"),
    Column::new("AGENT", "/agent_id"),
    Column::new("TOOL", "/tool"),
    Column::new("ACTION", "/action"),
    Column::new("RESOURCE", "/resource"),
    Column::new("RISK SCORE", "/risk_score"),
    Column::each("APPROVED BY", "/approvals", "key_name"),
    Column::new("EXPIRES", "/expires_at"),
];

/// What `approvals approve|reject` show beyond the list's columns.
const APPROVAL_DETAIL: &[Column] = &[
    Column::new("PARAMETERS", "/parameters"),
    Column::new("WHY ASKED", "/reason"),
    Column::new("APPROVALS NEEDED", "/approvals_required"),
    Column::new("REJECTED BY", "/rejected_by/key_name"),
];

impl ToCall for ApprovalsCommand {
    fn into_call(self) -> Call {
        let approval = View::Record(&[APPROVALS, APPROVAL_DETAIL]);
        match self {
            ApprovalsCommand::List(filters) => Call::get(&["approvals"], View::Rows(APPROVALS))
                .filter("status", filters.status)
                .filter("agent_id", filters.agent_id)
                .filter("since", filters.since)
                .page(filters.page),
            ApprovalsCommand::Approve { id, reason } => {
                Call::post(&["approvals", &id, "approve"], approval).reason(reason)
            }
            ApprovalsCommand::Reject { id, reason } => {
                Call::post(&["approvals", &id, "reject"], approval).reason(reason)
            }
        }
    }
}
