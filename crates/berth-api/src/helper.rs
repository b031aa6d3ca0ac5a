//! Helper processes: what must not run inside the service's multi-threaded
//! process runs in a short-lived `berth __api-helper VERB ARGS…` of the same
//! binary. Starting a container forks the monitor that outlives the
//! request (and the service); a fork from a process with other threads could
//! inherit a lock one of them held. The helper does one engine call and
//! says how it went on stderr as the API error it maps to (`{"status":…,
//! "message":…}`), so the service answers exactly as if it had made the
//! call itself.

use axum::http::StatusCode;
use berth_engine::Engine;

use crate::{ApiError, Ctx};

/// Runs `berth __api-helper args…` and maps its outcome.
pub async fn run(ctx: &Ctx, args: &[&str]) -> Result<(), ApiError> {
    run_io(ctx, args, None).await.map(drop)
}

/// Runs `berth __api-helper args…` with `input` on its stdin; returns what
/// it wrote on stdout, or the error it reported.
pub async fn run_io(
    ctx: &Ctx,
    args: &[&str],
    input: Option<bytes::Bytes>,
) -> Result<Vec<u8>, ApiError> {
    use std::io::{Read, Seek};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Its stderr is a memory file, not a pipe: the monitor the helper starts
    // inherits it and lives on, so a pipe would not reach EOF until the
    // container exits.
    let io = |e: std::io::Error| ApiError::internal(format!("helper: {e}"));
    let mut errf = std::fs::File::from(
        rustix::fs::memfd_create("berth-api-helper", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| io(e.into()))?,
    );
    let mut child = tokio::process::Command::new(&ctx.exe)
        .arg("--root")
        .arg(&ctx.root)
        .arg("__api-helper")
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(if args.first() == Some(&"start") {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::piped()
        })
        .stderr(errf.try_clone().map_err(io)?)
        .spawn()
        .map_err(|e| ApiError::internal(format!("{}: {e}", ctx.exe.display())))?;
    if let (Some(data), Some(mut w)) = (input, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
        });
    }
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out).await.map_err(io)?;
    }
    let status = child.wait().await.map_err(io)?;
    if status.success() {
        return Ok(out);
    }
    let mut err = String::new();
    errf.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    errf.take(64 << 10).read_to_string(&mut err).map_err(io)?;
    let v: serde_json::Value = err
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| serde_json::json!({"status": 500, "message": err.trim()}));
    let status = v["status"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Err(ApiError::new(
        status,
        v["message"].as_str().unwrap_or("helper failed").to_string(),
    ))
}

/// The helper's side (`berth __api-helper`): does the call, prints the
/// error as JSON on stderr; returns the exit code.
pub fn main(engine: &Engine, args: &[String]) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r: Result<(), ApiError> = match args.as_slice() {
        ["start", id] => start(engine, id),
        ["build", job] => return crate::build::helper_main(engine, job),
        ["start-attached", id, stdin, errf] => {
            return crate::attach::helper_main(engine, id, *stdin == "1", errf);
        }
        ["exec", container, req] => return crate::exec::helper_main(engine, container, req),
        ["archive-stat", id, path] => engine
            .archive_stat(id, path)
            .map(|st| println!("{}", serde_json::to_string(&st).expect("stat")))
            .map_err(ApiError::from),
        ["archive-get", id, path] => engine
            .archive_get(id, path, false)
            .map_err(ApiError::from)
            .and_then(|(_, tar)| {
                use std::io::Write;
                std::io::stdout()
                    .write_all(&tar)
                    .map_err(|e| ApiError::internal(e.to_string()))
            }),
        ["archive-put", id, path] => engine
            .archive_put(id, path, std::io::stdin().lock())
            .map_err(ApiError::from),
        _ => Err(ApiError::bad_request(format!(
            "__api-helper: unknown request {args:?}"
        ))),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "{}",
                serde_json::json!({"status": e.status.as_u16(), "message": e.message})
            );
            1
        }
    }
}

/// docker's start: 304 when it runs already.
fn start(engine: &Engine, id: &str) -> Result<(), ApiError> {
    let c = engine.find(id)?;
    if c.is_up() {
        return Err(ApiError::not_modified());
    }
    if let Err(e) = engine.start_detached(&c.id) {
        // dockerd removes an --rm container whose start failed.
        if c.host_config.auto_remove {
            let _ = engine.remove(&c.id, true, true);
        }
        return Err(e.into());
    }
    Ok(())
}
