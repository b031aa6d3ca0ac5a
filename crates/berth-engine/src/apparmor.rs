//! Docker's default AppArmor confinement. On a host with AppArmor, a
//! container that is neither privileged nor given a profile runs under
//! `berth-default`, which berth loads (through Debian's `apparmor_parser`)
//! the first time it is needed: the same rules docker's `docker-default`
//! applies — no mounts, no writes to most of /proc and /sys, no raw kernel
//! memory or sysrq, signals and ptrace only among its own containers.
//! `--security-opt apparmor=PROFILE` names another loaded profile,
//! `apparmor=unconfined` none. On a host without AppArmor nothing is
//! applied by default; a profile asked for by name is refused by the
//! runtime, as runc refuses it.

use crate::container::Container;
use crate::{EngineError, Result};

/// The default profile's name.
pub const PROFILE: &str = "berth-default";

/// The default profile (AppArmor policy language).
fn profile_text() -> String {
    let p = PROFILE;
    format!(
        r#"#include <tunables/global>

profile {p} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer={p},
  ptrace (trace,read,tracedby,readby) peer={p},

  # Nothing mounts (the runtime mounted what the container has).
  deny mount,

  # /proc: no writes at its top or under any pid but the container's own
  # processes' files, none under /proc/sys but kernel/shm*, no kcore or sysrq.
  deny @{{PROC}}/* w,
  deny @{{PROC}}/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,

  # /sys: nothing outside /sys/fs/cgroup is written; firmware and the
  # security filesystem are not read either.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"#
    )
}

/// Whether `name` is loaded.
fn loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .is_ok_and(|s| s.lines().any(|l| l.split(" (").next() == Some(name)))
}

/// Loads the default profile unless it is loaded already.
fn ensure_loaded() -> Result<()> {
    if loaded(PROFILE) {
        return Ok(());
    }
    use std::io::Write;
    // The policy on stdin: nothing written to disk.
    let cant = |e: std::io::Error| {
        EngineError::Invalid(format!(
            "AppArmor is enabled on this host but its default profile cannot be loaded: \
             apparmor_parser: {e} (install Debian's apparmor package, or run with \
             --security-opt apparmor=unconfined)"
        ))
    };
    let mut child = std::process::Command::new("apparmor_parser")
        .arg("-Kr")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(cant)?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(profile_text().as_bytes()).map_err(cant)?;
    }
    let out = child.wait_with_output().map_err(cant)?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "loading the AppArmor profile {PROFILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The profile `c` runs under (docker's rules), loading the default when
/// it is the one.
pub fn profile_for(c: &Container) -> Result<Option<String>> {
    for o in &c.host_config.security_opt {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        if k == "apparmor" {
            return Ok((v != "unconfined" && !v.is_empty()).then(|| v.to_string()));
        }
    }
    if c.host_config.privileged || !berth_runtime::lsm::apparmor_enabled() {
        return Ok(None);
    }
    ensure_loaded()?;
    Ok(Some(PROFILE.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_names_itself_and_denies_mounts() {
        let t = profile_text();
        assert!(t.contains("profile berth-default flags="));
        assert!(t.contains("deny mount,"));
        assert!(t.contains("@{PROC}/sysrq-trigger"));
        assert_eq!(t.matches('{').count(), t.matches('}').count());
    }
}
