//! One transaction interface over both drivers, so that a write rule (which statements, in
//! which order, what they refuse, what event records them) is written once and run by either
//! store in its writer transaction. SQL is written with PostgreSQL's `$N` placeholders; the
//! SQLite store spells them as its own. A backend implements [`WriteTx`] with its driver's
//! plumbing only: binding [`SqlValue`]s, running a statement, appending an event.
//!
//! The SQLite driver is synchronous: its implementation does its work when first polled and
//! never suspends, so the writer thread runs a rule with one poll
//! (`sqlite::SqliteTx::run`).

use crate::StoreResult;
use serde_json::Value;

/// A statement parameter, typed as its column is: PostgreSQL checks a parameter's type
/// against its column's, SQLite stores booleans as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlValue<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
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

    /// The boolean in the first column of the one row `sql` returns.
    async fn query_bool(&mut self, sql: &'static str, params: &[SqlValue<'_>])
    -> StoreResult<bool>;

    /// Appends an event to the log in this transaction; its seq.
    async fn append_event(&mut self, event: EventDraft<'_>) -> StoreResult<i64>;
}

/// An event a rule appends ([`WriteTx::append_event`]).
pub(crate) struct EventDraft<'a> {
    pub tenant_id: &'a str,
    pub kind: &'static str,
    pub agent_id: Option<&'a str>,
    pub subject_id: Option<&'a str>,
    pub payload: Value,
}
