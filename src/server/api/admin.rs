//! What operators read: health, the API document, the summary, backups.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::*;

/// 200 while the server can do its work; 503 with the cause while its
/// database cannot be written.
pub(super) async fn health(State(st): State<AppState>) -> Response {
    let version = env!("CARGO_PKG_VERSION").to_string();
    match st
        .db(|s| Ok(s.storage_problem(now_ms())))
        .await
        .ok()
        .flatten()
    {
        None => Json(Health { ok: true, version }).into_response(),
        Some(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ok": false, "version": version, "error": error })),
        )
            .into_response(),
    }
}

pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

pub(super) async fn status(State(st): State<AppState>) -> ApiResult<Json<Summary>> {
    st.db(|s| s.summary(now_ms())).await.map(Json)
}

/// Streams a consistent copy of the database, made with SQLite's online
/// backup while the server goes on serving.
pub(super) async fn backup(State(st): State<AppState>) -> ApiResult<Response> {
    // A private directory (mode 700, a random name): the copy is never at
    // a path another local user could guess, read or plant a link at.
    let dir = tempfile::Builder::new()
        .prefix("testbot-backup-")
        .tempdir()
        .map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("making a directory for the backup: {e}"))
        })?;
    let path = dir.path().join("testbot.db");
    let p = path.clone();
    st.db(move |s| s.backup_to(&p)).await?;
    // The bytes of artifacts are files beside the database, not in it: the
    // client is told where they are, to copy them when it can reach them.
    let artifacts_dir = st.artifacts.dir.clone();
    let (blobs, artifacts_dir) = tokio::task::spawn_blocking(move || {
        let dir = std::fs::canonicalize(&artifacts_dir).unwrap_or(artifacts_dir);
        (crate::server::artifacts::count_blobs(&dir), dir)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("counting the artifacts: {e}")))?;
    let file = std::fs::File::open(&path)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading the backup: {e}")))?;
    // The copy is unlinked at once; the open file streams on.
    drop(dir);
    tracing::info!("backup taken");
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"testbot-backup.db\"",
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(crate::wire::ARTIFACT_FILES_HEADER, blobs.into());
    if let Some(dir) = artifacts_dir
        .to_str()
        .and_then(|d| header::HeaderValue::from_str(d).ok())
    {
        headers.insert(crate::wire::ARTIFACTS_DIR_HEADER, dir);
    }
    Ok(resp)
}
