//! The content store: blobs addressed by their digest, laid out as an OCI image
//! layout (`blobs/sha256/<hex>`) so skopeo, umoci and friends can read it.
//! berth writes sha256; sha512 blobs are accepted where a digest says so (a
//! registry stores what clients push).
//!
//! Writes go through [`Writer`]: bytes land in `ingest/<unique>` while being hashed;
//! [`Writer::commit`] checks the digest (and size) the caller expected, fsyncs, and
//! renames into place, so a blob is visible only once complete and verified. Reads
//! verify too: [`ContentStore::open`] returns a reader that fails at end of stream
//! when the bytes do not hash to the name they are stored under.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use berth_types::Digest;
use berth_types::digest::{Algorithm, Hasher};

use berth_fs::{IoContext, PathError, mkdir_all, sync_dir, unique_name};

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathError),
    /// What was written does not hash to what the caller expected.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// What was written has another length than the caller expected.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Expected length.
        expected: u64,
        /// Received length.
        actual: u64,
    },
    /// A stored blob is not what its name says.
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt {
        /// The blob's name.
        digest: Digest,
        /// What it hashes to.
        actual: Digest,
    },
    /// No such blob.
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    /// A digest whose algorithm the store does not hold.
    #[error("unsupported digest algorithm in {0}: berth stores sha256 blobs only")]
    Algorithm(Digest),
}

/// Content store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a content store at `root`.
    pub fn open_at(root: &Path) -> Result<Self, ContentError> {
        mkdir_all(&root.join("blobs/sha256"))?;
        mkdir_all(&root.join("ingest"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            berth_fs::atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    /// The store's directory (an OCI image layout).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Whether a blob is present.
    pub fn exists(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// A blob's size, if present.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<Writer, ContentError> {
        self.writer_for(Algorithm::Sha256)
    }

    /// Starts writing a new blob named by an `algorithm` digest.
    pub fn writer_for(&self, algorithm: Algorithm) -> Result<Writer, ContentError> {
        let tmp = self.root.join("ingest").join(unique_name("blob-"));
        let file = File::create(&tmp).ctx("create", &tmp)?;
        Ok(Writer {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            written_back: 0,
            tmp,
            hasher: Hasher::for_algorithm(algorithm),
            store: self.clone(),
        })
    }

    /// Stores `data` as a blob, checking it against `expected` when given.
    pub fn put(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest, ContentError> {
        let actual = Digest::of(expected.map_or(Algorithm::Sha256, Digest::algorithm), data);
        if let Some(e) = expected
            && *e != actual
        {
            return Err(ContentError::DigestMismatch {
                expected: e.clone(),
                actual,
            });
        }
        if self.exists(&actual) {
            return Ok(actual);
        }
        let mut w = self.writer_for(actual.algorithm())?;
        w.write_all(data).ctx("write", &w.tmp.clone())?;
        w.commit(Some(&actual), None)
    }

    /// Moves a finished file (on the same filesystem, e.g. a registry upload) into
    /// the store as a blob, after checking it against `expected`. `hashed` is the
    /// digest the caller computed while writing it, if it did (saving a re-read);
    /// otherwise the file is hashed here. The file is consumed either way.
    pub fn commit_file(
        &self,
        file: &Path,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<Digest, ContentError> {
        let f = File::open(file).ctx("open", file)?;
        let actual = match hashed.filter(|d| d.algorithm() == expected.algorithm()) {
            Some(d) => d.clone(),
            None => {
                let mut h = Hasher::for_algorithm(expected.algorithm());
                io::copy(&mut &f, &mut h).ctx("read", file)?;
                h.finish()
            }
        };
        if actual != *expected {
            let _ = fs::remove_file(file);
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.path(&actual);
        if dest.exists() {
            let _ = fs::remove_file(file);
            return Ok(actual);
        }
        f.sync_all().ctx("fsync", file)?;
        mkdir_all(dest.parent().expect("blob path has a parent"))?;
        fs::rename(file, &dest).ctx("rename", &dest)?;
        sync_dir(dest.parent().expect("blob path has a parent"))?;
        Ok(actual)
    }

    /// Opens a blob for reading; the reader fails at EOF if the content is corrupt.
    pub fn open(&self, d: &Digest) -> Result<VerifyingReader<File>, ContentError> {
        let p = self.path(d);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(d.clone()));
            }
            Err(e) => return Err(e).ctx("open", &p).map_err(Into::into),
        };
        Ok(VerifyingReader {
            inner: f,
            hasher: Some(Hasher::for_algorithm(d.algorithm())),
            expected: d.clone(),
        })
    }

    /// Reads a whole blob and verifies it.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut r = self.open(d)?;
        let mut buf = Vec::new();
        match r.read_to_end(&mut buf) {
            Ok(_) => Ok(buf),
            Err(e) => Err(unwrap_read_error(e, d, &self.path(d))),
        }
    }

    /// Hashes a stored blob and reports whether it matches its name.
    pub fn verify(&self, d: &Digest) -> Result<(), ContentError> {
        let mut r = self.open(d)?;
        match io::copy(&mut r, &mut io::sink()) {
            Ok(_) => Ok(()),
            Err(e) => Err(unwrap_read_error(e, d, &self.path(d))),
        }
    }

    /// Deletes a blob (missing is fine).
    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", &p)?,
            _ => Ok(()),
        }
    }

    /// Every blob digest in the store.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            if alg != Algorithm::Sha256 && !dir.is_dir() {
                continue;
            }
            for e in fs::read_dir(&dir).ctx("readdir", &dir)? {
                let e = e.ctx("readdir", &dir)?;
                if let Ok(d) =
                    format!("{}:{}", alg.as_str(), e.file_name().to_string_lossy()).parse()
                {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Leftover ingest files: those of writers that are gone (a live one's
    /// are being written).
    pub fn stale_ingests(&self) -> Vec<PathBuf> {
        let dir = self.root.join("ingest");
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !berth_fs::owner_alive(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Turns an error from reading a [`VerifyingReader`] back into a [`ContentError`].
pub fn unwrap_read_error(e: io::Error, d: &Digest, path: &Path) -> ContentError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<ContentError>() {
            Ok(ce) => *ce,
            Err(other) => ContentError::Io(PathError {
                op: "read",
                path: path.to_path_buf(),
                source: io::Error::other(other),
            }),
        },
        None => ContentError::Io(PathError {
            op: "read",
            path: path.to_path_buf(),
            source: io::Error::other(format!("reading blob {d} failed")),
        }),
    }
}

/// A blob being written. Dropping it without [`Writer::commit`] discards it.
pub struct Writer {
    file: Option<io::BufWriter<File>>,
    /// Bytes handed to writeback so far.
    written_back: u64,
    tmp: PathBuf,
    hasher: Hasher,
    store: ContentStore,
}

impl Writer {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies the digest (and size) and moves the blob into place.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Digest, ContentError> {
        let buf = self.file.take().expect("writer not yet committed");
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write", &self.tmp)?;
        let hasher = std::mem::take(&mut self.hasher);
        let len = hasher.len();
        let actual = hasher.finish();
        if let Some(e) = expected
            && *e != actual
        {
            return Err(ContentError::DigestMismatch {
                expected: e.clone(),
                actual,
            });
        }
        if let Some(sz) = expected_size
            && sz != len
        {
            return Err(ContentError::SizeMismatch {
                digest: actual,
                expected: sz,
                actual: len,
            });
        }
        let dest = self.store.path(&actual);
        if dest.exists() {
            return Ok(actual); // Drop removes the temp file.
        }
        file.sync_all().ctx("fsync", &self.tmp)?;
        drop(file);
        mkdir_all(dest.parent().expect("blob path has a parent"))?;
        fs::rename(&self.tmp, &dest).ctx("rename", &dest)?;
        sync_dir(dest.parent().expect("blob path has a parent"))?;
        Ok(actual)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .as_mut()
            .expect("writer not yet committed")
            .write(buf)?;
        self.hasher.update(&buf[..n]);
        let f = self.file.as_ref().expect("writer not yet committed");
        let on_disk = self.hasher.len() - f.buffer().len() as u64;
        if on_disk - self.written_back >= berth_fs::WRITEBACK_CHUNK {
            berth_fs::start_writeback(f.get_ref(), self.written_back, on_disk - self.written_back);
            self.written_back = on_disk;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A blob reader that checks the digest when it reaches the end.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
            if n == 0 && !buf.is_empty() {
                let actual = self.hasher.take().expect("hasher present").finish();
                if actual != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ContentError::Corrupt {
                            digest: self.expected.clone(),
                            actual,
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open_at(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn put_read_verify() {
        let (_d, s) = store();
        let dg = s.put(b"hello", None).unwrap();
        assert_eq!(dg, Digest::sha256_of(b"hello"));
        assert_eq!(s.read(&dg).unwrap(), b"hello");
        s.verify(&dg).unwrap();
        assert_eq!(s.list().unwrap(), vec![dg]);
        assert!(s.stale_ingests().is_empty());
    }

    #[test]
    fn wrong_digest_leaves_nothing() {
        let (_d, s) = store();
        let want = Digest::sha256_of(b"other");
        let mut w = s.writer().unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.commit(Some(&want), None).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert!(s.stale_ingests().is_empty(), "temp file removed");
    }

    #[test]
    fn size_is_checked() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.commit(None, Some(4)).unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { .. }));
    }

    #[test]
    fn corruption_is_detected_on_read() {
        let (_d, s) = store();
        let dg = s.put(b"hello", None).unwrap();
        fs::write(s.path(&dg), b"jello").unwrap();
        let err = s.read(&dg).unwrap_err();
        assert!(matches!(err, ContentError::Corrupt { .. }), "{err}");
        assert!(s.verify(&dg).is_err());
    }

    #[test]
    fn missing_blob_is_named() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"nope");
        let err = s.read(&dg).unwrap_err();
        assert!(err.to_string().contains(&dg.to_string()));
    }
}
