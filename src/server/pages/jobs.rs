//! The home page, the list of jobs and a job's page with its log.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup};

use super::*;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Path, Query};
use crate::server::store::{JobFilter, LogSlice};

/// A long log shows its last lines first, with a link to all of them.
const TAIL_LINES: usize = 2000;
/// Jobs on one page of `/jobs`.
const PAGE_JOBS: usize = 100;

pub async fn home(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let (summary, workers, running, queued, ended) = st
        .db(|s| {
            let now = now_ms();
            let list = |state: Option<JobState>, limit| JobFilter {
                state,
                limit,
                ..Default::default()
            };
            let ended = JobFilter {
                reached: Some(crate::server::store::Reached::Ended),
                limit: 15,
                ..Default::default()
            };
            Ok((
                s.summary(now)?,
                s.workers(now)?,
                s.jobs(&list(Some(JobState::Running), 50))?,
                s.jobs(&list(Some(JobState::Queued), 20))?,
                s.jobs(&ended)?,
            ))
        })
        .await?;
    // Why the newest waiting jobs wait, from the workers already read
    // (without their place in the queue, which costs a scan of it).
    let views: Vec<crate::server::explain::WorkerView> = workers.iter().map(Into::into).collect();
    let why: Vec<Explanation> = queued
        .iter()
        .map(|j| crate::server::explain::explain(j, &views, None))
        .collect();
    let total: u64 = summary.jobs.values().sum();
    let w = &summary.workers;
    let body = html! {
        section aria-labelledby="counts-h" {
            h2 id="counts-h" class="skip" { "Jobs by state" }
            ul.counts id="counts" data-part {
                @for state in JobState::ALL {
                    @let n = summary.jobs.get(state.as_str()).copied().unwrap_or(0);
                    li { a href={"/jobs?state=" (state.as_str())} { (state_badge(state.as_str())) " " (n) } }
                }
                li { a href="/jobs" { "all " (total) } }
            }
        }
        section id="running" data-part aria-labelledby="running-h" {
            h2 id="running-h" { "Running now (" (summary.jobs.get("running").copied().unwrap_or(0)) ")" }
            @if running.is_empty() { p.muted { "Nothing is running." } } @else { (jobs_table(&running, true)) }
        }
        section id="waiting" data-part aria-labelledby="waiting-h" {
            h2 id="waiting-h" { "Waiting (" (summary.jobs.get("queued").copied().unwrap_or(0)) ")" }
            @if queued.is_empty() {
                p.muted { "No job is waiting." }
            } @else {
                (scroll(html! { table {
                    thead { tr { th scope="col" { "job" } th.num scope="col" { "waiting for" } th scope="col" { "why" } } }
                    tbody { @for (i, j) in queued.iter().enumerate() {
                        tr {
                            td { a href={"/jobs/" (j.id)} { "#" (j.id) } " " (job_title(j)) }
                            td.num { (queued_for(j)) }
                            td { @if let Some(e) = why.get(i) {
                                span class=(if matches!(e.reason.as_str(), "no_jobtype" | "no_platform" | "unavailable") { "failed" } else { "muted" }) { (e.message) }
                            } }
                        }
                    } }
                } }))
                @if queued.len() as u64 > 0 { p { a href="/jobs?state=queued" { "All waiting jobs" } } }
            }
        }
        @if workers.is_empty() {
            (no_workers(&st, &headers))
        } @else {
            p id="worker-counts" data-part {
                a href="/workers" { (w.online) " worker" (if w.online == 1 { "" } else { "s" }) " online" }
                " (" (w.busy) " busy, " (w.idle) " idle"
                @if w.draining > 0 { ", " (w.draining) " draining" }
                @if w.quarantined > 0 { ", " (w.quarantined) " quarantined" }
                "), " (w.offline) " offline"
            }
            ul.counts id="worker-list" data-part aria-label="workers" {
                @for wk in workers.iter().take(30) {
                    li { a href={"/workers/" (query_escape(&wk.name))} { (wk.name) } " " (state_badge(wk.status.as_str())) }
                }
                @if workers.len() > 30 { li { a href="/workers" { "and " (workers.len() - 30) " more" } } }
            }
        }
        section id="builds" data-part aria-labelledby="builds-h" {
            h2 id="builds-h" { "Latest builds" }
            @if summary.builds.is_empty() { p.muted { "No builds yet." } } @else {
                (super::builds::builds_table(&summary.builds))
                p { a href="/builds" { "All builds" } }
            }
        }
        section id="ended" data-part aria-labelledby="ended-h" {
            h2 id="ended-h" { "Recently ended" }
            @if ended.is_empty() {
                @if total == 0 { (no_jobs()) } @else { p.muted { "No job has ended yet." } }
            } @else {
                (jobs_table(&ended, true))
                p { a href="/jobs" { "All jobs" } }
            }
        }
    };
    Ok(Page {
        title: "testbot".into(),
        state: None,
        live: true,
        viewer: &viewer,
    }
    .render(body))
}

/// What a new user sees before any worker registered: a config for this
/// server (as the browser reached it), with a token file when the server
/// asks workers for tokens.
pub fn no_workers(st: &AppState, headers: &HeaderMap) -> Markup {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("THIS-SERVER:8080");
    let scheme = if st.https { "https" } else { "http" };
    let token = if st.auth.enabled() {
        "token_file = \"worker.token\"   # a line of the server's --worker-tokens file\n"
    } else {
        ""
    };
    let config = format!(
        "# worker.toml\nserver = \"{scheme}://{host}\"\n{token}\n[jobtypes.unit]\ncommand = \"make test\"\n\n$ testbot worker --config worker.toml"
    );
    html! {
        div.empty id="worker-counts" data-part {
            p { strong { "No worker has registered yet." } " Jobs wait until one that has their jobtype does. On a test machine, write a config and start a worker:" }
            pre { (config) }
            p { "Or run a worker inside the server itself: " code { "testbot serve --worker worker.toml" } "." }
        }
    }
}

fn no_jobs() -> Markup {
    html! {
        div.empty {
            p { strong { "No jobs yet." } " Submit one from a script or a shell:" }
            pre { "testbot submit unit --wait\ntestbot submit --build nightly --meta revision=abc123 unit lint" }
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    state: Option<String>,
    jobtype: Option<String>,
    worker: Option<String>,
    build: Option<String>,
    text: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let state = state_param(&q.state, &JobState::ALL)?;
    let build = id_param("build", &q.build)?;
    let before = id_param("before", &q.before)?;
    let limit = match given(&q.limit) {
        None => PAGE_JOBS,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(1000),
            _ => {
                return Err(ApiError::bad(format!(
                    "limit: expected a whole number from 1 to 1000, got {l:?}"
                )))
            }
        },
    };
    let filter = JobFilter {
        state,
        build,
        worker: text_param("worker", &q.worker)?,
        jobtype: text_param("jobtype", &q.jobtype)?,
        text: text_param("text", &q.text)?,
        before,
        // One more than shown says whether there is an older page.
        limit: limit + 1,
        ..Default::default()
    };
    let f = filter.clone();
    let mut jobs = st.db(move |s| s.jobs(&f)).await?;
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    let keep = |before: Option<i64>| -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", query_escape(&v)));
            }
        };
        add("state", filter.state.map(|s| s.as_str().to_string()));
        add("jobtype", filter.jobtype.clone());
        add("worker", filter.worker.clone());
        add("build", filter.build.map(|b| b.to_string()));
        add("text", filter.text.clone());
        if limit != PAGE_JOBS {
            add("limit", Some(limit.to_string()));
        }
        add("before", before.map(|b| b.to_string()));
        format!("/jobs?{}", parts.join("&"))
    };
    let filtered = filter.state.is_some()
        || filter.jobtype.is_some()
        || filter.worker.is_some()
        || filter.build.is_some()
        || filter.text.is_some();
    let body = html! {
        form.filters method="get" action="/jobs" role="search" {
            label { "state" select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL {
                    option value=(s.as_str()) selected[filter.state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "jobtype" input name="jobtype" value=[filter.jobtype.as_deref()] size="12"; }
            label { "worker" input name="worker" value=[filter.worker.as_deref()] size="12"; }
            label { "build" input name="build" value=[filter.build] size="6" inputmode="numeric"; }
            label { "params contain" input name="text" value=[filter.text.as_deref()] size="14"; }
            button type="submit" { "Filter" }
            @if filtered { a href="/jobs" { "Clear" } }
        }
        div id="list" data-part {
            @if jobs.is_empty() {
                p.empty { @if filtered || before.is_some() { "No jobs match these filters." } @else { "No jobs yet. Submit one with " code { "testbot submit JOBTYPE" } "." } }
            } @else {
                (jobs_table(&jobs, true))
            }
            nav.pager aria-label="pages" {
                @if before.is_some() { a href=(keep(None)) { "← Newest" } }
                @if more { @if let Some(last) = jobs.last() { a href=(keep(Some(last.id))) rel="next" { "Older →" } } }
            }
        }
    };
    let title = match filter.state {
        Some(s) => format!("Jobs: {}", s.as_str().replace('_', " ")),
        None => "Jobs".into(),
    };
    Ok(Page {
        title,
        state: None,
        live: before.is_none(),
        viewer: &viewer,
    }
    .render(body))
}

#[derive(serde::Deserialize)]
pub struct JobQuery {
    attempt: Option<u32>,
    /// Every line of a long log, not only its tail.
    full: Option<String>,
}

pub async fn page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<JobQuery>,
) -> ApiResult<Response> {
    let viewer = Viewer::of(&st, &headers);
    let (job, attempts, artifacts) = st
        .db(move |s| Ok((s.job(id)?, s.attempts(id)?, s.artifacts(id, q.attempt)?)))
        .await?;
    if let Some(a) = q.attempt {
        if !attempts.iter().any(|x| x.attempt == a) {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                &format!(
                    "job {id} has no attempt {a}: it has had {} attempt{}",
                    attempts.len(),
                    if attempts.len() == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    // A job that never started has no log: none is read.
    let wants_log = q.attempt.is_some() || job.attempt > 0 && job.state != JobState::Queued;
    let log = if wants_log {
        let attempt = q.attempt;
        Some(st.db(move |s| s.read_log(id, attempt, 0)).await?)
    } else {
        None
    };
    let build = match job.build {
        Some(b) => Some(st.db(move |s| s.build_head(b)).await?),
        None => None,
    };
    let explanation = if job.state == JobState::Queued {
        Some(st.db(move |s| s.explain(id, now_ms())).await?)
    } else {
        None
    };
    let live = !job.state.is_final();
    let full = q.full.as_deref().is_some_and(|f| f != "0" && f != "false");
    let body = html! {
        (head(&job, build.as_ref(), &viewer))
        @if let Some(e) = &explanation { (explain(e)) }
        (tests(&job))
        (attempts_section(&job, &attempts))
        @if !artifacts.is_empty() { (artifacts_section(id, &artifacts)) }
        @if let Some(log) = &log { (log_view(&job, log, full)) }
        @if let Some(result) = &job.result {
            details {
                summary { "Raw result (JSON)" }
                pre { (serde_json::to_string_pretty(result).unwrap_or_default()) }
            }
        }
    };
    Ok(Page {
        title: format!("#{} {}", job.id, job_title(&job)),
        state: Some(job.state.as_str()),
        live,
        viewer: &viewer,
    }
    .render(body))
}

fn head(job: &Job, build: Option<&Build>, viewer: &Viewer) -> Markup {
    let fact = |label: &str, value: Markup| html! { div { dt { (label) } dd { (value) } } };
    html! {
        section id="head" data-part aria-label="summary" {
            dl.facts {
                (fact("state", html! { (state_badge(job.state.as_str()))
                    @if job.flaky { " " span.flaky { "flaky" } }
                    @if job.cancel_requested && !job.state.is_final() { " " span.muted { "(cancel asked)" } } }))
                @if job.started_at.is_some() { (fact("duration", ran_for(job))) }
                (fact("queued for", queued_for(job)))
                @if let Some(w) = &job.worker { (fact("worker", html! { a href={"/workers/" (query_escape(w))} { (w) } })) }
                @if job.attempt > 0 { (fact("attempt", html! { (job.attempt) " of " (job.max_attempts) })) }
                @if let Some(b) = job.build {
                    (fact("build", html! { a href={"/builds/" (b)} { "#" (b) @if let Some(b) = build { " " (b.name) } } }))
                }
                @if let (Some(i), Some(n)) = (job.shard_index, job.shard_total) { (fact("shard", html! { (i + 1) " of " (n) })) }
                @if job.priority != 0 { (fact("priority", html! { (job.priority) })) }
                (fact("created", when(Some(&job.created_at))))
                @if let Some(t) = &job.finished_at { (fact("ended", when(Some(t)))) }
            }
            @if !job.params.is_empty() { div { span.muted { "params " } (labels(&job.params, false)) } }
            @if !job.requirements.is_empty() { div { span.muted { "needs " } (labels(&job.requirements, true)) } }
            @if let Some(b) = build { @if !b.meta.is_empty() {
                div { span.muted { "build " } ul.labels { @for (k, v) in &b.meta {
                    li.label { (k) "=" (value_text(v)) }
                } } }
            } }
            div.actions {
                @if !job.state.is_final() { (viewer.button(&format!("/jobs/{}/cancel", job.id), "Cancel", true)) }
                @if job.state.is_final() { (viewer.button(&format!("/jobs/{}/rerun", job.id), "Run again", false)) }
            }
            @if let Some(r) = &job.reason {
                p.reason.ok[job.state == JobState::Passed] { (r) }
            }
            @if job.flaky {
                p.flaky { "Flaky: passed on rerun " (job.reruns) " after failing"
                    @if !job.flaky_tests.is_empty() { " (flaky tests: " (job.flaky_tests.join(", ")) ")" } }
            }
        }
    }
}

fn explain(e: &Explanation) -> Markup {
    html! {
        section id="explain" data-part aria-labelledby="explain-h" {
            h2 id="explain-h" { "Why it is waiting" }
            p.reason.ok[e.reason == "starting" || e.reason == "busy"] { (e.message) }
            @if let Some(p) = e.position { p { "Place in the queue: " (p) } }
            @if !e.workers.is_empty() {
                (scroll(html! { table {
                    thead { tr { th scope="col" { "worker" } th scope="col" { "status" } th scope="col" { "fits" } th scope="col" { "first failing requirement" } } }
                    tbody { @for w in &e.workers { tr {
                        td { a href={"/workers/" (query_escape(&w.name))} { (w.name) } }
                        td { (state_badge(w.status.as_str())) }
                        td { @if w.fits { "yes" } @else { span.failed { "no" } } }
                        td { (w.misfit.as_deref().unwrap_or("")) }
                    } } }
                } }))
            }
        }
    }
}

fn tests(job: &Job) -> Markup {
    let Some(t) = job.test_report() else {
        return html! { section id="tests" data-part {} };
    };
    html! {
        section id="tests" data-part aria-labelledby="tests-h" {
            h2 id="tests-h" { "Tests" }
            p class=[(t.failed + t.errors > 0).then_some("failed")] {
                (t.total) " tests: " (t.passed) " passed, " (t.failed) " failed, " (t.errors) " errors, " (t.skipped) " skipped" }
            @if !t.retried.is_empty() {
                p { "Failed here and queued again for another job: " (t.retried.join(", ")) }
            }
            @for f in &t.failures {
                details.failure {
                    summary { span.failed { (ansi::strip(&f.name)) } " — " (ansi::strip(f.message.lines().next().unwrap_or(&f.kind))) }
                    pre { (raw(ansi::to_html(&f.message))) }
                }
            }
        }
    }
}

fn attempts_section(job: &Job, attempts: &[Attempt]) -> Markup {
    if attempts.is_empty() {
        return html! { section id="attempts" data-part {} };
    }
    html! {
        section id="attempts" data-part aria-labelledby="attempts-h" {
            h2 id="attempts-h" { "Attempts" }
            (scroll(html! { table {
                thead { tr { th scope="col" { "attempt" } th scope="col" { "worker" } th scope="col" { "started" } th.num scope="col" { "ran for" } th scope="col" { "ended" } th scope="col" { "reason" } } }
                tbody { @for a in attempts { tr {
                    td { a href={"/jobs/" (job.id) "?attempt=" (a.attempt)} { (a.attempt) } }
                    td { a href={"/workers/" (query_escape(&a.worker))} { (a.worker) } }
                    td { (when(Some(&a.started_at))) }
                    td.num { @if let (Some(s), Some(f)) = (parse_rfc3339(&a.started_at), a.finished_at.as_deref().and_then(parse_rfc3339)) { (dur(f - s)) }
                             @else if a.state.is_none() { @if let Some(s) = parse_rfc3339(&a.started_at) { span data-since=(s) { (dur(now_ms() - s)) } } } }
                    td { (state_badge(a.state.map_or("running", |s| s.as_str()))) }
                    td { (a.reason.as_deref().unwrap_or("")) }
                } } }
            } }))
        }
    }
}

/// A job's artifacts: sizes, download links, images as thumbnails, and
/// which are still arriving.
fn artifacts_section(id: i64, artifacts: &[crate::wire::Artifact]) -> Markup {
    use crate::wire::{artifact_media_type, ArtifactState};
    let href = |a: &crate::wire::Artifact| {
        format!(
            "/api/v1/jobs/{id}/artifacts/{}?attempt={}",
            a.path
                .split('/')
                .map(query_escape)
                .collect::<Vec<_>>()
                .join("/"),
            a.attempt
        )
    };
    html! {
        section id="artifacts" aria-labelledby="artifacts-h" {
            h2 id="artifacts-h" { "Artifacts" }
            (scroll(html! { table {
                thead { tr { th scope="col" { "path" } th.num scope="col" { "size" } th scope="col" { "state" } } }
                tbody { @for a in artifacts { tr {
                    td { @if a.state == ArtifactState::Complete { a href=(href(a)) { (a.path) } } @else { (a.path) } }
                    td.num { (a.size) }
                    td { @match a.state {
                        ArtifactState::Complete => "complete",
                        ArtifactState::Uploading => { "arriving: " (a.received) " of " (a.size) " bytes" },
                        ArtifactState::Skipped => { "skipped: " (a.note.as_deref().unwrap_or("")) },
                    } }
                } } }
            } }))
            p { @for a in artifacts { @if a.state == ArtifactState::Complete && artifact_media_type(&a.path).1 {
                a href=(href(a)) { img src=(href(a)) alt=(a.path) loading="lazy" style="max-width:160px;max-height:120px;margin:.3em"; }
            } } }
        }
    }
}

/// The log viewer: numbered lines with `#L` links, colours, the tail of
/// a long log first, and (while the attempt runs) what to follow from.
fn log_view(job: &Job, log: &LogSlice, full: bool) -> Markup {
    let text = String::from_utf8_lossy(&log.data);
    let live = log.live && !job.state.is_final();
    // While the attempt runs, a last line without its newline is left for
    // the follower, which reads on from its start.
    let (done, partial) = match text.rfind('\n') {
        Some(i) if live => (&text[..i + 1], text.len() - i - 1),
        None if live => ("", text.len()),
        _ => (&text[..], 0),
    };
    let mut lines: Vec<&str> = done.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let total = lines.len();
    let first = if full || total <= TAIL_LINES {
        0
    } else {
        total - TAIL_LINES
    };
    let mut pen = ansi::Pen::default();
    let mut html_out = String::with_capacity(done.len() + lines.len() * 40);
    for (i, line) in lines.iter().enumerate() {
        let rendered = ansi::line_html(line, &mut pen);
        if i < first {
            continue;
        }
        let n = i + 1;
        html_out.push_str(&format!(
            "<div id=\"L{n}\"><a href=\"#L{n}\"></a>{rendered}\n</div>"
        ));
    }
    let attempt_q = format!("attempt={}", log.attempt);
    let all = format!("/jobs/{}?{attempt_q}&full=1", job.id);
    let follow = live.then(|| {
        format!(
            "{},{},{}",
            job.id,
            log.attempt,
            log.end.saturating_sub(partial as u64)
        )
    });
    html! {
        section id="log-section" aria-labelledby="log-h" {
            h2 id="log-h" { "Log" @if job.attempt > 1 || log.attempt != job.attempt { " (attempt " (log.attempt) ")" } }
            div.toolbar {
                a href={"/api/v1/jobs/" (job.id) "/log?" (attempt_q)} { "Raw log" }
                span.muted { (total) " line" (if total == 1 { "" } else { "s" }) ", " (log.size) " bytes" }
                label { input type="checkbox" id="wrap"; " wrap lines" }
                label hidden { input type="checkbox" id="follow" checked; " follow" }
                @if first > 0 { a href=(all) { "Show all " (total) " lines" } }
            }
            @if first > 0 { p.muted { "The first " (first) " lines are not shown. " a href=(all) { "Show all " (total) " lines" } } }
            div.log id="log" style={"--first:" (first)} data-follow=[follow] data-lines=(total) data-all=[(first > 0).then_some(&all)] {
                (raw(html_out))
            }
            @if total == 0 && partial == 0 { p.muted id="log-empty" { @if live { "No output yet." } @else { "The job printed nothing." } } }
        }
    }
}
