//! Which repositories of which registry are known to hold a blob (from pulls
//! and pushes), so a push can ask the registry to mount a layer from one of
//! them instead of uploading it again — docker's "Mounted from …".
//!
//! Kept in `<store>/distribution/sources.json`; best effort: a lost update only
//! costs an upload.

use std::collections::BTreeMap;
use std::path::Path;

use berth_fs::{atomic_write, lock_exclusive};
use berth_types::Digest;

type Map = BTreeMap<String, BTreeMap<String, Vec<String>>>;

const KEEP: usize = 4;

fn read(path: &Path) -> Map {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records that `repo` on `domain` holds `digests`.
pub fn record<'a>(
    root: &Path,
    domain: &str,
    repo: &str,
    digests: impl Iterator<Item = &'a Digest>,
) {
    let dir = root.join("distribution");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let Ok(_lock) = lock_exclusive(&dir.join("lock")) else {
        return;
    };
    let path = dir.join("sources.json");
    let mut m = read(&path);
    let per = m.entry(domain.to_string()).or_default();
    for d in digests {
        let repos = per.entry(d.to_string()).or_default();
        repos.retain(|r| r != repo);
        repos.insert(0, repo.to_string());
        repos.truncate(KEEP);
    }
    let _ = atomic_write(&path, &serde_json::to_vec(&m).expect("json"));
}

/// Repositories on `domain` other than `except` known to hold `digest`.
pub fn lookup(root: &Path, domain: &str, digest: &Digest, except: &str) -> Vec<String> {
    read(&root.join("distribution/sources.json"))
        .get(domain)
        .and_then(|per| per.get(&digest.to_string()))
        .map(|v| v.iter().filter(|r| *r != except).cloned().collect())
        .unwrap_or_default()
}
