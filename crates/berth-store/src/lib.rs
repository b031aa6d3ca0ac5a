//! berth's image store: content-addressed blobs ([`content`]), layer tars applied
//! and produced safely ([`archive`]), overlay snapshots keyed by chain id
//! ([`snapshot`]) and image names with their manifests ([`image`]).
//!
//! The store never spawns a process and knows nothing of Dockerfiles or containers.
//!
//! On disk, under the store root:
//! ```text
//! content/     an OCI image layout: oci-layout, index.json (the image names), blobs/sha256/…
//!              and ingest/ (blobs being written)
//! snapshots/   layers/<chain id>/{fs,meta.json}, active/<key>/{fs,work,meta.json}, tmp/
//! locks/       gc.lock (shared by writers, exclusive for gc and check), index.lock
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod compress;
pub mod content;
pub mod fsutil;
pub mod image;
pub mod inroot;
pub mod pgzip;
pub mod snapshot;

use std::path::{Path, PathBuf};

use berth_types::Digest;
use berth_types::reference::ReferenceError;

use crate::archive::ArchiveError;
use crate::content::{ContentError, ContentStore};
use crate::snapshot::{SnapshotError, Snapshotter};
use berth_fs::{LockGuard, PathError, lock_exclusive, lock_shared};

/// Every error the store returns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on a path.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Content store.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Snapshots.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Layer archives.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A malformed image reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image by that name or id.
    #[error("No such image: {0}")]
    ImageNotFound(String),
    /// A short id that matches several images.
    #[error("ambiguous image id {0:?}: it matches more than one image")]
    Ambiguous(String),
    /// A document that is not what it should be.
    #[error("{what}: {msg}")]
    Invalid {
        /// Which document (`manifest sha256:…`, `archive manifest.json`).
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// An operation refused without `--force`.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    pub(crate) fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        StoreError::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Blobs.
    pub content: ContentStore,
    /// Unpacked layers and active snapshots.
    pub snapshots: Snapshotter,
    /// Manifests and configs already read and verified by this process
    /// (shared by clones): content-addressed, so never stale.
    docs: std::sync::Arc<std::sync::Mutex<image::DocMemo>>,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        // Private before anything is put in it (and made so if an older
        // berth left it readable): see [`fsutil::private_dir`].
        for d in ["", "locks", "content", "snapshots"] {
            debug_assert!(fsutil::PRIVATE_DIRS.contains(&d));
            fsutil::private_dir(&root.join(d))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            content: ContentStore::open_at(&root.join("content"))?,
            snapshots: Snapshotter::open_at(&root.join("snapshots"))?,
            docs: Default::default(),
        })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Held by every operation that writes blobs or layers, so gc never deletes
    /// what a concurrent command is about to reference.
    pub fn write_lock(&self) -> Result<LockGuard, StoreError> {
        Ok(lock_shared(&self.root.join("locks/gc.lock"))?)
    }

    /// Held by gc and check: no writer is active meanwhile.
    pub fn exclusive_lock(&self) -> Result<LockGuard, StoreError> {
        Ok(lock_exclusive(&self.root.join("locks/gc.lock"))?)
    }

    pub(crate) fn index_lock(&self) -> Result<LockGuard, StoreError> {
        Ok(lock_exclusive(&self.root.join("locks/index.lock"))?)
    }

    /// Unpacks every layer of `diff_ids` whose blob is `blobs[i]`, skipping those
    /// already unpacked; returns the top chain id (None for an image with no layers).
    pub fn unpack(
        &self,
        blobs: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<Option<Digest>, StoreError> {
        if blobs.len() != diff_ids.len() {
            return Err(StoreError::invalid(
                "image",
                format!(
                    "manifest has {} layers but the config lists {} diff ids",
                    blobs.len(),
                    diff_ids.len()
                ),
            ));
        }
        let chains = berth_types::chain_ids(diff_ids);
        let mut parent: Option<Digest> = None;
        for ((blob, diff_id), chain) in blobs.iter().zip(diff_ids).zip(&chains) {
            match self.snapshots.layer(chain)? {
                None => {
                    let mut r = self.content.open(blob)?;
                    let ex = {
                        let (_, plain) = archive::decompress(&mut r).map_err(ArchiveError::Tar)?;
                        self.snapshots.extract(parent.as_ref(), plain)?
                    };
                    // Read the blob to its end so its digest is checked before the layer
                    // becomes visible.
                    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| {
                        content::unwrap_read_error(e, blob, &self.content.path(blob))
                    })?;
                    self.snapshots.commit_extracted(ex, Some(diff_id))?;
                    self.snapshots.vouch(chain, blob)?;
                }
                // The layer is there, but this image may pair it with another
                // blob: believe that blob only once it is seen to unpack to
                // the same diff id (else a loaded or pulled image would name a
                // blob whose content is not its layer, and push it so).
                Some(meta) if !meta.blobs.contains(blob) => {
                    self.verify_layer_blob(blob, diff_id)?;
                    self.snapshots.vouch(chain, blob)?;
                }
                Some(_) => {}
            }
            parent = Some(chain.clone());
        }
        Ok(parent)
    }

    /// Checks that `blob` decompresses to a stream whose digest is `diff_id`.
    pub fn verify_layer_blob(&self, blob: &Digest, diff_id: &Digest) -> Result<(), StoreError> {
        let mut r = self.content.open(blob)?;
        let actual = {
            let (_, plain) = archive::decompress(&mut r).map_err(ArchiveError::Tar)?;
            let mut h = berth_types::digest::HashingReader::new(plain);
            std::io::copy(&mut h, &mut std::io::sink())
                .map_err(|e| StoreError::invalid(format!("layer {blob}"), e.to_string()))?;
            h.finish().1
        };
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| content::unwrap_read_error(e, blob, &self.content.path(blob)))?;
        if actual != *diff_id {
            return Err(StoreError::invalid(
                format!("layer {blob}"),
                format!("its content is {actual}, but the image config says {diff_id}"),
            ));
        }
        Ok(())
    }
}
