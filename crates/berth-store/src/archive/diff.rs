//! Turning filesystem changes into a layer tar.
//!
//! Two ways to find the changes: [`changes_overlay`] reads an overlayfs upper
//! directory (0/0 character devices are deletions, `trusted.overlay.opaque=y`, `user.overlay.opaque` for a user's store
//! marks opaque directories), [`changes_dirs`] compares two full trees the way
//! docker's naive differ does (type, mode, owner, size, mtime, link target, device).
//! [`write_layer`] then writes a deterministic tar: entries sorted by path with
//! parents first, parent directories of every change included, hardlinks within the
//! layer kept as links, xattrs as PAX records, empty user and group names, and
//! times clamped to `SOURCE_DATE_EPOCH` when asked. The same tree always gives the
//! same bytes.
//!
//! The trees read here belong to containers and build steps, so they are
//! hostile: every path is opened through [`InRoot`] (never following a link
//! out of the tree), each entry's type comes from the handle that is then
//! read, and a file that grows or shrinks while it is archived is an error,
//! never a torn archive.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FileType, OFlags};

use super::ArchiveError;
use crate::inroot::{self, InRoot, Stat};
use berth_fs::IoContext;

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

fn ftype(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn open_root(dir: &Path) -> Result<InRoot, ArchiveError> {
    Ok(InRoot::open(dir).ctx("open", dir)?)
}

fn err_at(root: &InRoot, op: &'static str, rel: &[u8], e: io::Error) -> ArchiveError {
    path_err(op, &root.path().join(OsStr::from_bytes(rel)), e)
}

fn path_err(op: &'static str, path: &Path, e: io::Error) -> ArchiveError {
    Err::<(), _>(e).ctx(op, path).unwrap_err().into()
}

/// `(name, lstat)` of each entry of directory `rel`, sorted by name.
fn entries(root: &InRoot, rel: &[u8]) -> Result<Vec<(Vec<u8>, Stat)>, ArchiveError> {
    let names = root
        .read_dir(rel)
        .map_err(|e| err_at(root, "readdir", rel, e))?;
    let mut v = Vec::with_capacity(names.len());
    for n in names {
        let r = rel_join(rel, n.as_bytes());
        let st = root.lstat(&r).map_err(|e| err_at(root, "stat", &r, e))?;
        v.push((n.into_vec(), st));
    }
    Ok(v)
}

/// Drops what a runtime made only to mount over: each of `points` that the
/// changes add as an empty file or an empty directory where the image has
/// nothing, and the directories above one that the upper holds only for
/// its sake (nothing else changed under them; the image's type, mode and
/// owner, or no such directory in the image). docker keeps these in an
/// init layer below the container's own and BuildKit removes its mount
/// stubs after a RUN, so neither `diff`, `commit` nor a built layer shows
/// them. `below` looks a path up in the image (`None`: absent).
pub fn hide_mount_points(
    changes: Vec<Change>,
    upper: &Path,
    points: &[&str],
    below: &dyn Fn(&str) -> Option<Stat>,
) -> Result<Vec<Change>, ArchiveError> {
    let root = open_root(upper)?;
    let mut hidden: Vec<Vec<u8>> = Vec::new();
    for c in &changes {
        let Change::Upsert(p) = c else { continue };
        let Ok(name) = std::str::from_utf8(p) else {
            continue;
        };
        if !points.contains(&name) || below(name).is_some() {
            continue;
        }
        let Ok(st) = root.lstat(p) else { continue };
        let stub = match ftype(&st) {
            FileType::RegularFile => st.st_size == 0,
            FileType::Directory => root.read_dir(p).is_ok_and(|e| e.is_empty()),
            _ => false,
        };
        if stub {
            hidden.push(p.clone());
        }
    }
    if hidden.is_empty() {
        return Ok(changes);
    }
    let mut kept: Vec<Change> = changes
        .into_iter()
        .filter(|c| !matches!(c, Change::Upsert(p) if hidden.contains(p)))
        .collect();
    let mut parents: Vec<Vec<u8>> = hidden
        .iter()
        .flat_map(|p| {
            p.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .map(|(i, _)| p[..i].to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    parents.sort();
    parents.dedup();
    // Deepest first: a parent goes only once nothing is left under it.
    parents.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for dir in parents {
        let under = |c: &Change| {
            let q = c.path();
            q.len() > dir.len() && q.starts_with(&dir) && q[dir.len()] == b'/'
        };
        if kept
            .iter()
            .any(|c| under(c) || matches!(c, Change::Opaque(p) if *p == dir))
        {
            continue;
        }
        let Some(pos) = kept
            .iter()
            .position(|c| matches!(c, Change::Upsert(p) if *p == dir))
        else {
            continue;
        };
        let Ok(st) = root.lstat(&dir) else { continue };
        let unchanged = match below(&String::from_utf8_lossy(&dir)) {
            None => ftype(&st) == FileType::Directory,
            Some(b) => {
                ftype(&b) == FileType::Directory
                    && ftype(&st) == FileType::Directory
                    && b.st_mode & 0o7777 == st.st_mode & 0o7777
                    && b.st_uid == st.st_uid
                    && b.st_gid == st.st_gid
            }
        };
        if unchanged {
            kept.remove(pos);
        }
    }
    Ok(kept)
}

/// Reads the changes recorded in an overlayfs upper directory.
pub fn changes_overlay(upper: &Path) -> Result<Vec<Change>, ArchiveError> {
    let root = open_root(upper)?;
    let mut out = Vec::new();
    walk_upper(&root, b"", &mut out)?;
    Ok(out)
}

/// fuse-overlayfs's opaque-directory marker (a file in the directory, as
/// in an OCI layer) and the whiteout it puts beside it.
const FUSE_OPAQUE: &[u8] = b".wh..wh..opq";
const FUSE_OPAQUE_WHITEOUT: &[u8] = b".wh..opq";

fn walk_upper(root: &InRoot, rel: &[u8], out: &mut Vec<Change>) -> Result<(), ArchiveError> {
    for (name, st) in entries(root, rel)? {
        let r = rel_join(rel, &name);
        let ft = ftype(&st);
        let whiteout = ft == FileType::CharacterDevice && st.st_rdev == 0;
        if (name == FUSE_OPAQUE && ft == FileType::RegularFile)
            || (name == FUSE_OPAQUE_WHITEOUT && whiteout)
        {
            continue; // the directory's opaque marker, read below
        }
        if whiteout {
            out.push(Change::Delete(r));
        } else if ft == FileType::Directory {
            out.push(Change::Upsert(r.clone()));
            let fuse_opaque = root
                .lstat(rel_join(&r, FUSE_OPAQUE))
                .is_ok_and(|st| ftype(&st) == FileType::RegularFile);
            if fuse_opaque || is_opaque(root, &r) {
                out.push(Change::Opaque(r.clone()));
            }
            walk_upper(root, &r, out)?;
        } else {
            out.push(Change::Upsert(r));
        }
    }
    Ok(())
}

fn is_opaque(root: &InRoot, rel: &[u8]) -> bool {
    let Ok(dir) = root
        .open_path(rel)
        .and_then(|fd| inroot::reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY))
    else {
        return false;
    };
    super::overlay_meta::is_opaque(&dir)
}

/// Every path under `dir` as an addition (a layer holding the whole tree).
pub fn changes_all(dir: &Path) -> Result<Vec<Change>, ArchiveError> {
    let root = open_root(dir)?;
    let mut out = Vec::new();
    add_all(&root, b"", &mut out)?;
    Ok(out)
}

/// Compares `lower` (the parent's full tree) with `upper` (the new full tree).
pub fn changes_dirs(lower: &Path, upper: &Path) -> Result<Vec<Change>, ArchiveError> {
    let upper = open_root(upper)?;
    let mut out = Vec::new();
    match InRoot::open(lower) {
        Ok(lower) => compare(&lower, &upper, b"", &mut out)?,
        // No parent tree: everything is new.
        Err(e) if e.kind() == io::ErrorKind::NotFound => add_all(&upper, b"", &mut out)?,
        Err(e) => return Err(path_err("open", lower, e)),
    }
    out.sort_by(|a, b| sort_key(a.path()).cmp(&sort_key(b.path())));
    Ok(out)
}

fn compare(
    lower: &InRoot,
    upper: &InRoot,
    rel: &[u8],
    out: &mut Vec<Change>,
) -> Result<(), ArchiveError> {
    let uppers = entries(upper, rel)?;
    let lowers: BTreeMap<Vec<u8>, Stat> = match lower.lstat(rel) {
        Ok(st) if inroot::is_dir(&st) => entries(lower, rel)?.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    for name in lowers.keys() {
        if !uppers.iter().any(|(n, _)| n == name) {
            out.push(Change::Delete(rel_join(rel, name)));
        }
    }
    for (name, um) in uppers {
        let r = rel_join(rel, &name);
        match lowers.get(&name) {
            None => {
                out.push(Change::Upsert(r.clone()));
                if inroot::is_dir(&um) {
                    add_all(upper, &r, out)?;
                }
            }
            Some(lm) => {
                let (ud, ld) = (inroot::is_dir(&um), inroot::is_dir(lm));
                if ud && ld {
                    if meta_differs(lm, &um, || (lower.read_link(&r), upper.read_link(&r))) {
                        out.push(Change::Upsert(r.clone()));
                    }
                    compare(lower, upper, &r, out)?;
                } else if ftype(&um) != ftype(lm)
                    || meta_differs(lm, &um, || (lower.read_link(&r), upper.read_link(&r)))
                {
                    out.push(Change::Upsert(r.clone()));
                    if ud {
                        // A directory replacing a non-directory: its content is all new.
                        add_all(upper, &r, out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn add_all(root: &InRoot, rel: &[u8], out: &mut Vec<Change>) -> Result<(), ArchiveError> {
    for (name, st) in entries(root, rel)? {
        let r = rel_join(rel, &name);
        out.push(Change::Upsert(r.clone()));
        if inroot::is_dir(&st) {
            add_all(root, &r, out)?;
        }
    }
    Ok(())
}

type LinkPair = (io::Result<PathBuf>, io::Result<PathBuf>);

fn meta_differs(a: &Stat, b: &Stat, links: impl FnOnce() -> LinkPair) -> bool {
    if a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_rdev != b.st_rdev
    {
        return true;
    }
    if inroot::is_dir(a) {
        // Directory mtimes change whenever a child does; only metadata counts.
        return false;
    }
    // docker's sameFsTime: tar has whole seconds, so a zero nanosecond part on
    // either side compares seconds only.
    let (an, bn) = (a.st_mtime_nsec, b.st_mtime_nsec);
    let same_time = a.st_mtime == b.st_mtime && (an == bn || an == 0 || bn == 0);
    if a.st_size != b.st_size || !same_time {
        return true;
    }
    if inroot::is_symlink(a) {
        let (x, y) = links();
        return x.ok() != y.ok();
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
    /// A file, directory, symlink… at a path of the caller's own (never a
    /// path inside a tree someone else controls: use [`Mapped::InRoot`]).
    Path {
        /// Where it is (its last component is not followed).
        src: PathBuf,
        /// Its name in the archive (relative, no leading `/`).
        name: Vec<u8>,
    },
    /// A file, directory, symlink… inside a tree that may be hostile.
    InRoot {
        /// The tree.
        root: Arc<InRoot>,
        /// Its path in the tree (its last component is not followed).
        rel: Vec<u8>,
        /// Its name in the archive.
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
    };
    for it in items {
        match it {
            Mapped::Path { src, name } => {
                let fd = rustix::fs::open(
                    src,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(io::Error::from)
                .ctx("open", src)?;
                tw.node_fd(fd, src, name, ov)?
            }
            Mapped::InRoot { root, rel, name } => {
                let shown = root.path().join(OsStr::from_bytes(rel));
                let fd = root.open_path(rel).ctx("open", &shown)?;
                tw.node_fd(fd, &shown, name, ov)?
            }
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
    let root = open_root(src)?;
    let mut tw = TarWriter {
        b: tar::Builder::new(w),
        links: HashMap::new(),
        opts: opts.clone(),
    };
    for e in entries.into_values() {
        match e {
            Entry::Node(p) => {
                let shown = root.path().join(OsStr::from_bytes(&p));
                let fd = root.open_path(&p).ctx("open", &shown)?;
                tw.node_fd(fd, &shown, &p, &Overrides::default())?
            }
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
}

/// A file's content, exactly the size its header announced: a file that
/// shrinks while archived is an error (tar-rs would pad nothing and tear the
/// archive), one that grows is cut at that size.
struct Exact<R> {
    r: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the file shrank while it was archived",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
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

    /// One entry from an `O_PATH` handle (opened without following its last
    /// component): its type is the handle's, and a regular file or a
    /// directory is reopened through the handle, never by path.
    fn node_fd(
        &mut self,
        fd: OwnedFd,
        path: &Path,
        rel: &[u8],
        ov: &Overrides,
    ) -> Result<(), ArchiveError> {
        let m = inroot::fstat(&fd).ctx("stat", path)?;
        let ft = ftype(&m);
        let mut h = tar::Header::new_ustar();
        h.set_mode(
            ov.mode
                .filter(|_| ft != FileType::Symlink)
                .unwrap_or(m.st_mode & 0o7777),
        );
        h.set_uid(ov.uid.unwrap_or(m.st_uid) as u64);
        h.set_gid(ov.gid.unwrap_or(m.st_gid) as u64);
        h.set_mtime(self.mtime(m.st_mtime));
        h.set_size(0);
        match ft {
            FileType::Directory => {
                let dir =
                    inroot::reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY).ctx("open", path)?;
                let xattrs = read_xattrs(&dir);
                h.set_entry_type(tar::EntryType::Directory);
                let mut dir_path = rel.to_vec();
                dir_path.push(b'/');
                self.append(h, &dir_path, None, &xattrs, io::empty())
            }
            FileType::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(io::Error::from)
                    .ctx("readlink", path)?;
                self.append(h, rel, Some(target.as_bytes()), &[], io::empty())
            }
            FileType::RegularFile => {
                if m.st_nlink > 1 {
                    let key = (m.st_dev, m.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        h.set_entry_type(tar::EntryType::Link);
                        return self.append(h, rel, Some(&first), &[], io::empty());
                    }
                    self.links.insert(key, rel.to_vec());
                }
                let f = inroot::reopen(&fd, OFlags::RDONLY).ctx("open", path)?;
                let xattrs = read_xattrs(&f);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(m.st_size as u64);
                let data = Exact {
                    r: f,
                    left: m.st_size as u64,
                    path: path.to_path_buf(),
                };
                self.append(h, rel, None, &xattrs, data)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                h.set_entry_type(if ft == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                let rdev = m.st_rdev;
                h.set_device_major(rustix::fs::major(rdev))
                    .map_err(ArchiveError::Tar)?;
                h.set_device_minor(rustix::fs::minor(rdev))
                    .map_err(ArchiveError::Tar)?;
                self.append(h, rel, None, &[], io::empty())
            }
            FileType::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                self.append(h, rel, None, &[], io::empty())
            }
            _ => Ok(()), // sockets are not archived, as in docker
        }
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

/// xattrs worth carrying in a layer (`security.capability`, `user.*`), sorted,
/// read through the open file.
fn read_xattrs(f: &File) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::flistxattr(f, &mut names[..]) else {
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
        if let Ok(len) = rustix::fs::fgetxattr(f, name, &mut val[..]) {
            val.truncate(len);
            out.push((name.to_string(), val));
        }
    }
    out.sort();
    out
}
