//! The list of builds and a build's page.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup};

use super::*;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Path, Query};
use crate::server::store::{BuildFilter, BuildTestsQuery};

/// Builds on one page of `/builds`.
const PAGE_BUILDS: usize = 50;
/// Jobs on one page of a build's page.
const PAGE_JOBS: usize = 200;

/// How long a build took: from its submission to its last job's end, or
/// ticking while it runs.
fn wall(b: &Build) -> Markup {
    let Some(created) = parse_rfc3339(&b.created_at) else {
        return html! {};
    };
    match b.ended_at.as_deref().and_then(parse_rfc3339) {
        Some(end) => html! { (dur(end - created)) },
        None if b.state.is_final() => html! {},
        None => html! { span data-since=(created) { (dur(now_ms() - created)) } },
    }
}

/// A bar of the build's jobs by state.
fn progress(b: &Build) -> Markup {
    let total: u64 = b.counts.values().sum();
    if total == 0 {
        return html! {};
    }
    let n = |s: &str| b.counts.get(s).copied().unwrap_or(0);
    let passed = n("passed");
    let failed = n("failed") + n("error") + n("timed_out");
    let running = n("running");
    let other = n("canceled");
    let pct = |x: u64| format!("width:{:.2}%", x as f64 * 100.0 / total as f64);
    let ended = passed + failed + other;
    html! {
        div.bar role="img" aria-label={(ended) " of " (total) " jobs ended: " (passed) " passed, " (failed) " failed, " (running) " running"} {
            span.b-passed style=(pct(passed)) {}
            span.b-failed style=(pct(failed)) {}
            span.b-other style=(pct(other)) {}
            span.b-running style=(pct(running)) {}
        }
    }
}

fn counts_line(b: &Build) -> String {
    b.counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn builds_table(builds: &[Build]) -> Markup {
    scroll(html! {
        table {
            thead { tr {
                th scope="col" { "build" } th scope="col" { "state" } th scope="col" { "jobs" }
                th.num scope="col" { "wall time" } th.hide-narrow scope="col" { "created" }
            } }
            tbody { @for b in builds { tr {
                td { a href={"/builds/" (b.id)} { "#" (b.id) } " " (b.name)
                     @for (k, v) in b.meta.iter().take(3) { " " span.label { (k) "=" (value_text(v)) } } }
                td { (state_badge(b.state.as_str())) }
                td { (counts_line(b)) @if b.flaky > 0 { ", " span.flaky { (b.flaky) " flaky" } } }
                td.num { (wall(b)) }
                td.hide-narrow { (when(Some(&b.created_at))) }
            } } }
        }
    })
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    state: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let name = text_param("name", &q.name)?;
    let state = state_param(&q.state, BuildState::ALL)?;
    let before = id_param("before", &q.before)?;
    // A build's state comes from its jobs: filtered here, reading on in
    // batches until the page is full (or enough was read).
    let n = name.clone();
    let (builds, next) = st
        .db(move |s| {
            let mut out = Vec::new();
            let mut cursor = before;
            for _ in 0..10 {
                let batch = s.builds(&BuildFilter {
                    name: n.clone(),
                    before: cursor,
                    limit: PAGE_BUILDS + 1,
                })?;
                let last = batch.len() <= PAGE_BUILDS;
                for b in batch {
                    if out.len() == PAGE_BUILDS {
                        return Ok((out, cursor));
                    }
                    cursor = Some(b.id);
                    if state.is_none_or(|st| st == b.state) {
                        out.push(b);
                    }
                }
                if last {
                    return Ok((out, None));
                }
            }
            Ok((out, cursor))
        })
        .await?;
    let keep = |before: Option<i64>| {
        let mut parts = Vec::new();
        if let Some(n) = &name {
            parts.push(format!("name={}", query_escape(n)));
        }
        if let Some(s) = state {
            parts.push(format!("state={}", s.as_str()));
        }
        if let Some(b) = before {
            parts.push(format!("before={b}"));
        }
        format!("/builds?{}", parts.join("&"))
    };
    let filtered = name.is_some() || state.is_some();
    let body = html! {
        form.filters method="get" action="/builds" role="search" {
            label { "name contains" input name="name" value=[name.as_deref()] size="16"; }
            label { "state" select name="state" {
                option value="" { "any" }
                @for s in BuildState::ALL { option value=(s.as_str()) selected[state == Some(*s)] { (s.as_str()) } }
            } }
            button type="submit" { "Filter" }
            @if filtered { a href="/builds" { "Clear" } }
        }
        div id="list" data-part {
            @if builds.is_empty() {
                p.empty { @if filtered || before.is_some() { "No builds match these filters." }
                    @else { "No builds yet. Submit one with " code { "testbot submit --build NAME JOBTYPE..." } "." } }
            } @else { (builds_table(&builds)) }
            nav.pager aria-label="pages" {
                @if before.is_some() { a href=(keep(None)) { "← Newest" } }
                @if let Some(n) = next { a href=(keep(Some(n))) rel="next" { "Older →" } }
            }
        }
    };
    Ok(Page {
        title: "Builds".into(),
        state: None,
        live: before.is_none(),
        viewer: &viewer,
    }
    .render(body))
}

#[derive(serde::Deserialize)]
pub struct BuildQuery {
    state: Option<String>,
    /// Where the page starts: after the job with this place in the order
    /// (`RANK.ID`), so that jobs changing state between pages are not
    /// skipped.
    after: Option<String>,
}

/// Failed jobs first, then running, queued, and the rest; by id within.
fn rank(s: JobState) -> u8 {
    match s {
        JobState::Failed | JobState::Error | JobState::TimedOut => 0,
        JobState::Running => 1,
        JobState::Queued => 2,
        _ => 3,
    }
}

pub async fn page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<BuildQuery>,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let state = state_param(&q.state, &JobState::ALL)?;
    let after: Option<(u8, i64)> = match q.after.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(a) => match a
            .split_once('.')
            .and_then(|(r, i)| Some((r.parse::<u8>().ok()?, i.parse::<i64>().ok()?)))
        {
            Some(k) => Some(k),
            None => {
                return Err(ApiError::bad(format!(
                    "after: expected RANK.ID (as the Next link writes it), got {a:?}"
                )))
            }
        },
    };
    let failing = BuildTestsQuery {
        outcome: Some("failing".into()),
        limit: 200,
        ..Default::default()
    };
    let flaky_q = BuildTestsQuery {
        outcome: Some("flaky".into()),
        limit: 200,
        ..Default::default()
    };
    let (mut b, tests, flaky) = st
        .db(move |s| {
            let b = s.build(id)?;
            let tests = s.build_tests(id, &failing)?;
            let flaky = if tests.totals.flaky > 0 {
                s.build_tests(id, &flaky_q)?.tests
            } else {
                Vec::new()
            };
            Ok((b, tests, flaky))
        })
        .await?;
    // One entry per test, however many jobs ran it.
    let mut grouped: Vec<crate::wire::BuildTest> = Vec::new();
    for t in tests.tests.iter().cloned() {
        match grouped.iter_mut().find(|g| g.id == t.id) {
            Some(g) => {
                g.runs.extend(t.runs);
                if g.message.is_none() {
                    g.message = t.message;
                }
            }
            None => grouped.push(t),
        }
    }
    for g in &mut grouped {
        g.runs.sort_by_key(|r| r.job);
        g.runs.dedup_by_key(|r| (r.job, r.attempt));
    }
    let mut jobs = std::mem::take(&mut b.jobs);
    jobs.retain(|j| state.is_none_or(|s| s == j.state));
    jobs.sort_by_key(|j| (rank(j.state), j.id));
    let shown = jobs.len();
    let start = after.map_or(0, |k| jobs.partition_point(|j| (rank(j.state), j.id) <= k));
    let page_jobs = &jobs[start..(start + PAGE_JOBS).min(shown)];
    let next = (start + PAGE_JOBS < shown)
        .then(|| page_jobs.last())
        .flatten()
        .map(|j| format!("{}.{}", rank(j.state), j.id));
    let any_failed = ["failed", "error", "timed_out", "canceled"]
        .iter()
        .any(|s| b.counts.get(*s).copied().unwrap_or(0) > 0);
    let link = |state: Option<&str>, after: Option<&str>| {
        let mut parts = Vec::new();
        if let Some(s) = state {
            parts.push(format!("state={s}"));
        }
        if let Some(a) = after {
            parts.push(format!("after={a}"));
        }
        if parts.is_empty() {
            format!("/builds/{id}")
        } else {
            format!("/builds/{id}?{}", parts.join("&"))
        }
    };
    let total: u64 = b.counts.values().sum();
    let t = &tests.totals;
    let body = html! {
        section id="head" data-part aria-label="summary" {
            dl.facts {
                div { dt { "state" } dd { (state_badge(b.state.as_str())) } }
                div { dt { "jobs" } dd { (total) } }
                div { dt { "wall time" } dd { (wall(&b)) } }
                div { dt { "created" } dd { (when(Some(&b.created_at))) } }
                @if let Some(e) = &b.ended_at { div { dt { "ended" } dd { (when(Some(e))) } } }
            }
            @if !b.meta.is_empty() {
                ul.labels { @for (k, v) in &b.meta {
                    li.label { (k) "=" (value_text(v)) }
                } }
            }
            (progress(&b))
            ul.counts aria-label="jobs by state" {
                li { @if state.is_none() { span.on { "all " (total) } } @else { a href=(link(None, None)) { "all " (total) } } }
                @for (s, n) in &b.counts {
                    li { @if state.map(|x| x.as_str()) == Some(s.as_str()) { span.on { (state_badge(s)) " " (n) } }
                         @else { a href=(link(Some(s), None)) { (state_badge(s)) " " (n) } } }
                }
                @if b.flaky > 0 { li.flaky { (b.flaky) " flaky" } }
            }
            div.actions {
                @if !b.state.is_final() { (viewer.button(&format!("/builds/{id}/cancel"), "Cancel build", true)) }
                @if b.state.is_final() && any_failed { (viewer.button(&format!("/builds/{id}/rerun"), "Rerun failed jobs", false)) }
            }
        }
        section id="failing-tests" data-part aria-labelledby="tests-h" {
            @if t.total > 0 {
                h2 id="tests-h" { "Tests" }
                p class=[(t.failed + t.error > 0).then_some("failed")] {
                    (t.total) " tests: " (t.passed) " passed, " (t.failed) " failed, " (t.error) " errors, " (t.skipped) " skipped"
                    @if t.flaky > 0 { "; " (t.flaky) " flaky" }
                    @if t.pending > 0 { "; " (t.pending) " not run yet" }
                    @if t.not_run > 0 { "; " (t.not_run) " never run" } }
            }
            @if !grouped.is_empty() {
                h2 { "Failing tests (" (grouped.len()) @if tests.count > tests.tests.len() as u64 { " or more" } ")" }
                @for x in &grouped {
                    details.failure {
                        summary {
                            span.failed { (ansi::strip(&x.id)) } " — failed in "
                            @for (i, r) in x.runs.iter().filter(|r| r.outcome.is_failure()).enumerate() {
                                @if i > 0 { ", " }
                                a href={"/jobs/" (r.job)} { "#" (r.job) }
                            }
                        }
                        @if let Some(m) = &x.message { pre { (raw(ansi::to_html(m))) } }
                        @if let Some(r) = &x.repro { p { "Run it by hand: " code { (r) } } }
                        ul { @for r in &x.runs { li { a href={"/jobs/" (r.job)} { "#" (r.job) } " on " (r.worker) ": " (state_badge(r.outcome.as_str())) } } }
                    }
                }
                @if tests.count > tests.tests.len() as u64 {
                    p { "and " (tests.count - tests.tests.len() as u64) " more: "
                        a href={"/api/v1/builds/" (id) "/tests?outcome=failing&limit=10000"} { "all failing tests" } }
                }
            }
        }
        @if !flaky.is_empty() {
            section id="flaky-tests" data-part aria-labelledby="flaky-h" {
                h2 id="flaky-h" { "Flaky tests (failed, then passed on a rerun)" }
                ul { @for x in &flaky { li { span.flaky { (x.id) } " — "
                    @for (i, r) in x.runs.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href={"/jobs/" (r.job)} { "#" (r.job) } " " (r.outcome.as_str())
                    } } } }
            }
        }
        section id="jobs" data-part aria-labelledby="jobs-h" {
            h2 id="jobs-h" { "Jobs" @if let Some(s) = state { ": " (s.as_str().replace('_', " ")) } " (" (shown) ")" }
            p.muted { "Failed jobs first, then running, waiting and the rest." }
            (scroll(html! { table {
                thead { tr {
                    th scope="col" { "job" } th scope="col" { "state" } th scope="col" { "matrix" } th scope="col" { "worker" }
                    th.num scope="col" { "queued for" } th.num scope="col" { "duration" }
                } }
                tbody { @for j in page_jobs { tr {
                    td { a href={"/jobs/" (j.id)} { "#" (j.id) } " " (job_title(j))
                         @if let Some(i) = j.shard_index { " " span.muted { "shard " (i + 1) "/" (j.shard_total.unwrap_or(0)) } } }
                    td { (state_badge(j.state.as_str())) @if j.flaky { " " span.flaky { "flaky" } } }
                    td { @for (k, v) in &j.requirements { span.label { (prop(k, v)) } " " } }
                    td { @if let Some(w) = &j.worker { a href={"/workers/" (query_escape(w))} { (w) } } }
                    td.num { (queued_for(j)) }
                    td.num { (ran_for(j)) }
                } } }
            } }))
            @if shown > PAGE_JOBS {
                nav.pager aria-label="pages" {
                    @if start > 0 { a href=(link(state.map(|s| s.as_str()), None)) { "← First page" } }
                    span { "jobs " (start + 1) "–" (start + page_jobs.len()) " of " (shown) }
                    @if let Some(n) = &next { a href=(link(state.map(|s| s.as_str()), Some(n))) rel="next" { "Next →" } }
                }
            }
        }
    };
    Ok(Page {
        title: format!("Build #{id} {}", b.name),
        state: Some(b.state.as_str()),
        live: !b.state.is_final(),
        viewer: &viewer,
    }
    .render(body))
}
