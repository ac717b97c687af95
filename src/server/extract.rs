//! Request extractors whose rejections are testbot errors: a malformed
//! body, path or query gets `{"error": "..."}` naming what was wrong, like
//! every other error, instead of axum's plain-text rejection.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body. An empty body reads as `{}` so that requests whose fields
/// are all optional need no body at all.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status().as_u16() {
                413 => ApiError::TooLarge(format!(
                    "the request body is over the server's limit of {} bytes",
                    super::api::BODY_MAX
                )),
                _ => ApiError::bad(format!("cannot read the request body: {}", e.body_text())),
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // The error names the field that was wrong (`jobs[3].priority`).
        let mut de = serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(&mut de)
            .map(Body)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." || path.is_empty() {
                    ApiError::bad(format!("invalid JSON body: {}", e.inner()))
                } else {
                    ApiError::bad(format!("invalid JSON body: {path}: {}", e.inner()))
                }
            })
    }
}

/// A raw body (log uploads), with the size limit's rejection as JSON.
pub struct Raw(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Raw)
            .map_err(|e| match e.status().as_u16() {
                413 => ApiError::TooLarge(format!(
                    "the request body is over the server's limit of {} bytes",
                    super::api::BODY_MAX
                )),
                _ => ApiError::bad(format!("cannot read the request body: {}", e.body_text())),
            })
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text())))
    }
}
