//! The registry's storage: repositories, tags, links, manifests and GC,
//! written once over a [`Backend`] that keeps the bytes — a directory
//! ([`FsBackend`]) or an S3-compatible bucket ([`S3Backend`]) several
//! replicas share.
//!
//! The layout, as files under the directory or keys under the bucket's prefix:
//!
//! ```text
//! <storage>/blobs/sha256/<hex>          every blob once, shared by all repositories
//!                                       (berth-store's ContentStore: verified on commit)
//! <storage>/uploads/<uuid>              upload sessions in progress (same filesystem)
//! <storage>/uploads/<uuid>.json         the session's repository and start time
//! <storage>/repos/<name>/_layers/<hex>              blob linked into the repository
//! <storage>/repos/<name>/_manifests/revisions/<hex> manifest in the repository
//!                                                   (file content: its media type)
//! <storage>/repos/<name>/_manifests/tags/<tag>      the tag's manifest digest
//! <storage>/repos/<name>/_referrers/<subject hex>/<hex>  manifests whose subject it is
//! ```
//!
//! A blob becomes visible only once whole and checked against its digest (an
//! atomic rename on disk, a server-side copy in a bucket), a link is created
//! only after its blob exists, a tag only after its manifest; every file is
//! written whole (temp file + rename, or one PUT). So a crash at any point
//! leaves at worst an upload that expires, never a partial blob or a dangling
//! tag. Repository names, tags and digests are validated before they reach a
//! key, so no request can name anything outside the storage.

mod fs;
mod s3;
pub mod s3client;

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use berth_types::Digest;
use berth_types::digest::Hasher;
use berth_types::image::{AnyManifest, Descriptor};
use bytes::Bytes;

pub use fs::FsBackend;
pub use s3::S3Backend;
pub use s3client::S3Options;

/// One name in a listed directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name (no slashes).
    pub name: String,
    /// A directory (a key prefix with keys below it).
    pub is_dir: bool,
    /// When the file was last written.
    pub modified: SystemTime,
}

/// A stored blob.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was last written (or refreshed).
    pub modified: SystemTime,
}

/// Why an upload was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// Its bytes hash to another digest (nothing was stored).
    Mismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of what it sent.
        actual: Digest,
    },
    /// Storage failed.
    Io(io::Error),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Mismatch { expected, actual } => {
                write!(f, "uploaded content has digest {actual}, not {expected}")
            }
            CommitError::Io(e) => e.fmt(f),
        }
    }
}

/// Where the registry's bytes live: small files by key (`repos/…`,
/// `uploads/<id>.json`, the layout above), blobs by digest, and upload
/// sessions' data. Keys are built here from validated names only.
///
/// Every method may block (disk or network); the server calls them from
/// blocking tasks or through [`s3client::blocking`].
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The storage, for messages (a directory, an `s3://` URL).
    fn describe(&self) -> String;
    /// A small file's bytes; `None` when absent.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Writes a small file whole and atomically.
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// Creates an empty file or renews its time.
    fn touch(&self, key: &str) -> io::Result<()>;
    /// Removes a file; false when there was none.
    fn delete(&self, key: &str) -> io::Result<bool>;
    /// A file's time; `None` when absent.
    fn modified(&self, key: &str) -> io::Result<Option<SystemTime>>;
    /// The names directly under `dir` (empty when it does not exist).
    fn list(&self, dir: &str) -> io::Result<Vec<Entry>>;
    /// Whether anything is under `dir`.
    fn has_dir(&self, dir: &str) -> bool {
        self.list(dir).is_ok_and(|v| !v.is_empty())
    }
    /// A blob's size; `None` when absent.
    fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>>;
    /// A whole blob, verified against its digest.
    fn blob_get(&self, d: &Digest) -> io::Result<Vec<u8>>;
    /// Stores a blob the caller has hashed to `d`.
    fn blob_put(&self, d: &Digest, data: &[u8]) -> io::Result<()>;
    /// Renews a blob's time for GC's grace period (where that is cheap).
    fn blob_refresh(&self, d: &Digest);
    /// `len` bytes of a blob from `start`, streamed.
    fn blob_body(&self, d: &Digest, start: u64, len: u64) -> io::Result<Body>;
    /// Where clients may fetch the blob themselves (a presigned URL of the
    /// object store), when the storage sends them there.
    fn blob_url(&self, _d: &Digest) -> Option<String> {
        None
    }
    /// Every blob.
    fn blobs(&self) -> io::Result<Vec<BlobEntry>>;
    /// Removes a blob.
    fn blob_delete(&self, d: &Digest) -> io::Result<()>;
    /// Creates upload `id`'s (empty) data.
    fn upload_start(&self, id: &str) -> io::Result<()>;
    /// Bytes received by upload `id`; `None` when there is no such upload.
    fn upload_size(&self, id: &str) -> io::Result<Option<u64>>;
    /// Appends the chunks from `rx` to upload `id` (blocking), updating
    /// `hasher` when given; the upload's size after.
    fn upload_append(
        &self,
        id: &str,
        rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
        hasher: &mut Option<Hasher>,
    ) -> io::Result<u64>;
    /// Stores upload `id` as blob `expected` if its bytes hash to it
    /// (`hashed`: the digest computed while they arrived, if known).
    fn upload_commit(
        &self,
        id: &str,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<(), CommitError>;
    /// Removes upload `id`'s data.
    fn upload_end(&self, id: &str);
    /// Every upload session and its last activity.
    fn uploads(&self) -> Vec<(String, SystemTime)>;
}

/// A body fed by a channel of chunks.
pub(crate) fn channel_body(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

/// The storage.
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Arc<dyn Backend>,
}

pub use berth_types::reference::{valid_repository as valid_name, valid_tag};

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The bytes, exactly as pushed.
    pub bytes: Vec<u8>,
}

/// Why a manifest was refused.
#[derive(Debug)]
pub enum PutManifestError {
    /// Unparseable or of an unknown type.
    Invalid(String),
    /// It references a blob or manifest the repository does not have.
    BlobUnknown(Digest),
    /// The pushed digest does not match the reference.
    DigestMismatch(Digest),
    /// Storage failed.
    Io(String),
}

/// What a repository's GC pass did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Abandoned uploads removed.
    pub uploads_removed: u64,
    /// Blobs kept because they are younger than the grace period.
    pub kept_young: u64,
    /// Blobs in use.
    pub kept_in_use: u64,
}

impl Storage {
    /// Opens (creating) storage in a directory.
    pub fn open(root: &std::path::Path) -> io::Result<Storage> {
        Ok(Storage::with(Arc::new(FsBackend::open(root)?)))
    }

    /// Opens storage in a bucket: `s3://bucket[/prefix]`.
    pub fn open_s3(url: &str, opts: &S3Options) -> io::Result<Storage> {
        Ok(Storage::with(Arc::new(S3Backend::open(url, opts)?)))
    }

    /// Storage over any backend.
    pub fn with(backend: Arc<dyn Backend>) -> Storage {
        Storage { backend }
    }

    /// Where the storage is, for messages.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    fn repo(&self, name: &str) -> String {
        debug_assert!(valid_name(name));
        format!("repos/{name}")
    }

    fn layer_link(&self, name: &str, d: &Digest) -> String {
        format!("{}/_layers/{}", self.repo(name), d.hex())
    }

    fn revision(&self, name: &str, d: &Digest) -> String {
        format!("{}/_manifests/revisions/{}", self.repo(name), d.hex())
    }

    fn tag_path(&self, name: &str, tag: &str) -> String {
        debug_assert!(valid_tag(tag));
        format!("{}/_manifests/tags/{tag}", self.repo(name))
    }

    fn exists(&self, key: &str) -> bool {
        self.backend.modified(key).is_ok_and(|m| m.is_some())
    }

    /// Whether the repository has any content.
    pub fn repo_exists(&self, name: &str) -> bool {
        let r = self.repo(name);
        self.backend.has_dir(&format!("{r}/_layers"))
            || self.backend.has_dir(&format!("{r}/_manifests"))
    }

    /// The blob's size when the repository may serve it.
    pub fn blob(&self, name: &str, d: &Digest) -> Option<u64> {
        if !self.exists(&self.layer_link(name, d)) && !self.exists(&self.revision(name, d)) {
            return None;
        }
        self.backend.blob_size(d).ok().flatten()
    }

    /// `len` bytes of a blob from `start`, streamed.
    pub fn blob_body(&self, d: &Digest, start: u64, len: u64) -> io::Result<Body> {
        self.backend.blob_body(d, start, len)
    }

    /// Where a client may fetch the blob itself, when the storage redirects
    /// blob GETs (S3 with redirects on).
    pub fn blob_url(&self, d: &Digest) -> Option<String> {
        self.backend.blob_url(d)
    }

    /// A whole (small) blob, verified: a config, a manifest.
    pub fn read_blob(&self, d: &Digest) -> io::Result<Vec<u8>> {
        self.backend.blob_get(d)
    }

    /// Whether the blob exists anywhere (for mounts without `from`).
    pub fn blob_anywhere(&self, d: &Digest) -> bool {
        self.backend.blob_size(d).is_ok_and(|s| s.is_some())
    }

    /// Links an existing blob into a repository (again: a client checking a
    /// blob before it pushes a manifest keeps it young for GC).
    pub fn link_blob(&self, name: &str, d: &Digest) -> io::Result<()> {
        self.backend.blob_refresh(d);
        self.backend.touch(&self.layer_link(name, d))
    }

    /// Unlinks a blob from a repository; false when it was not linked.
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> io::Result<bool> {
        self.backend.delete(&self.layer_link(name, d))
    }

    /// Commits upload `id` as a blob of `name`, checking its digest.
    pub fn commit_upload(
        &self,
        name: &str,
        id: &str,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<(), CommitError> {
        self.backend.upload_commit(id, expected, hashed)?;
        self.link_blob(name, expected).map_err(CommitError::Io)
    }

    /// Starts an upload session for `name`.
    pub fn new_upload(&self, name: &str) -> io::Result<String> {
        let mut b = [0u8; 16];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())?;
        let id = format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&b[0..4]),
            hex::encode(&b[4..6]),
            hex::encode(&b[6..8]),
            hex::encode(&b[8..10]),
            hex::encode(&b[10..16])
        );
        self.backend.upload_start(&id)?;
        self.backend.put(
            &format!("uploads/{id}.json"),
            serde_json::json!({ "name": name, "started": jiff::Timestamp::now().to_string() })
                .to_string()
                .as_bytes(),
        )?;
        Ok(id)
    }

    /// The repository an upload belongs to, if the session exists.
    pub fn upload_repo(&self, id: &str) -> Option<String> {
        if !valid_upload_id(id) {
            return None;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&self.backend.get(&format!("uploads/{id}.json")).ok()??).ok()?;
        self.backend.upload_size(id).ok()??;
        v["name"].as_str().map(str::to_string)
    }

    /// Bytes received by upload `id`; `None` when there is no such upload.
    pub fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        self.backend.upload_size(id)
    }

    /// Appends the chunks from `rx` to upload `id` (blocking).
    pub fn upload_append(
        &self,
        id: &str,
        rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
        hasher: &mut Option<Hasher>,
    ) -> io::Result<u64> {
        self.backend.upload_append(id, rx, hasher)
    }

    /// Ends an upload session (its data is gone or is removed now).
    pub fn end_upload(&self, id: &str) {
        self.backend.upload_end(id);
        let _ = self.backend.delete(&format!("uploads/{id}.json"));
    }

    /// Removes upload sessions untouched for longer than `max_age`.
    pub fn expire_uploads(&self, max_age: Duration) -> u64 {
        let mut n = 0;
        for (id, t) in self.backend.uploads() {
            if t.elapsed().unwrap_or_default() > max_age {
                self.end_upload(&id);
                n += 1;
            }
        }
        n
    }

    /// Resolves a tag or digest reference to a stored manifest.
    pub fn manifest(&self, name: &str, reference: &str) -> Option<StoredManifest> {
        let digest: Digest = if reference.contains(':') {
            reference.parse().ok()?
        } else {
            if !valid_tag(reference) {
                return None;
            }
            self.tag_digest(name, reference)?
        };
        let media_type =
            String::from_utf8(self.backend.get(&self.revision(name, &digest)).ok()??).ok()?;
        let bytes = self.backend.blob_get(&digest).ok()?;
        Some(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Stores a manifest under `reference` (a tag or its digest) and `extra_tags`
    /// (the `?tag=` parameters of a push by digest). Every blob and child
    /// manifest it references must already be in the repository.
    pub fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: Option<&str>,
        bytes: &[u8],
        extra_tags: &[String],
    ) -> Result<(Digest, Option<Digest>), PutManifestError> {
        if let Some(t) = extra_tags.iter().find(|t| !valid_tag(t)) {
            return Err(PutManifestError::Invalid(format!("invalid tag {t:?}")));
        }
        if !reference.contains(':') && !valid_tag(reference) {
            return Err(PutManifestError::Invalid(format!(
                "invalid tag {reference:?}"
            )));
        }
        let mut digest = Digest::sha256_of(bytes);
        if reference.contains(':') {
            let want: Digest = reference
                .parse()
                .map_err(|e| PutManifestError::Invalid(format!("{e}")))?;
            digest = Digest::of(want.algorithm(), bytes);
            if want != digest {
                return Err(PutManifestError::DigestMismatch(want));
            }
        }
        let parsed = AnyManifest::parse(bytes, content_type)
            .map_err(|e| PutManifestError::Invalid(e.to_string()))?;
        let doc_type = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string));
        let ct = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| {
                !c.is_empty() && c != "application/json" && c != "application/octet-stream"
            });
        if let (Some(doc), Some(ct)) = (&doc_type, &ct)
            && doc != ct
        {
            return Err(PutManifestError::Invalid(format!(
                "the manifest's mediaType {doc:?} does not match its Content-Type {ct:?}"
            )));
        }
        let (media_type, subject) = match &parsed {
            AnyManifest::Image(m) => {
                let mt = ct
                    .or(doc_type)
                    .unwrap_or_else(|| berth_types::image::media_types::OCI_MANIFEST.to_string());
                for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue; // foreign layers live elsewhere
                    }
                    if self.blob(name, &d.digest).is_none() {
                        return Err(PutManifestError::BlobUnknown(d.digest.clone()));
                    }
                }
                (mt, m.subject.as_ref().map(|s| s.digest.clone()))
            }
            AnyManifest::Index(ix) => {
                let mt = ct
                    .or(doc_type)
                    .unwrap_or_else(|| berth_types::image::media_types::OCI_INDEX.to_string());
                for d in &ix.manifests {
                    if !self.exists(&self.revision(name, &d.digest)) {
                        return Err(PutManifestError::BlobUnknown(d.digest.clone()));
                    }
                }
                (mt, ix.subject.as_ref().map(|s| s.digest.clone()))
            }
        };
        let io = |e: &dyn std::fmt::Display| PutManifestError::Io(e.to_string());
        // The blob, then the revision naming it, then the tags naming the
        // revision: each visible only once what it names is.
        if !self.blob_anywhere(&digest) {
            self.backend.blob_put(&digest, bytes).map_err(|e| io(&e))?;
        } else {
            self.backend.blob_refresh(&digest);
        }
        self.backend
            .put(&self.revision(name, &digest), media_type.as_bytes())
            .map_err(|e| io(&e))?;
        if let Some(s) = &subject {
            let link = format!(
                "{}/_referrers/{}/{}",
                self.repo(name),
                s.hex(),
                digest.hex()
            );
            self.backend.touch(&link).map_err(|e| io(&e))?;
        }
        let tags = extra_tags
            .iter()
            .map(String::as_str)
            .chain((!reference.contains(':')).then_some(reference));
        for tag in tags {
            self.backend
                .put(&self.tag_path(name, tag), digest.to_string().as_bytes())
                .map_err(|e| io(&e))?;
        }
        Ok((digest, subject))
    }

    /// Deletes a manifest by digest (and every tag pointing at it) or a tag.
    /// False when there was nothing to delete.
    pub fn delete_manifest(&self, name: &str, reference: &str) -> io::Result<bool> {
        if !reference.contains(':') {
            if !valid_tag(reference) {
                return Ok(false);
            }
            return self.backend.delete(&self.tag_path(name, reference));
        }
        let Ok(d) = reference.parse::<Digest>() else {
            return Ok(false);
        };
        let rev = self.revision(name, &d);
        if !self.exists(&rev) {
            return Ok(false);
        }
        for t in self.tags(name) {
            if self.tag_digest(name, &t).as_ref() == Some(&d) {
                let _ = self.backend.delete(&self.tag_path(name, &t));
            }
        }
        // Drop it from its subject's referrers.
        if let Ok(bytes) = self.backend.blob_get(&d)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(s) = v["subject"]["digest"].as_str()
            && let Ok(s) = s.parse::<Digest>()
        {
            let _ = self.backend.delete(&format!(
                "{}/_referrers/{}/{}",
                self.repo(name),
                s.hex(),
                d.hex()
            ));
        }
        self.backend.delete(&rev)?;
        Ok(true)
    }

    /// When `tag` was last pushed.
    pub fn tag_pushed(&self, name: &str, tag: &str) -> Option<SystemTime> {
        if !valid_tag(tag) {
            return None;
        }
        self.backend.modified(&self.tag_path(name, tag)).ok()?
    }

    fn tag_digest(&self, name: &str, tag: &str) -> Option<Digest> {
        String::from_utf8(self.backend.get(&self.tag_path(name, tag)).ok()??)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The repository's tags, sorted.
    pub fn tags(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .backend
            .list(&format!("{}/_manifests/tags", self.repo(name)))
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| e.name)
            .filter(|t| valid_tag(t))
            .collect();
        v.sort();
        v
    }

    /// Every repository name, sorted.
    pub fn catalog(&self) -> Vec<String> {
        let mut out = self.repos_where(&["_manifests"]);
        out.sort();
        out
    }

    /// The repositories (named by their path under `repos/`) with one of
    /// `marks` among their entries; entries named `_…` are the repositories'
    /// own, the others are deeper names. One listing per level.
    fn repos_where(&self, marks: &[&str]) -> Vec<String> {
        fn walk(s: &Storage, dir: &str, prefix: &str, marks: &[&str], out: &mut Vec<String>) {
            let entries = s.backend.list(dir).unwrap_or_default();
            if !prefix.is_empty()
                && entries
                    .iter()
                    .any(|e| e.is_dir && marks.contains(&e.name.as_str()))
            {
                out.push(prefix.to_string());
            }
            for e in entries {
                if e.name.starts_with('_') || !e.is_dir {
                    continue;
                }
                let full = if prefix.is_empty() {
                    e.name.clone()
                } else {
                    format!("{prefix}/{}", e.name)
                };
                walk(s, &format!("{dir}/{}", e.name), &full, marks, out);
            }
        }
        let mut out = Vec::new();
        walk(self, "repos", "", marks, &mut out);
        out
    }

    /// Descriptors of the manifests whose subject is `subject`.
    pub fn referrers(&self, name: &str, subject: &Digest) -> Vec<Descriptor> {
        let dir = format!("{}/_referrers/{}", self.repo(name), subject.hex());
        let mut out = Vec::new();
        for e in self.backend.list(&dir).unwrap_or_default() {
            let Some(d) = digest_from_hex(&e.name) else {
                continue;
            };
            let Some(m) = self.manifest(name, &d.to_string()) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
            let mut desc = Descriptor::new(&m.media_type, d, m.bytes.len() as u64);
            desc.artifact_type = v["artifactType"]
                .as_str()
                .or_else(|| v["config"]["mediaType"].as_str())
                .map(str::to_string);
            desc.annotations = serde_json::from_value(v["annotations"].clone()).ok();
            out.push(desc);
        }
        out.sort_by_key(|a| a.digest.to_string());
        out
    }

    /// Mark and sweep: deletes blobs no manifest references (and manifests of
    /// no repository), unless they or a link to them are younger than
    /// `grace` — so blobs of a push whose manifest is still on its way
    /// survive, with other replicas serving the same storage; removes
    /// uploads idle for longer than `upload_expiry`.
    pub fn gc(
        &self,
        grace: Duration,
        upload_expiry: Duration,
        dry_run: bool,
    ) -> io::Result<GcReport> {
        let mut report = GcReport::default();
        let mut marked: BTreeSet<String> = BTreeSet::new();
        let mut young_links: BTreeSet<String> = BTreeSet::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let young = |t: SystemTime| t.elapsed().unwrap_or_default() < grace;
        let repos = self.repos_where(&["_manifests", "_layers"]);
        for repo in &repos {
            let revs = format!("{}/_manifests/revisions", self.repo(repo));
            for e in self.backend.list(&revs)? {
                marked.insert(e.name.clone());
                let Some(d) = digest_from_hex(&e.name) else {
                    continue;
                };
                let Ok(bytes) = self.backend.blob_get(&d) else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                for d in v["config"]["digest"]
                    .as_str()
                    .into_iter()
                    .chain(
                        v["layers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|l| l["digest"].as_str()),
                    )
                    .chain(
                        v["manifests"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|l| l["digest"].as_str()),
                    )
                {
                    if let Some((_, h)) = d.split_once(':') {
                        marked.insert(h.to_string());
                    }
                }
            }
            for e in self.backend.list(&format!("{}/_layers", self.repo(repo)))? {
                if young(e.modified) {
                    young_links.insert(e.name.clone());
                }
                links.push((repo.clone(), e.name));
            }
        }
        let mut present: HashSet<String> = HashSet::new();
        for b in self.backend.blobs()? {
            let h = b.digest.hex().to_string();
            if marked.contains(&h) {
                report.kept_in_use += 1;
                present.insert(h);
                continue;
            }
            if young(b.modified) || young_links.contains(&h) {
                report.kept_young += 1;
                present.insert(h);
                continue;
            }
            report.blobs_removed += 1;
            report.bytes_freed += b.size;
            if !dry_run {
                self.backend.blob_delete(&b.digest)?;
            } else {
                present.insert(h);
            }
        }
        if !dry_run {
            // Links to blobs that are gone.
            for (repo, h) in links {
                if !present.contains(&h) && !young_links.contains(&h) {
                    let _ = self
                        .backend
                        .delete(&format!("{}/_layers/{h}", self.repo(&repo)));
                }
            }
            report.uploads_removed = self.expire_uploads(upload_expiry);
        }
        Ok(report)
    }
}

/// The digest a link file is named for (its hex; the algorithm by its length).
fn digest_from_hex(hex: &str) -> Option<Digest> {
    let alg = match hex.len() {
        64 => "sha256",
        128 => "sha512",
        _ => return None,
    };
    format!("{alg}:{hex}").parse().ok()
}

/// Upload ids are the UUIDs [`Storage::new_upload`] makes.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "library/busybox", "a.b/c_d/e__f/g-h/i---j", "0/1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a/.b", "a___b", "a-", "a/_b", "a b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(
            valid_tag("latest") && valid_tag("_x.1-2") && !valid_tag(".x") && !valid_tag("a/b")
        );
    }

    #[test]
    fn manifests_need_their_blobs_and_tags_follow() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::open(t.path()).unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = Digest::sha256_of(config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let err = s
            .put_manifest("a/b", "v1", None, manifest.as_bytes(), &[])
            .unwrap_err();
        assert!(matches!(err, PutManifestError::BlobUnknown(d) if d == cd));
        let up = s.new_upload("a/b").unwrap();
        append(&s, &up, config);
        let wrong = Digest::sha256_of(b"x");
        assert!(matches!(
            s.commit_upload("a/b", &up, &wrong, None),
            Err(CommitError::Mismatch { .. })
        ));
        assert!(
            !s.blob_anywhere(&wrong) && s.upload_size(&up).unwrap().is_none(),
            "a bad upload leaves nothing"
        );
        s.end_upload(&up);
        let up = s.new_upload("a/b").unwrap();
        assert_eq!(s.upload_repo(&up).as_deref(), Some("a/b"));
        append(&s, &up, &config[..10]);
        append(&s, &up, &config[10..]);
        s.commit_upload("a/b", &up, &cd, None).unwrap();
        s.end_upload(&up);
        let (md, _) = s
            .put_manifest("a/b", "v1", None, manifest.as_bytes(), &[])
            .unwrap();
        assert_eq!(s.manifest("a/b", "v1").unwrap().digest, md);
        assert_eq!(s.tags("a/b"), vec!["v1"]);
        assert_eq!(s.catalog(), vec!["a/b"]);
        assert!(s.blob("other", &cd).is_none(), "blobs are per repository");
        assert!(s.delete_manifest("a/b", &md.to_string()).unwrap());
        assert!(s.tags("a/b").is_empty() && s.manifest("a/b", "v1").is_none());
        let r = s
            .gc(Duration::ZERO, Duration::from_secs(3600), false)
            .unwrap();
        assert_eq!(r.blobs_removed, 2, "{r:?}");
        assert!(!s.blob_anywhere(&cd));
        assert!(s.upload_repo(&up).is_none(), "the session ended");
    }

    fn append(s: &Storage, id: &str, data: &[u8]) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Bytes::copy_from_slice(data)).unwrap();
        drop(tx);
        s.upload_append(id, &mut rx, &mut None).unwrap();
    }
}
