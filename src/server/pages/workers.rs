//! The list of workers and a worker's page.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup};

use super::*;
use crate::server::error::ApiResult;
use crate::server::extract::Path;
use crate::server::store::JobFilter;

/// Why a worker is in its status, in a few words.
fn why(w: &Worker) -> Markup {
    match w.status {
        WorkerStatus::Offline => html! { "no heartbeat since " (when(Some(&w.last_seen))) },
        // The strikes are forgiven as the quarantine begins: the count that
        // led to it is the rule's.
        WorkerStatus::Quarantined => html! {
            "after " (w.infra_failures.max(crate::rules::worker::QUARANTINE_AFTER as u32))
            " infrastructure failures in a row"
            @if let Some(u) = &w.quarantined_until { ", until " (when(Some(u))) }
        },
        WorkerStatus::Draining if w.drained => html! {
            "drained: finishes its jobs, takes no new ones"
            @if let Some(t) = &w.drained_at { ", since " (when(Some(t))) }
        },
        WorkerStatus::Draining => html! { "draining: finishes its jobs, then stops" },
        _ => html! {},
    }
}

fn busy_slots(w: &Worker) -> String {
    format!("{}/{} busy", w.jobs.len(), w.slots)
}

/// The jobs a worker runs now: jobtype, how long, a link.
fn current_jobs(w: &Worker, running: &HashMap<i64, Job>) -> Markup {
    html! {
        @for (i, r) in w.jobs.iter().enumerate() {
            @if i > 0 { br; }
            a href={"/jobs/" (r.id)} { "#" (r.id) }
            @if let Some(j) = running.get(&r.id) {
                " " (job_title(j)) " "
                span.muted { (ran_for(j)) }
            }
            @if r.canceling { " " span.muted { "(canceling)" } }
        }
    }
}

fn actions(w: &Worker, viewer: &Viewer) -> Markup {
    let name = query_escape(&w.name);
    html! {
        @if w.drained || w.status == WorkerStatus::Quarantined {
            (viewer.button(&format!("/workers/{name}/undrain"), if w.drained { "Undrain" } else { "Release" }, false))
        } @else if w.status != WorkerStatus::Offline {
            (viewer.button(&format!("/workers/{name}/drain"), "Drain", true))
        }
    }
}

/// The jobs these workers run now, by id: read by primary key.
async fn running_jobs(st: &AppState, workers: &[Worker]) -> ApiResult<HashMap<i64, Job>> {
    let ids: Vec<i64> = workers
        .iter()
        .flat_map(|w| w.jobs.iter().map(|r| r.id))
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let filter = JobFilter {
        limit: ids.len(),
        ids,
        ..Default::default()
    };
    let jobs = st.db(move |s| s.jobs(&filter)).await?;
    Ok(jobs.into_iter().map(|j| (j.id, j)).collect())
}

pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let workers = st.db(|s| s.workers(now_ms())).await?;
    let running = running_jobs(&st, &workers).await?;
    let body = html! {
        div id="workers" data-part {
            @if workers.is_empty() {
                (super::jobs::no_workers(&st, &headers))
            } @else {
                (scroll(html! { table {
                    thead { tr {
                        th scope="col" { "worker" } th scope="col" { "status" } th scope="col" { "slots" }
                        th scope="col" { "running" } th.hide-narrow scope="col" { "jobtypes" }
                        th.hide-narrow scope="col" { "platform" } th scope="col" { "last seen" } th scope="col" { "" }
                    } }
                    tbody { @for w in &workers { tr {
                        td { a href={"/workers/" (query_escape(&w.name))} { (w.name) } }
                        td { (state_badge(w.status.as_str())) br; small { (why(w)) } }
                        td.num { (busy_slots(w)) }
                        td { (current_jobs(w, &running)) }
                        td.hide-narrow { (w.jobtypes.join(", ")) }
                        td.hide-narrow { @for p in &w.platforms { (labels(p, false)) } }
                        td { (when(Some(&w.last_seen))) }
                        td { (actions(w, &viewer)) }
                    } } }
                } }))
            }
        }
    };
    Ok(Page {
        title: "Workers".into(),
        state: None,
        live: true,
        viewer: &viewer,
    }
    .render(body))
}

pub async fn page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let n = name.clone();
    let (w, history) = st
        .db(move |s| Ok((s.worker(&n, now_ms())?, s.worker_attempts(&n, 100)?)))
        .await?;
    let running = running_jobs(&st, std::slice::from_ref(&w)).await?;
    let lost = history
        .iter()
        .filter(|(_, a)| a.state == Some(AttemptState::Lost))
        .count();
    let body = html! {
        section id="head" data-part aria-label="summary" {
            dl.facts {
                div { dt { "status" } dd { (state_badge(w.status.as_str())) } }
                @let reason = why(&w);
                @if !reason.0.is_empty() { div { dt { "why" } dd { (reason) } } }
                div { dt { "slots" } dd { (busy_slots(&w)) } }
                div { dt { "last seen" } dd { (when(Some(&w.last_seen))) } }
                div { dt { "registered" } dd { (when(Some(&w.registered_at))) } }
                div { dt { "version" } dd { (w.version) } }
                @if w.infra_failures > 0 { div { dt { "infrastructure failures" } dd { (w.infra_failures) } } }
            }
            div.actions { (actions(&w, &viewer)) }
            div { span.muted { "jobtypes " } ul.labels { @for t in &w.jobtypes { li.label { (t) } } } }
            @for (i, p) in w.platforms.iter().enumerate() {
                div { span.muted { "platform " (i + 1) " " } (labels(p, false)) }
            }
            @if !w.accept.is_empty() { div { span.muted { "accepts only jobs asking for " } ul.labels { @for a in &w.accept { li.label { (a) } } } } }
        }
        section id="current" data-part aria-labelledby="current-h" {
            h2 id="current-h" { "Running now" }
            @if w.jobs.is_empty() { p.muted { "Nothing." } } @else { p { (current_jobs(&w, &running)) } }
        }
        @if !w.info.is_empty() {
            section aria-labelledby="info-h" {
                h2 id="info-h" { "What it says of itself" }
                (scroll(html! { table { tbody { @for (k, v) in &w.info { tr {
                    th scope="row" { (k) }
                    td { (value_text(v)) }
                } } } } }))
            }
        }
        section id="history" data-part aria-labelledby="history-h" {
            h2 id="history-h" { "Latest attempts" @if lost > 0 { " (" span.lost { (lost) " lost" } ")" } }
            @if history.is_empty() { p.muted { "It has run nothing yet." } } @else {
                (scroll(html! { table {
                    thead { tr { th scope="col" { "job" } th scope="col" { "attempt" } th scope="col" { "started" }
                        th.num scope="col" { "ran for" } th scope="col" { "ended" } th scope="col" { "reason" } } }
                    tbody { @for (job, a) in &history { tr {
                        td { a href={"/jobs/" (job)} { "#" (job) } }
                        td { a href={"/jobs/" (job) "?attempt=" (a.attempt)} { (a.attempt) } }
                        td { (when(Some(&a.started_at))) }
                        td.num { @if let (Some(s), Some(f)) = (parse_rfc3339(&a.started_at), a.finished_at.as_deref().and_then(parse_rfc3339)) { (dur(f - s)) } }
                        td { (state_badge(a.state.map_or("running", |s| s.as_str()))) }
                        td { (a.reason.as_deref().unwrap_or("")) }
                    } } }
                } }))
            }
        }
    };
    Ok(Page {
        title: format!("Worker {name}"),
        state: None,
        live: true,
        viewer: &viewer,
    }
    .render(body))
}
