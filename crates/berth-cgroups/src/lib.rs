//! cgroups for containers: v1 (one hierarchy per controller), v2 (unified) and the
//! hybrid layout (v1 controllers with an empty v2 hierarchy at
//! `/sys/fs/cgroup/unified`, which crun refuses and berth treats as v1).
//!
//! A [`Manager`] creates a container's cgroup, moves processes into it, applies
//! the OCI `linux.resources`, freezes and thaws, reads stats and removes it. Every
//! file operation's error names the file. The layout is chosen at run time from
//! `/proc/self/mountinfo`; tests point a manager at a fake tree instead.
//!
//! In a user namespace (rootless) only the unified hierarchy is used, and
//! only the subtree delegated to the user ([`delegated_root`]): v1
//! hierarchies are root's alone.

mod fsutil;
pub mod mountinfo;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde::Serialize;

pub use fsutil::CgroupError;

/// Which cgroup layout the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Controllers on v1 hierarchies (possibly with an empty v2 mounted too).
    V1,
    /// Everything on the unified hierarchy.
    V2,
}

/// Detects the layout from the mount table: v2 when `/sys/fs/cgroup` itself is
/// cgroup2; otherwise v1, even when a v2 hierarchy is mounted beside (hybrid).
pub fn detect_layout() -> Layout {
    let v2 = mountinfo::cgroup_mounts()
        .iter()
        .any(|x| x.mount_point == "/sys/fs/cgroup" && x.fstype == "cgroup2");
    if v2 { Layout::V2 } else { Layout::V1 }
}

/// The unified (v2) hierarchy's mount point: `/sys/fs/cgroup` on a v2
/// machine, `/sys/fs/cgroup/unified` (or wherever cgroup2 is) on a hybrid one.
pub fn unified_mount() -> Option<PathBuf> {
    let m = mountinfo::cgroup_mounts();
    let points: Vec<&str> = m
        .iter()
        .filter(|x| x.fstype == "cgroup2")
        .map(|x| x.mount_point.as_str())
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| points.contains(p))
        .or(points.first().copied())
        .map(PathBuf::from)
}

/// This process's cgroup on the unified hierarchy (its `0::` line).
pub fn own_v2_path() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

fn writable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Whether this user may manage the cgroup directory `dir`: make children
/// in it, move processes in and enable controllers below.
fn manageable(dir: &Path) -> bool {
    writable(dir)
        && writable(&dir.join("cgroup.procs"))
        && writable(&dir.join("cgroup.subtree_control"))
}

/// The cgroup v2 subtree delegated to this user: the topmost of this
/// process's cgroup and its ancestors that the user may manage (systemd's
/// `Delegate=yes` of `user@UID.service`, or what an administrator chowned
/// to the user). Returns the unified mount and the subtree's path in it;
/// `None` when the process's own cgroup is not the user's (a login
/// session's scope is root's: `systemd-run --user --scope berth …` runs
/// berth in the user's delegated subtree).
pub fn delegated_root() -> Option<(PathBuf, String)> {
    let mount = unified_mount()?;
    let own = own_v2_path()?;
    let mut best: Option<String> = None;
    let mut cur = own.trim_end_matches('/').to_string();
    while !cur.is_empty() {
        if !manageable(&mount.join(cur.trim_start_matches('/'))) {
            break;
        }
        best = Some(cur.clone());
        cur = match cur.rfind('/') {
            Some(i) => cur[..i].to_string(),
            None => String::new(),
        };
    }
    best.map(|b| (mount, b))
}

/// Freezer states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Running.
    Thawed,
    /// Paused.
    Frozen,
}

/// Resource usage of a cgroup (the subset `stats` and `events --stats` show).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes (page cache excluded where the kernel tells it apart).
    pub memory_usage: u64,
    /// Memory limit, bytes (0 = none).
    pub memory_limit: u64,
    /// Peak memory, bytes, when known.
    pub memory_max_usage: u64,
    /// Page cache, bytes.
    pub memory_cache: u64,
    /// Number of tasks.
    pub pids_current: u64,
    /// pids limit (0 = none).
    pub pids_limit: u64,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
    /// How many times the OOM killer ran in this cgroup.
    pub oom_kills: u64,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub enum Manager {
    /// v1 hierarchies.
    V1(v1::V1Manager),
    /// The unified hierarchy.
    V2(v2::V2Manager),
}

impl Manager {
    /// A manager for `path` (absolute, or relative to this process's cgroup) on
    /// the machine's layout. An empty path (a container a rootless runtime
    /// ran without a cgroup) or `/` is refused: a manager of a hierarchy's
    /// root would freeze, kill or limit everything.
    pub fn new(path: &str) -> Result<Manager, CgroupError> {
        if path.trim_matches('/').is_empty() {
            return Err(CgroupError::Invalid(
                "the container has no cgroup of its own".into(),
            ));
        }
        if berth_fs::in_user_namespace() {
            // A user may manage only (a delegated part of) the unified
            // hierarchy, whatever the layout.
            let base = unified_mount().ok_or_else(|| {
                CgroupError::Invalid(
                    "no cgroup v2 hierarchy is mounted: a user namespace may manage cgroups only there".into(),
                )
            })?;
            return Ok(Manager::V2(v2::V2Manager::new(&base, path)?));
        }
        Ok(match detect_layout() {
            Layout::V1 => Manager::V1(v1::V1Manager::new(path)?),
            Layout::V2 => Manager::V2(v2::V2Manager::new(Path::new("/sys/fs/cgroup"), path)?),
        })
    }

    /// The layout this manager drives.
    pub fn layout(&self) -> Layout {
        match self {
            Manager::V1(_) => Layout::V1,
            Manager::V2(_) => Layout::V2,
        }
    }

    /// Creates the cgroup (all hierarchies).
    pub fn create(&self) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.create(),
            Manager::V2(m) => m.create(),
        }
    }

    /// Moves `pid` into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.add_pid(pid),
            Manager::V2(m) => m.add_pid(pid),
        }
    }

    /// Applies limits.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.apply(r),
            Manager::V2(m) => m.apply(r),
        }
    }

    /// Freezes or thaws every process, waiting until the kernel reports it done.
    pub fn freeze(&self, s: FreezerState) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.freeze(s),
            Manager::V2(m) => m.freeze(s),
        }
    }

    /// Whether the cgroup is frozen.
    pub fn frozen(&self) -> bool {
        match self {
            Manager::V1(m) => m.frozen(),
            Manager::V2(m) => m.frozen(),
        }
    }

    /// Processes in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        match self {
            Manager::V1(m) => m.pids(),
            Manager::V2(m) => m.pids(),
        }
    }

    /// Usage numbers.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match self {
            Manager::V1(m) => m.stats(),
            Manager::V2(m) => m.stats(),
        }
    }

    /// How many times the kernel's OOM killer killed a process of the
    /// cgroup: [`Manager::stats`]'s `oom_kills` alone, one file read where
    /// the stats read ten (an exit records only this).
    pub fn oom_kills(&self) -> u64 {
        match self {
            Manager::V1(m) => m.oom_kills(),
            Manager::V2(m) => m.oom_kills(),
        }
    }

    /// Removes the cgroup (it must have no processes left).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        match self {
            Manager::V1(m) => m.destroy(),
            Manager::V2(m) => m.destroy(),
        }
    }

    /// The directories that make up this cgroup (for `inspect` and tests).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        match self {
            Manager::V1(m) => m.paths(),
            Manager::V2(m) => vec![(String::new(), m.path().to_path_buf())],
        }
    }
}

/// A way for a new, single-threaded process to move itself into a container's
/// cgroup without the kernel's global `cgroup_threadgroup_rwsem`.
///
/// Moving a process by writing its pid to `cgroup.procs` takes that lock for
/// writing, and the first writer after a quiet spell waits for an RCU grace
/// period: 5 to 25 ms on this machine, the largest single cost of starting a
/// container. Writing `0` ("the calling thread") to a v1 hierarchy's `tasks`
/// file moves one thread and skips the lock (measured: 0.03 ms). A freshly
/// cloned init has exactly one thread, so moving that thread moves the whole
/// process. The runtime opens the files before the clone (so the permission
/// checks use its credentials and cgroup namespace) and the child writes
/// through the inherited descriptors first thing.
///
/// Only v1: on v2, `cgroup.threads` needs threaded cgroups, and the way
/// around the lock there is `CLONE_INTO_CGROUP`.
#[derive(Debug, Default)]
pub struct SelfJoin {
    files: Vec<(PathBuf, std::fs::File)>,
}

impl SelfJoin {
    /// Opens the `tasks` files of `m` (v1); `None` on v2.
    pub fn open(m: &Manager) -> Result<Option<SelfJoin>, CgroupError> {
        match m {
            Manager::V1(v) => Ok(Some(SelfJoin {
                files: v.open_tasks()?,
            })),
            Manager::V2(_) => Ok(None),
        }
    }

    /// Moves the calling thread, which must be its process's only one, into
    /// every hierarchy.
    pub fn join(&self) -> Result<(), CgroupError> {
        use std::io::Write;
        for (path, f) in &self.files {
            (&*f)
                .write_all(b"0")
                .map_err(|e| fsutil::io("write \"0\" to", path, e))?;
        }
        Ok(())
    }
}

/// Kills every process in the cgroup with SIGKILL and waits (up to ~2 s) for it
/// to be empty.
pub fn kill_all(m: &Manager) -> Result<(), CgroupError> {
    for _ in 0..200 {
        let pids = m.pids()?;
        if pids.is_empty() {
            return Ok(());
        }
        for p in pids {
            // SAFETY: plain kill(2) on a pid read from the cgroup.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        // Frozen processes only die once thawed.
        if m.frozen() {
            m.freeze(FreezerState::Thawed)?;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}
