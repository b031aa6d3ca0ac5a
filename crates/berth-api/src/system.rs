//! `/_ping`, `/version`, `/info`, `/system/df`, `/events`: what clients ask
//! first (the docker CLI negotiates its API version from `/_ping`'s
//! `API-Version` header), with dockerd's fields.

use axum::body::Body;
use axum::http::{Method, Response, StatusCode, header};
use serde_json::json;

use crate::query::Query;
use crate::route::{Res, ok};
use crate::{API_VERSION, ApiError, Ctx, MIN_API_VERSION};

/// `GET|HEAD /_ping`.
pub fn ping(m: &Method) -> Res {
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("cache-control", "no-cache, no-store, must-revalidate")
        .header("pragma", "no-cache")
        .header("docker-experimental", "false")
        .header("builder-version", "1");
    Ok(b.body(if m == Method::HEAD {
        Body::empty()
    } else {
        Body::from("OK")
    })
    .expect("response"))
}

fn kernel() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn arch() -> String {
    berth_types::Platform::host().architecture
}

/// `GET /version`.
pub fn version() -> Res {
    ok(version_doc())
}

/// dockerd's version document (also what `berth version` shows as its
/// server part: berth's engine runs in every command).
pub fn version_doc() -> serde_json::Value {
    let v = env!("CARGO_PKG_VERSION");
    json!({
        "Platform": {"Name": "berth"},
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel(),
            }
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel(),
        "BuildTime": "",
    })
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// `GET /info`.
pub async fn info(ctx: &Ctx) -> Res {
    ok(ctx.blocking(info_doc).await?)
}

/// dockerd's info document for the engine's root (also `berth info`).
pub fn info_doc(e: &berth_engine::Engine) -> Result<serde_json::Value, ApiError> {
    let root = e.root().to_path_buf();
    let (rootless, mut warnings) = if berth_engine::rootless::active() {
        let network = if berth_engine::network::pasta::available() {
            "pasta"
        } else {
            "none (install passt for pasta)"
        };
        let (cgroups, warn) = match berth_runtime::cgroup_delegated_root() {
            Some((mount, root)) => (
                format!(
                    "v2, delegated: {root} (controllers: {})",
                    berth_runtime::cgroup_controller_list(&mount.join(root.trim_start_matches('/')))
                ),
                None,
            ),
            None => (
                "none: rootless containers run without a cgroup (no resource limits; no cgroup v2 subtree is delegated to this user)".to_string(),
                Some("WARNING: rootless: containers run without a cgroup; --memory, --cpus and --pids-limit are not available".to_string()),
            ),
        };
        (
            serde_json::json!({
                "IDMap": berth_engine::rootless::current_mapping().map(|m| m.describe()),
                "Network": network,
                "Cgroups": cgroups,
            }),
            warn.into_iter().collect(),
        )
    } else {
        (serde_json::Value::Null, Vec::new())
    };
    let containers = e.containers()?;
    let images = e.store.images().map_err(ApiError::from)?.len();
    let driver = e.store.snapshots.driver_name().to_string();
    let count =
        |f: fn(&berth_engine::Container) -> bool| containers.iter().filter(|c| f(c)).count();
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let layout = berth_runtime::cgroup_layout();
    let (cdi_dirs, cdi_devices, cdi_errors) = berth_engine::devices::discovered();
    for e in cdi_errors {
        warnings.push(format!("WARNING: CDI spec not read: {e}"));
    }
    Ok(json!({
        "ID": "berth",
        "Containers": containers.len(),
        "ContainersRunning": count(|c| c.state.status == berth_engine::Status::Running),
        "ContainersPaused": count(|c| c.state.status == berth_engine::Status::Paused),
        "ContainersStopped": count(|c| !c.is_up()),
        "Images": images,
        "Driver": driver,
        "DriverStatus": [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": jiff::Timestamp::now().to_string(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if matches!(layout, berth_runtime::CgroupLayout::V2) { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel(),
        "OperatingSystem": os_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "DockerRootDir": root,
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {"berth-runtime": {"path": "berth-runtime"}},
        "DefaultRuntime": "berth-runtime",
        "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": "", "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "berth-init",
        "SecurityOptions": security_options(),
        "CDISpecDirs": cdi_dirs,
        "DiscoveredDevices": cdi_devices.iter().map(|d| json!({"Source": "cdi", "ID": d})).collect::<Vec<_>>(),
        "Warnings": warnings,
        // berth's own: how a user's (rootless) berth runs.
        "BerthRootless": rootless,
    }))
}

/// docker's list: seccomp, and `name=rootless` for a user's berth.
fn security_options() -> Vec<&'static str> {
    let mut v = vec!["name=seccomp,profile=builtin"];
    if berth_engine::rootless::active() {
        v.push("name=rootless");
    }
    v
}

/// `GET /system/df`: the engine's accounting (`berth_engine::df`) in
/// dockerd's shape: shared sizes, each container's writable layer, each
/// volume's size and reference count, the layers counted once.
pub async fn df(ctx: &Ctx) -> Res {
    let doc = ctx
        .blocking(|e| {
            let du = e.disk_usage()?;
            let images: Vec<serde_json::Value> = du
                .images
                .iter()
                .map(|u| {
                    let i = &u.image;
                    json!({
                        "Id": i.id.to_string(),
                        "ParentId": "",
                        "RepoTags": i.names.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
                        "RepoDigests": i.repo_digests.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
                        "Created": crate::images::unix(i.config.created.as_deref()),
                        "Size": u.size,
                        "SharedSize": u.shared,
                        "VirtualSize": u.size,
                        "Labels": i.config.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default(),
                        "Containers": u.containers,
                    })
                })
                .collect();
            let containers: Vec<serde_json::Value> = du
                .containers
                .iter()
                .map(|u| {
                    let mut j = crate::containers::summary(&u.container);
                    j["SizeRw"] = json!(u.size_rw);
                    j["SizeRootFs"] = json!(u.size_root);
                    j
                })
                .collect();
            let volumes: Vec<serde_json::Value> = du
                .volumes
                .iter()
                .map(|u| {
                    let mut j = crate::volumes::json_of(&u.volume);
                    j["UsageData"] = json!({"Size": u.size, "RefCount": u.links});
                    j
                })
                .collect();
            Ok(json!({
                "LayersSize": du.layers_size,
                "Images": images,
                "Containers": containers,
                "Volumes": volumes,
                "BuildCache": [],
            }))
        })
        .await?;
    ok(doc)
}

/// A time of the events query: Unix seconds (`1700000000.5`), or RFC 3339.
fn event_time(v: Option<&str>) -> Result<Option<i128>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(f) = v.parse::<f64>() {
        return Ok(Some((f * 1e9) as i128));
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| Some(t.as_nanosecond()))
        .map_err(|_| ApiError::bad_request(format!("invalid time {v:?}")))
}

/// `GET /events?since=…&until=…&filters=…`: what the log in the store
/// holds (from `since`; without it, only what happens from now), then what
/// comes, until `until` or the client leaves.
pub async fn events(ctx: &Ctx, q: &Query) -> Res {
    let since = event_time(q.get("since"))?;
    let until = event_time(q.get("until"))?;
    let filters = berth_engine::events::EventFilters::from_json(q.get("filters").unwrap_or(""))
        .map_err(ApiError::from)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let e = ctx.engine.clone();
    // Opened here, so an unreadable log is an error before the 200.
    ctx.blocking(|e| {
        e.events_log()
            .map(drop)
            .map_err(|err| ApiError::internal(err.to_string()))
    })
    .await?;
    tokio::task::spawn_blocking(move || {
        let _ = e.follow_events(since, until, &filters, &mut |ev| match ev {
            Some(ev) => {
                let out = ev.to_json().to_string() + "\n";
                tx.blocking_send(Ok(bytes::Bytes::from(out))).is_ok()
            }
            None => !tx.is_closed(),
        });
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::stream::channel_body(rx))
        .expect("response"))
}
