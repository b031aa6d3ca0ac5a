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

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

use crate::error::{Result, RuntimeError};

fn action_json(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Value> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({"errno": errno.unwrap_or(libc::EPERM as u32)}),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActTrace => json!({"trace": errno.unwrap_or(0)}),
        LinuxSeccompAction::ScmpActLog => json!("log"),
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

/// One syscall entry: conditions (empty = unconditional).
type Conds = Vec<Value>;

/// Compiles the profile into filters in installation order.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action_json(s.default_action(), s.default_errno_ret())?;
    // Group rules by action; per syscall, the list of condition sets (OR).
    let mut groups: BTreeMap<String, (Value, BTreeMap<String, Vec<Conds>>)> = BTreeMap::new();
    let mut all: BTreeMap<String, Vec<Conds>> = BTreeMap::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action_json(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            let (op, val) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (json!("le"), a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), a.value()),
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (json!({"masked_eq": a.value()}), a.value_two().unwrap_or(0))
                }
            };
            if a.index() > 5 {
                return Err(RuntimeError::Spec(format!(
                    "linux.seccomp: argument index {} out of range",
                    a.index()
                )));
            }
            conds.push(json!({"index": a.index(), "type": "qword", "op": op, "val": val}));
        }
        let key = act.to_string();
        let g = groups
            .entry(key)
            .or_insert_with(|| (act.clone(), BTreeMap::new()));
        for name in sc.names() {
            g.1.entry(name.clone()).or_default().push(conds.clone());
            all.entry(name.clone()).or_default().push(conds.clone());
        }
    }
    let arch = target_arch()?;
    let mut filters = Vec::new();
    if default != json!("allow") {
        filters.push(build(&all, json!("allow"), default.clone(), arch)?);
    }
    for (_, (act, rules)) in groups {
        if act == json!("allow") {
            continue;
        }
        filters.push(build(&rules, act, json!("allow"), arch)?);
    }
    Ok(filters)
}

fn build(
    rules: &BTreeMap<String, Vec<Conds>>,
    matched: Value,
    mismatched: Value,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let mut names: Vec<&String> = rules.keys().collect();
    loop {
        let mut filter = Vec::new();
        for n in &names {
            let sets = &rules[*n];
            if sets.iter().any(Vec::is_empty) {
                filter.push(json!({"syscall": n}));
            } else {
                for c in sets {
                    filter.push(json!({"syscall": n, "args": c}));
                }
            }
        }
        let doc = json!({"f": {"mismatch_action": mismatched, "match_action": matched, "filter": filter}});
        match seccompiler::compile_from_json(doc.to_string().as_bytes(), arch) {
            Ok(mut m) => return Ok(m.remove("f").unwrap_or_default()),
            // Names of other architectures (`_llseek`, `ugetrlimit`) are dropped,
            // as libseccomp ignores them. seccompiler does not export its error
            // type for this, so the name is read from the message.
            Err(e) => {
                let msg = e.to_string();
                let unknown = msg
                    .strip_prefix("Json Frontend error: Invalid syscall name: ")
                    .and_then(|r| r.split(' ').next())
                    .map(str::to_string);
                match unknown {
                    Some(n) if names.iter().any(|x| **x == n) => names.retain(|x| **x != n),
                    _ => return Err(RuntimeError::Spec(format!("linux.seccomp: {msg}"))),
                }
            }
        }
    }
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
        let s: LinuxSeccomp = serde_json::from_value(json!({
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
