//! Artifacts: declared by a worker (or the job itself), uploaded with
//! offsets and checked by SHA-256, listed and served back (with ranges),
//! never rendered as HTML from this origin.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;

use super::*;
use crate::server::artifacts::upload_key;
use crate::server::store::{ArtifactCaps, Uploader};

/// The most files one declaration names.
const FILES_MAX: usize = 10_000;
/// The longest `keep_artifacts`: a hundred years.
const KEEP_MAX_MS: u64 = 100 * 365 * 86_400_000;
/// Bytes gathered before they are written to the partial file.
const WRITE_CHUNK: usize = 1 << 20;

/// Who uploads, from the caller and the name the request gives: the job
/// itself (its token, for this job and attempt only), or a worker (its
/// token bound to the name it gives).
async fn uploader(
    st: &AppState,
    caller: &Caller,
    id: i64,
    attempt: u32,
    named: &str,
) -> ApiResult<UploaderName> {
    match caller {
        Caller::Job { job, attempt: a } => {
            if *job != id || *a != attempt {
                return Err(ApiError::Forbidden(format!(
                    "the job token is for attempt {a} of job {job}, not attempt {attempt} of job {id}"
                )));
            }
            Ok(UploaderName::Job)
        }
        Caller::Worker(_) if named.is_empty() => {
            // No name: the worker that ran the attempt, if the token is its.
            let ran = st
                .db(move |s| s.attempts(id))
                .await?
                .into_iter()
                .find(|a| a.attempt == attempt)
                .map(|a| a.worker)
                .ok_or_else(|| ApiError::conflict(format!("job {id} has no attempt {attempt}")))?;
            worker_protocol::bind(st, caller, &ran).await?;
            Ok(UploaderName::Worker(ran))
        }
        _ => {
            if !named.is_empty() {
                worker_protocol::bind(st, caller, named).await?;
            }
            Ok(UploaderName::Worker(named.to_string()))
        }
    }
}

/// An [`Uploader`] that owns its name, to cross into the store's thread.
#[derive(Clone)]
enum UploaderName {
    Job,
    Worker(String),
}

impl UploaderName {
    fn as_uploader(&self) -> Uploader<'_> {
        match self {
            UploaderName::Job => Uploader::Job,
            UploaderName::Worker(w) => Uploader::Worker(w),
        }
    }
}

fn check_path(path: &str) -> ApiResult<()> {
    check_artifact_path(path).map_err(|e| ApiError::bad(format!("path: {e}")))
}

pub(super) async fn declare_artifacts(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Body(decl): Body<ArtifactDeclaration>,
) -> ApiResult<Json<ArtifactsDeclared>> {
    check_id("id", id)?;
    check_range("attempt", decl.attempt, 1, u32::MAX)?;
    if decl.files.len() > FILES_MAX {
        return Err(ApiError::bad(format!(
            "files: {} is over the limit of {FILES_MAX}",
            decl.files.len()
        )));
    }
    for (i, f) in decl.files.iter().enumerate() {
        check_artifact_path(&f.path).map_err(|e| ApiError::bad(format!("files[{i}].path: {e}")))?;
        if !is_sha256(&f.sha256) {
            return Err(ApiError::bad(format!(
                "files[{i}].sha256 must be 64 lowercase hex digits"
            )));
        }
        check_range(&format!("files[{i}].size"), f.size, 0, limits::MAX_INT)?;
    }
    if let Some(k) = decl.keep_ms {
        check_range("keep_ms", k, 0, KEEP_MAX_MS)?;
    }
    let who = uploader(&st, &caller, id, decl.attempt, &decl.worker).await?;
    let caps = ArtifactCaps {
        max_file: st.artifacts.max_file,
        max_job: st.artifacts.max_job,
    };
    let blobs = st.artifacts.clone();
    let mut files = st
        .db(move |s| {
            s.declare_artifacts(
                id,
                decl.attempt,
                who.as_uploader(),
                &decl.files,
                decl.keep_ms,
                caps,
                &|sha, size| blobs.blobs.has(sha, size),
                now_ms(),
            )
        })
        .await?;
    // What the disk holds is what came (the server may have stopped after
    // writing and before noting it).
    let blobs = st.artifacts.clone();
    files = tokio::task::spawn_blocking(move || {
        for f in &mut files {
            if f.state == ArtifactState::Uploading {
                f.received = blobs
                    .blobs
                    .received(&upload_key(id, f.attempt, &f.path))
                    .unwrap_or(0)
                    .min(f.size);
            }
        }
        files
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("artifact task failed: {e}")))?;
    Ok(Json(ArtifactsDeclared { files }))
}

fn storage(e: std::io::Error, what: &str) -> ApiError {
    // An append at an offset the upload is no longer at: another upload of
    // the same file wrote first. The sender's conflict, not the disk's.
    if e.kind() == std::io::ErrorKind::InvalidInput {
        return ApiError::conflict(format!(
            "{e}: another upload of this file wrote meanwhile; send again from the \
             offset the server holds"
        ));
    }
    ApiError::Unavailable(format!("the artifacts directory: {what}: {e}"))
}

pub(super) async fn upload_artifact(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(i64, String)>,
    Query(q): Query<ArtifactUpload>,
    body: axum::body::Body,
) -> ApiResult<Json<Artifact>> {
    check_id("id", id)?;
    check_path(&path)?;
    check_range("attempt", q.attempt, 1, u32::MAX)?;
    check_range("offset", q.offset, 0, limits::MAX_INT)?;
    let who = uploader(&st, &caller, id, q.attempt, &q.worker).await?;
    let attempt = q.attempt;
    let (p, w) = (path.clone(), who.clone());
    let art = st
        .db(move |s| {
            s.check_uploader(id, attempt, w.as_uploader())?;
            s.artifact(id, attempt, &p)
        })
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "attempt {attempt} of job {id} declared no artifact {path:?}; declare it first \
                 (POST /api/v1/jobs/{id}/artifacts)"
            ))
        })?;
    match art.state {
        ArtifactState::Complete => return Ok(Json(art)),
        ArtifactState::Skipped => {
            return Err(ApiError::conflict(format!(
                "artifact {path:?} is skipped: {}",
                art.note.unwrap_or_default()
            )))
        }
        ArtifactState::Uploading => {}
    }
    let key = upload_key(id, attempt, &path);
    let store = st.artifacts.clone();
    let k = key.clone();
    let have = tokio::task::spawn_blocking(move || store.blobs.received(&k))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("artifact task failed: {e}")))?
        .map_err(|e| storage(e, "reading an upload"))?;
    if q.offset != have {
        return Err(ApiError::conflict(format!(
            "the server holds {have} bytes of {path:?}; send from offset {have}"
        )));
    }
    // Streamed to the partial file a megabyte at a time, never held whole.
    let mut received = have;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut stream = body.into_data_stream();
    let flush = |pending: Vec<u8>, at: u64| {
        let store = st.artifacts.clone();
        let key = key.clone();
        async move {
            tokio::task::spawn_blocking(move || store.blobs.append(&key, at, &pending))
                .await
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("artifact task failed: {e}")))?
                .map_err(|e| storage(e, "writing an upload"))
        }
    };
    let mut written = have;
    let mut cut: Option<ApiError> = None;
    // Bytes sent from the start in one go are hashed as they come, so the
    // file need not be read again to check it.
    let mut hasher = (have == 0).then(<sha2::Sha256 as sha2::Digest>::new);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // The sender went away: keep what came, for it to resume.
                cut = Some(ApiError::bad(format!("the upload was cut off: {e}")));
                break;
            }
        };
        received += chunk.len() as u64;
        if received > art.size {
            cut = Some(ApiError::conflict(format!(
                "artifact {path:?} was declared as {} bytes; this upload goes past that",
                art.size
            )));
            break;
        }
        if let Some(h) = hasher.as_mut() {
            sha2::Digest::update(h, &chunk);
        }
        pending.extend_from_slice(&chunk);
        if pending.len() >= WRITE_CHUNK {
            let data = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_CHUNK));
            written = flush(data, written).await?;
        }
    }
    if received > art.size {
        // Nothing of a body longer than declared is kept.
        pending.clear();
    }
    if !pending.is_empty() {
        written = flush(pending, written).await?;
    }
    let complete = cut.is_none() && written == art.size;
    if complete && art.size == 0 {
        // An empty file: there is nothing to append, but a file to seal.
        written = flush(Vec::new(), 0).await?;
    }
    if complete {
        let store = st.artifacts.clone();
        let (k, sha) = (key.clone(), art.sha256.clone());
        let hashed = hasher.map(|h| crate::server::auth::hex(&sha2::Digest::finalize(h).into()));
        let sealed =
            tokio::task::spawn_blocking(move || store.blobs.seal(&k, &sha, hashed.as_deref()))
                .await
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("artifact task failed: {e}")))?
                .map_err(|e| storage(e, "checking an upload"))?;
        if let Err(why) = sealed {
            let p = path.clone();
            st.db(move |s| s.artifact_progress(id, attempt, &p, 0, false))
                .await?;
            return Err(ApiError::bad(format!("artifact {path:?}: {why}")));
        }
    }
    let p = path.clone();
    st.db(move |s| s.artifact_progress(id, attempt, &p, written, complete))
        .await?;
    if let Some(e) = cut {
        return Err(e);
    }
    let mut art = art;
    art.received = written;
    if complete {
        art.state = ArtifactState::Complete;
    }
    Ok(Json(art))
}

#[derive(Deserialize)]
pub(super) struct AttemptQuery {
    attempt: Option<String>,
}

fn attempt_of(q: &AttemptQuery) -> ApiResult<Option<u32>> {
    q.attempt
        .as_deref()
        .map(|a| {
            a.parse::<u32>().ok().filter(|a| *a >= 1).ok_or_else(|| {
                ApiError::bad(format!("attempt must be a whole number from 1, not {a:?}"))
            })
        })
        .transpose()
}

pub(super) async fn list_artifacts(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<AttemptQuery>,
) -> ApiResult<Json<Vec<Artifact>>> {
    check_id("id", id)?;
    let attempt = attempt_of(&q)?;
    st.db(move |s| s.artifacts(id, attempt)).await.map(Json)
}

/// A `Range: bytes=...` header as (start, end inclusive) within `size`;
/// `Err` for one that cannot be served (416).
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None); // another unit: the whole file
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole file, as RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

pub(super) async fn get_artifact(
    State(st): State<AppState>,
    Path((id, path)): Path<(i64, String)>,
    Query(q): Query<AttemptQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_id("id", id)?;
    check_path(&path)?;
    let attempt = attempt_of(&q)?;
    let p = path.clone();
    let art = st
        .db(move |s| {
            let list = s.artifacts(id, attempt)?;
            Ok(list.into_iter().find(|a| a.path == p))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no artifact {path:?}")))?;
    if art.state != ArtifactState::Complete {
        return Err(ApiError::conflict(format!(
            "artifact {path:?} is {}{}",
            art.state.as_str(),
            match art.state {
                ArtifactState::Uploading =>
                    format!(" ({} of {} bytes so far)", art.received, art.size),
                _ => art
                    .note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default(),
            }
        )));
    }
    let (media, inline) = artifact_media_type(&path);
    let name = path.rsplit('/').next().unwrap_or("artifact");
    // A name for the header: quoted, without what could break it.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "{}; filename=\"{safe}\"",
        if inline { "inline" } else { "attachment" }
    );
    let size = art.size;
    let span = match range(&headers, size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let (start, end) = span.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let store = st.artifacts.clone();
    let sha = art.sha256.clone();
    let file = tokio::task::spawn_blocking(move || store.blobs.open(&sha))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("artifact task failed: {e}")))?
        .map_err(|e| storage(e, "reading an artifact"))?;
    let mut file = tokio::fs::File::from_std(file);
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| storage(e, "reading an artifact"))?;
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (left.min(256 << 10)) as usize];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    *r.status_mut() = if span.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(h, header::CONTENT_TYPE, media.to_string());
    set(h, header::CONTENT_LENGTH, len.to_string());
    set(h, header::CONTENT_DISPOSITION, disposition);
    set(h, header::ACCEPT_RANGES, "bytes".into());
    set(h, header::ETAG, format!("\"{}\"", art.sha256));
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    // Whatever it holds, it runs nothing from this origin.
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'; img-src 'self'".into(),
    );
    if span.is_some() {
        set(
            h,
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{size}"),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        range(&h, size)
    }

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(ranged("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(ranged("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(ranged("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(ranged("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(ranged("bytes=100-", 100), Err(()));
        assert_eq!(ranged("bytes=9-3", 100), Err(()));
        assert_eq!(ranged("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(ranged("items=0-1", 100), Ok(None));
        assert_eq!(ranged("bytes=x-1", 100), Err(()));
    }
}
