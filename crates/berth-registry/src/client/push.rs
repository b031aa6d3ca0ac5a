//! `push`: every blob the registry lacks (checked with `HEAD`, mounted from
//! another repository of the same registry when berth knows one that has it,
//! else uploaded whole or in chunks) on `max_concurrent` threads, then the
//! manifest — exactly the bytes in the store, so the digest the registry
//! reports is the one berth already knows.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

use berth_store::Store;
use berth_store::image::Image;
use berth_types::image::{Descriptor, Manifest};
use berth_types::{Digest, Reference};
use ureq::http::Method;

use super::{Error, ErrorKind, Progress, Registry, Result, response_error, scope, sources};

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// The tag pushed.
    pub tag: String,
}

fn push_denied(target: &Reference, e: Error) -> Error {
    match e.kind {
        ErrorKind::Unauthorized => {
            Error::new(e.kind, "unauthorized: authentication required".to_string())
        }
        ErrorKind::Denied => Error::new(
            e.kind,
            format!(
                "push to {}: denied: requested access to the resource is denied",
                target.familiar_name()
            ),
        ),
        _ => e,
    }
}

/// Counts bytes read into the progress report.
struct Counting<'a, R> {
    inner: R,
    id: &'a Digest,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(self.id, n as u64);
        Ok(n)
    }
}

/// Pushes `image` as `target` (tag defaults to `latest`). A multi-platform
/// image whose index has all its platforms in the store goes whole: each
/// platform's blobs and manifest (by digest), then the index under the tag.
/// One with only some platforms here (a pull of one platform) goes as the
/// image it runs as, as docker's classic store pushes it.
pub fn push(
    store: &Store,
    reg: &Registry,
    image: &Image,
    target: &Reference,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let repo = target.path().to_string();
    let scopes = vec![scope(&repo, "pull,push")];
    let tag = target.tag().unwrap_or("latest").to_string();
    progress.message(&format!(
        "The push refers to repository [{}]",
        target.name()
    ));
    let top = match store.complete_index(image) {
        Some((top, children)) => {
            for child in &children {
                // The manifest's bytes, read (and verified) once: parsed for
                // its blobs, sent as they are.
                let bytes = store
                    .content
                    .read(&child.digest)
                    .map_err(|e| Error::other(e.to_string()))?;
                let manifest =
                    match berth_types::AnyManifest::parse(&bytes, Some(&child.media_type)) {
                        Ok(berth_types::AnyManifest::Image(m)) => *m,
                        Ok(_) => {
                            return Err(Error::other(format!(
                                "manifest {} of the index is not an image's",
                                child.digest
                            )));
                        }
                        Err(e) => {
                            return Err(Error::other(format!("manifest {}: {e}", child.digest)));
                        }
                    };
                push_blobs(store, reg, (&repo, &scopes), &manifest, progress)
                    .map_err(|e| push_denied(target, e))?;
                reg.put_manifest(
                    &repo,
                    &child.digest.to_string(),
                    &child.media_type,
                    &bytes,
                    &scopes,
                )
                .map_err(|e| push_denied(target, e))?;
            }
            top
        }
        None => {
            push_blobs(store, reg, (&repo, &scopes), &image.manifest, progress)
                .map_err(|e| push_denied(target, e))?;
            image.manifest_desc.clone()
        }
    };
    let top_bytes = store
        .content
        .read(&top.digest)
        .map_err(|e| Error::other(e.to_string()))?;
    let digest = reg
        .put_manifest(&repo, &tag, &top.media_type, &top_bytes, &scopes)
        .map_err(|e| push_denied(target, e))?;
    let named = target
        .with_tag(&tag)
        .map_err(|e| Error::other(e.to_string()))?;
    let _ = store.add_name(
        &top,
        Some(&named),
        Some(&target.with_digest(digest.clone())),
    );
    Ok(Pushed {
        digest,
        size: top_bytes.len() as u64,
        tag,
    })
}

/// Pushes a manifest whose config and layers are in the store (an
/// artifact such as a build cache, not necessarily an image) as `target`:
/// its blobs the registry lacks, then the manifest under the tag. The
/// registry's digest of it.
pub fn push_manifest(
    store: &Store,
    reg: &Registry,
    target: &Reference,
    manifest: &Manifest,
    bytes: &[u8],
    progress: &dyn Progress,
) -> Result<Digest> {
    let repo = target.path().to_string();
    let scopes = vec![scope(&repo, "pull,push")];
    let tag = target.tag().unwrap_or("latest").to_string();
    push_blobs(store, reg, (&repo, &scopes), manifest, progress)
        .map_err(|e| push_denied(target, e))?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| berth_types::image::media_types::OCI_MANIFEST.to_string());
    reg.put_manifest(&repo, &tag, &media_type, bytes, &scopes)
        .map_err(|e| push_denied(target, e))
}

/// Every blob of `manifest` the registry lacks (layers top first, as docker
/// lists them, the config last) on `max_concurrent` threads; the blobs are
/// recorded as now being in `repo`, for later mounts.
fn push_blobs(
    store: &Store,
    reg: &Registry,
    (repo, scopes): (&str, &[String]),
    manifest: &Manifest,
    progress: &dyn Progress,
) -> Result<()> {
    let mut blobs: Vec<Descriptor> = manifest.layers.clone();
    blobs.retain(|l| l.urls.as_ref().is_none_or(|u| u.is_empty())); // foreign layers stay where they are
    blobs.reverse();
    for l in &blobs {
        progress.start(&l.digest, l.size, "Preparing");
    }
    blobs.push(manifest.config.clone());
    let queue = Mutex::new(blobs.iter());
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..reg.opts.max_concurrent.max(1) {
            s.spawn(|| {
                loop {
                    if !errors.lock().expect("errors").is_empty() {
                        break;
                    }
                    let next = queue.lock().expect("queue").next();
                    let Some(d) = next else { break };
                    let is_config = d.digest == manifest.config.digest;
                    let p: &dyn Progress = if is_config { &super::Quiet } else { progress };
                    if let Err(e) = push_blob(store, reg, repo, scopes, d, p) {
                        errors.lock().expect("errors").push(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().expect("errors").into_iter().next() {
        return Err(e);
    }
    sources::record(
        store.root(),
        &reg.domain,
        repo,
        manifest
            .layers
            .iter()
            .map(|l| &l.digest)
            .chain(std::iter::once(&manifest.config.digest)),
    );
    Ok(())
}

fn with_digest(loc: &str, d: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!(
        "{loc}{sep}digest={}",
        form_urlencoded::byte_serialize(d.to_string().as_bytes()).collect::<String>()
    )
}

fn push_blob(
    store: &Store,
    reg: &Registry,
    repo: &str,
    scopes: &[String],
    d: &Descriptor,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(location) = upload_location(store, reg, repo, scopes, d, progress)? else {
        return Ok(());
    };
    let path = store.content.path(&d.digest);
    let size = std::fs::metadata(&path)
        .map_err(|e| Error::other(format!("blob {} is missing from the store: {e}", d.digest)))?
        .len();
    progress.start(&d.digest, size, "Pushing");
    let upload = Upload {
        reg,
        scopes,
        d,
        path: &path,
        size,
        progress,
    };
    match reg.opts.chunk_size.filter(|c| *c > 0 && *c < size) {
        None => upload.whole(&location)?,
        Some(chunk) => upload.chunks(location, chunk)?,
    }
    progress.done(&d.digest, "Pushed");
    Ok(())
}

/// Where `d` is to be uploaded: `None` when the registry has it already or
/// mounted it from another repository that has it (the ones this store
/// pulled it from), else the upload's location.
fn upload_location(
    store: &Store,
    reg: &Registry,
    repo: &str,
    scopes: &[String],
    d: &Descriptor,
    progress: &dyn Progress,
) -> Result<Option<String>> {
    let blob_url = reg.url(&format!("{repo}/blobs/{}", d.digest));
    let r = reg.send(Method::HEAD, &blob_url, scopes, &[], None)?;
    if r.status() == 200 {
        progress.done(&d.digest, "Layer already exists");
        return Ok(None);
    }
    // Mount from a repository that has it.
    let mut location = None;
    for src in sources::lookup(store.root(), &reg.domain, &d.digest, repo) {
        let mut sc = scopes.to_vec();
        sc.push(scope(&src, "pull"));
        let url = reg.url(&format!(
            "{repo}/blobs/uploads/?mount={}&from={}",
            d.digest,
            form_urlencoded::byte_serialize(src.as_bytes()).collect::<String>()
        ));
        let mut empty = || -> Result<(Box<dyn Read + Send>, Option<u64>)> {
            Ok((Box::new(std::io::empty()), Some(0)))
        };
        let r = reg.send(Method::POST, &url, &sc, &[], Some(&mut empty))?;
        match r.status().as_u16() {
            201 => {
                progress.done(&d.digest, &format!("Mounted from {src}"));
                return Ok(None);
            }
            202 => {
                location = r
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(|l| reg.location(l));
                break;
            }
            _ => {}
        }
    }
    Ok(Some(match location {
        Some(l) => l,
        None => {
            let url = reg.url(&format!("{repo}/blobs/uploads/"));
            let mut empty = || -> Result<(Box<dyn Read + Send>, Option<u64>)> {
                Ok((Box::new(std::io::empty()), Some(0)))
            };
            let mut r = reg.send(Method::POST, &url, scopes, &[], Some(&mut empty))?;
            if r.status() != 202 {
                return Err(response_error(
                    &mut r,
                    &format!("starting the upload of {}", d.digest),
                ));
            }
            reg.location(
                r.headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        Error::other("the registry started an upload without a Location")
                    })?,
            )
        }
    }))
}

/// One blob's upload to its location, whole or in chunks.
struct Upload<'u> {
    reg: &'u Registry,
    scopes: &'u [String],
    d: &'u Descriptor,
    path: &'u std::path::Path,
    size: u64,
    progress: &'u dyn Progress,
}

impl Upload<'_> {
    /// One PUT with the whole blob.
    fn whole(&self, location: &str) -> Result<()> {
        let (reg, scopes, d, path, size, progress) = (
            self.reg,
            self.scopes,
            self.d,
            self.path,
            self.size,
            self.progress,
        );
        let ct = ("content-type", "application/octet-stream".to_string());
        let mut body = || -> Result<(Box<dyn Read + Send + '_>, Option<u64>)> {
            progress.reset(&d.digest, 0);
            let f = std::fs::File::open(path)
                .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
            Ok((
                Box::new(Counting {
                    inner: f,
                    id: &d.digest,
                    progress,
                }),
                Some(size),
            ))
        };
        let mut r = reg.send(
            Method::PUT,
            &with_digest(location, &d.digest),
            scopes,
            &[ct],
            Some(&mut body),
        )?;
        if r.status() != 201 {
            return Err(response_error(&mut r, &format!("uploading {}", d.digest)));
        }
        Ok(())
    }

    /// PATCHes of `chunk` bytes, then the closing PUT.
    fn chunks(&self, location: String, chunk: u64) -> Result<()> {
        let (reg, scopes, d, path, size, progress) = (
            self.reg,
            self.scopes,
            self.d,
            self.path,
            self.size,
            self.progress,
        );
        let ct = ("content-type", "application/octet-stream".to_string());
        let mut loc = location;
        let mut off = 0u64;
        while off < size {
            let n = chunk.min(size - off);
            let start = off;
            let mut body = || -> Result<(Box<dyn Read + Send + '_>, Option<u64>)> {
                let mut f = std::fs::File::open(path)
                    .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
                f.seek(SeekFrom::Start(start))
                    .map_err(|e| Error::other(e.to_string()))?;
                Ok((
                    Box::new(Counting {
                        inner: f.take(n),
                        id: &d.digest,
                        progress,
                    }),
                    Some(n),
                ))
            };
            let headers = [
                ct.clone(),
                ("content-range", format!("{start}-{}", start + n - 1)),
            ];
            let mut r = reg.send(Method::PATCH, &loc, scopes, &headers, Some(&mut body))?;
            if r.status() != 202 {
                return Err(response_error(
                    &mut r,
                    &format!("uploading {} (bytes {start}-{})", d.digest, start + n - 1),
                ));
            }
            if let Some(l) = r.headers().get("location").and_then(|v| v.to_str().ok()) {
                loc = reg.location(l);
            }
            off += n;
        }
        let mut empty = || -> Result<(Box<dyn Read + Send>, Option<u64>)> {
            Ok((Box::new(std::io::empty()), Some(0)))
        };
        let mut r = reg.send(
            Method::PUT,
            &with_digest(&loc, &d.digest),
            scopes,
            &[],
            Some(&mut empty),
        )?;
        if r.status() != 201 {
            return Err(response_error(
                &mut r,
                &format!("finishing the upload of {}", d.digest),
            ));
        }
        Ok(())
    }
}
