//! The network documents: IPv4 subnets, network records, a container's
//! endpoints and published ports, and `-p` as docker reads it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

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
pub(super) fn host_veth(container: &str, network: &str) -> String {
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
