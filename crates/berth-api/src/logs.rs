//! A container's output for API clients: `GET /containers/{id}/logs` and
//! `POST /containers/{id}/attach` follow the json-file log its monitor
//! writes, framed as docker's multiplexed stream unless it has a tty.

use std::io::{Read, Seek};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_engine::{Engine, Status};

use crate::query::Query;
use crate::route::{Req, Res};
use serde_json::Value;

use crate::containers::unix;
use crate::{ApiError, Ctx};

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
pub(crate) struct Nap(Duration);

impl Default for Nap {
    fn default() -> Self {
        Nap(Duration::from_millis(1))
    }
}

impl Nap {
    pub(crate) fn sleep(&mut self) {
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
            let p = e.log_path(&c.id);
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
            let p = e.log_path(&c.id);
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
