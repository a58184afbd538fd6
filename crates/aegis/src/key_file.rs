//! Key files: 32 secret bytes as 64 hex digits, created mode 0600 on first use. As ssh does
//! with a private key, a key file that its group or others may read or write is refused: its
//! secret must be assumed known, and loosening permissions is easy to do by accident (a copy,
//! an archive, a deployment tool).

use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;

/// Reads the key in `path`, or creates it if there is none; `what` names it in messages.
/// Returns the key and whether it was just created. Replicas that share a key file and start
/// at once all end up with the one key that was created first.
pub fn load_or_create(path: &Path, what: &str) -> anyhow::Result<([u8; 32], bool)> {
    match read(path, what)? {
        Some(key) => Ok((key, false)),
        None => create(path, what),
    }
}

/// The key in `path`; `None` if there is no such file.
fn read(path: &Path, what: &str) -> anyhow::Result<Option<[u8; 32]>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            refuse_if_exposed(path, what)?;
            let key = parse_hex(text.trim())
                .with_context(|| format!("{what} file {} is not 64 hex digits", path.display()))?;
            Ok(Some(key))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
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

/// Creates the key file, or reads the one another process created first. The key is written
/// and synced in a file of its own, which is then linked to `path` unless something is there
/// already: no reader ever sees a key half written, and of two processes creating the file
/// at once, one key wins and both use it.
fn create(path: &Path, what: &str) -> anyhow::Result<([u8; 32], bool)> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("the system random source failed: {e}"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cannot_create = || format!("cannot create {what} file {}", path.display());
    // Mode 0600 on Unix, as tempfile creates every file.
    let mut staged = tempfile::NamedTempFile::new_in(dir).with_context(cannot_create)?;
    staged
        .write_all(hex::encode(key).as_bytes())
        .with_context(cannot_create)?;
    staged.as_file().sync_all().with_context(cannot_create)?;
    match staged.persist_noclobber(path) {
        Ok(_) => {
            // The new name must survive a power loss too, or the key it names is lost.
            #[cfg(unix)]
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .with_context(cannot_create)?;
            Ok((key, true))
        }
        Err(lost) if lost.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = read(path, what)?.with_context(|| {
                format!(
                    "{what} file {} was created by another process and removed again",
                    path.display()
                )
            })?;
            Ok((theirs, false))
        }
        Err(failed) => Err(failed.error).with_context(cannot_create),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn processes_creating_one_key_file_at_once_all_use_the_one_key_created() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().join("keys").join("aegis.secrets-key"));
            let start = Arc::new(Barrier::new(8));
            let starters: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (Arc::clone(&path), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        load_or_create(&path, "secrets key")
                    })
                })
                .collect();
            let keys: Vec<([u8; 32], bool)> = starters
                .into_iter()
                .map(|starter| starter.join().unwrap().unwrap())
                .collect();
            assert_eq!(keys.iter().filter(|(_, created)| *created).count(), 1);
            assert!(keys.iter().all(|(key, _)| *key == keys[0].0));
            assert_eq!(
                load_or_create(&path, "secrets key").unwrap(),
                (keys[0].0, false)
            );
            // Nothing but the key file is left in its directory.
            let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(names, [std::ffi::OsString::from("aegis.secrets-key")]);
        }
    }
}
