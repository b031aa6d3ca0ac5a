//! Images of other machines (an arm64 image on an amd64 host, and the
//! reverse), run under QEMU's user-mode emulators (Debian's
//! `qemu-user-static`) through the kernel's `binfmt_misc`.
//!
//! Machines without systemd (containers, CI runners, this one) have
//! binfmt_misc neither mounted nor registered, even with the package
//! installed. As root, berth mounts it and registers the emulator the
//! package ships (`/usr/lib/binfmt.d/qemu-<arch>.conf`, with its `F` flag:
//! the kernel holds the emulator open, so it works inside containers) the
//! first time an image needs it, and says so once. `system emulators`
//! lists, installs and removes the handlers, as `tonistiigi/binfmt` does
//! for docker.

use std::path::{Path, PathBuf};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const CONFS: &str = "/usr/lib/binfmt.d";

/// The OCI name of this machine's architecture (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64" => "mips64le",
        other => other,
    }
}

/// Whether this machine runs `arch`'s programs itself (an amd64 machine
/// runs i386's).
pub fn native(arch: &str) -> bool {
    arch == host_arch() || (host_arch() == "amd64" && arch == "386")
}

/// QEMU's name for an OCI architecture.
pub fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        _ => return None,
    })
}

/// The architectures berth knows an emulator for.
pub const KNOWN: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le",
];

/// One emulator's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// The OCI architecture.
    pub arch: String,
    /// Its handler is registered and enabled.
    pub registered: bool,
    /// The package's registration line is installed.
    pub available: bool,
}

fn handler(q: &str) -> PathBuf {
    Path::new(BINFMT).join(format!("qemu-{q}"))
}

fn conf(q: &str) -> PathBuf {
    Path::new(CONFS).join(format!("qemu-{q}.conf"))
}

/// Whether the handler for `arch` is registered and enabled.
pub fn registered(arch: &str) -> bool {
    qemu_name(arch).is_some_and(|q| {
        std::fs::read_to_string(handler(q)).is_ok_and(|s| s.starts_with("enabled"))
    })
}

/// Every known architecture but this machine's, with its state.
pub fn list() -> Vec<Emulator> {
    KNOWN
        .iter()
        .filter(|a| !native(a))
        .map(|a| Emulator {
            arch: a.to_string(),
            registered: registered(a),
            available: qemu_name(a).is_some_and(|q| conf(q).exists()),
        })
        .collect()
}

fn mount_binfmt() -> Result<(), String> {
    if Path::new(BINFMT).join("register").exists() {
        return Ok(());
    }
    rustix::mount::mount(
        "binfmt_misc",
        BINFMT,
        "binfmt_misc",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| format!("mounting binfmt_misc on {BINFMT}: {e}"))
}

/// Makes sure images of `arch` can run here: nothing to do for this
/// machine's own; else the emulator's handler registered (as root, from
/// the package's line). Returns what it did, to say once; an error names
/// the package to install.
pub fn ensure(arch: &str) -> Result<Option<String>, String> {
    if native(arch) || registered(arch) {
        return Ok(None);
    }
    let q = qemu_name(arch).ok_or_else(|| format!("berth knows no emulator for {arch} images"))?;
    let line = std::fs::read_to_string(conf(q)).map_err(|_| {
        format!("no emulator for {arch} is installed: apt-get install qemu-user-static")
    })?;
    if rustix::process::geteuid().as_raw() != 0 {
        return Err(format!(
            "the {arch} emulator is installed but not registered, and only root may register it: run `berth system emulators --install {arch}` as root once"
        ));
    }
    mount_binfmt()?;
    std::fs::write(Path::new(BINFMT).join("register"), line.trim())
        .or_else(|e| if registered(arch) { Ok(()) } else { Err(e) })
        .map_err(|e| format!("registering the {arch} emulator: {e}"))?;
    Ok(Some(format!(
        "registered QEMU's {q} emulator for {arch} images (binfmt_misc)"
    )))
}

/// Removes the handler for `arch` (as root).
pub fn remove(arch: &str) -> Result<(), String> {
    let q = qemu_name(arch).ok_or_else(|| format!("no emulator for {arch}"))?;
    match std::fs::write(handler(q), "-1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing the {arch} emulator: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_architectures() {
        assert_eq!(qemu_name("arm64"), Some("aarch64"));
        assert_eq!(qemu_name("amd64"), Some("x86_64"));
        assert_eq!(qemu_name("sparc"), None);
        assert!(!list().iter().any(|e| native(&e.arch)));
        assert_eq!(
            ensure(host_arch()),
            Ok(None),
            "this machine's own needs nothing"
        );
    }
}
