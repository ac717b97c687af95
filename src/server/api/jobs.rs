//! Jobs for clients: submit, list, read, explain, cancel.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

/// The header a client names its submission with, so that sending it again
/// (after an answer it did not get) makes no second set of jobs.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on the answer to a submission made before with the same key.
pub(super) const REPLAYED: &str = "idempotent-replayed";

/// The submission's idempotency key, if it has one: 1 to 255 visible ASCII
/// characters, with a digest of the request it names.
pub(super) fn submit_key(
    headers: &HeaderMap,
    body: &impl serde::Serialize,
) -> ApiResult<Option<SubmitKey>> {
    let mut given = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = given.next() else {
        return Ok(None);
    };
    if given.next().is_some() {
        return Err(ApiError::bad("Idempotency-Key is given more than once"));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
    use sha2::Digest;
    let digest = crate::server::auth::hex(&sha2::Sha256::digest(&bytes).into());
    Ok(Some(SubmitKey {
        key: key.to_string(),
        digest,
    }))
}

/// 201 for a new submission; 200, saying so, for one made before.
pub(super) fn submitted(repeated: bool, body: impl IntoResponse) -> Response {
    let (status, replayed) = if repeated {
        (StatusCode::OK, "true")
    } else {
        (StatusCode::CREATED, "false")
    };
    (status, [(REPLAYED, replayed)], body).into_response()
}

/// `POST /api/v1/jobs`: one job (the answer is the job) or a list (the
/// answer is the list).
pub(super) async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    AnyBody(body): AnyBody,
) -> ApiResult<Response> {
    let key = submit_key(&headers, &body)?;
    let (specs, many) = match OneOrMany::deserialize(&body) {
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
    let short = specs.len() <= QUICK;
    let made = st
        .db_short_if(short, move |s| s.submit(None, specs, now_ms(), key))
        .await?;
    let jobs = made.jobs;
    if made.repeated {
        tracing::info!(
            jobs = jobs.len(),
            first = jobs[0].id,
            "jobs submitted again with their key"
        );
    } else {
        st.wake_claims();
        tracing::info!(jobs = jobs.len(), first = jobs[0].id, "jobs queued");
    }
    Ok(if many {
        submitted(made.repeated, Json(jobs))
    } else {
        submitted(made.repeated, Json(&jobs[0]))
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
    jobtype: Option<String>,
    text: Option<String>,
    before: Option<i64>,
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
    for (what, v) in [
        ("worker", &q.worker),
        ("jobtype", &q.jobtype),
        ("text", &q.text),
    ] {
        if let Some(v) = v {
            check_filter(what, v)?;
        }
    }
    let ids: Vec<i64> = q
        .ids
        .as_deref()
        .map(|s| parse_list("ids", s))
        .transpose()?
        .unwrap_or_default();
    for id in &ids {
        check_id("ids", *id)?;
    }
    let filter = JobFilter {
        state,
        reached: None,
        ids,
        build: match q.build {
            Some(b) => {
                check_id("build", b)?;
                Some(b)
            }
            None => None,
        },
        worker: q.worker.filter(|w| !w.is_empty()),
        jobtype: q.jobtype.filter(|t| !t.is_empty()),
        text: q.text.filter(|t| !t.is_empty()),
        before: q
            .before
            .map(|b| check_id("before", b).map(|()| b))
            .transpose()?,
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
    st.job_changed();
    Ok(Json(job))
}

#[derive(Deserialize)]
pub(super) struct WaitBody {
    ids: Vec<i64>,
    #[serde(default)]
    wait: Option<f64>,
    #[serde(default)]
    until: Option<Until>,
}

/// What a wait waits for.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Until {
    /// A job has started or ended (is no longer queued).
    Started,
    /// A job has ended.
    Ended,
}

/// Up to this many jobs, a submit or a wait's look is a short store call
/// (see [`AppState::db_quick`]).
const QUICK: usize = 16;

/// The most jobs one wait watches.
pub(crate) const WAIT_MAX_IDS: usize = 1000;

/// How often a wait on several jobs looks at most.
const WAIT_GATHER: Duration = Duration::from_millis(20);

/// A 404 naming the first of `ids` that names no job.
async fn all_known(st: &AppState, ids: Vec<i64>) -> ApiResult<()> {
    let all = JobFilter {
        ids: ids.clone(),
        limit: ids.len(),
        ..Default::default()
    };
    let known: std::collections::HashSet<i64> = st
        .db_short_if(ids.len() <= QUICK, move |s| s.jobs(&all))
        .await?
        .iter()
        .map(|j| j.id)
        .collect();
    match ids.iter().find(|i| !known.contains(i)) {
        Some(missing) => Err(ApiError::NotFound(format!("no job {missing}"))),
        None => Ok(()),
    }
}

/// Long-poll: the jobs of `ids` that have ended (or, with `until:
/// "started"`, are no longer queued), as soon as one has (at once when all
/// already had; of several, those that got there within [`WAIT_GATHER`] of
/// the first seen), or `[]` after `wait` seconds (default 30, at most 60).
/// Woken whenever a job starts, ends or goes back to the queue (on any
/// server sharing the database), and looking again each second. An id
/// that names no job is a 404 when the time is up.
pub(super) async fn wait_jobs(
    State(st): State<AppState>,
    Body(body): Body<WaitBody>,
) -> ApiResult<Json<Vec<Job>>> {
    let mut ids = body.ids;
    for (i, id) in ids.iter().enumerate() {
        check_id(&format!("ids[{i}]"), *id)?;
    }
    if ids.is_empty() || ids.len() > WAIT_MAX_IDS {
        return Err(ApiError::bad(format!(
            "ids: name 1 to {WAIT_MAX_IDS} jobs, not {}",
            ids.len()
        )));
    }
    ids.sort_unstable();
    ids.dedup();
    let reached = match body.until.unwrap_or(Until::Ended) {
        Until::Started => Reached::Started,
        Until::Ended => Reached::Ended,
    };
    let timeout = check_wait("wait", body.wait.unwrap_or(30.0))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    let mut changes = st.changes.subscribe();
    let mut shutdown = st.shutdown.clone();
    // Only the jobs that got there are read; whether every id names a job
    // is checked at the first look (and again when the time is up with
    // none there: a job may be deleted meanwhile).
    let mut first = true;
    loop {
        let first_look = std::mem::take(&mut first);
        // A wait on many jobs looks at most every WAIT_GATHER, so that
        // jobs ending together come in one answer and a build of quick
        // jobs does not cost a look per job.
        if !first_look && ids.len() > 1 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(WAIT_GATHER.min(left)).await;
        }
        changes.borrow_and_update();
        let filter = JobFilter {
            ids: ids.clone(),
            reached: Some(reached),
            limit: ids.len(),
            ..Default::default()
        };
        let mut found = st
            .db_short_if(ids.len() <= QUICK, move |s| s.jobs(&filter))
            .await?;
        if first_look && found.len() < ids.len() {
            // Every id must name a job: said at once, not when the time
            // is up (or never, when the others end).
            let there: std::collections::HashSet<i64> = found.iter().map(|j| j.id).collect();
            let rest: Vec<i64> = ids.iter().copied().filter(|i| !there.contains(i)).collect();
            all_known(&st, rest).await?;
        }
        let now = tokio::time::Instant::now();
        // Some but not all of several jobs already there: the others of
        // a build of quick jobs end within moments, and a client that
        // asks again at once for the rest would cost a look per job.
        if first_look && !found.is_empty() && found.len() < ids.len() && now < deadline {
            continue;
        }
        if found.is_empty() && now >= deadline {
            all_known(&st, ids.clone()).await?;
        }
        if !found.is_empty() || now >= deadline {
            found.reverse();
            return Ok(Json(found));
        }
        let look_again = now + Duration::from_secs(1);
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(look_again.min(deadline)) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(Json(Vec::new())),
        }
    }
}
