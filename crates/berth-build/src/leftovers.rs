//! What a killed build leaves behind, and collecting it. A build names what
//! it makes with its pid — its step containers and snapshots
//! (`build-<pid>-…`) and its scratch directory (`builds/b-<pid>-…`) — so
//! once that process is gone they can be told from a live build's and
//! removed: the step containers through the runtime (which kills a step
//! still running and removes its cgroups), the snapshots through the store,
//! the scratch directory unless something is still mounted under it. `berth
//! builder prune`, `system prune` and `system check --repair` call
//! [`collect`].

use std::path::{Path, PathBuf};

use berth_fs::owner_alive;
use berth_store::Store;

/// The prefix of a build's step containers and snapshots.
pub const PREFIX: &str = "build-";

/// The name of a step snapshot (and its container) of this process.
pub fn step_key(hash: &str) -> String {
    format!("{PREFIX}{}-{hash}", std::process::id())
}

/// The name of a `--from` view of this process.
pub fn view_key(hash: &str) -> String {
    format!("{PREFIX}{}-from-{hash}", std::process::id())
}

/// The scratch directory name of a build of this process.
pub fn work_name(nanos: i128) -> String {
    format!("b-{}-{nanos}", std::process::id())
}

/// One leftover found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A step container (its runtime state and cgroups).
    Container(String),
    /// A step snapshot or view.
    Snapshot(String),
    /// A scratch directory.
    Work(PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Container(id) => write!(f, "step container {id} of a killed build"),
            Leftover::Snapshot(k) => write!(f, "snapshot {k} of a killed build"),
            Leftover::Work(p) => write!(f, "scratch directory {} of a killed build", p.display()),
        }
    }
}

/// Whether `p` or anything under it is a mount point of this namespace.
fn has_mounts(p: &Path) -> bool {
    let Ok(mounts) = berth_cgroups::mountinfo::read() else {
        return true; // cannot tell: leave it
    };
    mounts
        .iter()
        .any(|m| Path::new(&m.mount_point).starts_with(p))
}

/// Finds what killed builds left in the store and under `root` (the
/// engine's root), and removes it unless `dry_run`. Returns what was found.
pub fn collect(store: &Store, root: &Path, dry_run: bool) -> Vec<Leftover> {
    let mut found = Vec::new();
    let runtime = berth_runtime::Runtime::new(root.join("runtime"));
    for c in runtime.list().unwrap_or_default() {
        if c.id.starts_with(PREFIX)
            && !owner_alive(&c.id)
            && (dry_run || runtime.delete(&c.id, true).is_ok())
        {
            found.push(Leftover::Container(c.id));
        }
    }
    for a in store.snapshots.actives().unwrap_or_default() {
        if a.key.starts_with(PREFIX)
            && !owner_alive(&a.key)
            && (dry_run || store.snapshots.remove_active(&a.key).is_ok())
        {
            found.push(Leftover::Snapshot(a.key));
        }
    }
    let builds = root.join("builds");
    for e in std::fs::read_dir(&builds).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if owner_alive(&name) || has_mounts(&p) {
            continue;
        }
        if dry_run || std::fs::remove_dir_all(&p).is_ok() {
            found.push(Leftover::Work(p));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_owner() {
        assert!(owner_alive(&step_key("abc")));
        assert!(owner_alive(&view_key("abc")));
        assert!(owner_alive(&work_name(12345)));
        // Dead owners (pid 0 is never a process's), and the names of older
        // berths, which carried no pid.
        assert!(!owner_alive("build-0-abc"));
        assert!(!owner_alive("build-from-abc"));
        assert!(!owner_alive("build-abc"));
    }
}
