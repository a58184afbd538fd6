//! The event log role ([`EventLog`]) once for both stores, through a [`Backend`]: reads of
//! the log and of consumer cursors, the operations snapshot, and an event appended alone.
//! Leadership and the commit feed are the driver's.

use crate::backend::Backend;
use crate::tx::{EventDraft, ReadRows, SqlValue, WriteTx};
use crate::{
    Event, EventKinds, EventLog, Leadership, OperationsSnapshot, StoreError, StoreResult, TenantId,
};
use crate::{now_ms, operations};
use async_trait::async_trait;
use tokio::sync::watch;

#[async_trait]
impl<B: Backend> EventLog for B {
    async fn lead(&self) -> StoreResult<Leadership> {
        self.wait_for_lead().await
    }

    async fn operations(&self) -> StoreResult<OperationsSnapshot> {
        self.run_read(|rows| Box::pin(async move { operations::snapshot(rows, now_ms()).await }))
            .await
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let tenant = tenant.clone();
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [
                    SqlValue::text(tenant.as_str()),
                    SqlValue::int(after_seq),
                    SqlValue::int(i64::from(limit)),
                ];
                read_events(rows, &B::event_queries().of_tenant_after, &params).await
            })
        })
        .await
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        kind: &str,
        agent_id: Option<&str>,
        payload: serde_json::Value,
    ) -> StoreResult<i64> {
        let (tenant, kind, agent_id) =
            (tenant.clone(), kind.to_owned(), agent_id.map(str::to_owned));
        self.run_rule(move |tx| {
            Box::pin(async move {
                tx.append_event(EventDraft {
                    tenant_id: tenant.as_str(),
                    kind: &kind,
                    agent_id: agent_id.as_deref(),
                    subject_id: None,
                    payload,
                })
                .await
            })
        })
        .await
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<Event>> {
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [SqlValue::int(after_seq), SqlValue::int(i64::from(limit))];
                read_events(rows, &B::event_queries().after, &params).await
            })
        })
        .await
    }

    async fn events_of_kinds(
        &self,
        after_seq: i64,
        up_to: i64,
        kinds: EventKinds,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let queries = B::event_queries();
        let sql = if kinds.allowed_decisions {
            &queries.of_kinds
        } else {
            &queries.of_kinds_except_allows
        };
        let names =
            serde_json::to_string(kinds.names).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.run_read(move |rows| {
            Box::pin(async move {
                let params = [
                    SqlValue::int(after_seq),
                    SqlValue::int(up_to),
                    SqlValue::text(&names),
                    SqlValue::int(i64::from(limit)),
                ];
                read_events(rows, sql, &params).await
            })
        })
        .await
    }

    fn committed_seq(&self) -> watch::Receiver<i64> {
        self.commits()
    }

    async fn consumer_cursor(&self, consumer: &str) -> StoreResult<i64> {
        let consumer = consumer.to_owned();
        self.run_read(move |rows| {
            Box::pin(async move {
                let cursor = rows
                    .query_opt(
                        "SELECT seq FROM consumer_cursors WHERE name = $1",
                        &[SqlValue::text(&consumer)],
                        |row| row.required_int(0),
                    )
                    .await?;
                Ok(cursor.unwrap_or(0))
            })
        })
        .await
    }
}

/// The events one of the backend's [`crate::schema::EventQueries`] reads.
async fn read_events(
    rows: &mut impl ReadRows,
    sql: &str,
    params: &[SqlValue<'_>],
) -> StoreResult<Vec<Event>> {
    rows.query_rows(sql, params, crate::rows::event).await
}
