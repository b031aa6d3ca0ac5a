//! The OCI spec of a container, from its image config and run options, as
//! docker generates it: ENTRYPOINT + CMD, environment (PATH, HOSTNAME, TERM,
//! then image and `-e`, HOME from the user), working directory, user, the
//! container's mounts, resources and network, on top of docker's defaults
//! (capabilities, seccomp, masked paths, default mounts, devices), which
//! [`berth_spec`] owns for containers and build steps alike.

pub use berth_spec::{DEFAULT_PATH, env_set};
use serde_json::{Value, json};

use crate::container::{Container, MountPoint};
use crate::{EngineError, Result};
use berth_types::user::User;

/// ENTRYPOINT + CMD as docker composes them.
pub fn command(entrypoint: Option<&[String]>, cmd: Option<&[String]>) -> Vec<String> {
    let mut v: Vec<String> = entrypoint.unwrap_or(&[]).to_vec();
    v.extend(cmd.unwrap_or(&[]).iter().cloned());
    v
}

/// The process environment docker gives a container.
pub fn environment(c: &Container, user: &User) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", c.config.hostname),
    ];
    if c.config.tty {
        env.push("TERM=xterm".into());
    }
    for e in &c.config.env {
        env_set(&mut env, e);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// The capability list after `--cap-add`, `--cap-drop` and `--privileged`.
pub fn capabilities(c: &Container) -> Vec<String> {
    let hc = &c.host_config;
    berth_spec::capabilities(&hc.cap_add, &hc.cap_drop, hc.privileged)
}

/// Files the engine writes for a container and binds in.
pub struct Files<'a> {
    /// /etc/hosts.
    pub hosts: &'a str,
    /// /etc/hostname.
    pub hostname: &'a str,
    /// /etc/resolv.conf.
    pub resolv: &'a str,
}

/// Everything the spec needs.
pub struct Input<'a> {
    /// `--network container:X`: X's `/proc/PID/ns/net`.
    pub join_netns: Option<&'a str>,
    /// The container.
    pub c: &'a Container,
    /// The resolved user.
    pub user: &'a User,
    /// The rootfs directory.
    pub rootfs: &'a str,
    /// Files to bind.
    pub files: Files<'a>,
    /// Whether the machine is on cgroup v2.
    pub cgroup_v2: bool,
}

fn seccomp_opt(c: &Container) -> Result<berth_spec::Seccomp> {
    for o in &c.host_config.security_opt {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        if k == "seccomp" {
            if v == "unconfined" {
                return Ok(berth_spec::Seccomp::Unconfined);
            }
            let data = std::fs::read(v).map_err(|e| {
                EngineError::Invalid(format!("opening seccomp profile ({v}) failed: {e}"))
            })?;
            let p: Value = serde_json::from_slice(&data).map_err(|e| {
                EngineError::Invalid(format!("decoding seccomp profile ({v}) failed: {e}"))
            })?;
            return Ok(berth_spec::Seccomp::Profile(p));
        }
    }
    Ok(berth_spec::Seccomp::Default)
}

/// `--security-opt no-new-privileges[:true|=true]`.
pub fn no_new_privileges(c: &Container) -> bool {
    c.host_config.security_opt.iter().any(|o| {
        matches!(
            o.as_str(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        )
    })
}

/// The OCI `linux.resources` of a container's limits (what `run` and
/// `update` write to its cgroup).
pub fn resources(hc: &crate::container::HostConfig) -> Value {
    let mut resources = json!({});
    if hc.memory > 0 {
        let swap = match hc.memory_swap {
            0 => hc.memory.saturating_mul(2),
            s => s,
        };
        resources["memory"] = json!({"limit": hc.memory, "swap": swap});
    }
    let mut cpu = serde_json::Map::new();
    if hc.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(hc.cpu_shares));
    }
    if hc.nano_cpus > 0 {
        cpu.insert("period".into(), json!(100_000));
        cpu.insert(
            "quota".into(),
            json!((hc.nano_cpus as i128 * 100_000 / 1_000_000_000) as i64),
        );
    }
    if !hc.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(hc.cpuset_cpus));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = hc.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    resources
}

/// Builds the config.json of a container.
pub fn generate(i: &Input) -> Result<Value> {
    let c = i.c;
    let hc = &c.host_config;
    let mut args = vec![c.path.clone()];
    args.extend(c.args.iter().cloned());
    let net = match (hc.network_mode.as_str(), i.join_netns) {
        ("host", _) => berth_spec::Net::Host,
        // Another container's, or the one the engine made for this one
        // (a rootless container's, wired by pasta).
        (_, Some(p)) => berth_spec::Net::Join(p.to_string()),
        (other, None)
            if other.starts_with("container:") || other == crate::network::pasta::MODE =>
        {
            return Err(EngineError::Invalid(format!(
                "--network {other}: the container is not running"
            )));
        }
        // none, bridge and user networks: a namespace of its own (the engine
        // connects it between create and start).
        _ => berth_spec::Net::Own,
    };
    let resources = resources(hc);
    if crate::rootless::active()
        && resources
            .as_object()
            .is_some_and(|r| r.keys().any(|k| k != "devices"))
        && berth_runtime::cgroup_delegated_root().is_none()
    {
        return Err(EngineError::Invalid(format!(
            "rootless berth cannot apply --memory, --cpus, --cpu-shares, --pids-limit or other resource limits here: no cgroup v2 subtree is delegated to your user (berth runs in cgroup {:?}, which is not yours); run berth in your delegated subtree (with systemd: systemd-run --user --scope berth …), run without them, or as root",
            berth_runtime::cgroup_own_v2_path().unwrap_or_default()
        )));
    }
    let cwd = if c.config.working_dir.is_empty() {
        "/".to_string()
    } else {
        c.config.working_dir.clone()
    };
    let sandbox = berth_spec::Sandbox {
        args,
        env: environment(c, i.user),
        cwd,
        user: (i.user.uid, i.user.gid, i.user.additional_gids.clone()),
        terminal: c.config.tty,
        hostname: c.config.hostname.clone(),
        root: (i.rootfs.to_string(), hc.readonly_rootfs),
        caps: capabilities(c),
        privileged: hc.privileged,
        no_new_privileges: no_new_privileges(c),
        seccomp: seccomp_opt(c)?,
        net,
        cgroup_ns: i.cgroup_v2,
        cgroups_path: format!("/berth/{}", c.id),
        files: (
            i.files.resolv.to_string(),
            i.files.hostname.to_string(),
            i.files.hosts.to_string(),
        ),
        mounts: c.mounts.iter().map(user_mount).collect(),
        resources,
        rlimits: hc
            .ulimits
            .iter()
            .map(|u| json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "soft": u.soft, "hard": u.hard}))
            .collect(),
        apparmor: crate::apparmor::profile_for(c)?,
    };
    let mut spec = berth_spec::spec(&sandbox).map_err(EngineError::Invalid)?;
    crate::devices::apply(&mut spec, hc)?;
    Ok(serde_json::to_value(spec).expect("a spec serialises"))
}

fn user_mount(m: &MountPoint) -> Value {
    match m.typ.as_str() {
        "tmpfs" => {
            let mut opts = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "noexec".to_string(),
            ];
            opts.extend(m.options.iter().cloned());
            json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts})
        }
        _ => {
            let mut opts = vec![
                "rbind".to_string(),
                if m.rw { "rw" } else { "ro" }.to_string(),
                "rprivate".to_string(),
            ];
            opts.extend(m.options.iter().cloned());
            json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd() {
        assert_eq!(
            command(Some(&s(&["/bin/echo", "Hello"])), Some(&s(&["world"]))),
            s(&["/bin/echo", "Hello", "world"])
        );
        assert_eq!(command(None, Some(&s(&["sh"]))), s(&["sh"]));
    }

    #[test]
    fn default_caps_match_docker() {
        let c: Container = serde_json::from_value(json!({
            "Id": "0".repeat(64), "Name": "x", "Created": "", "ImageId": "", "Path": "sh", "Args": [],
            "Config": {"Hostname":"h","Domainname":"","User":"","Tty":false,"OpenStdin":false,"Env":[],"Cmd":null,"Image":"","WorkingDir":"","Entrypoint":null,"Labels":{},"StopSignal":null,"StopTimeout":null},
            "HostConfig": {"Binds":[],"NetworkMode":"","RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"CapAdd":["NET_ADMIN"],"CapDrop":["MKNOD"],"Privileged":false,"ReadonlyRootfs":false,"SecurityOpt":[],"Tmpfs":{},"Init":false,"Memory":0,"MemorySwap":0,"NanoCpus":0,"CpuShares":0,"CpusetCpus":"","PidsLimit":null,"Ulimits":[],"ExtraHosts":[],"Dns":[]},
            "Mounts": [], "State": {"Status":"created","Pid":0,"ExitCode":0,"Error":"","StartedAt":"","FinishedAt":"","OOMKilled":false,"RestartCount":0}
        })).unwrap();
        let caps = capabilities(&c);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_MKNOD".to_string()));
        let mut plain = c.clone();
        plain.host_config.cap_add.clear();
        plain.host_config.cap_drop.clear();
        assert_eq!(
            format!(
                "{:016x}",
                berth_runtime::capabilities::mask(&capabilities(&plain))
            ),
            "00000000a80425fb"
        );
    }
}
