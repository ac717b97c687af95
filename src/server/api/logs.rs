//! Reading a job's log, at once or followed while the job runs.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
pub(super) struct ReadLogQuery {
    attempt: Option<u32>,
    #[serde(default)]
    offset: u64,
    /// Keep the response open and stream the log until the attempt ends.
    #[serde(default)]
    follow: bool,
}

pub(super) async fn read_log(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<ReadLogQuery>,
) -> ApiResult<Response> {
    check_range("offset", q.offset, 0, limits::MAX_INT)?;
    if let Some(a) = q.attempt {
        check_range("attempt", a, 1, u32::MAX)?;
    }
    let attempt = q.attempt;
    if let (Some(a), false) = (attempt, q.follow) {
        // An attempt that never began has no log, not an empty one.
        let job = st.db(move |s| s.job(id)).await?;
        if a > job.attempt {
            return Err(ApiError::not_found(format!(
                "job {id} has no attempt {a} (it has had {})",
                job.attempt
            )));
        }
    }
    let first = st.db(move |s| s.read_log(id, attempt, q.offset)).await?;
    let headers = [
        (
            header::CONTENT_TYPE,
            "text/plain; charset=utf-8".to_string(),
        ),
        (
            header::HeaderName::from_static("x-testbot-attempt"),
            first.attempt.to_string(),
        ),
        (
            header::HeaderName::from_static("x-testbot-next-offset"),
            first.end.to_string(),
        ),
        (
            header::HeaderName::from_static("x-testbot-job-state"),
            first.state.to_string(),
        ),
    ];
    if !q.follow {
        return Ok((headers, first.data).into_response());
    }
    // Follow: send what is there, then each new piece as it is stored, and
    // end when the attempt is over (or the server shuts down).
    // Without an attempt asked for, follow the job: wait for it to start,
    // and go on to its next attempt if it is run again.
    let fixed = q.attempt;
    let start = (st, first.attempt, q.offset, Some(first));
    let stream =
        futures_util::stream::unfold(start, move |(st, mut attempt, mut offset, mut pending)| {
            async move {
                let mut events = st.events.subscribe();
                let mut shutdown = st.shutdown.clone();
                loop {
                    let slice = match pending.take() {
                        Some(s) => s,
                        None => {
                            events.borrow_and_update();
                            let want = fixed.or(Some(attempt));
                            let mut s = match st.db(move |s| s.read_log(id, want, offset)).await {
                                Ok(s) => s,
                                Err(_) => return None,
                            };
                            if fixed.is_none() && !s.live && !s.state.is_final() {
                                // A newer attempt began: follow it from its start.
                                match st.db(move |s| s.read_log(id, None, 0)).await {
                                    Ok(next) if next.attempt != attempt => {
                                        attempt = next.attempt;
                                        offset = 0;
                                        s = next;
                                    }
                                    Ok(_) => {}
                                    Err(_) => return None,
                                }
                            }
                            s
                        }
                    };
                    if !slice.data.is_empty() {
                        offset = slice.end;
                        let chunk: Result<Bytes, std::io::Error> = Ok(Bytes::from(slice.data));
                        return Some((chunk, (st, attempt, offset, None)));
                    }
                    if !slice.live || *shutdown.borrow() {
                        return None;
                    }
                    tokio::select! {
                        _ = events.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => {}
                    }
                }
            }
        });
    let mut resp = (headers, axum::body::Body::from_stream(stream)).into_response();
    // Sent as it comes: never held back by a compressor's buffer.
    resp.extensions_mut().insert(Streamed);
    Ok(resp)
}

/// Marks a response that streams for as long as a job runs.
#[derive(Clone, Copy)]
pub struct Streamed;

/// Logs are compressed for clients that ask (a log is mostly repeats),
/// except a followed one, which must arrive line by line.
pub fn compression(
) -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{DefaultPredicate, Predicate};
    let not_streamed =
        |_: axum::http::StatusCode,
         _: axum::http::Version,
         _: &axum::http::HeaderMap,
         ext: &axum::http::Extensions| { ext.get::<Streamed>().is_none() };
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .compress_when(DefaultPredicate::new().and(not_streamed))
}
