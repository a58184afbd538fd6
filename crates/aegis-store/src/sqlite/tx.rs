//! [`WriteTx`] and [`ReadRows`] over a SQLite connection: the rules and reads written once
//! (`crate::tx`) run in the writer thread's batch transaction or on a pooled reader.

use super::rows::read_rows;
use super::{append_event, load_agent, numbered_placeholders, soc};
use crate::schema::StoredRow;
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{Agent, EvidenceAppend, StoreError, StoreResult};
use futures_util::FutureExt;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql, params_from_iter};

impl ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            SqlValue::Text(Some(text)) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            SqlValue::Int(Some(int)) => ToSqlOutput::Owned(Value::Integer(int)),
            SqlValue::Bool(flag) => ToSqlOutput::Owned(Value::Integer(flag.into())),
            SqlValue::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            SqlValue::Text(None) | SqlValue::Int(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// A SQLite connection as the rules and reads written once see it: the writer's, inside its
/// batch transaction ([`WriteTx`]), or a pooled reader's ([`ReadRows`]). It holds the
/// connection by `&mut` (a connection is `Send` but not `Sync`), so that their futures are
/// `Send` as both traits promise.
pub(crate) struct SqliteConn<'c> {
    pub conn: &'c mut Connection,
}

impl<'c> SqliteConn<'c> {
    /// Runs `work`, written once over [`WriteTx`] or [`ReadRows`], on `conn` in whatever
    /// transaction it is in.
    pub fn run<T>(
        conn: &'c mut Connection,
        work: impl AsyncFnOnce(&mut SqliteConn<'c>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        poll_once(work(&mut SqliteConn { conn }))
    }
}

/// The outcome of work over a SQLite connection. Every statement completes synchronously,
/// so its future is ready when first polled; one that is not is waiting on something else,
/// which the thread running it (the writer, a blocking reader) cannot provide.
pub(super) fn poll_once<T>(work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    work.now_or_never().unwrap_or_else(|| {
        Err(StoreError::Unavailable(
            "work over a SQLite connection waited on something other than the connection".into(),
        ))
    })
}

impl ReadRows for SqliteConn<'_> {
    async fn query_rows<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> StoreResult<Vec<T>> {
        read_rows(
            self.conn,
            &numbered_placeholders(sql),
            params_from_iter(params),
            |row| read(row),
        )
    }
}

impl WriteTx for SqliteConn<'_> {
    async fn execute(&mut self, sql: &'static str, params: &[SqlValue<'_>]) -> StoreResult<u64> {
        let changed = self
            .conn
            .prepare_cached(&numbered_placeholders(sql))?
            .execute(params_from_iter(params))?;
        Ok(changed as u64)
    }

    async fn append_event(&mut self, event: EventDraft<'_>) -> StoreResult<i64> {
        append_event(
            self.conn,
            event.tenant_id,
            event.kind,
            event.agent_id,
            event.subject_id,
            &event.payload,
        )
    }

    async fn load_agent(&mut self, tenant_id: &str, agent_id: &str) -> StoreResult<Agent> {
        load_agent(self.conn, tenant_id, agent_id)
    }

    async fn add_evidence(&mut self, appends: &[EvidenceAppend], now: i64) -> StoreResult<()> {
        soc::add_evidence(self.conn, appends, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_bind_as_the_sqlite_schema_stores_them() {
        let conn = Connection::open_in_memory().unwrap();
        let bound: (String, String, i64, String, String) = conn
            .query_row(
                "SELECT typeof(?1), typeof(?2), ?3, typeof(?4), typeof(?5)",
                params_from_iter([
                    SqlValue::text("a"),
                    SqlValue::int(7),
                    SqlValue::Bool(true),
                    SqlValue::Text(None),
                    SqlValue::Bytes(b"\x00\xff"),
                ]),
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            bound,
            (
                "text".into(),
                "integer".into(),
                1,
                "null".into(),
                "blob".into()
            )
        );
    }

    #[test]
    fn a_rule_waiting_on_anything_else_fails_instead_of_holding_the_writer() {
        let mut conn = Connection::open_in_memory().unwrap();
        let outcome: StoreResult<()> = SqliteConn::run(&mut conn, async |_| {
            std::future::pending::<()>().await;
            Ok(())
        });
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
}
