//! Builds: submit a build of jobs, list builds, read one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::*;

pub(super) async fn submit_build(
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
    let answer = (name.clone(), meta.clone(), extra.clone());
    let (id, jobs) = st
        .db(move |s| s.submit(Some((name, meta, extra)), jobs, now_ms()))
        .await?;
    st.wake_claims();
    let id = id.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("build not created")))?;
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
    Ok((StatusCode::CREATED, Json(build)).into_response())
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
