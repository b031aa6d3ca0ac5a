//! `/images/…`: list, inspect (the document `berth image inspect` prints),
//! history, tag, remove, prune, and pull and push through berth's registry
//! client with docker's streamed JSON progress. Credentials come as
//! dockerd takes them, in the `X-Registry-Auth` header the client fills
//! from its own config; without it, anonymously.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_registry::client::progress::Progress;
use berth_registry::client::{Credentials, Options, Registry};
use berth_store::image::{Image, RemoveEvent};
use berth_types::{Digest, Platform, Reference};
use serde_json::{Value, json};

use crate::query::Query;
use crate::route::{Req, Res, ok};
use crate::{ApiError, Ctx};

/// The Unix time of an RFC 3339 string (0 when absent).
pub fn unix(t: Option<&str>) -> i64 {
    t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

fn summary(store: &berth_store::Store, i: &Image, containers: usize) -> Value {
    let size = berth_engine::docs::image_size(store, i);
    json!({
        "Id": i.id.to_string(),
        "ParentId": "",
        "RepoTags": i.names.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        "RepoDigests": i.repo_digests.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        "Created": unix(i.config.created.as_deref()),
        "Size": size,
        "SharedSize": -1,
        "VirtualSize": size,
        "Labels": i.config.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default(),
        "Containers": containers,
    })
}

/// `GET /images/json` (filters `dangling`, `reference`).
pub async fn list(ctx: &Ctx, q: &Query) -> Res {
    let filters: serde_json::Map<String, Value> = match q.get("filters") {
        None | Some("") => Default::default(),
        Some(f) => serde_json::from_str(f)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?,
    };
    let values = |k: &str| -> Vec<String> {
        match filters.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::Object(o)) => o.keys().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let (dangling, refs) = (values("dangling"), values("reference"));
    if let Some(k) = filters
        .keys()
        .find(|k| !matches!(k.as_str(), "dangling" | "reference"))
    {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let list = ctx
        .blocking(move |e| {
            let store = &e.store;
            let in_use = store.images_in_use().map_err(ApiError::from)?;
            let mut out = Vec::new();
            for i in store.images().map_err(ApiError::from)? {
                let is_dangling = i.names.is_empty();
                if let Some(d) = dangling.first()
                    && (d == "true" || d == "1") != is_dangling
                {
                    continue;
                }
                if !refs.is_empty()
                    && !i.names.iter().any(|n| {
                        refs.iter().any(|r| {
                            let f = n.familiar();
                            f == *r || f.split(':').next() == Some(r.as_str())
                        })
                    })
                {
                    continue;
                }
                let used = in_use.get(&i.id).map_or(0, Vec::len);
                out.push(summary(store, &i, used));
            }
            Ok(out)
        })
        .await?;
    ok(Value::Array(list))
}

fn find(e: &berth_engine::Engine, name: &str) -> Result<Image, ApiError> {
    e.store.resolve(name).map_err(|_| {
        let shown = Reference::parse(name)
            .map(|r| r.with_default_tag().familiar())
            .unwrap_or_else(|_| name.to_string());
        ApiError::not_found(format!("No such image: {shown}"))
    })
}

/// `GET /images/{name}/json`.
pub async fn inspect(ctx: &Ctx, name: String) -> Res {
    ok(ctx
        .blocking(move |e| {
            let i = find(e, &name)?;
            Ok(berth_engine::docs::image_inspect(&e.store, &i))
        })
        .await?)
}

/// `GET /images/{name}/history`: newest first, as dockerd gives it.
pub async fn history(ctx: &Ctx, name: String) -> Res {
    ok(ctx
        .blocking(move |e| {
            let i = find(e, &name)?;
            let chains = berth_types::chain_ids(&i.config.rootfs.diff_ids);
            let mut layer = 0;
            let mut rows = Vec::new();
            for h in &i.config.history {
                let size = if h.empty_layer {
                    0
                } else {
                    let s = chains
                        .get(layer)
                        .and_then(|c| e.store.snapshots.layer(c).ok().flatten())
                        .map_or(0, |m| m.size);
                    layer += 1;
                    s
                };
                rows.push(json!({
                    "Id": "<missing>",
                    "Created": unix(h.created.as_deref()),
                    "CreatedBy": h.created_by.clone().unwrap_or_default(),
                    "Tags": null,
                    "Size": size,
                    "Comment": h.comment.clone().unwrap_or_default(),
                }));
            }
            rows.reverse();
            if let Some(top) = rows.first_mut() {
                top["Id"] = json!(i.id.to_string());
                top["Tags"] = json!(i.names.iter().map(|n| n.familiar()).collect::<Vec<_>>());
            }
            Ok(Value::Array(rows))
        })
        .await?)
}

/// `POST /images/{name}/tag?repo=…&tag=…`: 201.
pub async fn tag(ctx: &Ctx, name: String, q: &Query) -> Res {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repository name must have at least one component"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    ctx.blocking(move |e| {
        let i = find(e, &name)?;
        let r = Reference::parse(&target)
            .map_err(|err| ApiError::bad_request(format!("invalid reference format: {err}")))?
            .with_default_tag();
        e.store.tag(&i, &r).map_err(ApiError::from)?;
        e.image_event("tag", &i.id.to_string(), Some(&r));
        Ok(())
    })
    .await?;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .body(Body::empty())
        .expect("response"))
}

/// `DELETE /images/{name}?force=…`: `[{"Untagged"}, {"Deleted"}]`.
pub async fn remove(ctx: &Ctx, name: String, q: &Query) -> Res {
    let force = q.bool("force");
    let events = ctx
        .blocking(move |e| {
            find(e, &name)?;
            Ok(e.remove_image(&name, force)?)
        })
        .await?;
    ok(Value::Array(
        events
            .iter()
            .map(|ev| match ev {
                RemoveEvent::Untagged(n) => json!({"Untagged": n}),
                RemoveEvent::Deleted(d) => json!({"Deleted": d.to_string()}),
            })
            .collect(),
    ))
}

/// `POST /images/prune` (`filters={"dangling":["false"]}` for all unused).
pub async fn prune(ctx: &Ctx, q: &Query) -> Res {
    let all = q
        .get("filters")
        .is_some_and(|f| f.contains("\"false\"") || f.contains("\"0\""));
    let (events, freed) = ctx
        .blocking(move |e| e.store.prune_images(all).map_err(ApiError::from))
        .await?;
    let deleted: Vec<Value> = events
        .iter()
        .map(|ev| match ev {
            RemoveEvent::Untagged(n) => json!({"Untagged": n}),
            RemoveEvent::Deleted(d) => json!({"Deleted": d.to_string()}),
        })
        .collect();
    ok(json!({"ImagesDeleted": deleted, "SpaceReclaimed": freed}))
}

/// The credentials of an `X-Registry-Auth` header (base64url JSON).
fn credentials(req: &Req) -> Option<Credentials> {
    use base64::Engine as _;
    let h = req.headers().get("x-registry-auth")?.to_str().ok()?;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h.trim()))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let user = v["username"].as_str().unwrap_or("");
    let secret = v["password"]
        .as_str()
        .filter(|p| !p.is_empty())
        .or_else(|| v["identitytoken"].as_str())
        .unwrap_or("");
    (!user.is_empty() || !secret.is_empty()).then(|| Credentials {
        username: user.to_string(),
        secret: secret.to_string(),
    })
}

/// Progress as dockerd streams it: one JSON object per line.
struct JsonProgress {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    sizes: Mutex<std::collections::HashMap<Digest, (u64, u64)>>,
}

impl JsonProgress {
    fn send(&self, v: Value) {
        let mut line = v.to_string();
        line.push_str("\r\n");
        let _ = self.tx.blocking_send(Ok(line.into()));
    }
}

fn short(d: &Digest) -> String {
    d.short().to_string()
}

impl Progress for JsonProgress {
    fn message(&self, line: &str) {
        match line.split_once(": ") {
            Some((id, rest)) if !id.contains(' ') => self.send(json!({"status": rest, "id": id})),
            _ => self.send(json!({"status": line})),
        }
    }
    fn start(&self, id: &Digest, total: u64, verb: &str) {
        self.sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), (0, total));
        self.send(json!({"status": verb, "progressDetail": {"current": 0, "total": total}, "id": short(id)}));
    }
    fn advance(&self, id: &Digest, n: u64) {
        let (cur, total) = {
            let mut s = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
            let e = s.entry(id.clone()).or_insert((0, 0));
            let before = e.0;
            e.0 += n;
            // A line per MiB at most.
            if before >> 20 == e.0 >> 20 {
                return;
            }
            *e
        };
        self.send(json!({"status": "Downloading", "progressDetail": {"current": cur, "total": total}, "id": short(id)}));
    }
    fn done(&self, id: &Digest, status: &str) {
        self.send(json!({"status": status, "progressDetail": {}, "id": short(id)}));
    }
}

fn json_stream(
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::stream::channel_body(rx))
        .expect("response")
}

fn connect(domain: &str, creds: Option<Credentials>) -> Result<Registry, String> {
    Registry::connect(domain, creds, Options::default()).map_err(|e| e.to_string())
}

/// `POST /images/create?fromImage=…&tag=…`: a pull, its progress streamed;
/// a failure after the stream began is an `errorDetail` line, as dockerd
/// reports it.
pub async fn create(ctx: &Ctx, req: Req, q: &Query) -> Res {
    let Some(from) = q.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "importing from a source (fromSrc) is not supported; pull with fromImage",
        ));
    };
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let r = Reference::parse(&name)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).map_err(ApiError::bad_request)?,
        None => Platform::host(),
    };
    let creds = credentials(&req);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let e = ctx.engine.clone();
    tokio::task::spawn_blocking(move || {
        let p = JsonProgress {
            tx: tx.clone(),
            sizes: Default::default(),
        };
        let r2 = r.clone();
        let res = connect(r.domain(), creds).and_then(|reg| {
            berth_registry::client::pull::pull(
                &e.store,
                &reg,
                &r2,
                &berth_registry::client::pull::PullOptions { platform },
                &p,
            )
            .map_err(|e| e.to_string())
        });
        match res {
            Ok(pulled) => {
                e.image_event("pull", &pulled.digest.to_string(), Some(&r));
                let shown = if r.digest().is_some() {
                    r.familiar()
                } else {
                    r.clone().with_default_tag().familiar()
                };
                p.send(json!({"status": format!("Digest: {}", pulled.digest)}));
                p.send(json!({"status": if pulled.downloaded {
                    format!("Status: Downloaded newer image for {shown}")
                } else {
                    format!("Status: Image is up to date for {shown}")
                }}));
            }
            Err(msg) => p.send(json!({"errorDetail": {"message": msg}, "error": msg})),
        }
    });
    Ok(json_stream(rx))
}

/// `POST /images/{name}/push?tag=…`.
pub async fn push(ctx: &Ctx, req: Req, name: String, q: &Query) -> Res {
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.clone(),
    };
    let r = Reference::parse(&target)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?
        .with_default_tag();
    let image = ctx
        .blocking({
            let t = r.to_string();
            move |e| {
                e.store.resolve(&t).map_err(|_| {
                    ApiError::not_found(format!(
                        "No such image: {}",
                        Reference::parse(&t)
                            .map(|x| x.familiar())
                            .unwrap_or(t.clone())
                    ))
                })
            }
        })
        .await?;
    let creds = credentials(&req);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let e = ctx.engine.clone();
    tokio::task::spawn_blocking(move || {
        let p = JsonProgress {
            tx: tx.clone(),
            sizes: Default::default(),
        };
        // A lease: a prune beside the push waits.
        let _lease = e.store.write_lock();
        let res = connect(r.domain(), creds).and_then(|reg| {
            berth_registry::client::push::push(&e.store, &reg, &image, &r, &p)
                .map_err(|e| e.to_string())
        });
        match res {
            Ok(pushed) => {
                e.image_event("push", &pushed.digest.to_string(), Some(&r));
                p.send(json!({"status": format!("{}: digest: {} size: {}", pushed.tag, pushed.digest, pushed.size)}));
                p.send(json!({"progressDetail": {}, "aux": {"Tag": pushed.tag, "Digest": pushed.digest.to_string(), "Size": pushed.size}}));
            }
            Err(msg) => p.send(json!({"errorDetail": {"message": msg}, "error": msg})),
        }
    });
    Ok(json_stream(rx))
}

/// `GET /images/search?term=…&limit=…`: the registry named before the term
/// (Docker Hub's index otherwise) searched through its `/v1/search`, in
/// dockerd's result shape.
pub async fn search(ctx: &Ctx, q: &Query) -> Res {
    let term = q.get("term").unwrap_or("").to_string();
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let (domain, term) = match term.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            (host.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), term),
    };
    let found = ctx
        .blocking(move |_| {
            let reg = connect(&domain, None).map_err(ApiError::internal)?;
            reg.search(&term, limit)
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
    ok(serde_json::to_value(found).unwrap_or_default())
}
