//! `system reset`: a store and everything it made on the host go — its
//! containers (killed, their cgroups and ports with them), its networks'
//! bridges and nft entries (another store's stay), then every file under
//! the store root. What `podman system reset` does for podman's store.

use crate::{Engine, EngineError, Result};

impl Engine {
    /// Removes every container, network, volume, image and cache record of
    /// this store, and what they hold on the host. The root directory
    /// itself stays (it may be a mount point), empty.
    pub fn reset(&self) -> Result<()> {
        self.settle_removals();
        for c in self.containers()? {
            let _ = self.remove(&c.id, true, true);
        }
        for n in self.bridge_networks() {
            self.network_down(&n)?;
        }
        let root = self.root();
        let entries = std::fs::read_dir(root).map_err(|e| EngineError::io("readdir", root, e))?;
        for e in entries.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|err| EngineError::io("remove", &p, err))?;
        }
        Ok(())
    }
}
