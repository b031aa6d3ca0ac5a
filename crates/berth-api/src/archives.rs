//! Filesystems and images as archives over the API: a container's export
//! and changes, `POST /commit`, and image save (`/images/get`) and load
//! (`/images/load`). Each is one engine or store call; archives stream
//! through [`crate::stream`] rather than sitting in memory.

use axum::http::StatusCode;
use berth_store::image::archive::ArchiveFormat;
use berth_types::{ContainerConfig, Reference};
use serde_json::{Value, json};

use crate::query::Query;
use crate::route::{Req, Res, json as json_response, ok};
use crate::stream::{BodyReader, produce};
use crate::{ApiError, Ctx};

/// `GET /containers/{id}/export`: the container's whole filesystem as a tar.
pub async fn export(ctx: &Ctx, id: String) -> Res {
    let id = ctx.blocking(move |e| Ok(e.find(&id)?.id)).await?;
    produce(ctx, "application/x-tar", move |e, w| {
        e.export(&id, w).map_err(ApiError::from)
    })
}

/// `GET /containers/{id}/changes`: `[{"Path", "Kind"}]`, kind 0 modified,
/// 1 added, 2 deleted.
pub async fn changes(ctx: &Ctx, id: String) -> Res {
    let list = ctx.blocking(move |e| Ok(e.diff(&id)?)).await?;
    ok(Value::Array(
        list.into_iter()
            .map(|(k, path)| {
                let kind = match k {
                    'C' => 0,
                    'A' => 1,
                    _ => 2,
                };
                json!({"Path": path, "Kind": kind})
            })
            .collect(),
    ))
}

/// Lays the fields a commit request sets over the config it starts from,
/// as dockerd merges them.
fn merge(into: &mut ContainerConfig, user: ContainerConfig) {
    macro_rules! take {
        ($($f:ident),*) => {$(
            if user.$f.is_some() {
                into.$f = user.$f;
            }
        )*};
    }
    take!(
        user,
        exposed_ports,
        env,
        entrypoint,
        cmd,
        volumes,
        working_dir,
        labels,
        stop_signal,
        healthcheck,
        on_build,
        shell
    );
}

/// `POST /commit?container=…&repo=…&tag=…&comment=…&author=…&changes=…`,
/// with an optional container config as the body: the container's changes
/// as a new image.
pub async fn commit(ctx: &Ctx, req: Req, q: &Query) -> Res {
    let container = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("container is required"))?
        .to_string();
    let name = match q.get("repo").filter(|r| !r.is_empty()) {
        None => None,
        Some(repo) => {
            let full = match q.get("tag").filter(|t| !t.is_empty()) {
                Some(tag) => format!("{repo}:{tag}"),
                None => repo.to_string(),
            };
            Some(
                Reference::parse(&full)
                    .map_err(|e| ApiError::bad_request(format!("invalid reference {full}: {e}")))?,
            )
        }
    };
    // docker sends each change as its own value; docker-py may join them
    // with newlines.
    let changes: Vec<String> = q
        .all("changes")
        .iter()
        .flat_map(|c| c.lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let comment = q.get("comment").unwrap_or("").to_string();
    let author = q.get("author").unwrap_or("").to_string();
    // docker's `pause` defaults to true.
    let pause = q
        .get("pause")
        .is_none_or(|p| !matches!(p, "0" | "false" | "False"));
    let user: Option<ContainerConfig> = crate::route::body_json(req, 1 << 20).await?;
    let id = ctx
        .blocking(move |e| {
            let mut cfg = e.commit_config(&container)?;
            if let Some(user) = user {
                merge(cfg.config_mut(), user);
            }
            for ch in &changes {
                berth_build::dispatch::apply_change(&mut cfg, ch)
                    .map_err(|err| ApiError::bad_request(format!("changes {ch:?}: {err}")))?;
            }
            let img = e.commit(&container, name.as_ref(), &comment, &author, &[cfg], pause)?;
            Ok(img.id.to_string())
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({"Id": id})))
}

/// `GET /images/{name}/get` and `GET /images/get?names=…`: a docker-archive
/// of the images, as `docker save` writes it.
pub async fn save(ctx: &Ctx, names: Vec<String>) -> Res {
    if names.is_empty() {
        return Err(ApiError::bad_request("no images named"));
    }
    // Resolve before the 200 goes out, so a missing image is a 404.
    let sel = ctx
        .blocking(move |e| {
            e.store.save_selection(&names).map_err(|err| match err {
                berth_store::StoreError::ImageNotFound(_) => {
                    ApiError::not_found(format!("No such image: {}", names.join(", ")))
                }
                other => other.into(),
            })
        })
        .await?;
    produce(ctx, "application/x-tar", move |e, w| {
        // A lease, as for `berth save`: a prune waits for it.
        let _lease = e.store.write_lock().map_err(ApiError::from)?;
        e.store
            .save(&sel, ArchiveFormat::Docker, std::io::BufWriter::new(w))
            .map_err(ApiError::from)?;
        for (img, names) in &sel {
            e.image_event("save", &img.id.to_string(), names.first());
        }
        Ok(())
    })
}

/// `POST /images/load`: a docker- or OCI-archive in the body; the answer
/// names what was loaded, as docker's stream of JSON lines. (`quiet` only
/// silences progress in dockerd, and berth's load reports none: the docker
/// CLI asks for quiet whenever its output is not a terminal and still
/// prints the names.)
pub async fn load(ctx: &Ctx, req: Req) -> Res {
    let body = BodyReader::new(req);
    let loaded = ctx
        .blocking(move |e| {
            let loaded = e.store.load(body).map_err(|err| match err {
                // A broken archive is the client's mistake.
                berth_store::StoreError::Archive(_) | berth_store::StoreError::Invalid { .. } => {
                    ApiError::bad_request(err.to_string())
                }
                other => other.into(),
            })?;
            for l in &loaded {
                e.image_event("load", &l.id.to_string(), l.names.first());
            }
            Ok(loaded)
        })
        .await?;
    let mut out = String::new();
    for l in loaded {
        let lines: Vec<String> = if l.names.is_empty() {
            vec![format!("Loaded image ID: {}\n", l.id)]
        } else {
            l.names
                .iter()
                .map(|n| format!("Loaded image: {}\n", n.familiar()))
                .collect()
        };
        for line in lines {
            out.push_str(&json!({ "stream": line }).to_string());
            out.push('\n');
        }
    }
    Ok(axum::http::Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(out))
        .expect("response"))
}
