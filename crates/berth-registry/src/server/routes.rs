//! Where a `/v2/` path leads (repository names may hold the route words),
//! query parameters, and the spec's `n`/`last` pagination with its `Link`.

use super::*;

/// Where a `/v2/` path leads.
#[derive(Debug, PartialEq)]
pub(super) enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

pub(super) fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Route::Tags(name(2)));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Route::UploadStart(name(2)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        return Some(if segs[n - 1].is_empty() {
            Route::UploadStart(name(3))
        } else {
            Route::Upload(name(3), segs[n - 1].into())
        });
    }
    if n >= 3 {
        let last = segs[n - 1].to_string();
        match segs[n - 2] {
            "manifests" => return Some(Route::Manifest(name(2), last)),
            "blobs" => return Some(Route::Blob(name(2), last)),
            "referrers" => return Some(Route::Referrers(name(2), last)),
            _ => {}
        }
    }
    None
}

pub(super) fn query(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(super) fn header_str(h: &HeaderMap, k: header::HeaderName) -> Option<&str> {
    h.get(k).and_then(|v| v.to_str().ok())
}

pub(super) fn paginate(
    q: &[(String, String)],
    all: Vec<String>,
    base: &str,
    body: impl Fn(&[String]) -> serde_json::Value,
) -> ApiResult {
    let last = param(q, "last");
    let n: Option<usize> = match param(q, "n") {
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("invalid number of results requested: {s:?}"),
            )
        })?),
        None => None,
    };
    let rest: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    let (page, more) = match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (&rest[..], false),
    };
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body(page).to_string(),
    )
        .into_response();
    if more && let (Some(n), Some(l)) = (n, page.last()) {
        let link = format!(
            "<{base}?n={n}&last={}>; rel=\"next\"",
            form_urlencoded::byte_serialize(l.as_bytes()).collect::<String>()
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn routes_by_the_path_tail() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("/v2/a/manifests/x/manifests/v1"),
            Some(Route::Manifest("a/manifests/x".into(), "v1".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/123"),
            Some(Route::Upload("a".into(), "123".into()))
        );
        assert_eq!(
            route("/v2/a/b/blobs/sha256:00"),
            Some(Route::Blob("a/b".into(), "sha256:00".into()))
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00"),
            Some(Route::Referrers("a".into(), "sha256:00".into()))
        );
        assert_eq!(route("/v2/a"), None);
        assert_eq!(route("/other"), None);
    }

    #[test]
    pub(super) fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
    }
}
