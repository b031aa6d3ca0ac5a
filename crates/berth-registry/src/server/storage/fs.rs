//! The filesystem backend: each key a file under the storage directory,
//! blobs in berth-store's content store (verified on commit, written by
//! temp file + fsync + rename), blobs served from a memory map.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use berth_fs::atomic_write;
use berth_store::content::{ContentError, ContentStore};
use berth_types::Digest;
use berth_types::digest::Hasher;
use bytes::Bytes;

use super::{Backend, BlobEntry, CommitError, Entry};

/// Files under a directory.
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
    content: ContentStore,
}

fn touch(p: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)?;
    f.set_modified(SystemTime::now())
}

fn not_found_ok<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl FsBackend {
    /// Opens (creating) the storage directory.
    pub fn open(root: &Path) -> io::Result<FsBackend> {
        fs::create_dir_all(root.join("repos"))?;
        fs::create_dir_all(root.join("uploads"))?;
        let content = ContentStore::open_at(root).map_err(io::Error::other)?;
        Ok(FsBackend {
            root: root.to_path_buf(),
            content,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(!key.split('/').any(|p| p == ".." || p.is_empty()), "{key}");
        self.root.join(key)
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }
}

impl Backend for FsBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        not_found_ok(fs::read(self.path(key)))
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let p = self.path(key);
        fs::create_dir_all(p.parent().expect("key has a parent"))?;
        atomic_write(&p, data).map_err(io::Error::other)
    }

    fn touch(&self, key: &str) -> io::Result<()> {
        let p = self.path(key);
        fs::create_dir_all(p.parent().expect("key has a parent"))?;
        touch(&p)
    }

    fn delete(&self, key: &str) -> io::Result<bool> {
        Ok(not_found_ok(fs::remove_file(self.path(key)))?.is_some())
    }

    fn modified(&self, key: &str) -> io::Result<Option<SystemTime>> {
        not_found_ok(fs::metadata(self.path(key)).and_then(|m| m.modified()))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let Some(rd) = not_found_ok(fs::read_dir(self.path(dir)))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            out.push(Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    fn has_dir(&self, dir: &str) -> bool {
        self.path(dir).is_dir()
    }

    fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        not_found_ok(fs::metadata(self.content.path(d)).map(|m| m.len()))
    }

    fn blob_get(&self, d: &Digest) -> io::Result<Vec<u8>> {
        self.content.read(d).map_err(|e| match e {
            ContentError::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            e => io::Error::other(e),
        })
    }

    fn blob_put(&self, d: &Digest, data: &[u8]) -> io::Result<()> {
        self.content
            .put(data, Some(d))
            .map(|_| ())
            .map_err(io::Error::other)
    }

    fn blob_refresh(&self, d: &Digest) {
        let _ = touch(&self.content.path(d));
    }

    fn blob_body(&self, d: &Digest, start: u64, len: u64) -> io::Result<Body> {
        mapped_body(&self.content.path(d), start, len)
    }

    fn blobs(&self) -> io::Result<Vec<BlobEntry>> {
        let mut out = Vec::new();
        for d in self.content.list().map_err(io::Error::other)? {
            let Ok(meta) = fs::metadata(self.content.path(&d)) else {
                continue;
            };
            out.push(BlobEntry {
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                digest: d,
            });
        }
        Ok(out)
    }

    fn blob_delete(&self, d: &Digest) -> io::Result<()> {
        not_found_ok(fs::remove_file(self.content.path(d))).map(|_| ())
    }

    fn upload_start(&self, id: &str) -> io::Result<()> {
        fs::File::create(self.upload_path(id)).map(|_| ())
    }

    fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        not_found_ok(fs::metadata(self.upload_path(id)).map(|m| m.len()))
    }

    fn upload_append(
        &self,
        id: &str,
        rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
        hasher: &mut Option<Hasher>,
    ) -> io::Result<u64> {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.upload_path(id))?;
        let mut written = file.metadata()?.len();
        let mut written_back = written;
        while let Some(c) = rx.blocking_recv() {
            file.write_all(&c)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&c);
            }
            written += c.len() as u64;
            if written - written_back >= berth_fs::WRITEBACK_CHUNK {
                berth_fs::start_writeback(&file, written_back, written - written_back);
                written_back = written;
            }
        }
        Ok(written)
    }

    fn upload_commit(
        &self,
        id: &str,
        expected: &Digest,
        hashed: Option<&Digest>,
    ) -> Result<(), CommitError> {
        match self
            .content
            .commit_file(&self.upload_path(id), expected, hashed)
        {
            Ok(_) => Ok(()),
            Err(ContentError::DigestMismatch { expected, actual }) => {
                Err(CommitError::Mismatch { expected, actual })
            }
            Err(e) => Err(CommitError::Io(io::Error::other(e))),
        }
    }

    fn upload_end(&self, id: &str) {
        let _ = fs::remove_file(self.upload_path(id));
    }

    fn uploads(&self) -> Vec<(String, SystemTime)> {
        let mut out: Vec<(String, SystemTime)> = Vec::new();
        let Ok(rd) = fs::read_dir(self.root.join("uploads")) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json").unwrap_or(&name).to_string();
            // The data file's time is the last activity; a session file
            // alone (its data gone) has its own.
            let t = fs::metadata(self.upload_path(&id))
                .or_else(|_| e.metadata())
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if !out.iter().any(|(i, _)| *i == id) {
                out.push((id, t));
            }
        }
        out
    }
}

/// Pieces a blob body is handed to hyper in: big enough that each is one
/// `writev` to the socket, small enough to keep back-pressure.
pub(crate) const BLOB_PIECE: usize = 4 << 20;

/// Streams `len` bytes of the blob at `path` from `start`.
///
/// The file is mapped and the response is slices of the mapping, so the bytes
/// go from the page cache to the socket in one copy (a `read` into a buffer
/// first would make it two, plus the buffer's zeroing). A blocking task pages
/// each slice in (`MADV_POPULATE_READ`) before handing it over, so disk waits
/// happen there and never fault an async worker. Blobs are never changed in
/// place — they appear by rename and go by unlink, both of which leave an
/// existing mapping intact — so the mapping cannot shrink under the response.
fn mapped_body(path: &Path, start: u64, len: u64) -> io::Result<Body> {
    if len == 0 {
        return Ok(Body::empty());
    }
    let f = fs::File::open(path)?;
    // SAFETY: the mapping is read-only and blobs are immutable once stored
    // (see above); nothing in this process writes through it.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(len as usize)
            .map(&f)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    let map = Arc::new(map);
    let all = Bytes::from_owner(SharedMap(map.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut at = 0;
        while at < all.len() {
            let n = BLOB_PIECE.min(all.len() - at);
            // Before 5.14 (EINVAL: no MADV_POPULATE_READ) the socket write
            // faults the pages in instead. Any other failure (a read error of
            // the disk) ends the response here: touching those pages would
            // be SIGBUS.
            if let Err(e) = map.advise_range(memmap2::Advice::PopulateRead, at, n)
                && e.raw_os_error() != Some(rustix::io::Errno::INVAL.raw_os_error())
            {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if tx.blocking_send(Ok(all.slice(at..at + n))).is_err() {
                return; // the client went away
            }
            at += n;
        }
    });
    Ok(super::channel_body(rx))
}

/// A file mapping shared by the response's slices and the task paging it in.
struct SharedMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
