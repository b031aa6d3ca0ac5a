//! The OCI `linux.seccomp` section compiled to BPF ([`bpf`]: a balanced tree),
//! and installed with seccomp(2) directly, without no_new_privs unless the spec
//! asks for it.
//!
//! A filter has one match action, so a profile with several
//! actions becomes a stack: first a filter that lets every listed syscall through
//! and applies the default action to the rest, then one filter per other action
//! that applies it to its syscalls. The kernel takes the most severe verdict and,
//! among equals, the one from the filter installed last, which gives the
//! profile's meaning (Docker's `clone3 → ENOSYS` beside `default → EPERM`).
//!
//! `SCMP_ACT_NOTIFY` syscalls get their own filter, installed with a new
//! listener (SECCOMP_FILTER_FLAG_NEW_LISTENER); the runtime hands that
//! descriptor to the agent at `listenerPath` with the container's state, as the
//! runtime spec says.
//!
//! Which profile a container gets is the caller's policy: Docker's default
//! profile lives in `berth-spec`. [`Filters::verdict`] answers, without
//! installing anything, what the kernel would make of a syscall.

mod bpf;

pub use bpf::ret;

use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::error::{Result, RuntimeError};
use bpf::{Cond, Op, Rules};

/// A compiled filter.
pub type BpfProgram = bpf::Program;

/// A compiled profile: filters in installation order, and which of them (the
/// `SCMP_ACT_NOTIFY` one) is installed with a listener.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// The filters, in installation order.
    pub programs: Vec<BpfProgram>,
    /// Index of the filter that needs a notify listener.
    pub listener: Option<usize>,
}

impl Filters {
    /// Whether the filters must be installed early, before the process drops
    /// privileges: without no_new_privs (installing needs CAP_SYS_ADMIN then), and
    /// with a listener (its descriptor goes to the runtime over the init channel,
    /// which is gone by the time the process execs).
    pub fn install_early(&self, no_new_privs: bool) -> bool {
        !no_new_privs || self.listener.is_some()
    }

    /// The kernel's verdict on syscall `nr` with `args` from this machine's
    /// architecture, through the whole stack (each filter run as the kernel
    /// runs it; the most severe action wins: kill, trap, errno, user
    /// notification, trace, log, allow). For tests and diagnostics.
    pub fn verdict(&self, nr: u32, args: [u64; 6]) -> Result<u32> {
        let arch = audit_arch()?;
        let rank = |r: u32| match r & 0xffff_0000 {
            0x8000_0000 => 0,
            0 => 1,
            0x0003_0000 => 2,
            0x0005_0000 => 3,
            0x7fc0_0000 => 4,
            0x7ff0_0000 => 5,
            0x7ffc_0000 => 6,
            _ => 7,
        };
        Ok(self
            .programs
            .iter()
            .map(|f| bpf::emulate(f, arch, nr, args))
            .min_by_key(|r| rank(*r))
            .unwrap_or(ret::ALLOW))
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> u32 {
    match a {
        LinuxSeccompAction::ScmpActAllow => ret::ALLOW,
        LinuxSeccompAction::ScmpActErrno => ret::errno(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ret::KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => ret::KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => ret::TRAP,
        LinuxSeccompAction::ScmpActTrace => ret::trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => ret::LOG,
        LinuxSeccompAction::ScmpActNotify => ret::USER_NOTIF,
    }
}

/// The host's `AUDIT_ARCH_*`.
fn audit_arch() -> Result<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xc000_003e),
        "aarch64" => Ok(0xc000_00b7),
        "riscv64" => Ok(0xc000_00f3),
        a => Err(RuntimeError::Spec(format!(
            "linux.seccomp: architecture {a} is not supported"
        ))),
    }
}

fn spec_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Spec(format!("linux.seccomp: {e}"))
}

/// Compiles the profile into filters in installation order.
///
/// Syscall names are resolved with the `syscalls` crate's table for the host
/// architecture; names of other architectures (`_llseek`, `ugetrlimit`) are
/// skipped, as libseccomp skips them.
pub fn compile(s: &LinuxSeccomp) -> Result<Filters> {
    let default = action(s.default_action(), s.default_errno_ret());
    if default == ret::USER_NOTIF {
        // Every syscall of the runtime's own setup would wait on the agent.
        return Err(spec_err(
            "defaultAction SCMP_ACT_NOTIFY is not supported (list the syscalls to notify)",
        ));
    }
    // Rules grouped by action, and all of them together.
    let mut groups: Vec<(u32, Rules)> = Vec::new();
    let mut all = Rules::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret());
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => Op::Ne,
                LinuxSeccompOperator::ScmpCmpLt => Op::Lt,
                LinuxSeccompOperator::ScmpCmpLe => Op::Le,
                LinuxSeccompOperator::ScmpCmpEq => Op::Eq,
                LinuxSeccompOperator::ScmpCmpGe => Op::Ge,
                LinuxSeccompOperator::ScmpCmpGt => Op::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq(a.value()),
            };
            let value = match a.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                _ => a.value(),
            };
            let index = u8::try_from(a.index())
                .ok()
                .filter(|i| *i <= 5)
                .ok_or_else(|| spec_err(format!("argument index {} out of range", a.index())))?;
            conds.push(Cond { index, op, value });
        }
        let g = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((act, Rules::new()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        for name in sc.names() {
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            let nr = nr.id() as u32;
            g.entry(nr).or_default().push(conds.clone());
            all.entry(nr).or_default().push(conds.clone());
        }
    }
    let arch = audit_arch()?;
    let mut filters = Vec::new();
    if default != ret::ALLOW {
        filters.push(bpf::compile(&all, ret::ALLOW, default, arch).map_err(spec_err)?);
    }
    let mut listener = None;
    for (act, rules) in groups {
        if act == ret::ALLOW {
            continue;
        }
        if act == ret::USER_NOTIF {
            if s.listener_path().is_none() {
                return Err(spec_err("SCMP_ACT_NOTIFY needs listenerPath"));
            }
            listener = Some(filters.len());
        }
        filters.push(bpf::compile(&rules, act, ret::ALLOW, arch).map_err(spec_err)?);
    }
    Ok(Filters {
        programs: filters,
        listener,
    })
}

/// Installs compiled filters on the calling thread, in order; returns the
/// notify listener's descriptor when one of them has one.
pub fn install(filters: &Filters) -> Result<Option<OwnedFd>> {
    let mut listener = None;
    for (i, f) in filters.programs.iter().enumerate() {
        if f.is_empty() {
            continue;
        }
        let prog = libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        let flags = if filters.listener == Some(i) {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            0
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with a valid program that
        // outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return Err(RuntimeError::sys(
                "seccomp",
                "SECCOMP_SET_MODE_FILTER",
                std::io::Error::last_os_error(),
            ));
        }
        if filters.listener == Some(i) {
            // SAFETY: the kernel returned a new descriptor we now own.
            listener = Some(unsafe { OwnedFd::from_raw_fd(r as i32) });
        }
    }
    Ok(listener)
}

/// The message a seccomp agent receives on `listenerPath` (the runtime spec's
/// "container process state"), sent with the listener descriptor.
pub fn process_state(s: &LinuxSeccomp, pid: i32, state: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": state["ociVersion"],
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    })
}

/// Hands the listener to the agent at the profile's `listenerPath`.
pub fn send_listener(
    s: &LinuxSeccomp,
    listener: &OwnedFd,
    pid: i32,
    state: &serde_json::Value,
) -> Result<()> {
    let path = s
        .listener_path()
        .as_ref()
        .ok_or_else(|| spec_err("SCMP_ACT_NOTIFY needs listenerPath"))?;
    let sock = crate::fdpass::connect(path)?;
    let msg = process_state(s, pid, state).to_string();
    crate::fdpass::send_fd(&sock, listener, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforced_in_a_child() {
        // A child process installs "getpid → EPERM-like errno 42" and reports what it sees.
        let s: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]
        }))
        .unwrap();
        let f = compile(&s).unwrap();
        // SAFETY: fork; the child only makes syscalls and exits.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let ok = install(&f).is_ok();
                let r = libc::syscall(libc::SYS_getppid);
                let e = *libc::__errno_location();
                libc::_exit(if ok && r == -1 && e == 42 { 0 } else { 1 });
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            assert_eq!(libc::WEXITSTATUS(st), 0);
        }
    }

    #[test]
    fn notify_needs_a_listener_path_and_gets_its_own_filter() {
        let mut p = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}
            ]
        });
        let s: LinuxSeccomp = serde_json::from_value(p.clone()).unwrap();
        let e = compile(&s).unwrap_err().to_string();
        assert!(e.contains("SCMP_ACT_NOTIFY needs listenerPath"), "{e}");
        p["listenerPath"] = "/run/agent.sock".into();
        let s: LinuxSeccomp = serde_json::from_value(p).unwrap();
        let f = compile(&s).unwrap();
        let i = f.listener.expect("a listener filter");
        let getcwd = syscalls::Sysno::getcwd.id() as u32;
        let arch = audit_arch().unwrap();
        assert_eq!(
            bpf::emulate(&f.programs[i], arch, getcwd, [0; 6]),
            ret::USER_NOTIF
        );
        assert_eq!(f.verdict(getcwd, [0; 6]).unwrap(), ret::USER_NOTIF);
        assert!(f.install_early(true), "the listener goes out before exec");
        let d: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"
        }))
        .unwrap();
        assert!(compile(&d).is_err());
    }

    /// A real listener: a child installs a notify filter for getppid, forks a
    /// grandchild that calls it, and answers as the agent would (4242).
    #[test]
    fn notify_listener_answers_a_syscall() {
        use std::os::fd::AsRawFd;
        let s: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/unused",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap();
        let f = compile(&s).unwrap();
        // SAFETY: fork; the children only make syscalls and exit.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let Ok(Some(listener)) = install(&f) else {
                    libc::_exit(2);
                };
                let g = libc::fork();
                if g == 0 {
                    let r = libc::syscall(libc::SYS_getppid);
                    libc::_exit(if r == 4242 { 0 } else { 3 });
                }
                let mut req: libc::seccomp_notif = std::mem::zeroed();
                if libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut req,
                ) != 0
                {
                    libc::_exit(4);
                }
                let resp = libc::seccomp_notif_resp {
                    id: req.id,
                    val: 4242,
                    error: 0,
                    flags: 0,
                };
                if libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 {
                    libc::_exit(5);
                }
                let mut st = 0;
                libc::waitpid(g, &mut st, 0);
                libc::_exit(libc::WEXITSTATUS(st));
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            assert_eq!(libc::WEXITSTATUS(st), 0);
        }
    }
}
