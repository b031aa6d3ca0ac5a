//! Blobs: get and head with ranges (the bytes streamed by the storage
//! backend), delete, referrers.

use super::*;

pub(super) fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size.checked_sub(1)?)
    } else {
        let s: u64 = a.parse().ok()?;
        let e = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (s, e)
    };
    (start <= end && end < size).then_some((start, end))
}

pub(super) async fn get_blob(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    d: &Digest,
    head: bool,
) -> ApiResult {
    let Some(size) = app.storage.blob(name, d) else {
        return Err(blob_unknown(d));
    };
    if head {
        // A client checking before it pushes keeps the blob young for GC.
        let _ = app.storage.link_blob(name, d);
    } else if let Some(url) = app.storage.blob_url(d) {
        // Sent to the object store (a presigned URL; ranges go with the
        // client's request), as distribution's s3 driver does.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let h = r.headers_mut();
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(internal)?,
        );
        h.insert(
            "docker-content-digest",
            HeaderValue::from_str(&d.to_string()).map_err(internal)?,
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        return Ok(r);
    }
    let range = match header_str(headers, header::RANGE) {
        Some(r) => match parse_range(r, size) {
            Some(x) => Some(x),
            None => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UNKNOWN",
                    format!("invalid range {r:?} for {size} bytes"),
                )
                .with(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
        },
        None => None,
    };
    let (start, len) = range.map_or((0, size), |(s, e)| (s, e - s + 1));
    let body = if head {
        Body::empty()
    } else {
        app.storage.blob_body(d, start, len).map_err(internal)?
    };
    let mut r = Response::new(body);
    if range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
                .map_err(internal)?,
        );
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&d.to_string()).map_err(internal)?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{d}\"")).map_err(internal)?,
    );
    Ok(r)
}

/// `/v2/<name>/blobs/<digest>`: get, head, delete.
pub(super) async fn blob_route(
    app: &Arc<App>,
    cx: &Call<'_>,
    name: &str,
    digest: &str,
) -> ApiResult {
    app.admit(cx, name, cx.action)?;
    let d = parse_digest(digest)?;
    match cx.method {
        Method::GET | Method::HEAD => {
            get_blob(app, cx.headers, name, &d, cx.method == Method::HEAD).await
        }
        Method::DELETE => {
            if !app.config.delete_enabled {
                return Err(unsupported("deletes are disabled on this registry"));
            }
            match app.storage.unlink_blob(name, &d) {
                Ok(true) => Ok(StatusCode::ACCEPTED.into_response()),
                Ok(false) => Err(blob_unknown(&d)),
                Err(e) => Err(internal(e)),
            }
        }
        _ => Err(method_not_allowed()),
    }
}

/// `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose
/// subject is the digest (`artifactType` filters).
pub(super) fn referrers(
    app: &Arc<App>,
    req: &Request,
    cx: &Call<'_>,
    name: &str,
    digest: &str,
) -> ApiResult {
    app.admit(cx, name, Action::Pull)?;
    let d = parse_digest(digest)?;
    let q = query(req);
    let filter = param(&q, "artifactType");
    let mut list = app.storage.referrers(name, &d);
    if let Some(f) = filter {
        list.retain(|x| x.artifact_type.as_deref() == Some(f));
    }
    let mut ix = Index::new();
    ix.media_type = Some(berth_types::image::media_types::OCI_INDEX.into());
    ix.manifests = list;
    let mut r = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            berth_types::image::media_types::OCI_INDEX,
        )],
        serde_json::to_vec(&ix).expect("index"),
    )
        .into_response();
    if filter.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}
