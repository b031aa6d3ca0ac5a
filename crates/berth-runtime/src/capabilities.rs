//! Capability sets of the container process: the bounding set dropped to what
//! the spec lists, then (after the user switch, with keep-caps) the effective,
//! permitted, inheritable and ambient sets set exactly. Capabilities the kernel
//! does not know are skipped, as runc skips them.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use crate::error::{Result, RuntimeError};
use crate::sys::Syscalls;

fn to_set(sys: &dyn Syscalls, list: Option<&oci_spec::runtime::Capabilities>) -> CapsHashSet {
    let supported = sys.caps_supported();
    list.into_iter()
        .flatten()
        .filter_map(|c| Capability::from_str(&format!("CAP_{c}")).ok())
        .filter(|c| supported.contains(c))
        .collect()
}

fn err(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::sys("capset", what, e)
}

/// Drops every capability not in the spec's bounding set.
pub fn drop_bounding(sys: &dyn Syscalls, c: Option<&LinuxCapabilities>) -> Result<()> {
    let keep = to_set(sys, c.and_then(|c| c.bounding().as_ref()));
    let mut all: Vec<Capability> = sys.caps_supported().into_iter().collect();
    all.sort_by_key(|c| c.index());
    for cap in all {
        if !keep.contains(&cap) {
            sys.caps_drop_bounding(cap)
                .map_err(|e| err("bounding set", e))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets.
pub fn apply(sys: &dyn Syscalls, c: Option<&LinuxCapabilities>) -> Result<()> {
    let eff = to_set(sys, c.and_then(|c| c.effective().as_ref()));
    let perm = to_set(sys, c.and_then(|c| c.permitted().as_ref()));
    let inh = to_set(sys, c.and_then(|c| c.inheritable().as_ref()));
    let amb = to_set(sys, c.and_then(|c| c.ambient().as_ref()));
    sys.caps_set(CapSet::Inheritable, &inh)
        .map_err(|e| err("inheritable set", e))?;
    // Effective must stay within permitted: widen permitted first if needed.
    let cur_perm = sys
        .caps_read(CapSet::Permitted)
        .map_err(|e| err("permitted set", e))?;
    if !perm.is_subset(&cur_perm) {
        let union: CapsHashSet = cur_perm.union(&perm).cloned().collect();
        let _ = sys.caps_set(CapSet::Permitted, &union);
    }
    sys.caps_set(CapSet::Effective, &eff)
        .map_err(|e| err("effective set", e))?;
    sys.caps_set(CapSet::Permitted, &perm)
        .map_err(|e| err("permitted set", e))?;
    if !amb.is_empty() {
        sys.caps_clear_ambient()
            .map_err(|e| err("ambient set", e))?;
        let mut amb: Vec<Capability> = amb.into_iter().collect();
        amb.sort_by_key(|c| c.index());
        let mut skipped: Vec<String> = Vec::new();
        for a in amb {
            // An ambient capability must be permitted and inheritable; runc
            // warns about one that is not and runs the process (its own
            // `runc spec` asks for such ambient capabilities).
            if !(inh.contains(&a) && perm.contains(&a)) {
                skipped.push(a.to_string());
                continue;
            }
            sys.caps_raise_ambient(a)
                .map_err(|e| err("ambient set", e))?;
        }
        if !skipped.is_empty() {
            skipped.sort();
            eprintln!(
                "berth-runtime: warning: ambient capabilities not in the inheritable and permitted sets are not raised: {}",
                skipped.join(", ")
            );
        }
    }
    Ok(())
}

/// The capabilities this process may still hand on (its bounding set): a
/// privileged container gets these, as podman gives it the host's, since
/// one the bounding set lacks cannot be set (this machine's root has no
/// CAP_SYS_RESOURCE, nor do many containers and CI runners).
pub fn available() -> Vec<String> {
    let mut v: Vec<String> = caps::read(None, CapSet::Bounding)
        .unwrap_or_else(|_| caps::all())
        .iter()
        .map(|c| c.to_string())
        .collect();
    v.sort();
    v
}

/// The hex mask docker users compare against (`00000000a80425fb`).
pub fn mask(list: &[String]) -> u64 {
    list.iter()
        .filter_map(|c| Capability::from_str(c).ok())
        .map(|c| 1u64 << c.index())
        .fold(0, |a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_sets_the_capabilities_bits() {
        let v: Vec<String> = ["CAP_CHOWN", "CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NOT_ONE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(format!("{:016x}", mask(&v)), "0000000020000021");
    }
}
