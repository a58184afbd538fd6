//! [`WriteTx`] over the SQLite writer's connection: rules written once (`crate::tx`) run in
//! the writer thread's batch transaction.

use super::rows::{AGENT_COLUMNS, read_rows};
use super::{SqliteStore, append_event, load_agent, mcp, numbered_placeholders, soc};
use crate::backend::Backend;
use crate::schema::StoredRow;
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{
    Agent, Delivery, DeliveryClaim, EvidenceAppend, SecretsKey, StoreError, StoreResult, ToolPin,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
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

/// The writer's connection as a rule sees it ([`WriteTx`]). It holds the connection by
/// `&mut` (a connection is `Send` but not `Sync`), so that a rule's future is `Send` as
/// [`WriteTx`] promises.
pub(crate) struct SqliteTx<'c> {
    conn: &'c mut Connection,
}

/// A pooled read connection as a read written once sees it ([`ReadRows`]).
pub(crate) struct SqliteRead<'c> {
    conn: &'c mut Connection,
}

impl<'c> SqliteTx<'c> {
    /// Runs `rule` over `conn`, in whatever transaction the connection is in.
    pub fn run<T, R>(
        conn: &'c mut Connection,
        rule: impl FnOnce(SqliteTx<'c>) -> R,
    ) -> StoreResult<T>
    where
        R: Future<Output = StoreResult<T>>,
    {
        poll_once(rule(SqliteTx { conn }))
    }
}

impl<'c> SqliteRead<'c> {
    /// Runs `read`, written once over [`ReadRows`], on `conn`: a pooled reader, or the
    /// writer's connection inside its transaction.
    pub fn run<T>(
        conn: &'c mut Connection,
        read: impl AsyncFnOnce(&mut SqliteRead<'c>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        poll_once(read(&mut SqliteRead { conn }))
    }
}

/// The outcome of work over a SQLite connection. Every statement completes synchronously,
/// so its future is ready when first polled; one that is not is waiting on something else,
/// which the thread running it (the writer, a blocking reader) cannot provide.
fn poll_once<T>(work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    work.now_or_never().unwrap_or_else(|| {
        Err(StoreError::Unavailable(
            "work over a SQLite connection waited on something other than the connection".into(),
        ))
    })
}

impl Backend for SqliteStore {
    type Tx<'t> = SqliteTx<'t>;
    type Read<'r> = SqliteRead<'r>;

    const ORDINAL: &'static str = "rowid";
    const AGENT_COLUMNS: &'static str = AGENT_COLUMNS;
    const DELIVERY_COLUMNS: &'static str = super::notify::DELIVERY_COLUMNS;

    async fn run_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut SqliteTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.writer()?
            .write(move |conn, _| poll_once(rule(&mut SqliteTx { conn })))
            .await
    }

    async fn run_leader_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut SqliteTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.run_rule(rule).await
    }

    async fn run_read<T, R>(&self, read: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'r> FnOnce(&'r mut SqliteRead<'r>) -> BoxFuture<'r, StoreResult<T>> + Send + 'static,
    {
        self.read(move |conn| poll_once(read(&mut SqliteRead { conn })))
            .await
    }

    async fn claim_deliveries(&self, claim: DeliveryClaim) -> StoreResult<Vec<Delivery>> {
        self.read(move |conn| super::notify::claim_deliveries(conn, &claim))
            .await
    }

    fn secrets(&self) -> Option<&SecretsKey> {
        self.secrets.as_ref()
    }
}

impl ReadRows for SqliteRead<'_> {
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

impl ReadRows for SqliteTx<'_> {
    async fn query_rows<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> StoreResult<Vec<T>> {
        SqliteRead {
            conn: &mut *self.conn,
        }
        .query_rows(sql, params, read)
        .await
    }
}

impl WriteTx for SqliteTx<'_> {
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

    async fn load_pin(
        &mut self,
        tenant_id: &str,
        server_id: &str,
        tool: &str,
    ) -> StoreResult<Option<ToolPin>> {
        mcp::pin(self.conn, tenant_id, server_id, tool)
    }

    async fn load_pins(&mut self, tenant_id: &str, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        mcp::pins(self.conn, tenant_id, server_id)
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
        let outcome: StoreResult<()> = SqliteTx::run(&mut conn, |_tx| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
}
