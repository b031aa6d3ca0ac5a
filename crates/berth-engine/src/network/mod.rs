//! Networks: the default `bridge` (Linux bridge `berth0`), user-defined
//! bridge networks (`br-<id>`), and the pseudo-networks `host` and `none`,
//! as docker has them.
//!
//! Owns: network records (`networks/<id>.json`, written atomically under
//! `networks/lock`) and address management: a container's address is part of
//! its own record, so the records are the only lease table (an address is
//! taken while a record holds it, free once the record is gone; allocation
//! holds the network lock until the new record is saved); the container's endpoint (a veth pair whose peer is
//! made straight inside the container's network namespace as `eth0`, between
//! the runtime's create and start, so the process never sees a network that is
//! not ready); NAT and published ports (see [`nft`]); and cleanup: the host end
//! of a veth goes with its namespace, published ports are withdrawn when the
//! container stops, the address when it is removed, [`Engine::refresh`]
//! withdraws the ports of a container found dead with its monitor killed,
//! and [`Engine::network_reconcile`] any published port no running container
//! owns.

pub mod dns;
pub mod netlink;
pub mod nft;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::container::{self, Container, Status};
use crate::{Engine, EngineError, Result};

/// The default network's name and its bridge.
pub const DEFAULT: &str = "bridge";
const DEFAULT_IFACE: &str = "berth0";

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n` (host bits must be zero, as docker requires).
    pub fn parse(s: &str) -> Result<Subnet> {
        let bad = || {
            EngineError::Invalid(format!(
                "invalid subnet {s}: expected CIDR like 10.1.0.0/16"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(EngineError::Invalid(format!(
                "invalid subnet {s}: the prefix must be between /8 and /30"
            )));
        }
        let sn = Subnet { addr, prefix };
        if u32::from(addr) & !sn.mask() != 0 {
            return Err(EngineError::Invalid(format!(
                "invalid subnet {s}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & sn.mask())
            )));
        }
        Ok(sn)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, o: &Subnet) -> bool {
        let p = self.prefix.min(o.prefix);
        let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        u32::from(self.addr) & m == u32::from(o.addr) & m
    }

    /// The `n`th address (1 is the first host).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    /// The number of host addresses (without network and broadcast).
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A network record (`network inspect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    /// Name.
    pub name: String,
    /// 64-hex id.
    pub id: String,
    /// RFC 3339.
    pub created: String,
    /// `bridge` (or `host`/`null` for the pseudo-networks).
    pub driver: String,
    /// No outbound traffic.
    pub internal: bool,
    /// `172.17.0.0/16`.
    pub subnet: String,
    /// `172.17.0.1`.
    pub gateway: String,
    /// The Linux bridge.
    pub bridge: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// The subnet, parsed.
    pub fn subnet(&self) -> Result<Subnet> {
        Subnet::parse(&self.subnet)
    }

    /// The gateway, parsed.
    pub fn gateway(&self) -> Result<Ipv4Addr> {
        self.gateway.parse().map_err(|_| {
            EngineError::Corrupt(format!("network {}: gateway {}", self.name, self.gateway))
        })
    }

    /// `bridge`, `host` and `none` cannot be removed.
    pub fn predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
}

/// A container's place on a network (docker's EndpointSettings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The container's address.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Prefix length.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    /// The gateway.
    pub gateway: String,
    /// The MAC of eth0 (set once it exists).
    pub mac_address: String,
    /// `--network-alias` names (and the container's name and short id).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The interface inside the container (`eth0` for the network it was
    /// created on, `eth1`… for `network connect`).
    #[serde(default)]
    pub interface: String,
}

impl NetworkSettings {
    /// The network the container was created on (its `eth0`, default route
    /// and published ports).
    pub fn primary(&self) -> Option<(&String, &Endpoint)> {
        self.networks
            .iter()
            .find(|(_, e)| e.interface == "eth0" || e.interface.is_empty())
            .or_else(|| self.networks.iter().next())
    }
}

/// The host end of a container's veth on a network: `veth` and 11 hex
/// digits of a hash of both ids (15 characters, the kernel's limit).
fn host_veth(container: &str, network: &str) -> String {
    let d = berth_types::Digest::sha256_of(format!("{container}/{network}").as_bytes());
    format!("veth{}", &d.hex()[..11])
}

/// One host binding of a container port (docker's PortBinding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address (`""`/`0.0.0.0`: all).
    #[serde(rename = "HostIp")]
    pub host_ip: String,
    /// Host port (`""`: chosen at start).
    #[serde(rename = "HostPort")]
    pub host_port: String,
}

/// docker's NetworkSettings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Network name → endpoint.
    pub networks: BTreeMap<String, Endpoint>,
    /// `80/tcp` → host bindings in effect (empty when not running).
    pub ports: BTreeMap<String, Vec<PortBinding>>,
}

/// Parses one `-p` value into (`80/tcp`, binding) pairs:
/// `[ip:][hostport:]port[/proto]`, with port ranges (`8000-8001:80-81`).
pub fn parse_publish(spec: &str) -> Result<Vec<(String, PortBinding)>> {
    let bad = |why: &str| EngineError::Invalid(format!("invalid publish spec {spec:?}: {why}"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad("the protocol must be tcp or udp"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad("expected [ip:][hostPort:]containerPort[/protocol]")),
    };
    if !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
        return Err(bad(&format!("{ip} is not an IPv4 address")));
    }
    let range = |s: &str| -> Result<(u16, u16)> {
        let p = |x: &str| {
            x.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(&format!("{x} is not a port number")))
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (p(a)?, p(b)?);
                if b < a {
                    return Err(bad("a port range must go upwards"));
                }
                Ok((a, b))
            }
            None => p(s).map(|n| (n, n)),
        }
    };
    let (c0, c1) = range(ctr)?;
    let hosts = if host.is_empty() {
        None
    } else {
        Some(range(host)?)
    };
    if let Some((h0, h1)) = hosts
        && h1 - h0 != c1 - c0
        && h0 != h1
    {
        return Err(bad("the host and container port ranges differ in size"));
    }
    let mut out = Vec::new();
    for (i, cp) in (c0..=c1).enumerate() {
        let hp = match hosts {
            None => String::new(),
            Some((h0, h1)) if h0 == h1 => h0.to_string(),
            Some((h0, _)) => (h0 + i as u16).to_string(),
        };
        out.push((
            format!("{cp}/{proto}"),
            PortBinding {
                host_ip: ip.to_string(),
                host_port: hp,
            },
        ));
    }
    Ok(out)
}

fn write_json(path: &std::path::Path, v: &impl Serialize) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).expect("serialises");
    berth_store::fsutil::atomic_write(path, &data)
        .map_err(|e| EngineError::io("write", path, std::io::Error::other(e.to_string())))
}

fn read_sysctl(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn write_sysctl(p: &str, v: &str) -> Result<()> {
    if read_sysctl(p) == v {
        return Ok(());
    }
    std::fs::write(p, v).map_err(|e| EngineError::io("write", std::path::Path::new(p), e))
}

fn nl_err(e: netlink::NetlinkError) -> EngineError {
    EngineError::Invalid(e.to_string())
}

fn nft_err(e: nft::NftError) -> EngineError {
    EngineError::Invalid(e.to_string())
}

/// A network namespace descriptor of a running process.
fn netns_of(pid: i32) -> Result<std::fs::File> {
    let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
    std::fs::File::open(&p).map_err(|e| EngineError::io("open", &p, e))
}

impl Engine {
    fn networks_dir(&self) -> PathBuf {
        self.root().join("networks")
    }

    fn network_lock(&self) -> Result<container::Lock> {
        let d = self.networks_dir();
        std::fs::create_dir_all(&d).map_err(|e| EngineError::io("mkdir", &d, e))?;
        container::lock(&d)
    }

    fn pseudo_network(name: &str) -> Network {
        Network {
            name: name.into(),
            id: berth_types::Digest::sha256_of(format!("berth network {name}").as_bytes())
                .hex()
                .to_string(),
            created: String::new(),
            driver: if name == "host" { "host" } else { "null" }.into(),
            internal: false,
            subnet: String::new(),
            gateway: String::new(),
            bridge: String::new(),
            labels: BTreeMap::new(),
        }
    }

    /// Bridge networks on disk.
    pub(crate) fn bridge_networks(&self) -> Vec<Network> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.networks_dir()) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.len() == 69
                    && n.ends_with(".json")
                    && let Ok(b) = std::fs::read(e.path())
                    && let Ok(net) = serde_json::from_slice::<Network>(&b)
                {
                    out.push(net);
                }
            }
        }
        out
    }

    /// Every network: `bridge` (made on first use), user networks, `host`, `none`.
    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut out = self.bridge_networks();
        if !out.iter().any(|n| n.name == DEFAULT) {
            out.push(self.default_network()?);
        }
        out.push(Self::pseudo_network("host"));
        out.push(Self::pseudo_network("none"));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A network by name, full id or unique id prefix.
    pub fn network_find(&self, q: &str) -> Result<Network> {
        let all = self.networks()?;
        if let Some(n) = all.iter().find(|n| n.name == q || n.id == q) {
            return Ok(n.clone());
        }
        let m: Vec<&Network> = all.iter().filter(|n| n.id.starts_with(q)).collect();
        match m.as_slice() {
            [one] if !q.is_empty() => Ok((*one).clone()),
            [] | [_] => Err(EngineError::NotFound(format!("network {q} not found"))),
            _ => Err(EngineError::Invalid(format!(
                "network {q} is ambiguous ({} matches found based on ID prefix)",
                m.len()
            ))),
        }
    }

    /// The default bridge network's record, made (not yet its bridge) the
    /// first time it is asked for, on a subnet clear of the host's routes.
    fn default_network(&self) -> Result<Network> {
        let _l = self.network_lock()?;
        if let Some(n) = self
            .bridge_networks()
            .into_iter()
            .find(|n| n.name == DEFAULT)
        {
            return Ok(n);
        }
        let subnet = self.free_subnet()?;
        let net = Network {
            name: DEFAULT.into(),
            id: container::new_id(),
            created: crate::now(),
            driver: "bridge".into(),
            internal: false,
            subnet: subnet.to_string(),
            gateway: subnet.host(1).to_string(),
            bridge: DEFAULT_IFACE.into(),
            labels: BTreeMap::new(),
        };
        write_json(&self.networks_dir().join(format!("{}.json", net.id)), &net)?;
        Ok(net)
    }

    /// The first of docker's default pools not used by the host's routes or
    /// another network: 172.17–31.0.0/16, then 192.168.x.0/20.
    fn free_subnet(&self) -> Result<Subnet> {
        let mut used: Vec<Subnet> = self
            .bridge_networks()
            .iter()
            .filter_map(|n| n.subnet().ok())
            .collect();
        let mut nl = netlink::Netlink::open().map_err(nl_err)?;
        for (dst, prefix) in nl.routes().map_err(nl_err)? {
            if prefix > 0 {
                used.push(Subnet { addr: dst, prefix });
            }
        }
        let candidates = (17..=31)
            .map(|b| Subnet {
                addr: Ipv4Addr::new(172, b, 0, 0),
                prefix: 16,
            })
            .chain((0..16).map(|i| Subnet {
                addr: Ipv4Addr::new(192, 168, i * 16, 0),
                prefix: 20,
            }));
        for c in candidates {
            if !used.iter().any(|u| u.overlaps(&c)) {
                return Ok(c);
            }
        }
        Err(EngineError::Invalid(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
        ))
    }

    /// Records a network event (create, destroy).
    fn network_event(&self, n: &Network, action: &str) {
        let mut a = BTreeMap::new();
        a.insert("name".to_string(), n.name.clone());
        a.insert("type".to_string(), n.driver.clone());
        self.event("network", action, &n.id, a);
    }

    /// `network create`.
    pub fn network_create(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        internal: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<Network> {
        let single = name.len() == 1 && name.as_bytes()[0].is_ascii_alphanumeric();
        if !(container::valid_name(name) || single) {
            return Err(EngineError::Invalid(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if matches!(name, "bridge" | "host" | "none") {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let _l = self.network_lock()?;
        let existing = self.bridge_networks();
        if existing.iter().any(|n| n.name == name) {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let subnet = match subnet {
            Some(s) => {
                let s = Subnet::parse(s)?;
                if let Some(o) = existing
                    .iter()
                    .find(|n| n.subnet().is_ok_and(|x| x.overlaps(&s)))
                {
                    return Err(EngineError::Conflict(format!(
                        "invalid pool request: Pool overlaps with other one on this address space ({} of network {})",
                        o.subnet, o.name
                    )));
                }
                s
            }
            None => self.free_subnet()?,
        };
        let gw = match gateway {
            Some(g) => {
                let g: Ipv4Addr = g
                    .parse()
                    .map_err(|_| EngineError::Invalid(format!("invalid gateway {g}")))?;
                if !subnet.contains(g) || g == subnet.addr {
                    return Err(EngineError::Invalid(format!(
                        "gateway {g} is not a host address of subnet {subnet}"
                    )));
                }
                g
            }
            None => subnet.host(1),
        };
        let id = container::new_id();
        let net = Network {
            name: name.into(),
            bridge: format!("br-{}", &id[..12]),
            id,
            created: crate::now(),
            driver: "bridge".into(),
            internal,
            subnet: subnet.to_string(),
            gateway: gw.to_string(),
            labels,
        };
        write_json(&self.networks_dir().join(format!("{}.json", net.id)), &net)?;
        self.network_event(&net, "create");
        Ok(net)
    }

    /// Containers (any state) whose network is `net`.
    fn network_users(&self, net: &Network) -> Result<Vec<Container>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.network_settings.networks.contains_key(&net.name))
            .collect())
    }

    /// `network rm`: refuses while a container uses it.
    pub fn network_remove(&self, q: &str) -> Result<String> {
        let net = self.network_find(q)?;
        if net.predefined() {
            return Err(EngineError::Conflict(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let users = self.network_users(&net)?;
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "error while removing network: network {} id {} has active endpoints (containers: {})",
                net.name,
                net.id,
                users
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let _l = self.network_lock()?;
        self.network_down(&net)?;
        let d = self.networks_dir();
        let p = d.join(format!("{}.json", net.id));
        std::fs::remove_file(&p).map_err(|e| EngineError::io("remove", &p, e))?;
        self.network_event(&net, "destroy");
        Ok(net.name)
    }

    /// `network prune`: user networks no container uses.
    pub fn network_prune(&self) -> Result<Vec<String>> {
        self.network_reconcile()?;
        let mut out = Vec::new();
        for n in self.bridge_networks() {
            if !n.predefined() && self.network_users(&n)?.is_empty() {
                out.push(self.network_remove(&n.id)?);
            }
        }
        Ok(out)
    }

    /// What this store writes as the alias of the bridges it makes, so
    /// that two stores on one host (`--root`) never take each other's.
    fn bridge_owner(&self) -> String {
        let root = self
            .root()
            .canonicalize()
            .unwrap_or_else(|_| self.root().to_path_buf());
        let s = format!("berth {}", root.display());
        if s.len() > 200 {
            format!(
                "berth {}",
                berth_types::Digest::sha256_of(s.as_bytes()).short()
            )
        } else {
            s
        }
    }

    /// Whether the bridge `name` is this store's: labelled with it, or (made
    /// by a berth from before bridges were labelled) unlabelled and carrying
    /// `gateway`; `None` when there is no such link.
    fn bridge_is_ours(
        &self,
        nl: &mut netlink::Netlink,
        name: &str,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Option<bool>> {
        let Some(alias) = nl.link_alias(name).map_err(nl_err)? else {
            return Ok(None);
        };
        if !alias.is_empty() {
            return Ok(Some(alias == self.bridge_owner()));
        }
        let Some(gw) = gateway else {
            return Ok(Some(true));
        };
        let Some(index) = nl.link_index(name).map_err(nl_err)? else {
            return Ok(None);
        };
        Ok(Some(nl.addresses(index).map_err(nl_err)?.contains(&gw)))
    }

    /// Takes a network's bridge and rules away (a bridge of another store
    /// by the same name stays, and so does the table while any store's
    /// network is in it).
    pub(crate) fn network_down(&self, net: &Network) -> Result<()> {
        let mut nl = netlink::Netlink::open().map_err(nl_err)?;
        if self.bridge_is_ours(&mut nl, &net.bridge, net.gateway().ok())? == Some(true) {
            nl.del_link(&net.bridge).map_err(nl_err)?;
        }
        nft::remove_network(&net.bridge, &net.subnet).map_err(nft_err)?;
        if nft::bridge_count() == 0 {
            nft::delete_table().map_err(nft_err)?;
        }
        Ok(())
    }

    /// Brings a network's bridge, address, forwarding and NAT up (idempotent,
    /// and cheap when already up: one netlink lookup). When another store
    /// holds the default bridge's name (`berth0`), this store's default
    /// network moves to the next free `berthN` (its record is rewritten);
    /// returns the network as it now is. Call under the network lock.
    fn network_up(&self, net: &Network) -> Result<Network> {
        let mut nl = netlink::Netlink::open().map_err(nl_err)?;
        let mut net = net.clone();
        let gw = net.gateway().ok();
        match self.bridge_is_ours(&mut nl, &net.bridge, gw)? {
            Some(true) => return Ok(net),
            Some(false) if net.name == DEFAULT => {
                let mut free = None;
                for i in 1..100 {
                    let name = format!("berth{i}");
                    match self.bridge_is_ours(&mut nl, &name, gw)? {
                        None | Some(true) => {
                            free = Some(name);
                            break;
                        }
                        Some(false) => {}
                    }
                }
                net.bridge = free.ok_or_else(|| {
                    EngineError::Invalid("no free bridge name berth1..berth99".into())
                })?;
                write_json(&self.networks_dir().join(format!("{}.json", net.id)), &net)?;
                if nl.link_index(&net.bridge).map_err(nl_err)?.is_some() {
                    return Ok(net);
                }
            }
            Some(false) => {
                return Err(EngineError::Conflict(format!(
                    "bridge {} of network {} belongs to another berth store",
                    net.bridge, net.name
                )));
            }
            None => {}
        }
        let sn = net.subnet()?;
        let br = nl
            .add_bridge_as(&net.bridge, Some(&self.bridge_owner()))
            .map_err(nl_err)?;
        nl.add_address(br, net.gateway()?, sn.prefix)
            .map_err(nl_err)?;
        nl.set_up(br, None).map_err(nl_err)?;
        if !net.internal {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        // 127.0.0.1:PORT of a published port is DNATed out of this bridge.
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
            "1",
        )?;
        nft::add_network(&net.bridge, &net.subnet, net.internal).map_err(nft_err)?;
        Ok(net)
    }

    /// Picks the container's network and address when it is created (kept
    /// until it is removed, so a restart keeps its address). The returned
    /// lock must be held until the container's record is saved.
    pub(crate) fn network_prepare(
        &self,
        c: &mut Container,
        ip: Option<&str>,
        aliases: &[String],
    ) -> Result<Option<container::Lock>> {
        let mode = c.host_config.network_mode.clone();
        if matches!(mode.as_str(), "host" | "none") || mode.starts_with("container:") {
            return Ok(None);
        }
        let net = self.network_find(&mode)?;
        let l = self.network_lock()?;
        let ep = self.lease(c, &net, ip, aliases, "eth0")?;
        c.network_settings.networks.insert(net.name.clone(), ep);
        Ok(Some(l))
    }

    /// Addresses on network `id` held by container records (other than
    /// `except`'s), address → container id.
    fn taken(&self, id: &str, except: &str) -> BTreeMap<String, String> {
        self.records()
            .into_iter()
            .filter(|c| c.id != except)
            .flat_map(|c| {
                c.network_settings
                    .networks
                    .into_values()
                    .filter(|ep| ep.network_id == id)
                    .map(move |ep| (ep.ip_address, c.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// An address on `net` for `c` (`ip` if given and free). The caller
    /// holds the network lock until `c`'s record with it is saved.
    fn lease(
        &self,
        c: &Container,
        net: &Network,
        ip: Option<&str>,
        aliases: &[String],
        interface: &str,
    ) -> Result<Endpoint> {
        let sn = net.subnet()?;
        let gw = net.gateway()?;
        let leases = self.taken(&net.id, &c.id);
        let addr = match ip {
            Some(s) => {
                let a: Ipv4Addr = s
                    .parse()
                    .map_err(|_| EngineError::Invalid(format!("invalid IPv4 address: {s}")))?;
                if !sn.contains(a) || a == gw || a == sn.addr || a == sn.host(sn.hosts() + 1) {
                    return Err(EngineError::Invalid(format!(
                        "no configured subnet or ip-range contain the IP address {a} (network {} is {sn})",
                        net.name
                    )));
                }
                if let Some(other) = leases.get(&a.to_string()) {
                    return Err(EngineError::Conflict(format!(
                        "Address already in use: {a} is leased to container {}",
                        &other[..12.min(other.len())]
                    )));
                }
                a
            }
            None => (1..=sn.hosts())
                .map(|n| sn.host(n))
                .find(|a| *a != gw && !leases.contains_key(&a.to_string()))
                .ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "no available IPv4 addresses on network {} ({sn})",
                        net.name
                    ))
                })?,
        };
        let mut names = vec![c.name.clone(), c.id[..12].to_string()];
        names.extend(aliases.iter().cloned());
        Ok(Endpoint {
            network_id: net.id.clone(),
            ip_address: addr.to_string(),
            ip_prefix_len: sn.prefix,
            gateway: gw.to_string(),
            mac_address: String::new(),
            aliases: names,
            interface: interface.to_string(),
        })
    }

    /// `network connect`: a further network for a container (an `eth1`…;
    /// at once if it runs, else from its next start).
    pub fn network_connect(
        &self,
        container: &str,
        network: &str,
        ip: Option<&str>,
        aliases: &[String],
    ) -> Result<()> {
        let c = self.find(container)?;
        let net = self.network_find(network)?;
        let mode = c.host_config.network_mode.as_str();
        if net.predefined() && net.name != DEFAULT
            || matches!(mode, "host" | "none")
            || mode.starts_with("container:")
        {
            return Err(EngineError::Conflict(format!(
                "container cannot be disconnected from host network or connected to host network (container network mode: {mode}, network: {})",
                net.name
            )));
        }
        let _cl = container::lock(&self.dir(&c.id))?;
        let mut c = container::load(&self.dir(&c.id))?;
        if c.network_settings.networks.contains_key(&net.name) {
            return Err(EngineError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                c.name, net.name
            )));
        }
        let used: Vec<&str> = c
            .network_settings
            .networks
            .values()
            .map(|e| e.interface.as_str())
            .collect();
        let iface = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .expect("a free name");
        let nl = self.network_lock()?;
        let mut ep = self.lease(&c, &net, ip, aliases, &iface)?;
        c.network_settings
            .networks
            .insert(net.name.clone(), ep.clone());
        container::save(&self.dir(&c.id), &c)?;
        drop(nl);
        if matches!(c.state.status, Status::Running | Status::Paused) && c.state.pid > 0 {
            match self.attach_endpoint(&c, c.state.pid, &net, &ep) {
                Ok(mac) => ep.mac_address = mac,
                Err(e) => {
                    c.network_settings.networks.remove(&net.name);
                    container::save(&self.dir(&c.id), &c)?;
                    return Err(e);
                }
            }
            c.network_settings.networks.insert(net.name.clone(), ep);
            container::save(&self.dir(&c.id), &c)?;
        }
        Ok(())
    }

    /// `network disconnect`.
    pub fn network_disconnect(&self, container: &str, network: &str) -> Result<()> {
        let c = self.find(container)?;
        let net = self.network_find(network)?;
        let _cl = container::lock(&self.dir(&c.id))?;
        let mut c = container::load(&self.dir(&c.id))?;
        let Some(ep) = c.network_settings.networks.get(&net.name).cloned() else {
            return Err(EngineError::Conflict(format!(
                "container {} is not connected to network {}",
                c.short_id(),
                net.name
            )));
        };
        if matches!(c.state.status, Status::Running | Status::Paused) {
            if ep.interface == "eth0" && !c.network_settings.ports.is_empty() {
                let _ = nft::unpublish(&published_of(&c));
                c.network_settings.ports.clear();
            }
            // Deleting the host end takes the container's end with it.
            let mut nl = netlink::Netlink::open().map_err(nl_err)?;
            nl.del_link(&host_veth(&c.id, &ep.network_id))
                .map_err(nl_err)?;
        }
        c.network_settings.networks.remove(&net.name);
        container::save(&self.dir(&c.id), &c)
    }

    /// The `/etc/hosts` line for the container's own address, if it has one.
    pub(crate) fn network_hosts_entry(&self, c: &Container) -> Option<(String, String)> {
        c.network_settings
            .primary()
            .map(|(_, ep)| (c.config.hostname.clone(), ep.ip_address.clone()))
    }

    /// The resolv.conf for a container on a bridge network: the host's, minus
    /// loopback nameservers it could not reach (docker's rule; Google's DNS
    /// when none is left), and for a user network the network's own resolver
    /// first (it answers container names and forwards the rest).
    pub(crate) fn network_resolv_conf(&self, c: &Container, host: &str) -> String {
        let Some((name, ep)) = c.network_settings.primary() else {
            return host.to_string();
        };
        let mut out = String::new();
        let mut servers = 0;
        if name != DEFAULT {
            out.push_str(&format!("nameserver {}\n", ep.gateway));
            servers += 1;
        }
        for l in host.lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some("nameserver") {
                let s = w.next().unwrap_or_default();
                if s.starts_with("127.") || s == "::1" || name != DEFAULT {
                    continue;
                }
                servers += 1;
            }
            out.push_str(l);
            out.push('\n');
        }
        if servers == 0 {
            out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
        out
    }

    /// Connects a created container (its init waiting to be started, `pid`)
    /// to its network: the bridge up, a veth pair with `eth0` inside, the
    /// address and default route, and its ports published. On error nothing
    /// is left behind.
    pub(crate) fn network_attach(&self, c: &mut Container, pid: i32) -> Result<()> {
        let mut eps: Vec<(String, Endpoint)> = c
            .network_settings
            .networks
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        // eth0 first: it carries the default route.
        eps.sort_by_key(|(_, e)| {
            (
                e.interface != "eth0" && !e.interface.is_empty(),
                e.interface.clone(),
            )
        });
        let mut made: Vec<String> = Vec::new();
        let undo = |made: &[String]| {
            if let Ok(mut nl) = netlink::Netlink::open() {
                for v in made {
                    let _ = nl.del_link(v);
                }
            }
        };
        for (name, ep) in &eps {
            let net = match self.network_find(name) {
                Ok(n) if n.id == ep.network_id => n,
                _ => {
                    undo(&made);
                    return Err(EngineError::NotFound(format!(
                        "network {name} (id {}) was removed; disconnect the container from it or connect it to another network",
                        &ep.network_id[..12.min(ep.network_id.len())]
                    )));
                }
            };
            match self.attach_endpoint(c, pid, &net, ep) {
                Ok(mac) => {
                    made.push(host_veth(&c.id, &net.id));
                    if let Some(e) = c.network_settings.networks.get_mut(name) {
                        e.mac_address = mac;
                    }
                }
                Err(e) => {
                    undo(&made);
                    return Err(e);
                }
            }
        }
        if let Some((_, ep)) = eps.first()
            && let Err(e) = self.publish_ports(c, ep)
        {
            undo(&made);
            return Err(e);
        }
        Ok(())
    }

    /// One endpoint: the network up, a veth pair with the endpoint's
    /// interface inside, its address (and for `eth0` the default route).
    /// Returns the interface's MAC.
    fn attach_endpoint(
        &self,
        c: &Container,
        pid: i32,
        net: &Network,
        ep: &Endpoint,
    ) -> Result<String> {
        let net = &{
            let _l = self.network_lock()?;
            self.network_up(net)?
        };
        if net.name != DEFAULT {
            self.dns_ensure(net.gateway()?)?;
        }
        let ns = netns_of(pid)?;
        let host_if = host_veth(&c.id, &net.id);
        let iface = if ep.interface.is_empty() {
            "eth0"
        } else {
            ep.interface.as_str()
        };
        let mut nl = netlink::Netlink::open().map_err(nl_err)?;
        // A veth left by a container whose namespace outlived its monitor.
        let _ = nl.del_link(&host_if);
        let br = nl
            .link_index(&net.bridge)
            .map_err(nl_err)?
            .ok_or_else(|| EngineError::Invalid(format!("bridge {} vanished", net.bridge)))?;
        let v = nl.add_veth(&host_if, iface, &ns).map_err(nl_err)?;
        let inside = (|| -> std::result::Result<String, netlink::NetlinkError> {
            nl.set_up(v, Some(br))?;
            let mut cn = netlink::Netlink::open_in(&ns)?;
            if let Some(lo) = cn.link_index("lo")? {
                cn.set_up(lo, None)?;
            }
            let eth = cn.link_index(iface)?.unwrap_or(0);
            cn.add_address(
                eth,
                ep.ip_address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                ep.ip_prefix_len,
            )?;
            cn.set_up(eth, None)?;
            // An internal network has no way out: no default route (and the
            // forward chain drops what would leave its bridge).
            if iface == "eth0" && !net.internal {
                cn.add_default_route(ep.gateway.parse().unwrap_or(Ipv4Addr::UNSPECIFIED))?;
            }
            Ok(cn.mac_address(eth).unwrap_or_default())
        })();
        inside.map_err(|e| {
            let _ = nl.del_link(&host_if);
            nl_err(e)
        })
    }

    /// Resolves and publishes the container's port bindings (random host
    /// ports chosen now), refusing host ports already taken.
    fn publish_ports(&self, c: &mut Container, ep: &Endpoint) -> Result<()> {
        let mut wanted: BTreeMap<String, Vec<PortBinding>> = c.host_config.port_bindings.clone();
        if c.host_config.publish_all_ports {
            for p in c.config.exposed_ports.keys() {
                let key = if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                };
                wanted
                    .entry(key)
                    .or_insert_with(|| vec![PortBinding::default()]);
            }
        }
        if wanted.is_empty() {
            c.network_settings.ports.clear();
            return Ok(());
        }
        let _l = self.network_lock()?;
        let taken = self.published_by_others(&c.id)?;
        let ip: Ipv4Addr = ep.ip_address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut rules = Vec::new();
        let mut shown: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for (key, binds) in &wanted {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let port: u16 = port
                .parse()
                .map_err(|_| EngineError::Invalid(format!("invalid port {key}")))?;
            for b in binds {
                let host_ip: Option<Ipv4Addr> = match b.host_ip.as_str() {
                    "" | "0.0.0.0" => None,
                    s => Some(s.parse().map_err(|_| {
                        EngineError::Invalid(format!("invalid host IP {s} for port {key}"))
                    })?),
                };
                let host_port = match b.host_port.as_str() {
                    "" => free_port(proto, host_ip, &taken, &rules)?,
                    s => s
                        .parse::<u16>()
                        .map_err(|_| EngineError::Invalid(format!("invalid host port {s}")))?,
                };
                let clash = taken.iter().chain(rules.iter()).any(|p: &nft::Published| {
                    p.proto == proto
                        && p.host_port == host_port
                        && (p.host_ip.is_none() || host_ip.is_none() || p.host_ip == host_ip)
                });
                if clash || !port_free(proto, host_ip, host_port) {
                    return Err(EngineError::Conflict(format!(
                        "driver failed programming external connectivity on endpoint {} ({}): Bind for {}:{host_port} failed: port is already allocated",
                        c.name,
                        &c.id[..12],
                        host_ip.map(|a| a.to_string()).unwrap_or("0.0.0.0".into())
                    )));
                }
                rules.push(nft::Published {
                    proto: proto.to_string(),
                    host_ip,
                    host_port,
                    ip,
                    port,
                });
                shown.entry(key.clone()).or_default().push(PortBinding {
                    host_ip: host_ip.map(|a| a.to_string()).unwrap_or("0.0.0.0".into()),
                    host_port: host_port.to_string(),
                });
            }
        }
        nft::publish(&rules).map_err(nft_err)?;
        c.network_settings.ports = shown;
        Ok(())
    }

    /// Withdraws published ports that lead to an address no container
    /// record holds (left by a crash between the steps of an rm, or a root
    /// that was wiped), so a stale DNAT never steals a port. A container
    /// that is starting already holds its address, so this is safe beside
    /// concurrent starts; stopped containers' ports go in [`Engine::refresh`].
    /// Run by `network prune` and `system prune`.
    pub fn network_reconcile(&self) -> Result<()> {
        if !nft::table_exists() {
            return Ok(());
        }
        let held: std::collections::BTreeSet<String> = self
            .records()
            .into_iter()
            .flat_map(|c| c.network_settings.networks.into_values())
            .map(|ep| ep.ip_address)
            .collect();
        // Only this store's: another store's ports point into its subnets.
        let ours: Vec<Subnet> = self
            .bridge_networks()
            .iter()
            .filter_map(|n| n.subnet().ok())
            .collect();
        let stray: Vec<nft::Published> = nft::published()
            .into_iter()
            .filter(|p| !held.contains(&p.ip.to_string()) && ours.iter().any(|s| s.contains(p.ip)))
            .collect();
        nft::unpublish(&stray).map_err(nft_err)
    }

    /// Ports published by other running containers.
    fn published_by_others(&self, id: &str) -> Result<Vec<nft::Published>> {
        let mut out = Vec::new();
        for o in self.containers()? {
            if o.id == id
                || !matches!(
                    o.state.status,
                    Status::Running | Status::Paused | Status::Restarting
                )
            {
                continue;
            }
            out.extend(published_of(&o));
        }
        Ok(out)
    }

    /// Withdraws what [`Engine::network_attach`] set up for a container that
    /// stopped: its published ports.
    pub(crate) fn network_detach(&self, c: &mut Container) {
        if c.network_settings.networks.is_empty() {
            return;
        }
        let _ = nft::unpublish(&published_of(c));
        // The veth goes with the container's network namespace (the kernel
        // deletes both ends when it is freed); deleting it here would cost a
        // synchronous RCU grace period (~13 ms) on every stop. A leftover of
        // the same name is removed by the next attach.
        c.network_settings.ports.clear();
        for e in c.network_settings.networks.values_mut() {
            e.mac_address.clear();
        }
    }
}

/// The nft entries of a container's published ports.
fn published_of(c: &Container) -> Vec<nft::Published> {
    let Some((_, ep)) = c.network_settings.primary() else {
        return Vec::new();
    };
    let ip: Ipv4Addr = ep.ip_address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut out = Vec::new();
    for (key, binds) in &c.network_settings.ports {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(port) = port.parse() else { continue };
        for b in binds {
            let Ok(host_port) = b.host_port.parse() else {
                continue;
            };
            out.push(nft::Published {
                proto: proto.into(),
                host_ip: match b.host_ip.as_str() {
                    "" | "0.0.0.0" => None,
                    s => s.parse().ok(),
                },
                host_port,
                ip,
                port,
            });
        }
    }
    out
}

/// Whether nothing on the host listens on the port (bound and dropped at once).
fn port_free(proto: &str, ip: Option<Ipv4Addr>, port: u16) -> bool {
    let a = std::net::SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    if proto == "udp" {
        std::net::UdpSocket::bind(a).is_ok()
    } else {
        std::net::TcpListener::bind(a).is_ok()
    }
}

/// A free host port from the ephemeral range, as docker picks one for
/// `-p PORT` and `-P`.
fn free_port(
    proto: &str,
    ip: Option<Ipv4Addr>,
    taken: &[nft::Published],
    pending: &[nft::Published],
) -> Result<u16> {
    for _ in 0..64 {
        let a = std::net::SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
        let port = if proto == "udp" {
            std::net::UdpSocket::bind(a)
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        } else {
            std::net::TcpListener::bind(a)
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        }
        .map_err(|e| EngineError::io("bind", std::path::Path::new("ephemeral port"), e))?;
        if !taken
            .iter()
            .chain(pending)
            .any(|p| p.proto == proto && p.host_port == port)
        {
            return Ok(port);
        }
    }
    Err(EngineError::Conflict("no free host port".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("172.18.0.0/16").unwrap();
        assert!(s.contains("172.18.4.5".parse().unwrap()));
        assert!(!s.contains("172.19.0.1".parse().unwrap()));
        assert_eq!(s.host(1).to_string(), "172.18.0.1");
        assert_eq!(s.hosts(), 65534);
        assert!(s.overlaps(&Subnet::parse("172.18.3.0/24").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("172.17.0.0/16").unwrap()));
        assert!(
            Subnet::parse("172.18.0.1/16")
                .unwrap_err()
                .to_string()
                .contains("host bits")
        );
        assert!(Subnet::parse("nonsense").is_err());
        assert!(Subnet::parse("10.0.0.0/31").is_err());
    }

    #[test]
    fn publish_specs_as_docker_reads_them() {
        let one = |s: &str| parse_publish(s).unwrap();
        assert_eq!(
            one("8080:80"),
            vec![(
                "80/tcp".into(),
                PortBinding {
                    host_ip: "".into(),
                    host_port: "8080".into()
                }
            )]
        );
        assert_eq!(
            one("127.0.0.1:53:53/udp"),
            vec![(
                "53/udp".into(),
                PortBinding {
                    host_ip: "127.0.0.1".into(),
                    host_port: "53".into()
                }
            )]
        );
        assert_eq!(one("80")[0].1.host_port, "");
        let r = one("8000-8001:80-81");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            (
                "81/tcp".into(),
                PortBinding {
                    host_ip: "".into(),
                    host_port: "8001".into()
                }
            )
        );
        for bad in [
            "80/sctp",
            "a:80",
            "1:2:3:4",
            "8000-8002:80-81",
            "0",
            "90-80",
            "x.y:1:2",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_rules() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "Id": "a".repeat(64), "Name": "x", "Created": "", "ImageId": "", "Path": "", "Args": [],
            "Config": {"Hostname": "h", "Domainname": "", "User": "", "Tty": false, "OpenStdin": false,
                "Env": [], "Cmd": null, "Image": "", "WorkingDir": "", "Entrypoint": null, "Labels": {},
                "StopSignal": null, "StopTimeout": null},
            "HostConfig": crate::container::HostConfig::default(), "Mounts": [],
            "State": {"Status": "created", "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": "",
                "FinishedAt": "", "OOMKilled": false, "RestartCount": 0}
        }))
        .unwrap();
        let e = Engine::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(
            e.network_resolv_conf(&c, host),
            host,
            "host network: unchanged"
        );
        c.network_settings.networks.insert(
            "bridge".into(),
            Endpoint {
                gateway: "172.17.0.1".into(),
                ..Default::default()
            },
        );
        let r = e.network_resolv_conf(&c, host);
        assert!(
            !r.contains("127.0.0.53")
                && r.contains("nameserver 8.8.8.8")
                && r.contains("search example.com"),
            "{r}"
        );
        c.network_settings.networks.clear();
        c.network_settings.networks.insert(
            "mynet".into(),
            Endpoint {
                gateway: "172.18.0.1".into(),
                ..Default::default()
            },
        );
        let r = e.network_resolv_conf(&c, "nameserver 10.0.0.2\n");
        assert!(
            r.starts_with("nameserver 172.18.0.1\n") && !r.contains("10.0.0.2"),
            "{r}"
        );
    }
}
