//! A `berth system service` (the Engine API) on a socket of the test's own,
//! stopped with SIGTERM when dropped.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;

use super::Berth;

/// A running service.
pub struct Service {
    pub child: std::process::Child,
    pub sock: PathBuf,
}

impl Service {
    /// Starts one on `b`'s root with `extra` flags.
    pub fn start(b: &Berth, extra: &[&str]) -> Service {
        Service::start_with(b, extra, &[])
    }

    /// Starts one with `env` set too (the service's environment decides
    /// what it reads, e.g. `BERTH_CDI_SPEC_DIRS`).
    pub fn start_with(b: &Berth, extra: &[&str], env: &[(&str, &OsStr)]) -> Service {
        let sock = b.path("api.sock");
        let mut cmd = b.command(&[
            "system",
            "service",
            "-H",
            &format!("unix://{}", sock.display()),
        ]);
        cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn berth system service");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(sock.exists(), "the service made no socket");
        Service { child, sock }
    }

    /// Its address for `-H` / `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid"),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}
