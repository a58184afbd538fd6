//! `aegis archive`: writes the oldest part of every receipt chain to a self-verifying
//! segment file, then cuts the chains there and prunes what the file holds
//! (docs/receipts.md, *Archiving*).
//!
//! The order keeps every chain verifiable at every moment, whatever stops the command: the
//! file is written, verified and synced first; then each chain's cut is signed with the
//! gateway's key and recorded; then what lies behind the cut is deleted in small
//! transactions with a pause between them, so the gateway's writer (which commits
//! authorize calls) never waits for more than one batch. Running it again finishes a prune
//! that was stopped.

use crate::receipts::{PAGE, exported_line, public_keys};
use aegis_core::receipt::{
    ChainPoint, ChainVerifier, ReceiptSigner, SegmentChain, SegmentHeader, key_id,
};
use aegis_core::timestamp::format_millis;
use aegis_store::archive::ArchiveBounds;
use aegis_store::chain::keyring;
use aegis_store::{Store, TenantId, now_ms};
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What to archive.
pub struct ArchiveRequest<'a> {
    pub before_ms: i64,
    pub tenant: Option<&'a str>,
    pub out: &'a Path,
    /// Receipts deleted per transaction.
    pub batch: u32,
    /// Pause between two prune transactions.
    pub pause: Duration,
}

/// One chain archived.
#[derive(Debug, Serialize)]
pub struct ArchivedChain {
    pub tenant_id: String,
    pub from_seq: u64,
    pub through_seq: u64,
    pub pruned: u64,
}

/// One chain to archive: where its segment starts and ends.
struct Plan {
    tenant: TenantId,
    header: SegmentChain,
    through: ChainPoint,
}

/// Archives and prunes; returns the chains archived (none when nothing was old enough).
pub async fn archive(
    store: &dyn Store,
    signer: &ReceiptSigner,
    request: &ArchiveRequest<'_>,
) -> anyhow::Result<Vec<ArchivedChain>> {
    if request.out.exists() {
        bail!(
            "{} exists; an archive is never overwritten",
            request.out.display()
        );
    }
    let keys = keyring(store).await?;
    if !keys.contains_key(signer.key_id()) {
        bail!(
            "the signing key {} is not one of this database's keys: give the gateway's key (--signing-key-file)",
            signer.key_id()
        );
    }
    let consumed = store
        .consumer_cursor(aegis_soc::consumer::CONSUMER)
        .await?
        .min(store.consumer_cursor(aegis_soc::notify::CONSUMER).await?);
    let bounds = ArchiveBounds {
        before_ms: request.before_ms,
        now_ms: now_ms(),
        events_consumed_through: consumed,
    };
    let tenants = crate::receipts::tenants(store, request.tenant).await?;
    for tenant in &tenants {
        if let Some(days) = store.retention_min_days(tenant).await? {
            let latest = bounds.now_ms - i64::from(days) * 86_400_000;
            if request.before_ms > latest {
                bail!(
                    "tenant {tenant} keeps decisions for {days} days (its retention): --before must be at most {}",
                    format_millis(latest)
                );
            }
        }
    }
    let mut plans = Vec::new();
    for tenant in tenants {
        let cut = store.chain_cut(&tenant).await?;
        let after = cut.as_ref().map_or(0, |cut| cut.body.pruned_through_seq);
        let through = store.archivable_through(&tenant, bounds).await?;
        let Some(through) = through.filter(|&through| through > after) else {
            if cut.is_some() {
                // A prune an earlier run did not finish: its archive holds what is left.
                let pruned = prune(store, &tenant, request).await?;
                if pruned > 0 {
                    tracing::info!(tenant = %tenant, pruned, "finished an earlier prune");
                }
            }
            continue;
        };
        let Some(last) = store.receipts(&tenant, through - 1, 1).await?.pop() else {
            bail!("receipt {through} of tenant {tenant} vanished while archiving");
        };
        plans.push(Plan {
            header: SegmentChain {
                tenant_id: tenant.as_str().to_owned(),
                starts_after: cut,
                through: Some(last.point()),
            },
            through: last.point(),
            tenant,
        });
    }
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    write_segment(store, &keys, &plans, request.out).await?;
    let mut archived = Vec::new();
    for plan in plans {
        let cut = signer.cut(plan.tenant.as_str(), &plan.through, format_millis(now_ms()))?;
        store.record_chain_cut(cut).await?;
        let pruned = prune(store, &plan.tenant, request).await?;
        archived.push(ArchivedChain {
            tenant_id: plan.header.tenant_id,
            from_seq: plan
                .header
                .starts_after
                .map_or(1, |cut| cut.body.pruned_through_seq + 1),
            through_seq: plan.through.seq,
            pruned,
        });
    }
    Ok(archived)
}

/// Deletes what lies behind the tenant's cut, one batch per transaction with a pause
/// between them; returns how many receipts it deleted.
async fn prune(
    store: &dyn Store,
    tenant: &TenantId,
    request: &ArchiveRequest<'_>,
) -> anyhow::Result<u64> {
    let mut pruned = 0;
    loop {
        let deleted = store.prune_archived(tenant, request.batch).await?;
        if deleted == 0 {
            return Ok(pruned);
        }
        pruned += deleted;
        tokio::time::sleep(request.pause).await;
    }
}

/// Writes the segment of every plan to `out` (through a temporary file, synced and
/// renamed), verifying each chain as it goes: nothing is archived that does not verify.
async fn write_segment(
    store: &dyn Store,
    keys: &aegis_core::receipt::KeyRing,
    plans: &[Plan],
    out: &Path,
) -> anyhow::Result<()> {
    let public_keys = public_keys(store).await?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let header = SegmentHeader {
        aegis_segment: 1,
        chains: plans.iter().map(|plan| plan.header.clone()).collect(),
        public_keys: public_keys
            .iter()
            .filter(|(id, hex_key)| {
                aegis_core::receipt::decode_public_key(hex_key).is_some_and(|k| key_id(&k) == **id)
            })
            .map(|(id, hex_key)| (id.clone(), hex_key.clone()))
            .collect(),
    };
    serde_json::to_writer(&mut writer, &header)?;
    writer.write_all(b"\n")?;
    for plan in plans {
        let tenant = &plan.tenant;
        let mut verifier = ChainVerifier::new(tenant.as_str(), [], keys)?;
        let mut after = 0;
        if let Some(cut) = &plan.header.starts_after {
            if !cut.verify(keys) {
                bail!("the recorded cut of tenant {tenant} does not verify");
            }
            after = cut.body.pruned_through_seq;
            verifier = verifier.anchored_at(after, cut.body.pruned_through_hash.clone());
        }
        while after < plan.through.seq {
            let limit = (plan.through.seq - after).min(u64::from(PAGE)) as u32;
            let page = store.receipts(tenant, after, limit).await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                bail!(
                    "the chain of tenant {tenant} ends before seq {}",
                    plan.through.seq
                );
            };
            after = last.body.seq;
            let checkpoints = store
                .checkpoints_from(tenant, first.body.seq, PAGE + 1)
                .await?;
            verifier.add_checkpoints(&checkpoints)?;
            for receipt in page {
                verifier.push(&receipt)?;
                let line = exported_line(receipt, &checkpoints, &public_keys)?;
                serde_json::to_writer(&mut writer, &line)?;
                writer.write_all(b"\n")?;
            }
        }
        if verifier.last().as_ref() != Some(&plan.through) || !verifier.at_signed_head() {
            bail!(
                "the chain of tenant {tenant} does not end on a signed head at seq {}",
                plan.through.seq
            );
        }
        verifier.finish()?;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot move the archive to {}", out.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
