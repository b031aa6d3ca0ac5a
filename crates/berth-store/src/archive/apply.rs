//! Applying a layer tar onto a directory, safely.
//!
//! Every entry's parent directory is opened with `openat2(RESOLVE_IN_ROOT)` relative
//! to the root, so `..`, absolute symlinks and symlinks planted earlier in the same
//! tar all resolve inside the root; the entry itself is then created with `*at`
//! calls that never follow its final component. Paths whose `..` would climb out
//! of the root, and hardlinks to such paths, are refused with an error naming them.
//!
//! Whiteouts are a strategy ([`Whiteouts`]): applied onto a full tree they delete
//! (`.wh.name` removes `name`, `.wh..wh..opq` empties the directory of what lower
//! layers put there); extracted into an overlay layer directory they become
//! overlayfs whiteouts (a 0/0 character device) and opaque markers
//! (`trusted.overlay.opaque=y`).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use super::{ArchiveError, clean_components};
use berth_fs::IoContext;

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Delete what they name (applying onto a full tree).
    Delete,
    /// Turn them into overlayfs whiteouts (extracting one overlay layer directory).
    Overlay,
    /// None: `.wh.` names are ordinary files (`cp` between a container and
    /// the host, where a file of that name must not delete anything).
    Literal,
}

/// Options for [`apply`].
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Whiteout strategy.
    pub whiteouts: Whiteouts,
    /// Set owners from the tar (true as root).
    pub chown: bool,
    /// Refuse to replace a directory by a non-directory or the reverse
    /// (docker cp's "cannot overwrite directory … with non-directory"):
    /// nothing already there is ever removed.
    pub keep_types: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: Whiteouts::Delete,
            chown: rustix::process::geteuid().is_root(),
            keep_types: false,
        }
    }
}

/// What an [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Bytes of regular-file content written (docker's layer "size").
    pub content_bytes: u64,
    /// Entries applied (including whiteouts).
    pub entries: u64,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Applies the (uncompressed) tar stream `layer` onto `root`. Reads `layer` to its
/// very end, so a hashing reader around it sees every byte.
pub fn apply<R: Read>(
    root: &Path,
    layer: R,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let rootfd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
    .ctx("open", root)?;
    let mut a = Applier {
        root: rootfd,
        opts: *opts,
        created: HashSet::new(),
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
        buf: vec![0u8; 256 * 1024],
    };
    let mut archive = tar::Archive::new(layer);
    let entries = archive.entries().map_err(ArchiveError::Tar)?;
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::Tar)?;
        a.entry(&mut entry)?;
    }
    // Directory mtimes last: creating children changed them.
    for (comps, ts) in std::mem::take(&mut a.dir_times) {
        let refs: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
        let (name, parent) = refs.split_last().expect("non-empty");
        if let Ok(p) = a.resolve_dir(parent, false) {
            let _ =
                rustix::fs::utimensat(&p, OsStr::from_bytes(name), &ts, AtFlags::SYMLINK_NOFOLLOW);
        }
    }
    // Drain the end-of-archive blocks and padding so callers hash the whole stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::Tar)?;
    Ok(a.stats)
}

struct Applier {
    root: OwnedFd,
    opts: ApplyOptions,
    /// Paths this layer created (joined with `/`), kept by opaque whiteouts.
    created: HashSet<Vec<u8>>,
    dir_times: Vec<(Vec<Vec<u8>>, Timestamps)>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn timestamps(h: &tar::Header) -> Timestamps {
    let t = Timespec {
        tv_sec: h.mtime().unwrap_or(0) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// What a chown to an id this user namespace does not map says (callers
/// that know why add how to fix it).
pub const UNMAPPED: &str = "the owner's id is not mapped in this user namespace";

/// One entry's place and metadata, for the writers of each kind.
struct Target<'a> {
    /// The entry's path as the tar has it (for errors).
    raw: &'a [u8],
    /// Its parent directory, resolved in the root.
    dir: &'a OwnedFd,
    /// Its name there.
    nm: &'a OsStr,
    mode: Mode,
    uid: u32,
    gid: u32,
    ts: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Target<'_> {
    fn fail(&self, what: &str, err: Errno) -> ArchiveError {
        ArchiveError::entry(self.raw, format!("{what}: {err}"))
    }

    /// A failed chown: EINVAL means the owner has no id in this user
    /// namespace (a rootless store with too few ids), said so.
    fn chown_failed(&self, err: Errno) -> ArchiveError {
        if err == Errno::INVAL {
            return ArchiveError::entry(
                self.raw,
                format!("chown to {}:{}: {UNMAPPED}", self.uid, self.gid),
            );
        }
        self.fail("chown", err)
    }
}

impl Applier {
    /// Applies one tar entry: whiteouts, then the entry in its resolved
    /// parent, replacing what was there.
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        let raw = e.path_bytes().into_owned();
        let kind = e.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let comps = clean_components(&raw)
            .ok_or_else(|| ArchiveError::entry(&raw, "path escapes the layer root"))?;
        let Some((name, parent)) = comps.split_last() else {
            return Ok(()); // the root itself: its metadata is the snapshot's
        };
        let (name, parent) = (*name, parent.to_vec());
        self.stats.entries += 1;

        if let Some(target) = name.strip_prefix(WH_PREFIX)
            && self.opts.whiteouts != Whiteouts::Literal
        {
            return self.whiteout(&raw, &parent, name, target);
        }

        let dir = self
            .resolve_dir(&parent, true)
            .map_err(|err| ArchiveError::entry(&raw, format!("parent directory: {err}")))?;
        let h = e.header().clone();
        let is_dir = kind == tar::EntryType::Directory;
        let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777);
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let nm = OsStr::from_bytes(name);

        self.make_room(&raw, &dir, name, is_dir)?;
        let t = Target {
            raw: &raw,
            dir: &dir,
            nm,
            mode,
            uid,
            gid,
            ts: timestamps(&h),
            xattrs: self.xattrs(e, &raw)?,
        };
        match kind {
            tar::EntryType::Directory => {
                self.write_dir(&t)?;
                let mut full = parent.iter().map(|c| c.to_vec()).collect::<Vec<_>>();
                full.push(name.to_vec());
                self.dir_times.push((full, t.ts));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.write_file(&t, e)?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::entry(&raw, "symlink without a target"))?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, nm)
                    .map_err(|err| t.fail("symlink", err))?;
                self.owner_at(&dir, nm, uid, gid)
                    .map_err(|err| t.chown_failed(err))?;
                let _ = rustix::fs::utimensat(&dir, nm, &t.ts, AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::entry(&raw, "hardlink without a target"))?;
                self.write_hardlink(&t, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                match rustix::fs::mknodat(&dir, nm, ft, mode, dev) {
                    Ok(()) => {}
                    // A user namespace may not make device nodes: skipped, as
                    // moby's and containers/storage's rootless unpackers
                    // skip them (a container's /dev is its own anyway). A
                    // FIFO is made; any other failure is the layer's error.
                    Err(Errno::PERM)
                        if ft != FileType::Fifo && super::overlay_meta::in_user_namespace() =>
                    {
                        return Ok(());
                    }
                    Err(err) => return Err(t.fail("mknod", err)),
                }
                self.owner_at(&dir, nm, uid, gid)
                    .map_err(|err| t.chown_failed(err))?;
                rustix::fs::chmodat(&dir, nm, mode, AtFlags::empty())
                    .map_err(|err| t.fail("chmod", err))?;
                let _ = rustix::fs::utimensat(&dir, nm, &t.ts, AtFlags::SYMLINK_NOFOLLOW);
            }
            other => {
                return Err(ArchiveError::entry(
                    &raw,
                    format!("unsupported tar entry type {other:?}"),
                ));
            }
        }
        let mut full = parent.clone();
        full.push(name);
        self.created.insert(join(&full));
        Ok(())
    }

    /// Replaces whatever is at `name` in `dir`, except a directory by a
    /// directory (merged); with `keep_types`, a change of kind is an error.
    fn make_room(
        &self,
        raw: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        is_dir: bool,
    ) -> Result<(), ArchiveError> {
        match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let existing_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if self.opts.keep_types && existing_dir != is_dir {
                    let shown = String::from_utf8_lossy(raw);
                    return Err(ArchiveError::entry(
                        raw,
                        if existing_dir {
                            format!("cannot overwrite directory {shown:?} with non-directory")
                        } else {
                            format!("cannot overwrite non-directory {shown:?} with directory")
                        },
                    ));
                }
                if !(existing_dir && is_dir) {
                    remove_all_at(dir.as_fd(), name)
                        .map_err(|err| ArchiveError::entry(raw, format!("replace: {err}")))?;
                }
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(err) => Err(ArchiveError::entry(raw, format!("stat: {err}"))),
        }
    }

    /// A directory (or an existing one's metadata): owner, mode, xattrs.
    fn write_dir(&self, t: &Target) -> Result<(), ArchiveError> {
        match rustix::fs::mkdirat(t.dir, t.nm, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(err) => return Err(t.fail("mkdir", err)),
        }
        self.owner_at(t.dir, t.nm, t.uid, t.gid)
            .map_err(|err| t.chown_failed(err))?;
        rustix::fs::chmodat(t.dir, t.nm, t.mode, AtFlags::empty())
            .map_err(|err| t.fail("chmod", err))?;
        if !t.xattrs.is_empty() {
            let fd = rustix::fs::openat(
                t.dir,
                t.nm,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| t.fail("open", err))?;
            set_xattrs(&fd, &t.xattrs).map_err(|err| t.fail("setxattr", err))?;
        }
        Ok(())
    }

    /// A regular file, created exclusively (never through a link), its
    /// content copied, then owner, mode, xattrs and times.
    fn write_file<R: Read>(
        &mut self,
        t: &Target,
        e: &mut tar::Entry<'_, R>,
    ) -> Result<(), ArchiveError> {
        let fd = rustix::fs::openat(
            t.dir,
            t.nm,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| t.fail("create", err))?;
        let mut f = File::from(fd);
        loop {
            let n = e.read(&mut self.buf).map_err(ArchiveError::Tar)?;
            if n == 0 {
                break;
            }
            f.write_all(&self.buf[..n])
                .map_err(|err| ArchiveError::entry(t.raw, format!("write: {err}")))?;
            self.stats.content_bytes += n as u64;
        }
        if self.opts.chown {
            rustix::fs::fchown(&f, Some(Uid::from_raw(t.uid)), Some(Gid::from_raw(t.gid)))
                .map_err(|err| t.chown_failed(err))?;
        }
        rustix::fs::fchmod(&f, t.mode).map_err(|err| t.fail("chmod", err))?;
        set_xattrs(&f, &t.xattrs).map_err(|err| t.fail("setxattr", err))?;
        rustix::fs::futimens(&f, &t.ts).map_err(|err| t.fail("utimes", err))
    }

    /// A hard link to an entry already in the layer, its target resolved
    /// inside the root (never through a symlink out of it).
    fn write_hardlink(&self, t: &Target, target: &[u8]) -> Result<(), ArchiveError> {
        let tcomps = clean_components(target).ok_or_else(|| {
            ArchiveError::entry(
                t.raw,
                format!(
                    "hardlink target {:?} escapes the layer root",
                    String::from_utf8_lossy(target)
                ),
            )
        })?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(ArchiveError::entry(t.raw, "hardlink to the root"));
        };
        let tdir = self.resolve_dir(tparent, false).map_err(|err| {
            ArchiveError::entry(t.raw, format!("hardlink target directory: {err}"))
        })?;
        rustix::fs::linkat(
            &tdir,
            OsStr::from_bytes(tname),
            t.dir,
            t.nm,
            AtFlags::empty(),
        )
        .map_err(|err| t.fail("link", err))
    }

    fn owner_at(&self, dir: &OwnedFd, nm: &OsStr, uid: u32, gid: u32) -> Result<(), Errno> {
        if !self.opts.chown {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            nm,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    fn xattrs<R: Read>(
        &self,
        e: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        let mut out = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(ArchiveError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(ArchiveError::Tar)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // A layer may not forge overlayfs metadata.
                    if super::overlay_meta::is_overlay_xattr(name) {
                        continue;
                    }
                    if name.is_empty() || name.contains('\0') {
                        return Err(ArchiveError::entry(raw, "invalid xattr name"));
                    }
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(out)
    }

    fn whiteout(
        &mut self,
        raw: &[u8],
        parent: &[&[u8]],
        name: &[u8],
        target: &[u8],
    ) -> Result<(), ArchiveError> {
        let overlay = self.opts.whiteouts == Whiteouts::Overlay;
        let dir = match self.resolve_dir(parent, overlay) {
            Ok(d) => d,
            // Deleting something under a directory that is not there: nothing to do.
            Err(Errno::NOENT) if !overlay => return Ok(()),
            Err(err) => {
                return Err(ArchiveError::entry(
                    raw,
                    format!("whiteout directory: {err}"),
                ));
            }
        };
        let fail = |what: &str, err: Errno| ArchiveError::entry(raw, format!("{what}: {err}"));
        if name == WH_OPAQUE {
            if overlay {
                rustix::fs::fsetxattr(
                    &reopen_dir(&dir).map_err(|err| fail("open", err))?,
                    super::overlay_meta::opaque_xattr(),
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|err| fail("set opaque", err))?;
            } else {
                let prefix = join(parent);
                let rd = reopen_dir(&dir).map_err(|err| fail("open", err))?;
                let mut children = Vec::new();
                for ent in Dir::read_from(&rd).map_err(|err| fail("readdir", err))? {
                    let ent = ent.map_err(|err| fail("readdir", err))?;
                    let n = ent.file_name().to_bytes();
                    if n == b"." || n == b".." {
                        continue;
                    }
                    let mut full = prefix.clone();
                    if !full.is_empty() {
                        full.push(b'/');
                    }
                    full.extend_from_slice(n);
                    if !self.created.contains(&full) {
                        children.push(n.to_vec());
                    }
                }
                for c in children {
                    remove_all_at(dir.as_fd(), &c).map_err(|err| fail("remove", err))?;
                }
            }
            return Ok(());
        }
        if target.starts_with(WH_PREFIX) || target.is_empty() || target == b"." || target == b".." {
            return Ok(()); // aufs metadata (.wh..wh.plnk and friends): ignored as docker does
        }
        remove_all_at(dir.as_fd(), target).map_err(|err| fail("remove", err))?;
        if overlay {
            rustix::fs::mknodat(
                &dir,
                OsStr::from_bytes(target),
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|err| fail("mknod whiteout", err))?;
        }
        Ok(())
    }

    /// Opens `comps` as a directory inside the root. When `create`, missing
    /// directories are made (0755, as docker does), following symlinks the way a
    /// chroot would: an absolute target restarts at the root, `..` stops there.
    fn resolve_dir(&self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, Errno> {
        match self.open_in_root(&join(comps)) {
            Err(Errno::NOENT) if create => {}
            other => return other,
        }
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            comps.iter().map(|c| c.to_vec()).collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let refs: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
            let dir = self.open_in_root(&join(&refs))?;
            let nm = OsStr::from_bytes(&c);
            match rustix::fs::statat(&dir, nm, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, nm, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    resolved.push(c);
                }
                Err(e) => return Err(e),
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => resolved.push(c),
                    FileType::Symlink => {
                        links += 1;
                        if links > 255 {
                            return Err(Errno::LOOP);
                        }
                        let target = rustix::fs::readlinkat(&dir, nm, Vec::new())?;
                        let t = target.as_bytes();
                        if t.starts_with(b"/") {
                            resolved.clear();
                        }
                        for part in t.split(|&b| b == b'/').rev() {
                            queue.push_front(part.to_vec());
                        }
                    }
                    _ => return Err(Errno::NOTDIR),
                },
            }
        }
        let refs: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
        self.open_in_root(&join(&refs))
    }

    fn open_in_root(&self, p: &[u8]) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            &self.root,
            if p.is_empty() {
                OsStr::new(".")
            } else {
                OsStr::from_bytes(p)
            },
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }
}

fn reopen_dir(dir: &OwnedFd) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn set_xattrs<Fd: AsFd>(fd: Fd, xattrs: &[(String, Vec<u8>)]) -> Result<(), Errno> {
    for (k, v) in xattrs {
        match rustix::fs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
            // Filesystems without xattr support, and namespaces we may not write,
            // are skipped as docker does.
            Ok(()) | Err(Errno::OPNOTSUPP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes `name` under `dir`, recursively, never following symlinks. Missing is fine.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let nm = OsStr::from_bytes(name);
    let st = match rustix::fs::statat(dir, nm, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = rustix::fs::openat(
            dir,
            nm,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut names = Vec::new();
        for ent in Dir::read_from(&sub)? {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        for n in names {
            remove_all_at(sub.as_fd(), &n)?;
        }
        rustix::fs::unlinkat(dir, nm, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, nm, AtFlags::empty())
    }
}
