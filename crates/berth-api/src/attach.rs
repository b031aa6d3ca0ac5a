//! Attaching with input (`docker run -i`, `docker run -it`, `docker
//! start -ai`): docker clients attach before they start the container, so
//! an attach that asks for stdin to a container that is not running yet is
//! kept (the hijacked connection, once upgraded) and the container's start
//! then runs it *attached*, in a helper process that is the container's
//! monitor for its life (it logs, proxies the terminal or the pipes, and
//! removes an `--rm` container): the helper's stdin, stdout and stderr are
//! bridged to the client's connection — raw with a tty, docker's
//! multiplexed frames without. A start failure is reported by the helper in
//! a file of its own (its stderr is the container's), so the start request
//! gets the error it would get detached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ApiError, Ctx};

/// An attached connection waiting for its container's start.
#[derive(Debug)]
pub struct Pending {
    rx: tokio::sync::oneshot::Receiver<Upgraded>,
    tty: bool,
    stdin: bool,
}

/// Attaches waiting for their starts, by container id.
pub type PendingAttaches = Arc<Mutex<HashMap<String, Pending>>>;

/// Keeps an attach until the container starts.
pub fn register(ctx: &Ctx, id: &str, upgrade: hyper::upgrade::OnUpgrade, tty: bool, stdin: bool) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.attaches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), Pending { rx, tty, stdin });
    tokio::spawn(async move {
        if let Ok(up) = upgrade.await {
            let _ = tx.send(up);
        }
    });
}

fn error_file(ctx: &Ctx, id: &str) -> PathBuf {
    ctx.root
        .join("containers")
        .join(format!(".attach-error-{id}"))
}

/// Starts `id` attached to the connection waiting for it, if one is;
/// `Ok(false)` when none is (then the start is a detached one).
pub async fn start_attached(ctx: &Ctx, id: &str) -> Result<bool, ApiError> {
    let Some(p) = ctx
        .attaches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id)
    else {
        return Ok(false);
    };
    let up = tokio::time::timeout(Duration::from_secs(10), p.rx)
        .await
        .map_err(|_| ApiError::internal("the attached connection never upgraded"))?
        .map_err(|_| ApiError::internal("the attached connection went away"))?;
    let errf = error_file(ctx, id);
    let _ = std::fs::remove_file(&errf);
    let mut child = tokio::process::Command::new(&ctx.exe)
        .arg("--root")
        .arg(&ctx.root)
        .arg("__api-helper")
        .arg("start-attached")
        .arg(id)
        .arg(if p.stdin { "1" } else { "0" })
        .arg(&errf)
        .stdin(if p.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::internal(format!("start: {e}")))?;
    let (mut rd, wr) = tokio::io::split(TokioIo::new(up));
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut rd, &mut stdin).await;
        });
    }
    let tty = p.tty;
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
                let data = if tty {
                    buf[..k].to_vec()
                } else {
                    let mut f = vec![n, 0, 0, 0];
                    f.extend_from_slice(&(k as u32).to_be_bytes());
                    f.extend_from_slice(&buf[..k]);
                    f
                };
                if w.write_all(&data).await.is_err() {
                    break;
                }
            }
        })
    };
    let out = child.stdout.take().map(|o| pump(Box::new(o), 1));
    let err = child.stderr.take().map(|e| pump(Box::new(e), 2));
    // The start answers once the container runs, or once the helper has
    // ended: with the error it reported, or none (it ran and is done).
    let read_error = |errf: &PathBuf| -> Option<ApiError> {
        let m = std::fs::read_to_string(errf).ok()?;
        let v: serde_json::Value = serde_json::from_str(&m).ok()?;
        let _ = std::fs::remove_file(errf);
        Some(ApiError::new(
            axum::http::StatusCode::from_u16(v["status"].as_u64().unwrap_or(500) as u16)
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            v["message"].as_str().unwrap_or("start failed").to_string(),
        ))
    };
    let r = loop {
        if let Some(e) = read_error(&errf) {
            break Err(e);
        }
        let running = ctx.engine.find(id).is_ok_and(|c| c.is_up());
        if running {
            break Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            break match read_error(&errf) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::spawn(async move {
        for t in [out, err].into_iter().flatten() {
            let _ = t.await;
        }
        let _ = child.wait().await;
        let _ = wr.lock().await.shutdown().await;
    });
    r.map(|()| true)
}

/// The helper's side: starts the container attached to the helper's own
/// stdio; a failure to start goes to `error_file` as the API error.
pub fn helper_main(engine: &berth_engine::Engine, id: &str, stdin: bool, error_file: &str) -> i32 {
    match engine.start_attached(id, stdin) {
        Ok(code) => code,
        Err(e) => {
            let code = e.run_exit_code();
            let api = ApiError::from(e);
            let c = engine.find(id);
            if let Ok(c) = c
                && c.host_config.auto_remove
            {
                let _ = engine.remove(&c.id, true, true);
            }
            // Whole or not at all: the server polls for this file, and must
            // never read it half-written (an empty file read as "start
            // failed" turned a 127 into a 125).
            let tmp = format!("{error_file}.tmp");
            let body = serde_json::json!({"status": api.status.as_u16(), "message": api.message})
                .to_string();
            if std::fs::write(&tmp, body).is_ok() {
                let _ = std::fs::rename(&tmp, error_file);
            }
            code
        }
    }
}
