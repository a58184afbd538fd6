//! [`ChainArchive`] on SQLite: the shared SQL of `crate::archive` run on the writer and the
//! read pool.

use super::rows::{EVENT_SQL, read_events};
use super::tx::SqliteConn;
use crate::archive::{
    ARCHIVABLE_THROUGH, ArchiveBounds, ChainArchive, KEEP_PAYLOAD, KEPT_DECISION_EVENTS,
    OLDEST_SEQ, PRUNE, PUT_CUT, RETENTION_OF, batch_end, cut_moved,
};
use crate::*;
use aegis_core::receipt::ChainCut;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use std::sync::LazyLock;

#[async_trait]
impl ChainArchive for super::SqliteStore {
    async fn archivable_through(
        &self,
        tenant: &TenantId,
        bounds: ArchiveBounds,
    ) -> StoreResult<Option<u64>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let through: Option<i64> = conn.prepare_cached(ARCHIVABLE_THROUGH)?.query_row(
                params![
                    tenant.as_str(),
                    bounds.before_ms,
                    bounds.events_consumed_through,
                    bounds.now_ms
                ],
                |row| row.get(0),
            )?;
            Ok(through.map(|seq| seq as u64))
        })
        .await
    }

    async fn retention_min_days(&self, tenant: &TenantId) -> StoreResult<Option<u32>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            conn.prepare_cached(RETENTION_OF)?
                .query_row([tenant.as_str()], |row| row.get::<_, Option<u32>>(0))
                .optional()?
                .ok_or(StoreError::NotFound("tenant"))
        })
        .await
    }

    async fn record_chain_cut(&self, cut: ChainCut) -> StoreResult<()> {
        self.writer()?
            .write(move |conn, _| {
                let body = &cut.body;
                let changed = conn.execute(
                    PUT_CUT,
                    params![
                        body.tenant_id,
                        body.pruned_through_seq as i64,
                        body.pruned_through_hash,
                        body.key_id,
                        body.cut_at,
                        cut.signature
                    ],
                )?;
                cut_moved(changed as u64)
            })
            .await
    }

    async fn prune_archived(&self, tenant: &TenantId, batch: u32) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.writer()?
            .write(move |conn, _| {
                let oldest: Option<i64> = conn
                    .prepare_cached(OLDEST_SEQ)?
                    .query_row([tenant.as_str()], |row| row.get(0))?;
                let cut = SqliteConn::run(conn, async |rows| {
                    crate::evidence::cut_of(rows, tenant.as_str()).await
                })?;
                let Some(end) = batch_end(oldest.map(|seq| seq as u64), cut.as_ref(), batch) else {
                    return Ok(0);
                };
                static KEPT: LazyLock<String> =
                    LazyLock::new(|| EVENT_SQL.matching(KEPT_DECISION_EVENTS));
                for kept in read_events(conn, &KEPT, params![tenant.as_str(), end as i64])? {
                    conn.prepare_cached(KEEP_PAYLOAD)?.execute(params![
                        kept.payload.to_string(),
                        kept.subject_id,
                        kept.seq
                    ])?;
                }
                let mut deleted = 0;
                for statement in PRUNE {
                    deleted = conn.execute(statement, params![tenant.as_str(), end as i64])?;
                }
                Ok(deleted as u64)
            })
            .await
    }
}
