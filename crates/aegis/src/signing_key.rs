//! The gateway's Ed25519 receipt-signing key: from `AEGIS_SIGNING_KEY` (hex seed), else from
//! a key file, generated with mode 0600 on first start.

use aegis_core::receipt::ReceiptSigner;
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;

pub fn load_or_create(seed_hex: Option<&str>, key_file: &Path) -> anyhow::Result<ReceiptSigner> {
    if let Some(seed_hex) = seed_hex {
        return signer_from_hex(seed_hex.trim())
            .context("AEGIS_SIGNING_KEY must be 64 hex digits (an Ed25519 seed)");
    }
    match std::fs::read_to_string(key_file) {
        Ok(text) => signer_from_hex(text.trim()).with_context(|| {
            format!(
                "signing key file {} is not a 64-hex-digit Ed25519 seed",
                key_file.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create(key_file),
        Err(error) => Err(error)
            .with_context(|| format!("cannot read signing key file {}", key_file.display())),
    }
}

fn signer_from_hex(text: &str) -> anyhow::Result<ReceiptSigner> {
    let bytes = hex::decode(text)?;
    let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!("expected 32 bytes, found {}", bytes.len());
    };
    Ok(ReceiptSigner::from_seed(&seed))
}

fn create(key_file: &Path) -> anyhow::Result<ReceiptSigner> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the system random source failed: {e}"))?;
    if let Some(parent) = key_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(key_file)
        .with_context(|| format!("cannot create signing key file {}", key_file.display()))?;
    file.write_all(hex::encode(seed).as_bytes())?;
    file.sync_all()?;
    let signer = ReceiptSigner::from_seed(&seed);
    tracing::info!(key_id = signer.key_id(), path = %key_file.display(), "generated a new receipt signing key");
    Ok(signer)
}
