//! `/containers/…`: docker's container endpoints over the engine. The
//! create body becomes the engine's `CreateRequest` in [`crate::create`];
//! lists and inspections are the documents `berth ps` and `berth inspect`
//! show; logs and attach are in [`crate::logs`].

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_engine::container::RestartPolicy;
use berth_engine::{Container, Status};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::create::{CreateBody, request};
use crate::logs::Nap;
use crate::query::Query;
use crate::route::{Req, Res, body_json, json as json_resp, no_content, ok};
use crate::{ApiError, Ctx};

/// The Unix time of an RFC 3339 string (0 when absent).
pub(crate) fn unix(t: &str) -> i64 {
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

/// `POST /containers/create?name=…`: 201 `{"Id", "Warnings"}`; 404 when the
/// image is not here (the docker CLI then pulls and asks again).
pub async fn create(ctx: &Ctx, req: Req, q: &Query) -> Res {
    let body: Option<CreateBody> = body_json(req, 4 << 20).await?;
    let mut r = request(body.unwrap_or_default(), q.get("name").map(str::to_string))?;
    // `?platform=os/arch[/variant]`: which platform of a multi-platform image.
    if let Some(p) = q.get("platform").filter(|p| !p.is_empty()) {
        r.platform = Some(berth_types::Platform::parse(p).map_err(ApiError::bad_request)?);
    }
    let id = ctx
        .blocking(move |e| {
            if r.host.memory > 0 && r.host.memory < 6 * 1024 * 1024 {
                return Err(ApiError::bad_request("Minimum memory limit allowed is 6MB"));
            }
            let found = match &r.platform {
                Some(p) => e.store.resolve_platform(&r.image, p),
                None => e.store.resolve(&r.image),
            };
            if found.is_err() {
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
