//! Named volumes (`volumes/<name>/_data`), and the parsing of `-v`, `--mount`
//! and `--tmpfs` into mount points, with docker's rules: `-v /host:/ctr`
//! creates a missing host directory, `--mount type=bind` refuses one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::container::MountPoint;
use crate::{Engine, EngineError, Result};

/// `volume inspect` data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Driver (`local`).
    pub driver: String,
    /// Where the data lives.
    pub mountpoint: String,
    /// Creation time.
    pub created_at: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Scope.
    pub scope: String,
}

fn valid_volume_name(n: &str) -> bool {
    crate::container::valid_name(n) || (n.len() == 1 && n.as_bytes()[0].is_ascii_alphanumeric())
}

impl Engine {
    fn volume_dir(&self, name: &str) -> PathBuf {
        self.root().join("volumes").join(name)
    }

    /// Creates a volume (existing is fine, as in docker).
    pub fn volume_create(&self, name: &str) -> Result<Volume> {
        self.volume_create_with(name, &Default::default())
    }

    /// [`Engine::volume_create`] with labels (kept in `labels.json` beside
    /// the data, written when the volume is made; an existing volume keeps
    /// its own, as docker's does).
    pub fn volume_create_with(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Volume> {
        if !valid_volume_name(name) {
            return Err(EngineError::Invalid(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        let d = self.volume_dir(name).join("_data");
        let new = !d.exists();
        if new && !labels.is_empty() {
            let dir = self.volume_dir(name);
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("mkdir", &dir, e))?;
            let p = dir.join("labels.json");
            berth_fs::atomic_write(&p, &serde_json::to_vec(labels).expect("labels"))
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        std::fs::create_dir_all(&d).map_err(|e| EngineError::io("mkdir", &d, e))?;
        if new {
            let mut a = std::collections::BTreeMap::new();
            a.insert("driver".to_string(), "local".to_string());
            self.event("volume", "create", name, a);
        }
        self.volume_inspect(name)
    }

    /// A volume's details.
    pub fn volume_inspect(&self, name: &str) -> Result<Volume> {
        let d = self.volume_dir(name);
        let md = std::fs::metadata(d.join("_data"))
            .map_err(|_| EngineError::VolumeNotFound(name.to_string()))?;
        let created = md
            .created()
            .or_else(|_| md.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        Ok(Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: d.join("_data").display().to_string(),
            created_at: created,
            labels: std::fs::read(d.join("labels.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            scope: "local".into(),
        })
    }

    /// Every volume.
    pub fn volumes(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root().join("volumes")) {
            for e in rd.flatten() {
                if let Ok(v) = self.volume_inspect(&e.file_name().to_string_lossy()) {
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names of volumes used by any container.
    pub fn volumes_in_use(&self) -> Result<Vec<(String, String)>> {
        let mut used = Vec::new();
        for c in self.containers()? {
            for m in &c.mounts {
                if m.typ == "volume" {
                    used.push((m.name.clone(), c.id.clone()));
                }
            }
        }
        Ok(used)
    }

    /// Removes a volume not in use (with `force`, even then).
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        self.volume_inspect(name)?;
        if !force && let Some((_, id)) = self.volumes_in_use()?.into_iter().find(|(n, _)| n == name)
        {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{id}]"
            )));
        }
        let d = self.volume_dir(name);
        std::fs::remove_dir_all(&d).map_err(|e| EngineError::io("remove", &d, e))?;
        let mut a = std::collections::BTreeMap::new();
        a.insert("driver".to_string(), "local".to_string());
        self.event("volume", "destroy", name, a);
        Ok(())
    }

    /// Removes unused volumes (anonymous ones only unless `all`); returns names.
    pub fn volume_prune(&self, all: bool) -> Result<Vec<String>> {
        let used: Vec<String> = self.volumes_in_use()?.into_iter().map(|(n, _)| n).collect();
        let mut removed = Vec::new();
        for v in self.volumes()? {
            let anonymous = v.name.len() == 64 && v.name.bytes().all(|b| b.is_ascii_hexdigit());
            if !used.contains(&v.name) && (all || anonymous) {
                self.volume_remove(&v.name, false)?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    /// Parses `-v src:dst[:opts]` (bind when src is a path, else a named volume;
    /// `-v /dst` alone is an anonymous volume).
    pub fn parse_bind(&self, spec: &str) -> Result<MountPoint> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => {
                return Err(EngineError::Invalid(format!(
                    "invalid volume specification: '{spec}'"
                )));
            }
        };
        if !dst.starts_with('/') {
            return Err(EngineError::Invalid(format!(
                "invalid volume specification: '{spec}': invalid mount config for type \"volume\": invalid mount path: '{dst}' mount path must be absolute"
            )));
        }
        if dst.split('/').all(|c| c.is_empty() || c == ".") {
            let typ = if src.starts_with(['/', '.']) {
                "bind"
            } else {
                "volume"
            };
            return Err(EngineError::Invalid(format!(
                "invalid volume specification: '{spec}': invalid mount config for type \"{typ}\": invalid specification: destination can't be '/'"
            )));
        }
        let mut rw = true;
        let mut options = Vec::new();
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => rw = false,
                "rw" => rw = true,
                "z" | "Z" | "nocopy" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    options.push(o.to_string())
                }
                _ => return Err(EngineError::Invalid(format!("invalid mode: {o}"))),
            }
        }
        if src.starts_with('/') || src.starts_with('.') {
            let p = Path::new(src);
            if !p.is_absolute() {
                return Err(EngineError::Invalid(format!(
                    "invalid volume specification: '{spec}': bind source must be absolute"
                )));
            }
            // docker creates a missing host directory for -v.
            if !p.exists() {
                std::fs::create_dir_all(p).map_err(|e| EngineError::io("mkdir", p, e))?;
            }
            return Ok(MountPoint {
                typ: "bind".into(),
                name: String::new(),
                source: src.to_string(),
                destination: dst.to_string(),
                rw,
                options,
            });
        }
        let name = if src.is_empty() {
            crate::container::new_id()
        } else {
            src.to_string()
        };
        let v = self.volume_create(&name)?;
        Ok(MountPoint {
            typ: "volume".into(),
            name,
            source: v.mountpoint,
            destination: dst.to_string(),
            rw,
            options,
        })
    }

    /// Parses `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]`.
    pub fn parse_mount(&self, spec: &str) -> Result<MountPoint> {
        let mut typ = "volume".to_string();
        let (mut src, mut dst, mut ro) = (String::new(), String::new(), false);
        let mut tmpfs_opts = Vec::new();
        for kv in spec.split(',') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "type" => typ = v.to_string(),
                "source" | "src" => src = v.to_string(),
                "target" | "destination" | "dst" => dst = v.to_string(),
                "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
                "tmpfs-size" => tmpfs_opts.push(format!("size={v}")),
                "tmpfs-mode" => tmpfs_opts.push(format!("mode={v}")),
                "bind-propagation" | "consistency" | "volume-nocopy" => {}
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "invalid field '{k}' must be a key=value pair"
                    )));
                }
            }
        }
        if dst.is_empty() {
            return Err(EngineError::Invalid(
                "invalid argument for --mount: target is required".into(),
            ));
        }
        if dst.split('/').all(|c| c.is_empty() || c == ".") {
            return Err(EngineError::Invalid(format!(
                "invalid mount config for type \"{typ}\": invalid specification: destination can't be '/'"
            )));
        }
        match typ.as_str() {
            "bind" => {
                if !Path::new(&src).exists() {
                    return Err(EngineError::Invalid(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                    )));
                }
                Ok(MountPoint {
                    typ,
                    name: String::new(),
                    source: src,
                    destination: dst,
                    rw: !ro,
                    options: vec![],
                })
            }
            "volume" => {
                let mut m = self.parse_bind(&format!("{src}:{dst}"))?;
                m.rw = !ro;
                Ok(m)
            }
            "tmpfs" => Ok(MountPoint {
                typ,
                name: String::new(),
                source: "tmpfs".into(),
                destination: dst,
                rw: true,
                options: tmpfs_opts,
            }),
            other => Err(EngineError::Invalid(format!(
                "invalid mount type {other:?}"
            ))),
        }
    }
}
