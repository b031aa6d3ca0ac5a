//! Uploads: start (monolithic, chunked, cross-repository mount), append
//! with Content-Range checks and stall limits, commit verified against the
//! digest.

use super::*;

pub(super) fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("range"),
    );
    h.insert(
        "docker-upload-uuid",
        HeaderValue::from_str(id).expect("uuid"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

pub(super) fn blob_created(name: &str, d: &Digest) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/{name}/blobs/{d}")) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&d.to_string()).expect("digest"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        format!("no upload {id}"),
    )
}

/// Appends the request body to upload `id`, hashing as it goes.
pub(super) async fn append(app: &Arc<App>, req: Request, id: &str) -> Result<u64, ApiError> {
    let size = app
        .storage
        .upload_size(id)
        .map_err(internal)?
        .ok_or_else(|| upload_unknown(id))?;
    let mut state = app.uploads.lock().expect("uploads").remove(id);
    if state.as_ref().is_some_and(|s| s.hasher.len() != size) {
        state = None; // out of step (another process, a failed write): hash the data at the end
    }
    if state.is_none() && size == 0 {
        state = Some(UploadState {
            hasher: Hasher::new(),
        });
    }
    // One blocking task writes and hashes the whole body, fed through a
    // bounded channel: no per-chunk hop to the blocking pool, and hashing
    // stays off the async workers.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    let (a, i) = (app.clone(), id.to_string());
    let writer = tokio::task::spawn_blocking(move || {
        let mut hasher = state.map(|s| s.hasher);
        a.storage
            .upload_append(&i, &mut rx, &mut hasher)
            .map(|n| (n, hasher.map(|hasher| UploadState { hasher })))
    });
    let mut s = req.into_body().into_data_stream();
    let mut failure = None;
    let stall = Duration::from_secs(app.config.body_timeout.max(1));
    while let Some(chunk) = next_chunk(&mut s, stall).await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    format!("reading the request: {e}"),
                ));
                break;
            }
        }
    }
    drop(tx);
    let (written, state) = match writer.await.map_err(internal)? {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(upload_unknown(id)),
        Err(e) => return Err(internal(e)),
    };
    if failure.is_none()
        && let Some(st) = state
    {
        app.uploads
            .lock()
            .expect("uploads")
            .insert(id.to_string(), st);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Checks a `Content-Range: <start>-<end>` against the upload's current size.
pub(super) fn check_content_range(
    req: &Request,
    app: &App,
    name: &str,
    id: &str,
) -> Result<(), ApiError> {
    let Some(cr) = header_str(req.headers(), header::CONTENT_RANGE) else {
        return Ok(());
    };
    let size = app.storage.upload_size(id).ok().flatten().unwrap_or(0);
    let spec = cr
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches('=')
        .trim();
    let start = spec
        .split(['-', '/'])
        .next()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if start != Some(size) {
        let mut e = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("chunk {cr:?} does not continue the upload at byte {size}"),
        )
        .with(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .with(header::RANGE, format!("0-{}", size.saturating_sub(1)));
        e.headers.push((
            header::HeaderName::from_static("docker-upload-uuid"),
            id.to_string(),
        ));
        return Err(e);
    }
    Ok(())
}

pub(super) async fn commit(app: &Arc<App>, name: &str, id: &str, d: &Digest) -> ApiResult {
    let hashed = app
        .uploads
        .lock()
        .expect("uploads")
        .remove(id)
        .map(|s| s.hasher.finish());
    let a = app.clone();
    let (n, i, dd) = (name.to_string(), id.to_string(), d.clone());
    let res = tokio::task::spawn_blocking(move || {
        let r = a.storage.commit_upload(&n, &i, &dd, hashed.as_ref());
        a.storage.end_upload(&i);
        r
    })
    .await
    .map_err(internal)?;
    match res {
        Ok(()) => Ok(blob_created(name, d)),
        Err(storage::CommitError::Mismatch { expected, actual }) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("uploaded content has digest {actual}, not {expected}"),
        )),
        Err(storage::CommitError::Io(e)) => Err(internal(e)),
    }
}

pub(super) async fn start_upload(
    app: &Arc<App>,
    req: Request,
    caller: &Caller,
    name: &str,
) -> ApiResult {
    let q = query(&req);
    if let Some(m) = param(&q, "mount") {
        let d = parse_digest(m)?;
        let from = param(&q, "from");
        let mountable = match from {
            Some(f) => {
                valid_name(f)
                    && app.allowed(&caller.who, f).contains(&Action::Pull)
                    && app.storage.blob(f, &d).is_some()
            }
            // Without `from`, only an open registry may reveal blobs of other repositories.
            None => app.config.open && app.storage.blob_anywhere(&d),
        };
        if mountable {
            app.storage.link_blob(name, &d).map_err(internal)?;
            return Ok(blob_created(name, &d));
        }
    }
    let id = app.storage.new_upload(name).map_err(internal)?;
    if let Some(ds) = param(&q, "digest") {
        let d = match parse_digest(ds) {
            Ok(d) => d,
            Err(e) => {
                app.storage.end_upload(&id);
                return Err(e);
            }
        };
        if let Err(e) = append(app, req, &id).await {
            app.uploads.lock().expect("uploads").remove(&id);
            app.storage.end_upload(&id);
            return Err(e);
        }
        return commit(app, name, &id, &d).await;
    }
    Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
}

pub(super) async fn patch_upload(app: &Arc<App>, req: Request, name: &str, id: &str) -> ApiResult {
    check_content_range(&req, app, name, id)?;
    let size = append(app, req, id).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, name, id, size))
}

pub(super) async fn finish_upload(app: &Arc<App>, req: Request, name: &str, id: &str) -> ApiResult {
    let q = query(&req);
    let Some(ds) = param(&q, "digest") else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the digest parameter is required to finish an upload",
        ));
    };
    let d = parse_digest(ds)?;
    check_content_range(&req, app, name, id)?;
    append(app, req, id).await?;
    commit(app, name, id, &d).await
}

/// `POST /v2/<name>/blobs/uploads/`: a new upload, a monolithic one, or a
/// cross-repository mount.
pub(super) async fn upload_start_route(
    app: &Arc<App>,
    req: Request,
    cx: &Call<'_>,
    name: &str,
) -> ApiResult {
    if cx.method != Method::POST {
        return Err(method_not_allowed());
    }
    if let Err(mut e) = app.admit(cx, name, Action::Push) {
        // A mount from another repository needs pull there too: ask for
        // both at once, as distribution does, so the client's next token
        // can mount.
        let q = query(&req);
        if param(&q, "mount").is_some()
            && let Some(from) = param(&q, "from").filter(|f| valid_name(f))
        {
            e.add_scope(&format!("repository:{from}:pull"));
        }
        return Err(e);
    }
    start_upload(app, req, cx.caller, name).await
}

/// `/v2/<name>/blobs/uploads/<id>`: status, a chunk, the end, a cancel.
pub(super) async fn upload_route(
    app: &Arc<App>,
    req: Request,
    cx: &Call<'_>,
    name: &str,
    id: &str,
) -> ApiResult {
    app.admit(cx, name, Action::Push)?;
    if !valid_upload_id(id) || app.storage.upload_repo(id).as_deref() != Some(name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            format!("no upload {id} in {name}"),
        ));
    }
    match cx.method {
        Method::GET => {
            let size = app.storage.upload_size(id).ok().flatten().unwrap_or(0);
            Ok(upload_accepted(StatusCode::NO_CONTENT, name, id, size))
        }
        Method::PATCH => patch_upload(app, req, name, id).await,
        Method::PUT => finish_upload(app, req, name, id).await,
        Method::DELETE => {
            app.uploads.lock().expect("uploads").remove(id);
            app.storage.end_upload(id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(method_not_allowed()),
    }
}
