//! The S3 backend: the filesystem layout as object keys in a bucket (AWS S3,
//! MinIO, SeaweedFS, anything speaking the S3 API), so several replicas of
//! `berth registry serve` can share one bucket.
//!
//! ```text
//! <prefix>/blobs/<alg>/<hex>        every blob once (written only verified)
//! <prefix>/repos/…                  links, revisions, tags: the fs layout
//! <prefix>/uploads/<id>.json        an upload session (repository, start)
//! <prefix>/uploads/<id>/state       its multipart upload id, part ETags,
//!                                   bytes received, bytes in the tail
//! <prefix>/uploads/<id>/tail        what came after the last part sent
//! <prefix>/uploads/<id>/object      the multipart upload's object
//! ```
//!
//! **Uploads** are S3 multipart uploads. A request's body is cut into parts
//! of [`PART`] bytes and sent as they fill; what is left at its end, if
//! under S3's 5 MiB minimum for a part that is not the last, is kept as the
//! `tail` object and prepended to the next request's body. So a chunked push
//! may go on through any replica, and nothing of it is held in a replica's
//! memory between requests. The commit sends the tail as the last part and
//! completes the upload as `object`, which is copied server-side to the
//! blob's key only once its digest is checked: from the hash the replica
//! computed as the bytes arrived (the usual case: one replica saw the whole
//! push), else by reading the object back. Either way no blob key ever holds
//! bytes that were not checked against their digest.
//!
//! **Consistency without locks**: every object is written whole by one PUT,
//! which S3 makes visible entirely or not at all (and, since 2020, reads
//! after writes are strongly consistent). Nothing shared is read, modified
//! and written back — a tag is one object naming one digest, a link is one
//! empty object — so two replicas pushing one tag at once leave it naming
//! one of the two manifests, each complete (its blobs were checked before
//! the tag was written). Only an upload's `state` is rewritten, and an
//! upload belongs to one client.
//!
//! **GC** goes by the objects' times as on disk: a blob is kept when a
//! manifest references it, or when it or a link to it is younger than the
//! grace period — and a replica rewrites a blob's link whenever a client
//! links, mounts or checks (HEAD) it, the steps before a manifest that
//! references it arrives.

use std::io::{self, Read};
use std::time::SystemTime;

use axum::body::Body;
use berth_types::Digest;
use berth_types::digest::Hasher;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::s3client::{S3Client, S3Options};
use super::{Backend, BlobEntry, CommitError, Entry};

/// Bytes per part of an upload (S3: at least 5 MiB but for the last,
/// at most 10 000 parts: blobs up to 80 GiB).
pub const PART: usize = 8 << 20;
/// S3's smallest part that is not the last.
pub const MIN_PART: usize = 5 << 20;
/// S3's largest single copy; larger objects are copied in parts.
const MAX_COPY: u64 = 5 << 30;
/// Piece size of a streamed blob response.
const PIECE: usize = 1 << 20;

/// An upload's progress, as stored in `uploads/<id>/state`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct UploadParts {
    /// The S3 multipart upload, once a part was sent.
    multipart: Option<String>,
    /// The ETags of the parts sent, in order.
    etags: Vec<String>,
    /// Bytes received in all (parts and tail).
    size: u64,
    /// Bytes in the tail object.
    tail: u64,
}

/// A bucket (and key prefix) as registry storage.
#[derive(Debug)]
pub struct S3Backend {
    s3: S3Client,
    redirect: bool,
}

fn blob_key(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn state_key(id: &str) -> String {
    format!("uploads/{id}/state")
}

fn tail_key(id: &str) -> String {
    format!("uploads/{id}/tail")
}

fn object_key(id: &str) -> String {
    format!("uploads/{id}/object")
}

impl S3Backend {
    /// A backend over `s3://bucket/prefix`, checked by listing the bucket.
    pub fn open(url: &str, opts: &S3Options) -> io::Result<S3Backend> {
        let s3 = S3Client::new(url, opts).map_err(io::Error::other)?;
        // Fail at startup, not at the first push, on a wrong endpoint,
        // bucket or key.
        s3.list("repos/", true)?;
        Ok(S3Backend {
            s3,
            redirect: opts.redirect,
        })
    }

    fn state(&self, id: &str) -> io::Result<Option<UploadParts>> {
        match self.s3.get(&state_key(id))? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io::Error::other(format!("upload {id}: bad state: {e}"))),
            None => Ok(None),
        }
    }

    fn put_state(&self, id: &str, st: &UploadParts) -> io::Result<()> {
        self.s3
            .put(&state_key(id), &serde_json::to_vec(st).expect("state"))
    }

    /// Sends `data` as the upload's next part.
    fn send_part(&self, id: &str, st: &mut UploadParts, data: &[u8]) -> io::Result<()> {
        let key = object_key(id);
        if st.multipart.is_none() {
            st.multipart = Some(self.s3.multipart_start(&key)?);
        }
        let n = u16::try_from(st.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| io::Error::other(format!("upload {id}: more than 10000 parts")))?;
        let etag =
            self.s3
                .multipart_part(&key, st.multipart.as_deref().expect("started"), n, data)?;
        st.etags.push(etag);
        Ok(())
    }

    /// Hashes an object by reading it through.
    fn hash_object(
        &self,
        key: &str,
        size: u64,
        alg: berth_types::digest::Algorithm,
    ) -> io::Result<Digest> {
        let mut h = Hasher::for_algorithm(alg);
        let mut r = self.s3.reader(key, 0, size)?;
        io::copy(&mut r, &mut h)?;
        Ok(h.finish())
    }

    /// Copies an object server-side, in parts when over S3's single-copy
    /// limit.
    fn copy(&self, from: &str, to: &str, size: u64) -> io::Result<()> {
        if size <= MAX_COPY {
            return self.s3.copy(from, to);
        }
        let upload = self.s3.multipart_start(to)?;
        let part = 1u64 << 30;
        let mut etags = Vec::new();
        let mut at = 0;
        while at < size {
            let end = (at + part).min(size) - 1;
            let n = etags.len() as u16 + 1;
            match self.s3.multipart_copy_part(to, &upload, n, from, (at, end)) {
                Ok(e) => etags.push(e),
                Err(e) => {
                    let _ = self.s3.multipart_abort(to, &upload);
                    return Err(e);
                }
            }
            at = end + 1;
        }
        self.s3.multipart_complete(to, &upload, &etags)
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.s3.url().to_string()
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.s3.get(key)
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.s3.put(key, data)
    }

    fn touch(&self, key: &str) -> io::Result<()> {
        // Links are empty: rewriting one is the cheapest way to renew its time.
        self.s3.put(key, &[])
    }

    fn delete(&self, key: &str) -> io::Result<bool> {
        if self.s3.head(key)?.is_none() {
            return Ok(false);
        }
        self.s3.delete(key)?;
        Ok(true)
    }

    fn modified(&self, key: &str) -> io::Result<Option<SystemTime>> {
        Ok(self.s3.head(key)?.map(|m| m.modified))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        Ok(self
            .s3
            .list(&prefix, true)?
            .into_iter()
            .filter_map(|l| {
                let rest = l.key.strip_prefix(&prefix)?;
                let (name, is_dir) = match rest.strip_suffix('/') {
                    Some(n) => (n, true),
                    None => (rest, false),
                };
                (!name.is_empty() && !name.contains('/')).then(|| Entry {
                    name: name.to_string(),
                    is_dir,
                    modified: l.meta.modified,
                })
            })
            .collect())
    }

    fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        Ok(self.s3.head(&blob_key(d))?.map(|m| m.size))
    }

    fn blob_get(&self, d: &Digest) -> io::Result<Vec<u8>> {
        let bytes = self.s3.get(&blob_key(d))?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("blob {d} not found"))
        })?;
        let actual = Digest::of(d.algorithm(), &bytes);
        if actual != *d {
            return Err(io::Error::other(format!(
                "blob {d} is corrupt in {}: its content hashes to {actual}",
                self.s3.url()
            )));
        }
        Ok(bytes)
    }

    fn blob_put(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(Digest::of(d.algorithm(), data), *d);
        self.s3.put(&blob_key(d), data)
    }

    fn blob_url(&self, d: &Digest) -> Option<String> {
        // Twenty minutes: long enough for a slow pull of a big layer to
        // start, short enough that a leaked URL soon stops working.
        self.redirect.then(|| {
            self.s3
                .presigned_get(&blob_key(d), std::time::Duration::from_secs(1200))
        })
    }

    fn blob_refresh(&self, _d: &Digest) {
        // The link's rewrite (`touch`) renews the time GC looks at.
    }

    fn blob_body(&self, d: &Digest, start: u64, len: u64) -> io::Result<Body> {
        let mut r = self.s3.reader(&blob_key(d), start, len)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let d = d.clone();
        tokio::task::spawn_blocking(move || {
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0u8; PIECE.min(left as usize)];
                let mut got = 0;
                while got < buf.len() {
                    match r.read(&mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if got == 0 {
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("blob {d}: the object store ended the body early"),
                    )));
                    return;
                }
                buf.truncate(got);
                left -= got as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(super::channel_body(rx))
    }

    fn blobs(&self) -> io::Result<Vec<BlobEntry>> {
        let mut out = Vec::new();
        for l in self.s3.list("blobs/", false)? {
            let Some((alg, hex)) = l.key.strip_prefix("blobs/").and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                continue;
            };
            out.push(BlobEntry {
                digest,
                size: l.meta.size,
                modified: l.meta.modified,
            });
        }
        Ok(out)
    }

    fn blob_delete(&self, d: &Digest) -> io::Result<()> {
        self.s3.delete(&blob_key(d))
    }

    fn upload_start(&self, id: &str) -> io::Result<()> {
        self.put_state(id, &UploadParts::default())
    }

    fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        Ok(self.state(id)?.map(|s| s.size))
    }

    fn upload_append(
        &self,
        id: &str,
        rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
        hasher: &mut Option<Hasher>,
    ) -> io::Result<u64> {
        let mut st = self
            .state(id)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no upload {id}")))?;
        let mut buf = Vec::with_capacity(PART);
        if st.tail > 0 {
            let tail = self.s3.get(&tail_key(id))?.unwrap_or_default();
            if tail.len() as u64 != st.tail {
                return Err(io::Error::other(format!(
                    "upload {id}: its tail has {} bytes, not {}",
                    tail.len(),
                    st.tail
                )));
            }
            buf.extend_from_slice(&tail);
        }
        // Drain the whole body even after a failure, so the sender is not
        // left blocked; report the first error.
        let mut failed: Option<io::Error> = None;
        while let Some(c) = rx.blocking_recv() {
            if failed.is_some() {
                continue;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&c);
            }
            st.size += c.len() as u64;
            let mut c = &c[..];
            while !c.is_empty() {
                let n = (PART - buf.len()).min(c.len());
                buf.extend_from_slice(&c[..n]);
                c = &c[n..];
                if buf.len() == PART {
                    if let Err(e) = self.send_part(id, &mut st, &buf) {
                        failed = Some(e);
                        break;
                    }
                    buf.clear();
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if buf.len() >= MIN_PART {
            self.send_part(id, &mut st, &buf)?;
            buf.clear();
        }
        if !buf.is_empty() {
            self.s3.put(&tail_key(id), &buf)?;
        }
        st.tail = buf.len() as u64;
        self.put_state(id, &st)?;
        Ok(st.size)
    }

    fn upload_commit(
        &self,
        id: &str,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<(), CommitError> {
        let mut st = self
            .state(id)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no upload {id}")))?;
        let tail = if st.tail > 0 {
            self.s3.get(&tail_key(id))?.unwrap_or_default()
        } else {
            Vec::new()
        };
        if tail.len() as u64 != st.tail {
            return Err(io::Error::other(format!("upload {id}: its tail is gone")).into());
        }
        let hashed = hashed.filter(|h| h.algorithm() == expected.algorithm());
        let mismatch = |actual: Digest| CommitError::Mismatch {
            expected: expected.clone(),
            actual,
        };
        let Some(upload) = st.multipart.clone() else {
            // Smaller than one part: the tail is the whole blob.
            let actual = Digest::of(expected.algorithm(), &tail);
            if actual != *expected {
                return Err(mismatch(actual));
            }
            self.s3.put(&blob_key(expected), &tail)?;
            return Ok(());
        };
        if !tail.is_empty() {
            self.send_part(id, &mut st, &tail)?;
        }
        let key = object_key(id);
        if let Some(h) = hashed
            && h != expected
        {
            let _ = self.s3.multipart_abort(&key, &upload);
            return Err(mismatch(h.clone()));
        }
        // Complete where the object can be checked, then (checked) place it
        // under the blob's key by a server-side copy.
        self.s3.multipart_complete(&key, &upload, &st.etags)?;
        if hashed.is_none() {
            let actual = self.hash_object(&key, st.size, expected.algorithm())?;
            if actual != *expected {
                let _ = self.s3.delete(&key);
                return Err(mismatch(actual));
            }
        }
        let r = match self.s3.head(&blob_key(expected)) {
            Ok(Some(_)) => Ok(()), // pushed before: blobs are immutable
            _ => self.copy(&key, &blob_key(expected), st.size),
        };
        let _ = self.s3.delete(&key);
        r?;
        Ok(())
    }

    fn upload_end(&self, id: &str) {
        if let Ok(Some(st)) = self.state(id)
            && let Some(u) = st.multipart
        {
            let _ = self.s3.multipart_abort(&object_key(id), &u);
        }
        for k in [tail_key(id), object_key(id), state_key(id)] {
            let _ = self.s3.delete(&k);
        }
    }

    fn uploads(&self) -> Vec<(String, SystemTime)> {
        let mut out: Vec<(String, SystemTime)> = Vec::new();
        for l in self.s3.list("uploads/", false).unwrap_or_default() {
            let Some(rest) = l.key.strip_prefix("uploads/") else {
                continue;
            };
            let id = rest
                .strip_suffix(".json")
                .or_else(|| rest.split_once('/').map(|(i, _)| i))
                .unwrap_or(rest)
                .to_string();
            match out.iter_mut().find(|(i, _)| *i == id) {
                Some((_, t)) => *t = (*t).max(l.meta.modified),
                None => out.push((id, l.meta.modified)),
            }
        }
        out
    }
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        CommitError::Io(e)
    }
}
