//! `import`: a rootfs tarball becomes a single-layer image, and the shared step
//! that turns a config plus layer descriptors into a stored, named image.
//!
//! The tarball is read once: the decompressed stream is hashed (diff id), gzip-
//! compressed into the content store (blob digest) and unpacked into a snapshot,
//! all in the same pass.

use std::io::{self, Read, Write};

use berth_types::media_types;
use berth_types::{Descriptor, Digest, History, ImageConfig, Manifest, Reference};

use super::Image;
use crate::archive::{ArchiveError, decompress};
use crate::content::Writer;
use crate::{Store, StoreError};

/// Options for [`Store::import`].
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The name to give the image.
    pub name: Option<Reference>,
    /// The config to start from (platform, run config from `--change`); rootfs and
    /// history are filled in.
    pub config: ImageConfig,
    /// History comment (`Imported from -`).
    pub comment: String,
    /// RFC 3339 creation time.
    pub created: String,
}

/// Reads `r` and writes everything read to `w`.
pub(crate) struct Tee<R, W> {
    pub r: R,
    pub w: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The gzip level berth writes layers with (`BERTH_GZIP_LEVEL`, default 6 like
/// Go's `compress/gzip` that docker uses).
pub fn gzip_level() -> flate2::Compression {
    let lvl = std::env::var("BERTH_GZIP_LEVEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|l| *l <= 9)
        .unwrap_or(6);
    flate2::Compression::new(lvl)
}

impl Store {
    /// Imports a rootfs tarball (plain, gzip or zstd) as a one-layer image.
    pub fn import<R: Read>(&self, input: R, opts: ImportOptions) -> Result<Image, StoreError> {
        let _w = self.write_lock()?;
        let (_, plain) = decompress(input).map_err(ArchiveError::Tar)?;
        let gz = crate::pgzip::ParGzEncoder::new(self.content.writer()?, gzip_level())
            .map_err(ArchiveError::Tar)?;
        let mut tee = Tee { r: plain, w: gz };
        let ex = self.snapshots.extract(None, &mut tee)?;
        let blob_writer: Writer = tee
            .w
            .finish()
            .map_err(|e| ArchiveError::Tar(io::Error::other(format!("compressing layer: {e}"))))?;
        let size = blob_writer.len();
        let blob = blob_writer.commit(None, None)?;
        let diff_id = ex.diff_id.clone();
        let chain = self.snapshots.commit_extracted(ex, Some(&diff_id))?;
        self.snapshots.vouch(&chain, &blob)?;

        let mut config = opts.config;
        config.created = Some(opts.created.clone());
        config.rootfs.diff_ids = vec![diff_id];
        config.history = vec![History {
            created: Some(opts.created),
            comment: Some(opts.comment),
            ..Default::default()
        }];
        let layer = Descriptor::new(media_types::OCI_LAYER_GZIP, blob, size);
        self.put_image(&config, vec![layer], opts.name.as_ref())
    }

    /// Stores `config` and an OCI manifest over `layers` (whose blobs must be in
    /// the store), names it, and returns the image. Callers hold the write lock.
    pub fn put_image(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        name: Option<&Reference>,
    ) -> Result<Image, StoreError> {
        let config_bytes = config.to_bytes();
        let config_digest = self.content.put(&config_bytes, None)?;
        let manifest = Manifest::oci(config_digest.clone(), config_bytes.len() as u64, layers);
        self.put_manifest(manifest, config.clone(), name, None)
    }

    /// Stores a manifest whose config and layers are in the store and names it.
    pub fn put_manifest(
        &self,
        manifest: Manifest,
        config: ImageConfig,
        name: Option<&Reference>,
        repo_digest: Option<&Reference>,
    ) -> Result<Image, StoreError> {
        for l in &manifest.layers {
            if !self.content.exists(&l.digest) {
                return Err(crate::content::ContentError::NotFound(l.digest.clone()).into());
            }
        }
        let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let digest: Digest = self.content.put(&bytes, None)?;
        let mt = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_types::OCI_MANIFEST.to_string());
        let desc = Descriptor::new(&mt, digest, bytes.len() as u64);
        self.add_name(&desc, name, repo_digest)?;
        let name = name.map(|n| n.clone().with_default_tag());
        Ok(Image {
            id: manifest.config.digest.clone(),
            manifests: vec![desc.digest.clone()],
            manifest_desc: desc,
            manifest,
            config,
            names: name.into_iter().collect(),
            repo_digests: repo_digest.into_iter().cloned().collect(),
            index: None,
            secondary: false,
        })
    }
}
