//! `pull`: manifest (index → the platform's manifest), config, then layers on
//! `max_concurrent` threads, each streamed into the content store and verified
//! against its digest as it arrives, resumed with a `Range` request when the
//! connection drops. Layers are unpacked in order as soon as they and the ones
//! below them are in, while later ones still download. The image gets its name
//! only once everything is stored, so a failed pull leaves no half image.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use berth_store::Store;
use berth_store::content::{ContentError, Writer};
use berth_store::snapshot::Extracted;
use berth_types::image::{
    AnyManifest, Descriptor, ImageConfig, Manifest as ImageManifest, Platform, media_types,
};
use berth_types::{Digest, Reference};

use super::{Error, ErrorKind, Progress, Registry, Result, response_error, scope};

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform to pick from an index.
    pub platform: Platform,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference pulled (with its tag or digest).
    pub reference: Reference,
    /// The digest the registry knows it by (the index's, for multi-arch images).
    pub digest: Digest,
    /// The image id.
    pub id: Digest,
    /// Whether anything new was stored (docker's "Downloaded newer image").
    pub downloaded: bool,
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::other(e.to_string())
}

/// Docker's message for a repository that is missing or private.
pub fn access_denied(r: &Reference, e: &Error) -> Error {
    let denied = |detail: &str| {
        format!(
            "pull access denied for {}, repository does not exist or may require 'berth login': {detail}",
            r.familiar_name()
        )
    };
    match e.kind {
        ErrorKind::Unauthorized => Error::new(
            e.kind.clone(),
            denied("unauthorized: authentication required"),
        ),
        ErrorKind::Denied => Error::new(
            e.kind.clone(),
            denied("denied: requested access to the resource is denied"),
        ),
        ErrorKind::NotFound if e.msg.contains("name_unknown") => Error::new(
            ErrorKind::NotFound,
            denied("name unknown: repository name not known to registry"),
        ),
        ErrorKind::NotFound => Error::new(
            ErrorKind::NotFound,
            format!(
                "manifest for {} not found: manifest unknown: manifest unknown",
                r.familiar()
            ),
        ),
        _ => e.clone(),
    }
}

/// Pulls `r` into `store`.
pub fn pull(
    store: &Store,
    reg: &Registry,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let repo = r.path().to_string();
    let scopes = vec![scope(&repo, "pull")];
    let reference = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let Resolved {
        manifest,
        manifest_bytes,
        manifest_type,
        manifest_digest,
        top_digest,
        index,
    } = resolve_manifest(reg, r, &repo, &scopes, &reference, opts, progress)?;
    let _lock = store.write_lock().map_err(store_err)?;
    // The config.
    let mut downloaded = false;
    if !store.content.exists(&manifest.config.digest) {
        fetch_blob(store, reg, &repo, &scopes, &manifest.config, None, None)?;
        downloaded = true;
    }
    let config_bytes = store
        .content
        .read(&manifest.config.digest)
        .map_err(store_err)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::other(format!("image config {}: {e}", manifest.config.digest)))?;
    let diff_ids = config.rootfs.diff_ids.clone();
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::other(format!(
            "{}: the manifest has {} layers but its config lists {} diff ids",
            r.familiar(),
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    downloaded |= fetch_layers(store, reg, (&repo, &scopes), &manifest, &diff_ids, progress)?;
    // The manifest last, then the name.
    store
        .content
        .put(&manifest_bytes, Some(&manifest_digest))
        .map_err(store_err)?;
    let mt = manifest
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            if manifest_type.is_empty() {
                media_types::OCI_MANIFEST.to_string()
            } else {
                manifest_type.clone()
            }
        });
    let mut desc = Descriptor::new(&mt, manifest_digest.clone(), manifest_bytes.len() as u64);
    // Pulled through an index: the name points at the index, which keeps
    // each platform pulled (containerd's image store does the same).
    if let Some((bytes, media_type)) = &index {
        store
            .content
            .put(bytes, Some(&top_digest))
            .map_err(store_err)?;
        desc = Descriptor::new(media_type, top_digest.clone(), bytes.len() as u64);
    }
    let repo_digest = r.with_digest(top_digest.clone());
    let name = if r.digest().is_some() {
        repo_digest.clone()
    } else {
        r.clone().with_default_tag()
    };
    let before = store
        .resolve_platform(&name.to_string(), &opts.platform)
        .ok()
        .map(|i| i.manifest_desc.digest);
    downloaded |= before.as_ref() != Some(&manifest_digest);
    store
        .add_name(&desc, Some(&name), Some(&repo_digest))
        .map_err(store_err)?;
    super::sources::record(
        store.root(),
        &reg.domain,
        &repo,
        manifest.layers.iter().map(|l| &l.digest),
    );
    Ok(Pulled {
        reference: name,
        digest: top_digest,
        id: manifest.config.digest.clone(),
        downloaded,
    })
}

/// What a reference resolved to in the registry.
struct Resolved {
    /// The platform's image manifest.
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_type: String,
    manifest_digest: Digest,
    /// The digest of what the reference named (the index's, for one).
    top_digest: Digest,
    /// The index's bytes and media type, when the reference named one.
    index: Option<(Vec<u8>, String)>,
}

/// The image manifest `r` names (through an index, the entry for
/// `opts.platform`), checked to be an image's.
fn resolve_manifest(
    reg: &Registry,
    r: &Reference,
    repo: &str,
    scopes: &[String],
    reference: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Resolved> {
    let (bytes, ct, top_digest) = reg
        .manifest(repo, reference, scopes)
        .map_err(|e| access_denied(r, &e))?;
    let label = r
        .tag()
        .map(str::to_string)
        .unwrap_or_else(|| reference.to_string());
    progress.message(&format!("{label}: Pulling from {}", r.path()));
    let mut index = None;
    let (manifest_bytes, manifest_type, manifest_digest) =
        match AnyManifest::parse(&bytes, Some(&ct)).map_err(store_err)? {
            AnyManifest::Index(ix) => {
                let d = ix.select(&opts.platform).ok_or_else(|| {
                let have: Vec<String> = ix
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|p| {
                        format!(
                            "{}/{}{}",
                            p.os,
                            p.architecture,
                            p.variant
                                .as_ref()
                                .map(|v| format!("/{v}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no matching manifest for {}/{} in the manifest list entries (it has: {})",
                        opts.platform.os,
                        opts.platform.architecture,
                        have.join(", ")
                    ),
                )
            })?;
                let (b, t, dg) = reg.manifest(repo, &d.digest.to_string(), scopes)?;
                let index_type = match ix.media_type.as_deref() {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ if !ct.is_empty() => ct.clone(),
                    _ => media_types::OCI_INDEX.to_string(),
                };
                index = Some((bytes.clone(), index_type));
                (
                    b,
                    if t.is_empty() {
                        d.media_type.clone()
                    } else {
                        t
                    },
                    dg,
                )
            }
            AnyManifest::Image(_) => (bytes.clone(), ct.clone(), top_digest.clone()),
        };
    let manifest =
        match AnyManifest::parse(&manifest_bytes, Some(&manifest_type)).map_err(store_err)? {
            AnyManifest::Image(m) => *m,
            AnyManifest::Index(_) => {
                return Err(Error::other(format!(
                    "{}: an index inside an index is not supported",
                    r.familiar()
                )));
            }
        };
    for l in &manifest.layers {
        if !media_types::is_layer(&l.media_type)
            && l.media_type != media_types::DOCKER_LAYER_FOREIGN
        {
            return Err(Error::other(format!(
                "{}: layer {} has media type {:?}, which is not an image layer (is this an artifact, not an image?)",
                r.familiar(),
                l.digest,
                l.media_type
            )));
        }
    }
    Ok(Resolved {
        manifest,
        manifest_bytes,
        manifest_type,
        manifest_digest,
        top_digest,
        index,
    })
}

/// The layers of `manifest` that are not in the store, downloaded on a
/// pool of threads (unpacked while they stream in where the driver allows)
/// while this thread unpacks them in order; whether anything was
/// downloaded. The first failure stops the pool and is the answer.
fn fetch_layers(
    store: &Store,
    reg: &Registry,
    (repo, scopes): (&str, &[String]),
    manifest: &ImageManifest,
    diff_ids: &[Digest],
    progress: &dyn Progress,
) -> Result<bool> {
    let blobs: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    let chains = berth_types::chain_ids(diff_ids);
    let mut ready: Vec<bool> = Vec::with_capacity(blobs.len());
    let mut todo: Vec<usize> = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        let have = store.content.exists(&l.digest);
        if have {
            progress.done(&l.digest, "Already exists");
        } else {
            progress.start(&l.digest, l.size, "Waiting");
            todo.push(i);
        }
        ready.push(have);
    }
    let downloaded = !todo.is_empty();
    let queue = Mutex::new(todo.into_iter());
    // Each finished download reports its layer, already extracted when it could
    // be unpacked while it streamed in (overlay driver).
    let (tx, rx) = mpsc::channel::<(usize, Result<Option<Extracted>>)>();
    let mut extracted: Vec<Option<Extracted>> = (0..blobs.len()).map(|_| None).collect();
    let mut first_err: Option<Error> = None;
    std::thread::scope(|s| {
        for _ in 0..reg.opts.max_concurrent.max(1) {
            let tx = tx.clone();
            let queue = &queue;
            let layers = &manifest.layers;
            s.spawn(move || {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some(i) = next else { break };
                    let res = fetch_and_extract(store, reg, repo, scopes, &layers[i], progress);
                    let failed = res.is_err();
                    if tx.send((i, res)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut unpacked = 0;
        let total = blobs.len();
        // Unpack what is already there below the first missing layer.
        while unpacked < total && ready[unpacked] && first_err.is_none() {
            if let Err(e) = store.unpack(&blobs[..=unpacked], &diff_ids[..=unpacked]) {
                first_err = Some(store_err(e));
            }
            unpacked += 1;
        }
        for (i, res) in rx.iter() {
            match res {
                Ok(ex) => {
                    ready[i] = true;
                    extracted[i] = ex;
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                    // Stop handing out work; threads finish their current blob.
                    queue.lock().expect("queue").by_ref().for_each(drop);
                }
            }
            while first_err.is_none() && unpacked < total && ready[unpacked] {
                let done_before = store.snapshots.has_layer(&chains[unpacked]);
                let parent = unpacked.checked_sub(1).map(|p| &chains[p]);
                let res = match extracted[unpacked].take() {
                    Some(ex) if !done_before => store
                        .snapshots
                        .commit_extracted_onto(ex, parent, Some(&diff_ids[unpacked]))
                        .and_then(|chain| store.snapshots.vouch(&chain, &blobs[unpacked]))
                        .map_err(store_err),
                    // Unpacked while it streamed in, and the layer was there
                    // already: what streamed in is checked against it.
                    Some(ex) if ex.diff_id == diff_ids[unpacked] => store
                        .snapshots
                        .vouch(&chains[unpacked], &blobs[unpacked])
                        .map_err(store_err),
                    _ => store
                        .unpack(&blobs[..=unpacked], &diff_ids[..=unpacked])
                        .map(|_| ())
                        .map_err(store_err),
                };
                if let Err(e) = res {
                    first_err = Some(e);
                    queue.lock().expect("queue").by_ref().for_each(drop);
                    break;
                }
                if !done_before {
                    progress.done(&blobs[unpacked], "Pull complete");
                }
                unpacked += 1;
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    store.unpack(&blobs, diff_ids).map_err(store_err)?;
    Ok(downloaded)
}

/// Reads what a download thread sends, as one stream.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0), // the sender is done (or gave up)
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Downloads a layer and, when the snapshotter allows, extracts it on a second
/// thread from the same bytes as they arrive. The extraction is used only if the
/// blob verified and the stream was never restarted; else the caller unpacks
/// from the stored blob.
fn fetch_and_extract(
    store: &Store,
    reg: &Registry,
    repo: &str,
    scopes: &[String],
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<Option<Extracted>> {
    if store.snapshots.driver() != berth_store::snapshot::Driver::Overlay {
        return fetch_blob(store, reg, repo, scopes, desc, Some(progress), None).map(|_| None);
    }
    let (stx, srx) = mpsc::sync_channel::<Vec<u8>>(64);
    std::thread::scope(|s| {
        let extractor = s.spawn(move || -> Option<Extracted> {
            let mut r = ChannelReader {
                rx: srx,
                buf: Vec::new(),
                at: 0,
            };
            let ex = {
                let (_, plain) = berth_store::archive::decompress(&mut r).ok()?;
                store.snapshots.extract_detached(plain).ok()?
            };
            // Drain, so the sender never blocks on a full channel.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            ex
        });
        let res = fetch_blob(store, reg, repo, scopes, desc, Some(progress), Some(stx));
        let ex = extractor.join().ok().flatten();
        match res {
            Ok(true) => Ok(ex),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// Downloads one blob into the store, verifying it, resuming after drops.
/// `tee` gets every byte in order; it is dropped (and false returned) if the
/// stream had to restart from the beginning. An error names the blob's
/// digest as data too ([`Error::digest`]).
pub fn fetch_blob(
    store: &Store,
    reg: &Registry,
    repo: &str,
    scopes: &[String],
    desc: &Descriptor,
    progress: Option<&dyn Progress>,
    tee: Option<mpsc::SyncSender<Vec<u8>>>,
) -> Result<bool> {
    download_blob(store, reg, repo, scopes, desc, progress, tee).map_err(|e| match e.digest {
        Some(_) => e,
        None => e.of(&desc.digest),
    })
}

fn download_blob(
    store: &Store,
    reg: &Registry,
    repo: &str,
    scopes: &[String],
    desc: &Descriptor,
    progress: Option<&dyn Progress>,
    tee: Option<mpsc::SyncSender<Vec<u8>>>,
) -> Result<bool> {
    let url = reg.url(&format!("{repo}/blobs/{}", desc.digest));
    let mut w = store.content.writer().map_err(store_err)?;
    let mut d = Download {
        store,
        desc,
        progress,
        teed_all: tee.is_some(),
        tee,
        attempts: 0,
        retries: reg.opts.retries,
    };
    if let Some(p) = progress {
        p.start(&desc.digest, desc.size, "Downloading");
    }
    loop {
        let have = w.len();
        let mut headers = Vec::new();
        if have > 0 {
            headers.push(("range", format!("bytes={have}-")));
        }
        let mut resp = match reg.get(&url, scopes, &headers) {
            Ok(r) => r,
            Err(e) if d.attempts < d.retries && e.kind == ErrorKind::Transport => {
                d.attempts += 1;
                std::thread::sleep(Duration::from_millis(500 << d.attempts));
                continue;
            }
            Err(e) => return Err(e),
        };
        match resp.status().as_u16() {
            // The server ignored the range: start over.
            200 if have > 0 => w = d.restart()?,
            200 | 206 => {}
            _ => {
                return Err(response_error(
                    &mut resp,
                    &format!("fetching blob {}", desc.digest),
                ));
            }
        }
        if let Some(e) = d.copy_body(&mut w, resp.into_body().into_reader())? {
            d.retry(|n| format!("downloading blob {}: {e} (after {n} attempts)", desc.digest))?;
            if let Some(p) = progress {
                p.reset(&desc.digest, w.len());
            }
            std::thread::sleep(Duration::from_millis(200 << d.attempts.min(5)));
            continue;
        }
        if desc.size > 0 && w.len() < desc.size {
            let got = w.len();
            d.retry(|_| {
                format!(
                    "downloading blob {}: connection closed after {got} of {} bytes",
                    desc.digest, desc.size
                )
            })?;
            continue;
        }
        match d.commit(w)? {
            Some(teed_all) => return Ok(teed_all),
            None => w = d.restart()?,
        }
    }
}

/// One blob's download in progress (see [`fetch_blob`]).
struct Download<'a> {
    store: &'a Store,
    desc: &'a Descriptor,
    progress: Option<&'a dyn Progress>,
    tee: Option<mpsc::SyncSender<Vec<u8>>>,
    teed_all: bool,
    attempts: u32,
    retries: u32,
}

impl Download<'_> {
    /// Starts again from the first byte, without the tee: a new writer.
    fn restart(&mut self) -> Result<Writer> {
        self.tee = None;
        self.teed_all = false;
        if let Some(p) = self.progress {
            p.reset(&self.desc.digest, 0);
        }
        self.store.content.writer().map_err(store_err)
    }

    /// Counts a failed attempt; past the retries, the error `msg` makes of
    /// their number.
    fn retry(&mut self, msg: impl FnOnce(u32) -> String) -> Result<()> {
        self.attempts += 1;
        if self.attempts > self.retries {
            return Err(Error::new(ErrorKind::Transport, msg(self.attempts)));
        }
        Ok(())
    }

    /// Copies a response body to the blob (and the tee), never past the
    /// declared size. Returns the error that cut the stream, if one did.
    fn copy_body(
        &mut self,
        w: &mut Writer,
        mut reader: impl Read,
    ) -> Result<Option<std::io::Error>> {
        let desc = self.desc;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Some(e)),
            };
            if w.len() + n as u64 > desc.size && desc.size > 0 {
                return Err(Error::other(format!(
                    "blob {}: the registry sent more than the {} bytes the manifest declares",
                    desc.digest, desc.size
                )));
            }
            w.write_all(&buf[..n])
                .map_err(|e| Error::other(format!("writing blob {}: {e}", desc.digest)))?;
            if let Some(t) = &self.tee
                && t.send(buf[..n].to_vec()).is_err()
            {
                self.tee = None; // the extractor gave up; unpack from the blob later
                self.teed_all = false;
            }
            if let Some(p) = self.progress {
                p.advance(&desc.digest, n as u64);
            }
        }
    }

    /// Verifies and stores the blob: whether the tee saw all of it, or
    /// `None` to download it again (corrupted in transit: one fresh try).
    fn commit(&mut self, w: Writer) -> Result<Option<bool>> {
        drop(self.tee.take());
        let desc = self.desc;
        match w.commit(Some(&desc.digest), (desc.size > 0).then_some(desc.size)) {
            Ok(_) => Ok(Some(self.teed_all)),
            Err(ContentError::DigestMismatch { expected, actual }) => {
                if self.attempts < self.retries.min(1) {
                    self.attempts += 1;
                    return Ok(None);
                }
                Err(Error::other(format!(
                    "filesystem layer verification failed for digest {expected}: got content with digest {actual}"
                )))
            }
            Err(e) => Err(store_err(e)),
        }
    }
}
