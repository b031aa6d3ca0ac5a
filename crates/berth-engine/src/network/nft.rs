//! NAT and filtering for bridge networks, as one nftables table `ip berth`
//! whose rules never change after it is made: networks and published ports
//! are elements of its sets and maps, so adding or removing one is a single
//! atomic `nft` transaction that cannot disturb any other container's rules,
//! and everything berth ever added goes away with `delete table ip berth`.
//!
//! - `nets`/`bridges`: masquerade what leaves a berth subnet for anywhere but
//!   a berth bridge (outbound NAT);
//! - `tcp_ports`/`udp_ports` (host port → container ip . port) and
//!   `tcp_addr_ports`/`udp_addr_ports` (host ip . host port → …): DNAT of
//!   traffic to a local address, from outside (prerouting) and from the host
//!   itself (output), with `route_localnet` on the bridge and a masquerade
//!   for 127.0.0.0/8 so `127.0.0.1:PORT` works without a userspace proxy;
//!   hairpin (a container reaching a published port) is masqueraded too;
//! - `net_forward`: per-network verdicts (internal networks drop what would
//!   leave their bridge).
//!
//! The rules are applied with the `nft` tool (nftables' own parser and
//! netlink batching; the Rust bindings to libnftables are thin wrappers over
//! the same), reading the script from stdin.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// An nft failure, with the script's error output.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` is missing or could not run.
    #[error("nft (from the nftables package) is needed for bridge networks: {0}")]
    Spawn(#[source] std::io::Error),
    /// The kernel or nft refused the change.
    #[error("nft: {what}: {stderr}")]
    Failed {
        /// What was being done.
        what: String,
        /// nft's message.
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, NftError>;

/// The table, made once per network namespace.
const TABLE: &str = r#"table ip berth {
  map tcp_ports { type inet_service : ipv4_addr . inet_service; }
  map udp_ports { type inet_service : ipv4_addr . inet_service; }
  map tcp_addr_ports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
  map udp_addr_ports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
  set nets { type ipv4_addr; flags interval; }
  set bridges { type ifname; }
  map net_forward { type ifname : verdict; }
  chain published {
    dnat ip to ip daddr . tcp dport map @tcp_addr_ports
    dnat ip to tcp dport map @tcp_ports
    dnat ip to ip daddr . udp dport map @udp_addr_ports
    dnat ip to udp dport map @udp_ports
  }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; fib daddr type local jump published; }
  chain output { type nat hook output priority -100; policy accept; fib daddr type local jump published; }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr @nets oifname != @bridges masquerade
    ip saddr 127.0.0.0/8 oifname @bridges masquerade
    ct status dnat oifname @bridges ip saddr @nets masquerade
  }
  chain forward { type filter hook forward priority filter; policy accept; iifname vmap @net_forward; }
}
"#;

/// Runs an nft script.
fn apply(what: &str, script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(NftError::Spawn)?;
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            what: what.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether the table exists in this network namespace.
pub fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", "berth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure the table exists (idempotent: `nft -f` of a table declaration
/// merges with what is there).
pub fn ensure_table() -> Result<()> {
    if table_exists() {
        return Ok(());
    }
    apply("create table ip berth", TABLE)
}

/// A network's entry: its subnet NATed, its bridge known, and for an
/// internal network a chain dropping what leaves the bridge.
pub fn add_network(bridge: &str, subnet: &str, internal: bool) -> Result<()> {
    ensure_table()?;
    let mut s = format!(
        "add element ip berth nets {{ {subnet} }}\nadd element ip berth bridges {{ \"{bridge}\" }}\n"
    );
    if internal {
        s.push_str(&format!(
            "add chain ip berth net-{bridge}\nflush chain ip berth net-{bridge}\nadd rule ip berth net-{bridge} oifname != \"{bridge}\" drop\nadd element ip berth net_forward {{ \"{bridge}\" : jump net-{bridge} }}\n"
        ));
    }
    apply(&format!("add network {bridge}"), &s)
}

/// Removes a network's entries (missing ones are fine).
pub fn remove_network(bridge: &str, subnet: &str) -> Result<()> {
    if !table_exists() {
        return Ok(());
    }
    for s in [
        format!("delete element ip berth nets {{ {subnet} }}"),
        format!("delete element ip berth bridges {{ \"{bridge}\" }}"),
        format!("delete element ip berth net_forward {{ \"{bridge}\" }}"),
        format!("delete chain ip berth net-{bridge}"),
    ] {
        // Each on its own: one missing element must not keep the rest.
        let _ = apply("remove network", &s);
    }
    Ok(())
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The host address it is bound to (`None`: every address).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's port.
    pub port: u16,
}

impl Published {
    fn key(&self) -> (String, String) {
        match self.host_ip {
            Some(a) => (
                format!("{}_addr_ports", self.proto),
                format!("{a} . {}", self.host_port),
            ),
            None => (format!("{}_ports", self.proto), self.host_port.to_string()),
        }
    }
}

/// Publishes ports (all or none: one transaction).
pub fn publish(ports: &[Published]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    ensure_table()?;
    let mut s = String::new();
    for p in ports {
        let (map, key) = p.key();
        s.push_str(&format!(
            "add element ip berth {map} {{ {key} : {} . {} }}\n",
            p.ip, p.port
        ));
    }
    apply("publish ports", &s)
}

/// Withdraws published ports (missing ones are fine).
pub fn unpublish(ports: &[Published]) -> Result<()> {
    if ports.is_empty() || !table_exists() {
        return Ok(());
    }
    for p in ports {
        let (map, key) = p.key();
        let _ = apply(
            "unpublish port",
            &format!("delete element ip berth {map} {{ {key} }}"),
        );
    }
    Ok(())
}

/// How many bridges (of any store) the table still serves.
pub fn bridge_count() -> usize {
    let Ok(o) = Command::new("nft")
        .args(["-j", "list", "set", "ip", "berth", "bridges"])
        .output()
    else {
        return 0;
    };
    if !o.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["set"]["elem"].as_array())
        .map(Vec::len)
        .sum()
}

/// Deletes the whole table (when the last network goes, and in tests).
pub fn delete_table() -> Result<()> {
    if !table_exists() {
        return Ok(());
    }
    apply("delete table ip berth", "delete table ip berth\n")
}

/// Every published port in the table, read back from nft (for reconcile).
pub fn published() -> Vec<Published> {
    let mut out = Vec::new();
    for proto in ["tcp", "udp"] {
        for (map, with_addr) in [
            (format!("{proto}_ports"), false),
            (format!("{proto}_addr_ports"), true),
        ] {
            let o = match Command::new("nft")
                .args(["-j", "list", "map", "ip", "berth", &map])
                .output()
            {
                Ok(o) if o.status.success() => o,
                _ => continue,
            };
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let elems = v["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["map"]["elem"].as_array())
                .flatten();
            for e in elems {
                let (k, val) = (&e[0], &e[1]);
                let target = &val["concat"];
                let (Some(ip), Some(port)) = (
                    target[0].as_str().and_then(|s| s.parse().ok()),
                    target[1].as_u64(),
                ) else {
                    continue;
                };
                let (host_ip, host_port) = if with_addr {
                    (
                        k["concat"][0].as_str().and_then(|s| s.parse().ok()),
                        k["concat"][1].as_u64(),
                    )
                } else {
                    (None, k.as_u64())
                };
                let Some(host_port) = host_port else { continue };
                if with_addr && host_ip.is_none() {
                    continue;
                }
                out.push(Published {
                    proto: proto.to_string(),
                    host_ip,
                    host_port: host_port as u16,
                    ip,
                    port: port as u16,
                });
            }
        }
    }
    out
}
