//! A container on its networks: the address picked at create (the
//! container's record is the lease), connect and disconnect, the endpoint
//! (a veth pair made inside the container's namespace between the
//! runtime's create and start), /etc/hosts and resolv.conf entries,
//! published ports and their withdrawal, and the reconcile of ports no
//! running container owns.

use super::*;

impl Engine {
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
        if matches!(mode.as_str(), "host" | "none" | pasta::MODE) || mode.starts_with("container:")
        {
            return Ok(None);
        }
        if crate::rootless::active() && (mode == DEFAULT || mode == "default") {
            // A user cannot make bridges or veths on the host: the default
            // network becomes pasta's user-mode one (user networks live in
            // the store's own namespace, see [`userns`]).
            pasta::program()?;
            c.host_config.network_mode = pasta::MODE.to_string();
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
        let mut used: Vec<&str> = c
            .network_settings
            .networks
            .values()
            .map(|e| e.interface.as_str())
            .collect();
        // A rootless container's pasta interface is named as the host's
        // (or `tap0`): the veths' names keep clear of the host's names.
        let host_links = if crate::rootless::active() {
            netlink::Netlink::open()
                .and_then(|mut nl| nl.link_names())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        used.extend(host_links.iter().map(String::as_str));
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
            if ep.interface == "eth0"
                && !c.network_settings.ports.is_empty()
                && !crate::rootless::active()
            {
                let _ = nft::unpublish(&published_of(&c));
                c.network_settings.ports.clear();
            }
            // Deleting the host end takes the container's end with it.
            let mut nl = self.bridge_netlink(false)?;
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
        let rootless = crate::rootless::active();
        if c.host_config.network_mode == pasta::MODE && !rootless {
            return Ok(()); // wired before the container was made
        }
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
            if let Ok(mut nl) = self.bridge_netlink(false) {
                for v in made {
                    let _ = nl.del_link(v);
                }
            }
        };
        for (name, ep) in &eps {
            let net = match self.endpoint_network(name, ep) {
                Ok(n) => n,
                Err(e) => {
                    undo(&made);
                    return Err(e);
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
        // A rootless container's ports are pasta's, forwarded already.
        if let Some((_, ep)) = eps.first().filter(|_| !rootless)
            && let Err(e) = self.publish_ports(c, ep)
        {
            undo(&made);
            return Err(e);
        }
        Ok(())
    }

    /// The network `name` an endpoint of a container is on, unless it was
    /// removed (or removed and made again: another id) since.
    pub(super) fn endpoint_network(&self, name: &str, ep: &Endpoint) -> Result<Network> {
        match self.network_find(name) {
            Ok(n) if n.id == ep.network_id => Ok(n),
            _ => Err(EngineError::NotFound(format!(
                "network {name} (id {}) was removed; disconnect the container from it or connect it to another network",
                &ep.network_id[..12.min(ep.network_id.len())]
            ))),
        }
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
        let ns = self.container_netns(c, pid)?;
        let host_if = host_veth(&c.id, &net.id);
        let iface = if ep.interface.is_empty() {
            "eth0"
        } else {
            ep.interface.as_str()
        };
        let mut nl = self.bridge_netlink(false)?;
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
            // (A rootless container's way out is pasta's interface.)
            if iface == "eth0" && !net.internal && !crate::rootless::active() {
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
        let ip: Ipv4Addr = ep.ip_address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let _l = self.network_lock()?;
        let taken = self.published_by_others(&c.id)?;
        let (rules, shown) = plan_ports(c, ip, &taken)?;
        if rules.is_empty() {
            c.network_settings.ports.clear();
            return Ok(());
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
        if c.host_config.network_mode == pasta::MODE || crate::rootless::active() {
            // pasta goes, and the namespace's binding: the veths go with
            // the namespace.
            if c.host_config.network_mode == pasta::MODE || !c.network_settings.networks.is_empty()
            {
                self.pasta_detach(c);
            }
            for e in c.network_settings.networks.values_mut() {
                e.mac_address.clear();
            }
            return;
        }
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

/// The ports `c` publishes (`-p`, and `-P`'s exposed ports on random host
/// ports) to its address `ip`, none clashing with `taken` or in use on the
/// host: the rules, and what `port`/`inspect` show of them.
pub(super) type PortPlan = (Vec<nft::Published>, BTreeMap<String, Vec<PortBinding>>);

pub(super) fn plan_ports(
    c: &Container,
    ip: Ipv4Addr,
    taken: &[nft::Published],
) -> Result<PortPlan> {
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
                "" => free_port(proto, host_ip, taken, &rules)?,
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
    Ok((rules, shown))
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
