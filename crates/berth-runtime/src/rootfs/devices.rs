//! Device nodes in the container's /dev: runc's defaults (null, zero, full,
//! random, urandom, tty) plus `linux.devices`, created with mknod — or bind
//! mounted from the host inside a user namespace, where mknod is not allowed —
//! and the standard links (/dev/fd, /dev/std*, /dev/ptmx).

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::mount::{mount_at, open_target};
use crate::error::{Result, SysContext};
use crate::sys::{Node, Syscalls};

/// (path, type, major, minor) of the devices every container gets.
const DEFAULTS: &[(&str, char, u32, u32)] = &[
    ("/dev/null", 'c', 1, 3),
    ("/dev/zero", 'c', 1, 5),
    ("/dev/full", 'c', 1, 7),
    ("/dev/random", 'c', 1, 8),
    ("/dev/urandom", 'c', 1, 9),
    ("/dev/tty", 'c', 5, 0),
];

struct Dev {
    path: String,
    node: Node,
}

fn from_spec(d: &LinuxDevice) -> Dev {
    let kind = match d.typ() {
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::P => 'p',
        _ => 'c',
    };
    Dev {
        path: d.path().display().to_string(),
        node: Node {
            kind,
            major: d.major() as u32,
            minor: d.minor() as u32,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        },
    }
}

/// Creates the device nodes and /dev links under the rootfs (before pivot).
pub fn create(sys: &dyn Syscalls, spec: &Spec, rootfd: &OwnedFd, userns: bool) -> Result<()> {
    let mut devs: Vec<Dev> = DEFAULTS
        .iter()
        .map(|(p, t, ma, mi)| Dev {
            path: p.to_string(),
            node: Node {
                kind: *t,
                major: *ma,
                minor: *mi,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        })
        .collect();
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let nd = from_spec(d);
        devs.retain(|x| x.path != nd.path);
        devs.push(nd);
    }
    for d in &devs {
        make(sys, rootfd, d, userns)?;
    }
    links(rootfd)
}

fn parent_dir(rootfd: &OwnedFd, path: &Path) -> Result<(OwnedFd, String)> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = open_target(rootfd, parent, false)?;
    let dir = rustix::fs::openat(
        &p,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys("open", parent.display())?;
    Ok((dir, name))
}

fn make(sys: &dyn Syscalls, rootfd: &OwnedFd, d: &Dev, userns: bool) -> Result<()> {
    let path = Path::new(&d.path);
    if userns {
        // mknod is refused in a user namespace: bind the host node instead.
        let target = open_target(rootfd, path, true)?;
        return mount_at(sys, Some(&d.path), &target, None, libc::MS_BIND, None, path);
    }
    let (dir, name) = parent_dir(rootfd, path)?;
    sys.mknod(&dir, &name, &d.node).sys("mknod", &d.path)
}

fn links(rootfd: &OwnedFd) -> Result<()> {
    let (dev, _) = parent_dir(rootfd, Path::new("/dev/null"))?;
    let mut list = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if rustix::fs::statat(&dev, "pts/ptmx", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        let _ = rustix::fs::unlinkat(&dev, "ptmx", rustix::fs::AtFlags::empty());
        list.push(("pts/ptmx", "ptmx"));
    }
    if Path::new("/proc/kcore").exists() {
        list.push(("/proc/kcore", "core"));
    }
    for (target, name) in list {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).sys("symlink", format!("/dev/{name}")),
        }
    }
    Ok(())
}
