//! `kill`: a signal to the init, or with `all` to every process in the cgroup.

use super::Runtime;
use crate::error::{Result, RuntimeError};

impl Runtime {
    /// Sends `signal` to the container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let st = self.load(id)?;
        // `--all` reaches what is left in the cgroup of a stopped container
        // too: one sharing the host's pid namespace (a pod with hostPID)
        // keeps its init's children when the init dies, and containerd's
        // shim kills them so (runc allows it the same way).
        let running = self.status(&st).can_kill();
        let leftovers = all && !st.cgroup_path.is_empty();
        if !running && !leftovers {
            return Err(RuntimeError::State("container not running".into()));
        }
        let pids = match (all, running) {
            (false, _) => vec![st.pid],
            (true, true) => self.processes(&st)?,
            // A stopped container's cgroup may be gone already: nothing left.
            (true, false) => self.processes(&st).unwrap_or_default(),
        };
        for p in pids {
            // SAFETY: kill(2) with a pid from the container.
            if unsafe { libc::kill(p, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(RuntimeError::sys("kill", p, e));
                }
            }
        }
        if all && signal == libc::SIGKILL && !st.cgroup_path.is_empty() {
            let cg = self.cgroup(&st)?;
            if cg.frozen() {
                cg.freeze(berth_cgroups::FreezerState::Thawed)?;
            }
        }
        Ok(())
    }
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        other => {
            if let Some(n) = other
                .strip_prefix("RTMIN+")
                .and_then(|n| n.parse::<i32>().ok())
            {
                return Some(libc::SIGRTMIN() + n);
            }
            if let Some(n) = other
                .strip_prefix("RTMAX-")
                .and_then(|n| n.parse::<i32>().ok())
            {
                return Some(libc::SIGRTMAX() - n);
            }
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals() {
        assert_eq!(super::parse_signal("SIGTERM"), Some(15));
        assert_eq!(super::parse_signal("kill"), Some(9));
        assert_eq!(super::parse_signal("2"), Some(2));
        assert_eq!(super::parse_signal("NOPE"), None);
        assert_eq!(super::parse_signal("0"), None);
    }
}
