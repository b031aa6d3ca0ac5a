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

fn write_atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, p)
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
                    n += 1;
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join("steps"));
        // RUN --mount=type=cache directories go with the cache, as with BuildKit.
        let _ = std::fs::remove_dir_all(self.dir.join("mounts"));
        std::fs::create_dir_all(self.dir.join("steps"))?;
        Ok(n)
    }
}
