//! The container's filesystem view, built inside its mount namespace: propagation,
//! the rootfs bind, config.json's mounts (cgroup mounts expanded per hierarchy),
//! device nodes and /dev links, pivot_root (or MS_MOVE + chroot for ramfs roots),
//! then masked and read-only paths and a read-only root.

pub mod devices;
pub mod mount;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags};

use crate::error::{Result, RuntimeError, SysContext};
use crate::sys::Syscalls;
use mount::{mount_at, open_target, parse_options, propagation_flag};

/// A filesystem an engine mounts on the rootfs directory (overlay of layers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`).
    pub typ: String,
    /// Source (`overlay`, or a directory for `bind`).
    pub source: String,
    /// Options (`lowerdir=…`, `rbind`, `ro`).
    pub options: Vec<String>,
}

/// What rootfs setup needs besides the spec.
pub struct RootfsContext<'a> {
    /// Mounted on the rootfs directory first.
    pub rootfs_mounts: &'a [RootfsMount],
    /// The rootfs directory (host path).
    pub rootfs: &'a Path,
    /// The container has its own user namespace.
    pub userns: bool,
    /// The container has its own cgroup namespace.
    pub cgroupns: bool,
    /// The container's cgroup directories, by v1 controller (empty name on v2).
    pub cgroup_paths: &'a [(String, std::path::PathBuf)],
    /// The container shares the host's mount namespace: no propagation change
    /// of the host's mounts, and `rootfs` is already a private mount of its own
    /// (see [`make_host_view`]).
    pub host_mount_ns: bool,
}

/// Everything before pivot_root: propagation, the rootfs mounts and its
/// self-bind, config.json's mounts in order, then the devices.
pub fn prepare(sys: &dyn Syscalls, spec: &Spec, ctx: &RootfsContext) -> Result<()> {
    let rootfs = ctx
        .rootfs
        .to_str()
        .ok_or_else(|| RuntimeError::Spec("root.path: not UTF-8".into()))?;
    if !ctx.host_mount_ns {
        isolate_propagation(sys, spec, rootfs)?;
    }
    for m in ctx.rootfs_mounts {
        let o = parse_options(&m.options);
        let (typ, flags) = if m.typ == "bind" || o.flags & libc::MS_BIND != 0 {
            (None, o.flags | libc::MS_BIND)
        } else {
            (Some(m.typ.as_str()), o.flags)
        };
        sys.mount(Some(&m.source), rootfs, typ, flags, Some(&o.data))
            .sys("mount", format!("{} {} on {rootfs}", m.typ, m.source))?;
    }
    // pivot_root and a read-only root need the root to be a mount point (the
    // host view already is one).
    if !ctx.host_mount_ns {
        sys.mount(
            Some(rootfs),
            rootfs,
            Some("bind"),
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .sys("mount", format!("{rootfs} (rootfs bind)"))?;
    }
    let rootfd = rustix::fs::open(
        ctx.rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys("open", rootfs)?;
    let asked = crate::lsm::Asked::of(spec);
    for m in spec.mounts().iter().flatten() {
        mount_one(sys, &rootfd, m, ctx, &asked)?;
    }
    devices::create(sys, spec, &rootfd, ctx.userns)
}

/// Changes the propagation of every mount in the new mount namespace (the
/// spec's rootfsPropagation, rslave by default) so nothing the container
/// mounts reaches the host.
fn isolate_propagation(sys: &dyn Syscalls, spec: &Spec, rootfs: &str) -> Result<()> {
    let mut prop = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flag)
        .unwrap_or(libc::MS_SLAVE | libc::MS_REC);
    // Unbindable mounts cannot be the source of the binds to come (the
    // rootfs, cgroups, the spec's binds): start private, and [`finish`]
    // makes the new root unbindable.
    if prop & libc::MS_UNBINDABLE != 0 {
        prop = libc::MS_PRIVATE | libc::MS_REC;
    }
    sys.mount(None, "/", None, prop, None).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            // A plain chroot: its "/" is no mount of its own, so nothing
            // can keep the container's mounts from reaching the host's
            // (runc fails the same way, less clearly).
            RuntimeError::Spec(
                "the root directory is not a mount point (a chroot?): a container needs a root whose propagation it can change; bind-mount the chroot onto itself first (mount --bind DIR DIR), or use a container or a VM".into(),
            )
        } else {
            RuntimeError::sys("mount", "/ (propagation)", e)
        }
    })?;
    // After a recursive slave or private propagation the rootfs's parent
    // mount can be bound and is not shared; after anything else (not
    // recursive, shared, unbindable) it may be either.
    if prop & libc::MS_REC == 0 || prop & (libc::MS_SHARED | libc::MS_UNBINDABLE) != 0 {
        parent_mount_private(sys, rootfs)?;
    }
    Ok(())
}

/// One of config.json's mounts, on its destination resolved inside the
/// rootfs: a cgroup mount, a bind (then its flags by remount), or a
/// filesystem; then recursive attributes and propagation.
fn mount_one(
    sys: &dyn Syscalls,
    rootfd: &OwnedFd,
    m: &oci_spec::runtime::Mount,
    ctx: &RootfsContext,
    asked: &crate::lsm::Asked,
) -> Result<()> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let dest = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(sys, rootfd, dest, &opts, ctx);
    }
    let is_bind = opts.flags & libc::MS_BIND != 0 || typ == "bind";
    let source = m.source().as_ref().map(|s| s.display().to_string());
    let file_target = is_bind
        && source
            .as_deref()
            .is_some_and(|s| std::fs::metadata(s).is_ok_and(|md| !md.is_dir()));
    if is_bind {
        bind_one(sys, rootfd, source.as_deref(), dest, &opts, file_target)?;
    } else {
        let target = open_target(rootfd, dest, false)?;
        let data = crate::lsm::label_mount_data(&opts.data, typ, asked);
        let res = mount_at(
            sys,
            source.as_deref(),
            &target,
            Some(typ),
            opts.flags,
            Some(&data),
            dest,
        );
        match res {
            // sysfs cannot be mounted in a user namespace without its own
            // netns: bind the host's, read-only, as runc does.
            Err(_) if typ == "sysfs" && ctx.userns => {
                let ro = mount::Options {
                    flags: libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY,
                    ..Default::default()
                };
                bind_one(sys, rootfd, Some("/sys"), dest, &ro, false)?;
            }
            // devpts's gid= names a group (tty, 5) a user namespace that
            // maps one id alone does not have: without it, as podman does.
            Err(_) if typ == "devpts" && ctx.userns && data.contains("gid=") => {
                let data: Vec<&str> = data.split(',').filter(|o| !o.starts_with("gid=")).collect();
                let target = open_target(rootfd, dest, false)?;
                mount_at(
                    sys,
                    source.as_deref(),
                    &target,
                    Some(typ),
                    opts.flags,
                    Some(&data.join(",")),
                    dest,
                )?;
            }
            r => r?,
        }
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        let top = open_target(rootfd, dest, file_target)?;
        mount::set_recursive_attrs(sys, &top, opts.rec_set, opts.rec_clear, dest)?;
    }
    if !opts.propagation.is_empty() {
        let top = open_target(rootfd, dest, file_target)?;
        for p in &opts.propagation {
            mount_at(sys, None, &top, None, *p, None, dest)?;
        }
    }
    Ok(())
}

/// A bind of `source` on `dest`, then its other flags by a remount of the
/// new mount (a bind takes them only so), keeping the flags it has.
fn bind_one(
    sys: &dyn Syscalls,
    rootfd: &OwnedFd,
    source: Option<&str>,
    dest: &Path,
    opts: &mount::Options,
    file_target: bool,
) -> Result<()> {
    if let Some(s) = source
        && std::fs::symlink_metadata(s).is_err()
    {
        return Err(RuntimeError::sys(
            "mount",
            format!("{s} on {}", dest.display()),
            std::io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    let target = open_target(rootfd, dest, file_target)?;
    mount_at(
        sys,
        source,
        &target,
        None,
        opts.flags & (libc::MS_BIND | libc::MS_REC),
        None,
        dest,
    )?;
    let extra = opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
    if extra != 0 {
        // Re-resolved: the descriptor we mounted on still names the
        // directory beneath.
        let top = open_target(rootfd, dest, file_target)?;
        let keep = sys.mount_flags(&mount::fd_path(&top)) & !opts.clear;
        mount_at(
            sys,
            None,
            &top,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | extra | keep,
            None,
            dest,
        )?;
    }
    Ok(())
}

/// cgroup mounts: a cgroup2 mount, or for v1 a tmpfs with one mount per
/// hierarchy (the container's own cgroup as its root when it has a cgroup
/// namespace, else a bind of its directory).
fn mount_cgroup(
    sys: &dyn Syscalls,
    rootfd: &OwnedFd,
    dest: &Path,
    opts: &mount::Options,
    ctx: &RootfsContext,
) -> Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | (opts.flags & libc::MS_RDONLY);
    let bind = |src: &Path, at: &Path| {
        let o = mount::Options {
            flags: libc::MS_BIND | libc::MS_REC | flags,
            ..Default::default()
        };
        bind_one(sys, rootfd, Some(&src.display().to_string()), at, &o, false)
    };
    if let [(v2, dir)] = ctx.cgroup_paths
        && v2.is_empty()
    {
        if !ctx.cgroupns {
            return bind(dir, dest);
        }
        let target = open_target(rootfd, dest, false)?;
        return mount_at(
            sys,
            Some("cgroup2"),
            &target,
            Some("cgroup2"),
            flags,
            None,
            dest,
        );
    }
    let target = open_target(rootfd, dest, false)?;
    let tmpfs_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount_at(
        sys,
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
        dest,
    )?;
    // Group controllers by hierarchy directory name as mounted on the host.
    let mut done = std::collections::BTreeSet::new();
    for h in berth_cgroups::v1::hierarchies() {
        let name = h
            .mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !done.insert(name.clone()) {
            continue;
        }
        let sub = dest.join(&name);
        if ctx.cgroupns {
            let t = open_target(rootfd, &sub, false)?;
            let controllers = h.controllers.join(",");
            mount_at(
                sys,
                Some("cgroup"),
                &t,
                Some("cgroup"),
                flags,
                Some(&controllers),
                &sub,
            )?;
        } else {
            let dir = ctx
                .cgroup_paths
                .iter()
                .find(|(c, _)| h.controllers.contains(c))
                .map_or(h.mountpoint.as_path(), |(_, p)| p.as_path());
            bind(dir, &sub)?;
        }
        // cpu,cpuacct mounted together: also reachable as cpu and cpuacct.
        if h.controllers.len() > 1 {
            let parent = open_target(rootfd, dest, false)?;
            let dirfd = rustix::fs::openat(
                &parent,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .sys("open", dest.display())?;
            for c in h.controllers.iter().filter(|c| **c != name) {
                let _ = rustix::fs::symlinkat(name.as_str(), &dirfd, c.as_str());
            }
        }
    }
    if flags & libc::MS_RDONLY != 0 {
        let top = open_target(rootfd, dest, false)?;
        let ro = libc::MS_REMOUNT | tmpfs_flags | libc::MS_RDONLY;
        mount_at(sys, None, &top, None, ro, Some("mode=755"), dest)?;
    }
    Ok(())
}

/// How the init changes its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChange {
    /// pivot_root and detach the old root (the default).
    Pivot,
    /// Move the root mount and chroot (`--no-pivot`, for roots on ramfs, where
    /// pivot_root fails).
    MoveAndChroot,
    /// chroot only: the container shares the host's mount namespace, where
    /// pivot_root would change the root of every process.
    Chroot,
}

/// Makes `rootfs` the process's root.
pub fn pivot(sys: &dyn Syscalls, rootfs: &Path, how: RootChange) -> Result<()> {
    let r = rootfs.display();
    sys.chdir(rootfs).sys("chdir", &r)?;
    let root = Path::new("/");
    if how == RootChange::Chroot {
        sys.chroot(".").sys("chroot", &r)?;
        return sys.chdir(root).sys("chdir", "/");
    }
    let no_pivot = how == RootChange::MoveAndChroot;
    if no_pivot {
        sys.mount(Some("."), "/", None, libc::MS_MOVE, None)
            .sys("mount", format!("{r} (MS_MOVE to /)"))?;
        sys.chroot(".").sys("chroot", &r)?;
        return sys.chdir(root).sys("chdir", "/");
    }
    // The old root, to come back to after pivot_root: "." then still names
    // the new root's own mount (mount(2) does not follow "." up to the old
    // root stacked on it), and making that one slave would cut the
    // container's shared binds (rshared, Kubernetes' Bidirectional) off from
    // their peers on the host. runc goes back the same way.
    let old_root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys("open", "/ (the old root)")?;
    sys.pivot_root(".", ".").sys("pivot_root", &r)?;
    sys.fchdir(old_root.as_fd()).sys("fchdir", "the old root")?;
    // Make the old root slave to us before detaching it, so the unmount
    // does not propagate to the host.
    sys.mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)
        .sys("mount", "old root (slave)")?;
    sys.unmount_detach(".").sys("umount2", "old root")?;
    sys.chdir(root).sys("chdir", "/")
}

/// Where [`make_host_view`] puts the root of the container whose state
/// directory is `state_dir`.
pub fn host_view(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("rootfs")
}

/// For a container without a mount namespace: its root is a recursive bind
/// of `rootfs` at `view` (a directory of the runtime's own state), made
/// private, so that every mount of the container lands under `view` — in the
/// host's table, but nowhere a user's mounts are — and one lazy unmount of
/// `view` ([`detach_host_view`]) takes them all away. runc mounts into the
/// bundle's rootfs itself there and leaves the mounts behind.
pub fn make_host_view(rootfs: &Path, view: &Path) -> Result<()> {
    let sys = &crate::sys::Linux;
    std::fs::create_dir(view).sys("mkdir", view.display())?;
    let (r, v) = (rootfs.display().to_string(), view.display().to_string());
    sys.mount(Some(&r), &v, None, libc::MS_BIND | libc::MS_REC, None)
        .sys("mount", format!("{r} on {v} (rootfs view)"))?;
    sys.mount(None, &v, None, libc::MS_PRIVATE | libc::MS_REC, None)
        .sys("mount", format!("{v} (private)"))
}

/// Undoes [`make_host_view`]: detaches the view and every mount beneath it,
/// then removes the (now empty) directory. Not-mounted and missing are fine;
/// the directory is never removed recursively, so a view that is still
/// mounted cannot take the rootfs's files with it.
pub fn detach_host_view(view: &Path) -> Result<()> {
    match rustix::mount::unmount(view, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e).sys("umount2", view.display()),
    }
    match std::fs::remove_dir(view) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).sys("rmdir", view.display()),
    }
}

/// pivot_root fails with EINVAL when the mount the new root sits on is
/// shared (as with `rootfsPropagation: shared`), a shared parent would also
/// carry the rootfs bind out to the host, and an unbindable one cannot be
/// bound at all: make that one mount private, as runc does. The requested propagation is applied to the new `/` after
/// pivot_root, in [`finish`].
fn parent_mount_private(sys: &dyn Syscalls, rootfs: &str) -> Result<()> {
    let table = berth_cgroups::mountinfo::read().sys("read", "/proc/self/mountinfo")?;
    let under = |mp: &str| {
        mp == "/" || rootfs == mp || rootfs.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
    };
    // Shared (pivot_root refuses it) or unbindable (the rootfs bind fails
    // with EINVAL).
    let parent = table
        .into_iter()
        .filter(|m| under(&m.mount_point))
        .map(|m| {
            let fix = m.is_shared() || m.is_unbindable();
            (m.mount_point, fix)
        })
        .max_by_key(|(mp, _)| mp.len());
    if let Some((mp, true)) = parent {
        sys.mount(None, &mp, None, libc::MS_PRIVATE, None)
            .sys("mount", format!("{mp} (private, parent of the rootfs)"))?;
    }
    Ok(())
}

/// After pivot_root: read-only and masked paths, the read-only root, then
/// the requested root propagation.
pub fn finish(sys: &dyn Syscalls, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        match sys.mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                return Err(RuntimeError::sys(
                    "mount",
                    format!("{p} (readonly bind)"),
                    e,
                ));
            }
        }
        let keep = sys.mount_flags(p);
        sys.mount(
            None,
            p,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | keep,
            None,
        )
        .sys("mount", format!("{p} (readonly remount)"))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let Some(dir) = sys.is_dir(p) else {
            continue;
        };
        let r = if dir {
            sys.mount(Some("tmpfs"), p, Some("tmpfs"), libc::MS_RDONLY, None)
        } else {
            sys.mount(Some("/dev/null"), p, None, libc::MS_BIND, None)
        };
        r.sys("mount", format!("{p} (masked)"))?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        let keep = sys.mount_flags("/");
        sys.mount(
            None,
            "/",
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
            None,
        )
        .sys("mount", "/ (read-only root)")?;
    }
    // Last: once unbindable, nothing here could be bound any more.
    if let Some(prop) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flag)
    {
        sys.mount(None, "/", None, prop, None)
            .sys("mount", "/ (rootfsPropagation)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
