//! Linux security modules a spec may ask for: an AppArmor profile
//! (`process.apparmorProfile`), SELinux labels for the process
//! (`process.selinuxLabel`) and for the container's own filesystems
//! (`linux.mountLabel`). Each is applied where its LSM is enabled; asked for
//! where it is not, the container is refused, as runc does: a confinement
//! the spec asks for is never silently dropped.
//!
//! Profiles and labels take effect at exec (`/proc/thread-self/attr/…/exec`
//! written just before `execve`), so the runtime's own setup runs under the
//! runtime's confinement and the container's process under its own.

use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};

/// Whether AppArmor is enabled on this host.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim_start().starts_with('Y'))
        && std::path::Path::new("/sys/kernel/security/apparmor").is_dir()
}

/// Whether SELinux is enabled on this host (selinuxfs mounted, as libselinux
/// decides).
pub fn selinux_enabled() -> bool {
    berth_cgroups::mountinfo::read().is_ok_and(|ms| ms.iter().any(|m| m.fstype == "selinuxfs"))
}

/// What the spec asks of the LSMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// AppArmor profile for the process.
    pub apparmor: Option<String>,
    /// SELinux label for the process.
    pub process_label: Option<String>,
    /// SELinux label for the container's filesystems.
    pub mount_label: Option<String>,
}

impl Asked {
    /// What `spec` asks.
    pub fn of(spec: &Spec) -> Asked {
        let p = spec.process().as_ref();
        let nonempty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        Asked {
            apparmor: nonempty(p.and_then(|p| p.apparmor_profile().as_ref())),
            process_label: nonempty(p.and_then(|p| p.selinux_label().as_ref())),
            mount_label: nonempty(spec.linux().as_ref().and_then(|l| l.mount_label().as_ref())),
        }
    }

    /// What a process asks (its profile and label; no mount label).
    pub fn of_process(p: &oci_spec::runtime::Process) -> Asked {
        let nonempty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        Asked {
            apparmor: nonempty(p.apparmor_profile().as_ref()),
            process_label: nonempty(p.selinux_label().as_ref()),
            mount_label: None,
        }
    }

    /// Refuses what this host cannot do (runc's checks and words).
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.apparmor
            && !apparmor_enabled()
        {
            return Err(RuntimeError::Spec(format!(
                "process.apparmorProfile {p:?}: AppArmor is not enabled on this host, so the \
                 profile cannot be applied (apparmor is disabled, but the profile is set)"
            )));
        }
        if (self.process_label.is_some() || self.mount_label.is_some()) && !selinux_enabled() {
            return Err(RuntimeError::Spec(
                "selinux label is specified in config, but selinux is disabled or not supported"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Writes `value` to this thread's `attr/<lsm>/exec` (the label taken at
/// the next execve), trying the LSM-specific file first as runc does.
fn set_exec_attr(lsm: &str, value: &str) -> std::io::Result<()> {
    let specific = format!("/proc/thread-self/attr/{lsm}/exec");
    let generic = "/proc/thread-self/attr/exec";
    let path = if std::path::Path::new(&specific).exists() {
        specific
    } else {
        generic.to_string()
    };
    std::fs::write(&path, value)
}

/// Applies the process's profile and label for its exec (in the container,
/// just before execve).
pub fn apply_exec(asked: &Asked) -> Result<()> {
    if let Some(p) = &asked.apparmor {
        set_exec_attr("apparmor", &format!("exec {p}"))
            .map_err(|e| RuntimeError::sys("apply AppArmor profile", p, e))?;
    }
    if let Some(l) = &asked.process_label {
        set_exec_attr("selinux", l).map_err(|e| RuntimeError::sys("apply SELinux label", l, e))?;
    }
    Ok(())
}

/// The mount data of a filesystem the runtime mounts for the container
/// (tmpfs, devpts, mqueue…) with the mount label added as `context=`.
pub fn label_mount_data(data: &str, fstype: &str, asked: &Asked) -> String {
    let Some(label) = &asked.mount_label else {
        return data.to_string();
    };
    // Filesystems whose files have no labels of their own.
    if !matches!(fstype, "tmpfs" | "devpts" | "mqueue" | "shm") {
        return data.to_string();
    }
    let ctx = format!("context=\"{label}\"");
    if data.is_empty() {
        ctx
    } else {
        format!("{data},{ctx}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_labels_go_on_label_less_filesystems() {
        let a = Asked {
            mount_label: Some("system_u:object_r:container_file_t:s0:c1,c2".into()),
            ..Default::default()
        };
        assert_eq!(
            label_mount_data("mode=755", "tmpfs", &a),
            "mode=755,context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
        assert_eq!(label_mount_data("", "proc", &a), "");
        assert_eq!(label_mount_data("x", "tmpfs", &Asked::default()), "x");
    }

    #[test]
    fn what_this_host_lacks_is_refused() {
        let a = Asked {
            apparmor: Some("berth-default".into()),
            ..Default::default()
        };
        assert_eq!(a.validate().is_ok(), apparmor_enabled());
        let s = Asked {
            process_label: Some("system_u:system_r:container_t:s0".into()),
            ..Default::default()
        };
        assert_eq!(s.validate().is_ok(), selinux_enabled());
        assert!(Asked::default().validate().is_ok());
    }
}
