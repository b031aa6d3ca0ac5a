//! A container's recorded state (`<root>/<id>/state.json`, written atomically)
//! and its status, derived from the facts rather than trusted from the file: a
//! dead or replaced init (pid reuse is caught by the process start time) is
//! `stopped`, a frozen cgroup is `paused`, a pending exec fifo is `created`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError, SysContext};

/// Lifecycle states (the OCI runtime spec's, plus `paused` as runc has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen.
    Paused,
    /// The process has exited.
    Stopped,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    /// Whether `start` may run.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    /// Whether signals can be delivered.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    /// Whether `delete` without force may run.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Stopped | Status::Created)
    }

    /// Whether `pause` may run.
    pub fn can_pause(self) -> bool {
        matches!(self, Status::Running | Status::Created)
    }

    /// Whether `exec` may run.
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Running | Status::Created)
    }
}

/// What is persisted for a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs directory.
    pub rootfs: PathBuf,
    /// The init process (host pid).
    pub pid: i32,
    /// Its start time in clock ticks since boot (/proc/<pid>/stat field 22).
    pub pid_start: u64,
    /// RFC 3339 creation time.
    pub created: String,
    /// The cgroup path given to the cgroup manager.
    pub cgroup_path: String,
    /// Annotations from config.json.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Owner (the user that created it).
    #[serde(default)]
    pub owner: String,
    /// Set once `start` released the process.
    #[serde(default)]
    pub started: bool,
    /// The container has no mount namespace of its own: its root is the view
    /// [`crate::rootfs::host_view`] in the host's table, which delete detaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_mounts: bool,
}

impl ContainerState {
    /// Reads `dir/state.json`.
    pub fn load(dir: &Path, id: &str) -> Result<ContainerState> {
        let p = dir.join("state.json");
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Err(e) => return Err(e).sys("read", p.display()),
        };
        serde_json::from_slice(&data)
            .map_err(|e| RuntimeError::CorruptState(p.display().to_string(), e.to_string()))
    }

    /// Writes `dir/state.json` atomically (a temporary file renamed over
    /// it), so a reader or a killed writer never sees half of one. It is
    /// not synced to the disk: it describes processes, which a power loss
    /// ends too (runc keeps it on a tmpfs, /run/runc, for that reason), and
    /// a sync was two of the seven fsyncs of a `run --rm`. One that a power
    /// loss or a full disk left unreadable reads as
    /// [`RuntimeError::CorruptState`], which `delete --force` clears.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = dir.join("state.json");
        let tmp = dir.join(".state.json.tmp");
        let data = serde_json::to_vec_pretty(self).expect("state serialises");
        std::fs::write(&tmp, data).sys("write", tmp.display())?;
        std::fs::rename(&tmp, &p).sys("rename", p.display())
    }

    /// Whether the recorded init still runs (same pid, same start time, not a zombie).
    pub fn alive(&self) -> bool {
        self.pid > 0
            && proc_stat(self.pid).is_some_and(|(state, start)| {
                start == self.pid_start && state != 'Z' && state != 'X'
            })
    }
}

/// `(state letter, start time)` from /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may contain spaces and ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let state = f.first()?.chars().next()?;
    // Field 22 overall is index 19 after "pid (comm)".
    let start = f.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(matches!(state, 'R' | 'S'));
        assert!(start > 0);
    }

    #[test]
    fn status_rules() {
        assert!(Status::Created.can_start());
        assert!(!Status::Running.can_start());
        assert!(Status::Stopped.can_delete());
        assert!(!Status::Running.can_delete());
        assert!(!Status::Stopped.can_kill());
    }

    #[test]
    fn dead_pid_is_not_alive() {
        let s = ContainerState {
            id: "x".into(),
            bundle: "/".into(),
            rootfs: "/".into(),
            pid: std::process::id() as i32,
            pid_start: 1,
            created: String::new(),
            cgroup_path: String::new(),
            annotations: HashMap::new(),
            owner: String::new(),
            started: false,
            host_mounts: false,
        };
        assert!(!s.alive(), "start time differs: a reused pid");
    }
}
