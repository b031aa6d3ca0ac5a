//! Docker's container defaults as one typed OCI spec (oci-spec's types and
//! builders, so a misspelt field does not compile): the capabilities
//! (`00000000a80425fb`) and what `--cap-add/--cap-drop/--privileged` make of
//! them, docker's seccomp profile for that set, the masked and read-only
//! `/proc` paths, the default mounts (proc, dev, devpts, shm, mqueue, sysfs,
//! cgroup, and the container's resolv.conf, hostname and hosts), the device
//! rules, the namespaces, the default `PATH` and docker's environment merge.
//! The engine (containers) and the builder (RUN steps) both start from
//! [`Sandbox`] and [`spec`], so the two cannot drift apart; `berth-runtime`
//! only executes specs. The tables are in [`defaults`] (mounts, paths,
//! devices, hosts file) and [`seccomp`] (the profile).

pub mod defaults;
pub mod seccomp;

use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResources, LinuxSeccomp, Mount, PosixRlimit, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use serde_json::Value;

/// docker's default PATH (what both of docker's builders put in an image's
/// env when the base sets none, and every container's process gets first).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (`00000000a80425fb`).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Sets `KEY=value` in `env`, replacing an earlier entry of the same key
/// where it stands (docker's merge of image and `-e` environments).
pub fn env_set(env: &mut Vec<String>, kv: &str) {
    let key = kv.split('=').next().unwrap_or(kv);
    match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
        Some(e) => *e = kv.to_string(),
        None => env.push(kv.to_string()),
    }
}

/// docker's capability set after `--cap-add`, `--cap-drop` and
/// `--privileged` (podman's rule for the latter: what berth itself holds).
pub fn capabilities(add: &[String], drop: &[String], privileged: bool) -> Vec<String> {
    let all = berth_runtime::capabilities::available();
    if privileged {
        return all;
    }
    let norm = |s: &String| {
        let u = s.to_ascii_uppercase();
        if u.starts_with("CAP_") || u == "ALL" {
            u
        } else {
            format!("CAP_{u}")
        }
    };
    let mut set: Vec<String> = DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect();
    for d in drop.iter().map(norm) {
        if d == "ALL" {
            set.clear();
        } else {
            set.retain(|x| *x != d);
        }
    }
    for a in add.iter().map(norm) {
        if a == "ALL" {
            set = all.clone();
        } else if !set.contains(&a) {
            set.push(a);
        }
    }
    set
}

/// The network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// The host's (`--network host`).
    Host,
    /// One of its own (none, bridge, user networks).
    Own,
    /// Another's, by path (`--network container:X`).
    Join(String),
}

/// The seccomp filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// docker's default profile for the capability set.
    Default,
    /// None (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile given as docker's JSON (`--security-opt seccomp=file`).
    Profile(Value),
}

/// Everything that differs between sandboxes; the rest is docker's.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// argv.
    pub args: Vec<String>,
    /// The environment, already merged.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// uid, gid and supplementary gids.
    pub user: (u32, u32, Vec<u32>),
    /// A terminal.
    pub terminal: bool,
    /// Host name.
    pub hostname: String,
    /// The root path (relative to the bundle or absolute) and whether it is read-only.
    pub root: (String, bool),
    /// Capabilities (see [`capabilities`]).
    pub caps: Vec<String>,
    /// `--privileged`: no masked paths, no seccomp, sysfs writable, every device.
    pub privileged: bool,
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// The seccomp filter (ignored when privileged).
    pub seccomp: Seccomp,
    /// The network namespace.
    pub net: Net,
    /// A cgroup namespace (on cgroup v2).
    pub cgroup_ns: bool,
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// resolv.conf, hostname and hosts files to bind.
    pub files: (String, String, String),
    /// More mounts (volumes, binds, tmpfs, build mounts), as OCI mount JSON.
    pub mounts: Vec<Value>,
    /// Memory, CPU and pids limits, as OCI `linux.resources` JSON (the
    /// device rules are added here).
    pub resources: Value,
    /// rlimits, as OCI JSON.
    pub rlimits: Vec<Value>,
    /// An AppArmor profile.
    pub apparmor: Option<String>,
}

fn err(what: &str) -> impl Fn(oci_spec::OciSpecError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn typed<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

fn cap_set(list: &[String]) -> Result<HashSet<Capability>, String> {
    // Through serde: the spec's own spelling (`CAP_CHOWN`).
    list.iter()
        .map(|c| typed(&format!("capability {c}"), Value::String(c.clone())))
        .collect()
}

/// The OCI spec of a sandbox with docker's defaults.
pub fn spec(s: &Sandbox) -> Result<Spec, String> {
    let mut mounts: Vec<Mount> = typed(
        "default mounts",
        Value::Array(defaults::mounts(
            s.privileged,
            &s.files.0,
            &s.files.1,
            &s.files.2,
        )),
    )?;
    let extra: Vec<Mount> = typed("mounts", Value::Array(s.mounts.clone()))?;
    mounts.extend(extra);
    let root = RootBuilder::default()
        .path(s.root.0.clone())
        .readonly(s.root.1)
        .build()
        .map_err(err("root"))?;
    let mut spec = SpecBuilder::default()
        .version("1.2.0")
        .process(process(s)?)
        .root(root)
        .hostname(s.hostname.clone())
        .mounts(mounts)
        .linux(linux(s)?)
        .build()
        .map_err(err("spec"))?;
    spec.set_annotations(None);
    Ok(spec)
}

/// The process: user, arguments, environment, capabilities (docker's
/// set, adjusted), rlimits only as asked, the AppArmor profile.
fn process(s: &Sandbox) -> Result<oci_spec::runtime::Process, String> {
    let caps = cap_set(&s.caps)?;
    // As docker since 20.10 (CVE-2022-24769): no inheritable or ambient
    // capabilities (oci-spec's builder would default them to three).
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(err("capabilities"))?;
    let user = UserBuilder::default()
        .uid(s.user.0)
        .gid(s.user.1)
        .additional_gids(s.user.2.clone())
        .build()
        .map_err(err("user"))?;
    let mut process = ProcessBuilder::default()
        .terminal(s.terminal)
        .user(user)
        .args(s.args.clone())
        .env(s.env.clone())
        .cwd(s.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(s.no_new_privileges)
        .build()
        .map_err(err("process"))?;
    // docker sets no rlimits of its own (oci-spec's builder would set
    // RLIMIT_NOFILE to 1024): only those asked for.
    process.set_rlimits(None);
    if !s.rlimits.is_empty() {
        let r: Vec<PosixRlimit> = typed("rlimits", Value::Array(s.rlimits.clone()))?;
        process.set_rlimits(Some(r));
    }
    if let Some(p) = &s.apparmor {
        process.set_apparmor_profile(Some(p.clone()));
    }
    Ok(process)
}

/// The namespaces: pid, ipc, uts and mount always; the network's own,
/// joined or the host's; a cgroup namespace where asked.
fn namespaces(s: &Sandbox) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, String> {
    let ns = |t: LinuxNamespaceType, path: Option<&str>| {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().map_err(err("namespace"))
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid, None)?,
        ns(LinuxNamespaceType::Ipc, None)?,
        ns(LinuxNamespaceType::Uts, None)?,
        ns(LinuxNamespaceType::Mount, None)?,
    ];
    match &s.net {
        Net::Host => {}
        Net::Own => namespaces.push(ns(LinuxNamespaceType::Network, None)?),
        Net::Join(p) => namespaces.push(ns(LinuxNamespaceType::Network, Some(p))?),
    }
    if s.cgroup_ns {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(namespaces)
}

/// The linux section: resources with docker's device rules, namespaces,
/// and unless privileged the masked and read-only paths and the seccomp
/// profile.
fn linux(s: &Sandbox) -> Result<oci_spec::runtime::Linux, String> {
    let mut resources = s.resources.clone();
    if !resources.is_object() {
        resources = Value::Object(Default::default());
    }
    resources["devices"] = Value::Array(defaults::device_rules(s.privileged));
    let resources: LinuxResources = typed("resources", resources)?;
    let mut linux = LinuxBuilder::default()
        .resources(resources)
        .cgroups_path(s.cgroups_path.clone())
        .namespaces(namespaces(s)?);
    if s.privileged {
        // (oci-spec's builder would mask its own list.)
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(
                defaults::MASKED_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                defaults::READONLY_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            );
        let profile = match &s.seccomp {
            Seccomp::Default => Some(seccomp::docker_default(&s.caps)),
            Seccomp::Unconfined => None,
            Seccomp::Profile(p) => Some(p.clone()),
        };
        if let Some(p) = profile {
            let sc: LinuxSeccomp = typed("seccomp profile", p)?;
            linux = linux.seccomp(sc);
        }
    }
    linux.build().map_err(err("linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            args: vec!["sh".into()],
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".into(),
            user: (0, 0, vec![]),
            terminal: false,
            hostname: "h".into(),
            root: ("rootfs".into(), false),
            caps: capabilities(&[], &[], false),
            privileged: false,
            no_new_privileges: false,
            seccomp: Seccomp::Default,
            net: Net::Own,
            cgroup_ns: false,
            cgroups_path: "/berth/x".into(),
            files: ("/r".into(), "/hn".into(), "/hs".into()),
            mounts: vec![],
            resources: serde_json::json!({}),
            rlimits: vec![],
            apparmor: None,
        }
    }

    /// Docker's defaults, as golden JSON: what `docker run` gives a
    /// container, capability mask 00000000a80425fb.
    #[test]
    fn docker_defaults_as_golden_json() {
        let s = spec(&sandbox()).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            format!(
                "{:016x}",
                berth_runtime::capabilities::mask(&capabilities(&[], &[], false))
            ),
            "00000000a80425fb"
        );
        let golden: Value = serde_json::from_str(include_str!("../testdata/default.json")).unwrap();
        let mut got = v.clone();
        // The seccomp profile is docker's own table, checked in berth-runtime.
        got["linux"]["seccomp"] = Value::Null;
        // Capability sets are sets: compared sorted.
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            if let Some(a) = got["process"]["capabilities"][set].as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
        assert_eq!(
            got,
            golden,
            "{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn privileged_drops_the_confinement() {
        let mut sb = sandbox();
        sb.privileged = true;
        sb.caps = capabilities(&[], &[], true);
        let v = serde_json::to_value(spec(&sb).unwrap()).unwrap();
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!([]));
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn cap_add_and_drop() {
        let c = capabilities(&["NET_ADMIN".into()], &["mknod".into()], false);
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_MKNOD".to_string()));
        assert!(capabilities(&[], &["ALL".into()], false).is_empty());
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut e = vec!["A=1".to_string(), "B=2".to_string()];
        env_set(&mut e, "A=3");
        env_set(&mut e, "C=4");
        assert_eq!(e, ["A=3", "B=2", "C=4"]);
    }
}
