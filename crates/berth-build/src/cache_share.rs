//! The layer cache shared between machines (`--cache-to` / `--cache-from`),
//! in BuildKit's cache format: an OCI image manifest (BuildKit's
//! `image-manifest=true` form, which every registry stores; the older form,
//! an index listing the blobs, is read too) whose config is an
//! `application/vnd.buildkit.cacheconfig.v0` document and whose layers are
//! the cached layer blobs, annotated with their diff ids. The cache
//! config's `layers` form chains (each names its `parent`), and its
//! `records` name a step's cache key and the top layer of what it made.
//!
//! BuildKit's keys are digests of its LLB graph and berth's are digests of
//! its instructions and inputs ([`crate::cache::key`]), so each reads the
//! other's documents but neither hits the other's records. berth adds,
//! under keys BuildKit ignores, each record's image config (`berth.config`)
//! and the finished stages' configs (`berth.stages`), so a build restored
//! whole gives the same image id as the build that wrote the cache.
//!
//! Where the cache is kept is a [`Transport`]: a registry (the CLI's, over
//! the registry client) or an OCI layout directory ([`LocalDir`]). Written
//! by hand: no crate reads or writes BuildKit's cache documents.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_store::Store;
use berth_types::image::{AnyManifest, media_types};
use berth_types::{Descriptor, Digest, ImageConfig, Manifest};
use serde::{Deserialize, Serialize};

use crate::cache::Record;

/// The cache config's media type.
pub const CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
/// A layer descriptor's uncompressed digest (containerd's and BuildKit's).
const DIFF_ID: &str = "containerd.io/uncompressed";
/// The largest cache config read (it lists every step of every build).
const MAX_CONFIG: u64 = 64 << 20;

/// BuildKit's cache config document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheConfig {
    /// The layer blobs, each with its parent's index (-1 for none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    /// The steps' results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<CacheRecord>,
    /// berth: the configs of finished stages, by their chain key.
    #[serde(
        rename = "berth.stages",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub stages: BTreeMap<String, ImageConfig>,
}

/// One layer of the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The blob.
    pub blob: Digest,
    /// The index of the layer below it; -1 for a bottom layer (BuildKit
    /// omits 0, so a missing parent reads as 0).
    #[serde(default)]
    pub parent: i64,
    /// What the blob is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// A layer's media type, diff id and size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerAnnotations {
    /// The blob's media type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The uncompressed digest.
    #[serde(rename = "diffID", default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The blob's size.
    #[serde(default)]
    pub size: u64,
}

/// One step's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The step's cache key.
    pub digest: String,
    /// Its result: the index of its top layer.
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CacheResult>,
    /// BuildKit's links to the records it was made from (berth's keys
    /// chain already; kept for BuildKit's readers, never read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<serde_json::Value>,
    /// berth: the image config after the step.
    #[serde(
        rename = "berth.config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<ImageConfig>,
}

/// A record's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheResult {
    /// The index of the result's top layer.
    pub layer: usize,
}

/// The cache documents for `records` (step key → result) and `stages`
/// (stage key → finished config): the cache config, and the layer blobs
/// it names, each once, as the manifest lists them.
pub fn export(
    records: &BTreeMap<String, Record>,
    stages: &BTreeMap<String, ImageConfig>,
) -> (CacheConfig, Vec<Descriptor>) {
    let mut cfg = CacheConfig {
        stages: stages.clone(),
        ..Default::default()
    };
    let mut at: BTreeMap<(Digest, i64), usize> = BTreeMap::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    for (key, rec) in records {
        let mut parent: i64 = -1;
        for (i, l) in rec.layers.iter().enumerate() {
            let diff_id = rec.config.rootfs.diff_ids.get(i).cloned();
            let idx = *at.entry((l.digest.clone(), parent)).or_insert_with(|| {
                cfg.layers.push(CacheLayer {
                    blob: l.digest.clone(),
                    parent,
                    annotations: Some(LayerAnnotations {
                        media_type: l.media_type.clone(),
                        diff_id: diff_id.clone(),
                        size: l.size,
                    }),
                });
                cfg.layers.len() - 1
            });
            if !blobs.iter().any(|b| b.digest == l.digest) {
                let mut d = Descriptor::new(&l.media_type, l.digest.clone(), l.size);
                if let Some(id) = &diff_id {
                    d.annotations = Some(BTreeMap::from([(DIFF_ID.to_string(), id.to_string())]));
                }
                blobs.push(d);
            }
            parent = idx as i64;
        }
        cfg.records.push(CacheRecord {
            digest: format!("sha256:{key}"),
            results: (parent >= 0)
                .then_some(CacheResult {
                    layer: parent as usize,
                })
                .into_iter()
                .collect(),
            inputs: Vec::new(),
            config: Some(rec.config.clone()),
        });
    }
    (cfg, blobs)
}

/// The records and stages a cache config holds for berth: each record's
/// layer chain (bottom first) rebuilt from the parent links and checked
/// against its config's diff ids. A record that does not add up (a chain
/// that loops, runs off the table, or names other diff ids) is left out:
/// the cache is another machine's word, and a bad record only misses.
pub fn import(cfg: &CacheConfig) -> (BTreeMap<String, Record>, BTreeMap<String, ImageConfig>) {
    let mut out = BTreeMap::new();
    for r in &cfg.records {
        let (Some(config), Some(key)) = (&r.config, r.digest.strip_prefix("sha256:")) else {
            continue;
        };
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let chain = match r.results.first() {
            None => Some(Vec::new()),
            Some(res) => chain_of(cfg, res.layer),
        };
        let Some(chain) = chain else { continue };
        if chain.len() != config.rootfs.diff_ids.len() {
            continue;
        }
        let agrees = chain.iter().zip(&config.rootfs.diff_ids).all(|(l, d)| {
            l.annotations
                .as_ref()
                .and_then(|a| a.diff_id.as_ref())
                .is_none_or(|x| x == d)
        });
        if !agrees {
            continue;
        }
        let layers = chain
            .iter()
            .map(|l| {
                let a = l.annotations.clone().unwrap_or_default();
                let mt = if a.media_type.is_empty() {
                    media_types::OCI_LAYER_GZIP.to_string()
                } else {
                    a.media_type
                };
                Descriptor::new(&mt, l.blob.clone(), a.size)
            })
            .collect();
        out.insert(
            key.to_ascii_lowercase(),
            Record {
                config: config.clone(),
                layers,
            },
        );
    }
    (out, cfg.stages.clone())
}

/// The layers from the bottom up to layer `top`, or None when the links
/// leave the table or loop.
fn chain_of(cfg: &CacheConfig, top: usize) -> Option<Vec<&CacheLayer>> {
    let mut chain = Vec::new();
    let mut i = top as i64;
    while i >= 0 {
        let l = cfg.layers.get(i as usize)?;
        if chain.len() >= cfg.layers.len() {
            return None;
        }
        chain.push(l);
        i = l.parent;
    }
    chain.reverse();
    Some(chain)
}

/// Where a shared cache is kept.
pub trait Transport: Send + Sync {
    /// How it is named in progress lines (`registry host/cache:tag`).
    fn describe(&self) -> String;
    /// The cache manifest's bytes; None when there is no cache there yet.
    fn manifest(&self) -> Result<Option<Vec<u8>>, String>;
    /// A small blob (the cache config), at most `max` bytes, verified.
    fn blob(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>, String>;
    /// A layer blob, into the store (verified against its digest).
    fn fetch(&self, store: &Store, d: &Descriptor) -> Result<(), String>;
    /// Writes the cache: `manifest` (whose config and layers are in the
    /// store) as `bytes`.
    fn write(&self, store: &Store, manifest: &Manifest, bytes: &[u8]) -> Result<(), String>;
}

/// A cache read from a [`Transport`] for `--cache-from`: its records,
/// whose layers are fetched when a step hits one.
pub struct Remote {
    transport: Arc<dyn Transport>,
    records: BTreeMap<String, Record>,
    stages: BTreeMap<String, ImageConfig>,
}

impl Remote {
    /// Reads the cache `transport` holds: None when there is none there
    /// yet (a first CI run), an error when what is there cannot be read.
    pub fn load(transport: Arc<dyn Transport>) -> Result<Option<Remote>, String> {
        let what = transport.describe();
        let Some(bytes) = transport.manifest()? else {
            return Ok(None);
        };
        let config_desc = match AnyManifest::parse(&bytes, None) {
            Ok(AnyManifest::Image(m)) if m.config.media_type == CACHE_CONFIG => m.config.clone(),
            Ok(AnyManifest::Index(ix)) => ix
                .manifests
                .iter()
                .find(|d| d.media_type == CACHE_CONFIG)
                .cloned()
                .ok_or_else(|| format!("{what}: the index holds no build cache config"))?,
            Ok(_) => return Err(format!("{what}: not a build cache (an image?)")),
            Err(e) => return Err(format!("{what}: {e}")),
        };
        let cfg_bytes = transport.blob(&config_desc, MAX_CONFIG)?;
        let cfg: CacheConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| format!("{what}: cache config {}: {e}", config_desc.digest))?;
        let (records, stages) = import(&cfg);
        Ok(Some(Remote {
            transport,
            records,
            stages,
        }))
    }

    /// Where it is read from.
    pub fn describe(&self) -> String {
        self.transport.describe()
    }

    /// How many step results it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no step result.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether it has step `key`'s result.
    pub fn has(&self, key: &str) -> bool {
        self.records.contains_key(key)
    }

    /// Step `key`'s result with its layer blobs in the store (fetched when
    /// missing) and unpacked.
    pub fn restore(&self, store: &Store, key: &str) -> Option<Result<Record, String>> {
        let rec = self.records.get(key)?;
        let fetched = (|| {
            for l in &rec.layers {
                if !store.content.exists(&l.digest) {
                    self.transport.fetch(store, l)?;
                }
            }
            let blobs: Vec<Digest> = rec.layers.iter().map(|l| l.digest.clone()).collect();
            store
                .unpack(&blobs, &rec.config.rootfs.diff_ids)
                .map_err(|e| e.to_string())?;
            Ok(rec.clone())
        })();
        Some(fetched)
    }

    /// A finished stage's config under chain key `key`.
    pub fn stage(&self, key: &str) -> Option<ImageConfig> {
        self.stages.get(key).cloned()
    }
}

/// Writes `records` and `stages` to `transport` as one cache manifest (the
/// cache config stored in the store first, like any blob it pushes).
pub fn write(
    store: &Store,
    transport: &dyn Transport,
    records: &BTreeMap<String, Record>,
    stages: &BTreeMap<String, ImageConfig>,
) -> Result<Digest, String> {
    let (cfg, layers) = export(records, stages);
    let cfg_bytes = serde_json::to_vec(&cfg).expect("cache config serialises");
    let cfg_digest = store
        .content
        .put(&cfg_bytes, None)
        .map_err(|e| e.to_string())?;
    let mut manifest = Manifest::oci(cfg_digest, cfg_bytes.len() as u64, layers);
    manifest.config.media_type = CACHE_CONFIG.to_string();
    let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    transport.write(store, &manifest, &bytes)?;
    Ok(Digest::sha256_of(&bytes))
}

/// A cache kept in an OCI image layout directory (`type=local`): blobs
/// under `blobs/sha256/`, the cache manifest named by `tag` in
/// `index.json`, as BuildKit's local cache keeps it.
pub struct LocalDir {
    dir: PathBuf,
    tag: String,
}

impl LocalDir {
    /// The layout at `dir`; `tag` names the cache in its index (BuildKit's
    /// default is `latest`).
    pub fn new(dir: &Path, tag: &str) -> LocalDir {
        LocalDir {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Opens a blob of the layout without following a symlink out of it.
    fn open_blob(&self, d: &Digest) -> Result<std::fs::File, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.blob_path(d);
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Copies a blob of the store into the layout, unless it is there.
    fn put_blob(&self, store: &Store, d: &Digest) -> Result<(), String> {
        let dest = self.blob_path(d);
        if dest.exists() {
            return Ok(());
        }
        // Streamed (layers can be large): copied beside its place, synced,
        // renamed in.
        let tmp = dest.with_file_name(berth_fs::unique_name(".tmp-"));
        let copied = std::fs::copy(store.content.path(d), &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &dest));
        copied.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("blob {d} into {}: {e}", dest.display())
        })
    }
}

impl Transport for LocalDir {
    fn describe(&self) -> String {
        format!("local {}", self.dir.display())
    }

    fn manifest(&self) -> Result<Option<Vec<u8>>, String> {
        let index_path = self.dir.join("index.json");
        let bytes = match std::fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", index_path.display())),
        };
        let index: berth_types::Index =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", index_path.display()))?;
        let named = |d: &&Descriptor| {
            d.annotation(berth_types::image::annotations::REF_NAME) == Some(self.tag.as_str())
        };
        let Some(d) = index
            .manifests
            .iter()
            .find(named)
            .or(index.manifests.first())
        else {
            return Ok(None);
        };
        self.blob(d, 4 << 20).map(Some)
    }

    fn blob(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>, String> {
        let f = self.open_blob(&d.digest)?;
        let mut body = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("blob {}: {e}", d.digest))?;
        if body.len() as u64 > max {
            return Err(format!("blob {}: larger than {max} bytes", d.digest));
        }
        let actual = Digest::sha256_of(&body);
        if actual != d.digest {
            return Err(format!(
                "blob {}: the file holds {actual} (corrupt or replaced)",
                d.digest
            ));
        }
        Ok(body)
    }

    fn fetch(&self, store: &Store, d: &Descriptor) -> Result<(), String> {
        let mut f = self.open_blob(&d.digest)?;
        let mut w = store.content.writer().map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut w).map_err(|e| format!("blob {}: {e}", d.digest))?;
        w.commit(Some(&d.digest), Some(d.size).filter(|s| *s > 0))
            .map(drop)
            .map_err(|e| format!("blob {}: {e}", d.digest))
    }

    fn write(&self, store: &Store, manifest: &Manifest, bytes: &[u8]) -> Result<(), String> {
        let blobs = self.dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.put_blob(store, &d.digest)?;
        }
        let digest = Digest::sha256_of(bytes);
        berth_fs::atomic_write(&self.blob_path(&digest), bytes).map_err(|e| e.to_string())?;
        berth_fs::atomic_write(
            &self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .map_err(|e| e.to_string())?;
        let mut desc = Descriptor::new(media_types::OCI_MANIFEST, digest, bytes.len() as u64);
        desc.annotations = Some(BTreeMap::from([(
            berth_types::image::annotations::REF_NAME.to_string(),
            self.tag.clone(),
        )]));
        // Other names in the layout stay; this one moves to the new cache.
        let mut index = std::fs::read(self.dir.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<berth_types::Index>(&b).ok())
            .unwrap_or_default();
        index.manifests.retain(|d| {
            d.annotation(berth_types::image::annotations::REF_NAME) != Some(self.tag.as_str())
        });
        index.manifests.push(desc);
        let body = serde_json::to_vec_pretty(&index).expect("index serialises");
        berth_fs::atomic_write(&self.dir.join("index.json"), &body).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> (Descriptor, Digest) {
        let blob = Digest::sha256_of(&[n]);
        let diff = Digest::sha256_of(&[n, n]);
        (
            Descriptor::new(media_types::OCI_LAYER_GZIP, blob, 100 + n as u64),
            diff,
        )
    }

    fn record(layers: &[(Descriptor, Digest)]) -> Record {
        let mut config = ImageConfig::new_for_host();
        config.rootfs.diff_ids = layers.iter().map(|l| l.1.clone()).collect();
        Record {
            config,
            layers: layers.iter().map(|l| l.0.clone()).collect(),
        }
    }

    #[test]
    fn records_round_trip_through_buildkit_s_document() {
        let (a, b, c) = (layer(1), layer(2), layer(3));
        let mut records = BTreeMap::new();
        let k1 = "1".repeat(64);
        let k2 = "2".repeat(64);
        let k3 = "3".repeat(64);
        records.insert(k1.clone(), record(std::slice::from_ref(&a)));
        records.insert(k2.clone(), record(&[a.clone(), b.clone()]));
        // A branch on the same base: layer a is shared, not repeated.
        records.insert(k3.clone(), record(&[a.clone(), c.clone()]));
        let stages = BTreeMap::from([(k2.clone(), record(&[a.clone(), b.clone()]).config)]);
        let (cfg, blobs) = export(&records, &stages);
        assert_eq!(cfg.layers.len(), 3, "{cfg:?}");
        assert_eq!(blobs.len(), 3);
        assert_eq!(
            blobs[0].annotation(DIFF_ID),
            Some(a.1.to_string().as_str()),
            "layers carry their diff id as BuildKit's do"
        );
        // The document is BuildKit's shape: a bottom layer's parent is -1,
        // a record's result names its top layer.
        let json: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["layers"][0]["parent"], -1);
        assert!(json["records"][0]["layers"][0]["layer"].is_u64());
        assert!(
            json["records"][0]["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let back: CacheConfig = serde_json::from_value(json).unwrap();
        let (got, got_stages) = import(&back);
        assert_eq!(got.len(), 3);
        for (k, r) in &records {
            assert_eq!(got[k].layers, r.layers, "{k}");
            assert_eq!(got[k].config.rootfs.diff_ids, r.config.rootfs.diff_ids);
        }
        assert_eq!(got_stages.len(), 1);
    }

    #[test]
    fn hostile_records_are_left_out() {
        let a = layer(1);
        let mut records = BTreeMap::new();
        records.insert("4".repeat(64), record(std::slice::from_ref(&a)));
        let (mut cfg, _) = export(&records, &BTreeMap::new());
        // A loop in the parent links.
        let mut looped = cfg.clone();
        looped.layers[0].parent = 0;
        assert!(import(&looped).0.is_empty());
        // A result past the table.
        let mut past = cfg.clone();
        past.records[0].results[0].layer = 9;
        assert!(import(&past).0.is_empty());
        // A chain whose diff ids are not its config's.
        let mut other = cfg.clone();
        other.layers[0].annotations.as_mut().unwrap().diff_id = Some(Digest::sha256_of(b"x"));
        assert!(import(&other).0.is_empty());
        // A key that is not a sha256 (it names a file nowhere, but is refused).
        cfg.records[0].digest = "sha256:../../etc".into();
        assert!(import(&cfg).0.is_empty());
    }

    #[test]
    fn a_local_layout_keeps_the_cache_and_refuses_a_replaced_blob() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let body = b"layer bytes".to_vec();
        let blob = store.content.put(&body, None).unwrap();
        let mut rec = record(&[]);
        rec.layers = vec![Descriptor::new(
            media_types::OCI_LAYER,
            blob.clone(),
            body.len() as u64,
        )];
        rec.config.rootfs.diff_ids = vec![blob.clone()];
        let records = BTreeMap::from([("5".repeat(64), rec)]);
        let dir = t.path().join("cache");
        let local = Arc::new(LocalDir::new(&dir, "latest"));
        assert!(
            Remote::load(local.clone()).unwrap().is_none(),
            "no cache yet"
        );
        write(&store, local.as_ref(), &records, &BTreeMap::new()).unwrap();
        assert!(dir.join("oci-layout").is_file());
        let remote = Remote::load(local.clone()).unwrap().expect("a cache");
        assert_eq!(remote.len(), 1);
        // Into another store: the blob comes from the layout, verified.
        let other = Store::open(&t.path().join("other")).unwrap();
        let d = &records[&"5".repeat(64)].layers[0];
        local.fetch(&other, d).unwrap();
        assert_eq!(other.content.read(&blob).unwrap(), body);
        // A blob file replaced by other bytes is refused by digest.
        let other2 = Store::open(&t.path().join("other2")).unwrap();
        std::fs::write(local.blob_path(&blob), b"evil").unwrap();
        let e = local.fetch(&other2, d).unwrap_err();
        assert!(e.contains(&blob.to_string()), "{e}");
        assert!(!other2.content.exists(&blob));
    }
}
