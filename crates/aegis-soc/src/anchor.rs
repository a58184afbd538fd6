//! The anchor file: kept outside the database, beside the signing key, it holds for each
//! receipt chain the last checkpoint this gateway process signed (a signed statement "the
//! chain of tenant T had head H at seq N"), and how far the background integrity check has
//! verified the chain from seq 1 (`verified`: seq and hash of a signed head).
//!
//! A database writer can rewrite receipts and delete checkpoints, but cannot reach this file.
//! At start ([`crate::integrity::audit_at_start`]) and with `aegis receipts verify --db …
//! --anchors FILE`, every anchored chain must still hold the receipt at the anchored seq
//! with the anchored hash, covered by a valid checkpoint; so deleting the newest receipts
//! with their checkpoints, or every receipt and checkpoint of a chain, or rewriting history
//! at or before the anchor with recomputed hashes, or restoring an older database, is
//! detected.
//!
//! The verified points let the background check resume after a restart where it stopped
//! instead of walking every chain from seq 1 again ([`crate::integrity`]). They are kept
//! here and not in the database on purpose: a database writer who could move a chain's
//! verified point could make the check skip a receipt they edited, while this file is in the
//! signing key's trust domain (whoever can write it can sign receipts anyway). They need no
//! signature for the same reason.
//!
//! The file is written off the request path: by [`keep`] every interval when the gateway
//! signed something new, by the integrity check when it verified further, and once more at a
//! clean shutdown. It is replaced atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves the previous
//! or the new version, never a torn one. An anchor only moves forward: a chain's entry is
//! replaced only by a later head this process signed, and a chain this process refuses
//! (closed at start) keeps its entry, so the evidence stays until an operator moves the
//! file away.

use aegis_core::receipt::{ChainPoint, Checkpoint};
use aegis_store::{ReceiptStore, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Version of the anchor file format.
const FORMAT_VERSION: u32 = 1;

/// The file's content: per chain, the last checkpoint signed and the last point verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    signed: BTreeMap<String, Checkpoint>,
    verified: BTreeMap<String, ChainPoint>,
}

#[derive(Serialize, Deserialize)]
struct Document {
    v: u32,
    anchors: Vec<Checkpoint>,
    /// Absent in files written before the integrity check resumed from them.
    #[serde(default)]
    verified: Vec<VerifiedPoint>,
}

#[derive(Serialize, Deserialize)]
struct VerifiedPoint {
    tenant_id: String,
    #[serde(flatten)]
    point: ChainPoint,
}

impl Anchors {
    pub fn get(&self, tenant_id: &str) -> Option<&Checkpoint> {
        self.signed.get(tenant_id)
    }

    /// Every chain with a signed or a verified point.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        let verified_only = self
            .verified
            .keys()
            .filter(|tenant| !self.signed.contains_key(*tenant));
        self.signed.keys().chain(verified_only).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Checkpoint> {
        self.signed.values()
    }

    /// How far the integrity check had verified the chain of `tenant_id` from seq 1.
    pub fn verified(&self, tenant_id: &str) -> Option<&ChainPoint> {
        self.verified.get(tenant_id)
    }

    /// Every chain's verified point.
    pub fn verified_points(&self) -> impl Iterator<Item = (TenantId, &ChainPoint)> {
        self.verified
            .iter()
            .map(|(tenant, point)| (TenantId::new(tenant.as_str()), point))
    }

    /// Reads an anchor file; a missing file is no anchors. A file that cannot be read or
    /// parsed is an error: nothing should start on anchors it cannot check.
    pub fn read(path: &Path) -> io::Result<Anchors> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Anchors::default()),
            Err(error) => return Err(error),
        };
        let document: Document = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if document.v != FORMAT_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("anchor file version {} is not {FORMAT_VERSION}", document.v),
            ));
        }
        Ok(Anchors {
            signed: document
                .anchors
                .into_iter()
                .map(|c| (c.body.tenant_id.clone(), c))
                .collect(),
            verified: document
                .verified
                .into_iter()
                .map(|v| (v.tenant_id, v.point))
                .collect(),
        })
    }

    /// Moves each chain's anchor to the given checkpoint when it is later; returns whether
    /// anything moved.
    fn advance(&mut self, signed: Vec<Checkpoint>) -> bool {
        let mut moved = false;
        for checkpoint in signed {
            let current = self.signed.get(&checkpoint.body.tenant_id);
            if current.is_none_or(|c| c.body.seq < checkpoint.body.seq) {
                self.signed
                    .insert(checkpoint.body.tenant_id.clone(), checkpoint);
                moved = true;
            }
        }
        moved
    }

    /// Moves each chain's verified point forward to the given one when it is later; returns
    /// whether anything moved.
    fn advance_verified(&mut self, verified: Vec<(TenantId, ChainPoint)>) -> bool {
        let mut moved = false;
        for (tenant, point) in verified {
            let current = self.verified.get(tenant.as_str());
            if current.is_none_or(|c| c.seq < point.seq) {
                self.verified.insert(tenant.as_str().to_owned(), point);
                moved = true;
            }
        }
        moved
    }

    /// Replaces the file at `path` atomically and durably.
    fn write(&self, path: &Path) -> io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let document = Document {
            v: FORMAT_VERSION,
            anchors: self.signed.values().cloned().collect(),
            verified: self
                .verified
                .iter()
                .map(|(tenant_id, point)| VerifiedPoint {
                    tenant_id: tenant_id.clone(),
                    point: point.clone(),
                })
                .collect(),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut file, &document)?;
        file.write_all(b"\n")?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        // The rename is durable only once the directory is.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// The anchor file of this process and what it last wrote there.
#[derive(Debug)]
pub struct AnchorFile {
    path: PathBuf,
    written: Mutex<Anchors>,
}

impl AnchorFile {
    /// Opens the file at `path` (it need not exist yet).
    pub fn open(path: PathBuf) -> io::Result<AnchorFile> {
        let written = Anchors::read(&path)?;
        Ok(AnchorFile {
            path,
            written: Mutex::new(written),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The anchors as last written (or read at open).
    pub async fn anchors(&self) -> Anchors {
        self.written.lock().await.clone()
    }

    /// Moves the anchors to the heads `store` signed since, and rewrites the file if any
    /// moved.
    pub async fn update(&self, store: &dyn ReceiptStore) -> io::Result<()> {
        let signed = store.signed_heads();
        self.change(|anchors| anchors.advance(signed)).await
    }

    /// Moves the verified points forward to `verified`, and rewrites the file if any moved.
    pub async fn record_verified(&self, verified: Vec<(TenantId, ChainPoint)>) -> io::Result<()> {
        self.change(|anchors| anchors.advance_verified(verified))
            .await
    }

    /// Applies `advance` to a copy of the anchors and writes it if it says something moved.
    async fn change(&self, advance: impl FnOnce(&mut Anchors) -> bool) -> io::Result<()> {
        let mut written = self.written.lock().await;
        let mut next = written.clone();
        if !advance(&mut next) {
            return Ok(());
        }
        let path = self.path.clone();
        let document = next.clone();
        tokio::task::spawn_blocking(move || document.write(&path))
            .await
            .map_err(io::Error::other)??;
        *written = next;
        Ok(())
    }
}

/// Updates `file` every `interval` until `stop` turns true (the final update, after the
/// store's last commit, is the caller's).
pub async fn keep(
    file: Arc<AnchorFile>,
    store: Arc<dyn ReceiptStore>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(error) = file.update(store.as_ref()).await {
            tracing::error!(%error, path = %file.path().display(), "cannot write the anchor file; retrying next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::receipt::ReceiptSigner;

    fn checkpoint(tenant: &str, seq: u64) -> Checkpoint {
        let head = ChainPoint {
            seq,
            hash: "ab".repeat(32),
        };
        ReceiptSigner::from_seed(&[7; 32])
            .checkpoints([(tenant, &head)], "2026-11-25T00:00:00.000Z")
            .unwrap()
            .remove(0)
    }

    #[test]
    fn anchors_only_move_forward_and_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.anchors");
        assert_eq!(Anchors::read(&path).unwrap(), Anchors::default());
        let mut anchors = Anchors::default();
        assert!(anchors.advance(vec![checkpoint("acme", 5), checkpoint("globex", 2)]));
        assert!(
            !anchors.advance(vec![checkpoint("acme", 4)]),
            "never backwards"
        );
        assert!(!anchors.advance(vec![checkpoint("acme", 5)]));
        assert!(anchors.advance(vec![checkpoint("acme", 6)]));
        anchors.write(&path).unwrap();
        let read = Anchors::read(&path).unwrap();
        assert_eq!(read, anchors);
        assert_eq!(read.get("acme").unwrap().body.seq, 6);
        assert_eq!(read.tenants().collect::<Vec<_>>(), ["acme", "globex"]);
        // Only the file itself is left: the temporary one was renamed over it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A file without verified points (as written before they existed) still reads.
        std::fs::write(
            &path,
            std::fs::read_to_string(&path)
                .unwrap()
                .replace("\"verified\": []", "\"unrelated\": []"),
        )
        .unwrap();
        assert_eq!(Anchors::read(&path).unwrap(), anchors);

        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(
            Anchors::read(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    fn point(seq: u64) -> ChainPoint {
        ChainPoint {
            seq,
            hash: format!("{seq:064x}"),
        }
    }

    #[test]
    fn verified_points_only_move_forward_and_are_kept_beside_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.anchors");
        let acme = TenantId::new("acme");
        let mut anchors = Anchors::default();
        assert!(anchors.advance(vec![checkpoint("acme", 9)]));
        assert!(anchors.advance_verified(vec![(acme.clone(), point(7))]));
        assert!(!anchors.advance_verified(vec![(acme.clone(), point(3))]));
        assert!(anchors.advance_verified(vec![(TenantId::new("globex"), point(2))]));
        anchors.write(&path).unwrap();
        let read = Anchors::read(&path).unwrap();
        assert_eq!(read, anchors);
        assert_eq!(read.verified("acme"), Some(&point(7)));
        assert_eq!(
            read.get("acme").unwrap().body.seq,
            9,
            "the signed anchor is apart"
        );
        assert_eq!(read.tenants().collect::<Vec<_>>(), ["acme", "globex"]);
        let points: Vec<_> = read.verified_points().collect();
        assert_eq!(
            points,
            [(acme, &point(7)), (TenantId::new("globex"), &point(2))]
        );
    }
}
