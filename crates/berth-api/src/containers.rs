//! `/containers/…`: docker's container endpoints over the engine. The
//! create body (`Config` + `HostConfig` + `NetworkingConfig`, as the docker
//! CLI and Compose send it) becomes the engine's `CreateRequest`; lists and
//! inspections are the documents `berth ps` and `berth inspect` show.
//! Logs and attach stream the container's json-file log (in docker's
//! multiplexed frames unless it has a tty): berth has no daemon holding the
//! container's pipes, so attach follows what the monitor records.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_engine::container::{HostConfig, RestartPolicy, Ulimit};
use berth_engine::run::CreateRequest;
use berth_engine::{Container, Engine, Status};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::query::Query;
use crate::route::{Req, Res, body_json, json as json_resp, no_content, ok};
use crate::{ApiError, Ctx};

/// The Unix time of an RFC 3339 string (0 when absent).
fn unix(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0)
}

/// docker's `ContainerSummary` (an item of `GET /containers/json`).
pub fn summary(c: &Container) -> Value {
    let mut ports = Vec::new();
    for (k, bindings) in &c.network_settings.ports {
        let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
        let private: u16 = port.parse().unwrap_or(0);
        match bindings {
            bs if !bs.is_empty() => {
                for b in bs {
                    ports.push(json!({
                        "IP": if b.host_ip.is_empty() { "0.0.0.0" } else { b.host_ip.as_str() },
                        "PrivatePort": private,
                        "PublicPort": b.host_port.parse::<u16>().unwrap_or(0),
                        "Type": proto,
                    }));
                }
            }
            _ => ports.push(json!({"PrivatePort": private, "Type": proto})),
        }
    }
    let mut cmd = c.path.clone();
    for a in &c.args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    let networks: serde_json::Map<String, Value> = c
        .network_settings
        .networks
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.config.image,
        "ImageID": c.image_id,
        "Command": cmd,
        "Created": unix(&c.created),
        "Ports": ports,
        "Labels": c.config.labels,
        "State": c.state.status.as_str(),
        "Status": c.status_text(),
        "HostConfig": {"NetworkMode": c.host_config.network_mode},
        "NetworkSettings": {"Networks": networks},
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.typ,
            "Name": if m.name.is_empty() { Value::Null } else { json!(m.name) },
            "Source": m.source,
            "Destination": m.destination,
            "Driver": if m.typ == "volume" { "local" } else { "" },
            "Mode": "",
            "RW": m.rw,
            "Propagation": "",
        })).collect::<Vec<_>>(),
    })
}

/// `GET /containers/json`.
pub async fn list(ctx: &Ctx, q: &Query) -> Res {
    let all = q.bool("all");
    let limit = q.int("limit", -1)?;
    let filters = berth_engine::list::Filters::from_json(q.get("filters").unwrap_or(""))
        .map_err(ApiError::from)?;
    let mut cs = ctx
        .blocking(move |e| Ok(e.list(all || limit > 0, &filters)?))
        .await?;
    if limit > 0 {
        cs.truncate(limit as usize);
    }
    ok(Value::Array(cs.iter().map(summary).collect()))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(ctx: &Ctx, id: String) -> Res {
    ok(ctx
        .blocking(move |e| {
            let c = e.find(&id)?;
            Ok(e.inspect_json(&c))
        })
        .await?)
}

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
struct CreateBody {
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

fn request(b: CreateBody, name: Option<String>) -> Result<CreateRequest, ApiError> {
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
            ..Default::default()
        },
        ip,
        network_aliases: aliases,
        expose: b.exposed_ports.unwrap_or_default().into_keys().collect(),
    })
}

/// `POST /containers/create?name=…`: 201 `{"Id", "Warnings"}`; 404 when the
/// image is not here (the docker CLI then pulls and asks again).
pub async fn create(ctx: &Ctx, req: Req, q: &Query) -> Res {
    let body: Option<CreateBody> = body_json(req, 4 << 20).await?;
    let r = request(body.unwrap_or_default(), q.get("name").map(str::to_string))?;
    let id = ctx
        .blocking(move |e| {
            if r.host.memory > 0 && r.host.memory < 6 * 1024 * 1024 {
                return Err(ApiError::bad_request("Minimum memory limit allowed is 6MB"));
            }
            if e.store.resolve(&r.image).is_err() {
                let shown = berth_types::Reference::parse(&r.image)
                    .map(|x| x.with_default_tag().familiar())
                    .unwrap_or_else(|_| r.image.clone());
                return Err(ApiError::not_found(format!("No such image: {shown}")));
            }
            Ok(e.create(&r)?.id)
        })
        .await?;
    Ok(json_resp(
        StatusCode::CREATED,
        &json!({"Id": id, "Warnings": []}),
    ))
}

/// `POST /containers/{id}/start`: through a helper process (it forks the
/// container's monitor); 304 when it runs already.
pub async fn start(ctx: &Ctx, id: String) -> Res {
    let full = ctx.blocking(move |e| Ok(e.find(&id)?.id)).await?;
    if !crate::attach::start_attached(ctx, &full).await? {
        crate::helper::run(ctx, &["start", &full]).await?;
    }
    no_content()
}

/// `POST /containers/{id}/stop?t=…`: 304 when it is not running.
pub async fn stop(ctx: &Ctx, id: String, q: &Query) -> Res {
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    ctx.blocking(move |e| {
        let c = e.find(&id)?;
        if !c.is_up() {
            return Err(ApiError::not_modified());
        }
        e.stop(&c.id, t)?;
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /containers/{id}/restart?t=…`.
pub async fn restart(ctx: &Ctx, id: String, q: &Query) -> Res {
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    let full = ctx
        .blocking(move |e| {
            let c = e.find(&id)?;
            e.stop(&c.id, t)?;
            Ok(c.id)
        })
        .await?;
    crate::helper::run(ctx, &["start", &full]).await?;
    no_content()
}

/// `POST /containers/{id}/kill?signal=…`.
pub async fn kill(ctx: &Ctx, id: String, q: &Query) -> Res {
    let sig = match q.get("signal").filter(|s| !s.is_empty()) {
        None => libc::SIGKILL,
        Some(s) => berth_runtime::parse_signal(s)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {s}")))?,
    };
    ctx.blocking(move |e| {
        e.kill(&id, sig)?;
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`:
/// the headers at once (clients such as the docker CLI wait for them
/// before they start the container), then `{"StatusCode", "Error"}` in
/// the body once the condition holds.
pub async fn wait(ctx: &Ctx, id: String, q: &Query) -> Res {
    let condition = q.get("condition").unwrap_or("not-running").to_string();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: \"{condition}\""
        )));
    }
    let first = ctx.blocking(move |e| Ok(e.find(&id)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let e = ctx.engine.clone();
    tokio::task::spawn_blocking(move || {
        let since = first.state.finished_at.clone();
        let mut last = first.state.exit_code;
        let mut nap = Nap::default();
        let code = loop {
            if tx.is_closed() {
                return; // the client went away
            }
            match e.find(&first.id) {
                Err(_) => break e.exit_of_removed(&first.id).unwrap_or(last),
                Ok(c) => {
                    last = c.state.exit_code;
                    let stopped = !c.is_up();
                    let done = match condition.as_str() {
                        "not-running" => stopped && c.state.status != Status::Created,
                        "next-exit" => stopped && c.state.finished_at != since,
                        _ => false,
                    };
                    if done {
                        break c.state.exit_code;
                    }
                }
            }
            nap.sleep();
        };
        let body = json!({"StatusCode": code, "Error": null}).to_string() + "\n";
        let _ = tx.blocking_send(Ok(bytes::Bytes::from(body)));
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::stream::channel_body(rx))
        .expect("response"))
}

/// `POST /containers/{id}/pause` and `/unpause`.
pub async fn pause(ctx: &Ctx, id: String, on: bool) -> Res {
    ctx.blocking(move |e| {
        if on {
            e.pause(&id)?
        } else {
            e.unpause(&id)?
        }
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /containers/{id}/rename?name=…`.
pub async fn rename(ctx: &Ctx, id: String, q: &Query) -> Res {
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required"))?
        .to_string();
    ctx.blocking(move |e| Ok(e.rename(&id, &name)?)).await?;
    no_content()
}

/// The body of `POST /containers/{id}/update` (docker's `UpdateConfig`:
/// the resources, zero where unchanged, and the restart policy).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_shares: i64,
    cpuset_cpus: String,
    pids_limit: Option<i64>,
    restart_policy: Option<RestartPolicy>,
}

/// `POST /containers/{id}/update`.
pub async fn update(ctx: &Ctx, req: Req, id: String) -> Res {
    let b: Option<UpdateBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    let u = berth_engine::update::Update {
        memory: Some(b.memory),
        memory_swap: Some(b.memory_swap),
        nano_cpus: Some(b.nano_cpus),
        cpu_shares: Some(b.cpu_shares),
        cpuset_cpus: Some(b.cpuset_cpus),
        pids_limit: b.pids_limit,
        restart_policy: b.restart_policy,
    };
    ctx.blocking(move |e| Ok(e.update(&id, &u)?)).await?;
    ok(json!({"Warnings": []}))
}

/// `GET /containers/{id}/top`.
pub async fn top(ctx: &Ctx, id: String, q: &Query) -> Res {
    // `ps_args`: the host's ps options, split as words.
    let args: Vec<String> = q
        .get("ps_args")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (titles, rows) = ctx.blocking(move |e| Ok(e.top_with(&id, &args)?)).await?;
    ok(json!({"Titles": titles, "Processes": rows}))
}

/// `POST /containers/{id}/resize`: the terminal follows the client's size
/// only when attached through berth's own CLI; accepted so clients go on.
pub async fn resize(ctx: &Ctx, id: String) -> Res {
    ctx.blocking(move |e| e.find(&id).map(drop).map_err(ApiError::from))
        .await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .body(Body::empty())
        .expect("response"))
}

/// `DELETE /containers/{id}?force=…&v=…`.
pub async fn remove(ctx: &Ctx, id: String, q: &Query) -> Res {
    let (force, volumes) = (q.bool("force"), q.bool("v"));
    ctx.blocking(move |e| {
        let c = e.find(&id)?;
        if c.is_up() && !force {
            return Err(ApiError::conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                c.name
            )));
        }
        e.remove(&c.id, force, volumes)?;
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /containers/prune`.
pub async fn prune(ctx: &Ctx) -> Res {
    let gone = ctx.blocking(|e| Ok(e.prune()?)).await?;
    ok(json!({"ContainersDeleted": gone, "SpaceReclaimed": 0}))
}

/// One frame of docker's multiplexed stream: stream (1 stdout, 2 stderr),
/// three zero bytes, the length (big-endian u32), the payload.
fn frame(stream: u8, data: &[u8]) -> bytes::Bytes {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v.into()
}

/// What to stream of a log.
#[derive(Debug, Clone)]
struct LogSpec {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    /// Each line after its attributes (`details`).
    details: bool,
    tail: Option<usize>,
    since: Option<i64>,
    until: Option<i64>,
    /// Raw (a tty) rather than multiplexed.
    raw: bool,
}

/// Streams the json-file log at `path` into `tx`: what is there (from
/// `start`, the tail applied), then, with `follow`, what comes until the
/// container stops for good (`done` says so) and the log is drained. The
/// file is read through one open handle, so a container removed meanwhile
/// (`--rm`) still gives its last lines.
fn stream_log(
    mut f: std::fs::File,
    spec: &LogSpec,
    follow: bool,
    done: &dyn Fn() -> bool,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    let emit = |line: &str| -> bool {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return true;
        };
        let stream = v["stream"].as_str().unwrap_or("stdout");
        let (want, n) = match stream {
            "stderr" => (spec.stderr, 2),
            _ => (spec.stdout, 1),
        };
        let time = v["time"].as_str().unwrap_or("");
        let t = unix(time);
        if !want || spec.since.is_some_and(|s| t < s) || spec.until.is_some_and(|u| t > u) {
            return true;
        }
        let text = v["log"].as_str().unwrap_or("");
        // `details`: the record's attributes (none) and a space.
        let details = if spec.details { " " } else { "" };
        let payload = if spec.timestamps {
            format!("{time} {details}{text}")
        } else {
            format!("{details}{text}")
        };
        let chunk = if spec.raw {
            bytes::Bytes::from(payload.into_bytes())
        } else {
            frame(n, payload.as_bytes())
        };
        tx.blocking_send(Ok(chunk)).is_ok()
    };
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let complete = buf.rfind('\n').map_or(0, |i| i + 1);
    let lines: Vec<&str> = buf[..complete].lines().collect();
    let skip = spec.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for l in &lines[skip..] {
        if !emit(l) {
            return;
        }
    }
    let mut partial = buf[complete..].to_string();
    if !follow {
        return;
    }
    let mut nap = Nap::default();
    loop {
        let stopped = done();
        let mut more = String::new();
        let _ = f.read_to_string(&mut more);
        if !more.is_empty() {
            partial.push_str(&more);
            while let Some(i) = partial.find('\n') {
                let l: String = partial.drain(..=i).collect();
                if !emit(l.trim_end()) {
                    return;
                }
            }
            nap = Nap::default();
            continue;
        }
        if stopped || tx.is_closed() {
            return;
        }
        nap.sleep();
    }
}

/// Polling that starts fast and slows to 50 ms: a short-lived container
/// is seen to exit within milliseconds, a long-lived one costs little.
#[derive(Debug)]
struct Nap(Duration);

impl Default for Nap {
    fn default() -> Self {
        Nap(Duration::from_millis(1))
    }
}

impl Nap {
    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
    }
}

fn log_spec(q: &Query, tty: bool) -> Result<LogSpec, ApiError> {
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        match q.get(k).filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => v
                .split('.')
                .next()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid {k} {v:?}"))),
        }
    };
    Ok(LogSpec {
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        timestamps: q.bool("timestamps"),
        details: q.bool("details"),
        tail: match q.get("tail") {
            None | Some("all") | Some("") => None,
            Some(n) => Some(
                n.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
            ),
        },
        since: time("since")?,
        until: time("until")?,
        raw: tty,
    })
}

fn stream_type(raw: bool) -> &'static str {
    if raw {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Whether the container `id` will write no more (stopped and not
/// restarting, or gone).
fn finished(e: &Engine, id: &str) -> bool {
    e.find(id).map_or(true, |c| !c.is_up())
}

/// `GET /containers/{id}/logs`.
pub async fn logs(ctx: &Ctx, id: String, q: &Query) -> Res {
    let follow = q.bool("follow");
    let (c, path) = ctx
        .blocking(move |e| {
            let c = e.find(&id)?;
            let p = e.dir(&c.id).join(format!("{}-json.log", c.id));
            Ok((c, p))
        })
        .await?;
    let spec = log_spec(q, c.config.tty)?;
    if !spec.stdout && !spec.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let e = ctx.engine.clone();
    let raw = spec.raw;
    tokio::task::spawn_blocking(move || {
        let Ok(f) = std::fs::File::open(&path) else {
            return;
        };
        stream_log(f, &spec, follow, &|| finished(&e, &c.id), &tx);
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, stream_type(raw))
        .body(crate::stream::channel_body(rx))
        .expect("response"))
}

/// `POST /containers/{id}/attach?stream=1&stdout=1&stderr=1`: the
/// connection is hijacked (101, `Upgrade: tcp`) and carries what the
/// container writes from now until it exits, multiplexed unless it has a
/// tty. berth's monitor holds the container's pipes and records them in
/// the json-file log; attach follows that log. With `stdin=1`, to a running
/// container made with `-i`, what the client sends goes to the container's
/// input through its monitor (see `berth_engine::input`); to one not
/// started yet, see crate::attach.
pub async fn attach(ctx: &Ctx, mut req: Req, id: String, q: &Query) -> Res {
    let (c, path) = ctx
        .blocking(move |e| {
            let c = e.find(&id)?;
            let p = e.dir(&c.id).join(format!("{}-json.log", c.id));
            Ok((c, p))
        })
        .await?;
    let mut spec = log_spec(q, c.config.tty)?;
    if !q.bool("logs") {
        spec.tail = Some(0);
    }
    let upgrade = hyper::upgrade::on(&mut req);
    // With input, to a container about to be started: the start runs it
    // attached to this connection (see crate::attach).
    if q.bool("stdin") && c.state.status == Status::Created && q.bool("stream") {
        crate::attach::register(ctx, &c.id, upgrade, c.config.tty, c.config.open_stdin);
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp")
            .header(header::CONTENT_TYPE, stream_type(spec.raw))
            .body(Body::empty())
            .expect("response"));
    }
    let e = ctx.engine.clone();
    let raw = spec.raw;
    let stream = q.bool("stream");
    // The log is opened (made if the container has not run yet: its
    // monitor appends to it, so a short-lived `--rm` container's output is
    // read through this handle even after its removal) and placed before
    // any input is forwarded: whatever the input makes the container print
    // comes after.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    if spec.tail == Some(0) {
        let _ = f.seek(std::io::SeekFrom::End(0));
        spec.tail = None;
    }
    // Input to a running container: its monitor's socket, connected now.
    let input = (q.bool("stdin") && c.config.open_stdin && c.is_up())
        .then(|| berth_engine::input::connect(&ctx.engine.dir(&c.id)).ok())
        .flatten()
        .and_then(|s| {
            s.set_nonblocking(true).ok()?;
            tokio::net::UnixStream::from_std(s).ok()
        });
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else {
            return;
        };
        let (mut from_client, mut io) = tokio::io::split(hyper_util::rt::TokioIo::new(up));
        if let Some(mut to_container) = input {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_container).await;
            });
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
        let id = c.id.clone();
        let since_finish = c.state.finished_at.clone();
        let created = c.state.status == Status::Created;
        tokio::task::spawn_blocking(move || {
            // Done once it has run and stopped: for a container not yet
            // started, the start still to come is awaited.
            let done = || match e.find(&id) {
                Err(_) => true,
                Ok(c) => {
                    !c.is_up()
                        && c.state.status != Status::Created
                        && (!created || c.state.finished_at != since_finish)
                }
            };
            stream_log(f, &spec, stream, &done, &tx);
        });
        use tokio::io::AsyncWriteExt;
        while let Some(Ok(chunk)) = rx.recv().await {
            if io.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = io.shutdown().await;
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, stream_type(raw))
        .body(Body::empty())
        .expect("response"))
}

/// `X-Docker-Container-Path-Stat`: the stat as base64 JSON.
fn stat_header(st: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(String::from_utf8_lossy(st).trim())
}

fn archive_path(q: &Query) -> Result<String, ApiError> {
    q.get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("path is required"))
}

/// `HEAD|GET /containers/{id}/archive?path=…`: the stat header, and for
/// GET the tar (through a helper: reading a stopped container's files
/// mounts its snapshot in a mount namespace of the helper's own).
pub async fn archive_get(ctx: &Ctx, id: String, q: &Query, head: bool) -> Res {
    let path = archive_path(q)?;
    let st = crate::helper::run_io(ctx, &["archive-stat", &id, &path], None).await?;
    let body = if head {
        Body::empty()
    } else {
        Body::from(crate::helper::run_io(ctx, &["archive-get", &id, &path], None).await?)
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header("x-docker-container-path-stat", stat_header(&st))
        .body(body)
        .expect("response"))
}

/// `PUT /containers/{id}/archive?path=…`: the body (a tar) extracted into
/// that directory.
pub async fn archive_put(ctx: &Ctx, req: Req, id: String, q: &Query) -> Res {
    let path = archive_path(q)?;
    let data = crate::route::body_bytes(req, 1 << 30).await?;
    crate::helper::run_io(ctx, &["archive-put", &id, &path], Some(data)).await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .body(Body::empty())
        .expect("response"))
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
        let body = crate::client::create_body(&r).unwrap();
        let back = request(serde_json::from_value(body).unwrap(), r.name.clone()).unwrap();
        // Binds (HostConfig.Binds) come back before anonymous volumes
        // (Config.Volumes); the rest is as sent.
        let mut want = r.clone();
        want.volumes = vec!["named:/v:ro".into(), "/data".into()];
        assert_eq!(format!("{back:?}"), format!("{want:?}"));
        assert!(
            crate::client::create_body(&CreateRequest {
                mounts: vec!["type=bind,src=/a,dst=/b,bind-propagation=shared".into()],
                ..Default::default()
            })
            .unwrap_err()
            .contains("bind-propagation")
        );
    }
}
