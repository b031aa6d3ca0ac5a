//! Manifests: get by tag or digest with content negotiation, put with
//! every blob checked and the size bounded.

use super::*;

pub(super) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .filter(|v| !v.is_empty())
        .collect();
    accept.is_empty()
        || accept.iter().any(|a| {
            *a == media_type || *a == "*/*" || *a == "application/*" || *a == "application/json"
        })
}

pub(super) fn get_manifest(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
    head: bool,
) -> ApiResult {
    let Some(m) = app.storage.manifest(name, reference) else {
        if !app.storage.repo_exists(name) {
            return Err(name_unknown(name));
        }
        return Err(manifest_unknown(name, reference));
    };
    if !accepts(headers, &m.media_type) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!(
                "{name}:{reference} is a {} but the request's Accept header does not include it",
                m.media_type
            ),
        ));
    }
    let len = m.bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&m.media_type).map_err(internal)?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&m.digest.to_string()).map_err(internal)?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", m.digest)).map_err(internal)?,
    );
    Ok(r)
}

pub(super) async fn read_limited(
    app: &App,
    req: Request,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut s = req.into_body().into_data_stream();
    let mut out = Vec::new();
    let stall = Duration::from_secs(app.config.body_timeout.max(1));
    while let Some(chunk) = next_chunk(&mut s, stall).await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNKNOWN",
                format!("reading the request: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("manifest larger than the limit of {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub(super) async fn put_manifest(
    app: &Arc<App>,
    req: Request,
    name: &str,
    reference: &str,
) -> ApiResult {
    let ct = header_str(req.headers(), header::CONTENT_TYPE).map(str::to_string);
    let tags: Vec<String> = query(&req)
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v)
        .collect();
    let bytes = read_limited(app, req, app.config.max_manifest_size).await?;
    let a = app.clone();
    let (n, r, t) = (name.to_string(), reference.to_string(), tags.clone());
    let res = tokio::task::spawn_blocking(move || {
        a.storage.put_manifest(&n, &r, ct.as_deref(), &bytes, &t)
    })
    .await
    .map_err(internal)?;
    match res {
        Ok((digest, subject)) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::CREATED;
            let h = r.headers_mut();
            h.insert(
                header::LOCATION,
                HeaderValue::from_str(&format!("/v2/{name}/manifests/{digest}"))
                    .map_err(internal)?,
            );
            h.insert(
                "docker-content-digest",
                HeaderValue::from_str(&digest.to_string()).map_err(internal)?,
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            if let Some(s) = subject {
                h.insert(
                    "oci-subject",
                    HeaderValue::from_str(&s.to_string()).map_err(internal)?,
                );
            }
            for t in &tags {
                h.append("oci-tag", HeaderValue::from_str(t).map_err(internal)?);
            }
            Ok(r)
        }
        Err(PutManifestError::Invalid(m)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            m,
        )),
        Err(PutManifestError::BlobUnknown(d)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("manifest references {d}, which is not in {name}: push it first"),
        )),
        Err(PutManifestError::DigestMismatch(d)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("the manifest's content does not match the digest {d} it was pushed as"),
        )),
        Err(PutManifestError::Io(e)) => Err(internal(e)),
    }
}

/// `/v2/<name>/manifests/<reference>`: get, head, put, delete.
pub(super) async fn manifest_route(
    app: &Arc<App>,
    req: Request,
    cx: &Call<'_>,
    name: &str,
    reference: &str,
) -> ApiResult {
    app.admit(cx, name, cx.action)?;
    if !reference.contains(':') && !valid_tag(reference) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("invalid tag {reference:?}"),
        ));
    }
    if reference.contains(':') && reference.parse::<Digest>().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {reference:?}"),
        ));
    }
    match cx.method {
        Method::GET | Method::HEAD => {
            get_manifest(app, cx.headers, name, reference, cx.method == Method::HEAD)
        }
        Method::PUT => put_manifest(app, req, name, reference).await,
        Method::DELETE => {
            if !app.config.delete_enabled {
                return Err(unsupported("deletes are disabled on this registry"));
            }
            match app.storage.delete_manifest(name, reference) {
                Ok(true) => Ok(StatusCode::ACCEPTED.into_response()),
                Ok(false) => Err(manifest_unknown(name, reference)),
                Err(e) => Err(internal(e)),
            }
        }
        _ => Err(method_not_allowed()),
    }
}
