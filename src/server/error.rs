//! The one place where errors become HTTP status codes.
//!
//! Handlers return [`ApiError`] (the store's `StoreError` converts); every error reaches the
//! client as `{"error": "..."}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::ErrorBody;

#[derive(Debug)]
pub enum ApiError {
    /// The input is malformed or breaks a rule (400).
    BadRequest(String),
    /// No such job, worker or build (404).
    NotFound(String),
    /// The caller may not do this (403): a worker acting for another.
    Forbidden(String),
    /// The request is about a state that is gone: a stale attempt (409).
    Conflict(String),
    /// The request body is over the server's limit (413).
    TooLarge(String),
    /// The storage cannot be written now: disk full, read-only, gone (503).
    /// The message says which; clients back off and try again.
    Unavailable(String),
    /// A bug or a storage failure (500); logged, never detailed to clients.
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::NotFound(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> ApiError {
        ApiError::Conflict(msg.into())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        match super::store_health::storage_cause(&e) {
            Some(cause) => ApiError::Unavailable(cause.to_string()),
            None => ApiError::Internal(anyhow::Error::new(e).context("database")),
        }
    }
}

/// Each storage outcome as its HTTP status.
impl From<super::store::StoreError> for ApiError {
    fn from(e: super::store::StoreError) -> ApiError {
        use super::store::StoreError as S;
        match e {
            S::Invalid(m) => ApiError::BadRequest(m),
            S::NotFound(m) => ApiError::NotFound(m),
            S::Forbidden(m) => ApiError::Forbidden(m),
            S::Conflict(m) => ApiError::Conflict(m),
            S::Unavailable(m) => ApiError::Unavailable(m),
            S::Broken(e) => ApiError::Internal(e),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> ApiError {
        ApiError::Internal(anyhow::Error::new(e).context("stored JSON"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(e) => {
                tracing::error!("internal error: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error; see the server's log".to_string(),
                )
            }
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Forbidden(m)
            | ApiError::TooLarge(m)
            | ApiError::Unavailable(m) => f.write_str(m),
            ApiError::Internal(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ApiError {}
