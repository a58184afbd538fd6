//! [`WriteTx`] over the SQLite writer's connection: rules written once (`crate::tx`) run in
//! the writer thread's batch transaction.

use super::rows::read_rows;
use super::{SqliteStore, append_event, approvals, load_agent, mcp, numbered_placeholders, soc};
use crate::approvals::ApprovalRecord;
use crate::schema::StoredRow;
use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{Agent, EvidenceAppend, IncidentDetail, StoreError, StoreResult, ToolPin};
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
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

pub(super) struct SqliteTx<'c> {
    conn: &'c Connection,
}

impl<'c> SqliteTx<'c> {
    /// Runs `rule` over `conn`. Every statement of a [`SqliteTx`] completes synchronously,
    /// so the rule's future is ready when first polled; one that is not is a rule awaiting
    /// something else, which the writer thread cannot run.
    pub fn run<T, R>(conn: &'c Connection, rule: impl FnOnce(SqliteTx<'c>) -> R) -> StoreResult<T>
    where
        R: Future<Output = StoreResult<T>>,
    {
        rule(SqliteTx { conn }).now_or_never().unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "a write rule waited on something other than the SQLite connection".into(),
            ))
        })
    }
}

impl SqliteStore {
    /// Runs `rule` on the writer thread in its batch transaction, with the job's savepoint:
    /// the one place a rule written against [`WriteTx`] becomes a writer job (the same shape
    /// as `PgStore::run_rule`).
    pub(super) async fn run_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'c> FnOnce(SqliteTx<'c>) -> LocalBoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        self.writer()?
            .write(move |conn, _| SqliteTx::run(conn, rule))
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

    async fn query_rows<T>(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        read_rows(
            self.conn,
            &numbered_placeholders(sql),
            params_from_iter(params),
            |row| read(row),
        )
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

    async fn load_incident(
        &mut self,
        tenant_id: &str,
        incident_id: &str,
    ) -> StoreResult<IncidentDetail> {
        soc::load_incident(self.conn, tenant_id, incident_id)
    }

    async fn load_approval(
        &mut self,
        tenant_id: &str,
        approval_id: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ApprovalRecord>> {
        approvals::load(self.conn, tenant_id, approval_id, now_ms)
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
        let conn = Connection::open_in_memory().unwrap();
        let outcome: StoreResult<()> = SqliteTx::run(&conn, |_tx| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
}
