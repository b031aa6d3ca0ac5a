//! Snapshots: unpacked layers keyed by chain id, and writable (active) snapshots
//! on top of them for containers and build steps.
//!
//! Two drivers, chosen once per store and recorded in `snapshots/driver`:
//! - **overlay**: each committed layer directory holds only that layer's changes
//!   (whiteouts as overlayfs 0/0 devices and opaque xattrs); an active snapshot
//!   is an upper and a work directory, and its mount is `overlay` with the parent
//!   chain as `lowerdir`.
//! - **copy**: when overlayfs is unavailable, each layer directory holds the full
//!   tree (parent copied, then the layer applied with deleting whiteouts), and an
//!   active snapshot is a full copy mounted with a bind mount.
//!
//! The overlay layout may also be mounted by `fuse-overlayfs` (the store's
//! driver then reads `fuse-overlayfs`): rootless berth's fallback where the
//! kernel will not mount overlayfs in a user namespace (before Linux 5.11),
//! as podman's `mount_program`. Its mounts are described with the type
//! `fuse-overlayfs` and made by [`mount_fuse`]: a process that serves the
//! mount until it is unmounted. It keeps opaque directories as
//! `.wh..wh..opq` files, which [`diff`] reads as overlayfs's xattr.
//!
//! Like containerd's snapshotters, this module only *describes* mounts
//! ([`Mount`]); the engine performs them. The one exception is the overlay
//! capability probe when a store is first created.
//!
//! Layer directories appear only by an atomic rename of a finished directory from
//! `tmp/`, after their `meta.json` is written; anything left in `tmp/` is garbage
//! from a killed process.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_types::Digest;
use berth_types::digest::HashingReader;
use serde::{Deserialize, Serialize};

use crate::archive::apply::{ApplyOptions, Whiteouts, apply};
use crate::archive::{ArchiveError, diff};
use crate::inroot::InRoot;
use berth_fs::{IoContext, PathError, atomic_write, mkdir_all, remove_any, unique_name};
use rustix::fs::FileType;

/// Errors of the snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// I/O on a path.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Applying or diffing a layer failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The layer content does not hash to the diff id the image config names.
    #[error("layer diff id mismatch: the image config says {expected}, the layer is {actual}")]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// A parent layer is not unpacked.
    #[error("parent layer {0} is not unpacked")]
    MissingParent(Digest),
    /// Unknown active snapshot.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// An active snapshot key is already used.
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    /// Corrupt metadata.
    #[error("snapshot metadata {path}: {err}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// The parse error.
        err: serde_json::Error,
    },
}

/// How snapshots are stored and mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// overlayfs layers.
    Overlay,
    /// Full copies.
    Copy,
}

impl Driver {
    /// The driver's name, as `docker info` would print it.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }
}

/// A mount description (`mount -t typ source target -o options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    #[serde(rename = "type")]
    pub typ: String,
    /// Source path (`overlay` for overlay mounts).
    pub source: String,
    /// Mount options (`lowerdir=…`, `rbind`, `ro`).
    pub options: Vec<String>,
}

impl Mount {
    /// A recursive bind mount of `src`, read-only or read-write.
    pub fn bind(src: &Path, ro: bool) -> Mount {
        Mount {
            typ: "bind".into(),
            source: src.display().to_string(),
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        }
    }
}

/// What is recorded about a committed layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The layer's chain id (its key).
    pub chain_id: Digest,
    /// The parent chain id.
    pub parent: Option<Digest>,
    /// The layer's diff id.
    pub diff_id: Digest,
    /// Bytes of file content in the layer (docker's SIZE).
    pub size: u64,
    /// Compressed blobs known to unpack to exactly this diff id (checked
    /// when they were unpacked, or when an image that pairs one with this
    /// layer was first loaded or pulled): another blob claiming the same
    /// diff id is verified before it is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<Digest>,
}

/// What is recorded about an active snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveMeta {
    /// The key it was prepared under.
    pub key: String,
    /// The layer it sits on.
    pub parent: Option<Digest>,
    /// Whether it is a read-only view.
    pub readonly: bool,
    /// Free-form labels (the engine records the image and container here).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made by [`Snapshotter::prepare_scratch`]: not meant to outlive a
    /// crash, so its overlay is mounted `volatile`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scratch: bool,
}

/// The snapshotter of one store.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    driver: Driver,
    /// Overlay layers mounted by fuse-overlayfs.
    fuse: bool,
}

/// The driver name of overlay layers mounted by fuse-overlayfs.
pub const FUSE: &str = "fuse-overlayfs";

/// fuse-overlayfs's program, when installed.
pub fn fuse_program() -> Option<PathBuf> {
    berth_fs::which(FUSE)
}

/// The mounts a runtime is given for a snapshot's `mounts`: the same, but a
/// fuse-overlayfs snapshot is mounted first on `at` (made if missing; its
/// server then runs outside the container) and handed over as a bind of
/// `at` (after whatever an earlier run left mounted there). Returns whether
/// it mounted `at` (the caller unmounts it, [`unmount_all`], once the
/// container is done).
pub fn runtime_mounts(mounts: Vec<Mount>, at: &Path) -> std::io::Result<(Vec<Mount>, bool)> {
    match mounts.first() {
        Some(m) if m.typ == FUSE => {
            unmount_all(at);
            fs::create_dir_all(at)?;
            mount_fuse(m, at)?;
            Ok((vec![Mount::bind(at, false)], true))
        }
        _ => Ok((mounts, false)),
    }
}

/// Detaches every mount stacked on `at`, if it exists.
pub fn unmount_all(at: &Path) {
    if at.exists() {
        while rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).is_ok() {}
    }
}

/// Mounts a `fuse-overlayfs` description on `target`: the program mounts
/// it and stays to serve it (until it is unmounted, or its mount
/// namespace goes).
pub fn mount_fuse(m: &Mount, target: &Path) -> std::io::Result<()> {
    let prog = fuse_program().ok_or_else(|| {
        std::io::Error::other("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
    })?;
    let log = tempfile::tempfile()?;
    let status = std::process::Command::new(prog)
        .arg("-o")
        .arg(m.options.join(","))
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone()?)
        .status()?;
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    let mut log = log;
    std::io::Seek::rewind(&mut log)?;
    let _ = log.read_to_string(&mut err);
    let err: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("unknown argument ignored"))
        .collect();
    Err(std::io::Error::other(format!(
        "fuse-overlayfs on {}: {}",
        target.display(),
        err.join("; ")
    )))
}

/// A layer unpacked into a temporary directory, not yet visible.
pub struct Extracted {
    dir: PathBuf,
    /// The digest of the uncompressed layer stream.
    pub diff_id: Digest,
    /// Bytes of file content.
    pub size: u64,
    /// Bytes of the uncompressed stream.
    pub tar_size: u64,
    parent: Option<Digest>,
}

impl Drop for Extracted {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
    }
}

impl Snapshotter {
    /// Opens the snapshotter under `root`, choosing the driver on first use
    /// (`BERTH_SNAPSHOTTER=copy|overlay` overrides the probe for a new store).
    pub fn open_at(root: &Path) -> Result<Self, SnapshotError> {
        Self::open_with(root, None)
    }

    /// Opens the snapshotter under `root`; a new store uses `driver` when given.
    pub fn open_with(root: &Path, driver: Option<Driver>) -> Result<Self, SnapshotError> {
        for d in ["layers", "active", "tmp"] {
            mkdir_all(&root.join(d))?;
        }
        let dfile = root.join("driver");
        let (driver, fuse) = match fs::read_to_string(&dfile) {
            Ok(s) if s.trim() == "overlay" => (Driver::Overlay, false),
            Ok(s) if s.trim() == FUSE => (Driver::Overlay, true),
            Ok(s) if s.trim() == "copy" => (Driver::Copy, false),
            _ => {
                let (d, fuse) = match (driver, std::env::var("BERTH_SNAPSHOTTER").as_deref()) {
                    (Some(d), _) => (d, false),
                    (None, Ok("copy")) => (Driver::Copy, false),
                    (None, Ok("overlay")) => (Driver::Overlay, false),
                    (None, Ok(FUSE)) => (Driver::Overlay, true),
                    _ => match probe_overlay(&root.join("tmp")) {
                        // A user namespace whose kernel will not mount
                        // overlayfs: fuse-overlayfs where it is installed.
                        Driver::Copy
                            if berth_fs::in_user_namespace() && fuse_program().is_some() =>
                        {
                            (Driver::Overlay, true)
                        }
                        d => (d, false),
                    },
                };
                atomic_write(&dfile, if fuse { FUSE } else { d.name() }.as_bytes())?;
                (d, fuse)
            }
        };
        Ok(Snapshotter {
            root: root.to_path_buf(),
            driver,
            fuse,
        })
    }

    /// The driver in use (its layout: fuse-overlayfs keeps overlay's).
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The driver's name as `info` shows it: `overlay`, `fuse-overlayfs`
    /// or `copy`.
    pub fn driver_name(&self) -> &'static str {
        if self.fuse { FUSE } else { self.driver.name() }
    }

    fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join("layers").join(chain.hex())
    }

    fn active_dir(&self, key: &str) -> PathBuf {
        self.root.join("active").join(key)
    }

    /// The directory holding a committed layer's files.
    pub fn layer_fs(&self, chain: &Digest) -> PathBuf {
        self.layer_dir(chain).join("fs")
    }

    /// Whether the layer with this chain id is unpacked.
    pub fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_dir(chain).join("meta.json").is_file()
    }

    /// A committed layer's metadata.
    pub fn layer(&self, chain: &Digest) -> Result<Option<LayerMeta>, SnapshotError> {
        read_meta(&self.layer_dir(chain).join("meta.json"))
    }

    /// Records that `blob` unpacks to layer `chain`'s diff id (see
    /// [`LayerMeta::blobs`]). Best kept: a record lost to a concurrent
    /// writer only means the blob is verified again.
    pub fn vouch(&self, chain: &Digest, blob: &Digest) -> Result<(), SnapshotError> {
        let path = self.layer_dir(chain).join("meta.json");
        let Some(mut meta) = read_meta::<LayerMeta>(&path)? else {
            return Err(SnapshotError::NotFound(chain.to_string()));
        };
        if meta.blobs.contains(blob) {
            return Ok(());
        }
        meta.blobs.push(blob.clone());
        atomic_write(
            &path,
            &serde_json::to_vec_pretty(&meta).expect("meta serialises"),
        )?;
        Ok(())
    }

    /// Every committed layer.
    pub fn layers(&self) -> Result<Vec<LayerMeta>, SnapshotError> {
        read_metas(&self.root.join("layers"))
    }

    /// Layer directories without valid metadata (left by a crash before rename is
    /// impossible, so these mean tampering or disk errors).
    pub fn broken_layers(&self) -> Vec<PathBuf> {
        let dir = self.root.join("layers");
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        !matches!(read_meta::<LayerMeta>(&p.join("meta.json")), Ok(Some(_)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Leftovers in `tmp/`: those of processes that are gone (a live one's
    /// are in use).
    pub fn stale_tmp(&self) -> Vec<PathBuf> {
        fs::read_dir(self.root.join("tmp"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !berth_fs::owner_alive(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a committed layer.
    pub fn remove_layer(&self, chain: &Digest) -> Result<(), SnapshotError> {
        // Rename first so a half-deleted layer is never mistaken for a whole one.
        let dir = self.layer_dir(chain);
        if !dir.exists() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(unique_name("rm-"));
        fs::rename(&dir, &tmp).ctx("rename", &dir)?;
        remove_any(&tmp)?;
        Ok(())
    }

    /// Unpacks an uncompressed layer stream on top of `parent` into a temporary
    /// directory. Call [`Snapshotter::commit_extracted`] to make it visible.
    pub fn extract<R: Read>(
        &self,
        parent: Option<&Digest>,
        layer: R,
    ) -> Result<Extracted, SnapshotError> {
        if let Some(p) = parent
            && !self.has_layer(p)
        {
            return Err(SnapshotError::MissingParent(p.clone()));
        }
        let dir = self.root.join("tmp").join(unique_name("x-"));
        let fsdir = dir.join("fs");
        mkdir_all(&dir)?;
        let mut ex = Extracted {
            dir,
            diff_id: Digest::sha256_of(b""),
            size: 0,
            tar_size: 0,
            parent: parent.cloned(),
        };
        let whiteouts = match (self.driver, parent) {
            (Driver::Copy, Some(p)) => {
                copy_tree(&self.layer_fs(p), &fsdir)?;
                Whiteouts::Delete
            }
            (Driver::Copy, None) => {
                mkdir_all(&fsdir)?;
                Whiteouts::Delete
            }
            (Driver::Overlay, _) => {
                mkdir_all(&fsdir)?;
                Whiteouts::Overlay
            }
        };
        let mut hr = HashingReader::new(layer);
        let stats = apply(
            &fsdir,
            &mut hr,
            &ApplyOptions {
                whiteouts,
                ..Default::default()
            },
        )?;
        let (_, diff_id, len) = hr.finish();
        ex.diff_id = diff_id;
        ex.size = stats.content_bytes;
        ex.tar_size = len;
        Ok(ex)
    }

    /// Extracts a layer before its parent is there (a pull unpacking layers as
    /// they arrive, in any order). Only the overlay driver keeps layers as
    /// independent directories; with the copy driver this returns None and the
    /// caller extracts in order with [`Snapshotter::extract`].
    pub fn extract_detached<R: Read>(&self, layer: R) -> Result<Option<Extracted>, SnapshotError> {
        if self.driver != Driver::Overlay {
            return Ok(None);
        }
        self.extract(None, layer).map(Some)
    }

    /// Commits a detached extraction on top of `parent` (which must exist now).
    pub fn commit_extracted_onto(
        &self,
        mut ex: Extracted,
        parent: Option<&Digest>,
        expected: Option<&Digest>,
    ) -> Result<Digest, SnapshotError> {
        if let Some(p) = parent
            && !self.has_layer(p)
        {
            return Err(SnapshotError::MissingParent(p.clone()));
        }
        ex.parent = parent.cloned();
        self.commit_extracted(ex, expected)
    }

    /// Makes an extracted layer visible under its chain id, after checking its diff
    /// id against `expected` (from the image config). Returns the chain id.
    pub fn commit_extracted(
        &self,
        ex: Extracted,
        expected: Option<&Digest>,
    ) -> Result<Digest, SnapshotError> {
        if let Some(e) = expected
            && *e != ex.diff_id
        {
            return Err(SnapshotError::DiffIdMismatch {
                expected: e.clone(),
                actual: ex.diff_id.clone(),
            });
        }
        let chain = match &ex.parent {
            None => ex.diff_id.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {}", ex.diff_id).as_bytes()),
        };
        let meta = LayerMeta {
            chain_id: chain.clone(),
            parent: ex.parent.clone(),
            diff_id: ex.diff_id.clone(),
            size: ex.size,
            blobs: Vec::new(),
        };
        self.publish(&ex.dir, &meta)?;
        Ok(chain)
    }

    /// Writes meta.json into a finished temp dir and renames it into `layers/`.
    fn publish(&self, dir: &Path, meta: &LayerMeta) -> Result<(), SnapshotError> {
        let dest = self.layer_dir(&meta.chain_id);
        if self.has_layer(&meta.chain_id) {
            return Ok(()); // someone else unpacked it first; the caller drops ours
        }
        atomic_write(
            &dir.join("meta.json"),
            &serde_json::to_vec_pretty(meta).expect("meta serialises"),
        )?;
        match fs::rename(dir, &dest) {
            Ok(()) => {}
            // Lost a race with a concurrent unpack of the same layer: theirs is as good.
            Err(e) if self.has_layer(&meta.chain_id) => drop(e),
            Err(e) => return Err(e).ctx("rename", &dest)?,
        }
        berth_fs::sync_dir(&self.root.join("layers"))?;
        Ok(())
    }

    /// The chain of layer directories from `top` down to the base.
    pub fn lower_dirs(&self, top: &Digest) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut out = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let meta = self
                .layer(&c)?
                .ok_or_else(|| SnapshotError::MissingParent(c.clone()))?;
            out.push(self.layer_fs(&c));
            cur = match self.driver {
                Driver::Overlay => meta.parent,
                Driver::Copy => None, // each copy layer is the full tree
            };
        }
        Ok(out)
    }

    /// Reads a regular file as the merged view of the layers up to `top` shows it
    /// (for /etc/passwd and /etc/group before a container runs); `None` when it
    /// is absent, deleted by a whiteout, or not a regular file.
    pub fn read_file(&self, top: &Digest, path: &str) -> Option<Vec<u8>> {
        let (dir, st) = self.find_below(top, path)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        let mut f = InRoot::open(&dir)
            .ok()?
            .open_file(path.trim_start_matches('/'))
            .ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    /// Where `path` is in the merged view of the layers up to `top`: the
    /// layer directory that holds it and its lstat; `None` when it is
    /// absent, deleted by a whiteout, or hidden by an opaque directory.
    /// Each lookup stays inside its layer: a layer's links never lead out.
    pub fn find_below(&self, top: &Digest, path: &str) -> Option<(PathBuf, crate::inroot::Stat)> {
        let rel = path.trim_start_matches('/');
        for dir in self.lower_dirs(top).ok()? {
            let Ok(root) = InRoot::open(&dir) else {
                continue;
            };
            match root.lstat(rel) {
                Ok(st) => {
                    let ft = FileType::from_raw_mode(st.st_mode);
                    if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                        return None; // a whiteout
                    }
                    return Some((dir, st));
                }
                Err(_) => {
                    // An opaque directory on the way hides the layers below.
                    let mut cur = String::new();
                    for comp in Path::new(rel)
                        .parent()
                        .into_iter()
                        .flat_map(|p| p.components())
                    {
                        if !cur.is_empty() {
                            cur.push('/');
                        }
                        cur.push_str(&comp.as_os_str().to_string_lossy());
                        let Ok(fd) = root.open_path(&cur) else { break };
                        let Ok(dirfd) = crate::inroot::reopen(
                            &fd,
                            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                        ) else {
                            break;
                        };
                        if crate::archive::overlay_meta::is_opaque(&dirfd) {
                            return None;
                        }
                    }
                }
            }
        }
        None
    }
}

mod active;
#[cfg(test)]
mod tests;

fn validate_key(key: &str) -> Result<(), SnapshotError> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || key.starts_with('.')
    {
        return Err(SnapshotError::NotFound(key.to_string()));
    }
    Ok(())
}

/// The `meta.json` of every directory in `dir` that has one.
fn read_metas<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>, SnapshotError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ctx("readdir", dir)? {
        let e = e.ctx("readdir", dir)?;
        if let Some(m) = read_meta(&e.path().join("meta.json"))? {
            out.push(m);
        }
    }
    Ok(out)
}

fn read_meta<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, SnapshotError> {
    match fs::read(path) {
        // What a power loss leaves of a scratch snapshot's metadata (written
        // without fsync, see `prepare_scratch`): no snapshot. Every other
        // meta.json is fsynced before it is renamed into place.
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|err| SnapshotError::Meta {
                path: path.to_path_buf(),
                err,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path)?,
    }
}

/// Whether this kernel's overlayfs takes `volatile` (Linux 5.10): no sync
/// of the upper filesystem, not even at unmount, where overlayfs otherwise
/// syncs the whole filesystem the upper directory is on (each container's
/// exit paid for that).
fn overlay_volatile() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        let r = rustix::system::uname();
        let release = r.release().to_string_lossy();
        let mut it = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (5, 10)
    })
}

/// Whether overlayfs can be mounted here (with an upper dir on this filesystem).
fn probe_overlay(tmp: &Path) -> Driver {
    let dir = tmp.join(unique_name("probe-"));
    let ok = (|| -> std::io::Result<bool> {
        for d in ["l1", "l2", "u", "w", "m"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            dir.join("l1").display(),
            dir.join("l2").display(),
            dir.join("u").display(),
            dir.join("w").display()
        );
        let m = dir.join("m");
        let data = std::ffi::CString::new(opts).map_err(std::io::Error::other)?;
        if rustix::mount::mount(
            "overlay",
            &m,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .is_err()
        {
            return Ok(false);
        }
        // Whiteouts need mknod in the upper dir; check it works through the mount.
        fs::write(dir.join("l1/f"), b"x")?;
        let ok = fs::remove_file(m.join("f")).is_ok();
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        Ok(ok)
    })()
    .unwrap_or(false);
    let _ = remove_any(&dir);
    if ok { Driver::Overlay } else { Driver::Copy }
}

/// Copies a tree preserving type, mode, owner, times, xattrs and hardlinks
/// (the copy driver's "parent copied, then layer applied").
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    // A layer through our own writer and reader: one code path for every file type.
    let changes = diff::changes_all(src)?;
    mkdir_all(dst)?;
    let (rd, wr) = std::io::pipe().ctx("pipe", dst)?;
    let src2 = src.to_path_buf();
    let writer = std::thread::spawn(move || {
        diff::write_layer(&src2, &changes, wr, &diff::WriteOptions::default()).map(drop)
    });
    let res = apply(dst, rd, &ApplyOptions::default());
    let wres = writer.join().expect("layer writer thread");
    wres?;
    res?;
    // The root directory's own metadata.
    let m = fs::symlink_metadata(src).ctx("stat", src)?;
    fs::set_permissions(dst, m.permissions()).ctx("chmod", dst)?;
    Ok(())
}
