//! Request extractors whose rejections are testbot errors: a malformed
//! body, path or query gets `{"error": "..."}` naming what was wrong, like
//! every other error, instead of axum's plain-text rejection.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON object body. An empty body reads as `{}` so that requests whose
/// fields are all optional need no body at all; anything but an object is
/// refused (serde would read a struct from an array, by position).
pub struct Body<T>(pub T);

/// A JSON body that may also be a list (`POST /api/v1/jobs`).
pub struct AnyBody(pub serde_json::Value);

async fn read_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| match e.status().as_u16() {
            413 => ApiError::TooLarge(format!(
                "the request body is over the server's limit ({} MiB; {} MiB for results)",
                super::api::BODY_MAX >> 20,
                super::api::RESULT_BODY_MAX >> 20
            )),
            _ => ApiError::bad(format!("cannot read the request body: {}", e.body_text())),
        })
}

fn invalid(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        ApiError::bad(format!("invalid JSON body: {}", e.inner()))
    } else {
        ApiError::bad(format!("invalid JSON body: {path}: {}", e.inner()))
    }
}

/// Whole numbers written with a fraction (`2.0`, `1e3`) are numbers like
/// any other in JSON: turns them into integers where they are exact, so a
/// field that takes an integer takes them. Returns whether any changed.
pub fn whole_numbers(v: &mut serde_json::Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_991.0;
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                *v = serde_json::Value::from(f as i64);
                true
            }
            _ => false,
        },
        serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, x| whole_numbers(x) | c),
        serde_json::Value::Object(o) => o.values_mut().fold(false, |c, x| whole_numbers(x) | c),
        _ => false,
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_bytes(req, state).await?;
        let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Parsed first so that malformed JSON is named as such.
            serde_json::from_slice::<serde_json::Value>(text)
                .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))?;
            return Err(ApiError::bad("invalid JSON body: expected an object"));
        }
        // The error names the field that was wrong (`jobs[3].priority`).
        let mut de = serde_json::Deserializer::from_slice(text);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(t) => Ok(Body(t)),
            Err(first) => {
                // Integers written as `2.0`: read again with them as such.
                let mut v: serde_json::Value =
                    serde_json::from_slice(text).map_err(|_| invalid(first_clone(&first)))?;
                if !whole_numbers(&mut v) {
                    return Err(invalid(first));
                }
                serde_path_to_error::deserialize(v)
                    .map(Body)
                    .map_err(invalid)
            }
        }
    }
}

/// The first error again (path_to_error's errors cannot be cloned).
fn first_clone(
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> serde_path_to_error::Error<serde_json::Error> {
    let inner = <serde_json::Error as serde::de::Error>::custom(e.inner().to_string());
    serde_path_to_error::Error::new(e.path().clone(), inner)
}

impl<S: Send + Sync> FromRequest<S> for AnyBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_bytes(req, state).await?;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))?;
        whole_numbers(&mut v);
        Ok(AnyBody(v))
    }
}

/// A raw body (log uploads), with the size limit's rejection as JSON.
pub struct Raw(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_bytes(req, state).await.map(Raw)
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

#[cfg(test)]
mod tests {
    use super::whole_numbers;
    use serde_json::json;

    #[test]
    fn whole_numbers_with_a_fraction_become_integers() {
        let mut v = json!({"a": 2.0, "b": [1e3, 0.5], "c": "2.0", "d": 1e300});
        assert!(whole_numbers(&mut v));
        assert_eq!(v, json!({"a": 2, "b": [1000, 0.5], "c": "2.0", "d": 1e300}));
        assert!(!whole_numbers(&mut json!({"a": 1, "b": 0.5})));
    }
}
