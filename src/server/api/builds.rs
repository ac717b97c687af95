//! Builds: submit a build of jobs, list builds, read one.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

use super::*;

pub(super) async fn submit_build(
    State(st): State<AppState>,
    headers: HeaderMap,
    Body(spec): Body<BuildSpec>,
) -> ApiResult<Response> {
    check_build(&spec)?;
    let key = submit_key(&headers, &spec)?;
    let BuildSpec {
        name,
        meta,
        jobs,
        extra,
    } = spec;
    let answer = (name.clone(), meta.clone(), extra.clone());
    let made = st
        .db(move |s| s.submit(Some((name, meta, extra)), jobs, now_ms(), key))
        .await?;
    let id = made
        .build
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("build not created")))?;
    if made.repeated {
        // Made before: the build as it is now.
        let build = st.db(move |s| s.build(id)).await?;
        return Ok(submitted(true, Json(build)));
    }
    st.wake_claims();
    let jobs = made.jobs;
    // The build as it was stored, from the jobs just written (with their
    // submit-time warnings), rather than read back: a build of thousands of
    // jobs is answered in half the time.
    let (name, meta, extra) = answer;
    let mut counts = std::collections::BTreeMap::new();
    for j in &jobs {
        *counts.entry(j.state.to_string()).or_insert(0u64) += 1;
    }
    let by_state: Vec<(JobState, u64)> = counts
        .iter()
        .filter_map(|(s, n)| JobState::parse(s).map(|s| (s, *n)))
        .collect();
    let build = Build {
        id,
        name,
        meta,
        state: crate::rules::build::state(&by_state),
        created_at: jobs
            .first()
            .map(|j| j.created_at.clone())
            .unwrap_or_default(),
        ended_at: None,
        counts,
        flaky: 0,
        jobs,
        extra,
    };
    Ok(submitted(false, Json(build)))
}

#[derive(Deserialize)]
pub(super) struct BuildsQuery {
    limit: Option<String>,
    name: Option<String>,
    before: Option<i64>,
}

pub(super) async fn list_builds(
    State(st): State<AppState>,
    Query(q): Query<BuildsQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    if let Some(n) = &q.name {
        check_filter("name", n)?;
    }
    let filter = BuildFilter {
        limit: list_limit(q.limit.as_deref(), 50, 1000)?,
        name: q.name.filter(|n| !n.is_empty()),
        before: q
            .before
            .map(|b| check_id("before", b).map(|()| b))
            .transpose()?,
    };
    st.db(move |s| s.builds(&filter)).await.map(Json)
}

pub(super) async fn get_build(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Build>> {
    st.db(move |s| s.build(id)).await.map(Json)
}
