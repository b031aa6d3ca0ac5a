//! docker's `POST /containers/create` body and the engine's create request,
//! both ways: what docker clients send read into a [`CreateRequest`] (every
//! field may be absent or null), and the body `berth -H` sends for one.

use std::collections::BTreeMap;

use berth_engine::container::{HostConfig, RestartPolicy, Ulimit};
use berth_engine::run::CreateRequest;
use serde::Deserialize;
use serde_json::Value;

use crate::ApiError;

/// A string or a list of strings (docker's `StrSlice`: `Cmd`, `Entrypoint`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Mount {
    r#type: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
    tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsOptions {
    size_bytes: Option<i64>,
    mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ApiHostConfig {
    binds: Option<Vec<String>>,
    network_mode: Option<String>,
    port_bindings: Option<BTreeMap<String, Option<Vec<berth_engine::network::PortBinding>>>>,
    restart_policy: Option<RestartPolicy>,
    auto_remove: Option<bool>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    privileged: Option<bool>,
    readonly_rootfs: Option<bool>,
    security_opt: Option<Vec<String>>,
    tmpfs: Option<BTreeMap<String, String>>,
    init: Option<bool>,
    memory: Option<i64>,
    memory_swap: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_shares: Option<i64>,
    cpuset_cpus: Option<String>,
    pids_limit: Option<i64>,
    ulimits: Option<Vec<Ulimit>>,
    extra_hosts: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    publish_all_ports: Option<bool>,
    mounts: Option<Vec<Mount>>,
    devices: Option<Vec<berth_engine::container::DeviceMapping>>,
    device_requests: Option<Vec<berth_engine::container::DeviceRequest>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Endpoint {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<Ipam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ipam {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingConfig {
    endpoints_config: Option<BTreeMap<String, Option<Endpoint>>>,
}

/// The body of `POST /containers/create` (what docker clients send; every
/// field may be absent or null).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateBody {
    hostname: Option<String>,
    user: Option<String>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<StrSlice>,
    entrypoint: Option<StrSlice>,
    image: Option<String>,
    volumes: Option<BTreeMap<String, Value>>,
    working_dir: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    host_config: Option<ApiHostConfig>,
    networking_config: Option<NetworkingConfig>,
    healthcheck: Option<berth_types::image::HealthConfig>,
}

/// A `HostConfig.Mounts` item as the `--mount` string the engine parses.
fn mount_flag(m: &Mount) -> Result<String, ApiError> {
    let typ = m.r#type.as_deref().unwrap_or("volume");
    let target = m
        .target
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid mount config: Target must not be empty"))?;
    for v in [typ, target, m.source.as_deref().unwrap_or("")] {
        if v.contains(',') {
            return Err(ApiError::bad_request(format!(
                "invalid mount config: {v:?} contains a comma"
            )));
        }
    }
    let mut s = format!("type={typ},target={target}");
    if let Some(src) = m.source.as_deref().filter(|s| !s.is_empty()) {
        s.push_str(&format!(",source={src}"));
    }
    if m.read_only == Some(true) {
        s.push_str(",readonly");
    }
    if let Some(t) = &m.tmpfs_options {
        if let Some(b) = t.size_bytes.filter(|b| *b > 0) {
            s.push_str(&format!(",tmpfs-size={b}"));
        }
        if let Some(mode) = t.mode {
            s.push_str(&format!(",tmpfs-mode={mode:o}"));
        }
    }
    Ok(s)
}

pub(crate) fn request(b: CreateBody, name: Option<String>) -> Result<CreateRequest, ApiError> {
    let image = b.image.filter(|i| !i.is_empty()).ok_or_else(|| {
        ApiError::bad_request("config cannot be empty in order to create a container")
    })?;
    let hc = b.host_config.unwrap_or_default();
    let mut volumes: Vec<String> = hc.binds.unwrap_or_default();
    // Config.Volumes: anonymous volumes (`-v /data`).
    for dst in b.volumes.unwrap_or_default().into_keys() {
        if !volumes
            .iter()
            .any(|v| v.split(':').nth(1) == Some(dst.as_str()))
        {
            volumes.push(dst);
        }
    }
    let mounts = hc
        .mounts
        .unwrap_or_default()
        .iter()
        .map(mount_flag)
        .collect::<Result<Vec<_>, _>>()?;
    let tmpfs = hc
        .tmpfs
        .unwrap_or_default()
        .into_iter()
        .map(|(d, o)| if o.is_empty() { d } else { format!("{d}:{o}") })
        .collect();
    let network_mode = hc.network_mode.unwrap_or_default();
    let (mut ip, mut aliases) = (None, Vec::new());
    for (net, ep) in b
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default()
    {
        if (net == network_mode || network_mode.is_empty() || network_mode == "default")
            && let Some(ep) = ep
        {
            aliases.extend(ep.aliases.unwrap_or_default());
            ip = ep
                .ipam_config
                .and_then(|i| i.ipv4_address)
                .filter(|s| !s.is_empty());
        }
    }
    let port_bindings = hc
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let k = if k.contains('/') {
                k
            } else {
                format!("{k}/tcp")
            };
            (k, v.unwrap_or_default())
        })
        .collect();
    let entrypoint = b.entrypoint.map(StrSlice::into_vec);
    Ok(CreateRequest {
        image,
        platform: None,
        name,
        cmd: b.cmd.map(StrSlice::into_vec).unwrap_or_default(),
        entrypoint,
        env: b.env.unwrap_or_default(),
        workdir: b.working_dir.filter(|w| !w.is_empty()),
        user: b.user.filter(|u| !u.is_empty()),
        hostname: b.hostname.filter(|h| !h.is_empty()),
        tty: b.tty.unwrap_or(false),
        interactive: b.open_stdin.unwrap_or(false),
        volumes,
        mounts,
        tmpfs,
        labels: b.labels.unwrap_or_default(),
        stop_signal: b.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: b.stop_timeout,
        healthcheck: b.healthcheck,
        host: HostConfig {
            network_mode,
            restart_policy: hc.restart_policy.unwrap_or_default(),
            auto_remove: hc.auto_remove.unwrap_or(false),
            cap_add: hc.cap_add.unwrap_or_default(),
            cap_drop: hc.cap_drop.unwrap_or_default(),
            privileged: hc.privileged.unwrap_or(false),
            readonly_rootfs: hc.readonly_rootfs.unwrap_or(false),
            security_opt: hc.security_opt.unwrap_or_default(),
            init: hc.init.unwrap_or(false),
            memory: hc.memory.unwrap_or(0),
            memory_swap: hc.memory_swap.unwrap_or(0),
            nano_cpus: hc.nano_cpus.unwrap_or(0),
            cpu_shares: hc.cpu_shares.unwrap_or(0),
            cpuset_cpus: hc.cpuset_cpus.unwrap_or_default(),
            pids_limit: hc.pids_limit.filter(|p| *p > 0),
            ulimits: hc.ulimits.unwrap_or_default(),
            extra_hosts: hc.extra_hosts.unwrap_or_default(),
            dns: hc.dns.unwrap_or_default(),
            port_bindings,
            publish_all_ports: hc.publish_all_ports.unwrap_or(false),
            devices: hc
                .devices
                .unwrap_or_default()
                .into_iter()
                .map(|mut d| {
                    // docker: no container path means the host's.
                    if d.path_in_container.is_empty() {
                        d.path_in_container = d.path_on_host.clone();
                    }
                    d
                })
                .collect(),
            device_requests: hc.device_requests.unwrap_or_default(),
            ..Default::default()
        },
        ip,
        network_aliases: aliases,
        expose: b.exposed_ports.unwrap_or_default().into_keys().collect(),
    })
}

/// The `POST /containers/create` body docker's CLI would send for `r` (the
/// inverse of what the service reads; `--mount` strings become
/// `HostConfig.Mounts`). Fails on a `--mount` key the API cannot carry.
pub fn create_body(r: &berth_engine::run::CreateRequest) -> std::result::Result<Value, String> {
    use serde_json::json;
    let (mut binds, mut anon) = (Vec::new(), serde_json::Map::new());
    for v in &r.volumes {
        if v.contains(':') {
            binds.push(v.clone());
        } else {
            anon.insert(v.clone(), json!({}));
        }
    }
    let mounts = r
        .mounts
        .iter()
        .map(|m| mount_json(m))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let tmpfs: serde_json::Map<String, Value> = r
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((d, o)) => (d.to_string(), json!(o)),
            None => (t.clone(), json!("")),
        })
        .collect();
    let mut hc = serde_json::to_value(&r.host).map_err(|e| e.to_string())?;
    hc["Binds"] = json!(binds);
    hc["Mounts"] = json!(mounts);
    hc["Tmpfs"] = json!(tmpfs);
    if r.host.pids_limit.is_none() {
        hc["PidsLimit"] = Value::Null;
    }
    let network = if r.host.network_mode.is_empty() {
        "default".to_string()
    } else {
        r.host.network_mode.clone()
    };
    let mut endpoint = json!({"Aliases": r.network_aliases});
    if let Some(ip) = &r.ip {
        endpoint["IPAMConfig"] = json!({"IPv4Address": ip});
    }
    let exposed: serde_json::Map<String, Value> =
        r.expose.iter().map(|p| (p.clone(), json!({}))).collect();
    Ok(json!({
        "Image": r.image,
        "Cmd": if r.cmd.is_empty() { Value::Null } else { json!(r.cmd) },
        "Entrypoint": r.entrypoint,
        "Env": r.env,
        "WorkingDir": r.workdir.clone().unwrap_or_default(),
        "User": r.user.clone().unwrap_or_default(),
        "Hostname": r.hostname.clone().unwrap_or_default(),
        "Tty": r.tty,
        "OpenStdin": r.interactive,
        "AttachStdin": r.interactive,
        "AttachStdout": true,
        "AttachStderr": true,
        "Volumes": anon,
        "Labels": r.labels,
        "StopSignal": r.stop_signal,
        "StopTimeout": r.stop_timeout,
        "ExposedPorts": exposed,
        "Healthcheck": r.healthcheck,
        "HostConfig": hc,
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}},
    }))
}

/// One `--mount` string as a `HostConfig.Mounts` item.
fn mount_json(m: &str) -> std::result::Result<Value, String> {
    let mut v = serde_json::json!({"Type": "volume"});
    for kv in m.split(',') {
        let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "type" => v["Type"] = val.into(),
            "source" | "src" => v["Source"] = val.into(),
            "target" | "dst" | "destination" => v["Target"] = val.into(),
            "readonly" | "ro" => v["ReadOnly"] = matches!(val, "" | "true" | "1").into(),
            "tmpfs-size" => {
                let n: i64 = val
                    .parse()
                    .map_err(|_| format!("invalid tmpfs-size {val:?} in --mount {m}"))?;
                v["TmpfsOptions"]["SizeBytes"] = n.into();
            }
            "tmpfs-mode" => {
                let n = u32::from_str_radix(val, 8)
                    .map_err(|_| format!("invalid tmpfs-mode {val:?} in --mount {m}"))?;
                v["TmpfsOptions"]["Mode"] = n.into();
            }
            _ => return Err(format!("--mount option {k:?} cannot be sent with -H yet")),
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `berth -H run …` sends reads back as the request it was made
    /// from: the client's body and the service's reading agree.
    #[test]
    fn a_create_body_round_trips_through_the_service_s_reading() {
        let mut r = CreateRequest {
            image: "busybox".into(),
            name: Some("web".into()),
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
            entrypoint: Some(vec!["/bin/env".into()]),
            env: vec!["A=1".into()],
            workdir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            hostname: Some("h".into()),
            tty: true,
            interactive: true,
            volumes: vec!["/data".into(), "named:/v:ro".into()],
            mounts: vec!["type=tmpfs,target=/t,tmpfs-size=1048576,tmpfs-mode=1777".into()],
            tmpfs: vec!["/run:size=64k".into(), "/scratch".into()],
            stop_signal: Some("SIGINT".into()),
            stop_timeout: Some(3),
            ip: Some("10.88.0.9".into()),
            network_aliases: vec!["web".into()],
            expose: vec!["80/tcp".into()],
            ..Default::default()
        };
        r.labels.insert("app".into(), "x".into());
        r.host.network_mode = "net1".into();
        r.host.memory = 64 << 20;
        r.host.memory_swap = 128 << 20;
        r.host.nano_cpus = 500_000_000;
        r.host.pids_limit = Some(50);
        r.host.cap_add = vec!["NET_ADMIN".into()];
        r.host.auto_remove = true;
        r.host.init = true;
        r.host.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft: 10,
            hard: 20,
        }];
        r.host.port_bindings.insert(
            "80/tcp".into(),
            vec![berth_engine::network::PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "8080".into(),
            }],
        );
        let body = create_body(&r).unwrap();
        let back = request(serde_json::from_value(body).unwrap(), r.name.clone()).unwrap();
        // Binds (HostConfig.Binds) come back before anonymous volumes
        // (Config.Volumes); the rest is as sent.
        let mut want = r.clone();
        want.volumes = vec!["named:/v:ro".into(), "/data".into()];
        assert_eq!(format!("{back:?}"), format!("{want:?}"));
        assert!(
            create_body(&CreateRequest {
                mounts: vec!["type=bind,src=/a,dst=/b,bind-propagation=shared".into()],
                ..Default::default()
            })
            .unwrap_err()
            .contains("bind-propagation")
        );
    }
}
