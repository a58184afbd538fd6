//! Receipt chains in the store: the one audit walk every checker runs (`aegis receipts
//! verify --db`, `POST /v1/receipts/verify`, the background integrity check and the start-up
//! audit), read by each backend from one consistent snapshot; and the guard that lets a
//! writer append only to a chain head it can prove.
//!
//! Receipts commit in the same transaction as the checkpoint over their chain's new head, so
//! in any consistent snapshot the last receipt of a chain is named by its last checkpoint.
//! Anything else (receipts past the last checkpoint, a chain without checkpoints, a
//! checkpoint beyond the receipts) was written behind the gateway's back.

use crate::schema::{CHECKPOINT_COLUMNS, ReceiptQueries, SEAL_SQL};
use crate::tx::{ReadRows, SqlValue, WriteTx};
use crate::{ReceiptStore, StoreError, StoreResult};
use aegis_core::receipt::ReceiptSigner;
use aegis_core::receipt::{
    BreakKind, ChainBreak, ChainCut, ChainHead, ChainPoint, ChainVerifier, Checkpoint, KeyRing,
    Receipt, decode_public_key, key_id, verify_sealed_head,
};
use aegis_core::timestamp::format_millis;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

/// Receipts read per query.
const PAGE: u32 = 1000;

/// A writer's signing key, if it was given one. Operator commands (`aegis init`, `aegis keys
/// create`) open the store without one: they extend no chain, and a write that would have to
/// sign a checkpoint fails instead of signing with a key nobody keeps.
pub(crate) fn signing_key(signer: &Option<Arc<ReceiptSigner>>) -> StoreResult<&ReceiptSigner> {
    signer.as_deref().ok_or_else(|| {
        StoreError::Unavailable(
            "the database was opened without a signing key; only `aegis serve` records receipts"
                .into(),
        )
    })
}

/// Signs a checkpoint over the new head of every chain a commit batch extended, all with one
/// signature ([`ReceiptSigner::checkpoints`]), and stores them in the batch's transaction, so
/// that the batch costs one signature however many chains it moved. A checkpoint already
/// stored at one of those seqs was not written by a gateway: its insert fails and so does the
/// batch. A batch that extended no chain signs nothing.
pub(crate) async fn sign_heads<'h>(
    tx: &mut impl WriteTx,
    signer: &Option<Arc<ReceiptSigner>>,
    heads: impl ExactSizeIterator<Item = (&'h str, &'h ChainPoint)>,
    now_ms: i64,
) -> StoreResult<Vec<Checkpoint>> {
    if heads.len() == 0 {
        return Ok(Vec::new());
    }
    let checkpoints = signing_key(signer)?
        .checkpoints(heads, &format_millis(now_ms))
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let placed = (checkpoints.iter())
        .map(|checkpoint| match &checkpoint.batch {
            Some(batch) => Ok((checkpoint, batch, crate::rows::stored_batch_path(batch)?)),
            None => Err(StoreError::Corrupt(
                "a batch checkpoint was signed without its place in the batch".into(),
            )),
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let rows: Vec<[SqlValue<'_>; 9]> = (placed.iter())
        .map(|(checkpoint, batch, path)| {
            [
                SqlValue::text(&checkpoint.body.tenant_id),
                SqlValue::int(checkpoint.body.seq as i64),
                SqlValue::text(&checkpoint.body.head_hash),
                SqlValue::text(&checkpoint.body.key_id),
                SqlValue::text(&checkpoint.body.signed_at),
                SqlValue::text(&checkpoint.signature),
                SqlValue::int(batch.index as i64),
                SqlValue::int(batch.size as i64),
                SqlValue::Bytes(path),
            ]
        })
        .collect();
    tx.execute_each(
        "INSERT INTO receipt_checkpoints (tenant_id, seq, head_hash, key_id, signed_at, signature,
                                          batch_index, batch_size, batch_path)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &rows,
    )
    .await?;
    Ok(checkpoints)
}

/// Every stored public key under the key id derived from it (a key stored under another id,
/// or one that does not decode, is left out, so the checkpoints it would sign fail).
pub async fn keyring(store: &dyn ReceiptStore) -> StoreResult<KeyRing> {
    Ok(store
        .signing_keys()
        .await?
        .into_iter()
        .filter_map(|record| {
            decode_public_key(&record.public_key)
                .filter(|key| key_id(key) == record.key_id)
                .map(|key| (record.key_id, key))
        })
        .collect())
}

/// Where an audit walk starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkStart {
    /// Receipt 1.
    Genesis,
    /// Receipt `seq`, linked to the stored receipt `seq - 1` (a range of the chain).
    Stored(u64),
    /// The receipt at `point.seq`, which must still be stored with the hash the caller
    /// trusts (an earlier walk, or the anchor file); it must still be covered by a valid
    /// checkpoint, and the walk goes on from it.
    Trusted(ChainPoint),
    /// The chain's last checkpoint: it must be validly signed and name the last receipt
    /// ([`verify_sealed_head`], the rule the writers apply before appending).
    LastCheckpoint,
}

/// A stretch of one chain to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWalk {
    pub from: WalkStart,
    /// Last seq to check (default and at most: the head). The walk then goes on to the
    /// first checkpoint at or after it, so that a signature covers what was checked.
    pub through: Option<u64>,
    /// Most receipts to check.
    pub max: u64,
}

impl ChainWalk {
    /// The whole chain, from receipt 1 to the head.
    pub fn whole() -> Self {
        ChainWalk {
            from: WalkStart::Genesis,
            through: None,
            max: u64::MAX,
        }
    }

    /// Only that the receipt at `anchor.seq` is still stored with `anchor.hash` and covered
    /// by a valid checkpoint.
    pub fn anchor(anchor: ChainPoint) -> Self {
        ChainWalk {
            through: Some(anchor.seq),
            from: WalkStart::Trusted(anchor),
            max: 0,
        }
    }

    /// Only that the head is named by the last checkpoint.
    pub fn head() -> Self {
        ChainWalk {
            from: WalkStart::LastCheckpoint,
            through: None,
            max: 0,
        }
    }
}

/// The result of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainAudit {
    /// Receipts checked from the start through `through`, up to and including a bad one.
    pub checked: u64,
    /// When the walk verified: the last receipt walked, a signed head.
    pub verified_through: Option<ChainPoint>,
    pub outcome: Result<(), ChainBreak>,
}

impl ChainAudit {
    fn broken(checked: u64, brk: ChainBreak) -> Self {
        ChainAudit {
            checked,
            verified_through: None,
            outcome: Err(brk),
        }
    }
}

/// A chain's last receipt and last checkpoint, read together, and the public key stored
/// under that checkpoint's key id.
#[derive(Debug, Default)]
pub(crate) struct ChainSeal {
    pub head: Option<ChainHead>,
    pub last_checkpoint: Option<Checkpoint>,
    pub public_key: Option<String>,
}

/// The reads a walk needs from one tenant's chain, all through `rows`, which holds one
/// snapshot (a read transaction) for every one of them: written once for both stores.
pub(crate) struct SnapshotReads<'a, R> {
    pub rows: &'a mut R,
    pub tenant: &'a str,
    /// The backend's spelling of the receipt reads.
    pub queries: &'static ReceiptQueries,
}

impl<R: ReadRows> SnapshotReads<'_, R> {
    async fn seal(&mut self) -> StoreResult<ChainSeal> {
        seal(self.rows, self.tenant).await
    }

    async fn receipt_at(&mut self, seq: u64) -> StoreResult<Option<Receipt>> {
        let params = [SqlValue::text(self.tenant), SqlValue::int(seq_param(seq))];
        self.rows
            .query_opt(&self.queries.at_seq, &params, crate::rows::receipt)
            .await
    }

    /// Receipts with `seq > after`, in order.
    async fn receipts(&mut self, after: u64, limit: u32) -> StoreResult<Vec<Receipt>> {
        let params = [
            SqlValue::text(self.tenant),
            SqlValue::int(seq_param(after)),
            SqlValue::int(i64::from(limit)),
        ];
        self.rows
            .query_rows(&self.queries.after_seq, &params, crate::rows::receipt)
            .await
    }

    /// Checkpoints with `from <= seq <= through`.
    async fn checkpoints(&mut self, from: u64, through: u64) -> StoreResult<Vec<Checkpoint>> {
        static BETWEEN: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM receipt_checkpoints
                 WHERE tenant_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
            )
        });
        let params = [
            SqlValue::text(self.tenant),
            SqlValue::int(seq_param(from)),
            SqlValue::int(seq_param(through)),
        ];
        self.rows
            .query_rows(&BETWEEN, &params, crate::rows::checkpoint)
            .await
    }

    /// The first checkpoint at or after `seq`.
    async fn covering_checkpoint(&mut self, seq: u64) -> StoreResult<Option<Checkpoint>> {
        let found = crate::receipts::checkpoints_from(self.rows, self.tenant, seq, 1).await?;
        Ok(found.into_iter().next())
    }

    /// The chain's cut, if it was archived ([`crate::archive`]).
    async fn cut(&mut self) -> StoreResult<Option<ChainCut>> {
        crate::evidence::cut_of(self.rows, self.tenant).await
    }
}

/// The chain's last receipt and last checkpoint with its key's stored public key, in one
/// statement (so one snapshot): what a writer checks before appending to a head it did not
/// write itself, and where an audit starts.
pub(crate) async fn seal(rows: &mut impl ReadRows, tenant_id: &str) -> StoreResult<ChainSeal> {
    rows.query_opt(
        &SEAL_SQL,
        &[SqlValue::text(tenant_id)],
        crate::rows::chain_seal,
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable("the seal query returned no row".into()))
}

/// A chain seq bound against the schema's signed column. No chain reaches `i64::MAX`, so a
/// larger bound means past every receipt (not, wrapped, before them all).
pub(crate) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Walks `walk` over the chain of `tenant` with [`ChainVerifier`], checkpoints fed page by
/// page. A walk that reaches the head also requires that no checkpoint names a receipt
/// beyond it (receipts deleted under their checkpoints).
pub(crate) async fn audit<R: ReadRows>(
    reads: &mut SnapshotReads<'_, R>,
    walk: &ChainWalk,
    keys: &KeyRing,
) -> StoreResult<ChainAudit> {
    let tenant = reads.tenant;
    let seal = reads.seal().await?;
    let head = seal.head.as_ref().map_or(0, |h| h.seq);
    let mut verifier = match ChainVerifier::new(tenant, [], keys) {
        Ok(verifier) => verifier,
        Err(brk) => return Ok(ChainAudit::broken(0, brk)),
    };
    // A pruned chain starts at its signed cut: what lies behind it is in an archive.
    let cut = match reads.cut().await? {
        Some(cut) if cut.verify(keys) => Some(cut.point()),
        Some(cut) => {
            let brk = ChainBreak {
                tenant_id: tenant.to_owned(),
                receipt_id: String::new(),
                seq: cut.body.pruned_through_seq,
                kind: BreakKind::BadCut {
                    seq: cut.body.pruned_through_seq,
                    key_id: cut.body.key_id,
                },
            };
            return Ok(ChainAudit::broken(0, brk));
        }
        None => None,
    };
    // A walk that would start at or behind the cut starts right after it instead; a trusted
    // point behind the cut was verified before it was archived, and one at the cut must be
    // the point the cut records.
    let start_seq = match &walk.from {
        WalkStart::Genesis => Some(0),
        WalkStart::Trusted(point) => Some(point.seq),
        WalkStart::Stored(from) => Some(from.saturating_sub(1)),
        WalkStart::LastCheckpoint => None,
    };
    if let (Some(cut), Some(start_seq)) = (&cut, start_seq)
        && start_seq <= cut.seq
    {
        if let WalkStart::Trusted(point) = &walk.from
            && point.seq == cut.seq
            && point.hash != cut.hash
        {
            let brk = ChainBreak {
                tenant_id: tenant.to_owned(),
                receipt_id: String::new(),
                seq: point.seq,
                kind: BreakKind::AnchorMismatch { seq: point.seq },
            };
            return Ok(ChainAudit::broken(0, brk));
        }
        verifier = verifier.anchored_at(cut.seq, cut.hash.clone());
    }
    // `first` is the first receipt counted as checked; a trusted anchor is pushed before it.
    let (first, mut anchor) = match (&walk.from, verifier.last()) {
        (_, Some(cut)) => (cut.seq + 1, None),
        (WalkStart::LastCheckpoint, None) => {
            let outcome = verify_sealed_head(
                tenant,
                seal.head.as_ref(),
                seal.last_checkpoint.as_ref(),
                keys,
            );
            return Ok(ChainAudit {
                checked: 0,
                verified_through: outcome.as_ref().ok().and(seal.head.map(|h| h.point())),
                outcome,
            });
        }
        (WalkStart::Genesis, None) => (1, None),
        (WalkStart::Trusted(point), None) if point.seq == 0 => (1, None),
        (WalkStart::Stored(from), None) => {
            let from = (*from).max(1);
            if from > walk.through.unwrap_or(head).min(head) {
                return Ok(ChainAudit {
                    checked: 0,
                    verified_through: None,
                    outcome: Ok(()),
                });
            }
            if from > 1 {
                let previous = reads
                    .receipt_at(from - 1)
                    .await?
                    .ok_or(StoreError::NotFound("receipt at from_seq - 1"))?;
                verifier = verifier.anchored_at(previous.body.seq, previous.hash);
            }
            (from, None)
        }
        (WalkStart::Trusted(point), None) => match reads.receipt_at(point.seq).await? {
            Some(anchored) if anchored.hash == point.hash => {
                verifier = verifier.anchored_at(point.seq - 1, anchored.body.prev_hash.clone());
                (point.seq + 1, Some(anchored))
            }
            found => {
                let brk = ChainBreak {
                    tenant_id: tenant.to_owned(),
                    receipt_id: found.map(|r| r.body.id).unwrap_or_default(),
                    seq: point.seq,
                    kind: BreakKind::AnchorMismatch { seq: point.seq },
                };
                return Ok(ChainAudit::broken(0, brk));
            }
        },
    };
    let last = walk
        .through
        .unwrap_or(head)
        .min(head)
        .min(first.saturating_add(walk.max).saturating_sub(1));
    let mut checked = 0;
    let mut next = anchor.as_ref().map_or(first, |r| r.body.seq);
    let mut end = last;
    loop {
        while next <= end {
            let page = match anchor.take() {
                Some(anchored) => vec![anchored],
                None => {
                    let limit = (end - next + 1).min(u64::from(PAGE)) as u32;
                    reads.receipts(next - 1, limit).await?
                }
            };
            let (Some(page_first), Some(page_last)) = (page.first(), page.last()) else {
                break;
            };
            let checkpoints = reads
                .checkpoints(page_first.body.seq, page_last.body.seq)
                .await?;
            if let Err(brk) = verifier.add_checkpoints(&checkpoints) {
                return Ok(ChainAudit::broken(checked, brk));
            }
            for receipt in &page {
                if (first..=last).contains(&receipt.body.seq) {
                    checked += 1;
                }
                if let Err(brk) = verifier.push(receipt) {
                    return Ok(ChainAudit::broken(checked, brk));
                }
            }
            next = page_last.body.seq + 1;
        }
        if verifier.at_signed_head() || next <= end {
            break;
        }
        // The stretch ends between two checkpoints: walk on to the one covering it.
        match reads.covering_checkpoint(next).await? {
            Some(checkpoint) if checkpoint.body.seq <= head => end = checkpoint.body.seq,
            _ => break,
        }
    }
    let verified_through = verifier.last();
    if let Err(brk) = verifier.finish() {
        return Ok(ChainAudit::broken(checked, brk));
    }
    if next > head
        && let Some(beyond) = seal.last_checkpoint.filter(|c| c.body.seq > head)
    {
        let brk = ChainBreak {
            tenant_id: tenant.to_owned(),
            receipt_id: String::new(),
            seq: beyond.body.seq,
            kind: BreakKind::CheckpointMismatch {
                seq: beyond.body.seq,
            },
        };
        return Ok(ChainAudit::broken(checked, brk));
    }
    Ok(ChainAudit {
        checked,
        verified_through,
        outcome: Ok(()),
    })
}

/// What the writers may append to, shared by a store and its writer.
///
/// A writer appends to a chain head only if it wrote that head itself in this process (the
/// SQLite writer's cached heads) or the head is named by the chain's last checkpoint with a
/// valid signature ([`verify_sealed_head`], checked whenever a head is read from the
/// database: on SQLite the first time a chain is used, on PostgreSQL in every batch). It
/// never signs over anything else, so a chain changed behind its back stays broken instead
/// of being signed over. Chains found broken at start-up ([`ChainGuard::close`]) take no
/// receipt at all until the next start.
#[derive(Debug, Default)]
pub(crate) struct ChainGuard {
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    closed: HashSet<String>,
    /// Per tenant, the last checkpoint known valid (signed or verified by this process), so
    /// that a head named by it needs no signature check.
    known: HashMap<String, Checkpoint>,
    /// Per tenant, the last checkpoint this process signed.
    signed: HashMap<String, Checkpoint>,
}

impl ChainGuard {
    pub fn close(&self, tenant_id: &str) {
        self.state.lock().closed.insert(tenant_id.to_owned());
    }

    /// The head a writer may append to, given the chain as stored; `ChainBroken` if there
    /// is none.
    pub fn admit(&self, tenant_id: &str, seal: ChainSeal) -> StoreResult<ChainPoint> {
        let mut state = self.state.lock();
        if state.closed.contains(tenant_id) {
            return Err(StoreError::ChainBroken(format!(
                "the receipt chain of tenant {tenant_id} was found broken at start"
            )));
        }
        let empty = ChainPoint {
            seq: 0,
            hash: String::new(),
        };
        let (head, checkpoint) = (seal.head.as_ref(), seal.last_checkpoint.as_ref());
        if let (Some(head), Some(checkpoint)) = (head, checkpoint)
            && state.known.get(tenant_id) == Some(checkpoint)
            && (head.seq, &head.hash) == (checkpoint.body.seq, &checkpoint.body.head_hash)
        {
            return Ok(head.point());
        }
        let keys: KeyRing = checkpoint
            .zip(seal.public_key.as_deref().and_then(decode_public_key))
            .filter(|(checkpoint, key)| key_id(key) == checkpoint.body.key_id)
            .map(|(checkpoint, key)| (checkpoint.body.key_id.clone(), key))
            .into_iter()
            .collect();
        if let Err(brk) = verify_sealed_head(tenant_id, head, checkpoint, &keys) {
            return Err(StoreError::ChainBroken(brk.to_string()));
        }
        if let Some(checkpoint) = seal.last_checkpoint {
            state.known.insert(tenant_id.to_owned(), checkpoint);
        }
        Ok(seal.head.map_or(empty, |h| h.point()))
    }

    /// Records the checkpoints a batch signed, once it committed.
    pub fn signed(&self, checkpoints: Vec<Checkpoint>) {
        let mut state = self.state.lock();
        for checkpoint in checkpoints {
            let tenant_id = checkpoint.body.tenant_id.clone();
            state.known.insert(tenant_id.clone(), checkpoint.clone());
            state.signed.insert(tenant_id, checkpoint);
        }
    }

    /// The last checkpoint this process signed, per chain.
    pub fn signed_heads(&self) -> Vec<Checkpoint> {
        self.state.lock().signed.values().cloned().collect()
    }
}
