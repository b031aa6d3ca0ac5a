//! `/networks/…`: list, inspect (the document `berth network inspect`
//! prints), create, remove, prune, connect and disconnect.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::route::{Req, Res, body_json, json as json_resp, no_content, ok};
use crate::{ApiError, Ctx};

/// `GET /networks`.
pub async fn list(ctx: &Ctx, q: &crate::query::Query) -> Res {
    let f = berth_engine::objfilter::ObjFilters::from_json(
        q.get("filters").unwrap_or(""),
        berth_engine::objfilter::NETWORK_KEYS,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let v = ctx
        .blocking(move |e| {
            let mut out = Vec::new();
            for n in e.networks_filtered(&f)? {
                out.push(berth_engine::docs::network_inspect(e, &n)?);
            }
            Ok(out)
        })
        .await?;
    ok(Value::Array(v))
}

/// `GET /networks/{id}`.
pub async fn inspect(ctx: &Ctx, id: String) -> Res {
    ok(ctx
        .blocking(move |e| {
            let n = e
                .network_find(&id)
                .map_err(|_| ApiError::not_found(format!("network {id} not found")))?;
            Ok(berth_engine::docs::network_inspect(e, &n)?)
        })
        .await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    labels: Option<BTreeMap<String, String>>,
    check_duplicate: Option<bool>,
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`.
pub async fn create(ctx: &Ctx, req: Req) -> Res {
    let b: Option<CreateBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("network name is required"))?;
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "bridge")
    {
        return Err(ApiError::bad_request(format!(
            "plugin \"{d}\" not found: berth networks use the bridge driver"
        )));
    }
    let cfg = b.ipam.and_then(|i| i.config).unwrap_or_default();
    let first = cfg.into_iter().next().unwrap_or_default();
    let (internal, labels) = (b.internal.unwrap_or(false), b.labels.unwrap_or_default());
    let _ = b.check_duplicate;
    let n = ctx
        .blocking(move |e| {
            if e.network_find(&name).is_ok() {
                return Err(ApiError::conflict(format!(
                    "network with name {name} already exists"
                )));
            }
            Ok(e.network_create(
                &name,
                first.subnet.as_deref(),
                first.gateway.as_deref(),
                internal,
                labels,
            )?)
        })
        .await?;
    Ok(json_resp(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn remove(ctx: &Ctx, id: String) -> Res {
    ctx.blocking(move |e| {
        e.network_find(&id)
            .map_err(|_| ApiError::not_found(format!("network {id} not found")))?;
        e.network_remove(&id)?;
        Ok(())
    })
    .await?;
    no_content()
}

/// `POST /networks/prune`.
pub async fn prune(ctx: &Ctx) -> Res {
    let gone = ctx.blocking(|e| Ok(e.network_prune()?)).await?;
    ok(json!({"NetworksDeleted": gone}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: Option<String>,
    force: Option<bool>,
    endpoint_config: Option<Endpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Endpoint {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam: Option<Value>,
}

/// `POST /networks/{id}/connect` and `/disconnect`.
pub async fn connect(ctx: &Ctx, req: Req, id: String, on: bool) -> Res {
    let b: Option<ConnectBody> = body_json(req, 1 << 20).await?;
    let b = b.unwrap_or_default();
    let c = b
        .container
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("container is required"))?;
    let ep = b.endpoint_config.unwrap_or_default();
    let ip = ep
        .ipam
        .as_ref()
        .and_then(|i| i["IPv4Address"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let aliases = ep.aliases.unwrap_or_default();
    let _ = b.force;
    ctx.blocking(move |e| {
        if on {
            e.network_connect(&c, &id, ip.as_deref(), &aliases)?;
        } else {
            e.network_disconnect(&c, &id)?;
        }
        Ok(())
    })
    .await?;
    Ok(axum::http::Response::builder()
        .status(StatusCode::OK)
        .body(axum::body::Body::empty())
        .expect("response"))
}
