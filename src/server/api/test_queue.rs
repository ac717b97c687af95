//! The test queue (what a sharded job's command calls with its job token)
//! and build-level test results and history (what readers call).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::*;
use crate::rules::test_queue::MAX_BATCH;
use crate::server::store::{BuildTestsQuery, StatsKind, TestsStep, OUTCOME_FILTERS};

/// The longest test id taken, in bytes.
const TEST_ID_MAX: usize = 4096;
/// The most tests one list or report holds.
const TESTS_MAX: usize = 1_000_000;
/// The longest failure text taken per test (longer ones are cut when stored).
const MESSAGE_MAX: usize = 1 << 20;
/// How long a `next` waits when nothing says to wait less.
const DEFAULT_WAIT_S: f64 = 30.0;

/// The job and attempt the caller's job token is for, checked to be the
/// job the path names.
fn job_of(caller: &Caller, id: i64) -> ApiResult<u32> {
    match caller {
        Caller::Job { job, attempt } if *job == id => Ok(*attempt),
        Caller::Job { job, .. } => Err(ApiError::Forbidden(format!(
            "the job token is for job {job}, not job {id}: a job may call only about itself"
        ))),
        _ => Err(ApiError::Forbidden("a job token is needed".into())),
    }
}

fn check_test_id(field: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > TEST_ID_MAX || id.contains(['\0', '\n', '\r']) {
        return Err(ApiError::bad(format!(
            "{field}: a test id must be 1 to {TEST_ID_MAX} bytes without NUL or line breaks, not {:?}",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

pub(super) async fn tests_next(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Body(mut req): Body<TestsNext>,
) -> ApiResult<Json<TestsBatch>> {
    let attempt = job_of(&caller, id)?;
    if let Some(tests) = &req.tests {
        if tests.len() > TESTS_MAX {
            return Err(ApiError::bad(format!(
                "tests: {} ids is over the limit of {TESTS_MAX}",
                tests.len()
            )));
        }
        for (i, t) in tests.iter().enumerate() {
            check_test_id(&format!("tests[{i}]"), t)?;
        }
    }
    if let Some(max) = req.max {
        check_range("max", max, 1, MAX_BATCH)?;
    }
    if let Some(repro) = &req.repro {
        if repro.len() > TEST_ID_MAX || !repro.contains("{id}") {
            return Err(ApiError::bad(format!(
                "repro must be a command of at most {TEST_ID_MAX} bytes with {{id}} where the test id goes"
            )));
        }
    }
    let wait = check_wait("wait", req.wait.unwrap_or(DEFAULT_WAIT_S))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let mut events = st.events.subscribe();
    let mut shutdown = st.shutdown.clone();
    loop {
        events.borrow_and_update();
        let ask = req.clone();
        // The list is merged once; looking again needs none of it.
        req.tests = None;
        req.repro = None;
        match st
            .db(move |s| s.tests_next(id, attempt, &ask, now_ms()))
            .await?
        {
            TestsStep::Batch(b) => return Ok(Json(b)),
            TestsStep::Wait => {}
        }
        // Woken when a job ends or a shard reports; looked at again every
        // half second anyway, for leases that ran out.
        let look_again = tokio::time::Instant::now() + Duration::from_millis(500);
        tokio::select! {
            _ = events.changed() => {}
            _ = tokio::time::sleep_until(look_again.min(deadline)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    Ok(Json(TestsBatch::default()))
}

pub(super) async fn tests_report(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    Body(report): Body<TestsReport>,
) -> ApiResult<Json<TestsReported>> {
    let attempt = job_of(&caller, id)?;
    if report.results.len() > TESTS_MAX {
        return Err(ApiError::bad(format!(
            "results: {} is over the limit of {TESTS_MAX}",
            report.results.len()
        )));
    }
    for (i, r) in report.results.iter().enumerate() {
        check_test_id(&format!("results[{i}].id"), &r.id)?;
        check_range(
            &format!("results[{i}].duration_ms"),
            r.duration_ms,
            0,
            limits::MAX_INT,
        )?;
        if r.message.as_ref().is_some_and(|m| m.len() > MESSAGE_MAX) {
            return Err(ApiError::bad(format!(
                "results[{i}].message is over {MESSAGE_MAX} bytes"
            )));
        }
    }
    let out = st
        .db(move |s| s.tests_report(id, attempt, &report.results, now_ms()))
        .await?;
    // Shards waiting for tests held here may take the retries.
    st.wake_followers();
    Ok(Json(out))
}

pub(super) async fn tests_finish(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> ApiResult<Json<JobTests>> {
    let attempt = job_of(&caller, id)?;
    let out = st.db(move |s| s.tests_finish(id, attempt)).await?;
    if out.released > 0 {
        st.wake_followers();
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub(super) struct BuildTestsParams {
    outcome: Option<String>,
    test: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

pub(super) async fn build_tests(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<BuildTestsParams>,
) -> ApiResult<Json<BuildTests>> {
    check_id("id", id)?;
    if let Some(o) = &q.outcome {
        if !OUTCOME_FILTERS.contains(&o.as_str()) {
            return Err(ApiError::bad(format!(
                "outcome must be one of {}, not {o:?}",
                OUTCOME_FILTERS.join(", ")
            )));
        }
    }
    if let Some(t) = &q.test {
        check_test_id("test", t)?;
    }
    let offset = match q.offset.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= limits::MAX_INT)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "offset must be a whole number from 0 to {}, not {text:?}",
                    limits::MAX_INT
                ))
            })?,
    };
    let limit = list_limit(q.limit.as_deref(), 100, 10_000)? as u64;
    let query = BuildTestsQuery {
        outcome: q.outcome,
        test: q.test,
        offset,
        limit,
    };
    st.db(move |s| s.build_tests(id, &query)).await.map(Json)
}

#[derive(Deserialize)]
pub(super) struct StatsParams {
    jobtype: Option<String>,
    limit: Option<String>,
}

async fn stats(st: AppState, kind: StatsKind, q: StatsParams) -> ApiResult<Json<Vec<TestStat>>> {
    if let Some(j) = &q.jobtype {
        check_name("jobtype", j)?;
    }
    let limit = list_limit(q.limit.as_deref(), 50, 10_000)? as u64;
    st.db(move |s| s.test_stats(kind, q.jobtype.as_deref(), limit))
        .await
        .map(Json)
}

pub(super) async fn flaky_tests(
    State(st): State<AppState>,
    Query(q): Query<StatsParams>,
) -> ApiResult<Json<Vec<TestStat>>> {
    stats(st, StatsKind::Flaky, q).await
}

pub(super) async fn slow_tests(
    State(st): State<AppState>,
    Query(q): Query<StatsParams>,
) -> ApiResult<Json<Vec<TestStat>>> {
    stats(st, StatsKind::Slow, q).await
}
