//! Key files: 32 secret bytes as 64 hex digits, created mode 0600 on first use. As ssh does
//! with a private key, a key file that its group or others may read or write is refused: its
//! secret must be assumed known, and loosening permissions is easy to do by accident (a copy,
//! an archive, a deployment tool).

use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;

/// Reads the key in `path`, or creates it if there is none; `what` names it in messages.
/// Returns the key and whether it was just created.
pub fn load_or_create(path: &Path, what: &str) -> anyhow::Result<([u8; 32], bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            refuse_if_exposed(path, what)?;
            let key = parse_hex(text.trim())
                .with_context(|| format!("{what} file {} is not 64 hex digits", path.display()))?;
            Ok((key, false))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok((create(path, what)?, true))
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read {what} file {}", path.display()))
        }
    }
}

/// 32 bytes from 64 hex digits.
pub fn parse_hex(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text)?;
    let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!("expected 32 bytes, found {}", bytes.len());
    };
    Ok(key)
}

#[cfg(unix)]
fn refuse_if_exposed(path: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} file {path} has mode {mode:o}: its group or others may read or change it. \
             Restrict it to its owner (`chmod 600 {path}`), and replace the key if others may \
             have read it.",
            path = path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_exposed(_path: &Path, _what: &str) -> anyhow::Result<()> {
    Ok(())
}

fn create(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("the system random source failed: {e}"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
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
        .open(path)
        .with_context(|| format!("cannot create {what} file {}", path.display()))?;
    file.write_all(hex::encode(key).as_bytes())?;
    file.sync_all()?;
    Ok(key)
}
