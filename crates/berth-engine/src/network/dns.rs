//! The resolver of user-defined networks: containers on one find each other
//! by name, short id and `--network-alias`, as with docker's embedded DNS.
//!
//! One server process serves every user network: a fork of berth (like a
//! container monitor; there is no daemon) listening on UDP port 53 of each
//! network's gateway address, which is what those containers' resolv.conf
//! names. A query for a running container on the network it arrived from is
//! answered from the container records; anything else is forwarded to the
//! host's resolvers (the server lives in the host's network namespace, so a
//! loopback resolver such as systemd-resolved works; for a rootless store
//! only its listening sockets are in the store's bridge namespace). It holds
//! `networks/dns.lock` while it runs, so there is never more than one, and
//! exits once no container needs it for a while. Packets are parsed and built
//! with the `simple-dns` crate.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};

use crate::container::Status;
use crate::{Engine, EngineError, Result};

/// How long the server stays up with nothing to serve.
const IDLE_EXIT: Duration = Duration::from_secs(30);

fn lock_path(root: &Path) -> std::path::PathBuf {
    root.join("networks").join("dns.lock")
}

fn open_lock(root: &Path) -> Result<std::fs::File> {
    let p = lock_path(root);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| EngineError::io("open", &p, e))
}

/// Whether a server holds the lock.
pub fn running(root: &Path) -> bool {
    match open_lock(root) {
        Ok(f) => f.try_lock().is_err(),
        Err(_) => false,
    }
}

impl Engine {
    /// Starts the resolver unless one runs; returns once it listens on the
    /// gateway `gw` of a network that is up.
    pub(crate) fn dns_ensure(&self, gw: Ipv4Addr) -> Result<()> {
        if running(self.root()) {
            // It picks up networks made since within its next scan (0.5 s);
            // wait for that so a container's first lookup already works.
            let deadline = Instant::now() + Duration::from_secs(2);
            while bind_gateway(gw).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
        let r = crate::run::spawn_detached("dns server", |w| {
            // SAFETY: stdio to /dev/null.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            // Nothing inherited from the process that started it (a monitor's
            // pipes and lock files) may stay open for the server's lifetime.
            let keep = std::os::fd::AsRawFd::as_raw_fd(&w);
            if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
                let fds: Vec<i32> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&fd| fd > 2 && fd != keep)
                    .collect();
                for fd in fds {
                    // SAFETY: closing descriptors this process will not use.
                    unsafe { libc::close(fd) };
                }
            }
            match serve(self, Some(w)) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        })?;
        // The server writes one byte once its sockets are bound (or closes
        // the pipe if it found another server holding the lock).
        let mut f = std::fs::File::from(r);
        let mut b = [0u8; 1];
        let _ = std::io::Read::read(&mut f, &mut b);
        Ok(())
    }
}

/// A socket on port 53 of a network's gateway: in the host's namespace, or
/// for a rootless store in its bridges' namespace (the socket stays there,
/// the thread comes back; upstream queries go from the host's).
fn bind_gateway(gw: Ipv4Addr) -> std::io::Result<UdpSocket> {
    if crate::rootless::active() {
        super::userns::in_bridges_netns(|| UdpSocket::bind((gw, 53)))
            .unwrap_or_else(|| Err(std::io::Error::other("no bridges namespace")))
    } else {
        UdpSocket::bind((gw, 53))
    }
}

/// A user network the server listens on.
struct Listener {
    name: String,
    sock: UdpSocket,
}

/// Runs the server until idle. `ready` gets a byte once listening.
pub fn serve(engine: &Engine, ready: Option<OwnedFd>) -> Result<()> {
    let lock = open_lock(engine.root())?;
    if lock.try_lock().is_err() {
        return Ok(()); // another server runs
    }
    let mut ready = ready.map(std::fs::File::from);
    let mut listeners: BTreeMap<String, Listener> = BTreeMap::new();
    let mut last_busy = Instant::now();
    let mut last_scan = Instant::now() - Duration::from_secs(10);
    let mut buf = vec![0u8; 4096];
    loop {
        if last_scan.elapsed() >= Duration::from_millis(500) {
            last_scan = Instant::now();
            let nets: Vec<_> = engine
                .bridge_networks()
                .into_iter()
                .filter(|n| n.name != super::DEFAULT)
                .collect();
            listeners.retain(|gw, _| nets.iter().any(|n| &n.gateway == gw));
            for n in &nets {
                if listeners.contains_key(&n.gateway) {
                    continue;
                }
                if let Ok(gw) = n.gateway.parse::<Ipv4Addr>()
                    && let Ok(sock) = bind_gateway(gw)
                {
                    listeners.insert(
                        n.gateway.clone(),
                        Listener {
                            name: n.name.clone(),
                            sock,
                        },
                    );
                }
            }
            if let Some(mut r) = ready.take() {
                let _ = std::io::Write::write_all(&mut r, b"1");
            }
            let busy = engine.containers().unwrap_or_default().iter().any(|c| {
                matches!(c.state.status, Status::Running | Status::Restarting)
                    && c.network_settings
                        .networks
                        .keys()
                        .any(|k| k != super::DEFAULT)
            });
            if busy {
                last_busy = Instant::now();
            } else if last_busy.elapsed() >= IDLE_EXIT {
                return Ok(());
            }
        }
        let mut fds: Vec<rustix::event::PollFd> = listeners
            .values()
            .map(|l| rustix::event::PollFd::new(&l.sock, rustix::event::PollFlags::IN))
            .collect();
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 500_000_000,
        };
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            continue;
        }
        let readable: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().contains(rustix::event::PollFlags::IN))
            .collect();
        drop(fds);
        for (l, r) in listeners.values().zip(readable) {
            if !r {
                continue;
            }
            let Ok((n, from)) = l.sock.recv_from(&mut buf) else {
                continue;
            };
            answer(engine, l, &buf[..n], from);
        }
    }
}

/// The addresses of running containers on `net` known as `name`.
fn lookup(engine: &Engine, net: &str, name: &str) -> Vec<Ipv4Addr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    engine
        .containers()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| matches!(c.state.status, Status::Running | Status::Paused))
        .filter_map(|c| {
            let ep = c.network_settings.networks.get(net)?;
            let hit = ep.aliases.iter().any(|a| a.to_ascii_lowercase() == name)
                || c.name.to_ascii_lowercase() == name;
            if hit {
                ep.ip_address.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

fn answer(engine: &Engine, l: &Listener, query: &[u8], from: SocketAddr) {
    let Ok(q) = Packet::parse(query) else {
        return;
    };
    let Some(question) = q.questions.first() else {
        return;
    };
    let qname = question.qname.to_string();
    let ips = lookup(engine, &l.name, &qname);
    if ips.is_empty() {
        forward(l, query, from);
        return;
    }
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    // A container name has only an IPv4 address here: AAAA gets an empty
    // answer (not a forward, which would leak the name upstream).
    if matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) {
        for ip in ips {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                600,
                RData::A(A {
                    address: u32::from(ip),
                }),
            ));
        }
    }
    *reply.rcode_mut() = RCODE::NoError;
    if let Ok(b) = reply.build_bytes_vec_compressed() {
        let _ = l.sock.send_to(&b, from);
    }
}

/// The host's resolvers, from /etc/resolv.conf.
fn upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Relays a query to the host's resolvers on a thread of its own, and the
/// first answer back; SERVFAIL if none answers.
fn forward(l: &Listener, query: &[u8], from: SocketAddr) {
    let Ok(back) = l.sock.try_clone() else {
        return;
    };
    let query = query.to_vec();
    std::thread::spawn(move || {
        for up in upstreams() {
            let bind: SocketAddr = if up.is_ipv4() {
                "0.0.0.0:0".parse().expect("addr")
            } else {
                "[::]:0".parse().expect("addr")
            };
            let Ok(s) = UdpSocket::bind(bind) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            if s.send_to(&query, up).is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let _ = back.send_to(&buf[..n], from);
                return;
            }
        }
        if let Ok(q) = Packet::parse(&query) {
            let mut reply = Packet::new_reply(q.id());
            reply.questions = q.questions.clone();
            *reply.rcode_mut() = RCODE::ServerFailure;
            if let Ok(b) = reply.build_bytes_vec() {
                let _ = back.send_to(&b, from);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf() {
        // Whatever the machine has, every entry parses to port 53.
        assert!(upstreams().iter().all(|a| a.port() == 53));
    }

    #[test]
    fn lock_says_whether_a_server_runs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("networks")).unwrap();
        assert!(!running(d.path()));
        let f = open_lock(d.path()).unwrap();
        f.lock().unwrap();
        assert!(running(d.path()));
        drop(f);
        assert!(!running(d.path()));
    }
}
