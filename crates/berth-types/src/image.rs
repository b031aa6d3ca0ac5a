//! Image documents: descriptors, manifests, indexes and image configs, in both the
//! OCI and the Docker v2 schema 2 media types.
//!
//! These are our own serde structs rather than `oci_spec::image`'s because berth must
//! write byte-stable documents (a digest is a hash of the bytes, so annotation maps must
//! serialise in a fixed order — oci-spec uses `HashMap`), must carry Docker's config
//! extensions (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`) that oci-spec drops,
//! and must keep unknown fields of documents it did not write (`extra`), so a config it
//! re-serialises after a `--change` loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;

/// Media type strings berth reads and writes.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable gzip layer (accepted on read).
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker foreign (non-distributable) layer.
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker v2 schema 1 manifest (refused with a clear error).
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker v2 schema 1 signed manifest (refused with a clear error).
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Whether `mt` is a single-image manifest type.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// Whether `mt` is a multi-platform index type.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }

    /// Whether `mt` is a layer type berth can unpack.
    pub fn is_layer(mt: &str) -> bool {
        matches!(
            mt,
            OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | OCI_LAYER_NONDIST_GZIP
                | DOCKER_LAYER_GZIP
                | DOCKER_LAYER_FOREIGN
                | "application/vnd.oci.image.layer.nondistributable.v1.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        )
    }
}

/// Annotation keys berth uses.
pub mod annotations {
    /// OCI image layout reference name.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// containerd's full image name annotation (what `ctr import` reads).
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
    /// Image creation time.
    pub const CREATED: &str = "org.opencontainers.image.created";
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size of the content in bytes.
    pub size: u64,
    /// Alternate download locations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform, in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Embedded data (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    /// A plain descriptor of `media_type`, `digest` and `size`.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
            data: None,
        }
    }

    /// An annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (GOARCH spelling).
    pub architecture: String,
    /// Operating system (GOOS spelling).
    pub os: String,
    /// OS version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v8`, `v7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, in Go's names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = (arch == "arm64").then(|| "v8".to_string());
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant,
            ..Default::default()
        }
    }

    /// Parses `os/arch[/variant]` as `--platform` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        let (arch, mut variant) = (parts[1].to_string(), parts.get(2).map(|v| v.to_string()));
        if arch == "arm64" && variant.is_none() {
            variant = Some("v8".into());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: arch,
            variant,
            ..Default::default()
        })
    }

    /// Whether an index entry for `other` can run where `self` was asked for
    /// (arm64's variant defaults to v8, as containerd's matcher does).
    pub fn matches(&self, other: &Platform) -> bool {
        let norm_variant = |p: &Platform| match (p.architecture.as_str(), &p.variant) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.clone(),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || norm_variant(self) == norm_variant(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker v2 schema 2; the shapes are the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Subject, for the referrers API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// An OCI image manifest of the config `config` (its digest and size)
    /// and `layers`.
    pub fn oci(config: Digest, config_size: u64, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config: Descriptor::new(media_types::OCI_CONFIG, config, config_size),
            layers,
            subject: None,
            annotations: None,
        }
    }
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Subject, for the referrers API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Index {
    /// An empty OCI index.
    pub fn new() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        }
    }

    /// The entry for `platform`, as docker picks it (first match wins).
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            media_types::is_manifest(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| platform.matches(p))
        })
    }
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

/// Either kind of top-level manifest document, told apart by media type or shape.
#[derive(Debug, Clone)]
pub enum AnyManifest {
    /// A single-platform image.
    Image(Box<Manifest>),
    /// A multi-platform index.
    Index(Box<Index>),
}

/// Why a manifest document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("invalid manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// Schema 1 manifests are deprecated and unsupported (as in docker 28).
    #[error(
        "unsupported manifest media type {0:?}: Docker Image manifest version 2, schema 1 is no longer supported; the image must be rebuilt or pushed again"
    )]
    Schema1(String),
    /// Some other media type.
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
}

impl AnyManifest {
    /// Parses `bytes`, using `content_type` (from a registry or a descriptor) when
    /// given, else the document's own `mediaType`, else its shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            schema_version: Option<u32>,
            #[serde(default)]
            manifests: Option<Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        let mt = content_type
            .filter(|c| {
                !c.is_empty() && *c != "application/json" && *c != "application/octet-stream"
            })
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .or(probe.media_type);
        match mt.as_deref() {
            Some(m) if media_types::is_manifest(m) => {
                Ok(AnyManifest::Image(Box::new(serde_json::from_slice(bytes)?)))
            }
            Some(m) if media_types::is_index(m) => {
                Ok(AnyManifest::Index(Box::new(serde_json::from_slice(bytes)?)))
            }
            Some(m)
                if m == media_types::DOCKER_MANIFEST_V1
                    || m == media_types::DOCKER_MANIFEST_V1_SIGNED =>
            {
                Err(ManifestError::Schema1(m.to_string()))
            }
            Some(m) => Err(ManifestError::MediaType(m.to_string())),
            None if probe.schema_version == Some(1) => Err(ManifestError::Schema1(
                media_types::DOCKER_MANIFEST_V1.to_string(),
            )),
            None if probe.manifests.is_some() => {
                Ok(AnyManifest::Index(Box::new(serde_json::from_slice(bytes)?)))
            }
            None => Ok(AnyManifest::Image(Box::new(serde_json::from_slice(bytes)?))),
        }
    }
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub typ: String,
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One entry of an image's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The command (`/bin/sh -c #(nop) CMD ["world"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when this step added no layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            typ: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Docker's HEALTHCHECK configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Nanoseconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Nanoseconds before a check is considered hung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Start period in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Start interval in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The `config` object of an image config: how to run the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `user`, `uid`, `user:group`, `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The default command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `"/data": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal (`SIGTERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker extension: HEALTHCHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker extension: ONBUILD triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker extension: SHELL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Docker extension (Windows): ArgsEscaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Fields this struct does not name (docker's Hostname, AttachStdin, …), kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ContainerConfig {
    /// The value of `key` in Env, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.as_ref()?.iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in Env, replacing an earlier value in place (docker's order).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
}

/// An image config (`application/vnd.oci.image.config.v1+json`), with Docker's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// How to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers.
    pub rootfs: RootFs,
    /// The history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields this struct does not name (docker's `container_config`, `docker_version`, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ImageConfig {
    /// A config for the host platform with no layers.
    pub fn new_for_host() -> Self {
        let p = Platform::host();
        ImageConfig {
            architecture: p.architecture,
            variant: p.variant,
            os: p.os,
            rootfs: RootFs {
                typ: "layers".to_string(),
                diff_ids: Vec::new(),
            },
            ..Default::default()
        }
    }

    /// The run config, created empty if absent.
    pub fn config_mut(&mut self) -> &mut ContainerConfig {
        self.config.get_or_insert_with(ContainerConfig::default)
    }

    /// Serialises to the canonical bytes berth stores (compact JSON, fields in struct order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("image config serialises")
    }

    /// The platform this config is for.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}

/// The chain ids of a list of diff ids: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`, per the OCI image spec.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn config_round_trip_keeps_unknown_fields() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]},"docker_version":"20.10","container_config":{"Cmd":["x"]}}"#;
        let c: ImageConfig = serde_json::from_str(raw).unwrap();
        assert_eq!(c.config.as_ref().unwrap().env_get("PATH"), Some("/bin"));
        let back: Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        assert_eq!(back["docker_version"], "20.10");
        assert_eq!(back["config"]["Hostname"], "");
        assert_eq!(back["container_config"]["Cmd"][0], "x");
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ContainerConfig::default();
        c.env_set("A", "1");
        c.env_set("B", "2");
        c.env_set("A", "3");
        assert_eq!(c.env.unwrap(), vec!["A=3".to_string(), "B=2".to_string()]);
    }

    #[test]
    fn manifest_kinds() {
        let idx = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1,"platform":{"architecture":"arm64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":2,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let AnyManifest::Index(i) = AnyManifest::parse(idx, None).unwrap() else {
            panic!("expected an index")
        };
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(i.select(&amd).unwrap().size, 2);
        let arm = Platform::parse("linux/arm64").unwrap();
        assert_eq!(i.select(&arm).unwrap().size, 1);
        assert!(i.select(&Platform::parse("linux/s390x").unwrap()).is_none());
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            AnyManifest::parse(v1, None),
            Err(ManifestError::Schema1(_))
        ));
    }
}
