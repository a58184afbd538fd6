//! `aegis receipts export|verify`: receipt chains as JSON lines, checked offline with the
//! same verifier the gateway uses (`aegis_core::receipt::ChainVerifier`).
//!
//! An exported line is one receipt (its body fields and `hash`) plus the signed `checkpoint`
//! that covers it and the `public_key` of the checkpoint's key id, so a file verifies on its
//! own. Keys inside a file prove integrity against corruption; against a forger who controls
//! the whole file, pin the gateway's keys with `--trusted-key KEY_ID=HEX`.
//!
//! A database is verified with `Store::audit_chain`, the walk the gateway runs itself, in
//! one consistent snapshot per chain: a gateway serving meanwhile is never seen half-way
//! through a commit, so receipts past a chain's last checkpoint are always a break.

use aegis_core::receipt::{
    ChainBreak, ChainVerifier, Checkpoint, ExportedReceipt, Receipt, key_id, verify_generic_chain,
};
use aegis_soc::anchor::Anchors;
use aegis_store::chain::{ChainWalk, keyring};
use aegis_store::{Store, TenantId};
use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

const PAGE: u32 = 1000;

/// Writes every chain (or one tenant's) as JSON lines.
pub async fn export(
    store: &dyn Store,
    tenant: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let keys: HashMap<String, String> = store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| (k.key_id, k.public_key))
        .collect();
    let mut written = 0;
    for tenant in tenants(store, tenant).await? {
        let mut after = 0;
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
                // Checkpoints come sorted by seq: the first at or after the receipt covers it.
                let covering = checkpoints.partition_point(|c| c.body.seq < receipt.body.seq);
                let Some(checkpoint) = checkpoints.get(covering) else {
                    bail!(
                        "receipt {} (tenant {tenant}, seq {}) has no covering checkpoint: the chain is broken",
                        receipt.body.id,
                        receipt.body.seq
                    );
                };
                let public_key = keys
                    .get(&checkpoint.body.key_id)
                    .cloned()
                    .unwrap_or_default();
                let line = ExportedReceipt {
                    receipt,
                    checkpoint: checkpoint.clone(),
                    public_key,
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

async fn tenants(store: &dyn Store, only: Option<&str>) -> anyhow::Result<Vec<TenantId>> {
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

/// Verifies every chain stored in the database, each from one snapshot; with `anchors`
/// (the gateway's anchor file), also that every anchored receipt is still there, unchanged
/// and covered.
pub async fn verify_db(
    store: &dyn Store,
    pinned: &HashMap<String, VerifyingKey>,
    anchors: Option<&Path>,
) -> anyhow::Result<Verdict> {
    let keys = if pinned.is_empty() {
        keyring(store).await?
    } else {
        pinned.clone()
    };
    let tenants = store.receipt_tenants().await?;
    let mut total = 0;
    for tenant in &tenants {
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

/// Verifies an exported JSON-lines file.
pub fn verify_file(path: &Path, pinned: &HashMap<String, VerifyingKey>) -> anyhow::Result<Verdict> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Chains by tenant, each with the line number of every receipt.
    let mut chains: BTreeMap<String, Vec<(usize, Receipt)>> = BTreeMap::new();
    let mut checkpoints: HashMap<(String, u64), Checkpoint> = HashMap::new();
    let mut keys = pinned.clone();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = index + 1;
        let exported: ExportedReceipt = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                return Ok(Verdict::Broken(format!(
                    "line {line_no}: not an exported receipt: {e}"
                )));
            }
        };
        if pinned.is_empty() {
            match parse_key(&exported.public_key) {
                // A key is only accepted under the id derived from it.
                Ok(key) if key_id(&key) == exported.checkpoint.body.key_id => {
                    keys.insert(key_id(&key), key);
                }
                _ => {
                    return Ok(Verdict::Broken(format!(
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
    let mut total = 0;
    for (tenant, receipts) in &chains {
        let tenant_checkpoints = checkpoints.values().filter(|c| c.body.tenant_id == *tenant);
        let mut verifier = match ChainVerifier::new(tenant, tenant_checkpoints, &keys) {
            Ok(v) => v,
            Err(brk) => return Ok(Verdict::Broken(describe(&brk, None))),
        };
        for (line_no, receipt) in receipts {
            if let Err(brk) = verifier.push(receipt) {
                return Ok(Verdict::Broken(describe(&brk, Some(*line_no))));
            }
        }
        match verifier.finish() {
            Ok(count) => total += count,
            Err(brk) => return Ok(Verdict::Broken(describe(&brk, None))),
        }
    }
    Ok(Verdict::Verified {
        receipts: total,
        chains: chains.len(),
    })
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
pub fn parse_pins(pins: &[String]) -> anyhow::Result<HashMap<String, VerifyingKey>> {
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
