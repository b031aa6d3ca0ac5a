//! The registry's errors in the distribution spec's shape (`{"errors":
//! [{code, message, detail}]}` with its status), and the common ones.

use super::*;

/// A registry error in the spec's shape.
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub(super) fn with(mut self, h: header::HeaderName, v: impl Into<String>) -> Self {
        self.headers.push((h, v.into()));
        self
    }

    /// Adds `scope` to a challenge's `scope="…"` (space-separated, as the
    /// token spec has several scopes).
    pub(super) fn add_scope(&mut self, scope: &str) {
        if let Some((_, v)) = self
            .headers
            .iter_mut()
            .find(|(k, _)| k == header::WWW_AUTHENTICATE)
        {
            match v.find("scope=\"") {
                Some(i) => {
                    let end = i + 7 + v[i + 7..].find('"').unwrap_or(0);
                    v.insert_str(end, &format!(" {scope}"));
                }
                None => v.push_str(&format!(",scope=\"{scope}\"")),
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]})
            .to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
}

/// The accounts cannot be read: refused (503), the cause logged, not told.
pub(super) fn unavailable(e: Unreadable) -> ApiError {
    eprintln!("berth registry: refusing requests: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the registry cannot check credentials now; try again later",
    )
}

/// A client that must wait before trying credentials again (429).
pub(super) fn too_many(wait: Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        format!("too many failed logins; try again in {secs}s"),
    )
    .with(header::RETRY_AFTER, secs.to_string())
}

pub(super) fn name_unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        format!("repository name not known to registry: {name}"),
    )
}

pub(super) fn manifest_unknown(name: &str, reference: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
        format!("manifest unknown: {name}:{reference}"),
    )
}

pub(super) fn blob_unknown(d: &Digest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
        format!("blob unknown to registry: {d}"),
    )
}

pub(super) fn unsupported(msg: &str) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
}

pub(super) fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "the operation is unsupported",
    )
}

pub(super) fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    let d: Digest = s.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {s:?}"),
        )
    })?;
    Ok(d)
}
