//! Mount entries of config.json: option parsing into flags, propagation and data,
//! mount points resolved inside the rootfs (never through a symlink out of it),
//! and the mount itself through `/proc/self/fd/N` of the resolved target.

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};
use crate::sys::Syscalls;

/// Parsed mount options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// MS_* flags.
    pub flags: libc::c_ulong,
    /// Flags to clear (from `rw`, `suid`, …) when remounting.
    pub clear: libc::c_ulong,
    /// Propagation flags (applied with a separate mount call).
    pub propagation: Vec<libc::c_ulong>,
    /// Filesystem-specific data (`mode=755,size=65536k`).
    pub data: String,
    /// Recursive mount attributes (`rro`, `rnosuid`, …: MOUNT_ATTR_*) to set on
    /// the mount and every mount beneath it, with mount_setattr(2).
    pub rec_set: u64,
    /// Recursive mount attributes to clear (`rrw`, `rsuid`, …).
    pub rec_clear: u64,
}

/// The MOUNT_ATTR_* change of a recursive option (runc's names): (set, clear).
fn recursive_attr(opt: &str) -> Option<(u64, u64)> {
    use libc::{
        MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
        MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY,
        MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME,
    };
    Some(match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        // The access-time mode is one field: setting a mode clears the field first.
        "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        // Leaving a mode: back to the kernel's default, relatime.
        "rnorelatime" | "ratime" | "rnostrictatime" => (MOUNT_ATTR_RELATIME, 0),
        _ => return None,
    })
}

/// Parses an OCI options list.
pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    let mut data = Vec::new();
    for opt in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "ro" | "rdonly" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation.push(propagation_flag(opt).expect("listed"));
                continue;
            }
            "nosymfollow" => (libc::MS_NOSYMFOLLOW, 0),
            "symfollow" => (0, libc::MS_NOSYMFOLLOW),
            "defaults" => continue,
            _ if recursive_attr(opt).is_some() => {
                let (set, clear) = recursive_attr(opt).expect("checked");
                o.rec_set = (o.rec_set & !clear & !set) | set;
                o.rec_clear = (o.rec_clear & !set) | clear;
                continue;
            }
            _ => {
                data.push(opt.clone());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o.data = data.join(",");
    o
}

/// MS_* for a propagation name.
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// mount(2) with C strings; paths may be `/proc/self/fd/N`.
pub fn sys_mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    // mount(2)'s data is one page: an overlay of many layers does not fit.
    if fstype == Some("overlay") && data.is_some_and(|d| d.len() >= 4000) {
        return overlay_fsconfig(target, flags, data.unwrap_or_default());
    }
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let src = source.map(c).transpose()?;
    let tgt = c(target)?;
    let typ = fstype.map(c).transpose()?;
    let dat = data.filter(|d| !d.is_empty()).map(c).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            typ.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mounts an overlay through the new mount API, one `lowerdir+` per layer
/// (Linux 6.8+), so the number of layers is not bounded by the page-sized
/// data of mount(2) (Docker's overlay2 works around that with short symlink
/// names; containerd with relative paths).
fn overlay_fsconfig(target: &str, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for opt in data.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("lowerdir", dirs)) => {
                for d in dirs.split(':') {
                    fsconfig_set_string(fs.as_fd(), "lowerdir+", d)?;
                }
            }
            Some((k, v)) => fsconfig_set_string(fs.as_fd(), k, v)?,
            None => fsconfig_set_flag(fs.as_fd(), opt)?,
        }
    }
    fsconfig_create(fs.as_fd())?;
    let mut attrs = MountAttrFlags::empty();
    if flags & libc::MS_RDONLY != 0 {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    if flags & libc::MS_NOSUID != 0 {
        attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID;
    }
    if flags & libc::MS_NODEV != 0 {
        attrs |= MountAttrFlags::MOUNT_ATTR_NODEV;
    }
    let m = fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        m.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// The `/proc/self/fd/N` path of an open descriptor.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens (creating when missing) `dest` inside `root` as a descriptor to mount
/// on: a directory, or an empty file when `file` (for bind mounts of files).
/// Resolution stays inside the rootfs (libpathrs, `openat2(RESOLVE_IN_ROOT)`);
/// a path through a dangling symlink is refused rather than created, as runc does.
pub fn open_target(root: &OwnedFd, dest: &Path, file: bool) -> Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    let r = pathrs::RootRef::from_fd(root.as_fd());
    let err = |e: pathrs::error::Error| {
        // Say what is wrong when it is a link that leads nowhere (libpathrs
        // only says it could not open the directory it made).
        let mut prefix = PathBuf::from("/");
        for c in dest.components().skip(1) {
            prefix.push(c);
            if let Ok(t) = r.readlink(&prefix)
                && r.resolve(&prefix).is_err()
            {
                return RuntimeError::sys(
                    "mount destination",
                    dest.display(),
                    std::io::Error::other(format!(
                        "{} is a symlink to {}, which does not exist in the container",
                        prefix.display(),
                        t.display()
                    )),
                );
            }
        }
        RuntimeError::sys("open", dest.display(), std::io::Error::other(e.to_string()))
    };
    if let Some(fd) = open_target_fast(root, dest, file) {
        return Ok(fd);
    }
    if file {
        let parent = dest.parent().unwrap_or(Path::new("/"));
        r.mkdir_all(parent, &std::fs::Permissions::from_mode(0o755))
            .map_err(err)?;
        r.create_file(
            dest,
            pathrs::flags::OpenFlags::O_WRONLY,
            &std::fs::Permissions::from_mode(0o644),
        )
        .map_err(err)?;
        return r.resolve(dest).map(Into::into).map_err(err);
    }
    r.mkdir_all(dest, &std::fs::Permissions::from_mode(0o755))
        .map(Into::into)
        .map_err(err)
}

/// [`open_target`] in the common cases, with a few syscalls where
/// libpathrs's `mkdir_all` makes forty per component (it reopens every
/// directory through procfs to check where it is): the target itself, or
/// else its deepest existing ancestor, by one `openat2(RESOLVE_IN_ROOT)`;
/// then each missing component made with `mkdirat` (or, for a file,
/// `O_CREAT|O_EXCL`) and opened `O_NOFOLLOW` relative to its parent's
/// descriptor. No path is resolved from outside the root, and a symlink in
/// the way (or raced in) is never followed. Anything else (a `..`, a
/// symlink, a file where a directory should be, an error) gives `None`, and
/// libpathrs takes over, to do the same or say what is wrong.
fn open_target_fast(root: &OwnedFd, dest: &Path, file: bool) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::path::Component;
    let resolve = |p: &Path, flags: OFlags| {
        rustix::fs::openat2(
            root,
            p,
            flags | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    match resolve(dest, OFlags::empty()) {
        Ok(fd) => return Some(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(_) => return None,
    }
    let mut names = Vec::new();
    for c in dest.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => names.push(n),
            _ => return None,
        }
    }
    // The deepest ancestor there is (the root itself at worst).
    let (mut dir, have) = (0..names.len()).rev().find_map(|k| {
        let p: PathBuf = std::iter::once(OsStr::new("/"))
            .chain(names[..k].iter().copied())
            .collect();
        match resolve(&p, OFlags::DIRECTORY) {
            Ok(fd) => Some(Some((fd, k))),
            Err(rustix::io::Errno::NOENT) => None,
            Err(_) => Some(None),
        }
    })??;
    for (i, name) in names.iter().enumerate().skip(have) {
        if file && i + 1 == names.len() {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            return rustix::fs::openat(&dir, *name, flags, Mode::from_raw_mode(0o644)).ok();
        }
        match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(_) => return None,
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = rustix::fs::openat(&dir, *name, flags, Mode::empty()).ok()?;
    }
    Some(dir)
}

/// Mounts `source` (a host path, or a filesystem name) on `target_fd`.
pub fn mount_at(
    sys: &dyn Syscalls,
    source: Option<&str>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
    shown: &Path,
) -> Result<()> {
    sys.mount(source, &fd_path(target), fstype, flags, data)
        .map_err(|e| {
            RuntimeError::sys(
                "mount",
                format!("{} on {}", source.unwrap_or("none"), shown.display()),
                e,
            )
        })
}

/// Applies recursive mount attributes to the mount at `target` and every mount
/// beneath it (mount_setattr(2) with AT_RECURSIVE; Linux 5.12+).
pub fn set_recursive_attrs(
    sys: &dyn Syscalls,
    target: &OwnedFd,
    set: u64,
    clear: u64,
    shown: &Path,
) -> Result<()> {
    sys.mount_setattr(target, set, clear).map_err(|e| {
        RuntimeError::sys(
            "mount_setattr",
            format!("{} (recursive attributes)", shown.display()),
            e,
        )
    })
}

/// The flags a mount already has (statvfs), so a read-only remount keeps its
/// locked flags (nosuid, nodev, noexec) and does not fail with EPERM.
pub fn existing_flags(path: &str) -> libc::c_ulong {
    let c = match CString::new(path) {
        Ok(c) => c,
        Err(_) => return 0,
    };
    // SAFETY: statvfs on a valid path into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut f = 0;
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ];
    for (st_flag, ms) in map {
        if st.f_flag & st_flag != 0 {
            f |= ms;
        }
    }
    f
}

/// Lets an `&OsStr` be used where bytes are wanted.
pub fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        let o = parse_options(&["rbind".into(), "ro".into()]);
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        let o = parse_options(&["ro".into(), "rw".into()]);
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn recursive_options() {
        let o = parse_options(&[
            "rbind".into(),
            "rro".into(),
            "rnoexec".into(),
            "rsuid".into(),
        ]);
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC);
        assert_eq!(o.rec_set, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOEXEC);
        assert_eq!(o.rec_clear, libc::MOUNT_ATTR_NOSUID);
        assert_eq!(o.data, "", "recursive options are not filesystem data");
        // A later option wins over an earlier one.
        let o = parse_options(&["rro".into(), "rrw".into()]);
        assert_eq!((o.rec_set, o.rec_clear), (0, libc::MOUNT_ATTR_RDONLY));
        // An access-time mode clears the whole field, as the kernel requires.
        let o = parse_options(&["rnoatime".into()]);
        assert_eq!(o.rec_set, libc::MOUNT_ATTR_NOATIME);
        assert_eq!(o.rec_clear, libc::MOUNT_ATTR__ATIME);
        let o = parse_options(&["rnoatime".into(), "rstrictatime".into()]);
        assert_eq!(o.rec_set, libc::MOUNT_ATTR_STRICTATIME);
        let o = parse_options(&["nosymfollow".into()]);
        assert_eq!(o.flags, libc::MS_NOSYMFOLLOW);
    }

    #[test]
    fn targets_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let rfd = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        // Through a symlink that points out of the root: refused, nothing created outside.
        assert!(open_target(&rfd, Path::new("/evil/sub"), false).is_err());
        assert!(!outside.join("sub").exists(), "nothing created outside");
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        open_target(&rfd, Path::new("/evil/sub"), false).unwrap();
        assert!(
            !outside.join("sub").exists(),
            "the symlink resolved inside the root"
        );
        assert!(inside.join("sub").is_dir());
        open_target(&rfd, Path::new("/etc/hosts"), true).unwrap();
        assert!(root.join("etc/hosts").is_file());
    }

    #[test]
    fn missing_targets_are_made_beneath_links_inside_the_root_and_never_outside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A link to a directory inside the root (as /etc -> /real/etc).
        std::os::unix::fs::symlink("/real/etc", root.join("etc")).unwrap();
        // Dangling links whose targets, read on the host, are outside.
        let out_file = outside.join("hostname");
        std::os::unix::fs::symlink(&out_file, root.join("real/etc/hostname")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("run")).unwrap();
        let rfd = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let fast = |p: &str, file: bool| open_target_fast(&rfd, Path::new(p), file);
        // Made through the link inside the root, several levels at once.
        assert!(fast("/etc/hosts", true).is_some());
        assert!(root.join("real/etc/hosts").is_file());
        assert!(fast("/etc/a/b/c", false).is_some());
        assert!(root.join("real/etc/a/b/c").is_dir());
        // A dangling link as the target or on the way: the fast path
        // declines (libpathrs says what is wrong) and makes nothing outside.
        assert!(fast("/etc/hostname", true).is_none());
        assert!(fast("/run/sub", false).is_none());
        assert!(fast("/etc/../etc/x", false).is_none());
        assert!(!out_file.exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(open_target(&rfd, Path::new("/etc/hostname"), true).is_err());
        assert!(!out_file.exists());
    }
}
