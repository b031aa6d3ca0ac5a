//! A CDI spec file: its document types (versions 0.3 to 0.8; YAML or JSON),
//! read strictly (an unknown or misspelt field is an error naming it) and
//! validated (the kind's and devices' names, absolute paths, device types
//! and permissions, hook names), each error naming the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CdiError;

/// The CDI versions berth reads.
pub const VERSIONS: &[&str] = &["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0"];

/// A spec: one kind (`vendor.com/class`) of devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// The CDI version it is written to.
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    /// Annotations (0.6).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The devices.
    pub devices: Vec<Device>,
    /// Edits applied once when any device of the spec is used.
    #[serde(default, skip_serializing_if = "ContainerEdits::is_empty")]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// Its name within the kind (`0`, `all`, a UUID).
    pub name: String,
    /// Annotations (0.6).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// What it does to a container.
    pub container_edits: ContainerEdits,
}

/// Changes to a container's OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    /// OCI hooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Intel RDT (0.7): not applied by berth; a spec that sets it is refused
    /// when its device is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
    /// Groups added to the container's process (0.7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Network devices moved in (0.8): not applied by berth; refused when
    /// used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<serde_json::Value>,
}

impl ContainerEdits {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ContainerEdits::default()
    }
}

/// A device node to create in the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNode {
    /// Its path in the container.
    pub path: String,
    /// The host's node, when its path there differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c`, `b` or `p`; looked up on the host when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Major number; looked up on the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Minor number; looked up on the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Permission bits of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// The cgroup access, `rwm` or part of it (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// The source on the host.
    pub host_path: String,
    /// The destination in the container.
    pub container_path: String,
    /// Mount options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The filesystem type (`bind` when absent).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// An OCI hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// When it runs: `prestart`, `createRuntime`, `createContainer`,
    /// `startContainer`, `poststart` or `poststop`.
    pub hook_name: String,
    /// The program (a host path).
    pub path: String,
    /// Its argv (the first is its name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds it may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// The hook names the OCI runtime spec has.
pub const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The spec as YAML (what `system cdi generate` writes).
pub fn to_yaml(s: &Spec) -> String {
    serde_norway::to_string(s).expect("a CDI spec serialises")
}

/// Reads and validates the spec file at `path` (JSON when it ends in
/// `.json`, else YAML).
pub fn read(path: &Path) -> Result<Spec, CdiError> {
    let bytes = std::fs::read(path).map_err(|e| CdiError::spec(path, "", e.to_string()))?;
    parse(path, &bytes)
}

/// Parses and validates spec bytes read from `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, CdiError> {
    let spec: Spec = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| CdiError::spec(path, "", e.to_string()))?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| CdiError::spec(path, "", e.to_string()))?
    };
    validate(path, &spec)?;
    Ok(spec)
}

/// Whether `s` is a CDI name part: letters, digits and `extra`, starting
/// with a letter (or a digit, when `digit_first`) and ending with a letter
/// or digit.
fn name_ok(s: &str, extra: &str, digit_first: bool) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    (first.is_ascii_alphabetic() || (digit_first && first.is_ascii_digit()))
        && last.is_ascii_alphanumeric()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Splits `vendor.com/class`, checking both parts.
pub fn parse_kind(kind: &str) -> Result<(&str, &str), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| format!("{kind:?} is not vendor.com/class"))?;
    if !name_ok(vendor, "-_.", false) {
        return Err(format!(
            "vendor {vendor:?}: letters, digits, '-', '_' and '.', from a letter to a letter or digit"
        ));
    }
    if !name_ok(class, "-_", false) {
        return Err(format!(
            "class {class:?}: letters, digits, '-' and '_', from a letter to a letter or digit"
        ));
    }
    Ok((vendor, class))
}

/// Whether `name` is a valid device name.
pub fn device_name_ok(name: &str) -> bool {
    name_ok(name, "-_.:", true)
}

fn validate(path: &Path, s: &Spec) -> Result<(), CdiError> {
    if !VERSIONS.contains(&s.cdi_version.as_str()) {
        return Err(CdiError::spec(
            path,
            "cdiVersion",
            format!(
                "{:?} is not a CDI version berth reads ({})",
                s.cdi_version,
                VERSIONS.join(", ")
            ),
        ));
    }
    parse_kind(&s.kind).map_err(|e| CdiError::spec(path, "kind", e))?;
    if s.devices.is_empty() {
        return Err(CdiError::spec(path, "devices", "no devices"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in s.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if !device_name_ok(&d.name) {
            return Err(CdiError::spec(
                path,
                &format!("{at}.name"),
                format!(
                    "{:?}: letters, digits, '-', '_', '.' and ':', from a letter or digit to a letter or digit",
                    d.name
                ),
            ));
        }
        if !seen.insert(d.name.as_str()) {
            return Err(CdiError::spec(
                path,
                &format!("{at}.name"),
                format!("device {:?} is defined twice", d.name),
            ));
        }
        validate_edits(path, &format!("{at}.containerEdits"), &d.container_edits)?;
    }
    validate_edits(path, "containerEdits", &s.container_edits)
}

fn validate_edits(path: &Path, at: &str, e: &ContainerEdits) -> Result<(), CdiError> {
    let err = |field: String, msg: String| Err(CdiError::spec(path, &field, msg));
    for (i, v) in e.env.iter().enumerate() {
        if v.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return err(format!("{at}.env[{i}]"), format!("{v:?} is not KEY=value"));
        }
    }
    for (i, n) in e.device_nodes.iter().enumerate() {
        let f = format!("{at}.deviceNodes[{i}]");
        if !n.path.starts_with('/') {
            return err(format!("{f}.path"), format!("{:?} is not absolute", n.path));
        }
        if let Some(h) = &n.host_path
            && !h.starts_with('/')
        {
            return err(format!("{f}.hostPath"), format!("{h:?} is not absolute"));
        }
        if let Some(t) = &n.typ
            && !matches!(t.as_str(), "c" | "u" | "b" | "p" | "")
        {
            return err(format!("{f}.type"), format!("{t:?}: must be c, b or p"));
        }
        if let Some(p) = &n.permissions
            && (p.is_empty() || !p.chars().all(|c| "rwm".contains(c)))
        {
            return err(
                format!("{f}.permissions"),
                format!("{p:?}: letters of \"rwm\""),
            );
        }
        if n.major.is_some_and(|m| m < 0) || n.minor.is_some_and(|m| m < 0) {
            return err(f, "negative major or minor".into());
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        let f = format!("{at}.mounts[{i}]");
        if !m.container_path.starts_with('/') {
            return err(
                format!("{f}.containerPath"),
                format!("{:?} is not absolute", m.container_path),
            );
        }
        if m.host_path.is_empty() {
            return err(format!("{f}.hostPath"), "empty".into());
        }
    }
    for (i, h) in e.hooks.iter().enumerate() {
        let f = format!("{at}.hooks[{i}]");
        if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
            return err(
                format!("{f}.hookName"),
                format!("{:?}: one of {}", h.hook_name, HOOK_NAMES.join(", ")),
            );
        }
        if !h.path.starts_with('/') {
            return err(format!("{f}.path"), format!("{:?} is not absolute", h.path));
        }
    }
    Ok(())
}

/// The spec files of `dir`, in name order.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                && p.is_file()
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
cdiVersion: 0.6.0
kind: vendor.test/dev
devices:
  - name: a
    containerEdits:
      env: [A=1]
      deviceNodes:
        - path: /dev/a
          hostPath: /dev/null
          permissions: rw
      mounts:
        - hostPath: /etc/hostname
          containerPath: /a/hostname
          options: [ro, bind]
      hooks:
        - hookName: createContainer
          path: /bin/true
containerEdits:
  env: [SPEC=1]
"#;

    fn bad(src: &str) -> String {
        parse(Path::new("/etc/cdi/t.yaml"), src.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_spec_reads_from_yaml_and_json_alike() {
        let s = parse(Path::new("t.yaml"), YAML.as_bytes()).unwrap();
        assert_eq!(s.kind, "vendor.test/dev");
        assert_eq!(s.devices[0].container_edits.device_nodes[0].path, "/dev/a");
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(parse(Path::new("t.json"), &json).unwrap(), s);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = bad(&YAML.replace("cdiVersion: 0.6.0", "cdiVersion: 9.9.9"));
        assert!(e.starts_with("/etc/cdi/t.yaml: cdiVersion:"), "{e}");
        let e = bad(&YAML.replace("kind: vendor.test/dev", "kind: vendor.test"));
        assert!(e.contains("kind:"), "{e}");
        let e = bad(&YAML.replace("path: /dev/a", "path: dev/a"));
        assert!(
            e.contains("devices[0].containerEdits.deviceNodes[0].path"),
            "{e}"
        );
        let e = bad(&YAML.replace("permissions: rw", "permissions: rx"));
        assert!(e.contains("deviceNodes[0].permissions"), "{e}");
        let e = bad(&YAML.replace("hookName: createContainer", "hookName: whenever"));
        assert!(e.contains("hooks[0].hookName"), "{e}");
        let e = bad(&YAML.replace("env: [A=1]", "env: [A]"));
        assert!(e.contains("env[0]"), "{e}");
        // A misspelt field is not silently ignored.
        let e = bad(&YAML.replace("hostPath: /dev/null", "hostpath: /dev/null"));
        assert!(e.contains("hostpath"), "{e}");
        let e = bad(&YAML.replace("- name: a", "- name: -a"));
        assert!(e.contains("devices[0].name"), "{e}");
    }

    #[test]
    fn kinds_and_names_follow_cdi_s_rules() {
        assert_eq!(parse_kind("nvidia.com/gpu").unwrap(), ("nvidia.com", "gpu"));
        assert!(parse_kind("nvidia.com/gpu/x").is_err());
        assert!(parse_kind("/gpu").is_err());
        assert!(device_name_ok("0"));
        assert!(device_name_ok("GPU-3b6b8d9e-1b2c"));
        assert!(device_name_ok("mig:0:1"));
        assert!(!device_name_ok("a/b"));
        assert!(!device_name_ok(""));
    }
}
