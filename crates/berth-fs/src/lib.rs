//! Files written safely, for every berth crate that keeps state on disk
//! (the store, the engine's container records, the registry server, the
//! build cache): atomic replacement (temp + fsync + rename + fsync of the
//! directory), unique temporary names and whether their owner still runs,
//! advisory locks on lock files (`std::fs::File::lock`), writeback hints,
//! sizes on disk, errors that carry the operation and path they concern, and
//! whether this process is in a user namespace (which changes what it may
//! make on disk: device nodes, `trusted.*` xattrs).
//! No crate does these together with the durability rules berth needs; each
//! is a few lines over std and libc.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether this process runs in a user namespace other than the initial
/// one (rootless berth): its uid map is not the whole identity. Read each
/// time: a process may enter one after start.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let f: Vec<&str> = m.split_whitespace().collect();
        f != ["0", "0", "4294967295"]
    })
}

/// `prog` on the PATH (or in /usr/bin, /usr/sbin, /bin).
pub fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/bin".into()])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// An I/O error with the operation and path it happened on (`open '/x': EACCES`).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathError {
    /// What was being done (`open`, `rename`, …).
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Extension to attach a path to an `io::Result`.
pub trait IoContext<T> {
    /// Wraps the error with `op` and `path`.
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, PathError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, PathError> {
        self.map_err(|source| PathError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A unique name for a temporary file or directory (pid, time and a counter).
pub fn unique_name(prefix: &str) -> String {
    unique_name_for(prefix, std::process::id())
}

/// A unique name as [`unique_name`] makes, owned by process `pid`: for a
/// temporary that a child finishes with after this process has gone (the
/// background half of `run --rm`'s removal), so that [`owner_alive`] asks
/// about the process that will remove it.
pub fn unique_name_for(prefix: &str, pid: u32) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{pid}-{t:x}-{n}")
}

/// Whether `name` (made by [`unique_name`] with a prefix ending in `-`)
/// belongs to a process that is still running: a temporary of a live command
/// is in use, whatever lock that command holds or not.
pub fn owner_alive(name: &str) -> bool {
    let Some(pid) = name
        .split('-')
        .nth(1)
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return false;
    };
    pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists()
}

/// Starts writeback of `len` bytes at `offset` of `f` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the fsync that ends a large
/// write finds most of the data already on its way to the disk and the disk
/// works while the network or the decompressor does. Best effort.
pub fn start_writeback(f: &impl std::os::fd::AsRawFd, offset: u64, len: u64) {
    // SAFETY: a plain syscall on a valid descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Bytes written between two [`start_writeback`] calls of a streaming writer.
pub const WRITEBACK_CHUNK: u64 = 8 << 20;

/// fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir).and_then(|f| f.sync_all()).ctx("fsync", dir)
}

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync dir.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<(), PathError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(unique_name(".tmp-"));
    let res = (|| {
        let mut f = File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename", path)?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Creates `dir` and its parents.
pub fn mkdir_all(dir: &Path) -> Result<(), PathError> {
    fs::create_dir_all(dir).ctx("mkdir", dir)
}

/// A held advisory lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

fn open_lock(path: &Path) -> Result<File, PathError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .ctx("open lock", path)
}

/// Takes an exclusive lock on `path` (created if missing), waiting for it.
pub fn lock_exclusive(path: &Path) -> Result<LockGuard, PathError> {
    let f = open_lock(path)?;
    f.lock().ctx("lock", path)?;
    Ok(LockGuard { _file: f })
}

/// Takes a shared lock on `path` (created if missing), waiting for it.
pub fn lock_shared(path: &Path) -> Result<LockGuard, PathError> {
    let f = open_lock(path)?;
    f.lock_shared().ctx("lock", path)?;
    Ok(LockGuard { _file: f })
}

/// Tries an exclusive lock without waiting; `None` when someone holds it.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>, PathError> {
    let f = open_lock(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(LockGuard { _file: f })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e).ctx("lock", path),
    }
}

/// Removes a path whatever it is; missing is fine.
pub fn remove_any(path: &Path) -> Result<(), PathError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", path),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("remove", path),
        Ok(_) => fs::remove_file(path).ctx("remove", path),
    }
}

/// Total size of the regular files under `path` (symlinks not followed).
pub fn du(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.len() } else { 0 };
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_live_processes_are_theirs() {
        assert!(owner_alive(&unique_name("a-")), "this process");
        assert!(owner_alive("a-1-0-0"), "init is always alive");
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        assert!(
            !owner_alive(&format!("blob-{pid}-1-0")),
            "exited and reaped"
        );
        assert!(!owner_alive("rm-notapid-1-0") && !owner_alive("junk"));
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn exclusive_lock_excludes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let g = lock_exclusive(&p).unwrap();
        assert!(try_lock_exclusive(&p).unwrap().is_none());
        drop(g);
        assert!(try_lock_exclusive(&p).unwrap().is_some());
    }
}
