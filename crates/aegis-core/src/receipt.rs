//! Receipts: the tamper-evident record of every decision (docs/receipts.md).
//!
//! The one receipt body schema is [`ReceiptBody`] and is written down in `docs/receipts.md`.
//! Each tenant has one chain: receipt `seq = n` carries `prev_hash` = hash of receipt `n - 1`
//! (`""` for the first), and `hash = hex(SHA-256(JCS(body)))`. Receipts are not signed one
//! by one: the writer makes a [`Checkpoint`] over the head of every chain a commit batch
//! extended, in the same transaction that commits the receipts, and signs them all at once
//! (one signature over the Merkle root of the batch's checkpoints,
//! [`ReceiptSigner::checkpoints`]). So every committed receipt is covered by a signature over
//! a chain head at or after it, at a cost per batch that does not grow with the number of
//! chains it moved.

use crate::canonical::{
    CanonicalError, MAX_EXACT_INTEGER, canonical_in_key_order, canonical_json, sha256_hex,
};
use crate::merkle::{self, MerkleTree};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

/// Version of the receipt and checkpoint body schema.
pub const RECEIPT_SCHEMA_VERSION: u32 = 1;

/// The hashed content of a receipt. Field names and meaning are fixed by schema version `v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    pub v: u32,
    pub id: String,
    pub tenant_id: String,
    /// Position in the tenant's chain, starting at 1, without gaps.
    pub seq: u64,
    /// The decision this receipt records.
    pub decision_id: String,
    pub agent_id: String,
    pub tool: String,
    pub action: String,
    /// `allow` | `deny` | `require_approval`.
    pub decision: String,
    pub risk_score: u8,
    pub matched_policies: Vec<String>,
    pub action_hash: String,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// Hash of receipt `seq - 1`, or `""` for the first receipt of a chain.
    pub prev_hash: String,
    /// The approval an allow consumed, with the operator keys that approved it; absent
    /// from every other receipt (so receipts written before approvals hash as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ReceiptApproval>,
    /// For a call made over MCP, the hash of the tool's pinned definition (RFC 8785, SHA-256)
    /// the call was decided against; absent from every other receipt, as `approval` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_definition_hash: Option<String>,
}

/// The approval named by the receipt of the allow that consumed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptApproval {
    pub id: String,
    /// Ids of the operator keys that approved, in the order they did.
    pub approved_by: Vec<String>,
}

impl ReceiptBody {
    /// `JCS(body)`, the text [`ReceiptBody::hash`] covers.
    ///
    /// Written straight from the fields in JCS key order: every receipt is sealed by the
    /// single writer and re-hashed by every audit, and this costs a fraction of the generic
    /// path. The property test `canonical_form_is_jcs` holds the two to one text.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        if self.seq > MAX_EXACT_INTEGER {
            return canonical_json(self);
        }
        let mut text = Vec::with_capacity(PRINTED_CAPACITY);
        self.print_to_prev_hash(&mut text)?;
        print_position(&mut text, &self.prev_hash, self.risk_score, self.seq)?;
        self.print_rest(&mut text)?;
        into_text(text)
    }

    /// `hex(SHA-256(JCS(body)))`.
    pub fn hash(&self) -> Result<String, CanonicalError> {
        Ok(sha256_hex(self.canonical()?.as_bytes()))
    }

    /// The body's JCS text without its chain position (`prev_hash` and `seq`, which are
    /// ignored here), in the pieces around it: what can be printed before the writer, which
    /// alone learns the position, seals the receipt ([`PrintedReceipt::hash_at`]).
    pub fn printed(&self) -> Result<PrintedReceipt, CanonicalError> {
        let mut to_prev_hash = Vec::with_capacity(PRINTED_CAPACITY);
        self.print_to_prev_hash(&mut to_prev_hash)?;
        let mut rest = Vec::new();
        self.print_rest(&mut rest)?;
        Ok(PrintedReceipt {
            to_prev_hash,
            risk_score: self.risk_score,
            rest,
        })
    }

    /// `{"action":…,"matched_policies":[…],"prev_hash":`, the fields that come before the
    /// chain position in JCS key order.
    fn print_to_prev_hash(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        let approval = self.approval.as_ref().map(|approval| CanonicalApproval {
            approved_by: &approval.approved_by,
            id: &approval.id,
        });
        serde_json::to_writer(
            &mut *out,
            &CanonicalReceiptHead {
                action: &self.action,
                action_hash: &self.action_hash,
                agent_id: &self.agent_id,
                approval,
                created_at: &self.created_at,
                decision: &self.decision,
                decision_id: &self.decision_id,
                id: &self.id,
                matched_policies: &self.matched_policies,
            },
        )?;
        // The head object's closing brace gives way to the fields after it.
        out.pop();
        out.extend_from_slice(br#","prev_hash":"#);
        Ok(())
    }

    /// `,"tenant_id":…,"v":N}`, the fields after the chain position.
    fn print_rest(&self, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
        let start = out.len();
        serde_json::to_writer(
            &mut *out,
            &CanonicalReceiptTail {
                tenant_id: &self.tenant_id,
                tool: &self.tool,
                tool_definition_hash: self.tool_definition_hash.as_deref(),
                v: self.v,
            },
        )?;
        // The tail object's opening brace continues the body instead.
        out[start] = b',';
        Ok(())
    }
}

/// Room for a typical receipt's text, so that printing it seldom grows the buffer.
const PRINTED_CAPACITY: usize = 768;

/// `"<prev_hash>","risk_score":N,"seq":S`: the chain position, with `risk_score`, whose key
/// falls between its two fields in JCS order.
fn print_position(
    out: &mut Vec<u8>,
    prev_hash: &str,
    risk_score: u8,
    seq: u64,
) -> Result<(), CanonicalError> {
    if seq > MAX_EXACT_INTEGER {
        return Err(CanonicalError(format!(
            "chain position {seq} is past the integers JCS prints as digits"
        )));
    }
    serde_json::to_writer(&mut *out, prev_hash)?;
    write!(out, r#","risk_score":{risk_score},"seq":{seq}"#)
        .map_err(|e| CanonicalError(e.to_string()))
}

/// The printed bytes as text: serde_json writes UTF-8, and so do the pieces around it.
fn into_text(bytes: Vec<u8>) -> Result<String, CanonicalError> {
    String::from_utf8(bytes).map_err(|e| CanonicalError(e.to_string()))
}

/// A receipt body's JCS text around its chain position ([`ReceiptBody::printed`]). Its keys
/// in JCS order are `action` … `matched_policies`, `prev_hash`, `risk_score`, `seq`,
/// `tenant_id` … `v`, so the position splits the text in two.
#[derive(Debug)]
pub struct PrintedReceipt {
    /// `{"action":…,"matched_policies":[…],"prev_hash":`
    to_prev_hash: Vec<u8>,
    risk_score: u8,
    /// `,"tenant_id":…,"v":N}`
    rest: Vec<u8>,
}

impl PrintedReceipt {
    /// `JCS(body)` of the body at chain position `seq`, after the receipt hashed `prev_hash`,
    /// as bytes: the writer hashes them and never needs them as text. A `seq` past 2^53,
    /// which JCS prints as a double, is an error here ([`ReceiptBody::canonical`] prints
    /// such a body generically).
    fn text_at(&self, seq: u64, prev_hash: &str) -> Result<Vec<u8>, CanonicalError> {
        let mut text = Vec::with_capacity(self.to_prev_hash.len() + 128 + self.rest.len());
        text.extend_from_slice(&self.to_prev_hash);
        print_position(&mut text, prev_hash, self.risk_score, seq)?;
        text.extend_from_slice(&self.rest);
        Ok(text)
    }

    /// `hex(SHA-256(JCS(body)))` of the body at chain position `seq` after `prev_hash`.
    pub fn hash_at(&self, seq: u64, prev_hash: &str) -> Result<String, CanonicalError> {
        Ok(sha256_hex(&self.text_at(seq, prev_hash)?))
    }
}

/// [`ReceiptBody`]'s fields before its chain position, declared in JCS key order (UTF-16
/// code units; the keys are ASCII, so byte order), so that serde_json writes them
/// canonically.
#[derive(Serialize)]
struct CanonicalReceiptHead<'a> {
    action: &'a str,
    action_hash: &'a str,
    agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<CanonicalApproval<'a>>,
    created_at: &'a str,
    decision: &'a str,
    decision_id: &'a str,
    id: &'a str,
    matched_policies: &'a [String],
}

/// [`ReceiptBody`]'s fields after its chain position, in JCS key order.
#[derive(Serialize)]
struct CanonicalReceiptTail<'a> {
    tenant_id: &'a str,
    tool: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_definition_hash: Option<&'a str>,
    v: u32,
}

/// [`ReceiptApproval`] in JCS key order.
#[derive(Serialize)]
struct CanonicalApproval<'a> {
    approved_by: &'a [String],
    id: &'a str,
}

/// A receipt as stored and exported: its body and the body's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    #[serde(flatten)]
    pub body: ReceiptBody,
    pub hash: String,
}

impl Receipt {
    /// Where this receipt stands in its chain.
    pub fn point(&self) -> ChainPoint {
        ChainPoint {
            seq: self.body.seq,
            hash: self.hash.clone(),
        }
    }
}

/// A position in a chain: receipt `seq` and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub hash: String,
}

/// The last receipt of a stored chain, as a writer or an audit reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub receipt_id: String,
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn point(&self) -> ChainPoint {
        ChainPoint {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// The signed content of a checkpoint: "the chain of `tenant_id` has head `head_hash` at `seq`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    pub v: u32,
    pub tenant_id: String,
    pub seq: u64,
    pub head_hash: String,
    pub key_id: String,
    pub signed_at: String,
}

impl CheckpointBody {
    /// `JCS(body)`: a checkpoint's Merkle leaf, and for a checkpoint signed alone the text
    /// its signature covers. Written straight from the fields, as [`ReceiptBody::canonical`]
    /// is and for its reasons: the writer prints one for every chain a batch moves, and every
    /// audit prints each again. The property test `checkpoint_forms_are_jcs` holds the two
    /// to one text.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        let in_key_order = CanonicalCheckpoint {
            head_hash: &self.head_hash,
            key_id: &self.key_id,
            seq: self.seq,
            signed_at: &self.signed_at,
            tenant_id: &self.tenant_id,
            v: self.v,
        };
        canonical_in_key_order(self, in_key_order, self.seq)
    }
}

/// [`CheckpointBody`]'s fields in JCS key order.
#[derive(Serialize)]
struct CanonicalCheckpoint<'a> {
    head_hash: &'a str,
    key_id: &'a str,
    seq: u64,
    signed_at: &'a str,
    tenant_id: &'a str,
    v: u32,
}

/// A checkpoint with its Ed25519 signature (hex). The signature is over the statement of
/// the batch the checkpoint was signed in (`CheckpointBatchBody`), whose Merkle root `batch`
/// proves the checkpoint part of; a checkpoint without `batch` (written before
/// batches were signed as one) is signed over `JCS(body)` itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub body: CheckpointBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<CheckpointBatch>,
    pub signature: String,
}

/// Where a checkpoint stands in the batch one signature covers: leaf `index` of the Merkle
/// tree ([`crate::merkle`]) over the leaves `JCS(body)` of the batch's `size` checkpoints,
/// and the sibling hashes from that leaf to the root. The path names no other checkpoint:
/// a tenant's evidence carries it without revealing another tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBatch {
    pub index: u64,
    pub size: u64,
    /// Hex SHA-256 hashes, leaf side first.
    pub path: Vec<String>,
}

/// What a batch signature signs: "the `checkpoints` checkpoints signed at `signed_at` with
/// key `key_id` have the Merkle root `checkpoints_root`". Its field names differ from a
/// checkpoint's and a chain cut's, so no signature can pass for another kind's. Its fields
/// are declared in JCS key order, so that serde_json prints it canonically.
#[derive(Serialize)]
struct CheckpointBatchBody<'a> {
    checkpoints: u64,
    checkpoints_root: String,
    key_id: &'a str,
    signed_at: &'a str,
    v: u32,
}

impl<'a> CheckpointBatchBody<'a> {
    /// The statement over a batch's `root`, for the `size` checkpoints of `body`'s version,
    /// key and time.
    fn new(body: &'a CheckpointBody, root: merkle::Hash, size: u64) -> Self {
        CheckpointBatchBody {
            checkpoints: size,
            checkpoints_root: hex::encode(root),
            key_id: &body.key_id,
            signed_at: &body.signed_at,
            v: body.v,
        }
    }

    /// `JCS(statement)`, the text a batch signature signs.
    fn canonical(&self) -> Result<String, CanonicalError> {
        canonical_in_key_order(self, self, self.checkpoints)
    }
}

impl Checkpoint {
    /// The head this checkpoint names.
    pub fn head(&self) -> ChainPoint {
        ChainPoint {
            seq: self.body.seq,
            hash: self.body.head_hash.clone(),
        }
    }

    /// The text the signature must sign; `None` when the checkpoint cannot be read (a path
    /// that is not hex hashes, or that belongs to no leaf at `index` of `size`).
    fn signed_text(&self) -> Option<String> {
        let body = self.body.canonical().ok()?;
        let Some(batch) = &self.batch else {
            return Some(body);
        };
        let path = batch
            .path
            .iter()
            .map(|node| hex::decode(node).ok()?.try_into().ok())
            .collect::<Option<Vec<merkle::Hash>>>()?;
        let leaf = merkle::leaf_hash(body.as_bytes());
        let root = merkle::root_from_inclusion_path(leaf, batch.index, batch.size, &path)?;
        CheckpointBatchBody::new(&self.body, root, batch.size)
            .canonical()
            .ok()
    }
}

/// Derives the key id from a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_owned()
}

/// The gateway's signing identity.
pub struct ReceiptSigner {
    key: SigningKey,
    key_id: String,
}

impl ReceiptSigner {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        ReceiptSigner { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs a checkpoint over each of `heads` (a tenant and its chain's head), all with one
    /// signature over the Merkle root of their bodies; each checkpoint carries its path to
    /// that root. The checkpoints come back in the order of `heads`.
    pub fn checkpoints<'h>(
        &self,
        heads: impl IntoIterator<Item = (&'h str, &'h ChainPoint)>,
        signed_at: &str,
    ) -> Result<Vec<Checkpoint>, CanonicalError> {
        let bodies: Vec<CheckpointBody> = heads
            .into_iter()
            .map(|(tenant_id, head)| CheckpointBody {
                v: RECEIPT_SCHEMA_VERSION,
                tenant_id: tenant_id.to_owned(),
                seq: head.seq,
                head_hash: head.hash.clone(),
                key_id: self.key_id.clone(),
                signed_at: signed_at.to_owned(),
            })
            .collect();
        let leaves = bodies
            .iter()
            .map(|body| Ok(merkle::leaf_hash(body.canonical()?.as_bytes())))
            .collect::<Result<Vec<_>, CanonicalError>>()?;
        let Some((tree, first)) = MerkleTree::new(leaves).zip(bodies.first()) else {
            return Ok(Vec::new());
        };
        let size = tree.size() as u64;
        // Every body has the version, key and time the statement names.
        let statement = CheckpointBatchBody::new(first, tree.root(), size).canonical()?;
        let signature = hex::encode(self.key.sign(statement.as_bytes()).to_bytes());
        Ok(bodies
            .into_iter()
            .enumerate()
            .map(|(index, body)| Checkpoint {
                body,
                batch: Some(CheckpointBatch {
                    index: index as u64,
                    size,
                    path: tree
                        .inclusion_path(index)
                        .unwrap_or_default()
                        .iter()
                        .map(hex::encode)
                        .collect(),
                }),
                signature: signature.clone(),
            })
            .collect())
    }
}

/// The signed content of a chain cut: "the receipts of `tenant_id` through
/// `pruned_through_seq`, the last with hash `pruned_through_hash`, were archived and may be
/// missing from the database" (`aegis archive`, docs/receipts.md, *Archiving*). Its field
/// names differ from a checkpoint's, so neither signature can pass for the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCutBody {
    pub v: u32,
    pub tenant_id: String,
    pub pruned_through_seq: u64,
    pub pruned_through_hash: String,
    pub key_id: String,
    pub cut_at: String,
}

/// A chain cut with its Ed25519 signature (hex) over `JCS(body)`: where a pruned chain's
/// verification starts instead of genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCut {
    #[serde(flatten)]
    pub body: ChainCutBody,
    pub signature: String,
}

impl ChainCut {
    /// The last archived receipt, where the live chain goes on.
    pub fn point(&self) -> ChainPoint {
        ChainPoint {
            seq: self.body.pruned_through_seq,
            hash: self.body.pruned_through_hash.clone(),
        }
    }

    /// Whether the signature is valid under a key of `keys` (the key id names it).
    pub fn verify(&self, keys: &KeyRing) -> bool {
        keys.signed(
            &self.body.key_id,
            &self.signature,
            canonical_json(&self.body).ok(),
        )
        .is_some_and(|signed| keys.verify(&signed))
    }
}

impl ReceiptSigner {
    /// Signs a cut after the receipts through `through` were archived.
    pub fn cut(
        &self,
        tenant_id: &str,
        through: &ChainPoint,
        cut_at: String,
    ) -> Result<ChainCut, CanonicalError> {
        let body = ChainCutBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: tenant_id.to_owned(),
            pruned_through_seq: through.seq,
            pruned_through_hash: through.hash.clone(),
            key_id: self.key_id.clone(),
            cut_at,
        };
        let signature = self.key.sign(canonical_json(&body)?.as_bytes());
        Ok(ChainCut {
            body,
            signature: hex::encode(signature.to_bytes()),
        })
    }
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a chain failed to verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakKind {
    #[error("hash does not match the receipt body")]
    Hash,
    #[error("prev_hash does not match the previous receipt's hash")]
    Link,
    #[error("seq {found} follows seq {previous}: gap or reordering")]
    Gap { previous: u64, found: u64 },
    #[error("no valid signed checkpoint covers this receipt")]
    Unsigned,
    #[error("checkpoint at seq {seq} has a bad signature or unknown key {key_id}")]
    BadCheckpoint { seq: u64, key_id: String },
    #[error("checkpoint at seq {seq} names a head hash the chain does not have")]
    CheckpointMismatch { seq: u64 },
    #[error("receipt belongs to tenant {found}, not {expected}")]
    WrongTenant { expected: String, found: String },
    #[error(
        "the receipt at seq {seq} is missing or differs from the head this gateway recorded outside the database (anchor)"
    )]
    AnchorMismatch { seq: u64 },
    #[error("the chain cut at seq {seq} has a bad signature or unknown key {key_id}")]
    BadCut { seq: u64, key_id: String },
}

/// The first bad receipt of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt {receipt_id} (tenant {tenant_id}, seq {seq}): {kind}")]
pub struct ChainBreak {
    pub tenant_id: String,
    pub receipt_id: String,
    pub seq: u64,
    pub kind: BreakKind,
}

/// Checks a checkpoint's signature against the known public keys.
pub fn verify_checkpoint(checkpoint: &Checkpoint, keys: &KeyRing) -> bool {
    keys.signed(
        &checkpoint.body.key_id,
        &checkpoint.signature,
        checkpoint.signed_text(),
    )
    .is_some_and(|signed| keys.verify(&signed))
}

/// The first of `checkpoints` whose signature [`verify_checkpoint`] rejects, if any.
///
/// The signatures are checked as one Ed25519 batch, which costs about half as much per
/// signature as checking them one by one, and a signature the key ring has seen verify (the
/// one signature of a commit batch, shared by the checkpoints of every chain it moved) is not
/// checked again. Only a batch that fails is checked one by one, to name the first bad
/// checkpoint, so the answer is the same as checking each. (A batch accepts only signatures
/// that single checks accept, except ones built with the signing key itself to differ between
/// the two, which gives whoever holds the key nothing they could not sign outright.)
fn first_badly_signed<'c>(
    checkpoints: &[&'c Checkpoint],
    keys: &KeyRing,
) -> Option<&'c Checkpoint> {
    let one_by_one = || {
        checkpoints
            .iter()
            .find(|checkpoint| !verify_checkpoint(checkpoint, keys))
            .copied()
    };
    let signed: Option<Vec<SignedText>> = checkpoints
        .iter()
        .map(|checkpoint| {
            keys.signed(
                &checkpoint.body.key_id,
                &checkpoint.signature,
                checkpoint.signed_text(),
            )
        })
        .collect();
    match signed {
        Some(signed) if keys.verify_all(&signed) => None,
        _ => one_by_one(),
    }
}

/// A text, the decoded signature over it and the key it must verify under.
struct SignedText<'k> {
    key: &'k VerifyingKey,
    signature: Signature,
    text: String,
}

impl SignedText<'_> {
    /// What [`KeyRing`] remembers of a signature that verified.
    fn digest(&self) -> merkle::Hash {
        Sha256::new()
            .chain_update(self.key.as_bytes())
            .chain_update(self.signature.to_bytes())
            .chain_update(self.text.as_bytes())
            .finalize()
            .into()
    }
}

/// Incremental verifier of one tenant's chain: feed receipts in `seq` order from the start
/// (or from an anchor, [`ChainVerifier::anchored_at`]) and the checkpoints of the stretch
/// walked (all at once to [`ChainVerifier::new`], or page by page with
/// [`ChainVerifier::add_checkpoints`] before the receipts they name); then
/// [`ChainVerifier::finish`] checks that the walk ended on a head named by a verified
/// checkpoint, whose signature then covers every receipt walked through the hash links.
/// A checkpoint beyond the last receipt walked proves nothing about the receipts before it.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    tenant_id: String,
    keys: &'k KeyRing,
    /// Verified checkpoints not yet reached, by seq: the receipt at that seq must have that
    /// hash.
    checkpoints: HashMap<u64, String>,
    last: Option<(u64, String)>,
    /// Whether `last` is a signed head: a verified checkpoint named it, or it is the anchor.
    last_signed: bool,
    last_receipt_id: Option<String>,
    count: u64,
}

impl<'k> ChainVerifier<'k> {
    /// Starts a verifier. Checkpoints of other tenants are ignored; a checkpoint with a bad
    /// signature is an error, because nothing a forger wrote should be silently skipped.
    pub fn new<'c>(
        tenant_id: &str,
        checkpoints: impl IntoIterator<Item = &'c Checkpoint>,
        keys: &'k KeyRing,
    ) -> Result<Self, ChainBreak> {
        let mut verifier = ChainVerifier {
            tenant_id: tenant_id.to_owned(),
            keys,
            checkpoints: HashMap::new(),
            last: None,
            last_signed: false,
            last_receipt_id: None,
            count: 0,
        };
        verifier.add_checkpoints(checkpoints)?;
        Ok(verifier)
    }

    /// Adds checkpoints of the chain (others' are ignored), each checked against the keys.
    pub fn add_checkpoints<'c>(
        &mut self,
        checkpoints: impl IntoIterator<Item = &'c Checkpoint>,
    ) -> Result<(), ChainBreak> {
        let own: Vec<&Checkpoint> = checkpoints
            .into_iter()
            .filter(|checkpoint| checkpoint.body.tenant_id == self.tenant_id)
            .collect();
        if let Some(bad) = first_badly_signed(&own, self.keys) {
            return Err(ChainBreak {
                tenant_id: self.tenant_id.clone(),
                receipt_id: String::new(),
                seq: bad.body.seq,
                kind: BreakKind::BadCheckpoint {
                    seq: bad.body.seq,
                    key_id: bad.body.key_id.clone(),
                },
            });
        }
        for checkpoint in own {
            self.checkpoints
                .insert(checkpoint.body.seq, checkpoint.body.head_hash.clone());
        }
        Ok(())
    }

    /// Continues a chain from a receipt the caller already holds proven (an earlier walk, a
    /// range's stored predecessor): the next receipt must be `seq + 1` and link to `hash`.
    pub fn anchored_at(mut self, seq: u64, hash: String) -> Self {
        self.last = Some((seq, hash));
        self.last_signed = true;
        self
    }

    /// The last receipt accepted, once the walk has one.
    pub fn last(&self) -> Option<ChainPoint> {
        self.last.as_ref().map(|(seq, hash)| ChainPoint {
            seq: *seq,
            hash: hash.clone(),
        })
    }

    /// Whether the last receipt accepted is a head named by a verified checkpoint (or the
    /// anchor).
    pub fn at_signed_head(&self) -> bool {
        self.last_signed
    }

    /// Checks the next receipt: its hash, its link to the previous one and its place in `seq`.
    pub fn push(&mut self, receipt: &Receipt) -> Result<(), ChainBreak> {
        let body = &receipt.body;
        let fail = |kind| ChainBreak {
            tenant_id: self.tenant_id.clone(),
            receipt_id: body.id.clone(),
            seq: body.seq,
            kind,
        };
        if body.tenant_id != self.tenant_id {
            return Err(fail(BreakKind::WrongTenant {
                expected: self.tenant_id.clone(),
                found: body.tenant_id.clone(),
            }));
        }
        let (expected_seq, expected_prev) = match &self.last {
            Some((seq, hash)) => (seq + 1, hash.as_str()),
            None => (1, ""),
        };
        if body.seq != expected_seq {
            return Err(fail(BreakKind::Gap {
                previous: expected_seq - 1,
                found: body.seq,
            }));
        }
        match body.hash() {
            Ok(hash) if hash == receipt.hash => {}
            _ => return Err(fail(BreakKind::Hash)),
        }
        if body.prev_hash != expected_prev {
            return Err(fail(BreakKind::Link));
        }
        let signed = match self.checkpoints.remove(&body.seq) {
            Some(head) if head != receipt.hash => {
                return Err(fail(BreakKind::CheckpointMismatch { seq: body.seq }));
            }
            Some(_) => true,
            None => false,
        };
        self.last = Some((body.seq, receipt.hash.clone()));
        self.last_signed = signed;
        self.last_receipt_id = Some(body.id.clone());
        self.count += 1;
        Ok(())
    }

    /// Ends the walk: it must end on a signed head, so that a checkpoint covers every
    /// receipt pushed. Returns the number of receipts checked.
    pub fn finish(self) -> Result<u64, ChainBreak> {
        if let Some((seq, _)) = &self.last
            && !self.last_signed
        {
            return Err(ChainBreak {
                tenant_id: self.tenant_id,
                receipt_id: self.last_receipt_id.unwrap_or_default(),
                seq: *seq,
                kind: BreakKind::Unsigned,
            });
        }
        Ok(self.count)
    }
}

/// Whether a writer may append to a stored chain: its last receipt (`head`) must be the
/// head named by its last checkpoint, and that checkpoint must be signed by one of `keys`.
/// The gateway commits every receipt together with a checkpoint over its chain's new head,
/// so anything else means the database was changed behind the gateway's back: receipts past
/// the last checkpoint, a chain without checkpoints, a checkpoint beyond the receipts, or a
/// forged checkpoint. Signing over such a head would launder the change, so it is a break.
/// An empty chain without checkpoints is sound.
pub fn verify_sealed_head(
    tenant_id: &str,
    head: Option<&ChainHead>,
    last_checkpoint: Option<&Checkpoint>,
    keys: &KeyRing,
) -> Result<(), ChainBreak> {
    let fail = |receipt_id: &str, seq: u64, kind| ChainBreak {
        tenant_id: tenant_id.to_owned(),
        receipt_id: receipt_id.to_owned(),
        seq,
        kind,
    };
    let checkpoint = match (head, last_checkpoint) {
        (None, None) => return Ok(()),
        (Some(head), None) => return Err(fail(&head.receipt_id, head.seq, BreakKind::Unsigned)),
        (_, Some(checkpoint)) => checkpoint,
    };
    let cp = &checkpoint.body;
    if cp.tenant_id != tenant_id || !verify_checkpoint(checkpoint, keys) {
        return Err(fail(
            "",
            cp.seq,
            BreakKind::BadCheckpoint {
                seq: cp.seq,
                key_id: cp.key_id.clone(),
            },
        ));
    }
    match head {
        Some(head) if head.seq > cp.seq => {
            Err(fail(&head.receipt_id, head.seq, BreakKind::Unsigned))
        }
        Some(head) if head.seq == cp.seq && head.hash == cp.head_hash => Ok(()),
        _ => Err(fail(
            head.map_or("", |h| &h.receipt_id),
            cp.seq,
            BreakKind::CheckpointMismatch { seq: cp.seq },
        )),
    }
}

/// One line of `aegis receipts export` (and of an incident's evidence bundle): a receipt, the
/// signed checkpoint that covers it and the hex public key of that checkpoint's key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedReceipt {
    #[serde(flatten)]
    pub receipt: Receipt,
    pub checkpoint: Checkpoint,
    pub public_key: String,
}

/// The first line of a segment file: an archive written by `aegis archive`, or an export of
/// a chain that was archived. Without it a file holds chains from seq 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    /// Format version, `1`; the key by which a header line is recognised.
    pub aegis_segment: u32,
    pub chains: Vec<SegmentChain>,
    /// Hex public keys by key id: those of the checkpoints in the file and of the cuts in
    /// this header.
    pub public_keys: std::collections::BTreeMap<String, String>,
}

/// One chain of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentChain {
    pub tenant_id: String,
    /// The signed cut the segment's first receipt follows; absent when it starts at seq 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_after: Option<ChainCut>,
    /// The segment's last receipt (an archive names it, so that a file cut short fails);
    /// absent in an export of a live chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<ChainPoint>,
}

/// Public keys by key id, as [`ChainVerifier`] takes them, with the signatures seen to
/// verify under them. One commit batch signs the checkpoints of every chain it moved with
/// one signature, so a pass over many chains (the integrity check, `aegis receipts verify`)
/// meets each signature once per chain; it is checked once per key ring. A clone shares
/// what the ring remembers: a store that hands each chain's audit a clone (to a thread of
/// its own) must not make every chain check the batch signatures again.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: HashMap<String, VerifyingKey>,
    /// Digests of the (key, signature, text) triples that verified ([`SignedText::digest`]),
    /// at most [`KeyRing::REMEMBERED`]: a full set is emptied, a miss costs one check. A
    /// digest names its key, so a clone given other keys can share them too.
    verified: Arc<Mutex<HashSet<merkle::Hash>>>,
}

impl KeyRing {
    /// Signatures remembered: 2 MiB of digests.
    const REMEMBERED: usize = 1 << 16;

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    pub fn insert(&mut self, key_id: String, key: VerifyingKey) {
        self.keys.insert(key_id, key);
    }

    pub fn contains_key(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `signature` (hex) over `text` by the key `key_id`; `None` when the key is unknown or
    /// the signature or the text cannot be read.
    fn signed(
        &self,
        key_id: &str,
        signature: &str,
        text: Option<String>,
    ) -> Option<SignedText<'_>> {
        let key = self.keys.get(key_id)?;
        let signature = Signature::from_slice(&hex::decode(signature).ok()?).ok()?;
        Some(SignedText {
            key,
            signature,
            text: text?,
        })
    }

    fn verify(&self, signed: &SignedText) -> bool {
        let digest = signed.digest();
        if self.verified().contains(&digest) {
            return true;
        }
        let valid = signed
            .key
            .verify(signed.text.as_bytes(), &signed.signature)
            .is_ok();
        if valid {
            self.remember([digest]);
        }
        valid
    }

    /// Whether every signature verifies, checking those not seen before as one batch.
    fn verify_all(&self, signed: &[SignedText]) -> bool {
        let mut unseen = Vec::new();
        let mut digests = HashSet::new();
        {
            let verified = self.verified();
            for item in signed {
                let digest = item.digest();
                if !verified.contains(&digest) && digests.insert(digest) {
                    unseen.push(item);
                }
            }
        }
        let texts: Vec<&[u8]> = unseen.iter().map(|item| item.text.as_bytes()).collect();
        let signatures: Vec<Signature> = unseen.iter().map(|item| item.signature).collect();
        let keys: Vec<VerifyingKey> = unseen.iter().map(|item| *item.key).collect();
        let valid =
            unseen.is_empty() || ed25519_dalek::verify_batch(&texts, &signatures, &keys).is_ok();
        if valid {
            self.remember(digests);
        }
        valid
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<merkle::Hash>> {
        // The set holds only digests of verified signatures; a panic elsewhere while it was
        // held leaves nothing half-true in it.
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, digests: impl IntoIterator<Item = merkle::Hash>) {
        let mut verified = self.verified();
        for digest in digests {
            if verified.len() >= Self::REMEMBERED {
                verified.clear();
            }
            verified.insert(digest);
        }
    }
}

impl Clone for KeyRing {
    fn clone(&self) -> Self {
        KeyRing {
            keys: self.keys.clone(),
            verified: Arc::clone(&self.verified),
        }
    }
}

impl From<HashMap<String, VerifyingKey>> for KeyRing {
    fn from(keys: HashMap<String, VerifyingKey>) -> Self {
        KeyRing {
            keys,
            verified: Arc::default(),
        }
    }
}

impl FromIterator<(String, VerifyingKey)> for KeyRing {
    fn from_iter<I: IntoIterator<Item = (String, VerifyingKey)>>(keys: I) -> Self {
        HashMap::from_iter(keys).into()
    }
}

/// Decodes a hex Ed25519 public key; `None` when it is not one.
pub fn decode_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Verifies one receipt where it stands in its chain, without walking the whole chain:
/// its hash, its link to its predecessor (`predecessor_hash`, the stored hash of receipt
/// `seq - 1`; ignored for `seq = 1`), and its coverage by `checkpoint` (the first signed
/// checkpoint at or after it) through `forward`, the receipts `seq + 1 ..= checkpoint.seq`
/// in order. This is the one per-receipt check the API, the evidence graph and the evidence
/// export share; it runs the same [`ChainVerifier`] as a full walk.
pub fn verify_receipt_in_place(
    receipt: &Receipt,
    predecessor_hash: Option<&str>,
    forward: &[Receipt],
    checkpoint: Option<&Checkpoint>,
    keys: &KeyRing,
) -> Result<(), ChainBreak> {
    let body = &receipt.body;
    let fail = |kind| ChainBreak {
        tenant_id: body.tenant_id.clone(),
        receipt_id: body.id.clone(),
        seq: body.seq,
        kind,
    };
    let Some(checkpoint) = checkpoint else {
        return Err(fail(BreakKind::Unsigned));
    };
    let mut verifier = ChainVerifier::new(&body.tenant_id, [checkpoint], keys)?;
    if body.seq > 1 {
        let Some(previous) = predecessor_hash else {
            return Err(fail(BreakKind::Gap {
                previous: body.seq - 1,
                found: body.seq,
            }));
        };
        verifier = verifier.anchored_at(body.seq - 1, previous.to_owned());
    }
    verifier.push(receipt)?;
    for next in forward {
        verifier.push(next)?;
    }
    let reached = forward.last().map_or(body.seq, |r| r.body.seq);
    if checkpoint.body.tenant_id != body.tenant_id || reached != checkpoint.body.seq {
        return Err(fail(BreakKind::Unsigned));
    }
    verifier.finish().map(drop)
}

/// Interop mode: verifies a chain under the generic rule of the reference vectors, where each
/// receipt is any JSON object, `receipt_hash = SHA-256(JCS(object without receipt_hash))` and
/// `prev_receipt_hash` names the previous receipt's hash (`""` for the first).
/// Returns the index of the first bad receipt.
pub fn verify_generic_chain(receipts: &[Value]) -> Result<(), (usize, String)> {
    let mut prev = String::new();
    for (index, receipt) in receipts.iter().enumerate() {
        let Some(object) = receipt.as_object() else {
            return Err((index, "not a JSON object".into()));
        };
        let Some(claimed) = object.get("receipt_hash").and_then(Value::as_str) else {
            return Err((index, "missing receipt_hash".into()));
        };
        let mut body = object.clone();
        body.remove("receipt_hash");
        let actual = canonical_json(&body)
            .map(|text| sha256_hex(text.as_bytes()))
            .map_err(|e| (index, e.to_string()))?;
        if actual != claimed {
            return Err((index, "receipt_hash does not match the body".into()));
        }
        if object.get("prev_receipt_hash").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err((
                index,
                "prev_receipt_hash does not match the previous receipt".into(),
            ));
        }
        prev = claimed.to_owned();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ReceiptSigner {
        ReceiptSigner::from_seed(&[7; 32])
    }

    fn chain(n: u64) -> Vec<Receipt> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let body = ReceiptBody {
                    v: RECEIPT_SCHEMA_VERSION,
                    id: format!("rcpt_{seq}"),
                    tenant_id: "t1".into(),
                    seq,
                    decision_id: format!("dec_{seq}"),
                    agent_id: "agt_1".into(),
                    tool: "github".into(),
                    action: "merge".into(),
                    decision: "deny".into(),
                    risk_score: 70,
                    matched_policies: vec!["deny-untrusted-writes".into()],
                    action_hash: "ab".repeat(32),
                    created_at: "2026-11-25T00:00:00.000Z".into(),
                    prev_hash: prev.clone(),
                    approval: None,
                    tool_definition_hash: None,
                };
                let hash = body.hash().unwrap();
                prev = hash.clone();
                Receipt { body, hash }
            })
            .collect()
    }

    fn keys(signer: &ReceiptSigner) -> KeyRing {
        KeyRing::from_iter([(signer.key_id().to_owned(), signer.verifying_key())])
    }

    fn verify(
        receipts: &[Receipt],
        checkpoints: &[Checkpoint],
        signer: &ReceiptSigner,
    ) -> Result<u64, ChainBreak> {
        let keys = keys(signer);
        let mut verifier = ChainVerifier::new("t1", checkpoints, &keys)?;
        for receipt in receipts {
            verifier.push(receipt)?;
        }
        verifier.finish()
    }

    fn head_checkpoint(receipts: &[Receipt], signer: &ReceiptSigner) -> Checkpoint {
        let head = receipts.last().unwrap();
        sign_one(signer, "t1", head.body.seq, &head.hash)
    }

    /// A checkpoint signed in a batch of its own.
    fn sign_one(signer: &ReceiptSigner, tenant: &str, seq: u64, hash: &str) -> Checkpoint {
        let head = ChainPoint {
            seq,
            hash: hash.to_owned(),
        };
        signer
            .checkpoints([(tenant, &head)], "2026-11-25T00:00:01.000Z")
            .unwrap()
            .remove(0)
    }

    /// One batch signature over two tenants' heads, checked for the first tenant through a
    /// clone of the ring (as a store hands each chain's audit to a thread of its own), is
    /// remembered by the ring: the second tenant's check does not verify it again.
    #[test]
    fn a_clone_of_a_key_ring_remembers_for_the_ring() {
        let signer = ReceiptSigner::from_seed(&[3; 32]);
        let point = |seq: u64| ChainPoint {
            seq,
            hash: "ab".repeat(32),
        };
        let (acme, globex) = (point(1), point(2));
        let batch = signer
            .checkpoints(
                [("acme", &acme), ("globex", &globex)],
                "2026-11-25T00:00:01.000Z",
            )
            .unwrap();
        let ring = keys(&signer);
        assert!(first_badly_signed(&[&batch[0]], &ring.clone()).is_none());
        assert_eq!(ring.verified().len(), 1, "the clone's check is the ring's");
        assert!(first_badly_signed(&[&batch[1]], &ring).is_none());
        assert_eq!(ring.verified().len(), 1, "one signature, remembered once");
    }

    /// A checkpoint per receipt, as a chain of a tenant among many has them.
    fn checkpoint_each(receipts: &[Receipt], signer: &ReceiptSigner) -> Vec<Checkpoint> {
        (1..=receipts.len())
            .map(|n| head_checkpoint(&receipts[..n], signer))
            .collect()
    }

    #[test]
    fn a_batch_of_checkpoints_names_its_first_bad_signature() {
        let s = signer();
        let keys = keys(&s);
        let good = checkpoint_each(&chain(8), &s);
        let all: Vec<&Checkpoint> = good.iter().collect();
        assert_eq!(first_badly_signed(&all, &keys), None);
        assert_eq!(first_badly_signed(&[], &keys), None);
        for bad in 0..good.len() {
            // Its signature no longer matches what it names.
            let mut forged = good.clone();
            forged[bad].body.head_hash = "00".repeat(32);
            let refs: Vec<&Checkpoint> = forged.iter().collect();
            let found = first_badly_signed(&refs, &keys).map(|cp| cp.body.seq);
            assert_eq!(found, Some(forged[bad].body.seq), "forged at {bad}");
        }
        // One that cannot even be parsed after one that parses but fails: the first is named.
        let mut forged = good.clone();
        forged[2].signature = "not hex".into();
        forged[1].signature = forged[0].signature.clone();
        let refs: Vec<&Checkpoint> = forged.iter().collect();
        assert_eq!(
            first_badly_signed(&refs, &keys).map(|cp| cp.body.seq),
            Some(2)
        );
        let mut unknown = good.clone();
        unknown[5].body.key_id = "0123456789abcdef".into();
        let refs: Vec<&Checkpoint> = unknown.iter().collect();
        assert_eq!(
            first_badly_signed(&refs, &keys).map(|cp| cp.body.seq),
            Some(6)
        );
    }

    #[test]
    fn a_signed_chain_verifies() {
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);
        assert_eq!(verify(&receipts, &[cp], &s), Ok(5));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);

        let mut edited = receipts.clone();
        edited[2].body.decision = "allow".into();
        assert_eq!(
            verify(&edited, std::slice::from_ref(&cp), &s)
                .unwrap_err()
                .kind,
            BreakKind::Hash
        );

        let mut relinked = receipts.clone();
        relinked[2].body.prev_hash = "00".repeat(32);
        relinked[2].hash = relinked[2].body.hash().unwrap();
        let err = verify(&relinked, std::slice::from_ref(&cp), &s).unwrap_err();
        assert_eq!((err.kind, err.seq), (BreakKind::Link, 3));

        let mut gapped = receipts.clone();
        gapped.remove(1);
        assert!(matches!(
            verify(&gapped, std::slice::from_ref(&cp), &s)
                .unwrap_err()
                .kind,
            BreakKind::Gap { .. }
        ));

        assert_eq!(
            verify(&receipts, &[], &s).unwrap_err().kind,
            BreakKind::Unsigned
        );

        let mut forged = cp.clone();
        forged.body.seq = 4;
        forged.body.head_hash = receipts[3].hash.clone();
        assert!(matches!(
            verify(&receipts, &[forged], &s).unwrap_err().kind,
            BreakKind::BadCheckpoint { .. }
        ));

        let other = ReceiptSigner::from_seed(&[9; 32]);
        let foreign = head_checkpoint(&receipts, &other);
        assert!(matches!(
            verify(&receipts, &[foreign], &s).unwrap_err().kind,
            BreakKind::BadCheckpoint { .. }
        ));
    }

    #[test]
    fn a_rewritten_chain_contradicts_its_checkpoint() {
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);
        // A forger who recomputes every hash after an edit still cannot match the signed head.
        let mut rewritten = receipts.clone();
        rewritten[0].body.decision = "allow".into();
        let mut prev = String::new();
        for r in &mut rewritten {
            r.body.prev_hash = prev.clone();
            r.hash = r.body.hash().unwrap();
            prev = r.hash.clone();
        }
        let err = verify(&rewritten, &[cp], &s).unwrap_err();
        assert_eq!(err.kind, BreakKind::CheckpointMismatch { seq: 5 });
    }

    #[test]
    fn receipts_past_the_last_checkpoint_are_unsigned() {
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts[..3], &s);
        let err = verify(&receipts, &[cp], &s).unwrap_err();
        assert_eq!((err.kind, err.seq), (BreakKind::Unsigned, 5));
    }

    #[test]
    fn a_checkpoint_beyond_the_walk_covers_nothing() {
        // Receipts 4 and 5 deleted, their checkpoint left behind: nothing links 3 to it.
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);
        let err = verify(&receipts[..3], &[cp], &s).unwrap_err();
        assert_eq!((err.kind, err.seq), (BreakKind::Unsigned, 3));
    }

    #[test]
    fn checkpoints_fed_page_by_page_verify_like_all_at_once() {
        let s = signer();
        let receipts = chain(6);
        let keys = keys(&s);
        let mut verifier = ChainVerifier::new("t1", [], &keys).unwrap();
        for page in receipts.chunks(2) {
            let cp = head_checkpoint(page_through(&receipts, page), &s);
            verifier.add_checkpoints([&cp]).unwrap();
            for receipt in page {
                verifier.push(receipt).unwrap();
            }
            assert!(verifier.at_signed_head());
        }
        assert_eq!(verifier.finish(), Ok(6));
    }

    /// The receipts from the start of `chain` to the end of `page`.
    fn page_through<'a>(chain: &'a [Receipt], page: &[Receipt]) -> &'a [Receipt] {
        &chain[..page.last().unwrap().body.seq as usize]
    }

    fn head_of(receipt: &Receipt) -> ChainHead {
        ChainHead {
            receipt_id: receipt.body.id.clone(),
            seq: receipt.body.seq,
            hash: receipt.hash.clone(),
        }
    }

    #[test]
    fn only_a_head_named_by_the_last_checkpoint_is_sealed() {
        let s = signer();
        let keys = keys(&s);
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);
        let head = head_of(&receipts[4]);
        let sealed = |head: Option<&ChainHead>, cp: Option<&Checkpoint>| {
            verify_sealed_head("t1", head, cp, &keys).map_err(|b| (b.kind, b.seq))
        };
        assert_eq!(sealed(None, None), Ok(()), "an empty chain");
        assert_eq!(sealed(Some(&head), Some(&cp)), Ok(()));
        // Every checkpoint deleted.
        assert_eq!(sealed(Some(&head), None), Err((BreakKind::Unsigned, 5)));
        // Receipts appended past the last checkpoint.
        let earlier = head_checkpoint(&receipts[..3], &s);
        assert_eq!(
            sealed(Some(&head), Some(&earlier)),
            Err((BreakKind::Unsigned, 5))
        );
        // The chain rewritten with recomputed hashes under its checkpoint.
        let mut rewritten = head.clone();
        rewritten.hash = "00".repeat(32);
        assert_eq!(
            sealed(Some(&rewritten), Some(&cp)),
            Err((BreakKind::CheckpointMismatch { seq: 5 }, 5))
        );
        // Receipts deleted under their checkpoint, or all of them.
        let shorter = head_of(&receipts[2]);
        assert_eq!(
            sealed(Some(&shorter), Some(&cp)),
            Err((BreakKind::CheckpointMismatch { seq: 5 }, 5))
        );
        assert_eq!(
            sealed(None, Some(&cp)),
            Err((BreakKind::CheckpointMismatch { seq: 5 }, 5))
        );
        // A checkpoint someone wrote without the key, or another tenant's.
        let mut forged = cp.clone();
        forged.body.signed_at = "2030-01-01T00:00:00.000Z".into();
        assert!(matches!(
            sealed(Some(&head), Some(&forged)),
            Err((BreakKind::BadCheckpoint { .. }, 5))
        ));
        let other_tenant = sign_one(&s, "t2", 5, &head.hash);
        assert!(matches!(
            sealed(Some(&head), Some(&other_tenant)),
            Err((BreakKind::BadCheckpoint { .. }, 5))
        ));
    }

    #[test]
    fn one_signature_covers_a_batch_and_each_checkpoint_proves_only_itself() {
        let s = signer();
        let heads: Vec<(String, ChainPoint)> = (1..=5)
            .map(|n| {
                let head = ChainPoint {
                    seq: n,
                    hash: format!("{n:02x}").repeat(32),
                };
                (format!("tenant-{n}"), head)
            })
            .collect();
        let batch = s
            .checkpoints(
                heads.iter().map(|(tenant, head)| (tenant.as_str(), head)),
                "2026-11-29T00:00:00.000Z",
            )
            .unwrap();
        let keys = keys(&s);
        assert_eq!(batch.len(), 5);
        for (checkpoint, (tenant, head)) in batch.iter().zip(&heads) {
            assert_eq!(&checkpoint.body.tenant_id, tenant);
            assert_eq!(checkpoint.head(), *head);
            assert_eq!(checkpoint.signature, batch[0].signature, "one signature");
            assert!(verify_checkpoint(checkpoint, &keys));
            // What a tenant is shown of its checkpoint names no other chain of the batch.
            let shown = serde_json::to_string(checkpoint).unwrap();
            for (other, other_head) in heads.iter().filter(|(t, _)| t != tenant) {
                assert!(!shown.contains(other.as_str()), "{shown}");
                assert!(!shown.contains(&other_head.hash), "{shown}");
            }
        }
        // Each of these changes what the path proves, so the batch signature no longer
        // covers it; the key ring that saw the signature verify does not take them.
        let tampered: [fn(&mut Checkpoint); 6] = [
            |c| c.body.head_hash = "ff".repeat(32),
            |c| c.body.seq += 1,
            |c| c.batch.as_mut().unwrap().index = 0,
            |c| c.batch.as_mut().unwrap().size += 1,
            |c| c.batch.as_mut().unwrap().path[0] = "00".repeat(32),
            |c| {
                c.batch.as_mut().unwrap().path.pop();
            },
        ];
        for tamper in tampered {
            let mut checkpoint = batch[3].clone();
            tamper(&mut checkpoint);
            assert!(!verify_checkpoint(&checkpoint, &keys), "{checkpoint:?}");
            assert_eq!(
                first_badly_signed(&[&batch[0], &checkpoint], &keys),
                Some(&checkpoint)
            );
        }
        // Without its path, a checkpoint of a batch reads as a lone one and fails.
        let mut unbatched = batch[2].clone();
        unbatched.batch = None;
        assert!(!verify_checkpoint(&unbatched, &keys));
        // A batch's checkpoints serialise with their place in it and read back the same.
        let json = serde_json::to_value(&batch[4]).unwrap();
        assert_eq!(json["batch"]["index"], 4);
        assert_eq!(json["batch"]["size"], 5);
        assert_eq!(
            serde_json::from_value::<Checkpoint>(json).unwrap(),
            batch[4]
        );
    }

    #[test]
    fn a_checkpoint_signed_alone_before_batches_still_verifies() {
        let s = signer();
        let body = CheckpointBody {
            v: RECEIPT_SCHEMA_VERSION,
            tenant_id: "t1".into(),
            seq: 7,
            head_hash: "ab".repeat(32),
            key_id: s.key_id().into(),
            signed_at: "2026-11-25T00:00:01.000Z".into(),
        };
        let signature = s.key.sign(canonical_json(&body).unwrap().as_bytes());
        let legacy = Checkpoint {
            body,
            batch: None,
            signature: hex::encode(signature.to_bytes()),
        };
        assert!(
            !serde_json::to_string(&legacy).unwrap().contains("batch"),
            "a lone checkpoint serialises as it always did"
        );
        let keys = keys(&s);
        assert!(verify_checkpoint(&legacy, &keys));
        assert_eq!(first_badly_signed(&[&legacy], &keys), None);
        let mut forged = legacy.clone();
        forged.body.seq = 8;
        assert!(!verify_checkpoint(&forged, &keys));
    }

    #[test]
    fn one_receipt_verifies_in_place_and_tampering_is_named() {
        let s = signer();
        let receipts = chain(5);
        let cp = head_checkpoint(&receipts, &s);
        let keys = keys(&s);
        let check = |rs: &[Receipt], i: usize, cp: Option<&Checkpoint>| {
            let prev = (i > 0).then(|| rs[i - 1].hash.as_str());
            verify_receipt_in_place(&rs[i], prev, &rs[i + 1..], cp, &keys)
        };
        for i in 0..5 {
            assert_eq!(check(&receipts, i, Some(&cp)), Ok(()), "receipt {i}");
        }
        assert_eq!(
            check(&receipts, 2, None).unwrap_err().kind,
            BreakKind::Unsigned
        );
        // A forward path that stops short of the checkpoint does not prove coverage.
        assert_eq!(
            verify_receipt_in_place(
                &receipts[1],
                Some(&receipts[0].hash),
                &receipts[2..3],
                Some(&cp),
                &keys
            )
            .unwrap_err()
            .kind,
            BreakKind::Unsigned
        );
        let mut edited = receipts.clone();
        edited[2].body.decision = "allow".into();
        assert_eq!(
            check(&edited, 2, Some(&cp)).unwrap_err().kind,
            BreakKind::Hash
        );
        // The receipt after an edited one no longer links.
        let mut rehashed = receipts.clone();
        rehashed[2].body.decision = "allow".into();
        rehashed[2].hash = rehashed[2].body.hash().unwrap();
        let err = check(&rehashed, 3, Some(&cp)).unwrap_err();
        assert_eq!((err.kind, err.seq), (BreakKind::Link, 4));
        assert!(check(&rehashed, 2, Some(&cp)).is_err());
        let other = ReceiptSigner::from_seed(&[9; 32]);
        let foreign = head_checkpoint(&receipts, &other);
        assert!(matches!(
            check(&receipts, 4, Some(&foreign)).unwrap_err().kind,
            BreakKind::BadCheckpoint { .. }
        ));
        assert_eq!(
            decode_public_key(&hex::encode(s.verifying_key().as_bytes())),
            Some(s.verifying_key())
        );
        assert_eq!(decode_public_key("zz"), None);
    }

    #[test]
    fn a_cut_is_signed_apart_from_checkpoints_and_a_pruned_chain_verifies_from_it() {
        let s = signer();
        let keys = keys(&s);
        let receipts = chain(6);
        let cut = s
            .cut(
                "t1",
                &receipts[2].point(),
                "2026-11-26T00:00:00.000Z".into(),
            )
            .unwrap();
        assert!(cut.verify(&keys));
        assert!(!cut.verify(&KeyRing::default()), "an unknown key");
        let mut moved = cut.clone();
        moved.body.pruned_through_seq = 4;
        assert!(!moved.verify(&keys), "a cut moved without the key");
        // A checkpoint's signature over the same point does not pass for a cut.
        let cp = head_checkpoint(&receipts[..3], &s);
        let mut posing = cut.clone();
        posing.body.cut_at = cp.body.signed_at.clone();
        posing.signature = cp.signature.clone();
        assert!(!posing.verify(&keys));

        let head = head_checkpoint(&receipts, &s);
        let mut verifier = ChainVerifier::new("t1", [&head], &keys)
            .unwrap()
            .anchored_at(cut.point().seq, cut.point().hash);
        for receipt in &receipts[3..] {
            verifier.push(receipt).unwrap();
        }
        assert_eq!(verifier.finish(), Ok(3));
    }

    #[test]
    fn reference_receipt_vectors_verify_in_interop_mode() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/vectors/reference_receipt_chain_vectors.json"
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let receipts = doc["receipts"].as_array().unwrap().clone();
        assert_eq!(verify_generic_chain(&receipts), Ok(()));

        let mut tampered = receipts.clone();
        tampered[1]["note"] = Value::from("edited");
        assert_eq!(verify_generic_chain(&tampered).unwrap_err().0, 1);
    }

    /// Any text at all, control characters, quotes, backslashes and non-ASCII included.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,24}").unwrap()
    }

    fn arb_body() -> impl proptest::strategy::Strategy<Value = ReceiptBody> {
        use proptest::prelude::*;
        let approval = proptest::option::of(
            (text(), proptest::collection::vec(text(), 0..3))
                .prop_map(|(id, approved_by)| ReceiptApproval { id, approved_by }),
        );
        (
            (any::<u32>(), text(), text(), 0..=u64::MAX, text(), text()),
            (
                text(),
                text(),
                text(),
                any::<u8>(),
                proptest::collection::vec(text(), 0..4),
            ),
            (
                text(),
                text(),
                text(),
                approval,
                proptest::option::of(text()),
            ),
        )
            .prop_map(
                |(
                    (v, id, tenant_id, seq, decision_id, agent_id),
                    (tool, action, decision, risk_score, matched_policies),
                    (action_hash, created_at, prev_hash, approval, tool_definition_hash),
                )| ReceiptBody {
                    v,
                    id,
                    tenant_id,
                    seq: mostly_exact(seq),
                    decision_id,
                    agent_id,
                    tool,
                    action,
                    decision,
                    risk_score,
                    matched_policies,
                    action_hash,
                    created_at,
                    prev_hash,
                    approval,
                    tool_definition_hash,
                },
            )
    }

    /// Mostly below 2^53, where the direct paths run; sometimes beyond it.
    fn mostly_exact(n: u64) -> u64 {
        if n.is_multiple_of(8) { n } else { n >> 11 }
    }

    fn arb_checkpoint_body() -> impl proptest::strategy::Strategy<Value = CheckpointBody> {
        use proptest::prelude::*;
        (any::<u32>(), text(), any::<u64>(), text(), text(), text()).prop_map(
            |(v, tenant_id, seq, head_hash, key_id, signed_at)| CheckpointBody {
                v,
                tenant_id,
                seq: mostly_exact(seq),
                head_hash,
                key_id,
                signed_at,
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_is_jcs(body in arb_body()) {
            proptest::prop_assert_eq!(body.canonical().unwrap(), canonical_json(&body).unwrap());
        }

        /// The writer seals a receipt from its body printed before the chain position was
        /// known: whatever position the body held then, the text at the real one is the JCS
        /// of the body there.
        #[test]
        fn a_body_printed_before_its_position_is_jcs_at_it(
            body in arb_body(),
            seq in 0..=MAX_EXACT_INTEGER,
            prev_hash in text(),
        ) {
            let printed = body.printed().unwrap();
            let placed = ReceiptBody { seq, prev_hash: prev_hash.clone(), ..body };
            let jcs = canonical_json(&placed).unwrap();
            let text = printed.text_at(seq, &prev_hash).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(text).unwrap(), jcs.clone());
            proptest::prop_assert_eq!(printed.hash_at(seq, &prev_hash).unwrap(), sha256_hex(jcs.as_bytes()));
            proptest::prop_assert!(printed.hash_at(MAX_EXACT_INTEGER + 1, &prev_hash).is_err());
        }

        #[test]
        fn checkpoint_forms_are_jcs(
            body in arb_checkpoint_body(),
            root in proptest::prelude::any::<merkle::Hash>(),
            size in proptest::prelude::any::<u64>(),
        ) {
            proptest::prop_assert_eq!(body.canonical().unwrap(), canonical_json(&body).unwrap());
            let statement = CheckpointBatchBody::new(&body, root, mostly_exact(size));
            proptest::prop_assert_eq!(
                statement.canonical().unwrap(),
                canonical_json(&statement).unwrap()
            );
        }
    }
}
