//! Read-mostly verbs: `state` (runc's JSON), `list`, `ps`, `pause`, `resume`,
//! `stats`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::Runtime;
use crate::error::{Result, RuntimeError};
use crate::state::Status;

/// `state` output, as runc prints it.
#[derive(Debug, Clone, Serialize)]
pub struct OciState {
    /// OCI version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Id.
    pub id: String,
    /// Init pid (0 when stopped).
    pub pid: i32,
    /// Status.
    pub status: Status,
    /// Bundle.
    pub bundle: PathBuf,
    /// Rootfs.
    pub rootfs: PathBuf,
    /// Creation time.
    pub created: String,
    /// Annotations.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Owner.
    pub owner: String,
}

/// A `list` row.
pub type ContainerInfo = OciState;

impl Runtime {
    /// The state of `id`.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let st = self.load(id)?;
        let status = self.status(&st);
        Ok(OciState {
            oci_version: "1.2.0".into(),
            id: st.id.clone(),
            pid: if status == Status::Stopped { 0 } else { st.pid },
            status,
            bundle: st.bundle.clone(),
            rootfs: st.rootfs.clone(),
            created: st.created.clone(),
            annotations: st.annotations.clone(),
            owner: st.owner.clone(),
        })
    }

    /// Every container under the root.
    pub fn list(&self) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.state(&id) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Processes of the container.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.load(id)?;
        let mut p = self.processes(&st)?;
        p.sort();
        Ok(p)
    }

    /// Freezes every process.
    pub fn pause(&self, id: &str) -> Result<()> {
        let st = self.load(id)?;
        let s = self.status(&st);
        if !s.can_pause() {
            return Err(RuntimeError::State(format!(
                "container not running: {}",
                s.as_str()
            )));
        }
        self.cgroup(&st)?
            .freeze(berth_cgroups::FreezerState::Frozen)?;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let st = self.load(id)?;
        if self.status(&st) != Status::Paused {
            return Err(RuntimeError::State("container not paused".into()));
        }
        self.cgroup(&st)?
            .freeze(berth_cgroups::FreezerState::Thawed)?;
        Ok(())
    }

    /// Resource usage.
    pub fn stats(&self, id: &str) -> Result<berth_cgroups::Stats> {
        let st = self.load(id)?;
        Ok(self.cgroup(&st)?.stats()?)
    }

    /// Whether the kernel's OOM killer killed a process of the container
    /// (its stats' `oom_kills`, read alone).
    pub fn oom_killed(&self, id: &str) -> Result<bool> {
        let st = self.load(id)?;
        Ok(self.cgroup(&st)?.oom_kills() > 0)
    }
}

/// A process's command line, its arguments joined by spaces (`ps`'s CMD
/// column); empty when the process is gone or is a kernel thread.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}
