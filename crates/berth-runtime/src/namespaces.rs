//! Namespaces: which to create (clone flags) and which to join (`setns` on a
//! path), in the order the kernel needs (user first, mount last).

use std::os::fd::AsFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Result, SysContext};
use crate::sys::Syscalls;

/// The clone flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => 0x80, // CLONE_NEWTIME
    }
}

/// The name under /proc/<pid>/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Namespaces of a spec, split into those to create and those to join.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// clone(2) flags for new namespaces.
    pub new_flags: libc::c_int,
    /// (type, path) to join, in join order.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// Whether the container has its own user namespace (new or joined).
    pub user: bool,
    /// Whether the container has a mount namespace.
    pub mount: bool,
    /// Whether a pid namespace is joined (needs a second fork).
    pub join_pid: bool,
    /// A new cgroup namespace, unshared by init once it is in its cgroup (so the
    /// namespace's root is the container's cgroup), not at clone time.
    pub new_cgroup: bool,
}

/// The order namespaces are joined or made in (user first, so the others are
/// owned by it; mount last, so the paths of the others still resolve).
pub(crate) const ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

/// Plans the namespaces of `list`.
pub fn plan(list: &[LinuxNamespace]) -> Plan {
    let mut p = Plan::default();
    for t in ORDER {
        let Some(ns) = list.iter().find(|n| n.typ() == t) else {
            continue;
        };
        match ns.path() {
            Some(path) => {
                p.join.push((t, path.clone()));
                if t == LinuxNamespaceType::Pid {
                    p.join_pid = true;
                }
            }
            None if t == LinuxNamespaceType::Cgroup => p.new_cgroup = true,
            None => p.new_flags |= clone_flag(t),
        }
        if t == LinuxNamespaceType::User {
            p.user = true;
        }
        if t == LinuxNamespaceType::Mount {
            p.mount = true;
        }
    }
    p
}

/// Whether this process runs in a user namespace other than the initial
/// one (a rootless runtime).
pub use berth_fs::in_user_namespace;

/// Joins the namespace at `path`.
pub fn join(sys: &dyn Syscalls, t: LinuxNamespaceType, path: &std::path::Path) -> Result<()> {
    let f = std::fs::File::open(path).sys("open", path.display())?;
    sys.setns(f.as_fd(), clone_flag(t))
        .sys("setns", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_new_and_joined() {
        let list: Vec<LinuxNamespace> = serde_json::from_str(
            r#"[{"type":"mount"},{"type":"network","path":"/proc/1/ns/net"},{"type":"pid"},{"type":"user"}]"#,
        )
        .unwrap();
        let p = plan(&list);
        assert_eq!(
            p.new_flags,
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUSER
        );
        assert_eq!(p.join.len(), 1);
        assert!(p.user && p.mount && !p.join_pid);
    }
}
