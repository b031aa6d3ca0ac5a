//! The store's own filesystem rules: which of its directories are private
//! to their owner, and making them so. The general helpers (atomic writes,
//! locks, unique names) are in `berth-fs`.

use std::fs;
use std::path::Path;

use berth_fs::{IoContext, PathError};

/// Makes `dir` (with its parents) and makes it private to its owner (0700):
/// what is under it — image layers, containers' files, volumes — may hold
/// setuid files or secrets no other local user may reach. Returns whether
/// the mode had to be changed (a store made by an older berth).
pub fn private_dir(dir: &Path) -> Result<bool, PathError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).ctx("mkdir", dir)?;
    let mode = fs::metadata(dir).ctx("stat", dir)?.permissions().mode();
    if mode & 0o777 == 0o700 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).ctx("chmod", dir)?;
    Ok(true)
}

/// The directories of a store kept private: the root and those under it
/// that hold content.
pub const PRIVATE_DIRS: &[&str] = &["", "content", "snapshots", "locks", "containers", "volumes"];
