//! Reading and checking a bundle's config.json (oci-spec types), before anything
//! is created: every refusal names the field.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Result, RuntimeError};

/// Reads `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let (p, data) = read_config(bundle)?;
    // ociVersion is required, and oci-spec would fill in its own: looked
    // for first, by a pass that builds nothing else.
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "ociVersion")]
        version: Option<String>,
    }
    let v: Version = parse(&p, &data)?;
    if v.version.as_deref().is_none_or(str::is_empty) {
        return Err(RuntimeError::Spec(format!(
            "{}: ociVersion: missing",
            p.display()
        )));
    }
    parse(&p, &data)
}

/// What a hook of a created container is handed besides its state: the
/// spec's version, annotations and hooks, read from `bundle/config.json`
/// without building the rest of the spec (`start` and `delete` want no more).
#[derive(Debug, Default, serde::Deserialize)]
pub struct HookSpec {
    /// ociVersion.
    #[serde(rename = "ociVersion", default)]
    pub version: String,
    /// annotations.
    #[serde(default)]
    pub annotations: Option<std::collections::HashMap<String, String>>,
    /// hooks.
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// Reads [`HookSpec`] from `bundle/config.json`.
pub fn load_hooks(bundle: &Path) -> Result<HookSpec> {
    let (p, data) = read_config(bundle)?;
    parse(&p, &data)
}

/// `bundle/config.json`'s path and bytes.
fn read_config(bundle: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let p = bundle.join("config.json");
    let data = std::fs::read(&p)
        .map_err(|e| RuntimeError::Spec(format!("cannot read {}: {e}", p.display())))?;
    Ok((p, data))
}

/// `data`, the config.json at `p`, as a `T`; an error names the file.
fn parse<T: serde::de::DeserializeOwned>(p: &Path, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| RuntimeError::Spec(format!("{}: {e}", p.display())))
}

/// The rootfs path (relative paths are relative to the bundle).
pub fn rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| {
        RuntimeError::Spec("root: missing (the bundle must name its rootfs)".into())
    })?;
    let p = root.path();
    let p = if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    };
    let canon = std::fs::canonicalize(&p)
        .map_err(|e| RuntimeError::Spec(format!("root.path {}: {e}", p.display())))?;
    if !canon.is_dir() {
        return Err(RuntimeError::Spec(format!(
            "root.path {}: not a directory",
            p.display()
        )));
    }
    Ok(canon)
}

/// Checks what `create` needs before it touches the system.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<()> {
    rootfs(spec, bundle)?;
    crate::lsm::Asked::of(spec).validate()?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::Spec("process: missing".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(RuntimeError::Spec("process.args: must not be empty".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(RuntimeError::Spec(format!(
            "process.cwd {:?}: must be an absolute path",
            process.cwd()
        )));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| RuntimeError::Spec("linux: missing".into()))?;
    let mut seen = Vec::new();
    for ns in linux.namespaces().iter().flatten() {
        if seen.contains(&ns.typ()) {
            return Err(RuntimeError::Spec(format!(
                "linux.namespaces: {:?} is listed twice",
                ns.typ()
            )));
        }
        seen.push(ns.typ());
        if let Some(p) = ns.path()
            && !p.exists()
        {
            return Err(RuntimeError::Spec(format!(
                "linux.namespaces: {:?} path {} does not exist",
                ns.typ(),
                p.display()
            )));
        }
    }
    let has = |t: LinuxNamespaceType| seen.contains(&t);
    if (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()))
        && !has(LinuxNamespaceType::User)
    {
        return Err(RuntimeError::Spec(
            "linux.uidMappings: mappings need a user namespace".into(),
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for k in sysctl.keys() {
            if k.contains("..") || k.starts_with('/') {
                return Err(RuntimeError::Spec(format!(
                    "linux.sysctl: invalid key {k:?}"
                )));
            }
            let netns_ok = k.starts_with("net.") && has(LinuxNamespaceType::Network);
            let ipcns_ok = (k.starts_with("kernel.msg")
                || k.starts_with("kernel.sem")
                || k.starts_with("kernel.shm")
                || k.starts_with("fs.mqueue."))
                && has(LinuxNamespaceType::Ipc);
            let utsns_ok = (k == "kernel.hostname" || k == "kernel.domainname")
                && has(LinuxNamespaceType::Uts);
            if !(netns_ok || ipcns_ok || utsns_ok) {
                return Err(RuntimeError::Spec(format!(
                    "linux.sysctl: {k:?} is not namespaced by the container's namespaces"
                )));
            }
        }
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(RuntimeError::Spec(format!(
                "mounts: destination {:?} must be absolute",
                m.destination()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        d
    }

    fn err(config: &str) -> String {
        let b = bundle(config);
        match load(b.path()).and_then(|s| validate(&s, b.path())) {
            Ok(()) => panic!("accepted {config}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#;

    #[test]
    fn good_config_passes() {
        let b = bundle(GOOD);
        let s = load(b.path()).unwrap();
        validate(&s, b.path()).unwrap();
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert!(err("{not json").contains("config.json"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"linux":{}}"#).contains("root.path"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"},"linux":{}}"#).contains("process.args"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"rel"},"linux":{}}"#).contains("process.cwd"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"linux":{"namespaces":[{"type":"bogus"}]}}"#).contains("bogus"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#).contains("twice"));
        assert!(err(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"linux":{"sysctl":{"net.ipv4.ip_forward":"1"}}}"#).contains("linux.sysctl"));
    }
}
