//! Garbage collection and `system check`.
//!
//! Both take the store's exclusive lock, so no import, load, pull, build or
//! container create is writing meanwhile (a build holds the shared lock from
//! its first base lookup to its image, so what it has yet to reference is
//! never collected under it); of `ingest/` and `snapshots/tmp/` only the
//! entries of processes that are gone are removed (names carry the pid).
//! Roots are the names in `index.json`, active snapshots (containers, build
//! steps) and the extra roots other components register under `roots/` (the
//! build cache).

use std::collections::BTreeSet;
use std::path::PathBuf;

use berth_types::image::Descriptor;
use berth_types::{AnyManifest, Digest, ImageConfig};

use crate::content::ContentError;
use crate::{Store, StoreError};
use berth_fs::{atomic_write, mkdir_all, remove_any};

/// Manifests larger than this are refused everywhere (as registries do).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// What gc removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: Vec<Digest>,
    /// Layers (chain ids) deleted.
    pub layers_removed: Vec<Digest>,
    /// Bytes freed (blobs and layer content).
    pub bytes_freed: u64,
    /// Leftover temporary files removed.
    pub temps_removed: usize,
}

/// A problem `system check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob whose content does not match its digest.
    CorruptBlob(Digest),
    /// An image referencing a blob that is missing or corrupt.
    BrokenImage {
        /// The image's names (or id).
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer directory without valid metadata.
    BrokenLayer(PathBuf),
    /// A layer an image needs that is not unpacked.
    MissingLayer {
        /// The image.
        image: String,
        /// The chain id.
        chain_id: Digest,
    },
    /// Leftovers from an interrupted command (harmless; removed by `--repair` and gc).
    Leftover(PathBuf),
    /// A store directory other local users may enter (setuid files in
    /// layers and containers would be theirs to run): made 0700 by `--repair`.
    Exposed(PathBuf, u32),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob(d) => write!(f, "blob {d} is corrupt"),
            Problem::BrokenImage { image, reason } => write!(f, "image {image}: {reason}"),
            Problem::BrokenLayer(p) => {
                write!(f, "layer directory {} has no valid metadata", p.display())
            }
            Problem::MissingLayer { image, chain_id } => {
                write!(f, "image {image}: layer {chain_id} is not unpacked")
            }
            Problem::Leftover(p) => write!(f, "leftover temporary {}", p.display()),
            Problem::Exposed(p, mode) => write!(
                f,
                "{} is mode {mode:o}: other users may reach image and container files (want 700)",
                p.display()
            ),
        }
    }
}

impl Problem {
    /// Whether this problem means the store is inconsistent (not just untidy).
    pub fn is_error(&self) -> bool {
        !matches!(self, Problem::Leftover(_))
    }
}

/// What `system check` found and did.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Blobs verified.
    pub blobs_checked: usize,
    /// Images checked.
    pub images_checked: usize,
    /// Layers checked.
    pub layers_checked: usize,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// What `--repair` did, one line each.
    pub repairs: Vec<String>,
}

impl Store {
    /// Registers `digests` as gc roots under `name` (e.g. the build cache).
    pub fn set_roots(&self, name: &str, digests: &[Digest]) -> Result<(), StoreError> {
        let dir = self.root().join("roots");
        mkdir_all(&dir)?;
        let body = serde_json::to_vec(digests).expect("roots serialise");
        atomic_write(&dir.join(name), &body)?;
        Ok(())
    }

    fn extra_roots(&self) -> Vec<Digest> {
        let dir = self.root().join("roots");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path())
                    && let Ok(v) = serde_json::from_slice::<Vec<Digest>>(&b)
                {
                    out.extend(v);
                }
            }
        }
        out
    }

    /// Marks a manifest (or index) and everything it references.
    fn mark(&self, d: &Digest, blobs: &mut BTreeSet<Digest>, chains: &mut BTreeSet<Digest>) {
        if !blobs.insert(d.clone()) {
            return;
        }
        // Only small blobs can be manifests; a root may also be a layer blob.
        if self.content.size(d).is_none_or(|s| s > MAX_MANIFEST_SIZE) {
            return;
        }
        let Ok(bytes) = self.content.read(d) else {
            return;
        };
        match AnyManifest::parse(&bytes, None) {
            Ok(AnyManifest::Index(i)) => {
                for m in &i.manifests {
                    self.mark(&m.digest, blobs, chains);
                }
            }
            Ok(AnyManifest::Image(m)) => {
                blobs.insert(m.config.digest.clone());
                for l in &m.layers {
                    blobs.insert(l.digest.clone());
                }
                if let Ok(cb) = self.content.read(&m.config.digest)
                    && let Ok(c) = serde_json::from_slice::<ImageConfig>(&cb)
                {
                    chains.extend(berth_types::chain_ids(&c.rootfs.diff_ids));
                }
            }
            Err(_) => {
                // Not a manifest: a plain blob root (a cached layer or config).
            }
        }
    }

    /// Removes every blob and layer no root reaches, and leftover temporaries.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _x = self.exclusive_lock()?;
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for d in self.read_index()?.manifests {
            self.mark(&d.digest, &mut blobs, &mut chains);
        }
        for r in self.extra_roots() {
            self.mark(&r, &mut blobs, &mut chains);
            chains.insert(r); // a root may name a layer by chain id
        }
        for a in self.snapshots.actives()? {
            if let Some(p) = a.parent {
                chains.insert(p);
            }
        }
        // Parents of live layers are live (overlay lowers).
        let layers = self.snapshots.layers()?;
        let mut changed = true;
        while changed {
            changed = false;
            for l in &layers {
                if chains.contains(&l.chain_id)
                    && let Some(p) = &l.parent
                    && chains.insert(p.clone())
                {
                    changed = true;
                }
            }
        }
        let mut report = GcReport::default();
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                report.bytes_freed += self.content.size(&d).unwrap_or(0);
                self.content.delete(&d)?;
                report.blobs_removed.push(d);
            }
        }
        for l in layers {
            if !chains.contains(&l.chain_id) {
                report.bytes_freed += l.size;
                self.snapshots.remove_layer(&l.chain_id)?;
                report.layers_removed.push(l.chain_id);
            }
        }
        for p in self
            .content
            .stale_ingests()
            .into_iter()
            .chain(self.snapshots.stale_tmp())
        {
            remove_any(&p)?;
            report.temps_removed += 1;
        }
        Ok(report)
    }

    /// Verifies every blob, image and layer; with `repair`, removes what is broken
    /// (and re-unpacks layers whose blobs are intact).
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let _x = self.exclusive_lock()?;
        let mut r = CheckReport::default();
        let mut corrupt = BTreeSet::new();
        for d in self.content.list()? {
            r.blobs_checked += 1;
            match self.content.verify(&d) {
                Ok(()) => {}
                Err(ContentError::Corrupt { .. }) => {
                    corrupt.insert(d.clone());
                    r.problems.push(Problem::CorruptBlob(d));
                }
                Err(e) => return Err(e.into()),
            }
        }
        for p in self.snapshots.broken_layers() {
            r.problems.push(Problem::BrokenLayer(p));
        }
        r.layers_checked = self.snapshots.layers()?.len();
        let idx = self.read_index()?;
        let mut seen = BTreeSet::new();
        let mut broken_manifests = BTreeSet::new();
        let mut verified = BTreeSet::new();
        let mut relayer = Vec::new();
        for desc in &idx.manifests {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            r.images_checked += 1;
            let label = idx
                .manifests
                .iter()
                .filter(|d| d.digest == desc.digest)
                .filter_map(|d| d.annotation(berth_types::image::annotations::REF_NAME))
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| desc.digest.to_string());
            match self.check_entry(desc, &corrupt, &mut verified) {
                ImageCheck::Sound => {}
                ImageCheck::Broken(reason) => {
                    broken_manifests.insert(desc.digest.clone());
                    r.problems.push(Problem::BrokenImage {
                        image: label,
                        reason,
                    });
                }
                ImageCheck::Unpack(chain_id, layers) => {
                    r.problems.push(Problem::MissingLayer {
                        image: label,
                        chain_id,
                    });
                    relayer.push(layers);
                }
            }
        }
        self.check_files(&mut r);
        if repair {
            self.repair(&mut r, &broken_manifests, relayer)?;
        }
        Ok(r)
    }

    /// One entry of the name index: an image, or an index whose present
    /// children are each checked (the first broken one breaks the entry).
    fn check_entry(
        &self,
        top: &Descriptor,
        corrupt: &BTreeSet<Digest>,
        verified: &mut BTreeSet<(Digest, Digest)>,
    ) -> ImageCheck {
        if !berth_types::image::media_types::is_index(&top.media_type) {
            return self.check_image(top, corrupt, verified);
        }
        if corrupt.contains(&top.digest) {
            return ImageCheck::Broken("index: corrupt".into());
        }
        let children = match self.entry_images(top) {
            Ok(c) => c,
            Err(e) => return ImageCheck::Broken(e.to_string()),
        };
        let mut first = ImageCheck::Sound;
        for (child, _) in children {
            match self.check_image(&child, corrupt, verified) {
                ImageCheck::Sound => {}
                b @ ImageCheck::Broken(_) => return b,
                u => {
                    if matches!(first, ImageCheck::Sound) {
                        first = u;
                    }
                }
            }
        }
        first
    }

    /// One image: its documents load, its layer blobs are there, intact and
    /// unpack to the diff ids its config names (once per pair: images share
    /// layers), and its layers are unpacked.
    fn check_image(
        &self,
        desc: &Descriptor,
        corrupt: &BTreeSet<Digest>,
        verified: &mut BTreeSet<(Digest, Digest)>,
    ) -> ImageCheck {
        let docs = if corrupt.contains(&desc.digest) {
            Err(StoreError::invalid("manifest", "corrupt"))
        } else {
            self.load_image_docs(desc)
        };
        let (m, c) = match docs {
            Ok(x) => x,
            Err(e) => return ImageCheck::Broken(e.to_string()),
        };
        let bad_layer = m
            .layers
            .iter()
            .find(|l| corrupt.contains(&l.digest) || !self.content.exists(&l.digest));
        if let Some(l) = bad_layer {
            return ImageCheck::Broken(format!("layer blob {} is missing or corrupt", l.digest));
        }
        for (l, d) in m.layers.iter().zip(&c.rootfs.diff_ids) {
            let pair = (l.digest.clone(), d.clone());
            if verified.contains(&pair) {
                continue;
            }
            if let Err(e) = self.verify_layer_blob(&l.digest, d) {
                return ImageCheck::Broken(e.to_string());
            }
            verified.insert(pair);
        }
        let missing = berth_types::chain_ids(&c.rootfs.diff_ids)
            .into_iter()
            .find(|chain| !self.snapshots.has_layer(chain));
        match missing {
            Some(chain) => ImageCheck::Unpack(
                chain,
                (
                    m.layers.iter().map(|l| l.digest.clone()).collect(),
                    c.rootfs.diff_ids.clone(),
                ),
            ),
            None => ImageCheck::Sound,
        }
    }

    /// Leftover temporaries, and store directories others can read.
    fn check_files(&self, r: &mut CheckReport) {
        for p in self
            .content
            .stale_ingests()
            .into_iter()
            .chain(self.snapshots.stale_tmp())
        {
            r.problems.push(Problem::Leftover(p));
        }
        for d in crate::fsutil::PRIVATE_DIRS {
            use std::os::unix::fs::PermissionsExt;
            let p = self.root.join(d);
            if let Ok(m) = std::fs::metadata(&p)
                && m.permissions().mode() & 0o777 != 0o700
            {
                r.problems
                    .push(Problem::Exposed(p, m.permissions().mode() & 0o7777));
            }
        }
    }

    /// `check --repair`: deletes corrupt blobs, broken layers and leftovers,
    /// makes exposed directories private, drops broken images from the
    /// index, and unpacks the layers of sound images again.
    fn repair(
        &self,
        r: &mut CheckReport,
        broken_manifests: &BTreeSet<Digest>,
        relayer: Vec<(Vec<Digest>, Vec<Digest>)>,
    ) -> Result<(), StoreError> {
        for p in &r.problems {
            match p {
                Problem::CorruptBlob(d) => {
                    self.content.delete(d)?;
                    r.repairs.push(format!("deleted corrupt blob {d}"));
                }
                Problem::BrokenLayer(p) | Problem::Leftover(p) => {
                    remove_any(p)?;
                    r.repairs.push(format!("removed {}", p.display()));
                }
                Problem::Exposed(p, _) => {
                    crate::fsutil::private_dir(p)?;
                    r.repairs
                        .push(format!("made {} private (700)", p.display()));
                }
                _ => {}
            }
        }
        if !broken_manifests.is_empty() {
            let names = self.update_index(|idx| {
                let before: Vec<String> = idx
                    .manifests
                    .iter()
                    .filter(|d| broken_manifests.contains(&d.digest))
                    .map(|d| {
                        d.annotation(berth_types::image::annotations::REF_NAME)
                            .map(str::to_string)
                            .unwrap_or_else(|| d.digest.to_string())
                    })
                    .collect();
                idx.manifests
                    .retain(|d| !broken_manifests.contains(&d.digest));
                Ok(before)
            })?;
            for n in names {
                r.repairs.push(format!("removed broken image {n}"));
            }
        }
        for (blobs, diff_ids) in relayer {
            if let Some(t) = self.unpack(&blobs, &diff_ids)? {
                r.repairs.push(format!("re-unpacked layers up to {t}"));
            }
        }
        Ok(())
    }
}

/// What [`Store::check`] found of one image.
enum ImageCheck {
    /// Nothing wrong.
    Sound,
    /// Broken beyond repair (removed by `--repair`), and why.
    Broken(String),
    /// Sound, but a layer is not unpacked: the first missing chain id, and
    /// the layer blobs and diff ids to unpack again.
    Unpack(Digest, (Vec<Digest>, Vec<Digest>)),
}
