//! Routing: the optional `/v1.NN` prefix is checked against the versions
//! served and stripped, then the method and path pick a handler. Written by
//! hand because image names hold slashes (`/images/localhost:5000/a/b/json`),
//! which docker's own router matches with a regular expression.

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::query::Query;
use crate::{API_VERSION, ApiError, Ctx, MIN_API_VERSION};
use crate::{containers, images, networks, system, volumes};

/// A request as handlers get it.
pub type Req = Request<Incoming>;
/// What handlers return.
pub type Res = Result<Response<Body>, ApiError>;

/// `(major, minor)` of `1.47`.
fn version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The path without its version prefix, and the version asked for.
pub fn split_version(path: &str) -> (&str, Option<&str>) {
    if let Some(rest) = path.strip_prefix("/v") {
        let (v, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if version(v).is_some() {
            let tail_start = path.len() - tail.len() - 1;
            return (&path[tail_start.min(path.len())..], Some(v));
        }
    }
    (path, None)
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .expect("response")
}

/// 200 with a JSON body.
pub fn ok(v: serde_json::Value) -> Res {
    Ok(json(StatusCode::OK, &v))
}

/// 204.
pub fn no_content() -> Res {
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("response"))
}

/// The request body as JSON (empty is `null`), at most `limit` bytes.
pub async fn body_json<T: serde::de::DeserializeOwned>(
    req: Req,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body_bytes(req, limit).await?;
    let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &bytes
    };
    serde_json::from_slice(slice).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// The request body, at most `limit` bytes.
pub async fn body_bytes(req: Req, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

/// Answers one request.
pub async fn handle(ctx: Ctx, req: Req) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (rest, asked) = split_version(&path);
    if let Some(v) = asked {
        let (want, max, min) = (
            version(v).unwrap_or((0, 0)),
            version(API_VERSION).expect("ours"),
            version(MIN_API_VERSION).expect("ours"),
        );
        if want > max {
            return ApiError::bad_request(format!(
                "client version {v} is too new. Maximum supported API version is {API_VERSION}"
            ))
            .response();
        }
        if want < min {
            return ApiError::bad_request(format!(
                "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            ))
            .response();
        }
    }
    let rest = rest.to_string();
    let q = Query::parse(req.uri().query());
    let mut resp = match dispatch(&ctx, req, &rest, &q).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    let h = resp.headers_mut();
    for (k, v) in [
        ("api-version", API_VERSION),
        ("ostype", "linux"),
        ("server", "berth"),
    ] {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    resp
}

fn seg<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix).filter(|s| !s.is_empty())
}

async fn dispatch(ctx: &Ctx, req: Req, path: &str, q: &Query) -> Res {
    let m = req.method().clone();
    let not_found = || {
        Err(ApiError::not_found(format!(
            "page not found: {} {path}",
            m.as_str()
        )))
    };
    match (&m, path) {
        (&Method::GET | &Method::HEAD, "/_ping") => return system::ping(&m),
        (&Method::GET, "/version") => return system::version(),
        (&Method::GET, "/info") => return system::info(ctx).await,
        (&Method::POST, "/auth") => return crate::stats::auth(req).await,
        (&Method::GET, "/system/df") => return system::df(ctx).await,
        (&Method::GET, "/events") => return system::events(ctx, q).await,
        (&Method::POST, "/build") => return crate::build::build(ctx, req, q).await,
        (&Method::GET, "/containers/json") => return containers::list(ctx, q).await,
        (&Method::POST, "/containers/create") => return containers::create(ctx, req, q).await,
        (&Method::POST, "/containers/prune") => return containers::prune(ctx).await,
        (&Method::GET, "/images/json") => return images::list(ctx, q).await,
        (&Method::GET, "/images/search") => return images::search(ctx, q).await,
        (&Method::POST, "/images/create") => return images::create(ctx, req, q).await,
        (&Method::POST, "/images/prune") => return images::prune(ctx, q).await,
        (&Method::GET, "/images/get") => {
            let names = q.all("names").into_iter().map(str::to_string).collect();
            return crate::archives::save(ctx, names).await;
        }
        (&Method::POST, "/images/load") => return crate::archives::load(ctx, req).await,
        (&Method::POST, "/commit") => return crate::archives::commit(ctx, req, q).await,
        (&Method::GET, "/volumes") => return volumes::list(ctx, q).await,
        (&Method::POST, "/volumes/create") => return volumes::create(ctx, req).await,
        (&Method::POST, "/volumes/prune") => return volumes::prune(ctx).await,
        (&Method::GET, "/networks") => return networks::list(ctx, q).await,
        (&Method::POST, "/networks/create") => return networks::create(ctx, req).await,
        (&Method::POST, "/networks/prune") => return networks::prune(ctx).await,
        (&Method::POST, "/build/prune") => return crate::build::prune(ctx).await,
        _ => {}
    }
    if let Some(rest) = seg(path, "/containers/") {
        let (id, verb) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id.to_string();
        return match (&m, verb) {
            (&Method::GET, "json") => containers::inspect(ctx, id).await,
            (&Method::POST, "start") => containers::start(ctx, id).await,
            (&Method::POST, "stop") => containers::stop(ctx, id, q).await,
            (&Method::POST, "restart") => containers::restart(ctx, id, q).await,
            (&Method::POST, "kill") => containers::kill(ctx, id, q).await,
            (&Method::POST, "wait") => containers::wait(ctx, id, q).await,
            (&Method::POST, "pause") => containers::pause(ctx, id, true).await,
            (&Method::POST, "unpause") => containers::pause(ctx, id, false).await,
            (&Method::POST, "rename") => containers::rename(ctx, id, q).await,
            (&Method::POST, "update") => containers::update(ctx, req, id).await,
            (&Method::GET, "top") => containers::top(ctx, id, q).await,
            (&Method::GET, "stats") => crate::stats::stats(ctx, id, q).await,
            (&Method::GET, "logs") => crate::logs::logs(ctx, id, q).await,
            (&Method::POST, "attach") => crate::logs::attach(ctx, req, id, q).await,
            (&Method::POST, "resize") => containers::resize(ctx, id).await,
            (&Method::POST, "exec") => crate::exec::create(ctx, req, id).await,
            (&Method::GET, "archive") => containers::archive_get(ctx, id, q, false).await,
            (&Method::HEAD, "archive") => containers::archive_get(ctx, id, q, true).await,
            (&Method::PUT, "archive") => containers::archive_put(ctx, req, id, q).await,
            (&Method::GET, "export") => crate::archives::export(ctx, id).await,
            (&Method::GET, "changes") => crate::archives::changes(ctx, id).await,
            (&Method::DELETE, "") => containers::remove(ctx, id, q).await,
            _ => not_found(),
        };
    }
    if let Some(rest) = seg(path, "/images/") {
        for verb in ["json", "history", "tag", "push", "get"] {
            if let Some(name) = rest.strip_suffix(&format!("/{verb}")) {
                let name = name.to_string();
                return match (&m, verb) {
                    (&Method::GET, "json") => images::inspect(ctx, name).await,
                    (&Method::GET, "history") => images::history(ctx, name).await,
                    (&Method::POST, "tag") => images::tag(ctx, name, q).await,
                    (&Method::POST, "push") => images::push(ctx, req, name, q).await,
                    (&Method::GET, "get") => crate::archives::save(ctx, vec![name]).await,
                    _ => not_found(),
                };
            }
        }
        if m == Method::DELETE {
            return images::remove(ctx, rest.to_string(), q).await;
        }
        return not_found();
    }
    if let Some(rest) = seg(path, "/exec/") {
        let (id, verb) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id.to_string();
        return match (&m, verb) {
            (&Method::POST, "start") => crate::exec::start(ctx, req, id).await,
            (&Method::GET, "json") => crate::exec::inspect(ctx, id).await,
            (&Method::POST, "resize") => crate::exec::resize(ctx, id).await,
            _ => not_found(),
        };
    }
    if let Some(name) = seg(path, "/volumes/") {
        let name = name.to_string();
        return match m {
            Method::GET => volumes::inspect(ctx, name).await,
            Method::DELETE => volumes::remove(ctx, name, q).await,
            _ => not_found(),
        };
    }
    if let Some(rest) = seg(path, "/networks/") {
        let (id, verb) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id.to_string();
        return match (&m, verb) {
            (&Method::GET, "") => networks::inspect(ctx, id).await,
            (&Method::DELETE, "") => networks::remove(ctx, id).await,
            (&Method::POST, "connect") => networks::connect(ctx, req, id, true).await,
            (&Method::POST, "disconnect") => networks::connect(ctx, req, id, false).await,
            _ => not_found(),
        };
    }
    not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped() {
        assert_eq!(
            split_version("/v1.47/containers/json"),
            ("/containers/json", Some("1.47"))
        );
        assert_eq!(
            split_version("/containers/json"),
            ("/containers/json", None)
        );
        assert_eq!(split_version("/v1.24/_ping"), ("/_ping", Some("1.24")));
        assert_eq!(split_version("/volumes/v1.2"), ("/volumes/v1.2", None));
        assert_eq!(split_version("/vx/a"), ("/vx/a", None));
    }
}
