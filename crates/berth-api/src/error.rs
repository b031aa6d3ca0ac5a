//! Errors as dockerd gives them: a status code and `{"message": …}`, with
//! docker's words (they come from the engine, which uses them for the CLI
//! too): 400 bad parameter, 404 no such container or image, 409 conflict,
//! 304 already started or stopped, 500 otherwise.

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use berth_engine::EngineError;
use berth_store::StoreError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// docker's message.
    pub message: String,
}

impl ApiError {
    /// With a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }

    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }

    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }

    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }

    /// 304 (no body).
    pub fn not_modified() -> Self {
        Self::new(StatusCode::NOT_MODIFIED, "")
    }

    /// The response.
    pub fn response(&self) -> Response<Body> {
        if self.status == StatusCode::NOT_MODIFIED {
            return Response::builder()
                .status(self.status)
                .body(Body::empty())
                .expect("response");
        }
        Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "message": self.message }).to_string(),
            ))
            .expect("response")
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let m = e.to_string();
        match e {
            EngineError::NotFound(_)
            | EngineError::PathNotFound(_)
            | EngineError::VolumeNotFound(_) => Self::not_found(m),
            EngineError::NameInUse { .. } | EngineError::Conflict(_) => Self::conflict(m),
            EngineError::Invalid(_) => Self::bad_request(m),
            EngineError::Store(s) => s.into(),
            EngineError::Runtime(berth_runtime::RuntimeError::ExecNotFound(_))
            | EngineError::Runtime(berth_runtime::RuntimeError::ExecPermission(_)) => {
                // dockerd: 400 for a command that cannot be run.
                Self::bad_request(m)
            }
            _ => Self::internal(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let m = e.to_string();
        match e {
            StoreError::ImageNotFound(_) => Self::not_found(m),
            StoreError::Reference(_) | StoreError::Ambiguous(_) => Self::bad_request(m),
            StoreError::Conflict(_) => Self::conflict(m),
            _ => Self::internal(m),
        }
    }
}
