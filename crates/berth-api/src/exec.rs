//! Exec instances: `POST /containers/{id}/exec` makes one (kept in the
//! service's memory, as dockerd keeps them), `POST /exec/{id}/start` runs
//! it — detached, or on the hijacked connection: the client's input to the
//! process, its output back (multiplexed unless it has a tty) —
//! `GET /exec/{id}/json` says whether it runs and how it ended. The
//! process is started by a helper process (it forks into the container's
//! namespaces, which this multi-threaded server must not do) whose stdio
//! are the exec's: the helper's exit code is the process's.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_engine::ops::ExecRequest;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::route::{Req, Res, body_json, json as json_resp, ok};
use crate::{ApiError, Ctx};

/// One exec instance.
#[derive(Debug, Clone)]
pub struct Exec {
    container: String,
    req: ExecRequest,
    attach_stdin: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
}

/// The service's exec instances.
pub type Execs = Arc<Mutex<HashMap<String, Exec>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    attach_stdin: Option<bool>,
    tty: Option<bool>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    privileged: Option<bool>,
}

/// `POST /containers/{id}/exec`: 201 `{"Id"}`.
pub async fn create(ctx: &Ctx, req: Req, id: String) -> Res {
    let b: Option<CreateBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    let cmd = b
        .cmd
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("No exec command specified"))?;
    let container = ctx
        .blocking(move |e| {
            let c = e.find(&id)?;
            if c.state.status == berth_engine::Status::Paused {
                return Err(ApiError::conflict(format!(
                    "Container {} is paused, unpause the container before exec",
                    c.id
                )));
            }
            if !c.is_up() {
                return Err(ApiError::conflict(format!(
                    "Container {} is not running",
                    c.id
                )));
            }
            Ok(c.id)
        })
        .await?;
    let exec_id = berth_engine::container::new_id();
    let interactive = b.attach_stdin.unwrap_or(false);
    let x = Exec {
        container,
        req: ExecRequest {
            cmd,
            env: b.env.unwrap_or_default(),
            user: b.user.filter(|u| !u.is_empty()),
            workdir: b.working_dir.filter(|w| !w.is_empty()),
            tty: b.tty.unwrap_or(false),
            interactive,
            detach: false,
            privileged: b.privileged.unwrap_or(false),
        },
        attach_stdin: interactive,
        running: false,
        exit_code: None,
        pid: 0,
    };
    ctx.execs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(exec_id.clone(), x);
    Ok(json_resp(StatusCode::CREATED, &json!({"Id": exec_id})))
}

fn get(ctx: &Ctx, id: &str) -> Result<Exec, ApiError> {
    ctx.execs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

fn update(ctx: &Ctx, id: &str, f: impl FnOnce(&mut Exec)) {
    if let Some(x) = ctx
        .execs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(id)
    {
        f(x);
    }
}

/// `GET /exec/{id}/json`.
pub async fn inspect(ctx: &Ctx, id: String) -> Res {
    let x = get(ctx, &id)?;
    ok(json!({
        "ID": id,
        "Running": x.running,
        "ExitCode": x.exit_code,
        "ProcessConfig": {
            "tty": x.req.tty,
            "entrypoint": x.req.cmd.first(),
            "arguments": x.req.cmd.get(1..).unwrap_or_default(),
            "privileged": x.req.privileged,
            "user": x.req.user.clone().unwrap_or_default(),
        },
        "OpenStdin": x.attach_stdin,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": x.container,
        "DetachKeys": "",
        "Pid": x.pid,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: Option<bool>,
}

fn helper(ctx: &Ctx, x: &Exec) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&ctx.exe);
    c.arg("--root")
        .arg(&ctx.root)
        .arg("__api-helper")
        .arg("exec")
        .arg(&x.container)
        .arg(serde_json::to_string(&x.req).expect("exec request"));
    c
}

/// `POST /exec/{id}/start`.
pub async fn start(ctx: &Ctx, mut req: Req, id: String) -> Res {
    let x = get(ctx, &id)?;
    if x.running || x.exit_code.is_some() {
        return Err(ApiError::conflict(format!(
            "Error: Exec command {id} has already run"
        )));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let b: Option<StartBody> = body_json(req, 1 << 20).await?;
    let detach = b.and_then(|b| b.detach).unwrap_or(false);
    update(ctx, &id, |x| x.running = true);
    if detach {
        let mut cmd = helper(ctx, &x);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("exec: {e}")))?;
        let ctx2 = ctx.clone();
        tokio::spawn(async move { finish(&ctx2, &id, child).await });
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .body(Body::empty())
            .expect("response"));
    }
    let mut cmd = helper(ctx, &x);
    cmd.stdin(if x.attach_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("exec: {e}")))?;
    if let Some(pid) = child.id() {
        update(ctx, &id, |x| x.pid = pid as i32);
    }
    let (tty, ctx2) = (x.req.tty, ctx.clone());
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else {
            let _ = child.kill().await;
            finish(&ctx2, &id, child).await;
            return;
        };
        let io = hyper_util::rt::TokioIo::new(up);
        let (mut rd, wr) = tokio::io::split(io);
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        // The client's input to the process.
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut rd, &mut stdin).await;
            });
        }
        let pump = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, n: u8| {
            let wr = wr.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    let k = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => k,
                    };
                    let mut w = wr.lock().await;
                    let r = if tty {
                        w.write_all(&buf[..k]).await
                    } else {
                        let mut f = vec![n, 0, 0, 0];
                        f.extend_from_slice(&(k as u32).to_be_bytes());
                        f.extend_from_slice(&buf[..k]);
                        w.write_all(&f).await
                    };
                    if r.is_err() {
                        break;
                    }
                }
            })
        };
        let out = child.stdout.take().map(|o| pump(Box::new(o), 1));
        let err = child.stderr.take().map(|e| pump(Box::new(e), 2));
        for t in [out, err].into_iter().flatten() {
            let _ = t.await;
        }
        // The exit code is recorded before the stream ends: clients ask
        // for it as soon as they see the end.
        finish(&ctx2, &id, child).await;
        let _ = wr.lock().await.shutdown().await;
    });
    let ct = if x.req.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let status = if wants_upgrade {
        StatusCode::SWITCHING_PROTOCOLS
    } else {
        StatusCode::OK
    };
    Ok(Response::builder()
        .status(status)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, ct)
        .body(Body::empty())
        .expect("response"))
}

async fn finish(ctx: &Ctx, id: &str, mut child: tokio::process::Child) {
    let code = match child.wait().await {
        Ok(st) => st.code().unwrap_or(126),
        Err(_) => 126,
    };
    update(ctx, id, |x| {
        x.running = false;
        x.exit_code = Some(code);
    });
}

/// `POST /exec/{id}/resize`.
pub async fn resize(ctx: &Ctx, id: String) -> Res {
    get(ctx, &id)?;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .body(Body::empty())
        .expect("response"))
}

/// The helper's side of an exec: the process's stdio are the helper's.
pub fn helper_main(engine: &berth_engine::Engine, container: &str, req: &str) -> i32 {
    let r: ExecRequest = match serde_json::from_str(req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("exec request: {e}");
            return 126;
        }
    };
    match engine.exec(container, &r) {
        Ok(code) => code,
        Err(e) => {
            // dockerd reports a process that could not start on the
            // stream, and 126/127 as the exec's exit code.
            eprintln!("OCI runtime exec failed: {e}");
            match e.run_exit_code() {
                125 => 126,
                c => c,
            }
        }
    }
}
