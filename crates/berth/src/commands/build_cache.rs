//! `build --cache-to` / `--cache-from`: BuildKit's cache options parsed
//! (`type=registry,ref=…[,mode=max]`, `type=local,dest=…|src=…`, a bare
//! reference), and the registry transport the shared cache travels by (the
//! format and the local directory are `berth_build::cache_share`'s).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use berth_build::cache_share::{LocalDir, Transport};
use berth_registry::client::{self, ErrorKind, Options, Registry};
use berth_store::Store;
use berth_types::{Descriptor, Manifest, Reference};

/// Where one `--cache-to` or `--cache-from` points.
pub struct CacheOption {
    /// Where the cache is kept.
    pub transport: Arc<dyn Transport>,
    /// `mode=max`: every step's result, not only the final image's.
    pub max: bool,
    /// `ignore-error=true`: a failed export does not fail the build.
    pub ignore_error: bool,
}

impl CacheOption {
    /// Parses one option as BuildKit takes it; `to` for `--cache-to`.
    pub fn parse(s: &str, to: bool, config_dir: Option<&Path>) -> anyhow::Result<CacheOption> {
        let flag = if to { "--cache-to" } else { "--cache-from" };
        let mut kv = std::collections::BTreeMap::new();
        if !s.contains('=') {
            // `--cache-from name`: docker's own form, a registry reference.
            kv.insert("type".to_string(), "registry".to_string());
            kv.insert("ref".to_string(), s.to_string());
        } else {
            for part in s.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| anyhow!("{flag} {s}: {part:?} is not key=value"))?;
                kv.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let typ = kv.remove("type").unwrap_or_else(|| "registry".into());
        let max = match kv.remove("mode").as_deref() {
            None | Some("min") => false,
            Some("max") => true,
            Some(m) => bail!("{flag} {s}: mode={m}: must be min or max"),
        };
        let ignore_error = kv.remove("ignore-error").as_deref() == Some("true");
        // Accepted as BuildKit does; berth writes OCI media types and the
        // image-manifest form always.
        for k in ["oci-mediatypes", "image-manifest", "compression"] {
            kv.remove(k);
        }
        let transport: Arc<dyn Transport> = match typ.as_str() {
            "registry" => {
                let r = kv
                    .remove("ref")
                    .ok_or_else(|| anyhow!("{flag} {s}: type=registry needs ref=<name>"))?;
                let r = Reference::parse(&r)
                    .map_err(|e| anyhow!("{flag} {s}: invalid ref {r:?}: {e}"))?
                    .with_default_tag();
                let reg = super::distribution::connect(config_dir, r.domain(), Options::default())?;
                Arc::new(RegistryCache { r, reg })
            }
            "local" => {
                let key = if to { "dest" } else { "src" };
                let dir = kv
                    .remove(key)
                    .ok_or_else(|| anyhow!("{flag} {s}: type=local needs {key}=<dir>"))?;
                let tag = kv.remove("tag").unwrap_or_else(|| "latest".into());
                Arc::new(LocalDir::new(Path::new(&dir), &tag))
            }
            "inline" | "gha" | "s3" | "azblob" => {
                bail!("{flag} {s}: type={typ} is not supported: use type=registry or type=local")
            }
            t => bail!("{flag} {s}: unknown cache type {t:?}"),
        };
        if let Some(k) = kv.keys().next() {
            bail!("{flag} {s}: unknown option {k:?}");
        }
        Ok(CacheOption {
            transport,
            max,
            ignore_error,
        })
    }
}

/// A cache kept in a registry repository under a tag.
struct RegistryCache {
    r: Reference,
    reg: Registry,
}

impl RegistryCache {
    fn scopes(&self, actions: &str) -> Vec<String> {
        vec![client::scope(self.r.path(), actions)]
    }
}

impl Transport for RegistryCache {
    fn describe(&self) -> String {
        format!("registry {}", self.r.familiar())
    }

    fn manifest(&self) -> Result<Option<Vec<u8>>, String> {
        let tag = self.r.tag().unwrap_or("latest");
        match self.reg.manifest(self.r.path(), tag, &self.scopes("pull")) {
            Ok((bytes, _, _)) => Ok(Some(bytes)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.describe())),
        }
    }

    fn blob(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>, String> {
        let body = self
            .reg
            .blob_bytes(self.r.path(), &d.digest, &self.scopes("pull"), max)
            .map_err(|e| format!("{}: {e}", self.describe()))?;
        if berth_types::Digest::sha256_of(&body) != d.digest {
            return Err(format!("{}: blob {} is corrupt", self.describe(), d.digest));
        }
        Ok(body)
    }

    fn fetch(&self, store: &Store, d: &Descriptor) -> Result<(), String> {
        client::pull::fetch_blob(
            store,
            &self.reg,
            self.r.path(),
            &self.scopes("pull"),
            d,
            None,
            None,
        )
        .map(drop)
        .map_err(|e| format!("{}: {e}", self.describe()))
    }

    fn write(&self, store: &Store, manifest: &Manifest, bytes: &[u8]) -> Result<(), String> {
        client::push::push_manifest(store, &self.reg, &self.r, manifest, bytes, &client::Quiet)
            .map(drop)
            .map_err(|e| format!("{}: {e}", self.describe()))
    }
}
