//! `update`: new resource limits for a running (or paused, or created)
//! container, written to its cgroup as `runc update` does.

use oci_spec::runtime::LinuxResources;

use super::Runtime;
use crate::error::{Result, RuntimeError};
use crate::state::Status;

impl Runtime {
    /// Applies `resources` to the container's cgroup. Limits not named in
    /// `resources` stay as they are.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let _l = self.lock(id)?;
        let st = self.load(id)?;
        if self.status(&st) == Status::Stopped {
            return Err(RuntimeError::State(format!(
                "cannot update container {id}: it is stopped"
            )));
        }
        self.cgroup(&st)?.apply(resources)?;
        Ok(())
    }
}
