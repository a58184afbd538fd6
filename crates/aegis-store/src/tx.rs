//! One transaction interface over both drivers, so that a write rule (which statements, in
//! which order, what they refuse, what event records them) is written once and run by either
//! store in its writer transaction, and one read interface, so that a read is written once
//! and run on a pooled read connection or inside that transaction. SQL is written with
//! PostgreSQL's `$N` placeholders; the SQLite store spells them as its own. A backend
//! implements [`ReadRows`] and [`WriteTx`] with its driver's plumbing: binding [`SqlValue`]s,
//! running a statement, appending an event, reading an agent (which its decision path shares),
//! and joining a batch's evidence.
//!
//! The SQLite driver is synchronous: its implementation does its work when first polled and
//! never suspends, so the writer thread runs a rule with one poll
//! (`sqlite::tx::SqliteConn::run`).

use crate::schema::StoredRow;
use crate::{Agent, EvidenceAppend, StoreResult};
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

/// How a rule or a read written once reads rows, in either driver: over a pooled read
/// connection ([`crate::backend::Backend::run_read`]) or in the writer's transaction. Its
/// futures are `Send` so that code generic over the driver can hand them to PostgreSQL's
/// writer task; the SQLite driver never suspends.
pub(crate) trait ReadRows: Send {
    /// Every row `sql` returns, in order, each read by `read` as the backends' own reads are
    /// ([`StoredRow`]).
    fn query_rows<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send;

    /// The one row `sql` returns by a unique key, read by `read`; `None` if none.
    fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send {
        async move { Ok(self.query_rows(sql, params, read).await?.into_iter().next()) }
    }
}

/// What a write rule may do inside a store's writer transaction.
pub(crate) trait WriteTx: ReadRows {
    /// Runs `sql` with `params`; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Runs `sql` once for each row of `params`, in order; the number of rows they changed.
    /// For a batch's independent statements (a row per chain, per agent, per delivery):
    /// PostgreSQL pipelines them, so that they cost one round trip under the `log_head` lock
    /// instead of one each; SQLite runs them one by one, as it runs every statement.
    fn execute_each<const N: usize>(
        &mut self,
        sql: &'static str,
        params: &[[SqlValue<'_>; N]],
    ) -> impl Future<Output = StoreResult<u64>> + Send {
        async move {
            let mut changed = 0;
            for row in params {
                changed += self.execute(sql, row).await?;
            }
            Ok(changed)
        }
    }

    /// Appends an event to the log in this transaction; its seq.
    fn append_event(
        &mut self,
        event: EventDraft<'_>,
    ) -> impl Future<Output = StoreResult<i64>> + Send;

    /// The tenant's agent as stored now; `NotFound` if it has none by that id.
    fn load_agent(
        &mut self,
        tenant_id: &str,
        agent_id: &str,
    ) -> impl Future<Output = StoreResult<Agent>> + Send;

    /// Joins each event to its incident unless already joined; an incident whose evidence
    /// grew is marked updated at `now`. (A storm joins every later event of its agent, so a
    /// backend does this in as few statements as its driver allows.)
    fn add_evidence(
        &mut self,
        appends: &[EvidenceAppend],
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// An event a rule appends ([`WriteTx::append_event`]).
pub(crate) struct EventDraft<'a> {
    pub tenant_id: &'a str,
    pub kind: &'a str,
    pub agent_id: Option<&'a str>,
    pub subject_id: Option<&'a str>,
    pub payload: Value,
}
