//! [`WriteTx`] over the PostgreSQL writer's transaction: rules written once (`crate::tx`)
//! run in the batch transaction that holds `log_head`.

use super::writer::WriterState;
use super::{PgStore, append_event, approvals, load_agent, mcp, prepared, soc};
use crate::approvals::ApprovalRecord;
use crate::schema::StoredRow;
use crate::tx::{EventDraft, SqlValue, WriteTx};
use crate::{Agent, EvidenceAppend, IncidentDetail, StoreResult, ToolPin};
use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

impl ToSql for SqlValue<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            SqlValue::Text(text) => text.to_sql(ty, out),
            // Every integer column is BIGINT in the PostgreSQL schema.
            SqlValue::Int(int) => int.to_sql(ty, out),
            SqlValue::Bool(flag) => flag.to_sql(ty, out),
            SqlValue::Bytes(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<&str> as ToSql>::accepts(ty)
            || <i64 as ToSql>::accepts(ty)
            || <bool as ToSql>::accepts(ty)
            || <&[u8] as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

pub(super) struct PgTx<'a> {
    pub tx: &'a Transaction<'a>,
    pub state: &'a mut WriterState,
}

impl PgStore {
    /// Runs `rule` in the writer's batch transaction, with its job's savepoint: the one place
    /// a rule written against [`WriteTx`] becomes a writer job. (The rule is boxed by the
    /// caller because its future must be `Send`, which a bound on a generic async closure
    /// cannot state.)
    pub(super) async fn run_rule<T, R>(&self, rule: R) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'a> FnOnce(PgTx<'a>) -> BoxFuture<'a, StoreResult<T>> + Send + 'static,
    {
        self.writer()?
            .write(move |tx, state| rule(PgTx { tx, state }))
            .await
    }
}

/// `params` as the driver takes them.
fn bind<'p>(params: &'p [SqlValue<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl WriteTx for PgTx<'_> {
    async fn execute(&mut self, sql: &'static str, params: &[SqlValue<'_>]) -> StoreResult<u64> {
        let statement = prepared(self.tx, sql).await?;
        Ok(self.tx.execute(&statement, &bind(params)).await?)
    }

    async fn query_rows<T>(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
        read: fn(&dyn StoredRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let statement = prepared(self.tx, sql).await?;
        let rows = self.tx.query(&statement, &bind(params)).await?;
        rows.iter().map(|row| read(row)).collect()
    }

    async fn append_event(&mut self, event: EventDraft<'_>) -> StoreResult<i64> {
        append_event(
            self.tx,
            self.state,
            event.tenant_id,
            event.kind,
            event.agent_id,
            event.subject_id,
            &event.payload,
        )
        .await
    }

    async fn load_agent(&mut self, tenant_id: &str, agent_id: &str) -> StoreResult<Agent> {
        load_agent(self.tx, tenant_id, agent_id).await
    }

    async fn load_incident(
        &mut self,
        tenant_id: &str,
        incident_id: &str,
    ) -> StoreResult<IncidentDetail> {
        soc::load_incident(self.tx, tenant_id, incident_id).await
    }

    async fn load_approval(
        &mut self,
        tenant_id: &str,
        approval_id: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ApprovalRecord>> {
        approvals::load(self.tx, tenant_id, approval_id, now_ms).await
    }

    async fn load_pin(
        &mut self,
        tenant_id: &str,
        server_id: &str,
        tool: &str,
    ) -> StoreResult<Option<ToolPin>> {
        mcp::pin(self.tx, tenant_id, server_id, tool).await
    }

    async fn load_pins(&mut self, tenant_id: &str, server_id: &str) -> StoreResult<Vec<ToolPin>> {
        mcp::pins(self.tx, tenant_id, server_id).await
    }

    async fn add_evidence(&mut self, appends: &[EvidenceAppend], now: i64) -> StoreResult<()> {
        soc::add_evidence(self.tx, appends, now).await
    }
}
