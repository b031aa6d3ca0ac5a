//! Active snapshots (containerd's word): a writable upper directory over a
//! chain of committed layers, or a read-only view of one — prepared,
//! listed, mounted, diffed (hiding the runtime's mount points), committed
//! as a new layer, and removed.

use super::*;

impl Snapshotter {
    /// Creates a writable snapshot `key` on top of layer `parent`.
    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create_active(key, parent, labels, false, true)
    }

    /// A writable snapshot as [`Snapshotter::prepare`] makes, for a
    /// container removed when it exits (`run --rm`): its metadata is not
    /// fsynced, since such a snapshot is not meant to outlive a crash. A
    /// power loss may leave that metadata empty; such a snapshot is then
    /// listed nowhere, and removing it by its key still works.
    pub fn prepare_scratch(
        &self,
        key: &str,
        parent: Option<&Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create_active(key, parent, labels, false, false)
    }

    /// Creates a read-only view `key` of layer `parent`.
    pub fn view(
        &self,
        key: &str,
        parent: &Digest,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create_active(key, Some(parent), labels, true, true)
    }

    fn create_active(
        &self,
        key: &str,
        parent: Option<&Digest>,
        labels: BTreeMap<String, String>,
        readonly: bool,
        durable: bool,
    ) -> Result<Vec<Mount>, SnapshotError> {
        validate_key(key)?;
        if let Some(p) = parent
            && !self.has_layer(p)
        {
            return Err(SnapshotError::MissingParent(p.clone()));
        }
        let dest = self.active_dir(key);
        if dest.exists() {
            return Err(SnapshotError::Exists(key.to_string()));
        }
        let tmp = self.root.join("tmp").join(unique_name("a-"));
        let res = (|| {
            mkdir_all(&tmp.join("work"))?;
            match (self.driver, parent) {
                (Driver::Copy, Some(p)) if !readonly => {
                    copy_tree(&self.layer_fs(p), &tmp.join("fs"))?
                }
                _ => mkdir_all(&tmp.join("fs"))?,
            }
            let meta = ActiveMeta {
                key: key.to_string(),
                parent: parent.cloned(),
                readonly,
                labels,
                scratch: !durable,
            };
            let data = serde_json::to_vec_pretty(&meta).expect("meta serialises");
            let meta_path = tmp.join("meta.json");
            if durable {
                atomic_write(&meta_path, &data)?;
            } else {
                // Made whole before the rename below shows it.
                fs::write(&meta_path, &data).ctx("write", &meta_path)?;
            }
            fs::rename(&tmp, &dest).ctx("rename", &dest)?;
            Ok::<(), SnapshotError>(())
        })();
        if let Err(e) = res {
            let _ = remove_any(&tmp);
            return Err(e);
        }
        self.mounts(key)
    }

    /// An active snapshot's metadata.
    pub fn active(&self, key: &str) -> Result<Option<ActiveMeta>, SnapshotError> {
        validate_key(key)?;
        read_meta(&self.active_dir(key).join("meta.json"))
    }

    /// Every active snapshot.
    pub fn actives(&self) -> Result<Vec<ActiveMeta>, SnapshotError> {
        read_metas(&self.root.join("active"))
    }

    /// The writable directory of an active snapshot (overlay upper, or the full
    /// copy), where the engine finds a container's changes.
    pub fn upper_dir(&self, key: &str) -> PathBuf {
        self.active_dir(key).join("fs")
    }

    /// How to mount an active snapshot.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let meta = self
            .active(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let dir = self.active_dir(key);
        let upper = dir.join("fs");
        let Some(parent) = meta.parent else {
            return Ok(vec![Mount::bind(&upper, meta.readonly)]);
        };
        if self.driver == Driver::Copy {
            let src = if meta.readonly {
                self.layer_fs(&parent)
            } else {
                upper
            };
            return Ok(vec![Mount::bind(&src, meta.readonly)]);
        }
        let lowers = self.lower_dirs(&parent)?;
        if meta.readonly && lowers.len() == 1 {
            return Ok(vec![Mount::bind(&lowers[0], true)]);
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut options = vec![format!("lowerdir={lowerdir}")];
        if !meta.readonly {
            options.push(format!("upperdir={}", upper.display()));
            options.push(format!("workdir={}", dir.join("work").display()));
        }
        if self.fuse {
            return Ok(vec![Mount {
                typ: FUSE.into(),
                source: FUSE.into(),
                options,
            }]);
        }
        // Inside a user namespace overlayfs keeps its metadata in user.*
        // xattrs, which the layers' opaque markers are written in too.
        options.extend(crate::archive::overlay_meta::mount_options().map(str::to_string));
        // A scratch snapshot's writes need no sync: it goes when its
        // container does (podman mounts --rm containers so too). After a
        // crash overlayfs refuses to mount its upper again, which nothing
        // asks: it is removed.
        if meta.scratch && !meta.readonly && overlay_volatile() {
            options.push("volatile".into());
        }
        Ok(vec![Mount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options,
        }])
    }

    /// The changes an active snapshot holds, relative to its parent.
    pub fn changes(&self, key: &str) -> Result<Vec<diff::Change>, SnapshotError> {
        let meta = self
            .active(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let upper = self.upper_dir(key);
        match (self.driver, &meta.parent) {
            (Driver::Overlay, _) | (Driver::Copy, None) => Ok(diff::changes_overlay(&upper)?),
            (Driver::Copy, Some(p)) => Ok(diff::changes_dirs(&self.layer_fs(p), &upper)?),
        }
    }

    /// [`Snapshotter::changes`] without the stubs a runtime made among
    /// `points` to mount over (see [`diff::hide_mount_points`]).
    pub fn changes_hiding(
        &self,
        key: &str,
        points: &[&str],
    ) -> Result<Vec<diff::Change>, SnapshotError> {
        let parent = self
            .active(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?
            .parent;
        let below = |p: &str| {
            parent
                .as_ref()
                .and_then(|t| self.find_below(t, p))
                .map(|(_, st)| st)
        };
        Ok(diff::hide_mount_points(
            self.changes(key)?,
            &self.upper_dir(key),
            points,
            &below,
        )?)
    }

    /// Turns an active snapshot into a committed layer whose diff id the caller
    /// computed (by writing the layer tar from [`Snapshotter::changes`]).
    /// The active snapshot is consumed.
    pub fn commit_active(&self, key: &str, diff_id: &Digest) -> Result<Digest, SnapshotError> {
        let meta = self
            .active(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let chain = match &meta.parent {
            None => diff_id.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
        };
        let dir = self.active_dir(key);
        let upper = dir.join("fs");
        if meta.scratch {
            // Its overlay was volatile: what it wrote is synced here, before
            // it becomes a layer (a durable one's unmount synced it).
            fs::File::open(&upper)
                .and_then(|f| rustix::fs::syncfs(&f).map_err(Into::into))
                .ctx("syncfs", &upper)?;
        }
        let size = berth_fs::du(&upper);
        let tmp = self.root.join("tmp").join(unique_name("c-"));
        fs::rename(&dir, &tmp).ctx("rename", &dir)?;
        let _ = fs::remove_file(tmp.join("meta.json"));
        let _ = remove_any(&tmp.join("work"));
        let lm = LayerMeta {
            chain_id: chain.clone(),
            parent: meta.parent.clone(),
            diff_id: diff_id.clone(),
            size,
            blobs: Vec::new(),
        };
        let res = self.publish(&tmp, &lm);
        let _ = remove_any(&tmp);
        res.map(|()| chain)
    }

    /// Removes an active snapshot (which must be unmounted).
    pub fn remove_active(&self, key: &str) -> Result<(), SnapshotError> {
        let tmp = self.detach_active(key, std::process::id())?;
        remove_any(&tmp)?;
        Ok(())
    }

    /// The first half of [`Snapshotter::remove_active`]: the snapshot is
    /// gone from the store (listed nowhere, its parent no longer in use) by
    /// one rename of its directory into `tmp/`, as a temporary of process
    /// `owner`, which deletes it later with [`Snapshotter::purge`]; if that
    /// process dies first, the next gc clears it as a stale temporary.
    pub fn detach_active(&self, key: &str, owner: u32) -> Result<PathBuf, SnapshotError> {
        validate_key(key)?;
        let dir = self.active_dir(key);
        let tmp = self.tmp_dir().join(berth_fs::unique_name_for("rm-", owner));
        match fs::rename(&dir, &tmp) {
            Ok(()) => Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SnapshotError::NotFound(key.to_string()))
            }
            Err(e) => Err(e).ctx("rename", &dir)?,
        }
    }

    /// Where temporaries go (what [`Snapshotter::detach_active`] moves
    /// there included), named for the process that owns them.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Deletes what [`Snapshotter::detach_active`] moved aside (only paths
    /// under this store's `tmp/` are taken).
    pub fn purge(&self, detached: &Path) -> Result<(), SnapshotError> {
        if detached.parent() != Some(self.tmp_dir().as_path()) {
            return Err(SnapshotError::NotFound(detached.display().to_string()));
        }
        remove_any(detached)?;
        Ok(())
    }
}
