//! A container's filesystem changes: `diff`, `export`, `commit` (and the
//! config a commit starts from).

use super::*;

impl Engine {
    /// The container's changes as docker shows and commits them: without the
    /// mount points the runtime made where the image had none (docker keeps
    /// those in an init layer under the container's own).
    pub(crate) fn visible_changes(&self, id: &str) -> Result<Vec<Change>> {
        Ok(self
            .store
            .snapshots
            .changes_hiding(id, berth_spec::defaults::MOUNT_POINTS)?)
    }

    /// `diff`: changes of the container's filesystem (`A`, `C`, `D` as docker prints them).
    pub fn diff(&self, q: &str) -> Result<Vec<(char, String)>> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        let top = image.top_chain();
        let mut out = Vec::new();
        for ch in self.visible_changes(&c.id)? {
            match ch {
                Change::Upsert(p) => {
                    let p = String::from_utf8_lossy(&p).into_owned();
                    let existed = top
                        .as_ref()
                        .is_some_and(|t| self.store.snapshots.find_below(t, &p).is_some());
                    out.push((if existed { 'C' } else { 'A' }, format!("/{p}")));
                }
                Change::Delete(p) => out.push(('D', format!("/{}", String::from_utf8_lossy(&p)))),
                Change::Opaque(_) => {}
            }
        }
        Ok(out)
    }

    /// Applies every layer of `image`, in order, into the directory `into`
    /// (the store's hardened tar reader: no path leaves `into`).
    fn flatten_layers(&self, image: &berth_store::image::Image, into: &Path) -> Result<()> {
        std::fs::create_dir_all(into).map_err(|e| EngineError::io("mkdir", into, e))?;
        for l in &image.manifest.layers {
            let r = self.store.content.open(&l.digest)?;
            let (_, plain) = berth_store::archive::decompress(r)
                .map_err(|e| EngineError::io("read", Path::new("layer"), e))?;
            berth_store::archive::apply::apply(into, plain, &Default::default())?;
        }
        Ok(())
    }

    /// `build --output type=local`: the image's files written into `dest`
    /// (made when missing). As BuildKit's local exporter, what is already
    /// there stays unless the image has a path of that name, which replaces
    /// it; nothing is written outside `dest`, whatever links it holds.
    pub fn image_to_dir(&self, image: &str, dest: &Path) -> Result<()> {
        let image = self.store.resolve(image)?;
        self.flatten_layers(&image, dest)
    }

    /// `build --output type=tar`: the image's files as one tar stream.
    pub fn image_to_tar(&self, image: &str, w: &mut dyn Write) -> Result<()> {
        let image = self.store.resolve(image)?;
        let tmp = tempdir_in(&self.root().join("containers"))?;
        let flat = tmp.join("fs");
        let r = self.flatten_layers(&image, &flat).and_then(|()| {
            let all = berth_store::archive::diff::changes_all(&flat)?;
            write_layer(&flat, &all, w, &WriteOptions::default())?;
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&tmp);
        r
    }

    /// `export`: the container's full filesystem as a tar stream.
    pub fn export(&self, q: &str, w: &mut dyn Write) -> Result<()> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        // Flatten: every layer, then the container's changes, applied in a temp dir.
        let tmp = tempdir_in(&self.root().join("containers"))?;
        let flat = tmp.join("fs");
        self.flatten_layers(&image, &flat)?;
        let changes = self.store.snapshots.changes(&c.id)?;
        let layer = write_layer(
            &self.store.snapshots.upper_dir(&c.id),
            &changes,
            Vec::new(),
            &WriteOptions::default(),
        )?;
        berth_store::archive::apply::apply(&flat, &layer[..], &Default::default())?;
        let all = berth_store::archive::diff::changes_all(&flat)?;
        write_layer(&flat, &all, w, &WriteOptions::default())?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    }

    /// The image config a commit starts from: the image's, with the
    /// container's own run settings (env, cmd, entrypoint, workdir, user)
    /// in place of the image's, as docker commits them.
    pub fn commit_config(&self, q: &str) -> Result<ImageConfig> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        let mut cfg = image.config.clone();
        let cc = cfg.config_mut();
        cc.env = Some(c.config.env.clone());
        cc.cmd = c.config.cmd.clone();
        cc.entrypoint = c.config.entrypoint.clone();
        if !c.config.working_dir.is_empty() {
            cc.working_dir = Some(c.config.working_dir.clone());
        }
        if !c.config.user.is_empty() {
            cc.user = Some(c.config.user.clone());
        }
        Ok(cfg)
    }

    /// `commit`: the container's changes as a new layer on its image.
    pub fn commit(
        &self,
        q: &str,
        name: Option<&Reference>,
        message: &str,
        author: &str,
        changes: &[ImageConfig],
        pause: bool,
    ) -> Result<berth_store::image::Image> {
        let c = self.find(q)?;
        // docker pauses a running container while it commits, unless told not to.
        let paused = pause && c.state.status == Status::Running;
        if paused {
            let _ = self.runtime.pause(&c.id);
        }
        let result = (|| {
            let _w = self.store.write_lock()?;
            let image = self.store.resolve(&c.image_id)?;
            let ch = self.visible_changes(&c.id)?;
            let tar = write_layer(
                &self.store.snapshots.upper_dir(&c.id),
                &ch,
                Vec::new(),
                &WriteOptions::default(),
            )?;
            let diff_id = berth_types::Digest::sha256_of(&tar);
            let mut gz = berth_store::pgzip::ParGzEncoder::new(
                self.store.content.writer()?,
                berth_store::image::import::gzip_level(),
            )
            .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            gz.write_all(&tar)
                .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            let blob_w = gz
                .finish()
                .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            let size = blob_w.len();
            let blob = blob_w
                .commit(None, None)
                .map_err(berth_store::StoreError::from)?;
            // Keep the new layer unpacked too.
            let (_, plain) = berth_store::archive::decompress(&tar[..])
                .map_err(|e| EngineError::io("read", Path::new("layer"), e))?;
            let top = image.top_chain();
            let ex = self.store.snapshots.extract(top.as_ref(), plain)?;
            let chain = self.store.snapshots.commit_extracted(ex, Some(&diff_id))?;
            self.store.snapshots.vouch(&chain, &blob)?;
            let mut cfg = changes
                .last()
                .cloned()
                .unwrap_or_else(|| image.config.clone());
            cfg.created = Some(now());
            cfg.rootfs.diff_ids.push(diff_id);
            if !author.is_empty() {
                cfg.author = Some(author.to_string());
            }
            cfg.history.push(History {
                created: cfg.created.clone(),
                author: (!author.is_empty()).then(|| author.to_string()),
                created_by: Some(format!("{} {}", c.path, c.args.join(" "))),
                comment: (!message.is_empty()).then(|| message.to_string()),
                empty_layer: false,
            });
            let mut layers = image.manifest.layers.clone();
            layers.push(Descriptor::new(media_types::OCI_LAYER_GZIP, blob, size));
            Ok(self.store.put_image(&cfg, layers, name)?)
        })();
        if paused {
            let _ = self.runtime.resume(&c.id);
        }
        if let Ok(img) = &result {
            let mut extra = vec![("comment", message.to_string())];
            extra.push(("imageID", img.id.to_string()));
            if let Some(n) = name {
                extra.push(("imageRef", n.familiar()));
            }
            self.container_event(&c, "commit", &extra);
        }
        result
    }
}

fn tempdir_in(parent: &Path) -> Result<std::path::PathBuf> {
    let p = parent.join(format!(
        ".export-{}-{}",
        std::process::id(),
        container::new_id()
    ));
    std::fs::create_dir_all(&p).map_err(|e| EngineError::io("mkdir", &p, e))?;
    Ok(p)
}
