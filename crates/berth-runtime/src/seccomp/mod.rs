//! The OCI `linux.seccomp` section compiled to BPF with seccompiler (pure Rust),
//! and installed with seccomp(2) directly (seccompiler's own installer would set
//! no_new_privs, which only the spec may ask for).
//!
//! seccompiler gives one match action per filter, so a profile with several
//! actions becomes a stack: first a filter that lets every listed syscall through
//! and applies the default action to the rest, then one filter per other action
//! that applies it to its syscalls. The kernel takes the most severe verdict and,
//! among equals, the one from the filter installed last, which gives the
//! profile's meaning (Docker's `clone3 → ENOSYS` beside `default → EPERM`).
//!
//! [`docker_default`] builds Docker's default profile for a capability set.

mod docker_default;

pub use docker_default::docker_default;

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Result, RuntimeError};

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        other => {
            return Err(RuntimeError::Spec(format!(
                "linux.seccomp: action {other:?} is not supported"
            )));
        }
    })
}

fn target_arch() -> Result<TargetArch> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        "riscv64" => Ok(TargetArch::riscv64),
        a => Err(RuntimeError::Spec(format!(
            "linux.seccomp: architecture {a} is not supported"
        ))),
    }
}

fn spec_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Spec(format!("linux.seccomp: {e}"))
}

/// Per syscall number, the condition sets that match it (OR of ANDs; an
/// empty set matches unconditionally).
type Rules = BTreeMap<i64, Vec<Vec<SeccompCondition>>>;

/// Compiles the profile into filters in installation order.
///
/// Syscall names are resolved with the `syscalls` crate's table for the host
/// architecture; names of other architectures (`_llseek`, `ugetrlimit`) are
/// skipped, as libseccomp skips them.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    // Rules grouped by action, and all of them together.
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    let mut all = Rules::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
                LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
                LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
                LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
                LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
                LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
            };
            let val = match a.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                _ => a.value(),
            };
            let index = u8::try_from(a.index())
                .ok()
                .filter(|i| *i <= 5)
                .ok_or_else(|| spec_err(format!("argument index {} out of range", a.index())))?;
            conds.push(
                SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, val).map_err(spec_err)?,
            );
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
            let nr = i64::from(nr.id());
            g.entry(nr).or_default().push(conds.clone());
            all.entry(nr).or_default().push(conds.clone());
        }
    }
    let arch = target_arch()?;
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        filters.push(build(all, SeccompAction::Allow, default.clone(), arch)?);
    }
    for (act, rules) in groups {
        if act == SeccompAction::Allow {
            continue;
        }
        filters.push(build(rules, act, SeccompAction::Allow, arch)?);
    }
    Ok(filters)
}

fn build(
    rules: Rules,
    matched: SeccompAction,
    mismatched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, sets) in rules {
        let r = if sets.iter().any(Vec::is_empty) {
            Vec::new()
        } else {
            sets.into_iter()
                .map(SeccompRule::new)
                .collect::<std::result::Result<_, _>>()
                .map_err(spec_err)?
        };
        map.insert(nr, r);
    }
    let f = SeccompFilter::new(map, mismatched, matched, arch).map_err(spec_err)?;
    BpfProgram::try_from(f).map_err(spec_err)
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

    #[test]
    fn docker_default_compiles_into_two_filters() {
        let caps: Vec<String> = crate::capabilities::DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        let profile: LinuxSeccomp = serde_json::from_value(docker_default(&caps)).unwrap();
        let f = compile(&profile).unwrap();
        assert_eq!(f.len(), 2, "allow-list filter plus clone3 → ENOSYS");
        assert!(f[0].len() > 100);
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
