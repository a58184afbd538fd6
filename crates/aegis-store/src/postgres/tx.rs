//! [`WriteTx`] over the PostgreSQL writer's transaction: rules written once (`crate::tx`)
//! run in the batch transaction that holds `log_head`.

use super::leader::LeaderEpoch;
use super::writer::WriterState;
use super::{PgStore, append_event, load_agent, prepared, soc};
use crate::schema::StoredRow;
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{Agent, EvidenceAppend, StoreResult};
use deadpool_postgres::{GenericClient, Transaction};
use futures_util::future::{BoxFuture, try_join_all};
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

pub(crate) struct PgTx<'a> {
    pub tx: &'a Transaction<'a>,
    pub state: &'a mut WriterState,
}

impl PgStore {
    /// Runs `rule` in the writer's batch transaction, in its job's savepoint; with `leader`,
    /// only while this replica holds that leadership epoch.
    pub(super) async fn write_rule<T, R>(
        &self,
        leader: Option<LeaderEpoch>,
        rule: R,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        R: for<'t> FnOnce(&'t mut PgTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.writer()?
            .write(move |tx, state| {
                Box::pin(async move {
                    if let Some(epoch) = leader {
                        epoch.check(tx).await?;
                    }
                    rule(&mut PgTx { tx, state }).await
                })
            })
            .await
    }
}

/// `params` as the driver takes them.
fn bind<'p>(params: &'p [SqlValue<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A pooled client (or the writer's transaction) as a read written once sees it
/// ([`ReadRows`]).
pub(crate) struct PgRead<'a, C> {
    pub client: &'a C,
}

impl<C: GenericClient + Sync> ReadRows for PgRead<'_, C> {
    async fn query_rows<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> StoreResult<Vec<T>> {
        let statement = prepared(self.client, sql).await?;
        let rows = self.client.query(&statement, &bind(params)).await?;
        rows.iter().map(|row| read(row)).collect()
    }
}

impl ReadRows for PgTx<'_> {
    async fn query_rows<T>(
        &mut self,
        sql: &str,
        params: &[SqlValue<'_>],
        read: impl Fn(&dyn StoredRow) -> StoreResult<T> + Send,
    ) -> StoreResult<Vec<T>> {
        PgRead { client: self.tx }
            .query_rows(sql, params, read)
            .await
    }
}

impl WriteTx for PgTx<'_> {
    async fn execute(&mut self, sql: &'static str, params: &[SqlValue<'_>]) -> StoreResult<u64> {
        let statement = prepared(self.tx, sql).await?;
        Ok(self.tx.execute(&statement, &bind(params)).await?)
    }

    async fn execute_each<const N: usize>(
        &mut self,
        sql: &'static str,
        params: &[[SqlValue<'_>; N]],
    ) -> StoreResult<u64> {
        let statement = prepared(self.tx, sql).await?;
        let rows: Vec<[&(dyn ToSql + Sync); N]> = (params.iter())
            .map(|row| row.each_ref().map(|p| p as &(dyn ToSql + Sync)))
            .collect();
        // Polled together, the statements are all sent before the first answer is awaited
        // (tokio-postgres pipelines a connection's concurrent requests), and run in order.
        let changed = try_join_all(rows.iter().map(|row| self.tx.execute(&statement, row))).await?;
        Ok(changed.into_iter().sum())
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

    async fn add_evidence(&mut self, appends: &[EvidenceAppend], now: i64) -> StoreResult<()> {
        soc::add_evidence(self.tx, appends, now).await
    }
}
