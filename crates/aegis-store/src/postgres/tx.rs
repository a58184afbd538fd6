//! [`WriteTx`] over the PostgreSQL writer's transaction: rules written once (`crate::tx`)
//! run in the batch transaction that holds `log_head`.

use super::writer::WriterState;
use super::{append_event, prepared};
use crate::StoreResult;
use crate::tx::{EventDraft, SqlValue, WriteTx};
use deadpool_postgres::Transaction;
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
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<&str> as ToSql>::accepts(ty)
            || <i64 as ToSql>::accepts(ty)
            || <bool as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

pub(super) struct PgTx<'a> {
    pub tx: &'a Transaction<'a>,
    pub state: &'a mut WriterState,
}

impl WriteTx for PgTx<'_> {
    async fn execute(&mut self, sql: &'static str, params: &[SqlValue<'_>]) -> StoreResult<u64> {
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(self
            .tx
            .execute(&prepared(self.tx, sql).await?, &params)
            .await?)
    }

    async fn query_bool(
        &mut self,
        sql: &'static str,
        params: &[SqlValue<'_>],
    ) -> StoreResult<bool> {
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let row = self
            .tx
            .query_one(&prepared(self.tx, sql).await?, &params)
            .await?;
        Ok(row.try_get(0)?)
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
}
