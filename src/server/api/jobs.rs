//! Jobs for clients: submit, list, read, explain, cancel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::*;

pub(super) fn parse_list<T: std::str::FromStr>(what: &str, s: &str) -> ApiResult<Vec<T>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| ApiError::bad(format!("{what}: {p:?} is not valid")))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    Many(Vec<JobSpec>),
    One(Box<JobSpec>),
}

/// `POST /api/v1/jobs`: one job (the answer is the job) or a list (the
/// answer is the list).
pub(super) async fn submit(
    State(st): State<AppState>,
    AnyBody(body): AnyBody,
) -> ApiResult<Response> {
    let (specs, many) = match serde_json::from_value::<OneOrMany>(body.clone()) {
        Ok(OneOrMany::Many(v)) => (v, true),
        Ok(OneOrMany::One(s)) => (vec![*s], false),
        Err(_) => {
            // Re-parse for a precise message naming the field.
            let e = if body.is_array() {
                serde_path_to_error::deserialize::<_, Vec<JobSpec>>(body).err()
            } else {
                serde_path_to_error::deserialize::<_, JobSpec>(body).err()
            };
            return Err(ApiError::bad(format!(
                "invalid job: {}",
                e.map(|e| format!("{}: {}", e.path(), e.inner()))
                    .unwrap_or_else(|| "expected a job object or a list of them".into())
            )));
        }
    };
    if specs.is_empty() {
        return Err(ApiError::bad("no jobs to submit"));
    }
    check_jobs_count(specs.len())?;
    for spec in &specs {
        check_spec(spec)?;
    }
    let (_, jobs) = st.db(move |s| s.submit(None, specs, now_ms())).await?;
    st.wake_claims();
    tracing::info!(jobs = jobs.len(), first = jobs[0].id, "jobs queued");
    Ok(if many {
        (StatusCode::CREATED, Json(jobs)).into_response()
    } else {
        (StatusCode::CREATED, Json(&jobs[0])).into_response()
    })
}

/// A list's `limit`: at least 1; over the maximum it is clamped to it.
pub(super) fn list_limit(given: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
    let Some(text) = given else {
        return Ok(default);
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad(format!(
            "limit must be a whole number, at least 1, not {text:?}"
        )));
    }
    if text.bytes().all(|b| b == b'0') {
        return Err(ApiError::bad("limit must be at least 1"));
    }
    // However many digits: over the maximum is the maximum.
    Ok(text.parse::<usize>().map_or(max, |n| n.min(max)))
}

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    limit: Option<String>,
    ids: Option<String>,
    build: Option<i64>,
    worker: Option<String>,
}

pub(super) async fn list_jobs(
    State(st): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown state {s:?}; states are queued, running, passed, failed, timed_out, canceled, error"
            ))
        })?),
    };
    let filter = JobFilter {
        state,
        ids: q
            .ids
            .as_deref()
            .map(|s| parse_list("ids", s))
            .transpose()?
            .unwrap_or_default(),
        build: match q.build {
            Some(b) => {
                check_id("build", b)?;
                Some(b)
            }
            None => None,
        },
        worker: q.worker,
        limit: list_limit(q.limit.as_deref(), 100, MAX_LIST)?,
    };
    st.db(move |s| s.jobs(&filter)).await.map(Json)
}

pub(super) async fn explain(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Explanation>> {
    st.db(move |s| s.explain(id, now_ms())).await.map(Json)
}

pub(super) async fn get_job(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Job>> {
    st.db(move |s| {
        let mut job = s.job(id)?;
        job.attempts = s.attempts(id)?;
        Ok(job)
    })
    .await
    .map(Json)
}

pub(super) async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Job>> {
    let job = st.db(move |s| s.cancel(id, now_ms())).await?;
    tracing::info!(job = id, state = %job.state, "cancel requested");
    st.cancels.send_modify(|n| *n = n.wrapping_add(1));
    st.wake_followers();
    Ok(Json(job))
}
