//! Container edits applied to an OCI runtime spec: each chosen device's
//! edits and, once per kind, its spec's; environment (a later value of a
//! key replaces the earlier, as docker's merge does), device nodes (type
//! and numbers looked up on the host when the spec omits them) with the
//! device-cgroup rule that lets the container use them, mounts, hooks and
//! additional groups. Two devices that want the same container path (a
//! node or a mount) from different host sources, or the same variable with
//! different values, conflict, and the error names both.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use oci_spec::runtime::{
    Hook, Hooks, LinuxBuilder, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources,
    Mount, ProcessBuilder, Spec,
};

use crate::CdiError;
use crate::registry::Resolved;
use crate::spec::{ContainerEdits, DeviceNode};

/// A device node resolved on the host: what the container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The path in the container.
    pub path: String,
    /// `c`, `b` or `p`.
    pub typ: char,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits.
    pub file_mode: Option<u32>,
    /// The cgroup access (`rwm` or part of it).
    pub access: String,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
}

/// `n` with what the spec left out looked up on the host (at `hostPath`,
/// else at `path`).
pub fn resolve_node(n: &DeviceNode) -> Result<Node, CdiError> {
    let host = n.host_path.as_deref().unwrap_or(&n.path);
    let typ = n.typ.as_deref().and_then(|t| t.chars().next());
    let known =
        matches!(typ, Some('p')) || (typ.is_some() && n.major.is_some() && n.minor.is_some());
    let (mut typ, mut major, mut minor, mut mode) = (typ, n.major, n.minor, n.file_mode);
    if !known || mode.is_none() {
        match std::fs::metadata(host) {
            Ok(m) => {
                let ft = m.file_type();
                let found = if ft.is_char_device() {
                    'c'
                } else if ft.is_block_device() {
                    'b'
                } else if ft.is_fifo() {
                    'p'
                } else {
                    return Err(CdiError::Device(format!(
                        "device node {host}: not a device (a {})",
                        if ft.is_dir() {
                            "directory"
                        } else {
                            "regular file or link"
                        }
                    )));
                };
                typ = typ.or(Some(found));
                major = major.or(Some(libc::major(m.rdev()) as i64));
                minor = minor.or(Some(libc::minor(m.rdev()) as i64));
                mode = mode.or(Some(m.mode() & 0o777));
            }
            Err(_) if known => {}
            Err(e) => return Err(CdiError::Device(format!("device node {host}: {e}"))),
        }
    }
    let typ = match typ {
        Some('u') => 'c',
        Some(t) => t,
        None => 'c',
    };
    Ok(Node {
        path: n.path.clone(),
        typ,
        major: major.unwrap_or(0),
        minor: minor.unwrap_or(0),
        file_mode: mode,
        access: n.permissions.clone().unwrap_or_else(|| "rwm".into()),
        uid: n.uid,
        gid: n.gid,
    })
}

/// Adds a device node and the cgroup rule allowing it (none for a FIFO);
/// a node already at that path is replaced.
pub fn add_node(spec: &mut Spec, n: &Node) {
    let typ = match n.typ {
        'b' => LinuxDeviceType::B,
        'p' => LinuxDeviceType::P,
        _ => LinuxDeviceType::C,
    };
    let mut dev = LinuxDevice::default();
    dev.set_path(PathBuf::from(&n.path));
    dev.set_typ(typ);
    dev.set_major(n.major);
    dev.set_minor(n.minor);
    dev.set_file_mode(n.file_mode);
    dev.set_uid(n.uid);
    dev.set_gid(n.gid);
    let linux = spec.linux_mut().get_or_insert_with(|| {
        LinuxBuilder::default()
            .build()
            .expect("an empty linux section")
    });
    let devices = linux.devices_mut().get_or_insert_with(Vec::new);
    devices.retain(|d| d.path() != &PathBuf::from(&n.path));
    devices.push(dev);
    if n.typ == 'p' {
        return;
    }
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true);
    rule.set_typ(Some(typ));
    rule.set_major(Some(n.major));
    rule.set_minor(Some(n.minor));
    rule.set_access(Some(n.access.clone()));
    let resources = linux
        .resources_mut()
        .get_or_insert_with(LinuxResources::default);
    resources
        .devices_mut()
        .get_or_insert_with(Vec::new)
        .push(rule);
}

/// The edits of `devices` (each kind's spec edits first, once), checked
/// for conflicts, applied to `spec`.
pub fn apply(spec: &mut Spec, devices: &[Resolved]) -> Result<(), CdiError> {
    let mut all: Vec<(String, &ContainerEdits)> = Vec::new();
    let mut kinds = Vec::new();
    for d in devices {
        if !kinds.contains(&d.kind) {
            kinds.push(d.kind.clone());
            all.push((format!("{} (its spec's edits)", d.kind), &d.spec_edits));
        }
        all.push((d.name.clone(), &d.edits));
    }
    check_conflicts(&all)?;
    for (who, e) in &all {
        apply_one(spec, who, e)?;
    }
    Ok(())
}

/// Two sources for one container path, or two values for one variable.
fn check_conflicts(all: &[(String, &ContainerEdits)]) -> Result<(), CdiError> {
    let mut env: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut paths: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    let clash = |what: String, a: &str, b: &str| {
        Err(CdiError::Conflict(format!(
            "CDI devices {a} and {b} conflict: {what}"
        )))
    };
    for (who, e) in all {
        for kv in &e.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match env.get(k) {
                Some((ov, owho)) if *ov != v => {
                    return clash(
                        format!("{k} is {ov:?} for one, {v:?} for the other"),
                        owho,
                        who,
                    );
                }
                _ => {
                    env.insert(k, (v, who));
                }
            }
        }
        let sources = e
            .device_nodes
            .iter()
            .map(|n| {
                let src = match (&n.host_path, n.major, n.minor) {
                    (_, Some(a), Some(b)) => format!("{a}:{b}"),
                    (Some(h), _, _) => h.clone(),
                    (None, _, _) => n.path.clone(),
                };
                (n.path.as_str(), src)
            })
            .chain(
                e.mounts
                    .iter()
                    .map(|m| (m.container_path.as_str(), m.host_path.clone())),
            );
        for (path, src) in sources {
            match paths.get(path) {
                Some((osrc, owho)) if *osrc != src => {
                    return clash(format!("{path} from {osrc} and from {src}"), owho, who);
                }
                _ => {
                    paths.insert(path, (src, who));
                }
            }
        }
    }
    Ok(())
}

fn apply_one(spec: &mut Spec, who: &str, e: &ContainerEdits) -> Result<(), CdiError> {
    if e.intel_rdt.is_some() || !e.net_devices.is_empty() {
        return Err(CdiError::Unsupported(format!(
            "CDI device {who}: intelRdt and netDevices edits are not supported by berth"
        )));
    }
    if !e.env.is_empty() || !e.additional_gids.is_empty() {
        let process = spec
            .process_mut()
            .get_or_insert_with(|| ProcessBuilder::default().build().expect("a process"));
        let env = process.env_mut().get_or_insert_with(Vec::new);
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or(kv);
            match env.iter_mut().find(|x| x.split('=').next() == Some(key)) {
                Some(x) => *x = kv.clone(),
                None => env.push(kv.clone()),
            }
        }
        let gids = process
            .user_mut()
            .additional_gids_mut()
            .get_or_insert_with(Vec::new);
        for g in &e.additional_gids {
            if !gids.contains(g) {
                gids.push(*g);
            }
        }
    }
    for n in &e.device_nodes {
        let node =
            resolve_node(n).map_err(|err| CdiError::Device(format!("CDI device {who}: {err}")))?;
        add_node(spec, &node);
    }
    if !e.mounts.is_empty() {
        let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
        for m in &e.mounts {
            mounts.retain(|x| x.destination() != &PathBuf::from(&m.container_path));
            let mut mount = Mount::default();
            mount.set_destination(PathBuf::from(&m.container_path));
            mount.set_source(Some(PathBuf::from(&m.host_path)));
            mount.set_typ(Some(m.typ.clone().unwrap_or_else(|| "bind".into())));
            mount.set_options((!m.options.is_empty()).then(|| m.options.clone()));
            mounts.push(mount);
        }
    }
    if !e.hooks.is_empty() {
        let hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
        for h in &e.hooks {
            let mut hook = Hook::default();
            hook.set_path(PathBuf::from(&h.path));
            hook.set_args((!h.args.is_empty()).then(|| h.args.clone()));
            hook.set_env((!h.env.is_empty()).then(|| h.env.clone()));
            hook.set_timeout(h.timeout);
            #[allow(deprecated)]
            let list = match h.hook_name.as_str() {
                "prestart" => hooks.prestart_mut(),
                "createRuntime" => hooks.create_runtime_mut(),
                "createContainer" => hooks.create_container_mut(),
                "startContainer" => hooks.start_container_mut(),
                "poststart" => hooks.poststart_mut(),
                _ => hooks.poststop_mut(),
            };
            list.get_or_insert_with(Vec::new).push(hook);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Hook as CdiHook, Mount as CdiMount};

    fn resolved(name: &str, edits: ContainerEdits) -> Resolved {
        Resolved {
            name: format!("vendor.test/dev={name}"),
            edits,
            kind: "vendor.test/dev".into(),
            spec_edits: ContainerEdits {
                env: vec!["SPEC=1".into()],
                ..Default::default()
            },
            file: "/etc/cdi/t.yaml".into(),
        }
    }

    #[test]
    fn edits_land_in_the_spec_with_host_numbers_looked_up() {
        let mut spec = Spec::default();
        let a = ContainerEdits {
            env: vec!["A=1".into(), "PATH=/x".into()],
            device_nodes: vec![DeviceNode {
                path: "/dev/a".into(),
                host_path: Some("/dev/null".into()),
                permissions: Some("rw".into()),
                ..Default::default()
            }],
            mounts: vec![CdiMount {
                host_path: "/etc/hostname".into(),
                container_path: "/a/hostname".into(),
                options: vec!["ro".into(), "bind".into()],
                typ: None,
            }],
            hooks: vec![CdiHook {
                hook_name: "createContainer".into(),
                path: "/bin/true".into(),
                args: vec!["true".into()],
                env: vec![],
                timeout: Some(5),
            }],
            additional_gids: vec![44],
            ..Default::default()
        };
        let b = ContainerEdits {
            env: vec!["B=2".into()],
            ..Default::default()
        };
        apply(&mut spec, &[resolved("a", a), resolved("b", b)]).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let env = v["process"]["env"].as_array().unwrap();
        for want in ["SPEC=1", "A=1", "B=2"] {
            assert_eq!(env.iter().filter(|e| *e == want).count(), 1, "{env:?}");
        }
        assert!(
            env.iter().any(|e| e == "PATH=/x"),
            "a spec's PATH replaces the default's"
        );
        let dev = v["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "/dev/a")
            .expect("the CDI node");
        assert_eq!(
            (dev["path"].as_str(), dev["type"].as_str()),
            (Some("/dev/a"), Some("c"))
        );
        assert_eq!(
            (dev["major"].as_i64(), dev["minor"].as_i64()),
            (Some(1), Some(3))
        );
        let rule = v["linux"]["resources"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["access"] == "rw")
            .expect("the CDI node's rule");
        assert_eq!(rule["allow"], true);
        assert_eq!(rule["access"], "rw");
        assert_eq!(
            (rule["major"].as_i64(), rule["minor"].as_i64()),
            (Some(1), Some(3))
        );
        let mount = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/a/hostname")
            .expect("the CDI mount");
        assert_eq!(mount["type"], "bind");
        assert_eq!(mount["source"], "/etc/hostname");
        assert_eq!(v["hooks"]["createContainer"][0]["path"], "/bin/true");
        assert_eq!(v["process"]["user"]["additionalGids"][0], 44);
    }

    #[test]
    fn conflicting_edits_name_both_devices() {
        let node = |host: &str| ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/x".into(),
                host_path: Some(host.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = apply(
            &mut Spec::default(),
            &[
                resolved("a", node("/dev/null")),
                resolved("b", node("/dev/zero")),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("vendor.test/dev=a") && e.contains("vendor.test/dev=b"),
            "{e}"
        );
        assert!(e.contains("/dev/x"), "{e}");
        let env = |v: &str| ContainerEdits {
            env: vec![format!("K={v}")],
            ..Default::default()
        };
        let e = apply(
            &mut Spec::default(),
            &[resolved("a", env("1")), resolved("b", env("2"))],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("K is \"1\""), "{e}");
        // The same value twice is no conflict.
        apply(
            &mut Spec::default(),
            &[resolved("a", env("1")), resolved("b", env("1"))],
        )
        .unwrap();
    }

    #[test]
    fn a_missing_host_node_and_an_unsupported_edit_are_errors() {
        let missing = ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/nope-berth-test".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = apply(&mut Spec::default(), &[resolved("a", missing)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/nope-berth-test"), "{e}");
        let net = ContainerEdits {
            net_devices: vec![serde_json::json!({"hostInterfaceName": "eth9", "name": "eth1"})],
            ..Default::default()
        };
        let e = apply(&mut Spec::default(), &[resolved("a", net)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        // Numbers given: no lookup needed (the node need not exist here).
        let given = ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/given".into(),
                typ: Some("c".into()),
                major: Some(195),
                minor: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        apply(&mut Spec::default(), &[resolved("a", given)]).unwrap();
    }
}
