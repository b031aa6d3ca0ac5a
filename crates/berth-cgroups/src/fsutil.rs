//! cgroupfs file access whose errors name the file and the value written
//! (`write /sys/fs/cgroup/memory/x/memory.limit_in_bytes "1k": EBUSY`).

use std::path::{Path, PathBuf};

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// I/O on a cgroup file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done (`write "512M" to`, `read`, `mkdir`).
        op: String,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A controller the configuration needs is not mounted.
    #[error("cgroup controller {0:?} is not available on this machine")]
    MissingController(String),
    /// A value the kernel cannot take.
    #[error("invalid cgroup setting: {0}")]
    Invalid(String),
}

pub(crate) fn io(op: impl Into<String>, path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        op: op.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` to a cgroup file.
pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io(format!("write {value:?} to"), path, e))
}

/// Reads a cgroup file.
pub fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| io("read", path, e))
}

/// Reads a single number (`max` reads as 0).
pub fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat) as a lookup.
pub fn flat_keyed(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// Pids listed in a `cgroup.procs` file.
pub fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io("read", path, e)),
    }
}

/// Removes a cgroup directory (rmdir; cgroupfs refuses recursive removal of files),
/// children first. Missing is fine.
pub fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    // Most often it has no child: one rmdir, and a look inside only when
    // that fails.
    match std::fs::remove_dir(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir(&e.path())?;
            }
        }
    }
    // A just-emptied cgroup can report EBUSY for a moment.
    for attempt in 0..50 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io("rmdir", path, e)),
        }
    }
    Ok(())
}
