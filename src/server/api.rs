//! The REST API under `/api/v1`: the route table (`ROUTES`, read by the
//! router, the auth layer and the OpenAPI test) here, and the handlers by
//! resource: `jobs`, `builds`, `logs`, `workers` (drain), `admin` (health,
//! status, backup) and `worker_protocol` (what workers call). Each handler
//! validates its input, makes one store call and answers JSON.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Caller;
use super::checks::*;
use super::error::{ApiError, ApiResult};
use super::extract::{whole_numbers, AnyBody, Body, Path, Query, Raw};
use super::store::{BuildFilter, Claim, JobFilter, Reached, SubmitKey, LOG_CHUNK_MAX};
use super::AppState;

mod admin;
mod artifacts;
mod builds;
mod jobs;
mod logs;
mod test_queue;
mod worker_protocol;
mod workers;
use crate::time::now_ms;
use crate::wire::*;
use admin::*;
use artifacts::*;
use axum::Extension;
use builds::*;
use jobs::*;
use logs::*;
use test_queue::*;
use worker_protocol::*;
use workers::*;

/// The most jobs one list answer holds.
const MAX_LIST: usize = 10_000;
/// The largest request body the server reads.
pub const BODY_MAX: usize = 8 << 20;
/// The largest body of a route that carries a result: a result over the
/// size the server keeps is trimmed, not refused, up to this.
pub const RESULT_BODY_MAX: usize = 64 << 20;
const RESULT_ROUTES: &[&str] = &[
    "/api/v1/jobs/{id}/result",
    "/api/v1/workers/{name}/claim",
    // A suite's list of test ids, and a batch's outcomes with their failure texts.
    "/api/v1/jobs/{id}/tests/next",
    "/api/v1/jobs/{id}/tests/report",
];

/// Who may call a route when the server has token files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Open, unless the server is `--private`.
    Read,
    /// The worker protocol: a worker token.
    Worker,
    /// Submitting and steering: a client token.
    Client,
    /// A job's calls about itself: the token of its current attempt.
    Job,
    /// Artifacts: a worker token, or the job's own token.
    Upload,
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
    r("POST", "/api/v1/jobs/wait", Access::Read),
    r("GET", "/api/v1/jobs/{id}", Access::Read),
    r("GET", "/api/v1/jobs/{id}/explain", Access::Read),
    r("POST", "/api/v1/jobs/{id}/log", Access::Worker),
    r("GET", "/api/v1/jobs/{id}/log", Access::Read),
    r("POST", "/api/v1/jobs/{id}/result", Access::Worker),
    r("POST", "/api/v1/jobs/{id}/cancel", Access::Client),
    r("POST", "/api/v1/builds", Access::Client),
    r("GET", "/api/v1/builds", Access::Read),
    r("GET", "/api/v1/builds/{id}", Access::Read),
    r("GET", "/api/v1/builds/{id}/tests", Access::Read),
    r("GET", "/api/v1/jobs/{id}/artifacts", Access::Read),
    r("POST", "/api/v1/jobs/{id}/artifacts", Access::Upload),
    r("GET", "/api/v1/jobs/{id}/artifacts/{*path}", Access::Read),
    r("PUT", "/api/v1/jobs/{id}/artifacts/{*path}", Access::Upload),
    r("POST", "/api/v1/jobs/{id}/tests/next", Access::Job),
    r("POST", "/api/v1/jobs/{id}/tests/report", Access::Job),
    r("POST", "/api/v1/jobs/{id}/tests/finish", Access::Job),
    r("GET", "/api/v1/tests/flaky", Access::Read),
    r("GET", "/api/v1/tests/slow", Access::Read),
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
        ("POST", "/api/v1/jobs/wait") => post(wait_jobs),
        ("GET", "/api/v1/jobs/{id}") => get(get_job),
        ("GET", "/api/v1/jobs/{id}/explain") => get(explain),
        ("POST", "/api/v1/jobs/{id}/log") => post(append_log),
        ("GET", "/api/v1/jobs/{id}/log") => get(read_log),
        ("POST", "/api/v1/jobs/{id}/result") => post(finish),
        ("POST", "/api/v1/jobs/{id}/cancel") => post(cancel),
        ("POST", "/api/v1/builds") => post(submit_build),
        ("GET", "/api/v1/builds") => get(list_builds),
        ("GET", "/api/v1/builds/{id}") => get(get_build),
        ("GET", "/api/v1/builds/{id}/tests") => get(build_tests),
        ("GET", "/api/v1/jobs/{id}/artifacts") => get(list_artifacts),
        ("POST", "/api/v1/jobs/{id}/artifacts") => post(declare_artifacts),
        ("GET", "/api/v1/jobs/{id}/artifacts/{*path}") => get(get_artifact),
        ("PUT", "/api/v1/jobs/{id}/artifacts/{*path}") => put(upload_artifact),
        ("POST", "/api/v1/jobs/{id}/tests/next") => post(tests_next),
        ("POST", "/api/v1/jobs/{id}/tests/report") => post(tests_report),
        ("POST", "/api/v1/jobs/{id}/tests/finish") => post(tests_finish),
        ("GET", "/api/v1/tests/flaky") => get(flaky_tests),
        ("GET", "/api/v1/tests/slow") => get(slow_tests),
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
        let methods = if route.path == "/api/v1/jobs/{id}/log" {
            methods.layer(logs::compression())
        } else {
            methods
        };
        router = router.route(route.path, methods);
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX))
}

async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let message = format!("no such path: {}", uri.path());
    if super::pages::is_browser(uri.path(), &headers) {
        return super::pages::error_page(StatusCode::NOT_FOUND, &message);
    }
    ApiError::not_found(message).into_response()
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

    /// A route as OpenAPI writes it: `{*path}` (the rest of the path) is
    /// `{path}` there.
    fn documented_path(route: &str) -> String {
        route.replace("{*", "{")
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
                let route = ROUTES.iter().find(|r| {
                    documented_path(r.path) == *path && r.method.eq_ignore_ascii_case(method)
                });
                if let Some(r) = route {
                    let sec = op["security"][0]
                        .as_object()
                        .map(|o| o.keys().next().cloned());
                    let want = match r.access {
                        Access::Read => None,
                        Access::Worker => Some(Some("workerToken".to_string())),
                        Access::Client => Some(Some("clientToken".to_string())),
                        Access::Job => Some(Some("jobToken".to_string())),
                        Access::Upload => Some(Some("workerToken".to_string())),
                    };
                    assert_eq!(sec, want, "security of {method} {path}");
                }
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), documented_path(r.path)))
            .collect();
        assert_eq!(documented, routed);
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let (kind, name) = r
                .strip_prefix("#/components/")
                .and_then(|k| k.split_once('/'))
                .expect("local ref");
            assert!(matches!(kind, "schemas" | "parameters"), "{r}");
            assert!(doc["components"][kind][name].is_object(), "dangling {r}");
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
