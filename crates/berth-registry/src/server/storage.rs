//! The registry's storage on local disk.
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
//! A blob becomes visible only by an atomic rename after its digest was checked,
//! and a link is created only after its blob exists; tags and links are written
//! with temp file + rename. So a crash at any point leaves at worst an upload
//! file that expires, never a partial blob or a dangling tag. Repository names
//! and digests are validated before they reach a path, so no request can name a
//! file outside the storage.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_fs::atomic_write;
use berth_store::content::{ContentError, ContentStore};
use berth_types::Digest;
use berth_types::image::{AnyManifest, Descriptor};

/// The storage.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    content: ContentStore,
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

fn touch(p: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)?;
    f.set_modified(SystemTime::now())
}

impl Storage {
    /// Opens (creating) the storage.
    pub fn open(root: &Path) -> io::Result<Storage> {
        fs::create_dir_all(root.join("repos"))?;
        fs::create_dir_all(root.join("uploads"))?;
        let content = ContentStore::open_at(root).map_err(io::Error::other)?;
        Ok(Storage {
            root: root.to_path_buf(),
            content,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn repo(&self, name: &str) -> PathBuf {
        debug_assert!(valid_name(name));
        self.root.join("repos").join(name)
    }

    fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name).join("_layers").join(d.hex())
    }

    fn revision(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name).join("_manifests/revisions").join(d.hex())
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.repo(name).join("_manifests/tags").join(tag)
    }

    /// Whether the repository has any content.
    pub fn repo_exists(&self, name: &str) -> bool {
        let r = self.repo(name);
        r.join("_layers").is_dir() || r.join("_manifests").is_dir()
    }

    /// The blob's path and size when the repository may serve it.
    pub fn blob(&self, name: &str, d: &Digest) -> Option<(PathBuf, u64)> {
        if !self.layer_link(name, d).exists() && !self.revision(name, d).exists() {
            return None;
        }
        let p = self.content.path(d);
        let size = fs::metadata(&p).ok()?.len();
        Some((p, size))
    }

    /// Whether the blob exists anywhere (for mounts without `from`).
    pub fn blob_anywhere(&self, d: &Digest) -> bool {
        self.content.exists(d)
    }

    /// Links an existing blob into a repository.
    pub fn link_blob(&self, name: &str, d: &Digest) -> io::Result<()> {
        let p = self.layer_link(name, d);
        fs::create_dir_all(p.parent().expect("link parent"))?;
        // Refresh the blob's time so a GC grace period covers fresh links.
        let _ = touch(&self.content.path(d));
        touch(&p)
    }

    /// Unlinks a blob from a repository; false when it was not linked.
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.layer_link(name, d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Commits a finished upload file as a blob of `name`, checking its digest.
    pub fn commit_upload(
        &self,
        name: &str,
        file: &Path,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<(), ContentError> {
        self.content.commit_file(file, expected, hashed)?;
        self.link_blob(name, expected).map_err(|e| {
            ContentError::Io(berth_fs::PathError {
                op: "link",
                path: self.layer_link(name, expected),
                source: e,
            })
        })
    }

    /// Where upload `id`'s data goes.
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
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
        fs::File::create(self.upload_path(&id))?;
        atomic_write(
            &self.root.join("uploads").join(format!("{id}.json")),
            serde_json::json!({ "name": name, "started": jiff::Timestamp::now().to_string() })
                .to_string()
                .as_bytes(),
        )
        .map_err(io::Error::other)?;
        Ok(id)
    }

    /// The repository an upload belongs to, if the session exists.
    pub fn upload_repo(&self, id: &str) -> Option<String> {
        if !valid_upload_id(id) || !self.upload_path(id).is_file() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(
            &fs::read(self.root.join("uploads").join(format!("{id}.json"))).ok()?,
        )
        .ok()?;
        v["name"].as_str().map(str::to_string)
    }

    /// Ends an upload session (its data file is gone or is removed now).
    pub fn end_upload(&self, id: &str) {
        let _ = fs::remove_file(self.upload_path(id));
        let _ = fs::remove_file(self.root.join("uploads").join(format!("{id}.json")));
    }

    /// Removes upload sessions untouched for longer than `max_age`.
    pub fn expire_uploads(&self, max_age: Duration) -> u64 {
        let mut n = 0;
        let Ok(rd) = fs::read_dir(self.root.join("uploads")) else {
            return 0;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json").unwrap_or(&name).to_string();
            let data = self.upload_path(&id);
            let age = fs::metadata(&data)
                .or_else(|_| e.metadata())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age > max_age {
                self.end_upload(&id);
                if !name.ends_with(".json") {
                    n += 1;
                }
            }
        }
        n
    }

    /// Resolves a tag or digest reference to a stored manifest.
    pub fn manifest(&self, name: &str, reference: &str) -> Option<StoredManifest> {
        let digest: Digest = if reference.contains(':') {
            reference.parse().ok()?
        } else {
            fs::read_to_string(self.tag_path(name, reference))
                .ok()?
                .trim()
                .parse()
                .ok()?
        };
        let media_type = fs::read_to_string(self.revision(name, &digest)).ok()?;
        let bytes = self.content.read(&digest).ok()?;
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
                    if !self.revision(name, &d.digest).exists() {
                        return Err(PutManifestError::BlobUnknown(d.digest.clone()));
                    }
                }
                (mt, ix.subject.as_ref().map(|s| s.digest.clone()))
            }
        };
        let io = |e: &dyn std::fmt::Display| PutManifestError::Io(e.to_string());
        self.content.put(bytes, Some(&digest)).map_err(|e| io(&e))?;
        let rev = self.revision(name, &digest);
        fs::create_dir_all(rev.parent().expect("revision parent")).map_err(|e| io(&e))?;
        atomic_write(&rev, media_type.as_bytes()).map_err(|e| io(&e))?;
        let _ = touch(&self.content.path(&digest));
        if let Some(s) = &subject {
            let link = self
                .repo(name)
                .join("_referrers")
                .join(s.hex())
                .join(digest.hex());
            fs::create_dir_all(link.parent().expect("referrer parent")).map_err(|e| io(&e))?;
            touch(&link).map_err(|e| io(&e))?;
        }
        let tags = extra_tags
            .iter()
            .map(String::as_str)
            .chain((!reference.contains(':')).then_some(reference));
        for tag in tags {
            let tp = self.tag_path(name, tag);
            fs::create_dir_all(tp.parent().expect("tags dir")).map_err(|e| io(&e))?;
            atomic_write(&tp, digest.to_string().as_bytes()).map_err(|e| io(&e))?;
        }
        Ok((digest, subject))
    }

    /// Deletes a manifest by digest (and every tag pointing at it) or a tag.
    /// False when there was nothing to delete.
    pub fn delete_manifest(&self, name: &str, reference: &str) -> io::Result<bool> {
        if !reference.contains(':') {
            return match fs::remove_file(self.tag_path(name, reference)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            };
        }
        let Ok(d) = reference.parse::<Digest>() else {
            return Ok(false);
        };
        let rev = self.revision(name, &d);
        if !rev.exists() {
            return Ok(false);
        }
        for t in self.tags(name) {
            if self.tag_digest(name, &t).as_ref() == Some(&d) {
                let _ = fs::remove_file(self.tag_path(name, &t));
            }
        }
        // Drop it from its subject's referrers.
        if let Ok(bytes) = self.content.read(&d)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(s) = v["subject"]["digest"].as_str()
            && let Ok(s) = s.parse::<Digest>()
        {
            let _ = fs::remove_file(
                self.repo(name)
                    .join("_referrers")
                    .join(s.hex())
                    .join(d.hex()),
            );
        }
        fs::remove_file(rev)?;
        Ok(true)
    }

    /// When `tag` was last pushed (its link's modification time).
    pub fn tag_pushed(&self, name: &str, tag: &str) -> Option<SystemTime> {
        fs::metadata(self.tag_path(name, tag))
            .and_then(|m| m.modified())
            .ok()
    }

    fn tag_digest(&self, name: &str, tag: &str) -> Option<Digest> {
        fs::read_to_string(self.tag_path(name, tag))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The repository's tags, sorted.
    pub fn tags(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.repo(name).join("_manifests/tags"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|t| valid_tag(t))
            .collect();
        v.sort();
        v
    }

    /// Every repository name, sorted.
    pub fn catalog(&self) -> Vec<String> {
        let mut out = self.repos_where(|p| p.join("_manifests/revisions").is_dir());
        out.sort();
        out
    }

    /// The repository directories (named by their path under `repos/`) that
    /// `is_repo` accepts; directories named `_…` are the repositories' own.
    fn repos_where(&self, is_repo: impl Fn(&Path) -> bool) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, is_repo: &dyn Fn(&Path) -> bool, out: &mut Vec<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('_') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let full = if prefix.is_empty() {
                    n
                } else {
                    format!("{prefix}/{n}")
                };
                let p = e.path();
                if is_repo(&p) {
                    out.push(full.clone());
                }
                walk(&p, &full, is_repo, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join("repos"), "", &is_repo, &mut out);
        out
    }

    /// Descriptors of the manifests whose subject is `subject`.
    pub fn referrers(&self, name: &str, subject: &Digest) -> Vec<Descriptor> {
        let dir = self.repo(name).join("_referrers").join(subject.hex());
        let mut out = Vec::new();
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let Some(d) = digest_from_hex(&e.file_name().to_string_lossy()) else {
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
    /// no repository), if older than `grace` so uploads whose manifest is still
    /// on its way survive; removes uploads idle for longer than `upload_expiry`.
    pub fn gc(
        &self,
        grace: Duration,
        upload_expiry: Duration,
        dry_run: bool,
    ) -> io::Result<GcReport> {
        let mut report = GcReport::default();
        let mut marked: BTreeSet<String> = BTreeSet::new();
        for repo in self.all_repos() {
            let revs = self.repo(&repo).join("_manifests/revisions");
            for e in fs::read_dir(&revs).into_iter().flatten().flatten() {
                let hexname = e.file_name().to_string_lossy().into_owned();
                marked.insert(hexname.clone());
                let Some(d) = digest_from_hex(&hexname) else {
                    continue;
                };
                let Ok(bytes) = self.content.read(&d) else {
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
        }
        for d in self.content.list().map_err(io::Error::other)? {
            if marked.contains(d.hex()) {
                report.kept_in_use += 1;
                continue;
            }
            let p = self.content.path(&d);
            let Ok(meta) = fs::metadata(&p) else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age < grace {
                report.kept_young += 1;
                continue;
            }
            report.blobs_removed += 1;
            report.bytes_freed += meta.len();
            if !dry_run {
                fs::remove_file(&p)?;
            }
        }
        if !dry_run {
            // Links to blobs that are gone.
            for repo in self.all_repos() {
                for e in fs::read_dir(self.repo(&repo).join("_layers"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let h = e.file_name().to_string_lossy().into_owned();
                    if !digest_from_hex(&h).is_some_and(|d| self.content.exists(&d)) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            report.uploads_removed = self.expire_uploads(upload_expiry);
        }
        Ok(report)
    }

    fn all_repos(&self) -> Vec<String> {
        self.repos_where(|p| p.join("_manifests").is_dir() || p.join("_layers").is_dir())
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
        fs::write(s.upload_path(&up), config).unwrap();
        let wrong = Digest::sha256_of(b"x");
        assert!(
            s.commit_upload("a/b", &s.upload_path(&up), &wrong, None)
                .is_err()
        );
        assert!(
            !s.content.exists(&wrong) && !s.upload_path(&up).exists(),
            "a bad upload leaves nothing"
        );
        fs::write(s.upload_path(&up), config).unwrap();
        s.commit_upload("a/b", &s.upload_path(&up), &cd, None)
            .unwrap();
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
        assert!(!s.content.exists(&cd));
    }
}
