//! `aegis receipts export|verify`: receipt chains as JSON lines, checked offline with the
//! same verifier the gateway uses (`aegis_core::receipt::ChainVerifier`).
//!
//! An exported line is one receipt (its body fields and `hash`) plus the signed `checkpoint`
//! that covers it and the `public_key` of the checkpoint's key id, so a file verifies on its
//! own. Keys inside a file prove integrity against corruption; against a forger who controls
//! the whole file, pin the gateway's keys with `--trusted-key KEY_ID=HEX`.
//!
//! A chain that was archived (`aegis archive`) is exported from its cut on, after a header
//! line ([`SegmentHeader`]) naming the signed cut it goes on from; an archive is the same
//! format. Several files and a database verify as one history: each chain goes on in the
//! next file (or in the database, after its cut) from where the previous file ended.
//!
//! A database is verified with `ReceiptStore::audit_chain`, the walk the gateway runs itself, in
//! one consistent snapshot per chain: a gateway serving meanwhile is never seen half-way
//! through a commit, so receipts past a chain's last checkpoint are always a break.

use aegis_core::receipt::{
    ChainBreak, ChainPoint, ChainVerifier, Checkpoint, ExportedReceipt, KeyRing, Receipt,
    SegmentChain, SegmentHeader, key_id, verify_generic_chain,
};
use aegis_soc::anchor::Anchors;
use aegis_store::chain::{ChainWalk, keyring};
use aegis_store::{Store, TenantId};
use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const PAGE: u32 = 1000;

/// Every stored public key (hex) by key id.
pub(crate) async fn public_keys(store: &dyn Store) -> anyhow::Result<HashMap<String, String>> {
    Ok(store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| (k.key_id, k.public_key))
        .collect())
}

/// The export line of `receipt`: with the first of `checkpoints` (sorted by seq) at or after
/// it, which covers it, and that checkpoint's public key.
pub(crate) fn exported_line(
    receipt: Receipt,
    checkpoints: &[Checkpoint],
    keys: &HashMap<String, String>,
) -> anyhow::Result<ExportedReceipt> {
    let covering = checkpoints.partition_point(|c| c.body.seq < receipt.body.seq);
    let Some(checkpoint) = checkpoints.get(covering) else {
        bail!(
            "receipt {} (tenant {}, seq {}) has no covering checkpoint: the chain is broken",
            receipt.body.id,
            receipt.body.tenant_id,
            receipt.body.seq
        );
    };
    let public_key = keys
        .get(&checkpoint.body.key_id)
        .cloned()
        .unwrap_or_default();
    Ok(ExportedReceipt {
        receipt,
        checkpoint: checkpoint.clone(),
        public_key,
    })
}

/// Writes every chain (or one tenant's) as JSON lines; a chain that was archived from its
/// cut on, after a header line naming the cuts.
pub async fn export(
    store: &dyn Store,
    tenant: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let keys = public_keys(store).await?;
    let mut chains = Vec::new();
    for tenant in tenants(store, tenant).await? {
        let cut = store.chain_cut(&tenant).await?;
        chains.push((tenant, cut));
    }
    if chains.iter().any(|(_, cut)| cut.is_some()) {
        let header = SegmentHeader {
            aegis_segment: 1,
            chains: chains
                .iter()
                .filter_map(|(tenant, cut)| {
                    cut.clone().map(|cut| SegmentChain {
                        tenant_id: tenant.as_str().to_owned(),
                        starts_after: Some(cut),
                        through: None,
                    })
                })
                .collect(),
            public_keys: keys.clone().into_iter().collect(),
        };
        serde_json::to_writer(&mut *out, &header)?;
        out.write_all(b"\n")?;
    }
    let mut written = 0;
    for (tenant, cut) in chains {
        // Receipts behind the cut are archived, and may be on their way out.
        let mut after = cut.map_or(0, |cut| cut.body.pruned_through_seq);
        loop {
            let page = store.receipts(&tenant, after, PAGE).await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                break;
            };
            after = last.body.seq;
            // Read after the receipts: each committed with the checkpoint over its chain's
            // new head, so the checkpoints covering the page are all visible now (at most one
            // per receipt, plus the first one past the page).
            let checkpoints = store
                .checkpoints_from(&tenant, first.body.seq, PAGE + 1)
                .await?;
            for receipt in page {
                let line = exported_line(receipt, &checkpoints, &keys)?;
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

pub(crate) async fn tenants(
    store: &dyn Store,
    only: Option<&str>,
) -> anyhow::Result<Vec<TenantId>> {
    Ok(match only {
        Some(id) => vec![TenantId::new(id)],
        None => store.receipt_tenants().await?,
    })
}

/// The outcome of a verification: receipts checked, or where the chain first breaks.
pub enum Verdict {
    Verified { receipts: u64, chains: usize },
    Broken(String),
}

/// Verifies `files` in order as one history and then, with `store`, the database's chains
/// as their continuation (each chain from one snapshot).
pub async fn verify_history(
    files: &[PathBuf],
    store: Option<&dyn Store>,
    pinned: &KeyRing,
    anchors: Option<&Path>,
) -> anyhow::Result<Verdict> {
    let (archived, ends) = if files.is_empty() {
        ((0, 0), None)
    } else {
        match verify_files(files, pinned)? {
            (Verdict::Verified { receipts, chains }, ends) => ((receipts, chains), Some(ends)),
            (broken, _) => return Ok(broken),
        }
    };
    let Some(store) = store else {
        return Ok(Verdict::Verified {
            receipts: archived.0,
            chains: archived.1,
        });
    };
    Ok(
        match verify_db(store, pinned, anchors, ends.as_ref()).await? {
            Verdict::Verified { receipts, chains } => Verdict::Verified {
                receipts: receipts + archived.0,
                chains,
            },
            broken => broken,
        },
    )
}

/// Verifies every chain stored in the database, each from one snapshot (a chain that was
/// archived, from its signed cut); with `anchors` (the gateway's anchor file), also that
/// every anchored receipt is still there, unchanged and covered. With `archived` (where the
/// chains of the archive files verified before end), the files and the database must be one
/// history: every cut chain goes on exactly where its archives end.
async fn verify_db(
    store: &dyn Store,
    pinned: &KeyRing,
    anchors: Option<&Path>,
    archived: Option<&BTreeMap<String, ChainPoint>>,
) -> anyhow::Result<Verdict> {
    let keys = if pinned.is_empty() {
        keyring(store).await?
    } else {
        pinned.clone()
    };
    let tenants = store.receipt_tenants().await?;
    let mut total = 0;
    for tenant in &tenants {
        if let Some(ends) = archived
            && let Some(gap) = joint(tenant, ends.get(tenant.as_str()), store).await?
        {
            return Ok(Verdict::Broken(gap));
        }
        let audit = store.audit_chain(tenant, ChainWalk::whole(), &keys).await?;
        match audit.outcome {
            Ok(()) => total += audit.checked,
            Err(brk) => return Ok(Verdict::Broken(describe(&brk, None))),
        }
    }
    if let Some(path) = anchors {
        let anchors = Anchors::read(path)
            .with_context(|| format!("cannot read the anchor file {}", path.display()))?;
        for anchor in anchors.iter() {
            let tenant = TenantId::new(anchor.body.tenant_id.as_str());
            let walk = ChainWalk::anchor(anchor.head());
            if let Err(brk) = store.audit_chain(&tenant, walk, &keys).await?.outcome {
                return Ok(Verdict::Broken(describe(&brk, None)));
            }
        }
    }
    Ok(Verdict::Verified {
        receipts: total,
        chains: tenants.len(),
    })
}

/// Why the archives (ending at `archived_through`) and the stored chain of `tenant` are not
/// one history, if they are not: the chain's cut must be where the archives end.
async fn joint(
    tenant: &TenantId,
    archived_through: Option<&ChainPoint>,
    store: &dyn Store,
) -> anyhow::Result<Option<String>> {
    let cut = store.chain_cut(tenant).await?.map(|cut| cut.point());
    Ok(match (archived_through, cut) {
        (Some(end), Some(cut)) if *end == cut => None,
        (Some(end), Some(cut)) => Some(format!(
            "tenant {tenant}: the archives end at seq {} but the database's chain goes on after its cut at seq {}{}",
            end.seq,
            cut.seq,
            if end.seq == cut.seq {
                " (with another hash)"
            } else {
                ""
            }
        )),
        (Some(end), None) => Some(format!(
            "tenant {tenant}: the archives end at seq {} but the database's chain was never cut",
            end.seq
        )),
        (None, Some(cut)) => Some(format!(
            "tenant {tenant}: no archive given holds the chain through its cut at seq {}",
            cut.seq
        )),
        (None, None) => None,
    })
}

/// Where each chain of verified files ends, by tenant.
type ChainEnds = BTreeMap<String, ChainPoint>;

/// Verifies exported or archive files, in order, as one history: a chain in a file goes on
/// from where it ended in an earlier file, else from the signed cut its header names, else
/// from seq 1. Returns where each chain ends.
fn verify_files(paths: &[PathBuf], pinned: &KeyRing) -> anyhow::Result<(Verdict, ChainEnds)> {
    let mut ends = ChainEnds::new();
    let mut total = 0;
    for path in paths {
        match verify_file(path, pinned, &mut ends)? {
            Ok(count) => total += count,
            Err(why) => {
                let why = if paths.len() > 1 {
                    format!("{}: {why}", path.display())
                } else {
                    why
                };
                return Ok((Verdict::Broken(why), ends));
            }
        }
    }
    let chains = ends.len();
    Ok((
        Verdict::Verified {
            receipts: total,
            chains,
        },
        ends,
    ))
}

/// Verifies one file, going on from `ends` and moving them; the receipts checked, or why
/// the file does not verify.
fn verify_file(
    path: &Path,
    pinned: &KeyRing,
    ends: &mut ChainEnds,
) -> anyhow::Result<Result<u64, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let mut keys = pinned.clone();
    let mut header = None;
    if let Some((_, first)) = lines.peek()
        && serde_json::from_str::<Value>(first).is_ok_and(|v| v.get("aegis_segment").is_some())
    {
        let (index, first) = lines.next().unwrap_or_default();
        match serde_json::from_str::<SegmentHeader>(first) {
            Ok(parsed) if parsed.aegis_segment == 1 => {
                if pinned.is_empty() {
                    for (id, hex_key) in &parsed.public_keys {
                        match parse_key(hex_key) {
                            Ok(key) if key_id(&key) == *id => {
                                keys.insert(id.clone(), key);
                            }
                            _ => {
                                return Ok(Err(format!(
                                    "line {}: public key {id} does not match its key id",
                                    index + 1
                                )));
                            }
                        }
                    }
                }
                header = Some(parsed);
            }
            Ok(parsed) => {
                return Ok(Err(format!(
                    "line {}: unknown segment version {}",
                    index + 1,
                    parsed.aegis_segment
                )));
            }
            Err(e) => {
                return Ok(Err(format!(
                    "line {}: not a segment header: {e}",
                    index + 1
                )));
            }
        }
    }
    // Chains by tenant, each with the line number of every receipt.
    let mut chains: BTreeMap<String, Vec<(usize, Receipt)>> = BTreeMap::new();
    let mut checkpoints: HashMap<(String, u64), Checkpoint> = HashMap::new();
    for (index, line) in lines {
        let line_no = index + 1;
        let exported: ExportedReceipt = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => return Ok(Err(format!("line {line_no}: not an exported receipt: {e}"))),
        };
        if pinned.is_empty() {
            match parse_key(&exported.public_key) {
                // A key is only accepted under the id derived from it.
                Ok(key) if key_id(&key) == exported.checkpoint.body.key_id => {
                    keys.insert(key_id(&key), key);
                }
                _ => {
                    return Ok(Err(format!(
                        "line {line_no}: public_key does not match key id {}",
                        exported.checkpoint.body.key_id
                    )));
                }
            }
        }
        let checkpoint = exported.checkpoint;
        checkpoints.insert(
            (checkpoint.body.tenant_id.clone(), checkpoint.body.seq),
            checkpoint,
        );
        chains
            .entry(exported.receipt.body.tenant_id.clone())
            .or_default()
            .push((line_no, exported.receipt));
    }
    let segment = |tenant: &str| {
        header
            .as_ref()
            .and_then(|h| h.chains.iter().find(|c| c.tenant_id == tenant))
    };
    let mut total = 0;
    for (tenant, receipts) in &chains {
        let tenant_checkpoints = checkpoints.values().filter(|c| c.body.tenant_id == *tenant);
        let mut verifier = match ChainVerifier::new(tenant, tenant_checkpoints, &keys) {
            Ok(v) => v,
            Err(brk) => return Ok(Err(describe(&brk, None))),
        };
        let start = match (
            ends.get(tenant),
            segment(tenant).and_then(|s| s.starts_after.as_ref()),
        ) {
            (Some(end), _) => Some(end.clone()),
            (None, Some(cut)) if cut.verify(&keys) && cut.body.tenant_id == *tenant => {
                Some(cut.point())
            }
            (None, Some(cut)) => {
                return Ok(Err(format!(
                    "tenant {tenant}: the cut at seq {} in the header has a bad signature or unknown key {}",
                    cut.body.pruned_through_seq, cut.body.key_id
                )));
            }
            (None, None) => None,
        };
        if let Some(start) = start {
            verifier = verifier.anchored_at(start.seq, start.hash);
        }
        for (line_no, receipt) in receipts {
            if let Err(brk) = verifier.push(receipt) {
                return Ok(Err(describe(&brk, Some(*line_no))));
            }
        }
        let end = verifier.last();
        match verifier.finish() {
            Ok(count) => total += count,
            Err(brk) => return Ok(Err(describe(&brk, None))),
        }
        if let (Some(claimed), Some(end)) = (segment(tenant).and_then(|s| s.through.as_ref()), &end)
            && claimed != end
        {
            return Ok(Err(format!(
                "tenant {tenant}: the file ends at seq {} but its header says the archive holds the chain through seq {}",
                end.seq, claimed.seq
            )));
        }
        if let Some(end) = end {
            ends.insert(tenant.clone(), end);
        }
    }
    // An archive's header names every chain it holds: one missing from the file was lost.
    if let Some(missing) = header
        .iter()
        .flat_map(|h| &h.chains)
        .find(|c| c.through.is_some() && !chains.contains_key(&c.tenant_id))
    {
        return Ok(Err(format!(
            "tenant {}: named in the header, but the file holds none of its receipts",
            missing.tenant_id
        )));
    }
    Ok(Ok(total))
}

/// Interop mode: the generic rule of the reference vectors ("hash every field but
/// `receipt_hash`"). Accepts `{"receipts": [...]}`, a JSON array, or JSON lines.
pub fn verify_generic_file(path: &Path) -> anyhow::Result<Verdict> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let receipts: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut doc)) => match doc.remove("receipts") {
            Some(Value::Array(items)) => items,
            _ => bail!("expected a \"receipts\" array in {}", path.display()),
        },
        Ok(Value::Array(items)) => items,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is neither JSON nor JSON lines", path.display()))?,
    };
    Ok(match verify_generic_chain(&receipts) {
        Ok(()) => Verdict::Verified {
            receipts: receipts.len() as u64,
            chains: 1,
        },
        Err((index, why)) => {
            Verdict::Broken(format!("receipt #{} (index {index}): {why}", index + 1))
        }
    })
}

fn describe(brk: &ChainBreak, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("line {line}: {brk}"),
        None => brk.to_string(),
    }
}

fn parse_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = hex::decode(hex_key).context("public key is not hex")?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .context("public key is not 32 bytes")?;
    VerifyingKey::from_bytes(&bytes).context("not an Ed25519 public key")
}

/// Parses `--trusted-key KEY_ID=HEX` pins.
pub fn parse_pins(pins: &[String]) -> anyhow::Result<KeyRing> {
    pins.iter()
        .map(|pin| {
            let (id, hex_key) = pin
                .split_once('=')
                .context("--trusted-key takes KEY_ID=HEX")?;
            let key = parse_key(hex_key)?;
            if key_id(&key) != id {
                bail!("--trusted-key {id}: the key's id is {}", key_id(&key));
            }
            Ok((id.to_owned(), key))
        })
        .collect()
}
