//! Draining and undraining a worker (the worker protocol is in
//! `worker_protocol.rs`).

use axum::extract::State;
use axum::Json;

use super::*;

/// Drains a worker from the server: it finishes what it runs and claims
/// nothing new until undrained.
pub(super) async fn drain(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Worker>> {
    let w = st.db(move |s| s.set_drained(&name, true, now_ms())).await?;
    tracing::info!(worker = %w.name, "worker drained");
    Ok(Json(w))
}

/// Undrains a worker, and releases it from quarantine.
pub(super) async fn undrain(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Worker>> {
    let w = st
        .db(move |s| s.set_drained(&name, false, now_ms()))
        .await?;
    tracing::info!(worker = %w.name, "worker undrained");
    st.wake_claims();
    Ok(Json(w))
}
