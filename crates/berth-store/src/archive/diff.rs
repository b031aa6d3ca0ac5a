//! Turning filesystem changes into a layer tar.
//!
//! Two ways to find the changes: [`changes_overlay`] reads an overlayfs upper
//! directory (0/0 character devices are deletions, `trusted.overlay.opaque=y`
//! marks opaque directories), [`changes_dirs`] compares two full trees the way
//! docker's naive differ does (type, mode, owner, size, mtime, link target, device).
//! [`write_layer`] then writes a deterministic tar: entries sorted by path with
//! parents first, parent directories of every change included, hardlinks within the
//! layer kept as links, xattrs as PAX records, empty user and group names, and
//! times clamped to `SOURCE_DATE_EPOCH` when asked. The same tree always gives the
//! same bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ArchiveError;
use crate::fsutil::IoContext;

/// One change in a layer, by path relative to the root (`etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Added or modified: written with its content from the source tree.
    Upsert(Vec<u8>),
    /// Deleted: written as a `.wh.` whiteout.
    Delete(Vec<u8>),
    /// An opaque directory: written as `dir/.wh..wh..opq` after the directory.
    Opaque(Vec<u8>),
}

impl Change {
    fn path(&self) -> &[u8] {
        match self {
            Change::Upsert(p) | Change::Delete(p) | Change::Opaque(p) => p,
        }
    }
}

fn rel_join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn sorted_entries(dir: &Path) -> Result<Vec<(Vec<u8>, PathBuf)>, ArchiveError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).ctx("readdir", dir)? {
        let e = e.ctx("readdir", dir)?;
        v.push((e.file_name().as_bytes().to_vec(), e.path()));
    }
    v.sort();
    Ok(v)
}

/// Reads the changes recorded in an overlayfs upper directory.
pub fn changes_overlay(upper: &Path) -> Result<Vec<Change>, ArchiveError> {
    let mut out = Vec::new();
    walk_upper(upper, b"", &mut out)?;
    Ok(out)
}

fn walk_upper(dir: &Path, rel: &[u8], out: &mut Vec<Change>) -> Result<(), ArchiveError> {
    for (name, path) in sorted_entries(dir)? {
        let r = rel_join(rel, &name);
        let m = fs::symlink_metadata(&path).ctx("stat", &path)?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            out.push(Change::Delete(r));
        } else if ft.is_dir() {
            out.push(Change::Upsert(r.clone()));
            if is_opaque(&path) {
                out.push(Change::Opaque(r.clone()));
            }
            walk_upper(&path, &r, out)?;
        } else {
            out.push(Change::Upsert(r));
        }
    }
    Ok(())
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf[..]),
        Ok(1) if buf[0] == b'y'
    )
}

/// Every path under `dir` as an addition (a layer holding the whole tree).
pub fn changes_all(dir: &Path) -> Result<Vec<Change>, ArchiveError> {
    let mut out = Vec::new();
    add_all(dir, b"", &mut out)?;
    Ok(out)
}

/// Compares `lower` (the parent's full tree) with `upper` (the new full tree).
pub fn changes_dirs(lower: &Path, upper: &Path) -> Result<Vec<Change>, ArchiveError> {
    let mut out = Vec::new();
    compare(lower, upper, b"", &mut out)?;
    out.sort_by(|a, b| sort_key(a.path()).cmp(&sort_key(b.path())));
    Ok(out)
}

fn compare(
    lower: &Path,
    upper: &Path,
    rel: &[u8],
    out: &mut Vec<Change>,
) -> Result<(), ArchiveError> {
    let uppers = sorted_entries(upper)?;
    let lowers: BTreeMap<Vec<u8>, PathBuf> = match fs::symlink_metadata(lower) {
        Ok(m) if m.is_dir() => sorted_entries(lower)?.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    for (name, lpath) in &lowers {
        if !uppers.iter().any(|(n, _)| n == name) {
            let _ = lpath;
            out.push(Change::Delete(rel_join(rel, name)));
        }
    }
    for (name, upath) in uppers {
        let r = rel_join(rel, &name);
        let um = fs::symlink_metadata(&upath).ctx("stat", &upath)?;
        let lm = lowers
            .get(&name)
            .and_then(|lp| fs::symlink_metadata(lp).ok().map(|m| (lp.clone(), m)));
        match lm {
            None => {
                out.push(Change::Upsert(r.clone()));
                if um.is_dir() {
                    add_all(&upath, &r, out)?;
                }
            }
            Some((lp, lm)) => {
                if um.is_dir() && lm.is_dir() {
                    if meta_differs(&lm, &um, &lp, &upath) {
                        out.push(Change::Upsert(r.clone()));
                    }
                    compare(&lp, &upath, &r, out)?;
                } else if um.file_type() != lm.file_type() || meta_differs(&lm, &um, &lp, &upath) {
                    out.push(Change::Upsert(r.clone()));
                    if um.is_dir() {
                        // A directory replacing a non-directory: its content is all new.
                        add_all(&upath, &r, out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn add_all(dir: &Path, rel: &[u8], out: &mut Vec<Change>) -> Result<(), ArchiveError> {
    for (name, path) in sorted_entries(dir)? {
        let r = rel_join(rel, &name);
        out.push(Change::Upsert(r.clone()));
        if fs::symlink_metadata(&path).ctx("stat", &path)?.is_dir() {
            add_all(&path, &r, out)?;
        }
    }
    Ok(())
}

fn meta_differs(a: &Metadata, b: &Metadata, ap: &Path, bp: &Path) -> bool {
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() || a.rdev() != b.rdev() {
        return true;
    }
    if a.is_dir() {
        // Directory mtimes change whenever a child does; only metadata counts.
        return false;
    }
    // docker's sameFsTime: tar has whole seconds, so a zero nanosecond part on
    // either side compares seconds only.
    let same_time = a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0);
    if a.size() != b.size() || !same_time {
        return true;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(ap).ok() != fs::read_link(bp).ok();
    }
    false
}

/// Owner and mode to force on entries (COPY --chown / --chmod).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// Permission bits (not applied to symlinks).
    pub mode: Option<u32>,
}

/// One entry of [`write_mapped`].
#[derive(Debug, Clone)]
pub enum Mapped {
    /// A file, directory, symlink… from disk, stored under `name`.
    Path {
        /// Where it is.
        src: PathBuf,
        /// Its name in the archive (relative, no leading `/`).
        name: Vec<u8>,
    },
    /// A regular file with this content.
    Data {
        /// Its name in the archive.
        name: Vec<u8>,
        /// Content.
        data: Vec<u8>,
        /// Mode.
        mode: u32,
        /// Modification time.
        mtime: i64,
    },
}

/// Writes entries under names of the caller's choosing (COPY and ADD sources
/// mapped to their destinations), in the given order, with `ov` applied.
pub fn write_mapped<W: Write>(
    items: &[Mapped],
    ov: &Overrides,
    w: W,
    opts: &WriteOptions,
) -> Result<W, ArchiveError> {
    let mut tw = TarWriter {
        b: tar::Builder::new(w),
        links: HashMap::new(),
        opts: opts.clone(),
        src: PathBuf::new(),
    };
    for it in items {
        match it {
            Mapped::Path { src, name } => tw.node_from(src, name, ov)?,
            Mapped::Data {
                name,
                data,
                mode,
                mtime,
            } => {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(ov.mode.unwrap_or(*mode));
                h.set_uid(ov.uid.unwrap_or(0) as u64);
                h.set_gid(ov.gid.unwrap_or(0) as u64);
                h.set_mtime(tw.mtime(*mtime));
                h.set_size(data.len() as u64);
                tw.append(h, name, None, &[], &data[..])?;
            }
        }
    }
    tw.b.finish().map_err(ArchiveError::Tar)?;
    tw.b.into_inner().map_err(ArchiveError::Tar)
}

/// Options for [`write_layer`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Clamp every mtime to at most this (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
}

/// Components-wise ordering so `a/b` sorts before `a-b` and parents before children.
fn sort_key(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/').collect()
}

/// Writes `changes` (content read from `src`) as a tar into `w`; returns `w`.
pub fn write_layer<W: Write>(
    src: &Path,
    changes: &[Change],
    w: W,
    opts: &WriteOptions,
) -> Result<W, ArchiveError> {
    // Entries keyed by sort order; parents of every change are added too.
    let mut entries: BTreeMap<Vec<Vec<u8>>, Entry> = BTreeMap::new();
    for c in changes {
        let p = c.path();
        let comps: Vec<&[u8]> = sort_key(p);
        for i in 1..comps.len() {
            let parent = comps[..i].join(&b'/');
            let key = sort_key(&parent).iter().map(|c| c.to_vec()).collect();
            entries.entry(key).or_insert(Entry::Node(parent));
        }
        let key: Vec<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        match c {
            Change::Upsert(p) => {
                entries.insert(key, Entry::Node(p.clone()));
            }
            Change::Delete(p) => {
                let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (&b""[..], &p[..]),
                };
                let mut wh = b".wh.".to_vec();
                wh.extend_from_slice(name);
                let path = rel_join(dir, &wh);
                entries.insert(
                    sort_key(&path).iter().map(|c| c.to_vec()).collect(),
                    Entry::Whiteout(path),
                );
            }
            Change::Opaque(p) => {
                let path = rel_join(p, b".wh..wh..opq");
                entries.insert(
                    sort_key(&path).iter().map(|c| c.to_vec()).collect(),
                    Entry::Whiteout(path),
                );
                let k: Vec<Vec<u8>> = key;
                entries.entry(k).or_insert(Entry::Node(p.clone()));
            }
        }
    }
    let mut tw = TarWriter {
        b: tar::Builder::new(w),
        links: HashMap::new(),
        opts: opts.clone(),
        src: src.to_path_buf(),
    };
    for e in entries.into_values() {
        match e {
            Entry::Node(p) => tw.node(&p)?,
            Entry::Whiteout(p) => tw.whiteout(&p)?,
        }
    }
    tw.b.finish().map_err(ArchiveError::Tar)?;
    tw.b.into_inner().map_err(ArchiveError::Tar)
}

enum Entry {
    Node(Vec<u8>),
    Whiteout(Vec<u8>),
}

struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    opts: WriteOptions,
    src: PathBuf,
}

impl<W: Write> TarWriter<W> {
    fn mtime(&self, t: i64) -> u64 {
        let t = match self.opts.clamp_mtime {
            Some(c) if t > c => c,
            _ => t,
        };
        t.max(0) as u64
    }

    fn whiteout(&mut self, rel: &[u8]) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(self.mtime(0));
        self.append(h, rel, None, &[], io::empty())
    }

    fn node(&mut self, rel: &[u8]) -> Result<(), ArchiveError> {
        let path = self.src.join(std::ffi::OsStr::from_bytes(rel));
        self.node_from(&path, rel, &Overrides::default())
    }

    fn node_from(&mut self, path: &Path, rel: &[u8], ov: &Overrides) -> Result<(), ArchiveError> {
        let path = path.to_path_buf();
        let m = fs::symlink_metadata(&path).ctx("stat", &path)?;
        let ft = m.file_type();
        let mut h = tar::Header::new_ustar();
        h.set_mode(
            ov.mode
                .filter(|_| !ft.is_symlink())
                .unwrap_or(m.mode() & 0o7777),
        );
        h.set_uid(ov.uid.unwrap_or(m.uid()) as u64);
        h.set_gid(ov.gid.unwrap_or(m.gid()) as u64);
        h.set_mtime(self.mtime(m.mtime()));
        h.set_size(0);
        let xattrs = read_xattrs(&path);
        let mut dir_path = rel.to_vec();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            dir_path.push(b'/');
            return self.append(h, &dir_path, None, &xattrs, io::empty());
        }
        if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(&path).ctx("readlink", &path)?;
            return self.append(
                h,
                rel,
                Some(target.as_os_str().as_bytes()),
                &xattrs,
                io::empty(),
            );
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    h.set_entry_type(tar::EntryType::Link);
                    return self.append(h, rel, Some(&first), &[], io::empty());
                }
                self.links.insert(key, rel.to_vec());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = File::open(&path).ctx("open", &path)?;
            return self.append(h, rel, None, &xattrs, f);
        }
        if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = m.rdev();
            h.set_device_major(rustix::fs::major(rdev))
                .map_err(ArchiveError::Tar)?;
            h.set_device_minor(rustix::fs::minor(rdev))
                .map_err(ArchiveError::Tar)?;
            return self.append(h, rel, None, &xattrs, io::empty());
        }
        if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            return self.append(h, rel, None, &xattrs, io::empty());
        }
        Ok(()) // sockets are not archived, as in docker
    }

    fn append(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        data: impl io::Read,
    ) -> Result<(), ArchiveError> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if h.set_path(std::ffi::OsStr::from_bytes(name)).is_err() || !name.is_ascii() {
            pax.push(("path".into(), name.to_vec()));
            let short: Vec<u8> = name.iter().rev().take(99).rev().copied().collect();
            h.set_path(std::ffi::OsStr::from_bytes(&sanitize(&short)))
                .map_err(ArchiveError::Tar)?;
        }
        if let Some(l) = link {
            if l.len() > 100 || !l.is_ascii() {
                pax.push(("linkpath".into(), l.to_vec()));
                h.set_link_name(std::ffi::OsStr::from_bytes(&sanitize(
                    &l[..l.len().min(99)],
                )))
                .map_err(ArchiveError::Tar)?;
            } else {
                h.set_link_name(std::ffi::OsStr::from_bytes(l))
                    .map_err(ArchiveError::Tar)?;
            }
        }
        for (k, v) in xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(ArchiveError::Tar)?;
        }
        h.set_cksum();
        self.b.append(&h, data).map_err(ArchiveError::Tar)
    }
}

fn sanitize(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|&c| if c.is_ascii() && c != 0 { c } else { b'_' })
        .collect()
}

/// xattrs worth carrying in a layer (`security.capability`, `user.*`), sorted.
fn read_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !(name.starts_with("user.") || name == "security.capability") {
            continue;
        }
        let mut val = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut val[..]) {
            val.truncate(len);
            out.push((name.to_string(), val));
        }
    }
    out.sort();
    out
}
