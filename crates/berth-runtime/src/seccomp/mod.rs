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
//! [`docker_default`] builds Docker's default profile for a capability set.

mod bpf;
mod docker_default;

pub use docker_default::docker_default;

use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::error::{Result, RuntimeError};
use bpf::{Cond, Op, Rules, ret};

/// A compiled filter.
pub type BpfProgram = bpf::Program;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ret::ALLOW,
        LinuxSeccompAction::ScmpActErrno => ret::errno(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ret::KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => ret::KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => ret::TRAP,
        LinuxSeccompAction::ScmpActTrace => ret::trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => ret::LOG,
        other => {
            return Err(RuntimeError::Spec(format!(
                "linux.seccomp: action {other:?} is not supported"
            )));
        }
    })
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
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    // Rules grouped by action, and all of them together.
    let mut groups: Vec<(u32, Rules)> = Vec::new();
    let mut all = Rules::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
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
    for (act, rules) in groups {
        if act == ret::ALLOW {
            continue;
        }
        filters.push(bpf::compile(&rules, act, ret::ALLOW, arch).map_err(spec_err)?);
    }
    Ok(filters)
}

/// Installs compiled filters on the calling thread, in order.
pub fn install(filters: &[BpfProgram]) -> Result<()> {
    for f in filters {
        if f.is_empty() {
            continue;
        }
        let prog = libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with a valid program that
        // outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(RuntimeError::sys(
                "seccomp",
                "SECCOMP_SET_MODE_FILTER",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's default profile for Docker's default capabilities, compiled.
    fn docker_default_filters() -> Vec<BpfProgram> {
        let caps: Vec<String> = crate::capabilities::DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        let profile: LinuxSeccomp = serde_json::from_value(docker_default(&caps)).unwrap();
        compile(&profile).unwrap()
    }

    #[test]
    fn docker_default_compiles_into_two_filters() {
        let f = docker_default_filters();
        assert_eq!(f.len(), 2, "allow-list filter plus clone3 → ENOSYS");
        assert!(f[0].len() > 100);
    }

    /// The kernel's verdict over a stack of filters: the most severe action
    /// wins (kill, trap, errno, trace, log, allow).
    fn verdict(filters: &[BpfProgram], nr: u32, args: [u64; 6]) -> u32 {
        let rank = |r: u32| match r & 0xffff_0000 {
            0x8000_0000 => 0,
            0 => 1,
            0x0003_0000 => 2,
            0x0005_0000 => 3,
            0x7ff0_0000 => 4,
            0x7ffc_0000 => 5,
            _ => 6,
        };
        filters
            .iter()
            .map(|f| bpf::emulate(f, audit_arch().unwrap(), nr, args))
            .min_by_key(|r| rank(*r))
            .unwrap()
    }

    #[test]
    fn docker_default_means_what_docker_s_does() {
        use syscalls::Sysno;
        let f = docker_default_filters();
        let v = |s: Sysno, args: [u64; 6]| verdict(&f, s.id() as u32, args);
        let eperm = ret::errno(libc::EPERM as u32);
        assert_eq!(v(Sysno::read, [0; 6]), ret::ALLOW);
        assert_eq!(v(Sysno::execve, [0; 6]), ret::ALLOW);
        assert_eq!(v(Sysno::clone3, [0; 6]), ret::errno(libc::ENOSYS as u32));
        assert_eq!(v(Sysno::unshare, [0; 6]), eperm);
        assert_eq!(v(Sysno::mount, [0; 6]), eperm);
        assert_eq!(v(Sysno::kexec_load, [0; 6]), eperm);
        // personality: only the listed personas.
        assert_eq!(v(Sysno::personality, [0, 0, 0, 0, 0, 0]), ret::ALLOW);
        assert_eq!(
            v(Sysno::personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            ret::ALLOW
        );
        assert_eq!(v(Sysno::personality, [0x0040_0000, 0, 0, 0, 0, 0]), eperm);
        // socket: anything but AF_VSOCK (40).
        assert_eq!(v(Sysno::socket, [2, 1, 0, 0, 0, 0]), ret::ALLOW);
        assert_eq!(v(Sysno::socket, [40, 1, 0, 0, 0, 0]), eperm);
        // clone: without namespace flags only (CAP_SYS_ADMIN is not granted).
        assert_eq!(
            v(Sysno::clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ret::ALLOW
        );
        assert_eq!(
            v(Sysno::clone, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        // A syscall number no table knows.
        assert_eq!(verdict(&f, 1000, [0; 6]), eperm);
    }

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
}
