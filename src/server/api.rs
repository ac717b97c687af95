//! The REST API under `/api/v1`: the route table and one handler per path,
//! each validating its input, making one store call and answering JSON.
//! The worker protocol's handlers are in `worker_protocol`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Caller;
use super::checks::*;
use super::error::{ApiError, ApiResult};
use super::extract::{whole_numbers, AnyBody, Body, Path, Query, Raw};
use super::store::{Claim, JobFilter, LOG_CHUNK_MAX};
use super::AppState;

mod worker_protocol;
use crate::time::now_ms;
use crate::wire::*;
use axum::Extension;
use worker_protocol::*;

/// The most jobs one list answer holds.
const MAX_LIST: usize = 10_000;
/// The largest request body the server reads.
pub const BODY_MAX: usize = 8 << 20;
/// The largest body of a route that carries a result: a result over the
/// size the server keeps is trimmed, not refused, up to this.
pub const RESULT_BODY_MAX: usize = 64 << 20;
const RESULT_ROUTES: &[&str] = &["/api/v1/jobs/{id}/result", "/api/v1/workers/{name}/claim"];

/// Who may call a route when the server has token files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Open, unless the server is `--private`.
    Read,
    /// The worker protocol: a worker token.
    Worker,
    /// Submitting and steering: a client token.
    Client,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// Every API route: the router is built from this table, the auth layer
/// reads each route's access from it, and a test checks the OpenAPI
/// document against it, so the three cannot drift apart.
pub const ROUTES: &[Route] = &[
    r("GET", "/api/v1/health", Access::Read),
    r("GET", "/api/v1/openapi.json", Access::Read),
    r("GET", "/api/v1/status", Access::Read),
    r("POST", "/api/v1/workers", Access::Worker),
    r("GET", "/api/v1/workers", Access::Read),
    r("GET", "/api/v1/workers/{name}", Access::Read),
    r("POST", "/api/v1/workers/{name}/heartbeat", Access::Worker),
    r("POST", "/api/v1/workers/{name}/claim", Access::Worker),
    r("POST", "/api/v1/workers/{name}/drain", Access::Client),
    r("POST", "/api/v1/workers/{name}/undrain", Access::Client),
    r("POST", "/api/v1/jobs", Access::Client),
    r("GET", "/api/v1/jobs", Access::Read),
    r("GET", "/api/v1/jobs/{id}", Access::Read),
    r("GET", "/api/v1/jobs/{id}/explain", Access::Read),
    r("POST", "/api/v1/jobs/{id}/log", Access::Worker),
    r("GET", "/api/v1/jobs/{id}/log", Access::Read),
    r("POST", "/api/v1/jobs/{id}/result", Access::Worker),
    r("POST", "/api/v1/jobs/{id}/cancel", Access::Client),
    r("POST", "/api/v1/builds", Access::Client),
    r("GET", "/api/v1/builds", Access::Read),
    r("GET", "/api/v1/builds/{id}", Access::Read),
    r("GET", "/api/v1/backup", Access::Client),
];

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/api/v1/health") => get(health),
        ("GET", "/api/v1/openapi.json") => get(openapi),
        ("GET", "/api/v1/status") => get(status),
        ("POST", "/api/v1/workers") => post(register),
        ("GET", "/api/v1/workers") => get(list_workers),
        ("GET", "/api/v1/workers/{name}") => get(get_worker),
        ("POST", "/api/v1/workers/{name}/heartbeat") => post(heartbeat),
        ("POST", "/api/v1/workers/{name}/claim") => post(claim),
        ("POST", "/api/v1/workers/{name}/drain") => post(drain),
        ("POST", "/api/v1/workers/{name}/undrain") => post(undrain),
        ("POST", "/api/v1/jobs") => post(submit),
        ("GET", "/api/v1/jobs") => get(list_jobs),
        ("GET", "/api/v1/jobs/{id}") => get(get_job),
        ("GET", "/api/v1/jobs/{id}/explain") => get(explain),
        ("POST", "/api/v1/jobs/{id}/log") => post(append_log),
        ("GET", "/api/v1/jobs/{id}/log") => get(read_log),
        ("POST", "/api/v1/jobs/{id}/result") => post(finish),
        ("POST", "/api/v1/jobs/{id}/cancel") => post(cancel),
        ("POST", "/api/v1/builds") => post(submit_build),
        ("GET", "/api/v1/builds") => get(list_builds),
        ("GET", "/api/v1/builds/{id}") => get(get_build),
        ("GET", "/api/v1/backup") => get(backup),
        _ => unreachable!("a route without a handler: {method} {path}"),
    }
}

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    let mut done: Vec<&str> = Vec::new();
    for route in ROUTES {
        if done.contains(&route.path) {
            continue;
        }
        done.push(route.path);
        let methods = ROUTES
            .iter()
            .filter(|r| r.path == route.path)
            .fold(MethodRouter::new(), |m, r| {
                m.merge(handler(r.method, r.path))
            });
        // A result is never refused for its size: it is trimmed instead
        // (see `check_result`), so its routes read bigger bodies.
        let methods = if RESULT_ROUTES.contains(&route.path) {
            methods.layer(axum::extract::DefaultBodyLimit::max(RESULT_BODY_MAX))
        } else {
            methods
        };
        router = router.route(route.path, methods);
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

/// 200 while the server can do its work; 503 with the cause while its
/// database cannot be written.
async fn health(State(st): State<AppState>) -> Response {
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

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn status(State(st): State<AppState>) -> ApiResult<Json<Summary>> {
    st.db(|s| s.summary(now_ms())).await.map(Json)
}

fn parse_list<T: std::str::FromStr>(what: &str, s: &str) -> ApiResult<Vec<T>> {
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
enum OneOrMany {
    Many(Vec<JobSpec>),
    One(Box<JobSpec>),
}

/// `POST /api/v1/jobs`: one job (the answer is the job) or a list (the
/// answer is the list).
async fn submit(State(st): State<AppState>, AnyBody(body): AnyBody) -> ApiResult<Response> {
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

async fn submit_build(
    State(st): State<AppState>,
    Body(spec): Body<BuildSpec>,
) -> ApiResult<Response> {
    check_build(&spec)?;
    let BuildSpec {
        name,
        meta,
        jobs,
        extra,
    } = spec;
    let (id, jobs) = st
        .db(move |s| s.submit(Some((name, meta, extra)), jobs, now_ms()))
        .await?;
    st.wake_claims();
    let id = id.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("build not created")))?;
    let mut build = st.db(move |s| s.build(id)).await?;
    // Carry the submit-time warnings over to the build's jobs.
    for (b, j) in build.jobs.iter_mut().zip(jobs) {
        b.warning = j.warning;
    }
    Ok((StatusCode::CREATED, Json(build)).into_response())
}

/// A list's `limit`: at least 1; over the maximum it is clamped to it.
fn list_limit(given: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
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
struct JobsQuery {
    state: Option<String>,
    limit: Option<String>,
    ids: Option<String>,
    build: Option<i64>,
    worker: Option<String>,
}

async fn list_jobs(
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

async fn explain(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Explanation>> {
    st.db(move |s| s.explain(id, now_ms())).await.map(Json)
}

/// Drains a worker from the server: it finishes what it runs and claims
/// nothing new until undrained.
async fn drain(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Worker>> {
    let w = st.db(move |s| s.set_drained(&name, true, now_ms())).await?;
    tracing::info!(worker = %w.name, "worker drained");
    Ok(Json(w))
}

/// Undrains a worker, and releases it from quarantine.
async fn undrain(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Worker>> {
    let w = st
        .db(move |s| s.set_drained(&name, false, now_ms()))
        .await?;
    tracing::info!(worker = %w.name, "worker undrained");
    st.wake_claims();
    Ok(Json(w))
}

async fn get_job(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Job>> {
    st.db(move |s| {
        let mut job = s.job(id)?;
        job.attempts = s.attempts(id)?;
        Ok(job)
    })
    .await
    .map(Json)
}

async fn cancel(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Job>> {
    let job = st.db(move |s| s.cancel(id, now_ms())).await?;
    tracing::info!(job = id, state = %job.state, "cancel requested");
    st.cancels.send_modify(|n| *n = n.wrapping_add(1));
    st.wake_followers();
    Ok(Json(job))
}

#[derive(Deserialize)]
struct ReadLogQuery {
    attempt: Option<u32>,
    #[serde(default)]
    offset: u64,
    /// Keep the response open and stream the log until the attempt ends.
    #[serde(default)]
    follow: bool,
}

async fn read_log(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<ReadLogQuery>,
) -> ApiResult<Response> {
    check_range("offset", q.offset, 0, limits::MAX_INT)?;
    if let Some(a) = q.attempt {
        check_range("attempt", a, 1, u32::MAX)?;
    }
    let attempt = q.attempt;
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
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

#[derive(Deserialize)]
struct BuildsQuery {
    limit: Option<String>,
}

async fn list_builds(
    State(st): State<AppState>,
    Query(q): Query<BuildsQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    let limit = list_limit(q.limit.as_deref(), 50, 1000)?;
    st.db(move |s| s.builds(limit)).await.map(Json)
}

/// Streams a consistent copy of the database, made with SQLite's online
/// backup while the server goes on serving.
async fn backup(State(st): State<AppState>) -> ApiResult<Response> {
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
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"testbot-backup.db\"",
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn get_build(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Build>> {
    st.db(move |s| s.build(id)).await.map(Json)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::{Access, ROUTES};

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap_or_default().to_string());
                    }
                    refs(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_openapi_document_has_exactly_the_routes() {
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                documented.insert((method.to_uppercase(), path.clone()));
                assert!(
                    op["responses"].is_object(),
                    "{method} {path} has no responses"
                );
                let route = ROUTES
                    .iter()
                    .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method));
                if let Some(r) = route {
                    let sec = op["security"][0]
                        .as_object()
                        .map(|o| o.keys().next().cloned());
                    let want = match r.access {
                        Access::Read => None,
                        Access::Worker => Some(Some("workerToken".to_string())),
                        Access::Client => Some(Some("clientToken".to_string())),
                    };
                    assert_eq!(sec, want, "security of {method} {path}");
                }
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(documented, routed);
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("local schema ref");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling {r}"
            );
        }
    }

    #[test]
    fn documented_bodies_match_the_wire_types() {
        // Every field a wire type sends is a property of its schema.
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let schemas = &doc["components"]["schemas"];
        let job = serde_json::to_value(crate::wire::JobSpec {
            jobtype: "unit".into(),
            timeout: Some(std::time::Duration::from_secs(60)),
            max_attempts: Some(2),
            build: Some(crate::wire::BuildRef::Id(1)),
            shard_index: Some(0),
            shard_total: Some(2),
            retry_failed: Some(1),
            ..Default::default()
        })
        .unwrap();
        let hb = serde_json::to_value(crate::wire::Heartbeat::default()).unwrap();
        for (schema, value) in [("JobSpec", job), ("Heartbeat", hb)] {
            for key in value.as_object().unwrap().keys() {
                assert!(
                    schemas[schema]["properties"][key].is_object(),
                    "{schema} lacks {key}"
                );
            }
        }
    }
}
