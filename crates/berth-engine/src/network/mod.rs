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

mod attach;
pub mod dns;
mod model;
pub mod netlink;
pub mod nft;
pub mod pasta;
pub mod userns;

pub use model::*;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use crate::container::{self, Container, Status};
use crate::{Engine, EngineError, Result};

/// The default network's name and its bridge.
pub const DEFAULT: &str = "bridge";
const DEFAULT_IFACE: &str = "berth0";

fn write_json(path: &std::path::Path, v: &impl Serialize) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).expect("serialises");
    berth_fs::atomic_write(path, &data)
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
        if crate::rootless::active() {
            // The bridge is in the store's own namespace, with no rules.
            if let Ok(mut nl) = self.bridge_netlink(false)
                && nl.link_index(&net.bridge).map_err(nl_err)?.is_some()
            {
                nl.del_link(&net.bridge).map_err(nl_err)?;
            }
            return Ok(());
        }
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
        let mut nl = self.bridge_netlink(true)?;
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
        if crate::rootless::active() {
            // No forwarding, NAT or published ports in a rootless store's
            // bridge namespace: containers leave, and are reached, through
            // their own pasta.
            return Ok(net);
        }
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
