//! Images: names → manifests, kept in the content layout's `index.json` (one
//! descriptor per name, annotated with `org.opencontainers.image.ref.name` = the
//! full normalised reference; a descriptor without the annotation is a dangling
//! image). Image ids are config digests, as in docker.
//!
//! A name may point at an OCI index (a multi-platform build, a pull through
//! a manifest list): its children present in the store are its platforms'
//! images, of which one — the host's, else the first present — is the one
//! the name lists and runs as (containerd's image store does the same);
//! [`Store::resolve_platform`] picks another. The other children are found
//! by id but not listed, so `images` shows the index once.
//!
//! Submodules: [`import`] (rootfs tarball → image), [`archive`] (docker-archive and
//! oci-archive save and load), [`gc`] (garbage collection and `system check`).

pub mod archive;
pub mod gc;
pub mod import;

use std::collections::BTreeMap;

use berth_types::image::annotations;
use berth_types::image::media_types;
use berth_types::{AnyManifest, Descriptor, Digest, ImageConfig, Index, Manifest, Reference};

use crate::{Store, StoreError};
use berth_fs::atomic_write;

/// Annotation recording a registry digest (`name@sha256:…`) of a pulled image.
pub const REPO_DIGEST_ANNOTATION: &str = "io.berth.repo-digest";
/// Snapshot label naming the image an active snapshot was made from.
pub const IMAGE_LABEL: &str = "io.berth.image";

/// An image in the store, with its documents read and verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image id (config digest).
    pub id: Digest,
    /// The manifest's descriptor.
    pub manifest_desc: Descriptor,
    /// Every stored manifest with this config (the same image loaded from a
    /// docker-archive and an OCI archive has two); includes `manifest_desc`.
    pub manifests: Vec<Digest>,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// Every name pointing at it, sorted.
    pub names: Vec<Reference>,
    /// Registry digests (`docker.io/library/busybox@sha256:…`).
    pub repo_digests: Vec<Reference>,
    /// The index the name it was resolved by points at, when it points at
    /// one (a multi-platform image); the manifest is then that index's child.
    pub index: Option<Descriptor>,
    /// A child of an index that is not the one the index's names stand for
    /// (another platform): found by id, not listed.
    pub secondary: bool,
}

impl Image {
    /// Layer blob digests, base first.
    pub fn layer_blobs(&self) -> Vec<Digest> {
        self.manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect()
    }

    /// The top chain id (None for an image without layers).
    pub fn top_chain(&self) -> Option<Digest> {
        berth_types::chain_ids(&self.config.rootfs.diff_ids).pop()
    }
}

/// Manifests and configs read by this process, by digest.
#[derive(Debug, Default)]
pub(crate) struct DocMemo {
    manifests: std::collections::HashMap<Digest, std::sync::Arc<Manifest>>,
    indexes: std::collections::HashMap<Digest, std::sync::Arc<Index>>,
    configs: std::collections::HashMap<Digest, std::sync::Arc<ImageConfig>>,
}

/// What [`Store::remove_image`] did, in docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A name was removed.
    Untagged(String),
    /// The image (or a layer of it) was deleted.
    Deleted(Digest),
}

impl Store {
    fn index_path(&self) -> std::path::PathBuf {
        self.content.root().join("index.json")
    }

    /// The current name index.
    pub fn read_index(&self) -> Result<Index, StoreError> {
        let p = self.index_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StoreError::invalid(p.display().to_string(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::new()),
            Err(e) => Err(berth_fs::PathError {
                op: "read",
                path: p,
                source: e,
            }
            .into()),
        }
    }

    /// Changes the index under its lock; the closure's result is written atomically.
    pub fn update_index<T>(
        &self,
        f: impl FnOnce(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _g = self.index_lock()?;
        let mut idx = self.read_index()?;
        let out = f(&mut idx)?;
        let mut bytes = serde_json::to_vec_pretty(&idx).expect("index serialises");
        bytes.push(b'\n');
        atomic_write(&self.index_path(), &bytes)?;
        Ok(out)
    }

    /// Reads and verifies a manifest and its config.
    pub fn load_image_docs(
        &self,
        desc: &Descriptor,
    ) -> Result<(Manifest, ImageConfig), StoreError> {
        let m = self.read_manifest(desc)?;
        let config = self.read_config(&m.config.digest)?;
        Ok((m, config))
    }

    /// Reads and verifies the image manifest `desc` names.
    fn read_manifest(&self, desc: &Descriptor) -> Result<Manifest, StoreError> {
        let bytes = self.content.read(&desc.digest)?;
        match AnyManifest::parse(&bytes, Some(&desc.media_type)) {
            Ok(AnyManifest::Image(m)) => Ok(*m),
            Ok(AnyManifest::Index(_)) => Err(StoreError::invalid(
                format!("manifest {}", desc.digest),
                "is an index, not an image manifest",
            )),
            Err(e) => Err(StoreError::invalid(
                format!("manifest {}", desc.digest),
                e.to_string(),
            )),
        }
    }

    /// Reads and verifies image config `d`.
    fn read_config(&self, d: &Digest) -> Result<ImageConfig, StoreError> {
        let cb = self.content.read(d)?;
        serde_json::from_slice(&cb)
            .map_err(|e| StoreError::invalid(format!("image config {d}"), e.to_string()))
    }

    /// Every image, grouped by image id (config digest) as docker groups them,
    /// with its names. Sorted newest first.
    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        let idx = self.read_index()?;
        let mut all = self.images_of(&idx, |_| true)?;
        all.retain(|i| !i.secondary);
        Ok(all)
    }

    /// Whether `desc` is an index (OCI, or a Docker manifest list).
    fn is_index(desc: &Descriptor) -> bool {
        media_types::is_index(&desc.media_type)
    }

    /// The images an entry of the name index stands for: an image manifest
    /// itself, or an index's children that are in the store, each with
    /// whether it is the one the entry's names stand for (the host's
    /// platform, else the first present).
    pub(crate) fn entry_images(
        &self,
        top: &Descriptor,
    ) -> Result<Vec<(Descriptor, bool)>, StoreError> {
        if !Self::is_index(top) {
            return Ok(vec![(strip(top), true)]);
        }
        let index = self.memo_index(top)?;
        let present: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| media_types::is_manifest(&d.media_type) && self.content.exists(&d.digest))
            .collect();
        let host = berth_types::Platform::host();
        let primary = present
            .iter()
            .position(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
            .unwrap_or(0);
        Ok(present
            .into_iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i == primary))
            .collect())
    }

    /// The image manifests an index lists (present in the store or not).
    pub fn index_children(&self, top: &Descriptor) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self
            .memo_index(top)?
            .manifests
            .iter()
            .filter(|d| media_types::is_manifest(&d.media_type))
            .cloned()
            .collect())
    }

    /// The index `image` was found through, with its image manifests, when
    /// every one of them is in the store (a multi-platform image that can
    /// travel whole: pushed, saved); None for a single image or an index
    /// with platforms missing here.
    pub fn complete_index(&self, image: &Image) -> Option<(Descriptor, Vec<Descriptor>)> {
        let top = image.index.as_ref()?;
        let children = self.index_children(top).ok()?;
        children
            .iter()
            .all(|c| self.content.exists(&c.digest))
            .then(|| (top.clone(), children))
    }

    /// The index `desc` names, read and verified once per process.
    fn memo_index(&self, desc: &Descriptor) -> Result<std::sync::Arc<Index>, StoreError> {
        if let Some(i) = self.docs.lock().expect("docs").indexes.get(&desc.digest) {
            return Ok(i.clone());
        }
        let bytes = self.content.read(&desc.digest)?;
        let index = match AnyManifest::parse(&bytes, Some(&desc.media_type)) {
            Ok(AnyManifest::Index(i)) => std::sync::Arc::new(*i),
            Ok(AnyManifest::Image(_)) => {
                return Err(StoreError::invalid(
                    format!("index {}", desc.digest),
                    "is an image manifest, not an index",
                ));
            }
            Err(e) => {
                return Err(StoreError::invalid(
                    format!("index {}", desc.digest),
                    e.to_string(),
                ));
            }
        };
        let mut docs = self.docs.lock().expect("docs");
        docs.indexes.insert(desc.digest.clone(), index.clone());
        Ok(index)
    }

    /// The multi-platform image `name` points at, for `platform`: the
    /// index's child for it when the name points at an index and the child
    /// is in the store; otherwise whatever [`Store::resolve`] finds (whose
    /// platform the caller checks).
    pub fn resolve_platform(
        &self,
        s: &str,
        platform: &berth_types::Platform,
    ) -> Result<Image, StoreError> {
        let idx = self.read_index()?;
        let named = Reference::parse(s)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.with_default_tag().to_string());
        let top = named.and_then(|n| {
            idx.manifests
                .iter()
                .find(|d| d.annotation(annotations::REF_NAME) == Some(n.as_str()))
        });
        let Some(top) = top.filter(|d| Self::is_index(d)) else {
            return self.resolve_in(&idx, s);
        };
        let Some(child) = self.memo_index(top)?.select(platform).cloned() else {
            return self.resolve_in(&idx, s);
        };
        if !self.content.exists(&child.digest) {
            return Err(StoreError::ImageNotFound(format!("{s} for {platform}")));
        }
        self.image_through(&idx, top, &child)
    }

    /// The image of `child`, the manifest a name's entry `top` stands for
    /// (itself, or a child of the index it is), with that index as the one
    /// it was found through.
    fn image_through(
        &self,
        idx: &Index,
        top: &Descriptor,
        child: &Descriptor,
    ) -> Result<Image, StoreError> {
        let manifest = self.memo_manifest(child)?;
        let id = manifest.config.digest.clone();
        let mut img = self
            .images_of(idx, |c| *c == id)?
            .pop()
            .ok_or_else(|| StoreError::ImageNotFound(child.digest.to_string()))?;
        if Self::is_index(top) {
            img.index = Some(strip(top));
            img.manifest_desc = strip(child);
            img.manifest = (*manifest).clone();
        }
        Ok(img)
    }

    /// Stores an OCI index over `children` (image manifests in the store,
    /// each with its platform) and points `names` at it; the children's own
    /// unnamed entries go (the index keeps them). Callers hold the write lock.
    pub fn put_index(
        &self,
        children: Vec<Descriptor>,
        names: &[Reference],
    ) -> Result<Descriptor, StoreError> {
        for c in &children {
            if !self.content.exists(&c.digest) {
                return Err(crate::content::ContentError::NotFound(c.digest.clone()).into());
            }
        }
        let mut index = Index::new();
        index.manifests = children;
        let bytes = serde_json::to_vec(&index).expect("index serialises");
        let digest = self.content.put(&bytes, None)?;
        let desc = Descriptor::new(media_types::OCI_INDEX, digest, bytes.len() as u64);
        let kids: Vec<Digest> = index.manifests.iter().map(|c| c.digest.clone()).collect();
        self.update_index(|idx| {
            idx.manifests
                .retain(|d| !(kids.contains(&d.digest) && d.annotations.is_none()));
            if names.is_empty() {
                idx.manifests.push(desc.clone());
            }
            for n in names {
                set_name(idx, &desc, &n.clone().with_default_tag(), None);
            }
            Ok(())
        })?;
        Ok(desc)
    }

    /// The images of `idx` whose id `keep` accepts. Only their configs are
    /// read; every manifest is (for its config digest, which groups names by
    /// image) — both once per process.
    fn images_of(
        &self,
        idx: &Index,
        keep: impl Fn(&Digest) -> bool,
    ) -> Result<Vec<Image>, StoreError> {
        let mut by_id: BTreeMap<Digest, Image> = BTreeMap::new();
        for top in &idx.manifests {
            for (d, primary) in self.entry_images(top)? {
                let manifest = self.memo_manifest(&d)?;
                if !keep(&manifest.config.digest) {
                    continue;
                }
                let img = match by_id.entry(manifest.config.digest.clone()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => e.insert(Image {
                        id: manifest.config.digest.clone(),
                        manifest_desc: strip(&d),
                        manifests: Vec::new(),
                        config: self.memo_config(&manifest.config.digest)?,
                        manifest: (*manifest).clone(),
                        names: Vec::new(),
                        repo_digests: Vec::new(),
                        index: None,
                        secondary: true,
                    }),
                };
                if !img.manifests.contains(&d.digest) {
                    img.manifests.push(d.digest.clone());
                }
                if !primary {
                    continue;
                }
                img.secondary = false;
                if Self::is_index(top) && !img.manifests.contains(&top.digest) {
                    img.manifests.push(top.digest.clone());
                }
                if let Some(n) = top.annotation(annotations::REF_NAME)
                    && let Ok(r) = Reference::parse(n)
                    && !img.names.contains(&r)
                {
                    img.names.push(r);
                }
                if let Some(n) = top.annotation(REPO_DIGEST_ANNOTATION)
                    && let Ok(r) = Reference::parse(n)
                    && !img.repo_digests.contains(&r)
                {
                    img.repo_digests.push(r);
                }
            }
        }
        let mut out: Vec<Image> = by_id.into_values().collect();
        for i in &mut out {
            i.names.sort();
        }
        out.sort_by(|a, b| {
            b.config
                .created
                .cmp(&a.config.created)
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// The manifest `desc` names, read and verified once per process.
    fn memo_manifest(&self, desc: &Descriptor) -> Result<std::sync::Arc<Manifest>, StoreError> {
        if let Some(m) = self.docs.lock().expect("docs").manifests.get(&desc.digest) {
            return Ok(m.clone());
        }
        let m = std::sync::Arc::new(self.read_manifest(desc)?);
        let mut docs = self.docs.lock().expect("docs");
        docs.manifests.insert(desc.digest.clone(), m.clone());
        Ok(m)
    }

    /// The image config `d`, read and verified once per process.
    fn memo_config(&self, d: &Digest) -> Result<ImageConfig, StoreError> {
        if let Some(c) = self.docs.lock().expect("docs").configs.get(d) {
            return Ok((**c).clone());
        }
        let c = std::sync::Arc::new(self.read_config(d)?);
        self.docs
            .lock()
            .expect("docs")
            .configs
            .insert(d.clone(), c.clone());
        Ok((*c).clone())
    }

    /// Finds an image the way docker does: a full or `sha256:` id, then a name
    /// (`busybox` means `docker.io/library/busybox:latest`), `name@digest`, then a
    /// unique short id. A name is found in the index and only its image's
    /// config is read, so the lookup does not grow with the store's size
    /// beyond one small manifest read per image (once per process).
    pub fn resolve(&self, s: &str) -> Result<Image, StoreError> {
        self.resolve_in(&self.read_index()?, s)
    }

    /// [`Store::resolve`] over the name index `idx` already read.
    fn resolve_in(&self, idx: &Index, s: &str) -> Result<Image, StoreError> {
        let hexpart = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = !hexpart.is_empty() && hexpart.bytes().all(|b| b.is_ascii_hexdigit());
        let by_id = || {
            let lower = hexpart.to_ascii_lowercase();
            let mut m = self
                .images_of(idx, |id| id.has_hex_prefix(&lower))?
                .into_iter();
            match (m.next(), m.next()) {
                (Some(i), None) => Ok(i),
                (Some(_), Some(_)) => Err(StoreError::Ambiguous(s.to_string())),
                _ => Err(StoreError::ImageNotFound(s.to_string())),
            }
        };
        if is_hex && (s.starts_with("sha256:") || hexpart.len() == 64) {
            return by_id();
        }
        match Reference::parse(s) {
            Ok(r) => {
                let r = r.with_default_tag();
                if let Some(d) = r.digest() {
                    let images = self.images_of(idx, |_| true)?;
                    if let Some(img) = images.iter().find(|i| {
                        (i.manifests.contains(d)
                            && (i.names.iter().any(|n| n.name() == r.name())
                                || i.repo_digests.iter().any(|n| n.name() == r.name())))
                            // A pulled index's digest names its platform's image.
                            || i.repo_digests.iter().any(|n| n.name() == r.name() && n.digest() == Some(d))
                    }) {
                        return Ok(img.clone());
                    }
                } else if let Some(desc) = idx.manifests.iter().find(|x| {
                    x.annotation(annotations::REF_NAME)
                        .and_then(|n| Reference::parse(n).ok())
                        .is_some_and(|n| n == r)
                }) {
                    let primary = self.entry_images(desc)?.into_iter().find(|(_, p)| *p);
                    if let Some((child, _)) = primary {
                        return self.image_through(idx, desc, &child);
                    }
                }
                if is_hex {
                    return by_id();
                }
                Err(StoreError::ImageNotFound(s.to_string()))
            }
            Err(e) if is_hex => by_id().map_err(|_| e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds (or moves) `name` to point at `image`. An image that loses its last name
    /// this way stays, dangling, as in docker.
    pub fn tag(&self, image: &Image, name: &Reference) -> Result<(), StoreError> {
        let name = name.clone().with_default_tag();
        if name.digest().is_some() {
            return Err(StoreError::Conflict(format!(
                "refusing to create a tag with a digest reference: {}",
                name.familiar()
            )));
        }
        // A multi-platform image's new name points at its index too.
        let desc = image
            .index
            .clone()
            .unwrap_or_else(|| image.manifest_desc.clone());
        self.update_index(|idx| {
            set_name(idx, &desc, &name, None);
            Ok(())
        })
    }

    /// Records `name` (and optionally its registry digest) for a manifest just stored.
    pub fn add_name(
        &self,
        desc: &Descriptor,
        name: Option<&Reference>,
        repo_digest: Option<&Reference>,
    ) -> Result<(), StoreError> {
        let desc = strip(desc);
        self.update_index(|idx| {
            match name {
                Some(n) => set_name(idx, &desc, &n.clone().with_default_tag(), repo_digest),
                None => {
                    if !idx.manifests.iter().any(|d| d.digest == desc.digest) {
                        idx.manifests.push(desc.clone());
                    }
                }
            }
            Ok(())
        })
    }

    /// Ids of images that active snapshots (containers, build steps) were made from.
    pub fn images_in_use(&self) -> Result<BTreeMap<Digest, Vec<String>>, StoreError> {
        let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for a in self.snapshots.actives()? {
            if let Some(id) = a.labels.get(IMAGE_LABEL).and_then(|s| s.parse().ok()) {
                out.entry(id).or_default().push(a.key.clone());
            }
        }
        Ok(out)
    }

    /// `image prune`: removes the images no container uses — the untagged
    /// ones, or with `all` every one; returns what went and the bytes freed.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<RemoveEvent>, u64), StoreError> {
        let in_use = self.images_in_use()?;
        let before = berth_fs::du(self.root());
        let mut events = Vec::new();
        for img in self.images()? {
            if in_use.contains_key(&img.id) || (!all && !img.names.is_empty()) {
                continue;
            }
            events.extend(self.remove_image(&img.id.to_string(), true)?);
        }
        let after = berth_fs::du(self.root());
        Ok((events, before.saturating_sub(after)))
    }

    /// `docker rmi`: by name, untags (and deletes the image when that was its last
    /// name); by id, deletes the image (all its names when `force`).
    pub fn remove_image(&self, s: &str, force: bool) -> Result<Vec<RemoveEvent>, StoreError> {
        let image = self.resolve(s)?;
        if image.secondary {
            return Err(StoreError::Conflict(format!(
                "conflict: unable to delete {} - it is one platform of a multi-platform image: remove that image by its name",
                image.id.short()
            )));
        }
        let by_name = Reference::parse(s)
            .ok()
            .map(|r| r.with_default_tag())
            .filter(|r| image.names.contains(r) || r.digest().is_some());
        let users = self.images_in_use()?.remove(&image.id).unwrap_or_default();
        let mut events = Vec::new();
        let remove_all_names = match &by_name {
            Some(r) if image.names.len() > 1 && r.digest().is_none() => {
                self.update_index(|idx| {
                    remove_name(idx, r);
                    Ok(())
                })?;
                return Ok(vec![RemoveEvent::Untagged(r.familiar())]);
            }
            Some(_) => true,
            None => {
                if image.names.len() > 1 && !force {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        image.id.short()
                    )));
                }
                true
            }
        };
        if !users.is_empty() && !force {
            let what = match &by_name {
                Some(r) => format!("remove repository reference \"{}\"", r.familiar()),
                None => format!("delete {}", image.id.short()),
            };
            return Err(StoreError::Conflict(format!(
                "conflict: unable to {what} (must force) - container {} is using its referenced image {}",
                short_key(&users[0]),
                image.id.short()
            )));
        }
        if remove_all_names && !users.is_empty() {
            // Forced, but containers use it: only its names go (docker's
            // rmi -f with stopped containers); it stays, dangling, for them.
            let digests = image.manifests.clone();
            let kept = image.manifest_desc.clone();
            self.update_index(|idx| {
                idx.manifests.retain(|d| !digests.contains(&d.digest));
                idx.manifests.push(strip(&kept));
                Ok(())
            })?;
            for n in image.names.iter().chain(&image.repo_digests) {
                events.push(RemoveEvent::Untagged(n.familiar()));
            }
            return Ok(events);
        }
        if remove_all_names {
            let digests = image.manifests.clone();
            self.update_index(|idx| {
                idx.manifests.retain(|d| !digests.contains(&d.digest));
                Ok(())
            })?;
            for n in &image.names {
                events.push(RemoveEvent::Untagged(n.familiar()));
            }
            for n in &image.repo_digests {
                events.push(RemoveEvent::Untagged(n.familiar()));
            }
            events.push(RemoveEvent::Deleted(image.id.clone()));
            let report = self.gc()?;
            for l in report.layers_removed {
                events.push(RemoveEvent::Deleted(l));
            }
        }
        Ok(events)
    }
}

fn short_key(k: &str) -> &str {
    &k[..k.len().min(12)]
}

/// The manifest descriptor without per-name annotations.
fn strip(d: &Descriptor) -> Descriptor {
    Descriptor::new(&d.media_type, d.digest.clone(), d.size)
}

fn remove_name(idx: &mut Index, name: &Reference) {
    let n = name.to_string();
    idx.manifests
        .retain(|d| d.annotation(annotations::REF_NAME) != Some(n.as_str()));
}

fn set_name(idx: &mut Index, desc: &Descriptor, name: &Reference, repo_digest: Option<&Reference>) {
    // Who held the name before, and does it keep another entry?
    let n = name.to_string();
    let previous = idx
        .manifests
        .iter()
        .find(|d| d.annotation(annotations::REF_NAME) == Some(n.as_str()))
        .map(|d| (d.digest.clone(), d.media_type.clone(), d.size));
    remove_name(idx, name);
    if let Some((dg, mt, size)) = previous
        && dg != desc.digest
        && !idx.manifests.iter().any(|d| d.digest == dg)
    {
        idx.manifests.push(Descriptor::new(&mt, dg, size)); // now dangling
    }
    // A dangling entry of this image is replaced by the named one.
    idx.manifests
        .retain(|d| !(d.digest == desc.digest && d.annotations.is_none()));
    let mut named = strip(desc);
    let mut ann = BTreeMap::new();
    ann.insert(annotations::REF_NAME.to_string(), n);
    if let Some(rd) = repo_digest {
        ann.insert(REPO_DIGEST_ANNOTATION.to_string(), rd.to_string());
    }
    named.annotations = Some(ann);
    idx.manifests.push(named);
}

#[cfg(test)]
mod tests;
