//! `save` and `load`: image archives as `docker save` writes them and as docker,
//! podman and skopeo read them, and OCI image-layout archives.
//!
//! A docker-archive from berth has docker 25's shape: `manifest.json` and
//! `repositories` for every docker-archive reader, plus `index.json`, `oci-layout`
//! and `blobs/sha256/…` with uncompressed layers, so it is an OCI layout too.
//! An oci-archive holds the stored blobs as they are, so every digest is kept.
//!
//! Loading reads the tar once, streaming each blob into the content store where it
//! is verified against its name; small JSON documents stay in memory. Names are
//! added only after an image's blobs and layers all check out.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, Write};

use berth_types::image::annotations;
use berth_types::{
    AnyManifest, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference, media_types,
};
use serde::{Deserialize, Serialize};

use super::Image;
use super::gc::MAX_MANIFEST_SIZE;
use crate::archive::{ArchiveError, Compression, clean_components, decompress};
use crate::{Store, StoreError};
use berth_fs::IoContext;

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` format (also an OCI layout).
    Docker,
    /// OCI image layout in a tar.
    Oci,
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// An image loaded from an archive.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its id.
    pub id: Digest,
    /// The names it was given.
    pub names: Vec<Reference>,
}

struct TarOut<W: Write> {
    b: tar::Builder<W>,
    written: std::collections::BTreeSet<String>,
}

impl<W: Write> TarOut<W> {
    fn file(&mut self, path: &str, size: u64, data: impl Read) -> Result<(), StoreError> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_path(path).map_err(ArchiveError::Tar)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.b.append(&h, data).map_err(ArchiveError::Tar)?;
        Ok(())
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<(), StoreError> {
        self.file(path, data.len() as u64, data)
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

impl Store {
    /// What `save NAME|ID…` writes: each image once, with the names to
    /// record. A name saves that name; an id saves every name of the image,
    /// as docker does.
    pub fn save_selection<S: AsRef<str>>(
        &self,
        wanted: &[S],
    ) -> Result<Vec<(Image, Vec<Reference>)>, StoreError> {
        let mut sel: Vec<(Image, Vec<Reference>)> = Vec::new();
        for i in wanted {
            let i = i.as_ref();
            let img = self.resolve(i)?;
            let names: Vec<Reference> = match Reference::parse(i) {
                Ok(r) if img.names.contains(&r.clone().with_default_tag()) => {
                    vec![r.with_default_tag()]
                }
                _ => img.names.clone(),
            };
            match sel.iter_mut().find(|(s, _)| s.id == img.id) {
                Some((_, n)) => {
                    for x in names {
                        if !n.contains(&x) {
                            n.push(x);
                        }
                    }
                }
                None => sel.push((img, names)),
            }
        }
        Ok(sel)
    }

    /// Writes `images` (with the names to record for each) as an archive into `w`.
    pub fn save<W: Write>(
        &self,
        images: &[(Image, Vec<Reference>)],
        format: ArchiveFormat,
        w: W,
    ) -> Result<W, StoreError> {
        let mut out = TarOut {
            b: tar::Builder::new(w),
            written: Default::default(),
        };
        let mut index = Index::new();
        let mut docker_manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (img, names) in images {
            let config_bytes = self.content.read(&img.id)?;
            out.bytes(&blob_path(&img.id), &config_bytes)?;
            let manifest_desc = match (format, self.complete_index(img)) {
                // A multi-platform image with every platform here: the
                // index itself and each platform's image, digests kept.
                (ArchiveFormat::Oci, Some((top, children))) => {
                    for child in &children {
                        let (m, _) = self.load_image_docs(child)?;
                        let cb = self.content.read(&m.config.digest)?;
                        out.bytes(&blob_path(&m.config.digest), &cb)?;
                        self.write_oci_image(&mut out, child, &m)?;
                    }
                    let ib = self.content.read(&top.digest)?;
                    out.bytes(&blob_path(&top.digest), &ib)?;
                    top
                }
                (ArchiveFormat::Oci, None) => {
                    self.write_oci_image(&mut out, &img.manifest_desc, &img.manifest)?;
                    img.manifest_desc.clone()
                }
                (ArchiveFormat::Docker, _) => {
                    let mut layers = Vec::new();
                    for (l, diff_id) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids)
                    {
                        let size = self.write_uncompressed(&mut out, &l.digest, diff_id)?;
                        layers.push(Descriptor::new(
                            media_types::OCI_LAYER,
                            diff_id.clone(),
                            size,
                        ));
                    }
                    let m = Manifest::oci(img.id.clone(), config_bytes.len() as u64, layers);
                    let mb = serde_json::to_vec(&m).expect("manifest serialises");
                    let d = Digest::sha256_of(&mb);
                    out.bytes(&blob_path(&d), &mb)?;
                    docker_manifest.push(ArchiveManifest {
                        config: blob_path(&img.id),
                        repo_tags: (!names.is_empty())
                            .then(|| names.iter().map(|n| n.familiar()).collect()),
                        layers: img.config.rootfs.diff_ids.iter().map(blob_path).collect(),
                    });
                    for n in names {
                        if let (Some(tag), Some(top)) = (n.tag(), img.config.rootfs.diff_ids.last())
                        {
                            repositories
                                .entry(n.familiar_name())
                                .or_default()
                                .insert(tag.to_string(), top.hex().to_string());
                        }
                    }
                    Descriptor::new(media_types::OCI_MANIFEST, d, mb.len() as u64)
                }
            };
            if names.is_empty() {
                index.manifests.push(manifest_desc.clone());
            }
            for n in names {
                let mut d = manifest_desc.clone();
                let mut ann = BTreeMap::new();
                ann.insert(
                    annotations::CONTAINERD_IMAGE_NAME.to_string(),
                    n.to_string(),
                );
                if let Some(t) = n.tag() {
                    ann.insert(annotations::REF_NAME.to_string(), t.to_string());
                }
                d.annotations = Some(ann);
                index.manifests.push(d);
            }
        }
        out.bytes(
            "index.json",
            &serde_json::to_vec(&index).expect("index serialises"),
        )?;
        if format == ArchiveFormat::Docker {
            out.bytes(
                "manifest.json",
                &serde_json::to_vec(&docker_manifest).expect("manifest.json serialises"),
            )?;
            if !repositories.is_empty() {
                out.bytes(
                    "repositories",
                    &serde_json::to_vec(&repositories).expect("repositories serialise"),
                )?;
            }
        }
        out.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        out.b.finish().map_err(ArchiveError::Tar)?;
        Ok(out.b.into_inner().map_err(ArchiveError::Tar)?)
    }

    /// An image's layers and manifest as OCI layout blobs (its config is
    /// the caller's).
    fn write_oci_image<W: Write>(
        &self,
        out: &mut TarOut<W>,
        desc: &Descriptor,
        m: &Manifest,
    ) -> Result<(), StoreError> {
        for l in &m.layers {
            let f = self.content.open(&l.digest)?;
            out.file(&blob_path(&l.digest), l.size, f)
                .map_err(|e| self.read_error(e, &l.digest))?;
        }
        let mb = self.content.read(&desc.digest)?;
        out.bytes(&blob_path(&desc.digest), &mb)
    }

    fn read_error(&self, e: StoreError, d: &Digest) -> StoreError {
        match e {
            StoreError::Archive(ArchiveError::Tar(io)) => {
                crate::content::unwrap_read_error(io, d, &self.content.path(d)).into()
            }
            other => other,
        }
    }

    /// Writes a layer uncompressed (its digest is `diff_id`), checking the diff id.
    fn write_uncompressed<W: Write>(
        &self,
        out: &mut TarOut<W>,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<u64, StoreError> {
        let path = blob_path(diff_id);
        let mut tmp = tempfile::tempfile_in(self.content.root().join("ingest"))
            .ctx("create", &self.content.root().join("ingest"))?;
        let mut r = self.content.open(blob)?;
        let mut hw = berth_types::digest::Hasher::new();
        {
            let (_, mut plain) = decompress(&mut r).map_err(ArchiveError::Tar)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = plain
                    .read(&mut buf)
                    .map_err(|e| self.read_error(ArchiveError::Tar(e).into(), blob))?;
                if n == 0 {
                    break;
                }
                hw.update(&buf[..n]);
                tmp.write_all(&buf[..n]).ctx("write", self.content.root())?;
            }
        }
        io::copy(&mut r, &mut io::sink())
            .map_err(|e| self.read_error(ArchiveError::Tar(e).into(), blob))?;
        let size = hw.len();
        let actual = hw.finish();
        if actual != *diff_id {
            return Err(StoreError::invalid(
                format!("layer {blob}"),
                format!("uncompressed content is {actual}, but the image config says {diff_id}"),
            ));
        }
        tmp.rewind().ctx("seek", self.content.root())?;
        out.file(&path, size, tmp)?;
        Ok(size)
    }

    /// Loads every image in a docker-archive or OCI archive (plain or compressed).
    pub fn load<R: Read>(&self, input: R) -> Result<Vec<Loaded>, StoreError> {
        let _w = self.write_lock()?;
        let (_, plain) =
            decompress(input).map_err(|e| StoreError::invalid("archive", e.to_string()))?;
        let mut ar = tar::Archive::new(plain);
        let mut files = ArchiveFiles::default();
        for e in ar
            .entries()
            .map_err(|e| StoreError::invalid("archive", format!("not a tar archive: {e}")))?
        {
            let mut e = e.map_err(|e| {
                StoreError::invalid("archive", format!("truncated or corrupt: {e}"))
            })?;
            let raw = e.path_bytes().into_owned();
            let Some(comps) = clean_components(&raw) else {
                return Err(StoreError::invalid(
                    "archive",
                    format!(
                        "entry {:?} escapes the archive",
                        String::from_utf8_lossy(&raw)
                    ),
                ));
            };
            let path = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes() {
                        let target = if e.header().entry_type() == tar::EntryType::Symlink {
                            let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            format!("{dir}/{}", String::from_utf8_lossy(&t))
                        } else {
                            String::from_utf8_lossy(&t).into_owned()
                        };
                        let cleaned = clean_components(target.as_bytes())
                            .map(|c| String::from_utf8_lossy(&c.join(&b'/')).into_owned());
                        if let Some(c) = cleaned {
                            files.links.insert(path, c);
                        }
                    }
                    continue;
                }
                _ => continue,
            }
            let size = e.size();
            let named = path
                .strip_prefix("blobs/sha256/")
                .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok());
            let small_doc = size <= MAX_MANIFEST_SIZE
                && (path.ends_with(".json")
                    || path == "repositories"
                    || path == "oci-layout"
                    || path.ends_with("/json")
                    || path.ends_with("VERSION"));
            if small_doc && named.is_none() {
                let mut b = Vec::with_capacity(size as usize);
                e.read_to_end(&mut b).map_err(|err| {
                    StoreError::invalid(format!("archive {path}"), err.to_string())
                })?;
                files.docs.insert(path, b);
                continue;
            }
            let mut w = self.content.writer()?;
            io::copy(&mut e, &mut w).map_err(|err| {
                StoreError::invalid(
                    format!("archive {path}"),
                    format!("truncated or corrupt: {err}"),
                )
            })?;
            let d = w
                .commit(named.as_ref(), Some(size))
                .map_err(|err| match err {
                    crate::content::ContentError::DigestMismatch { expected, actual } => {
                        StoreError::invalid(
                            format!("archive {path}"),
                            format!("content is {actual}, not {expected}"),
                        )
                    }
                    other => other.into(),
                })?;
            files.blobs.insert(path, d);
        }
        if files.docs.contains_key("manifest.json") {
            self.load_docker(&files)
        } else if files.docs.contains_key("index.json") {
            self.load_oci(&files)
        } else {
            Err(StoreError::invalid(
                "archive",
                "neither manifest.json (docker-archive) nor index.json (OCI layout) found",
            ))
        }
    }

    fn load_docker(&self, files: &ArchiveFiles) -> Result<Vec<Loaded>, StoreError> {
        let list: Vec<ArchiveManifest> = serde_json::from_slice(&files.docs["manifest.json"])
            .map_err(|e| StoreError::invalid("archive manifest.json", e.to_string()))?;
        let mut out = Vec::new();
        for am in list {
            let config_bytes = files.bytes(self, &am.config)?;
            let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
                StoreError::invalid(format!("archive {}", am.config), e.to_string())
            })?;
            let config_digest = self.content.put(&config_bytes, None)?;
            let mut layers = Vec::new();
            for lp in &am.layers {
                let d = files.blob(self, lp)?;
                let mut head = [0u8; 4];
                let n = self
                    .content
                    .open(&d)?
                    .read(&mut head)
                    .ctx("read", &self.content.path(&d))?;
                let mt = match Compression::detect(&head[..n]) {
                    Compression::None => media_types::OCI_LAYER,
                    Compression::Gzip => media_types::OCI_LAYER_GZIP,
                    Compression::Zstd => media_types::OCI_LAYER_ZSTD,
                };
                layers.push(Descriptor::new(
                    mt,
                    d.clone(),
                    self.content.size(&d).unwrap_or(0),
                ));
            }
            let blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
            self.unpack(&blobs, &config.rootfs.diff_ids)?;
            let manifest = Manifest::oci(config_digest.clone(), config_bytes.len() as u64, layers);
            let mut names = Vec::new();
            for t in am.repo_tags.unwrap_or_default() {
                names.push(Reference::parse(&t)?.with_default_tag());
            }
            if names.is_empty() {
                self.put_manifest(manifest.clone(), config.clone(), None, None)?;
            }
            for n in &names {
                self.put_manifest(manifest.clone(), config.clone(), Some(n), None)?;
            }
            out.push(Loaded {
                id: config_digest,
                names,
            });
        }
        Ok(out)
    }

    fn load_oci(&self, files: &ArchiveFiles) -> Result<Vec<Loaded>, StoreError> {
        let index: Index = serde_json::from_slice(&files.docs["index.json"])
            .map_err(|e| StoreError::invalid("archive index.json", e.to_string()))?;
        let mut by_manifest: BTreeMap<Digest, (Descriptor, Vec<Reference>)> = BTreeMap::new();
        for top in &index.manifests {
            // A multi-platform image whose platforms are all in the archive
            // stays one (its name on the index); else the host's platform.
            let desc = match self.whole_index(top) {
                Some(ix) => ix,
                None => self.select_platform(top, &Platform::host())?,
            };
            let name = top
                .annotation(annotations::CONTAINERD_IMAGE_NAME)
                .or_else(|| {
                    top.annotation(annotations::REF_NAME)
                        .filter(|n| n.contains([':', '/', '@']))
                })
                .map(Reference::parse)
                .transpose()?
                .map(|r| r.with_default_tag());
            let e = by_manifest
                .entry(desc.digest.clone())
                .or_insert_with(|| (desc.clone(), Vec::new()));
            e.1.extend(name);
        }
        let mut out = Vec::new();
        for (_, (desc, names)) in by_manifest {
            let images = if media_types::is_index(&desc.media_type) {
                self.index_children(&desc)?
            } else {
                vec![desc.clone()]
            };
            let mut id = None;
            for child in &images {
                let (m, c) = self.load_image_docs(child)?;
                self.unpack(
                    &m.layers
                        .iter()
                        .map(|l| l.digest.clone())
                        .collect::<Vec<_>>(),
                    &c.rootfs.diff_ids,
                )?;
                let host = child
                    .platform
                    .as_ref()
                    .is_some_and(|p| Platform::host().matches(p));
                if id.is_none() || host {
                    id = Some(m.config.digest.clone());
                }
            }
            let id = id.expect("an image or an index with images");
            if names.is_empty() {
                self.add_name(&desc, None, None)?;
            }
            for n in &names {
                self.add_name(&desc, Some(n), None)?;
            }
            out.push(Loaded { id, names });
        }
        Ok(out)
    }

    /// `top` (or the one index it wraps, as docker's and buildx's OCI
    /// exports nest it) when it is an index of images whose manifests,
    /// configs and layers are all in the store.
    fn whole_index(&self, top: &Descriptor) -> Option<Descriptor> {
        let mut cur = top.clone();
        for _ in 0..4 {
            if !media_types::is_index(&cur.media_type) {
                return None;
            }
            let bytes = self.content.read(&cur.digest).ok()?;
            let Ok(AnyManifest::Index(ix)) = AnyManifest::parse(&bytes, Some(&cur.media_type))
            else {
                return None;
            };
            match ix.manifests.as_slice() {
                [only] if media_types::is_index(&only.media_type) => {
                    cur = only.clone();
                    continue;
                }
                _ => {}
            }
            let whole = ix.manifests.iter().all(|d| {
                media_types::is_manifest(&d.media_type)
                    && self
                        .load_image_docs(d)
                        .is_ok_and(|(m, _)| m.layers.iter().all(|l| self.content.exists(&l.digest)))
            });
            return (whole && !ix.manifests.is_empty())
                .then(|| Descriptor::new(&cur.media_type, cur.digest.clone(), cur.size));
        }
        None
    }

    /// Follows an index down to the manifest for `platform`.
    pub fn select_platform(
        &self,
        desc: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        let mut cur = desc.clone();
        for _ in 0..8 {
            if media_types::is_manifest(&cur.media_type) {
                return Ok(cur);
            }
            let bytes = self.content.read(&cur.digest)?;
            match AnyManifest::parse(&bytes, Some(&cur.media_type)) {
                Ok(AnyManifest::Image(_)) => return Ok(cur),
                Ok(AnyManifest::Index(i)) => {
                    cur = i.select(platform).cloned().ok_or_else(|| {
                        StoreError::invalid(
                            format!("index {}", cur.digest),
                            format!("no manifest for platform {platform}"),
                        )
                    })?;
                }
                Err(e) => {
                    return Err(StoreError::invalid(
                        format!("manifest {}", cur.digest),
                        e.to_string(),
                    ));
                }
            }
        }
        Err(StoreError::invalid(
            format!("index {}", desc.digest),
            "nested too deeply",
        ))
    }
}

#[derive(Default)]
struct ArchiveFiles {
    docs: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Digest>,
    links: HashMap<String, String>,
}

impl ArchiveFiles {
    fn resolve<'a>(&'a self, mut p: &'a str) -> &'a str {
        for _ in 0..16 {
            match self.links.get(p) {
                Some(t) => p = t,
                None => break,
            }
        }
        p
    }

    fn bytes(&self, store: &Store, p: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.resolve(p.trim_start_matches("./"));
        if let Some(b) = self.docs.get(p) {
            return Ok(b.clone());
        }
        match self.blobs.get(p) {
            Some(d) => Ok(store.content.read(d)?),
            None => Err(StoreError::invalid(
                "archive",
                format!("{p} is referenced but missing"),
            )),
        }
    }

    fn blob(&self, store: &Store, p: &str) -> Result<Digest, StoreError> {
        let p = self.resolve(p.trim_start_matches("./"));
        if let Some(d) = self.blobs.get(p) {
            return Ok(d.clone());
        }
        match self.docs.get(p) {
            Some(b) => Ok(store.content.put(b, None)?),
            None => Err(StoreError::invalid(
                "archive",
                format!("{p} is referenced but missing"),
            )),
        }
    }
}
