//! The layer cache: a step's key is a hash of its parent's key, the expanded
//! instruction, the build args it can see and, for COPY and ADD, the content,
//! names, modes and owners of exactly the files it copies. A hit stores the
//! resulting image state (config and layers); a miss can say why, by comparing
//! the inputs with those recorded for the same step last time.
//!
//! Entries live in `<root>/buildcache/` as JSON written atomically; the blobs and
//! layers they reference are registered as gc roots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_types::{Descriptor, Digest, ImageConfig};
use serde::{Deserialize, Serialize};

/// The image state after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The config so far.
    pub config: ImageConfig,
    /// The layer blobs so far.
    pub layers: Vec<Descriptor>,
}

/// The inputs of a step, to explain a miss.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inputs {
    /// `file:<path>` / `arg:<name>` → hash or value.
    pub items: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StepRecord {
    parent: String,
    inputs: Inputs,
}

/// Identifies an instruction across builds, whatever came before it.
pub fn step_id(text: &str) -> String {
    Digest::sha256_of(text.as_bytes()).hex().to_string()
}

/// The cache under a directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A step key.
pub fn key(parent: &str, text: &str, inputs: &Inputs) -> String {
    let mut s = format!("{parent}\n{text}\n");
    for (k, v) in &inputs.items {
        s.push_str(&format!("{k}={v}\n"));
    }
    Digest::sha256_of(s.as_bytes()).hex().to_string()
}

/// Temp file and rename (no fsync: a record lost or torn in a crash reads as
/// absent, a cache miss). The temp name is unique per write, not just per
/// process: stages built at once may record the same step together.
fn write_atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(berth_fs::unique_name(".tmp-"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, p).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Cache {
    /// Opens the cache at `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir.join("steps"))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The record for `key`.
    pub fn get(&self, key: &str) -> Option<Record> {
        let b = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The finished config of a stage whose whole chain of steps had key
    /// `key` before (so a fully cached rebuild gives the same image, created
    /// times included, as docker's does).
    pub fn get_stage(&self, key: &str) -> Option<berth_types::ImageConfig> {
        let b = std::fs::read(self.dir.join("stages").join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Remembers the finished config of the stage with chain key `key`.
    pub fn put_stage(&self, key: &str, config: &berth_types::ImageConfig) -> std::io::Result<()> {
        let dir = self.dir.join("stages");
        std::fs::create_dir_all(&dir)?;
        let b = serde_json::to_vec(config).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(format!("{key}.json")), &b)
    }

    /// Stores a record and the inputs (and parent) of its step.
    pub fn put(
        &self,
        key: &str,
        step_id: &str,
        parent: &str,
        rec: &Record,
        inputs: &Inputs,
    ) -> std::io::Result<()> {
        write_atomic(
            &self.dir.join(format!("{key}.json")),
            &serde_json::to_vec(rec).expect("record"),
        )?;
        let s = StepRecord {
            parent: parent.to_string(),
            inputs: inputs.clone(),
        };
        write_atomic(
            &self.dir.join("steps").join(format!("{step_id}.json")),
            &serde_json::to_vec(&s).expect("inputs"),
        )
    }

    /// Why a step misses, compared with what the same instruction had last time.
    pub fn explain(&self, step_id: &str, parent: &str, inputs: &Inputs) -> String {
        let Some(rec) = std::fs::read(self.dir.join("steps").join(format!("{step_id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<StepRecord>(&b).ok())
        else {
            return "first build of this instruction".into();
        };
        if rec.parent != parent {
            return "an earlier step changed".into();
        }
        let prev = rec.inputs;
        let mut why = Vec::new();
        for (k, v) in &inputs.items {
            match prev.items.get(k) {
                None => why.push(format!("{} added", k.replacen(':', " ", 1))),
                Some(p) if p != v => why.push(format!("{} changed", k.replacen(':', " ", 1))),
                _ => {}
            }
        }
        for k in prev.items.keys() {
            if !inputs.items.contains_key(k) {
                why.push(format!("{} removed", k.replacen(':', " ", 1)));
            }
        }
        if why.is_empty() {
            "inputs unchanged but no cached result".into()
        } else {
            why.join(", ")
        }
    }

    /// Every record that parses.
    fn records(&self) -> Vec<Record> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
            .collect()
    }

    /// Every digest a record references (layer blobs), for gc roots.
    pub fn referenced(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        for r in self.records() {
            out.extend(r.layers.iter().map(|l| l.digest.clone()));
            out.extend(berth_types::chain_ids(&r.config.rootfs.diff_ids));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chain ids of every layer state a record references.
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self
            .records()
            .iter()
            .flat_map(|r| berth_types::chain_ids(&r.config.rootfs.diff_ids))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The records' directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every record.
    pub fn clear(&self) -> std::io::Result<usize> {
        let mut n = 0;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    std::fs::remove_file(e.path())?;
                    // The file-hash memo is not a cache record.
                    if e.file_name() != "filehashes.json" {
                        n += 1;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join("steps"));
        let _ = std::fs::remove_dir_all(self.dir.join("stages"));
        // RUN --mount=type=cache directories go with the cache, as with BuildKit.
        let _ = std::fs::remove_dir_all(self.dir.join("mounts"));
        std::fs::create_dir_all(self.dir.join("steps"))?;
        Ok(n)
    }
}

/// Content hashes of context files, remembered by their identity (device,
/// inode, size, modification and change times to the nanosecond), as git's
/// index and BuildKit's content-hash cache do, so a rebuild does not read
/// every copied file again. A file changed within two seconds of being hashed
/// is not remembered (its times could repeat after a later change: git's
/// "racy" case).
#[derive(Debug, Default)]
pub struct HashCache {
    path: PathBuf,
    map: std::collections::HashMap<String, String>,
    dirty: bool,
}

impl HashCache {
    /// The remembered hashes of the cache at `dir` (none if it cannot be read).
    pub fn load(dir: &Path) -> HashCache {
        let path = dir.join("filehashes.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path,
            map,
            dirty: false,
        }
    }

    fn identity(md: &berth_store::inroot::Stat) -> String {
        format!(
            "{}:{}:{}:{}.{}:{}.{}:{:o}:{}:{}",
            md.st_dev,
            md.st_ino,
            md.st_size,
            md.st_mtime,
            md.st_mtime_nsec,
            md.st_ctime,
            md.st_ctime_nsec,
            md.st_mode,
            md.st_uid,
            md.st_gid
        )
    }

    /// The hash of the file with metadata `md`: remembered, or `compute`d and
    /// remembered when the file has been still for two seconds.
    pub fn get(
        &mut self,
        md: &berth_store::inroot::Stat,
        compute: impl FnOnce() -> String,
    ) -> String {
        let id = Self::identity(md);
        if let Some(h) = self.map.get(&id) {
            return h.clone();
        }
        let h = compute();
        let now = std::time::SystemTime::now();
        let still = |secs: i64, nsec: u64| {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::new(secs.max(0) as u64, nsec.min(999_999_999) as u32);
            now.duration_since(t).is_ok_and(|d| d.as_secs() >= 2)
        };
        // st_*_nsec is u64 here, i64 on some other targets.
        #[allow(clippy::unnecessary_cast)]
        if still(md.st_mtime, md.st_mtime_nsec as u64)
            && still(md.st_ctime, md.st_ctime_nsec as u64)
        {
            self.map.insert(id, h.clone());
            self.dirty = true;
        }
        h
    }

    /// Writes what was learnt (best effort; at most 100 000 entries, the
    /// newest learnt kept).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        if self.map.len() > 100_000 {
            self.map.clear();
        }
        if let Ok(b) = serde_json::to_vec(&self.map) {
            let _ = write_atomic(&self.path, &b);
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod hash_cache_tests {
    use super::*;

    #[test]
    fn remembers_still_files_by_identity_only() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "one").unwrap();
        // Two seconds in the past: not racy.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let mut c = HashCache::load(d.path());
        let md = rustix::fs::lstat(&f).unwrap();
        assert_eq!(c.get(&md, || "h1".into()), "h1");
        assert_eq!(c.get(&md, || panic!("remembered")), "h1");
        c.save();
        let mut c = HashCache::load(d.path());
        assert_eq!(c.get(&md, || panic!("remembered across builds")), "h1");
        // Any change of the file changes its identity.
        std::fs::write(&f, "two").unwrap();
        let md2 = rustix::fs::lstat(&f).unwrap();
        assert_eq!(c.get(&md2, || "h2".into()), "h2");
        // ...and a file changed just now is not remembered (racy).
        assert_eq!(c.get(&md2, || "h3".into()), "h3");
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    /// Two stages built at once may write the same record: every write is
    /// whole, and no temp file stays.
    #[test]
    fn concurrent_writes_of_one_record_stay_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.json");
        std::thread::scope(|s| {
            for t in 0..2u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..200 {
                        write_atomic(p, &vec![b'a' + t; 64 << 10]).unwrap();
                    }
                });
            }
        });
        let b = std::fs::read(&p).unwrap();
        assert!(b.len() == 64 << 10 && b.iter().all(|x| *x == b[0]));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
