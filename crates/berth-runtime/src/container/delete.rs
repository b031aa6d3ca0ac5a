//! `delete`: removes a stopped (or, with force, any) container: processes killed,
//! cgroup removed, poststop hooks run, state directory gone.

use super::Runtime;
use crate::error::{Result, RuntimeError};
use crate::state::Status;

impl Runtime {
    /// Deletes container `id`.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.delete_in(id, force, None)
    }

    /// Deletes container `id`, whose bundle was moved to `bundle` since it
    /// was created (the engine renames a container's directory away before
    /// deleting it): its poststop hooks are read from there.
    pub fn delete_moved(&self, id: &str, force: bool, bundle: &std::path::Path) -> Result<()> {
        self.delete_in(id, force, Some(bundle))
    }

    fn delete_in(&self, id: &str, force: bool, bundle: Option<&std::path::Path>) -> Result<()> {
        let dir = self.dir(id);
        let _lock = match self.lock(id) {
            Ok(l) => l,
            // runc: `delete --force` of a container that is already gone
            // succeeds (containerd's shim cleans up that way).
            Err(RuntimeError::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = match self.load(id) {
            Ok(st) => st,
            Err(RuntimeError::NotFound(_)) => {
                // A create that died before writing its state: just the directory.
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(());
            }
            // A state file that cannot be read (truncated by a full disk or
            // a crash): without its record there is nothing to stop or
            // unmount through it, so the directory goes, and the id is free
            // for a new create.
            Err(RuntimeError::CorruptState(..)) if force => {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| RuntimeError::sys("remove", dir.display(), e))?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = self.status(&st);
        if !status.can_delete() && !force {
            return Err(RuntimeError::State(format!(
                "cannot delete container {id} that is not stopped: {}",
                status.as_str()
            )));
        }
        if st.cgroup_path.is_empty() {
            // No cgroup: every process of its pid namespace (the init's
            // death takes the rest of a namespace of its own).
            if status != Status::Stopped {
                for p in self.processes(&st)? {
                    // SAFETY: kill(2) with a pid of the container.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
        } else {
            // Stopped or not: a container sharing the host's pid namespace
            // leaves its init's children in the cgroup when the init dies,
            // and the cgroup cannot go while they are there (EBUSY).
            let cg = self.cgroup(&st)?;
            berth_cgroups::kill_all(&cg)?;
            cg.destroy()?;
        }
        if st.host_mounts {
            crate::rootfs::detach_host_view(&crate::rootfs::host_view(&dir))?;
        }
        crate::hooks::run_late(
            "poststop",
            oci_spec::runtime::Hooks::poststop,
            bundle.unwrap_or(&st.bundle),
            id,
            "stopped",
            st.pid,
        );
        std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::sys("remove", dir.display(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file left empty or cut short (a full disk, a crash):
    /// `delete --force` clears the container, a plain delete names the file.
    #[test]
    fn force_delete_clears_a_truncated_state() {
        let root = tempfile::tempdir().unwrap();
        let rt = Runtime::new(root.path());
        for (id, data) in [("empty", ""), ("cut", "{\"id\":\"cut\",\"pi")] {
            std::fs::create_dir(rt.dir(id)).unwrap();
            std::fs::write(rt.dir(id).join("state.json"), data).unwrap();
            let e = rt.delete(id, false).unwrap_err().to_string();
            assert!(e.contains("state.json: corrupt state"), "{e}");
            assert!(rt.dir(id).exists());
            rt.delete(id, true).unwrap();
            assert!(!rt.dir(id).exists());
        }
    }
}
