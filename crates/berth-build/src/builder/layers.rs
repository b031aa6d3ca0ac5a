//! Turning a step's writable snapshot into a layer (diff, gzip, commit,
//! history row), and WORKDIR's directory step.

use super::*;

impl<'a> Builder<'a> {
    /// Diffs an active snapshot into a layer (gzip blob + committed snapshot) and
    /// appends it, with history, to the state.
    pub(super) fn commit_snapshot(
        &mut self,
        snap: &str,
        mut st: StageImage,
        created_by: &str,
        opts: &BuildOptions,
    ) -> Result<StageImage, BuildError> {
        berth_runtime::trace::mark("build: commit starts");
        let changes = self.store.snapshots.changes(snap).map_err(other)?;
        berth_runtime::trace::mark("build: changes listed");
        let upper = self.store.snapshots.upper_dir(snap);
        if changes.is_empty() {
            self.store.snapshots.remove_active(snap).map_err(other)?;
            st.config.history.push(History {
                created: Some(created(opts)),
                created_by: Some(created_by.into()),
                empty_layer: true,
                ..Default::default()
            });
            return Ok(st);
        }
        let _w = self.store.write_lock().map_err(other)?;
        let writer = self.store.content.writer().map_err(other)?;
        let gz = opts.compression.encoder(writer).map_err(other)?;
        let tee = HashTee {
            h: Hasher::new(),
            w: gz,
        };
        let wopts = WriteOptions {
            clamp_mtime: opts.source_date_epoch,
        };
        let tee = write_layer(&upper, &changes, tee, &wopts).map_err(other)?;
        let diff_id = tee.h.finish();
        let blob_w = tee.w.finish().map_err(other)?;
        berth_runtime::trace::mark("build: layer written (tar, sha256, gzip)");
        let size = blob_w.len();
        let blob = blob_w.commit(None, None).map_err(other)?;
        berth_runtime::trace::mark("build: blob committed (digest, fsync, rename)");
        let chain = self
            .store
            .snapshots
            .commit_active(snap, &diff_id)
            .map_err(other)?;
        self.store.snapshots.vouch(&chain, &blob).map_err(other)?;
        berth_runtime::trace::mark("build: layer committed to the snapshotter");
        st.config.rootfs.diff_ids.push(diff_id);
        st.layers
            .push(Descriptor::new(opts.compression.media_type(), blob, size));
        st.config.history.push(History {
            created: Some(created(opts)),
            created_by: Some(created_by.into()),
            ..Default::default()
        });
        Ok(st)
    }

    pub(super) fn workdir_step(
        &mut self,
        s: &Step<'_>,
        dir: &str,
        st: StageImage,
    ) -> Result<StageImage, BuildError> {
        let (file, cmd, text, opts) = (s.plan.file, s.cmd, s.text, s.plan.opts);
        let key = cache::key(&st.key, &format!("WORKDIR {dir}"), &Inputs::default());
        let (v, t) = self.vertex(&format!("[{}] WORKDIR {dir}", s.plan.step_label(s.n)));
        let step_id = cache::step_id(&format!("WORKDIR {dir}"));
        if !opts.no_cache {
            // Found here or in a shared cache; a miss is not explained (a
            // WORKDIR's only input is its parent).
            if let Some(rec) = self.hit(v, &key, &step_id, &st.key, &Inputs::default()) {
                return Ok(StageImage {
                    config: rec.config,
                    layers: rec.layers,
                    key,
                });
            }
        }
        let _ = text;
        let (snap, mnt) = self
            .mount_step(&st, &key)
            .map_err(|e| step_err(file, cmd, e))?;
        let r = pathrs::Root::open(mnt.path()).and_then(|root| {
            use std::os::unix::fs::PermissionsExt;
            root.mkdir_all(dir, &std::fs::Permissions::from_mode(0o755))
                .map(drop)
        });
        drop(mnt);
        r.map_err(|e| step_err(file, cmd, format!("mkdir {dir}: {e}")))?;
        let parent_key = st.key.clone();
        // One history row, docker's words: with the layer of the directory
        // it made, or empty.
        let mut next = self.commit_snapshot(
            &snap,
            st,
            &format!("/bin/sh -c #(nop)  WORKDIR {dir}"),
            opts,
        )?;
        next.key = key.clone();
        self.remember(&key, &step_id, &parent_key, &next, &Inputs::default())?;
        self.done(v, t);
        Ok(next)
    }

    /// The writable snapshot of a step keyed `key` on top of `st`, prepared
    /// and mounted: its name (to commit or remove) and the mount.
    pub(super) fn mount_step(
        &mut self,
        st: &StageImage,
        key: &str,
    ) -> Result<(String, Mounted), BuildError> {
        self.ensure_unpacked(st)?;
        let snap = crate::leftovers::step_key(
            Digest::sha256_of(format!("{}{key}", self.work.display()).as_bytes()).short(),
        );
        let mounts = self
            .store
            .snapshots
            .prepare(&snap, st.top_chain().as_ref(), Default::default())
            .map_err(other)?;
        let mnt = self.mountpoint()?;
        match mount_snapshot(&mounts, &mnt) {
            Ok(m) => Ok((snap, m)),
            Err(e) => {
                let _ = self.store.snapshots.remove_active(&snap);
                Err(e)
            }
        }
    }

    pub(super) fn mountpoint(&mut self) -> Result<PathBuf, BuildError> {
        self.mounts_made += 1;
        let p = self.work.join(format!("mnt{}", self.mounts_made));
        std::fs::create_dir_all(&p).map_err(other)?;
        Ok(p)
    }
}
