//! [`ChainArchive`] on PostgreSQL: the shared SQL of `crate::archive` run on the writer and
//! the pool.

use super::prepared;
use super::rows::EVENT_SQL;
use super::rows::get;
use super::tx::PgRead;
use crate::archive::{
    ARCHIVABLE_THROUGH, ArchiveBounds, ChainArchive, KEEP_PAYLOAD, KEPT_DECISION_EVENTS,
    OLDEST_SEQ, PRUNE, PUT_CUT, RETENTION_OF, batch_end, cut_moved,
};
use crate::*;
use aegis_core::receipt::ChainCut;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;

#[async_trait]
impl ChainArchive for super::PgStore {
    async fn archivable_through(
        &self,
        tenant: &TenantId,
        bounds: ArchiveBounds,
    ) -> StoreResult<Option<u64>> {
        let row = self
            .query_opt(
                ARCHIVABLE_THROUGH,
                &[
                    &tenant.as_str(),
                    &bounds.before_ms,
                    &bounds.events_consumed_through,
                    &bounds.now_ms,
                ],
            )
            .await?;
        let through = match row {
            Some(row) => get::<Option<i64>>(&row, 0)?,
            None => None,
        };
        Ok(through.map(|seq| seq as u64))
    }

    async fn retention_min_days(&self, tenant: &TenantId) -> StoreResult<Option<u32>> {
        let row = self
            .query_opt(RETENTION_OF, &[&tenant.as_str()])
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        Ok(get::<Option<i64>>(&row, 0)?.map(|days| days as u32))
    }

    async fn record_chain_cut(&self, cut: ChainCut) -> StoreResult<()> {
        self.writer()?
            .write(move |tx, _| {
                Box::pin(async move {
                    let body = &cut.body;
                    let changed = tx
                        .execute(
                            &prepared(tx, PUT_CUT).await?,
                            &[
                                &body.tenant_id,
                                &(body.pruned_through_seq as i64),
                                &body.pruned_through_hash,
                                &body.key_id,
                                &body.cut_at,
                                &cut.signature,
                            ],
                        )
                        .await?;
                    cut_moved(changed)
                })
            })
            .await
    }

    async fn prune_archived(&self, tenant: &TenantId, batch: u32) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.writer()?
            .write(move |tx, _| {
                Box::pin(async move {
                    let oldest: Option<i64> = get(
                        &tx.query_one(&prepared(tx, OLDEST_SEQ).await?, &[&tenant.as_str()])
                            .await?,
                        0,
                    )?;
                    let cut = crate::evidence::cut_of(&mut PgRead { client: tx }, tenant.as_str())
                        .await?;
                    let Some(end) = batch_end(oldest.map(|seq| seq as u64), cut.as_ref(), batch)
                    else {
                        return Ok(0);
                    };
                    static KEPT: std::sync::LazyLock<String> =
                        std::sync::LazyLock::new(|| EVENT_SQL.matching(KEPT_DECISION_EVENTS));
                    let kept = tx
                        .query(
                            &prepared(tx, &KEPT).await?,
                            &[&tenant.as_str(), &(end as i64)],
                        )
                        .await?;
                    for row in &kept {
                        let event = crate::rows::event(row)?;
                        tx.execute(
                            &prepared(tx, KEEP_PAYLOAD).await?,
                            &[&event.payload.to_string(), &event.subject_id, &event.seq],
                        )
                        .await?;
                    }
                    let mut deleted = 0;
                    for statement in PRUNE {
                        deleted = tx
                            .execute(
                                &prepared(tx, statement).await?,
                                &[&tenant.as_str(), &(end as i64)],
                            )
                            .await?;
                    }
                    Ok(deleted)
                })
            })
            .await
    }
}
