//! Archiving a chain's prefix (`aegis archive`, docs/receipts.md, *Archiving*): where a
//! chain may be cut, the signed cut itself, and the pruning of what an archive holds.
//!
//! The rules are the SQL below, written once; each backend only runs it with its own
//! driver. The order is what keeps the chain verifiable at every moment: the archive is
//! written and synced first, then the cut is recorded (one row per chain, moved only
//! forward), then what it covers is deleted in small transactions, each reading the cut
//! again. A walk of the chain starts at the cut and never reads what lies behind it, so a
//! prune stopped half-way leaves a chain that verifies like a finished one.

use crate::{StoreResult, TenantId};
use aegis_core::receipt::ChainCut;
use async_trait::async_trait;

/// The longest retention a tenant may set, in days (a hundred years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// What may not be archived yet, whatever the date asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveBounds {
    /// Only decisions created before this (Unix ms).
    pub before_ms: i64,
    /// Approvals still open at this time (Unix ms) keep the decision that requested them.
    pub now_ms: i64,
    /// The last event seq every log consumer (SOC, notifications) has passed: a decision
    /// whose event a consumer has not read yet is kept.
    pub events_consumed_through: i64,
}

/// Archiving on a store (the cut itself is read through
/// [`crate::EvidenceReads::chain_cut`], which per-receipt checks need too).
#[async_trait]
pub trait ChainArchive: Send + Sync {
    /// The last seq the tenant's chain may be archived through: the highest checkpointed seq
    /// whose decision was created before `bounds.before_ms`, below the head (the head is
    /// never pruned: the writers link the next receipt to it), and below every decision
    /// that must stay: evidence of an incident that is not closed, the request of an
    /// approval still open, one whose event a consumer has not read. `None` if there is none.
    async fn archivable_through(
        &self,
        tenant: &TenantId,
        bounds: ArchiveBounds,
    ) -> StoreResult<Option<u64>>;
    /// The tenant's retention: decisions younger than this many days are never archived
    /// (`None`: no minimum; set by [`crate::AdminStore::set_retention_min_days`]). `NotFound`
    /// if there is no such tenant.
    async fn retention_min_days(&self, tenant: &TenantId) -> StoreResult<Option<u32>>;
    /// Records `cut` as its tenant's cut; `Conflict` unless it moves the cut forward.
    async fn record_chain_cut(&self, cut: ChainCut) -> StoreResult<()>;
    /// Deletes, in one transaction, the oldest `batch` receipts at or before the tenant's
    /// cut with their decisions, retry keys, checkpoints and decision events (an event that
    /// is an incident's evidence stays, so the incident's evidence summary stays whole).
    /// Returns how many receipts it deleted: 0 when nothing is left behind the cut.
    async fn prune_archived(&self, tenant: &TenantId, batch: u32) -> StoreResult<u64>;
}

/// `$1` tenant.
pub(crate) const RETENTION_OF: &str = "SELECT retention_min_days FROM tenants WHERE id = $1";

/// `$1` tenant: the cut's columns.
pub(crate) const CUT_OF: &str =
    "SELECT pruned_through_seq, pruned_through_hash, key_id, cut_at, signature
     FROM chain_cuts WHERE tenant_id = $1";

/// `$1` tenant, `$2` seq, `$3` hash, `$4` key id, `$5` cut at, `$6` signature; changes no
/// row unless the cut moves forward.
pub(crate) const PUT_CUT: &str = "INSERT INTO chain_cuts (tenant_id, pruned_through_seq, pruned_through_hash, key_id, cut_at, signature)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (tenant_id) DO UPDATE SET pruned_through_seq = excluded.pruned_through_seq,
         pruned_through_hash = excluded.pruned_through_hash, key_id = excluded.key_id,
         cut_at = excluded.cut_at, signature = excluded.signature
     WHERE chain_cuts.pruned_through_seq < excluded.pruned_through_seq";

/// What `PUT_CUT` changing `changed` rows means: a cut only moves forward.
pub(crate) fn cut_moved(changed: u64) -> StoreResult<()> {
    if changed == 0 {
        return Err(crate::StoreError::Conflict(
            "the chain is already cut at or after this seq".into(),
        ));
    }
    Ok(())
}

/// `$1` tenant, `$2` before (ms), `$3` events consumed through, `$4` now (ms).
pub(crate) const ARCHIVABLE_THROUGH: &str = "SELECT MAX(c.seq) FROM receipt_checkpoints c
     JOIN receipts r ON r.tenant_id = c.tenant_id AND r.seq = c.seq
     JOIN decisions d ON d.id = r.decision_id
     WHERE c.tenant_id = $1 AND d.created_at < $2
       AND c.seq < (SELECT MAX(seq) FROM receipts WHERE tenant_id = $1)
       AND c.seq < COALESCE((
           SELECT MIN(k.seq) FROM receipts k JOIN decisions kd ON kd.id = k.decision_id
           WHERE k.tenant_id = $1 AND (
               kd.event_seq > $3
               OR kd.event_seq IN (SELECT e.event_seq FROM incident_evidence e
                                   JOIN incidents i ON i.id = e.incident_id
                                   WHERE i.tenant_id = $1 AND i.status <> 'closed')
               OR kd.id IN (SELECT a.decision_id FROM approvals a
                            WHERE a.tenant_id = $1 AND a.status IN ('pending', 'approved')
                              AND a.expires_at > $4))),
           9223372036854775807)";

/// `$1` tenant: the oldest stored receipt.
pub(crate) const OLDEST_SEQ: &str = "SELECT MIN(seq) FROM receipts WHERE tenant_id = $1";

/// `$1` tenant, `$2` the last seq of a prune batch: the decision events that [`PRUNE`] keeps
/// (an incident's evidence) although it deletes the decision row their payload is rebuilt
/// from, as a filter of [`crate::schema::EventQueries::matching`]. Before a batch is pruned,
/// each backend reads them and writes their payloads and subjects out ([`KEEP_PAYLOAD`]), so
/// they read the same after.
pub(crate) const KEPT_DECISION_EVENTS: &str = "payload = ''
       AND seq IN (SELECT event_seq FROM incident_evidence)
       AND seq IN (SELECT d.event_seq FROM receipts r JOIN decisions d ON d.id = r.decision_id
                   WHERE r.tenant_id = $1 AND r.seq <= $2)";

/// `$1` the payload and `$2` the subject of event `$3`, as [`KEPT_DECISION_EVENTS`] read them.
pub(crate) const KEEP_PAYLOAD: &str =
    "UPDATE events SET payload = $1, subject_id = $2 WHERE seq = $3";

/// One prune batch, in this order (each reads the receipts the next deletes); every
/// statement takes `$1` tenant and `$2` the last seq of the batch. The first writes out the
/// `prev_hash` of the first receipt kept, which is read from the last one deleted while it
/// is stored ([`crate::schema::RECEIPT_PREV_HASH`]).
pub(crate) const PRUNE: [&str; 6] = [
    "UPDATE receipts SET prev_hash = (SELECT p.hash FROM receipts p WHERE p.tenant_id = $1 AND p.seq = $2)
     WHERE tenant_id = $1 AND seq = CAST($2 AS BIGINT) + 1 AND prev_hash IS NULL",
    "DELETE FROM decision_requests WHERE (tenant_id, agent_id, request_id) IN (
         SELECT d.tenant_id, d.agent_id, d.request_id FROM receipts r
         JOIN decisions d ON d.id = r.decision_id
         WHERE r.tenant_id = $1 AND r.seq <= $2 AND d.request_id IS NOT NULL)",
    "DELETE FROM events WHERE seq IN (
         SELECT d.event_seq FROM receipts r JOIN decisions d ON d.id = r.decision_id
         WHERE r.tenant_id = $1 AND r.seq <= $2)
       AND seq NOT IN (SELECT event_seq FROM incident_evidence)",
    "DELETE FROM decisions WHERE id IN (
         SELECT decision_id FROM receipts WHERE tenant_id = $1 AND seq <= $2)",
    "DELETE FROM receipt_checkpoints WHERE tenant_id = $1 AND seq <= $2",
    "DELETE FROM receipts WHERE tenant_id = $1 AND seq <= $2",
];

/// The last seq of the next prune batch: `batch` receipts from the oldest stored, never
/// past the cut; `None` when nothing is left behind it.
pub(crate) fn batch_end(oldest: Option<u64>, cut: Option<&ChainCut>, batch: u32) -> Option<u64> {
    let (oldest, cut) = (oldest?, cut?.body.pruned_through_seq);
    (oldest <= cut).then(|| cut.min(oldest + u64::from(batch.max(1)) - 1))
}
