//! Where overlayfs keeps its own metadata (opaque directories): the
//! `trusted.overlay.` xattrs as root, the `user.overlay.` ones inside a user
//! namespace (rootless berth), where `trusted.*` cannot be set and the
//! overlay is mounted with `userxattr` (Linux 5.11+). Without it, a rootless
//! overlay has no usable metadata, and renaming a directory (dpkg does,
//! for every package) fails with EXDEV. Layers may forge neither.

use std::os::fd::AsFd;

/// Whether this process is in a user namespace (berth-fs's answer, read
/// each time).
pub use berth_fs::in_user_namespace;

/// The opaque-directory xattr overlayfs reads here.
pub fn opaque_xattr() -> &'static str {
    if in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Whether an xattr name is overlayfs metadata (in either namespace),
/// which a layer may not carry.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// Whether the directory `fd` is marked opaque (either namespace: a store
/// is written by one kind of berth, root or a user).
pub fn is_opaque<Fd: AsFd>(fd: Fd) -> bool {
    let mut buf = [0u8; 4];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|x| matches!(rustix::fs::fgetxattr(&fd, *x, &mut buf[..]), Ok(1) if buf[0] == b'y'))
}

/// The overlay mount options a user namespace needs (`userxattr`).
pub fn mount_options() -> Option<&'static str> {
    in_user_namespace().then_some("userxattr")
}
