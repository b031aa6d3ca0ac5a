//! The syscall seam: the calls that change a process's view of the system —
//! mounts, pivot_root and chroot, namespaces, user and group ids,
//! capabilities, device nodes — go through [`Syscalls`], so the rootfs and
//! credential sequences can be unit-tested without root against a recording
//! double ([`record::Recorder`], tests only), as youki's `Syscall` trait
//! allows. [`Linux`] makes the real calls. Reads (opening paths inside the
//! rootfs, stat) stay direct: a test runs them on a temporary directory.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};

/// A device node to make: kind (`c`, `b`, `p`), mode, device number, owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `c` (character), `b` (block) or `p` (fifo).
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The calls the runtime's setup sequences make; see the module doc.
pub trait Syscalls {
    /// mount(2); `target` may be a `/proc/self/fd/N` path.
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// mount_setattr(2) with AT_RECURSIVE on the mount at `target`.
    fn mount_setattr(&self, target: &OwnedFd, set: u64, clear: u64) -> io::Result<()>;
    /// The flags the mount at `path` has (statvfs), 0 when unknown.
    fn mount_flags(&self, path: &str) -> libc::c_ulong;
    /// umount2(MNT_DETACH).
    fn unmount_detach(&self, target: &str) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &str, put_old: &str) -> io::Result<()>;
    /// chroot(2).
    fn chroot(&self, path: &str) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// fchdir(2) (the descriptor may be O_PATH).
    fn fchdir(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()>;
    /// Whether `path` is a directory (`None`: it does not exist): what a
    /// masked path is covered with.
    fn is_dir(&self, path: &str) -> Option<bool>;
    /// Replaces `name` in `dir` with the device node `node`, with its mode
    /// and owner.
    fn mknod(&self, dir: &OwnedFd, name: &str, node: &Node) -> io::Result<()>;
    /// setns(2) into the namespace open at `fd`, of type `nstype` (CLONE_NEW*).
    fn setns(&self, fd: BorrowedFd, nstype: libc::c_int) -> io::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    /// prctl(PR_SET_KEEPCAPS, 1): keep permitted capabilities across the
    /// user change.
    fn keep_caps(&self) -> io::Result<()>;
    /// setgroups(2).
    fn setgroups(&self, gids: &[libc::gid_t]) -> io::Result<()>;
    /// setresgid(2) with one id for all three.
    fn setresgid(&self, gid: libc::gid_t) -> io::Result<()>;
    /// setresuid(2) with one id for all three.
    fn setresuid(&self, uid: libc::uid_t) -> io::Result<()>;
    /// The capabilities this kernel knows.
    fn caps_supported(&self) -> CapsHashSet;
    /// Reads one of the thread's capability sets.
    fn caps_read(&self, set: CapSet) -> io::Result<CapsHashSet>;
    /// Sets one of the thread's capability sets to exactly `caps`.
    fn caps_set(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()>;
    /// Drops `cap` from the bounding set.
    fn caps_drop_bounding(&self, cap: Capability) -> io::Result<()>;
    /// Clears the ambient set.
    fn caps_clear_ambient(&self) -> io::Result<()>;
    /// Raises `cap` in the ambient set.
    fn caps_raise_ambient(&self, cap: Capability) -> io::Result<()>;
}

/// The real calls.
pub struct Linux;

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Syscalls for Linux {
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        crate::rootfs::mount::sys_mount(source, target, fstype, flags, data)
    }

    fn mount_setattr(&self, target: &OwnedFd, set: u64, clear: u64) -> io::Result<()> {
        let attr = libc::mount_attr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: a valid descriptor, an empty NUL-terminated path and a
        // mount_attr of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                target.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        check(r as libc::c_int)
    }

    fn mount_flags(&self, path: &str) -> libc::c_ulong {
        crate::rootfs::mount::existing_flags(path)
    }

    fn unmount_detach(&self, target: &str) -> io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).map_err(Into::into)
    }

    fn pivot_root(&self, new_root: &str, put_old: &str) -> io::Result<()> {
        rustix::process::pivot_root(new_root, put_old).map_err(Into::into)
    }

    fn chroot(&self, path: &str) -> io::Result<()> {
        rustix::process::chroot(path).map_err(Into::into)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn fchdir(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        rustix::process::fchdir(fd).map_err(Into::into)
    }

    fn is_dir(&self, path: &str) -> Option<bool> {
        std::fs::metadata(path).ok().map(|m| m.is_dir())
    }

    fn mknod(&self, dir: &OwnedFd, name: &str, node: &Node) -> io::Result<()> {
        use rustix::fs::{AtFlags, FileType, Mode};
        let ft = match node.kind {
            'b' => FileType::BlockDevice,
            'p' => FileType::Fifo,
            _ => FileType::CharacterDevice,
        };
        let mode = Mode::from_raw_mode(node.mode & 0o7777);
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        match rustix::fs::mknodat(
            dir,
            name,
            ft,
            mode,
            rustix::fs::makedev(node.major, node.minor),
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::chmodat(dir, name, mode, AtFlags::empty())?;
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    fn setns(&self, fd: BorrowedFd, nstype: libc::c_int) -> io::Result<()> {
        // SAFETY: setns on a descriptor the caller holds open.
        check(unsafe { libc::setns(fd.as_raw_fd(), nstype) })
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: unshare with integer flags.
        check(unsafe { libc::unshare(flags) })
    }

    fn keep_caps(&self) -> io::Result<()> {
        // SAFETY: prctl with constant integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
    }

    fn setgroups(&self, gids: &[libc::gid_t]) -> io::Result<()> {
        // SAFETY: a pointer to `gids.len()` valid gids.
        check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) })
    }

    fn setresgid(&self, gid: libc::gid_t) -> io::Result<()> {
        // SAFETY: integer arguments.
        check(unsafe { libc::setresgid(gid, gid, gid) })
    }

    fn setresuid(&self, uid: libc::uid_t) -> io::Result<()> {
        // SAFETY: integer arguments.
        check(unsafe { libc::setresuid(uid, uid, uid) })
    }

    fn caps_supported(&self) -> CapsHashSet {
        // What the kernel knows does not change: probed once (41
        // PR_CAPBSET_READ calls), not at each of the six uses of a start.
        static KNOWN: std::sync::OnceLock<CapsHashSet> = std::sync::OnceLock::new();
        KNOWN
            .get_or_init(caps::runtime::thread_all_supported)
            .clone()
    }

    fn caps_read(&self, set: CapSet) -> io::Result<CapsHashSet> {
        caps::read(None, set).map_err(caps_err)
    }

    fn caps_set(&self, set: CapSet, value: &CapsHashSet) -> io::Result<()> {
        caps::set(None, set, value).map_err(caps_err)
    }

    fn caps_drop_bounding(&self, cap: Capability) -> io::Result<()> {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_err)
    }

    fn caps_clear_ambient(&self) -> io::Result<()> {
        caps::clear(None, CapSet::Ambient).map_err(caps_err)
    }

    fn caps_raise_ambient(&self, cap: Capability) -> io::Result<()> {
        caps::raise(None, CapSet::Ambient, cap).map_err(caps_err)
    }
}

/// Mount flags by name, for messages and test goldens (`MS_BIND|MS_REC`).
pub fn mount_flag_names(flags: libc::c_ulong) -> String {
    const NAMES: &[(libc::c_ulong, &str)] = &[
        (libc::MS_RDONLY, "MS_RDONLY"),
        (libc::MS_NOSUID, "MS_NOSUID"),
        (libc::MS_NODEV, "MS_NODEV"),
        (libc::MS_NOEXEC, "MS_NOEXEC"),
        (libc::MS_REMOUNT, "MS_REMOUNT"),
        (libc::MS_NOATIME, "MS_NOATIME"),
        (libc::MS_NODIRATIME, "MS_NODIRATIME"),
        (libc::MS_BIND, "MS_BIND"),
        (libc::MS_MOVE, "MS_MOVE"),
        (libc::MS_REC, "MS_REC"),
        (libc::MS_UNBINDABLE, "MS_UNBINDABLE"),
        (libc::MS_PRIVATE, "MS_PRIVATE"),
        (libc::MS_SLAVE, "MS_SLAVE"),
        (libc::MS_SHARED, "MS_SHARED"),
        (libc::MS_RELATIME, "MS_RELATIME"),
        (libc::MS_STRICTATIME, "MS_STRICTATIME"),
    ];
    let mut left = flags;
    let mut out: Vec<String> = Vec::new();
    for (bit, name) in NAMES {
        if flags & bit != 0 {
            out.push((*name).to_string());
            left &= !bit;
        }
    }
    if left != 0 {
        out.push(format!("{left:#x}"));
    }
    if out.is_empty() {
        "0".into()
    } else {
        out.join("|")
    }
}

#[cfg(test)]
pub mod record {
    //! A recording double of [`Syscalls`]: every call is logged as a line,
    //! paths shown inside the rootfs (`/proc`, after pivot_root as before),
    //! and nothing is changed outside the (temporary) rootfs, where a device
    //! node is an empty file. After its `pivot_root`, absolute
    //! paths are looked up under the rootfs, as the real process would see them.

    use super::*;
    use std::cell::{Cell, RefCell};
    use std::path::PathBuf;

    /// The double.
    pub struct Recorder {
        root: PathBuf,
        pivoted: Cell<bool>,
        /// The calls, in order.
        pub log: RefCell<Vec<String>>,
        /// Calls that fail, by prefix of their logged line, with an errno.
        pub fail: Vec<(String, i32)>,
        /// What `caps_read(Permitted)` answers.
        pub permitted: CapsHashSet,
    }

    impl Recorder {
        /// A recorder for a container whose rootfs is `root`.
        pub fn new(root: &Path) -> Recorder {
            Recorder {
                root: root.canonicalize().unwrap(),
                pivoted: Cell::new(false),
                log: RefCell::new(Vec::new()),
                fail: Vec::new(),
                permitted: CapsHashSet::new(),
            }
        }

        /// The log, taken.
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.log.borrow_mut())
        }

        /// A path as the container sees it.
        fn show(&self, p: &str) -> String {
            let real = if p.starts_with("/proc/self/fd/") {
                std::fs::read_link(p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| p.to_string())
            } else {
                p.to_string()
            };
            match Path::new(&real).strip_prefix(&self.root) {
                Ok(rest) => format!("/{}", rest.display()),
                Err(_) => real,
            }
        }

        /// Where an absolute path of the container is on the host, after
        /// pivot_root.
        fn inside(&self, p: &str) -> PathBuf {
            if self.pivoted.get() {
                self.root.join(p.trim_start_matches('/'))
            } else {
                PathBuf::from(p)
            }
        }

        fn call(&self, line: String) -> io::Result<()> {
            let failing = self
                .fail
                .iter()
                .find(|(prefix, _)| line.starts_with(prefix.as_str()))
                .map(|(_, e)| *e);
            self.log.borrow_mut().push(line);
            match failing {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(()),
            }
        }
    }

    impl Syscalls for Recorder {
        fn mount(
            &self,
            source: Option<&str>,
            target: &str,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            let bind = flags & libc::MS_BIND != 0 && flags & libc::MS_REMOUNT == 0;
            // A bind of a path that is not there fails as the kernel's does.
            if bind
                && self.pivoted.get()
                && let Some(s) = source
                && s.starts_with('/')
                && !self.inside(s).exists()
            {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let mut line = format!(
                "mount {} on {}",
                source.map(|s| self.show(s)).unwrap_or("none".into()),
                self.show(target)
            );
            if let Some(t) = fstype {
                line += &format!(" type {t}");
            }
            line += &format!(" {}", mount_flag_names(flags));
            if let Some(d) = data.filter(|d| !d.is_empty()) {
                line += &format!(" {d}");
            }
            self.call(line)
        }

        fn mount_setattr(&self, target: &OwnedFd, set: u64, clear: u64) -> io::Result<()> {
            let t = self.show(&crate::rootfs::mount::fd_path(target));
            self.call(format!("mount_setattr {t} set={set:#x} clear={clear:#x}"))
        }

        fn mount_flags(&self, _path: &str) -> libc::c_ulong {
            0
        }

        fn unmount_detach(&self, target: &str) -> io::Result<()> {
            self.call(format!("umount2 {} MNT_DETACH", self.show(target)))
        }

        fn pivot_root(&self, new_root: &str, put_old: &str) -> io::Result<()> {
            let r = self.call(format!("pivot_root {new_root} {put_old}"));
            self.pivoted.set(true);
            r
        }

        fn chroot(&self, path: &str) -> io::Result<()> {
            self.call(format!("chroot {}", self.show(path)))
        }

        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.call(format!("chdir {}", self.show(&path.display().to_string())))
        }

        fn fchdir(&self, _fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
            self.call("fchdir (the old root)".to_string())
        }

        fn is_dir(&self, path: &str) -> Option<bool> {
            std::fs::metadata(self.inside(path))
                .ok()
                .map(|m| m.is_dir())
        }

        fn mknod(&self, dir: &OwnedFd, name: &str, n: &Node) -> io::Result<()> {
            // An empty file stands for the node, so later steps find it.
            let placeholder = rustix::fs::openat(
                dir,
                name,
                rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            )?;
            drop(placeholder);
            let d = self.show(&crate::rootfs::mount::fd_path(dir));
            let path = Path::new(&d).join(name);
            self.call(format!(
                "mknod {} {} {}:{} mode={:o} owner={}:{}",
                path.display(),
                n.kind,
                n.major,
                n.minor,
                n.mode,
                n.uid,
                n.gid
            ))
        }

        fn setns(&self, _fd: BorrowedFd, nstype: libc::c_int) -> io::Result<()> {
            self.call(format!("setns {nstype:#x}"))
        }

        fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
            self.call(format!("unshare {flags:#x}"))
        }

        fn keep_caps(&self) -> io::Result<()> {
            self.call("prctl PR_SET_KEEPCAPS".into())
        }

        fn setgroups(&self, gids: &[libc::gid_t]) -> io::Result<()> {
            self.call(format!("setgroups {gids:?}"))
        }

        fn setresgid(&self, gid: libc::gid_t) -> io::Result<()> {
            self.call(format!("setresgid {gid}"))
        }

        fn setresuid(&self, uid: libc::uid_t) -> io::Result<()> {
            self.call(format!("setresuid {uid}"))
        }

        fn caps_supported(&self) -> CapsHashSet {
            caps::all()
        }

        fn caps_read(&self, _set: CapSet) -> io::Result<CapsHashSet> {
            Ok(self.permitted.clone())
        }

        fn caps_set(&self, set: CapSet, value: &CapsHashSet) -> io::Result<()> {
            let mut v: Vec<String> = value.iter().map(|c| c.to_string()).collect();
            v.sort();
            self.call(format!("capset {set:?} [{}]", v.join(",")))
        }

        fn caps_drop_bounding(&self, cap: Capability) -> io::Result<()> {
            self.call(format!("drop bounding {cap}"))
        }

        fn caps_clear_ambient(&self) -> io::Result<()> {
            self.call("clear ambient".into())
        }

        fn caps_raise_ambient(&self, cap: Capability) -> io::Result<()> {
            self.call(format!("raise ambient {cap}"))
        }
    }
}
