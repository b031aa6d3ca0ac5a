//! Where the service listens: a unix socket (`unix:///run/berth.sock`, mode
//! 0660 with the `berth` group when there is one, as docker.sock has its
//! `docker` group), a socket systemd handed over (`LISTEN_FDS`, `fd://`), or
//! TCP on a loopback address only (a socket anyone on the network could
//! reach would hand them root; TLS with client certificates is not served
//! yet). Connections are HTTP/1.1 with upgrades, as docker's clients speak
//! it (attach and exec hijack the connection).

use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};

use crate::Ctx;

/// A listening socket.
pub enum Listener {
    /// A unix socket, at its path (removed on drop when we made it).
    Unix(UnixListener, Option<PathBuf>),
    /// TCP on loopback.
    Tcp(TcpListener),
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The socket systemd handed this process, if it did.
fn activated() -> Option<std::os::unix::net::UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || n < 1 {
        return None;
    }
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID is ours);
    // nothing else owns it.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) };
    // Not for our children.
    let _ = rustix::io::fcntl_setfd(&l, rustix::io::FdFlags::CLOEXEC);
    Some(l)
}

/// The `berth` group's id, if the group exists.
fn berth_gid() -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == "berth")
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

impl Listener {
    /// Opens `host`.
    pub async fn open(host: &str) -> Result<Listener, String> {
        if host == "fd://" || (host.starts_with("unix://") && activated_env()) {
            if let Some(l) = activated() {
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                return Ok(Listener::Unix(
                    UnixListener::from_std(l).map_err(|e| e.to_string())?,
                    None,
                ));
            }
            if host == "fd://" {
                return Err("fd://: no socket was passed (LISTEN_FDS)".into());
            }
        }
        if let Some(path) = host.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            // A socket left by a service that is gone is replaced; one that
            // answers belongs to a running service.
            if path.exists() {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(format!(
                        "{}: another service is listening there",
                        path.display()
                    ));
                }
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            // Created private, then opened to the group: never world-reachable.
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
            let l = UnixListener::bind(&path);
            rustix::process::umask(old);
            let l = l.map_err(|e| format!("listening on {}: {e}", path.display()))?;
            if let Some(gid) = berth_gid() {
                let _ = std::os::unix::fs::chown(&path, Some(0), Some(gid));
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(Listener::Unix(l, Some(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            let a: std::net::SocketAddr = addr
                .parse()
                .map_err(|e| format!("invalid address {addr:?}: {e}"))?;
            if !a.ip().is_loopback() {
                return Err(format!(
                    "{host}: refusing plain TCP on a non-loopback address: anyone who \
                     can reach it could run containers as root (TLS with client \
                     certificates is not served yet; use a unix socket)"
                ));
            }
            let l = TcpListener::bind(a)
                .await
                .map_err(|e| format!("listening on {a}: {e}"))?;
            return Ok(Listener::Tcp(l));
        }
        Err(format!(
            "{host}: expected unix:///path, tcp://127.0.0.1:PORT or fd://"
        ))
    }

    /// Where it listens, for the startup line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(_, Some(p)) => format!("unix://{}", p.display()),
            Listener::Unix(_, None) => "a socket passed by systemd".into(),
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp://{a}"))
                .unwrap_or_else(|_| "tcp".into()),
        }
    }

    /// Accepts and serves connections for ever.
    pub async fn run(&self, ctx: Ctx) -> Result<(), String> {
        loop {
            let io: Box<dyn Io> = match self {
                Listener::Unix(l, _) => match l.accept().await {
                    Ok((s, _)) => Box::new(s),
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                Listener::Tcp(l) => match l.accept().await {
                    Ok((s, _)) => Box::new(s),
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.activity.open.fetch_add(1, Ordering::Relaxed);
                ctx.activity.touch();
                let c2 = ctx.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let ctx = c2.clone();
                    ctx.activity.touch();
                    async move {
                        Ok::<_, std::convert::Infallible>(crate::route::handle(ctx, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades()
                    .await;
                ctx.activity.touch();
                ctx.activity.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

fn activated_env() -> bool {
    std::env::var("LISTEN_PID").is_ok_and(|p| p == std::process::id().to_string())
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(p)) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A connection's stream.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
