//! Container lifecycle verbs, one file each, over a state directory per
//! container under the runtime root (`<root>/<id>/state.json`, `exec.fifo`).
//! Operations on one container are serialised by a lock on its directory.

mod create;
mod delete;
mod exec;
pub mod kill;
mod query;
mod start;
mod update;

pub use create::CreateOptions;
pub(crate) use create::hook_state_of;
pub use exec::{ExecOptions, ExecResult};
pub use query::{ContainerInfo, OciState, cmdline};

use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError, SysContext};
use crate::state::{ContainerState, Status};

/// A runtime instance: where container state lives.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// An exclusive lock on one container's directory.
pub struct ContainerLock {
    _f: std::fs::File,
}

impl Runtime {
    /// A runtime keeping state under `root` (runc's default is /run/runc).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory of `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Locks the container's directory (must exist).
    pub fn lock(&self, id: &str) -> Result<ContainerLock> {
        validate_id(id)?;
        let p = self.dir(id).join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    RuntimeError::NotFound(id.to_string())
                } else {
                    RuntimeError::sys("open", p.display(), e)
                }
            })?;
        f.lock().sys("flock", p.display())?;
        Ok(ContainerLock { _f: f })
    }

    /// The recorded state of `id`.
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        validate_id(id)?;
        ContainerState::load(&self.dir(id), id)
    }

    /// The current status of a container, from the facts.
    pub fn status(&self, st: &ContainerState) -> Status {
        if !st.alive() {
            return Status::Stopped;
        }
        if let Ok(m) = berth_cgroups::Manager::new(&st.cgroup_path)
            && m.frozen()
        {
            return Status::Paused;
        }
        if self.dir(&st.id).join("exec.fifo").exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The cgroup manager of a container (an error for one a rootless
    /// runtime ran without a cgroup: what needs one says so).
    pub fn cgroup(&self, st: &ContainerState) -> Result<berth_cgroups::Manager> {
        if st.cgroup_path.is_empty() {
            return Err(RuntimeError::State(
                "the container has no cgroup (a rootless container on a machine with no cgroup delegated to the user): pausing, limits and statistics need one".into(),
            ));
        }
        Ok(berth_cgroups::Manager::new(&st.cgroup_path)?)
    }

    /// The container's processes: its cgroup's, or without a cgroup those
    /// in its init's pid namespace (the init alone when it shares the host's).
    pub fn processes(&self, st: &ContainerState) -> Result<Vec<i32>> {
        if !st.cgroup_path.is_empty() {
            return Ok(self.cgroup(st)?.pids()?);
        }
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let (Some(theirs), Some(ours)) = (ns(&st.pid.to_string()), ns("self")) else {
            return Ok(vec![st.pid]);
        };
        if theirs == ours {
            return Ok(vec![st.pid]);
        }
        Ok(std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| ns(&p.to_string()).as_ref() == Some(&theirs))
            .collect())
    }
}

/// runc's rule for ids: letters, digits, `_`, `-`, `.`, not starting with `.`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}
