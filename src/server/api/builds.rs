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

#[derive(Deserialize)]
pub(super) struct BuildsQuery {
    limit: Option<String>,
}

pub(super) async fn list_builds(
    State(st): State<AppState>,
    Query(q): Query<BuildsQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    let limit = list_limit(q.limit.as_deref(), 50, 1000)?;
    st.db(move |s| s.builds(limit)).await.map(Json)
}

pub(super) async fn get_build(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Build>> {
    st.db(move |s| s.build(id)).await.map(Json)
}
