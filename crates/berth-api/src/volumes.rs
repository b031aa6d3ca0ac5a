//! `/volumes/…`: list, create, inspect, remove, prune (local volumes, as
//! `berth volume` manages them).

use axum::http::StatusCode;
use berth_engine::volume::Volume;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::query::Query;
use crate::route::{Req, Res, body_json, json as json_resp, no_content, ok};
use crate::{ApiError, Ctx};

/// docker's `Volume` document.
pub fn json_of(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": v.scope,
        "Options": {},
    })
}

/// `GET /volumes`.
pub async fn list(ctx: &Ctx, q: &Query) -> Res {
    let f = berth_engine::objfilter::ObjFilters::from_json(
        q.get("filters").unwrap_or(""),
        berth_engine::objfilter::VOLUME_KEYS,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let vs = ctx.blocking(move |e| Ok(e.volumes_filtered(&f)?)).await?;
    ok(json!({"Volumes": vs.iter().map(json_of).collect::<Vec<_>>(), "Warnings": []}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /volumes/create`: 201.
pub async fn create(ctx: &Ctx, req: Req) -> Res {
    let b: Option<CreateBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::not_found(format!(
            "error looking up volume plugin {d}: plugin \"{d}\" not found"
        )));
    }
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(berth_engine::container::new_id);
    let labels = b.labels.unwrap_or_default();
    let v = ctx
        .blocking(move |e| Ok(e.volume_create_with(&name, &labels)?))
        .await?;
    Ok(json_resp(StatusCode::CREATED, &json_of(&v)))
}

/// `GET /volumes/{name}`.
pub async fn inspect(ctx: &Ctx, name: String) -> Res {
    let v = ctx
        .blocking(move |e| {
            e.volume_inspect(&name)
                .map_err(|_| ApiError::not_found(format!("get {name}: no such volume")))
        })
        .await?;
    ok(json_of(&v))
}

/// `DELETE /volumes/{name}?force=…`.
pub async fn remove(ctx: &Ctx, name: String, q: &Query) -> Res {
    let force = q.bool("force");
    ctx.blocking(move |e| {
        e.volume_inspect(&name)
            .map_err(|_| ApiError::not_found(format!("get {name}: no such volume")))?;
        e.volume_remove(&name, force)?;
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /volumes/prune` (anonymous volumes, as docker 23+).
pub async fn prune(ctx: &Ctx) -> Res {
    let gone = ctx.blocking(|e| Ok(e.volume_prune(false)?)).await?;
    ok(json!({"VolumesDeleted": gone, "SpaceReclaimed": 0}))
}
