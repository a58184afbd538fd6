//! One transaction interface over both drivers, so that a write rule (which statements, in
//! which order, what they refuse, what event records them) is written once and run by either
//! store in its writer transaction. SQL is written with PostgreSQL's `$N` placeholders; the
//! SQLite store spells them as its own. A backend implements [`WriteTx`] with its driver's
//! plumbing: binding [`SqlValue`]s, running a statement, appending an event, and the reads
//! that map whole rows (an agent, an incident, an approval, an MCP tool's pin), which it
//! shares with its read API.
//!
//! The SQLite driver is synchronous: its implementation does its work when first polled and
//! never suspends, so the writer thread runs a rule with one poll
//! (`sqlite::SqliteTx::run`).

use crate::approvals::ApprovalRecord;
use crate::schema::StoredRow;
use crate::{Agent, EvidenceAppend, IncidentDetail, StoreResult, ToolPin};
use serde_json::Value;

/// A statement parameter, typed as its column is: PostgreSQL checks a parameter's type
/// against its column's, SQLite stores booleans as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlValue<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(&'a [u8]),
}

impl<'a> SqlValue<'a> {
    pub fn text(value: &'a str) -> Self {
        SqlValue::Text(Some(value))
    }

    pub fn int(value: i64) -> Self {
        SqlValue::Int(Some(value))
    }
}

/// What a write rule may do inside a store's writer transaction.
pub(crate) trait WriteTx {
    /// Runs `sql` with `params`; the number of rows it changed.
    async fn execute(&mut self, sql: &'static str, params: &[SqlValue<'_>]) -> StoreResult<u64>;

    /// Every row `sql` returns (the `RETURNING` list of an update, say), in order, each
    /// read by `read` as the backends' own reads are ([`StoredRow`]).
    async fn query_rows<T>(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>>;

    /// The one row `sql` returns by a unique key, read by `read`; `None` if none.
    async fn query_opt<T>(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        Ok(self.query_rows(sql, params, read).await?.into_iter().next())
    }

    /// Appends an event to the log in this transaction; its seq.
    async fn append_event(&mut self, event: EventDraft<'_>) -> StoreResult<i64>;

    /// The tenant's agent as stored now; `NotFound` if it has none by that id.
    async fn load_agent(&mut self, tenant_id: &str, agent_id: &str) -> StoreResult<Agent>;

    /// The tenant's incident as the read API shows it; `NotFound` if it has none by that id.
    async fn load_incident(
        &mut self,
        tenant_id: &str,
        incident_id: &str,
    ) -> StoreResult<IncidentDetail>;

    /// The tenant's approval as of `now_ms`; `None` if it has none by that id.
    async fn load_approval(
        &mut self,
        tenant_id: &str,
        approval_id: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ApprovalRecord>>;

    /// The pin of one tool of the tenant's MCP server; `None` if it has none.
    async fn load_pin(
        &mut self,
        tenant_id: &str,
        server_id: &str,
        tool: &str,
    ) -> StoreResult<Option<ToolPin>>;

    /// The pins of every tool of the tenant's MCP server, by tool name.
    async fn load_pins(&mut self, tenant_id: &str, server_id: &str) -> StoreResult<Vec<ToolPin>>;

    /// Joins each event to its incident unless already joined; an incident whose evidence
    /// grew is marked updated at `now`. (A storm joins every later event of its agent, so a
    /// backend does this in as few statements as its driver allows.)
    async fn add_evidence(&mut self, appends: &[EvidenceAppend], now: i64) -> StoreResult<()>;
}

/// An event a rule appends ([`WriteTx::append_event`]).
pub(crate) struct EventDraft<'a> {
    pub tenant_id: &'a str,
    pub kind: &'static str,
    pub agent_id: Option<&'a str>,
    pub subject_id: Option<&'a str>,
    pub payload: Value,
}
