//! The gateway's Ed25519 receipt-signing key: from `AEGIS_SIGNING_KEY` (hex seed), else from
//! a key file ([`crate::key_file`]: mode 0600, generated on first start).

use crate::key_file;
use aegis_core::receipt::ReceiptSigner;
use anyhow::Context;
use std::path::Path;

pub fn load_or_create(seed_hex: Option<&str>, path: &Path) -> anyhow::Result<ReceiptSigner> {
    if let Some(seed_hex) = seed_hex {
        let seed = key_file::parse_hex(seed_hex.trim())
            .context("AEGIS_SIGNING_KEY must be 64 hex digits (an Ed25519 seed)")?;
        return Ok(ReceiptSigner::from_seed(&seed));
    }
    let (seed, created) = key_file::load_or_create(path, "signing key")?;
    let signer = ReceiptSigner::from_seed(&seed);
    if created {
        tracing::info!(key_id = signer.key_id(), path = %path.display(), "generated a new receipt signing key");
    }
    Ok(signer)
}
