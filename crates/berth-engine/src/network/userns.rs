//! User networks for rootless berth. A user may make no bridge or veth in
//! the host's network namespace, so a rootless store keeps its bridges in a
//! network namespace of its own (`$XDG_RUNTIME_DIR/berth/netns/bridges`,
//! made on first use inside the user's namespaces and bound to that file
//! in the user's mount namespace): each user network is a bridge there,
//! carrying its gateway address, and the resolver ([`super::dns`]) listens
//! on those gateways while its upstream queries leave from the host's
//! namespace.
//!
//! A container on user networks has a namespace of its own wired by pasta
//! (its way out, with its published ports; pasta's interface is `tap0`),
//! and per user network a veth whose other end is on that network's bridge
//! (`eth0`, `eth1`, …, with the network's address): containers reach one
//! another over the bridges and find each other by name. Nothing routes
//! between bridges (forwarding stays off in that namespace), so two user
//! networks stay apart as docker keeps them; a container only on
//! `--internal` networks gets no pasta, so no way out.
//!
//! Podman's rootless networks instead route everything through one shared
//! namespace (one pasta for all, a port-forwarding process per container);
//! here egress and ports stay per container, which is the rootless default
//! network's path, unchanged.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::*;

/// pasta's interface in a container that also has user networks.
pub const PASTA_IFNAME: &str = "tap0";

/// The file a rootless store's bridge namespace is bound to.
fn bridges_path() -> PathBuf {
    pasta::dir().join("bridges")
}

/// Whether `p` is a bound network namespace (not a file left by a user
/// namespace that has since gone, whose mount went with it).
fn is_netns(p: &Path) -> bool {
    const NSFS_MAGIC: u64 = 0x6e73_6673;
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type as u64 == NSFS_MAGIC)
}

/// The namespace of a rootless store's bridges; made when `make` (call
/// under the network lock) and it is missing.
pub(crate) fn bridges_netns(make: bool) -> Result<File> {
    let p = bridges_path();
    if !is_netns(&p) {
        if !make {
            return Err(EngineError::Invalid(format!(
                "the rootless bridges' network namespace {} is gone (start a container on the network again)",
                p.display()
            )));
        }
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&p);
        pasta::make_netns(&p).map_err(|e| EngineError::io("make network namespace", &p, e))?;
    }
    File::open(&p).map_err(|e| EngineError::io("open", &p, e))
}

/// Runs `f` with the calling thread in the rootless bridges' namespace
/// (when there is one: `None` otherwise); sockets it makes stay there.
pub(crate) fn in_bridges_netns<R: Send>(f: impl FnOnce() -> R + Send) -> Option<R> {
    let ns = bridges_netns(false).ok()?;
    netlink::in_netns(std::os::fd::AsFd::as_fd(&ns), f).ok()
}

impl Engine {
    /// A netlink socket where this store's bridges are: the host's
    /// namespace, or a rootless store's own (made if `make`).
    pub(super) fn bridge_netlink(&self, make: bool) -> Result<netlink::Netlink> {
        if crate::rootless::active() {
            netlink::Netlink::open_in(&bridges_netns(make)?).map_err(nl_err)
        } else {
            netlink::Netlink::open().map_err(nl_err)
        }
    }

    /// The network namespace of container `c` (its init is `pid`): for a
    /// rootless one, the file berth made and bound for it before it was
    /// created (its init, once it has switched users, is no process whose
    /// namespaces a rootless engine may open).
    pub(super) fn container_netns(&self, c: &Container, pid: i32) -> Result<File> {
        if crate::rootless::active() {
            let p = pasta::files(&c.id).0;
            File::open(&p).map_err(|e| EngineError::io("open", &p, e))
        } else {
            netns_of(pid)
        }
    }

    /// A rootless container's namespace before it is created: pasta-wired
    /// (as `tap0`, beside the veths to come) unless every network it is on
    /// is internal.
    pub(crate) fn rootless_netns_prepare(&self, c: &mut Container) -> Result<PathBuf> {
        let mut wire = false;
        for (name, ep) in &c.network_settings.networks {
            wire |= !self.endpoint_network(name, ep)?.internal;
        }
        self.pasta_prepare(c, Some(PASTA_IFNAME), wire)
    }
}
