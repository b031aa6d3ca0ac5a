//! Rootless containers' network: `pasta` (Debian's `passt`), a user-mode
//! TCP/IP stack that gives the container's own network namespace an
//! interface with the host's addresses and routes, translates its traffic
//! to ordinary sockets of the user, and forwards published ports (`-p`)
//! from the host — what podman's rootless mode uses by default.
//!
//! As podman does, the namespace is made first, by a helper process, and
//! bound to a file in the user's runtime directory; pasta wires it, and
//! the container joins it (its init, once it has switched to the image's
//! user, is no process whose namespaces a rootless engine may open).
//! pasta's pid is kept beside the file, so a stop kills pasta and drops
//! the binding, which frees the namespace.

use std::path::{Path, PathBuf};

use super::attach::plan_ports;
use super::*;

/// The mode name a rootless container's default network becomes.
pub const MODE: &str = "pasta";

/// pasta's program, or the error that says how to get it.
pub fn program() -> Result<PathBuf> {
    berth_fs::which("pasta").ok_or_else(|| {
        EngineError::Invalid(
            "a rootless container's network needs pasta: apt-get install passt (or run with --network none or host)".into(),
        )
    })
}

/// Whether pasta is installed.
pub fn available() -> bool {
    berth_fs::which("pasta").is_some()
}

pub(super) fn dir() -> PathBuf {
    crate::rootless::runtime_dir(crate::rootless::outside_uid().unwrap_or(0)).join("netns")
}

pub(super) fn files(id: &str) -> (PathBuf, PathBuf) {
    let d = dir();
    (d.join(id), d.join(format!("{id}.pasta.pid")))
}

/// Makes a network namespace bound at `at`: a helper process unshares one
/// and sleeps while it is bound, then goes.
pub(super) fn make_netns(at: &Path) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::create_dir_all(at.parent().unwrap_or(Path::new("/")))?;
    std::fs::File::create(at)?;
    let mut cmd = std::process::Command::new("cat");
    // SAFETY: unshare in the child between fork and exec touches no memory.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // cat answers once it runs: the namespace is there.
    let mut input = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut input, b"x")?;
    let mut b = [0u8; 1];
    let ready = child.stdout.take().expect("stdout").read_exact(&mut b);
    let bound = ready.and_then(|()| {
        rustix::mount::mount_bind(format!("/proc/{}/ns/net", child.id()).as_str(), at)
            .map_err(std::io::Error::from)
    });
    drop(input);
    let _ = child.kill();
    let _ = child.wait();
    if bound.is_err() {
        let _ = std::fs::remove_file(at);
    }
    bound
}

impl Engine {
    /// A network namespace for container `c`, wired by pasta (its
    /// interface and routes configured, its published ports forwarded):
    /// the file the container's spec joins. pasta's interface is named
    /// `ifname`, or as the host's is; with `wire` false the namespace is
    /// left to the caller (a container only on internal networks).
    pub(crate) fn pasta_prepare(
        &self,
        c: &mut Container,
        ifname: Option<&str>,
        wire: bool,
    ) -> Result<PathBuf> {
        let prog = if wire { Some(program()?) } else { None };
        let (rules, shown) = plan_ports(c, Ipv4Addr::UNSPECIFIED, &[])?;
        let (ns, pidfile) = files(&c.id);
        self.pasta_detach(c);
        make_netns(&ns).map_err(|e| EngineError::io("make network namespace", &ns, e))?;
        let Some(prog) = prog else {
            return Ok(ns);
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(["--config-net", "--quiet", "--no-map-gw"])
            .arg("--netns")
            .arg(&ns)
            .arg("--netns-only")
            .arg("-P")
            .arg(&pidfile);
        if let Some(n) = ifname {
            cmd.args(["--ns-ifname", n]);
        }
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for r in &rules {
            let spec = match r.host_ip {
                Some(ip) => format!("{ip}/{}:{}", r.host_port, r.port),
                None => format!("{}:{}", r.host_port, r.port),
            };
            if r.proto == "udp" { &mut udp } else { &mut tcp }.push(spec);
        }
        for (flag, list) in [("-t", &tcp), ("-u", &udp)] {
            if list.is_empty() {
                cmd.args([flag, "none"]);
            } else {
                for s in list {
                    cmd.args([flag, s.as_str()]);
                }
            }
        }
        // pasta forks into the background once the network is up: its
        // output goes to a file, so nothing waits for the daemon to close it.
        let log = ns.with_extension("pasta.log");
        let errf = std::fs::File::create(&log).map_err(|e| EngineError::io("create", &log, e))?;
        // Only its standard descriptors: a daemon must hold none of ours.
        // SAFETY: close_range in the child between fork and exec is
        // async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        let status = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(errf)
            .status()
            .map_err(|e| EngineError::Invalid(format!("pasta: {e}")))?;
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if !status.success() {
            let _ = rustix::mount::unmount(&ns, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_file(&ns);
            let err: Vec<&str> = err.lines().filter(|l| !l.contains("syslog")).collect();
            return Err(EngineError::Invalid(format!(
                "pasta could not set up the container's network: {}",
                err.join("; ")
            )));
        }
        c.network_settings.ports = shown;
        Ok(ns)
    }

    /// Stops a container's pasta and drops its namespace's binding.
    pub(crate) fn pasta_detach(&self, c: &mut Container) {
        let (ns, pidfile) = files(&c.id);
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
        {
            // pasta runs as passt (`passt.avx2` where the CPU has it).
            let ours = std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("pasta") || c.starts_with("passt"));
            if ours {
                // SAFETY: kill(2) of the pasta this container started.
                unsafe {
                    libc::kill(p, libc::SIGTERM);
                }
            }
        }
        let _ = std::fs::remove_file(&pidfile);
        let _ = rustix::mount::unmount(&ns, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&ns);
        c.network_settings.ports.clear();
    }
}
