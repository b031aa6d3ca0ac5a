//! `POST /build`: the body is the build context as a tar (as the docker CLI
//! and docker-py send it), unpacked with the layer applier's in-root safety
//! into a private scratch directory; the build itself runs in a helper
//! process (the builder mounts in a mount namespace of its own, which a
//! multi-threaded process cannot make) and its progress lines come back as
//! dockerd's `{"stream": …}` objects, the image as `{"aux": {"ID": …}}`,
//! a failure as `{"errorDetail": …}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::{Response, StatusCode, header};
use berth_types::Reference;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::query::Query;
use crate::route::{Req, Res, body_bytes};
use crate::{ApiError, Ctx};

/// What the helper builds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    context: PathBuf,
    dockerfile: Option<String>,
    tags: Vec<String>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    labels: BTreeMap<String, String>,
    network: String,
    pull: bool,
    /// `platform`: one or several (comma-separated) `os/arch[/variant]`.
    #[serde(default)]
    platforms: Vec<String>,
}

/// The largest context accepted.
const MAX_CONTEXT: usize = 4 << 30;

/// `POST /build?t=…&dockerfile=…&buildargs=…&target=…&nocache=…&labels=…&networkmode=…&pull=…&q=…`.
pub async fn build(ctx: &Ctx, req: Req, q: &Query) -> Res {
    let tags: Vec<String> = q
        .all("t")
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| {
            Reference::parse(t)
                .map(|r| r.with_default_tag().to_string())
                .map_err(|e| ApiError::bad_request(format!("invalid tag {t:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let quiet = q.bool("q");
    let network = match q.get("networkmode").unwrap_or("") {
        "" | "default" | "bridge" => "default".to_string(),
        n => n.to_string(),
    };
    let dockerfile = q
        .get("dockerfile")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    if let Some(d) = &dockerfile
        && (d.starts_with('/') || d.split('/').any(|c| c == ".."))
    {
        return Err(ApiError::bad_request(format!(
            "the Dockerfile ({d}) must be within the build context"
        )));
    }
    let platforms: Vec<String> = q
        .get("platform")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            berth_types::Platform::parse(p)
                .map(|x| x.to_string())
                .map_err(ApiError::bad_request)
        })
        .collect::<Result<_, _>>()?;
    let body = body_bytes(req, MAX_CONTEXT).await?;
    let (scratch, context) = unpack_context(ctx, body).await?;
    let job = Job {
        context,
        dockerfile,
        tags: tags.clone(),
        build_args: q.json_map("buildargs")?,
        target: q
            .get("target")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        no_cache: q.bool("nocache"),
        labels: q.json_map("labels")?,
        network,
        pull: q.bool("pull"),
        platforms,
    };
    let child = tokio::process::Command::new(&ctx.exe)
        .arg("--root")
        .arg(&ctx.root)
        .arg("__api-helper")
        .arg("build")
        .arg(serde_json::to_string(&job).expect("job"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::internal(format!("build: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(relay(child, quiet, tags, scratch, tx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::stream::channel_body(rx))
        .expect("response"))
}

/// The context tar (compressed or not) unpacked into a scratch directory
/// of its own under `builds/`, as a layer is, its paths kept inside it:
/// the scratch directory and the context in it.
async fn unpack_context(
    ctx: &Ctx,
    body: bytes::Bytes,
) -> Result<(std::path::PathBuf, std::path::PathBuf), ApiError> {
    let scratch = ctx.root.join("builds").join(format!(
        "api-{}-{}",
        std::process::id(),
        berth_engine::container::new_id()
    ));
    let context = scratch.join("context");
    {
        let context = context.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            std::fs::create_dir_all(&context)
                .map_err(|e| ApiError::internal(format!("{}: {e}", context.display())))?;
            let (_, plain) = berth_store::archive::decompress(&body[..])
                .map_err(|e| ApiError::bad_request(format!("the build context: {e}")))?;
            berth_store::archive::apply::apply(
                &context,
                plain,
                &berth_store::archive::apply::ApplyOptions {
                    whiteouts: berth_store::archive::apply::Whiteouts::Literal,
                    ..Default::default()
                },
            )
            .map_err(|e| ApiError::bad_request(format!("the build context: {e}")))?;
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    }
    Ok((scratch, context))
}

/// Relays the build helper's progress to the client as docker's JSON
/// stream (`stream` lines; `aux` with the id and "Successfully built/tagged"
/// at the end, or the error), then removes the scratch directory.
async fn relay(
    mut child: tokio::process::Child,
    quiet: bool,
    tags: Vec<String>,
    scratch: std::path::PathBuf,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    let line = |v: serde_json::Value| Ok(bytes::Bytes::from(v.to_string() + "\r\n"));
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(out).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if !quiet && tx.send(line(json!({"stream": l + "\n"}))).await.is_err() {
            let _ = child.kill().await;
            break;
        }
    }
    let mut result = String::new();
    let _ =
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(err), &mut result)
            .await;
    let _ = child.wait().await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let v: serde_json::Value = result
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| json!({"message": result.trim()}));
    match v["id"].as_str() {
        Some(id) => {
            let short = id.trim_start_matches("sha256:").get(..12).unwrap_or(id);
            let _ = tx.send(line(json!({"aux": {"ID": id}}))).await;
            if quiet {
                let _ = tx.send(line(json!({"stream": format!("{id}\n")}))).await;
            } else {
                let _ = tx
                    .send(line(
                        json!({"stream": format!("Successfully built {short}\n")}),
                    ))
                    .await;
                for t in &tags {
                    let shown = Reference::parse(t)
                        .map(|r| r.familiar())
                        .unwrap_or(t.clone());
                    let _ = tx
                        .send(line(
                            json!({"stream": format!("Successfully tagged {shown}\n")}),
                        ))
                        .await;
                }
            }
        }
        None => {
            let msg = v["message"].as_str().unwrap_or("build failed").to_string();
            let _ = tx
                .send(line(json!({"errorDetail": {"message": msg}, "error": msg})))
                .await;
        }
    }
}

/// The helper's side: builds `job` (progress on stdout), reports
/// `{"id": …}` or `{"message": …}` on stderr.
pub fn helper_main(engine: &berth_engine::Engine, job: &str) -> i32 {
    let r = (|| -> Result<String, String> {
        let job: Job = serde_json::from_str(job).map_err(|e| format!("build request: {e}"))?;
        let tags = job
            .tags
            .iter()
            .map(|t| Reference::parse(t).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = berth_build::builder::BuildOptions {
            dockerfile: job.dockerfile.as_ref().map(|d| job.context.join(d)),
            context: job.context.clone(),
            dockerfile_content: None,
            tags,
            build_args: job.build_args,
            target: job.target,
            no_cache: job.no_cache,
            labels: job.labels,
            network: job.network,
            source_date_epoch: None,
            quiet: false,
            pull: job.pull,
            provided: Default::default(),
            platforms: job
                .platforms
                .iter()
                .map(|p| berth_types::Platform::parse(p))
                .collect::<Result<_, _>>()?,
            compression: Default::default(),
        };
        let store = &engine.store;
        // Base images the store lacks are pulled (anonymously: a client's
        // registry credentials for builds are not passed on yet).
        let fetch = move |base: &str, always: bool, platform: Option<&str>| -> Result<(), String> {
            let platform = match platform {
                Some(p) => berth_types::Platform::parse(p)?,
                None => berth_types::Platform::host(),
            };
            if !always && store.resolve_platform(base, &platform).is_ok() {
                return Ok(());
            }
            let r = Reference::parse(base).map_err(|e| e.to_string())?;
            let reg = berth_registry::client::Registry::connect(
                r.domain(),
                None,
                berth_registry::client::Options::default(),
            )
            .map_err(|e| e.to_string())?;
            berth_registry::client::pull::pull(
                store,
                &reg,
                &r,
                &berth_registry::client::pull::PullOptions { platform },
                &berth_registry::client::progress::Quiet,
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        let mut b = berth_build::builder::Builder::new(
            &engine.store,
            engine.root(),
            Box::new(std::io::stdout()),
        )
        .map_err(|e| e.to_string())?
        .with_fetcher(Box::new(fetch));
        b.build(&opts)
            .map(|img| img.id.to_string())
            .map_err(|e| e.to_string())
    })();
    match r {
        Ok(id) => {
            eprintln!("{}", json!({ "id": id }));
            0
        }
        Err(m) => {
            eprintln!("{}", json!({ "message": m }));
            1
        }
    }
}

/// `POST /build/prune`: the layer cache and what dead builds left go, as
/// `builder prune` does (dockerd's answer: the caches deleted, the space).
pub async fn prune(ctx: &Ctx) -> Res {
    let r = ctx
        .blocking(|e| {
            berth_build::prune(&e.store, e.root())
                .map_err(|err| ApiError::internal(err.to_string()))
        })
        .await?;
    crate::route::ok(serde_json::json!({
        "CachesDeleted": r.layers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "SpaceReclaimed": r.bytes_freed,
    }))
}
