//! `GET /containers/{id}/stats` (dockerd's document, one sample or a
//! stream of one a second: CPU with the previous sample so clients compute
//! a percentage, memory, pids, block I/O, the container's interfaces) and
//! `POST /auth` (docker login: the credentials checked against the
//! registry, as dockerd checks them).

use std::time::Duration;

use axum::http::{Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::query::Query;
use crate::route::{Req, Res, body_json, ok};
use crate::{ApiError, Ctx};

/// Host CPU time, nanoseconds (the sum of /proc/stat's first line).
fn system_cpu_ns() -> u64 {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse::<u64>().ok())
                    .sum()
            })
        })
        .unwrap_or(0);
    // SAFETY: sysconf with a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
}

fn host_memory() -> u64 {
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

/// The container's interfaces as `/proc/<pid>/net/dev` counts them.
fn networks(pid: i32) -> Value {
    let mut m = serde_json::Map::new();
    if pid <= 0 {
        return Value::Object(m);
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let n: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if n.len() < 16 {
            continue;
        }
        m.insert(
            name.to_string(),
            json!({"rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2], "rx_dropped": n[3],
                   "tx_bytes": n[8], "tx_packets": n[9], "tx_errors": n[10], "tx_dropped": n[11]}),
        );
    }
    Value::Object(m)
}

#[derive(Clone, Copy, Default)]
struct Sample {
    cpu: u64,
    system: u64,
}

fn document(
    c: &berth_engine::Container,
    s: &berth_runtime::Stats,
    now: Sample,
    pre: Sample,
    read: &str,
    preread: &str,
) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = |x: Sample| {
        json!({
            "cpu_usage": {"total_usage": x.cpu, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": x.system,
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        })
    };
    let limit = if s.memory_limit == 0 || s.memory_limit >= host_memory() {
        host_memory()
    } else {
        s.memory_limit
    };
    json!({
        "read": read,
        "preread": preread,
        "pids_stats": {"current": s.pids_current, "limit": s.pids_limit},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": s.io_read_bytes},
            {"major": 0, "minor": 0, "op": "write", "value": s.io_write_bytes},
        ]},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu(now),
        "precpu_stats": cpu(pre),
        "memory_stats": {
            "usage": s.memory_usage,
            "max_usage": s.memory_max_usage,
            "stats": {"cache": s.memory_cache, "total_inactive_file": 0},
            "limit": limit,
        },
        "name": format!("/{}", c.name),
        "id": c.id,
        "networks": networks(c.state.pid),
    })
}

/// `GET /containers/{id}/stats?stream=…&one-shot=…`.
pub async fn stats(ctx: &Ctx, id: String, q: &Query) -> Res {
    let stream = q
        .get("stream")
        .is_none_or(|v| matches!(v, "1" | "true" | "True"));
    let one_shot = q.bool("one-shot");
    let first = {
        let id = id.clone();
        ctx.blocking(move |e| Ok(e.stats(&id)?)).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let e = ctx.engine.clone();
    tokio::spawn(async move {
        let mut pre = Sample::default();
        let mut preread = "0001-01-01T00:00:00Z".to_string();
        let mut cur = Some(first);
        let mut sampled_once = false;
        loop {
            let (c, s) = match cur.take() {
                Some(x) => x,
                None => {
                    let (e, id) = (e.clone(), id.clone());
                    match tokio::task::spawn_blocking(move || e.stats(&id)).await {
                        Ok(Ok(x)) => x,
                        _ => break,
                    }
                }
            };
            let now = Sample {
                cpu: s.cpu_usage_ns,
                system: system_cpu_ns(),
            };
            let read = jiff::Timestamp::now().to_string();
            // Without one-shot, a single answer carries a second's CPU delta
            // (dockerd samples twice too).
            if !stream && !one_shot && !sampled_once {
                sampled_once = true;
                pre = now;
                preread = read;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let doc = document(&c, &s, now, pre, &read, &preread);
            if tx
                .send(Ok(bytes::Bytes::from(doc.to_string() + "\n")))
                .await
                .is_err()
                || !stream
                || !c.is_up()
            {
                break;
            }
            pre = now;
            preread = read;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::stream::channel_body(rx))
        .expect("response"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
    identitytoken: String,
}

/// `POST /auth`: `{"Status": "Login Succeeded"}`, or 401 with the
/// registry's refusal.
pub async fn auth(req: Req) -> Res {
    let b: Option<AuthBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    let domain = {
        let s = b
            .serveraddress
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        match s.split('/').next().unwrap_or("") {
            "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
                "docker.io".to_string()
            }
            h => h.to_string(),
        }
    };
    let secret = if b.password.is_empty() {
        b.identitytoken
    } else {
        b.password
    };
    let creds = berth_registry::client::Credentials {
        username: b.username,
        secret,
    };
    tokio::task::spawn_blocking(move || {
        let reg = berth_registry::client::Registry::connect(
            &domain,
            Some(creds),
            berth_registry::client::Options::default(),
        )
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        reg.check_login()
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    ok(json!({"Status": "Login Succeeded", "IdentityToken": ""}))
}
