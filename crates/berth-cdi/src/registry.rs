//! The devices the spec directories define: every spec file read (a bad
//! one kept as an error to report, not a reason to refuse the others), each
//! device by its qualified name (`vendor.com/class=name`). A later
//! directory overrides an earlier one (`/var/run/cdi`, written at run time,
//! over `/etc/cdi`); two files of one directory defining the same device
//! conflict, and using that device is an error naming both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::CdiError;
use crate::spec::{self, ContainerEdits, Spec};

/// Where CDI specs are read from, lowest priority first: `/etc/cdi`, then
/// `/var/run/cdi`; `BERTH_CDI_SPEC_DIRS` (colon-separated) replaces them.
pub fn spec_dirs() -> Vec<PathBuf> {
    match std::env::var_os("BERTH_CDI_SPEC_DIRS") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
    }
}

/// Where a device was defined.
#[derive(Debug, Clone)]
struct Entry {
    spec: Arc<Spec>,
    file: PathBuf,
    priority: usize,
    index: usize,
    /// Another file of the same priority that defines it too.
    conflict: Option<PathBuf>,
}

/// The devices found, and the spec files that could not be read.
#[derive(Debug, Default)]
pub struct Registry {
    devices: BTreeMap<String, Entry>,
    /// The spec files that could not be read, with why.
    pub errors: Vec<CdiError>,
}

/// One device chosen for a container: its qualified name, its edits, and
/// its spec's (applied once however many of its devices are chosen).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `vendor.com/class=name`.
    pub name: String,
    /// The device's edits.
    pub edits: ContainerEdits,
    /// The kind, to apply its spec's edits once.
    pub kind: String,
    /// The spec's own edits.
    pub spec_edits: ContainerEdits,
    /// The spec file.
    pub file: PathBuf,
}

impl Registry {
    /// Reads every spec in `dirs` (lowest priority first).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut r = Registry::default();
        for (priority, dir) in dirs.iter().enumerate() {
            for file in spec::files_in(dir) {
                match spec::read(&file) {
                    Ok(s) => r.add(Arc::new(s), &file, priority),
                    Err(e) => r.errors.push(e),
                }
            }
        }
        r
    }

    /// Reads the specs of [`spec_dirs`].
    pub fn load_default() -> Registry {
        Registry::load(&spec_dirs())
    }

    fn add(&mut self, s: Arc<Spec>, file: &Path, priority: usize) {
        for (index, d) in s.devices.iter().enumerate() {
            let name = format!("{}={}", s.kind, d.name);
            let new = Entry {
                spec: s.clone(),
                file: file.to_path_buf(),
                priority,
                index,
                conflict: None,
            };
            match self.devices.get_mut(&name) {
                Some(old) if old.priority == priority => old.conflict = Some(file.to_path_buf()),
                Some(old) if old.priority > priority => {}
                _ => {
                    self.devices.insert(name, new);
                }
            }
        }
    }

    /// Every device's qualified name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// Whether any device of `kind` is defined.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.devices
            .keys()
            .any(|n| n.split_once('=').is_some_and(|(k, _)| k == kind))
    }

    /// The devices `names` ask for, in order, each once. `kind=all` is
    /// the device named `all` where the spec has one, else every device of
    /// the kind. An unknown device (with the spec files that failed to
    /// read, which may be why) or a conflicting one is an error.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Resolved>, CdiError> {
        let mut out: Vec<Resolved> = Vec::new();
        let mut unknown = Vec::new();
        for n in names {
            let (kind, dev) = split_name(n)?;
            let wanted: Vec<String> = if dev == "all" && !self.devices.contains_key(n) {
                let all: Vec<String> = self
                    .devices
                    .keys()
                    .filter(|k| k.split_once('=').is_some_and(|(kk, _)| kk == kind))
                    .cloned()
                    .collect();
                if all.is_empty() {
                    unknown.push(n.clone());
                }
                all
            } else {
                vec![n.clone()]
            };
            for w in wanted {
                let Some(e) = self.devices.get(&w) else {
                    unknown.push(w);
                    continue;
                };
                if let Some(other) = &e.conflict {
                    return Err(CdiError::Conflict(format!(
                        "CDI device {w} is defined in both {} and {}",
                        e.file.display(),
                        other.display()
                    )));
                }
                if out.iter().any(|r| r.name == w) {
                    continue;
                }
                out.push(Resolved {
                    name: w,
                    edits: e.spec.devices[e.index].container_edits.clone(),
                    kind: e.spec.kind.clone(),
                    spec_edits: e.spec.container_edits.clone(),
                    file: e.file.clone(),
                });
            }
        }
        if !unknown.is_empty() {
            let mut msg = format!("unresolvable CDI devices {}", unknown.join(", "));
            for e in &self.errors {
                msg.push_str(&format!("; spec not read: {e}"));
            }
            return Err(CdiError::Unknown(msg));
        }
        Ok(out)
    }
}

/// Whether `s` looks like a qualified CDI name rather than a host path.
pub fn is_qualified(s: &str) -> bool {
    !s.starts_with('/') && s.contains('=') && s.contains('/')
}

/// Splits and checks `vendor.com/class=name`.
pub fn split_name(n: &str) -> Result<(&str, &str), CdiError> {
    let (kind, dev) = n
        .split_once('=')
        .ok_or_else(|| CdiError::Name(format!("{n:?} is not vendor.com/class=name")))?;
    spec::parse_kind(kind).map_err(|e| CdiError::Name(format!("{n:?}: {e}")))?;
    if !spec::device_name_ok(dev) {
        return Err(CdiError::Name(format!(
            "{n:?}: invalid device name {dev:?}"
        )));
    }
    Ok((kind, dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, kind: &str, devs: &[&str], env: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let devices: Vec<String> = devs
            .iter()
            .map(|d| format!("  - name: {d}\n    containerEdits:\n      env: [{env}]\n"))
            .collect();
        std::fs::write(
            dir.join(file),
            format!(
                "cdiVersion: 0.5.0\nkind: {kind}\ndevices:\n{}",
                devices.concat()
            ),
        )
        .unwrap();
    }

    #[test]
    fn names_resolve_all_and_later_directories_win() {
        let t = tempfile::tempdir().unwrap();
        let (etc, run) = (t.path().join("etc"), t.path().join("run"));
        write(&etc, "a.yaml", "vendor.test/dev", &["a", "b"], "FROM=etc");
        write(&run, "a.yaml", "vendor.test/dev", &["b"], "FROM=run");
        std::fs::write(etc.join("broken.yaml"), "cdiVersion: [").unwrap();
        let r = Registry::load(&[etc.clone(), run]);
        assert_eq!(r.errors.len(), 1, "the broken file is kept as an error");
        assert_eq!(r.names(), ["vendor.test/dev=a", "vendor.test/dev=b"]);
        let got = r.resolve(&["vendor.test/dev=b".into()]).unwrap();
        assert_eq!(got[0].edits.env, ["FROM=run"]);
        let all = r.resolve(&["vendor.test/dev=all".into()]).unwrap();
        assert_eq!(all.len(), 2);
        // Unknown: named, with the spec that could not be read.
        let e = r
            .resolve(&["vendor.test/dev=c".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unresolvable CDI devices vendor.test/dev=c"),
            "{e}"
        );
        assert!(e.contains("broken.yaml"), "{e}");
        assert!(r.resolve(&["nope".into()]).is_err());
        // Two files of one directory defining one device conflict.
        write(&etc, "b.yaml", "vendor.test/dev", &["a"], "X=1");
        let r = Registry::load(&[etc]);
        let e = r
            .resolve(&["vendor.test/dev=a".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.yaml") && e.contains("b.yaml"), "{e}");
    }

    #[test]
    fn qualified_names_are_told_from_paths() {
        assert!(is_qualified("nvidia.com/gpu=all"));
        assert!(!is_qualified("/dev/fuse"));
        assert!(!is_qualified("/dev/x=y/z"));
        assert!(split_name("nvidia.com/gpu=0").is_ok());
        assert!(split_name("nvidia.com=0").is_err());
    }
}
