//! Capability sets of the container process: the bounding set dropped to what
//! the spec lists, then (after the user switch, with keep-caps) the effective,
//! permitted, inheritable and ambient sets set exactly. Capabilities the kernel
//! does not know are skipped, as runc skips them.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use crate::error::{Result, RuntimeError};

fn to_set(list: Option<&oci_spec::runtime::Capabilities>) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    list.into_iter()
        .flatten()
        .filter_map(|c| Capability::from_str(&format!("CAP_{c}")).ok())
        .filter(|c| supported.contains(c))
        .collect()
}

fn err(what: &str, e: caps::errors::CapsError) -> RuntimeError {
    RuntimeError::sys("capset", what, std::io::Error::other(e.to_string()))
}

/// Drops every capability not in the spec's bounding set.
pub fn drop_bounding(c: Option<&LinuxCapabilities>) -> Result<()> {
    let keep = to_set(c.and_then(|c| c.bounding().as_ref()));
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("bounding set", e))?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets.
pub fn apply(c: Option<&LinuxCapabilities>) -> Result<()> {
    let eff = to_set(c.and_then(|c| c.effective().as_ref()));
    let perm = to_set(c.and_then(|c| c.permitted().as_ref()));
    let inh = to_set(c.and_then(|c| c.inheritable().as_ref()));
    let amb = to_set(c.and_then(|c| c.ambient().as_ref()));
    caps::set(None, CapSet::Inheritable, &inh).map_err(|e| err("inheritable set", e))?;
    // Effective must stay within permitted: widen permitted first if needed.
    let cur_perm = caps::read(None, CapSet::Permitted).map_err(|e| err("permitted set", e))?;
    let union: CapsHashSet = cur_perm.union(&perm).cloned().collect();
    let _ = caps::set(None, CapSet::Permitted, &union);
    caps::set(None, CapSet::Effective, &eff).map_err(|e| err("effective set", e))?;
    caps::set(None, CapSet::Permitted, &perm).map_err(|e| err("permitted set", e))?;
    if !amb.is_empty() {
        caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient set", e))?;
        let mut skipped: Vec<String> = Vec::new();
        for a in amb {
            // An ambient capability must be permitted and inheritable; runc
            // warns about one that is not and runs the process (its own
            // `runc spec` asks for such ambient capabilities).
            if !(inh.contains(&a) && perm.contains(&a)) {
                skipped.push(a.to_string());
                continue;
            }
            caps::raise(None, CapSet::Ambient, a).map_err(|e| err("ambient set", e))?;
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
