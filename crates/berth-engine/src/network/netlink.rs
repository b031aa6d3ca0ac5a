//! A small synchronous rtnetlink client: the handful of link, address and
//! route operations a bridge network needs (bridge, veth pair with its peer
//! created straight in the container's namespace, addresses, default route).
//!
//! Messages are built and parsed by `netlink-packet-route`; the socket is
//! `netlink-sys`. rtnetlink proper is async (tokio), and the `run` path of
//! berth must stay single-threaded because the runtime forks, so the
//! request/acknowledge loop (a few lines) is ours.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A netlink failure: what was asked, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NetlinkError {
    /// The operation (`add bridge berth0`).
    pub op: String,
    /// The errno.
    #[source]
    pub source: std::io::Error,
}

impl NetlinkError {
    /// The errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn err(op: impl Into<String>, source: std::io::Error) -> NetlinkError {
    NetlinkError {
        op: op.into(),
        source,
    }
}

/// A route netlink socket, bound to the network namespace it was opened in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

/// Runs `f` in the network namespace `ns` (sockets it opens stay there)
/// while the calling thread stays in its own. Root switches the calling
/// thread there and back; a rootless berth may not come back to the host's
/// namespace (it is not its user namespace's), so `f` runs on a thread of
/// its own that ends with it.
pub fn in_netns<R: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    if !crate::rootless::active() {
        let _g = NetnsGuard::enter(&ns)?;
        return Ok(f());
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns,
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Switches the calling thread into a network namespace and back on drop.
struct NetnsGuard {
    original: OwnedFd,
}

impl NetnsGuard {
    fn enter(target: &impl AsFd) -> std::io::Result<NetnsGuard> {
        let original: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
        rustix::thread::move_into_link_name_space(
            target.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok(NetnsGuard { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Going back to a namespace we came from cannot fail for want of
        // privilege; if it did, this thread would stay in the container's
        // network, so fail loudly rather than carry on.
        rustix::thread::move_into_link_name_space(
            self.original.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("return to the original network namespace");
    }
}

impl Netlink {
    /// Opens a socket in the caller's network namespace.
    pub fn open() -> Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| err("socket", e))?;
        sock.bind_auto().map_err(|e| err("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| err("connect", e))?;
        let _ = sock.set_ext_ack(true);
        Ok(Netlink { sock, seq: 1 })
    }

    /// Opens a socket in the network namespace `ns` (a `/proc/PID/ns/net`
    /// descriptor); the caller's thread stays in its own.
    pub fn open_in(ns: &impl AsFd) -> Result<Netlink> {
        in_netns(ns.as_fd(), Netlink::open).map_err(|e| err("setns", e))?
    }

    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        self.seq += 1;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| err(op, e))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| err(op, e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| err(op, std::io::Error::other(e.to_string())))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Ok(out);
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != header.sequence_number {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(err(op, e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            &format!("get link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        ) {
            Ok(v) => Ok(v.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The MAC address of a link, as `02:42:…`.
    pub fn mac_address(&mut self, index: u32) -> Result<String> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let v = self.request(
            &format!("get link {index}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        )?;
        Ok(v.into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::Address(b) => Some(
                        b.iter()
                            .map(|x| format!("{x:02x}"))
                            .collect::<Vec<_>>()
                            .join(":"),
                    ),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// Names of every link (for cleanup and tests).
    pub fn link_names(&mut self) -> Result<Vec<String>> {
        let v = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }

    /// The alias (`ip link set … alias`) of the link called `name`:
    /// `None` when there is no such link, `Some("")` when it has none.
    pub fn link_alias(&mut self, name: &str) -> Result<Option<String>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            &format!("get link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        ) {
            Ok(v) => Ok(v.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(
                    l.attributes
                        .into_iter()
                        .find_map(|a| match a {
                            LinkAttribute::IfAlias(s) => Some(s),
                            _ => None,
                        })
                        .unwrap_or_default(),
                ),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge called `name` (an existing one is fine); returns its index.
    pub fn add_bridge(&mut self, name: &str) -> Result<u32> {
        self.add_bridge_as(name, None)
    }

    /// [`Netlink::add_bridge`], the new bridge labelled with `alias` (whose
    /// it is).
    pub fn add_bridge_as(&mut self, name: &str, alias: Option<&str>) -> Result<u32> {
        if let Some(i) = self.link_index(name)? {
            return Ok(i);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            &format!("add bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        ) {
            Ok(_) => {}
            // Another berth made it between our look and our add.
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let index = self.link_index(name)?.ok_or_else(|| {
            err(
                format!("add bridge {name}"),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        // The kernel takes an alias on a link that exists, not on one
        // being made.
        if let Some(a) = alias {
            let mut m = LinkMessage::default();
            m.header.index = index;
            m.attributes.push(LinkAttribute::IfAlias(a.to_string()));
            self.request(
                &format!("set alias of {name}"),
                RouteNetlinkMessage::SetLink(m),
                NLM_F_ACK,
            )?;
        }
        Ok(index)
    }

    /// Creates a veth pair: `host` here, `peer` (named so) straight in the
    /// network namespace `peer_ns`. Returns the host end's index.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_ns: &impl AsRawFd) -> Result<u32> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            &format!("add veth {host}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )?;
        self.link_index(host)?.ok_or_else(|| {
            err(
                format!("add veth {host}"),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })
    }

    /// Sets a link up, optionally enslaving it to `master`.
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(master) = master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        self.request(
            &format!("set link {index} up"),
            RouteNetlinkMessage::SetLink(m),
            NLM_F_ACK,
        )?;
        Ok(())
    }

    /// Deletes a link (a veth takes its peer with it). A missing link is fine.
    pub fn del_link(&mut self, name: &str) -> Result<()> {
        let Some(index) = self.link_index(name)? else {
            return Ok(());
        };
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.request(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(m),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses on link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Ipv4Addr>> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        let v = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(m),
            NLM_F_DUMP,
        )?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.into_iter().find_map(|x| match x {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(ip),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `addr/prefix` to a link (already there is fine).
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        let bits = u32::from(addr);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(bits | !mask)));
        match self.request(
            &format!("add address {addr}/{prefix}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            &format!("add default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )?;
        Ok(())
    }

    /// IPv4 routes of the main table as (destination, prefix), for choosing a
    /// subnet that does not collide with the host's.
    pub fn routes(&mut self) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        let v = self.request("list routes", RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    let dst = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                        _ => None,
                    });
                    Some((
                        dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
                        r.header.destination_prefix_length,
                    ))
                }
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a fresh network namespace on its own thread (root only;
    /// skipped otherwise), so the host's links are never touched.
    fn in_new_netns(f: impl FnOnce() + Send + 'static) {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(move || {
            // SAFETY: only the network namespace of this thread changes,
            // which no other thread relies on.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .expect("unshare netns");
            f();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bridge_veth_address_route_in_a_private_namespace() {
        in_new_netns(|| {
            let mut nl = Netlink::open().unwrap();
            let br = nl.add_bridge("tbr0").unwrap();
            assert_eq!(nl.add_bridge("tbr0").unwrap(), br, "idempotent");
            nl.add_address(br, "10.99.0.1".parse().unwrap(), 24)
                .unwrap();
            nl.add_address(br, "10.99.0.1".parse().unwrap(), 24)
                .unwrap();
            nl.set_up(br, None).unwrap();
            // The peer goes into the same namespace here, under its final name.
            let me = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let v = nl.add_veth("tveth0", "teth0", &me).unwrap();
            nl.set_up(v, Some(br)).unwrap();
            let names = nl.link_names().unwrap();
            assert!(names.contains(&"teth0".to_string()), "{names:?}");
            let p = nl.link_index("teth0").unwrap().unwrap();
            nl.add_address(p, "10.99.0.2".parse().unwrap(), 24).unwrap();
            nl.set_up(p, None).unwrap();
            let routes = nl.routes().unwrap();
            assert!(
                routes.contains(&("10.99.0.0".parse().unwrap(), 24)),
                "{routes:?}"
            );
            nl.del_link("tveth0").unwrap();
            assert_eq!(nl.link_index("teth0").unwrap(), None, "the peer went too");
            nl.del_link("tveth0").unwrap();
            assert!(
                nl.add_veth("x", "y", &me).is_ok()
                    && nl.add_veth("x", "z", &me).unwrap_err().errno() == Some(libc::EEXIST)
            );
        });
    }
}
