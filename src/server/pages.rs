//! Server-rendered HTML pages and `/metrics`.
//!
//! Pages read well without JavaScript; a running job's page reloads itself
//! every few seconds. Everything users or workers sent passes through
//! [`esc`] before it reaches a page.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiResult;
use super::extract::{Path, Query};
use super::store::BuildTestsQuery;
use super::store::JobFilter;
use super::AppState;
use crate::time::now_ms;
use crate::wire::*;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        .route("/workers", get(workers_page))
        .route("/workers/{name}", get(worker_page))
        .route("/builds", get(builds_page))
        .route("/builds/{id}", get(build_page))
        .route("/metrics", get(metrics))
}

/// HTML-escapes text from users or workers.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}\
.passed{color:#1a7f37}.failed,.error,.timed_out{color:#c62828;font-weight:bold}.running{color:#1565c0}\
.canceled,.offline{color:#777}.flaky{color:#b26a00}pre{background:#f6f8fa;padding:.8em;overflow:auto;max-height:70vh}\
nav a{margin-right:1em}";

fn page(title: &str, refresh: bool, body: &str) -> Html<String> {
    // Pages of live things reload themselves without JavaScript too.
    let meta = if refresh {
        "<noscript><meta http-equiv=\"refresh\" content=\"3\"></noscript>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>{meta}\
         <style>{STYLE}</style></head><body><nav><a href=\"/\">testbot</a><a href=\"/workers\">workers</a>\
         <a href=\"/builds\">builds</a></nav><h1>{}</h1>{body}</body></html>",
        if title == "testbot" {
            "testbot".to_string()
        } else {
            format!("{} - testbot", esc(title))
        },
        esc(title)
    ))
}

/// A time both ways: "3m ago" and the absolute UTC time on hover and
/// beside it.
fn when(ts: &str) -> String {
    if ts.is_empty() {
        return String::new();
    }
    let rel = crate::time::parse_rfc3339(ts)
        .map(|t| {
            let secs = ((now_ms() - t) / 1000).max(0);
            match secs {
                0..=59 => format!("{secs}s ago"),
                60..=3599 => format!("{}m ago", secs / 60),
                3600..=86399 => format!("{}h {}m ago", secs / 3600, secs % 3600 / 60),
                _ => format!("{}d ago", secs / 86400),
            }
        })
        .unwrap_or_default();
    format!(
        "<time datetime=\"{0}\" title=\"{0}\">{1}</time> <small>({0})</small>",
        esc(ts),
        rel
    )
}

fn state_span(state: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", esc(state))
}

fn jobs_table(jobs: &[Job]) -> String {
    let mut t = String::from(
        "<table><tr><th>job</th><th>jobtype</th><th>state</th><th>worker</th><th>created</th></tr>",
    );
    for j in jobs {
        let _ = write!(
            t,
            "<tr><td><a href=\"/jobs/{0}\">#{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
            j.id,
            esc(&j.jobtype),
            if j.flaky {
                format!("{} <span class=\"flaky\">flaky</span>", state_span(j.state.as_str()))
            } else {
                state_span(j.state.as_str())
            },
            j.worker
                .as_deref()
                .map(|w| format!("<a href=\"/workers/{0}\">{0}</a>", esc(w)))
                .unwrap_or_default(),
            when(&j.created_at)
        );
    }
    t.push_str("</table>");
    t
}

fn props(p: &Props) -> String {
    p.iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn workers_table(workers: &[Worker]) -> String {
    let mut t = String::from(
        "<table><tr><th>worker</th><th>status</th><th>jobtypes</th><th>platform</th><th>jobs</th><th>last seen</th></tr>",
    );
    for w in workers {
        let jobs: Vec<String> = w
            .jobs
            .iter()
            .map(|j| format!("<a href=\"/jobs/{0}\">#{0}</a>", j.id))
            .collect();
        let _ = write!(
            t,
            "<tr><td><a href=\"/workers/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
            esc(&w.name),
            state_span(w.status.as_str()),
            esc(&w.jobtypes.join(", ")),
            w.platforms.iter().map(props).collect::<Vec<_>>().join("<br>"),
            jobs.join(" "),
            when(&w.last_seen)
        );
    }
    t.push_str("</table>");
    t
}

fn builds_table(builds: &[Build]) -> String {
    let mut t = String::from(
        "<table><tr><th>build</th><th>name</th><th>state</th><th>jobs</th><th>created</th></tr>",
    );
    for b in builds {
        let counts: Vec<String> = b.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = write!(
            t,
            "<tr><td><a href=\"/builds/{0}\">#{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
            b.id,
            esc(&b.name),
            state_span(b.state.as_str()),
            esc(&counts.join(", ")),
            when(&b.created_at)
        );
    }
    t.push_str("</table>");
    t
}

async fn index(State(st): State<AppState>) -> ApiResult<Html<String>> {
    let (summary, workers, jobs) = st
        .db(|s| {
            let now = now_ms();
            let latest = JobFilter {
                limit: 50,
                ..Default::default()
            };
            Ok((s.summary(now)?, s.workers(now)?, s.jobs(&latest)?))
        })
        .await?;
    let mut body = String::from("<h2>Queue</h2><table><tr>");
    for state in summary.jobs.keys() {
        let _ = write!(body, "<th>{}</th>", esc(state));
    }
    body.push_str("</tr><tr>");
    for n in summary.jobs.values() {
        let _ = write!(body, "<td>{n}</td>");
    }
    body.push_str("</tr></table>");
    let _ = write!(
        body,
        "<h2>Workers</h2><p>{} online ({} busy), {} offline</p>{}",
        summary.workers.online,
        summary.workers.busy,
        summary.workers.offline,
        workers_table(&workers)
    );
    let _ = write!(
        body,
        "<h2>Latest builds</h2>{}<h2>Latest jobs</h2>{}",
        builds_table(&summary.builds),
        jobs_table(&jobs)
    );
    Ok(page("testbot", false, &body))
}

#[derive(serde::Deserialize)]
struct JobPageQuery {
    attempt: Option<u32>,
}

/// A job's artifacts: sizes, download links, images as thumbnails, and
/// which are still arriving.
fn artifacts_section(id: i64, artifacts: &[crate::wire::Artifact]) -> String {
    use crate::wire::{artifact_media_type, ArtifactState};
    let mut out = String::from(
        "<h2 id=\"artifacts\">Artifacts</h2><table><tr><th>path</th><th>size</th><th>state</th></tr>",
    );
    let mut thumbs = String::new();
    for a in artifacts {
        let href = format!(
            "/api/v1/jobs/{id}/artifacts/{}?attempt={}",
            a.path
                .split('/')
                .map(crate::cmd::test_queue::query_escape)
                .collect::<Vec<_>>()
                .join("/"),
            a.attempt
        );
        let (name, state) = match a.state {
            ArtifactState::Complete => (
                format!("<a href=\"{}\">{}</a>", esc(&href), esc(&a.path)),
                "complete".to_string(),
            ),
            ArtifactState::Uploading => (
                esc(&a.path),
                format!("arriving: {} of {} bytes", a.received, a.size),
            ),
            ArtifactState::Skipped => (
                esc(&a.path),
                format!("skipped: {}", a.note.as_deref().unwrap_or("")),
            ),
        };
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>",
            a.size,
            esc(&state)
        );
        if a.state == ArtifactState::Complete && artifact_media_type(&a.path).1 {
            let _ = write!(
                thumbs,
                "<a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\" loading=\"lazy\" style=\"max-width:160px;max-height:120px;margin:.3em\"></a>",
                esc(&href),
                esc(&a.path)
            );
        }
    }
    out.push_str("</table>");
    if !thumbs.is_empty() {
        let _ = write!(out, "<p>{thumbs}</p>");
    }
    out
}

async fn job_page(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<JobPageQuery>,
) -> ApiResult<Html<String>> {
    let (job, attempts, log, artifacts) = st
        .db(move |s| {
            Ok((
                s.job(id)?,
                s.attempts(id)?,
                s.read_log(id, q.attempt, 0)?,
                s.artifacts(id, q.attempt)?,
            ))
        })
        .await?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<table><tr><th>state</th><td id=\"state\">{}</td></tr><tr><th>jobtype</th><td>{}</td></tr>\
         <tr><th>attempt</th><td>{} of {}</td></tr><tr><th>worker</th><td>{}</td></tr>\
         <tr><th>requirements</th><td>{}</td></tr><tr><th>platform</th><td>{}</td></tr>\
         <tr><th>params</th><td>{}</td></tr><tr><th>priority</th><td>{}</td></tr>\
         <tr><th>build</th><td>{}</td></tr>\
         <tr><th>created</th><td>{}</td></tr><tr><th>started</th><td>{}</td></tr>\
         <tr><th>finished</th><td>{}</td></tr><tr><th>reason</th><td class=\"{}\">{}</td></tr></table>",
        state_span(job.state.as_str()),
        esc(&job.jobtype),
        job.attempt,
        job.max_attempts,
        job.worker
            .as_deref()
            .map(|w| format!("<a href=\"/workers/{0}\">{0}</a>", esc(w)))
            .unwrap_or_default(),
        props(&job.requirements),
        job.matched_platform.as_ref().map(props).unwrap_or_default(),
        props(&job.params),
        job.priority,
        job.build
            .map(|b| format!("<a href=\"/builds/{b}\">#{b}</a>"))
            .unwrap_or_default(),
        when(&job.created_at),
        when(job.started_at.as_deref().unwrap_or("")),
        when(job.finished_at.as_deref().unwrap_or("")),
        esc(job.state.as_str()),
        esc(job.reason.as_deref().unwrap_or("")),
    );
    if attempts.len() > 1 {
        body.push_str(
            "<h2>Attempts</h2><table><tr><th>attempt</th><th>worker</th><th>started</th><th>ended</th><th>reason</th></tr>",
        );
        for a in &attempts {
            let _ = write!(
                body,
                "<tr><td><a href=\"/jobs/{id}?attempt={0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
                a.attempt,
                esc(&a.worker),
                when(&a.started_at),
                state_span(a.state.map_or("running", |s| s.as_str())),
                esc(a.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>");
    }
    if !artifacts.is_empty() {
        body.push_str(&artifacts_section(id, &artifacts));
    }
    if job.state == JobState::Queued {
        let e = st.db(move |s| s.explain(id, now_ms())).await?;
        let _ = write!(
            body,
            "<h2>Why it is waiting</h2><p id=\"explain\">{}</p>",
            esc(&e.message)
        );
    }
    let failing = job.failed_tests();
    if let Some(t) = job.test_report() {
        let _ = write!(
            body,
            "<h2>Tests</h2><p>{} passed, <span class=\"{}\">{} failed, {} errors</span>, {} skipped</p>",
            t.passed,
            if failing.is_empty() { "" } else { "failed" },
            t.failed,
            t.errors,
            t.skipped
        );
        if !t.retried.is_empty() {
            let _ = write!(
                body,
                "<p>Failed here and queued again for another job: {}</p>",
                esc(&t.retried.join(", "))
            );
        }
    }
    if !failing.is_empty() {
        body.push_str("<table><tr><th>failing test</th><th>message</th></tr>");
        for f in &failing {
            let _ = write!(
                body,
                "<tr><td class=\"failed\">{}</td><td><pre>{}</pre></td></tr>",
                esc(&f.name),
                esc(&f.message)
            );
        }
        body.push_str("</table>");
    }
    if job.flaky {
        let _ = write!(
            body,
            "<p class=\"flaky\">Flaky: passed on rerun {} after failing{}</p>",
            job.reruns,
            if job.flaky_tests.is_empty() {
                String::new()
            } else {
                format!(" (flaky tests: {})", esc(&job.flaky_tests.join(", ")))
            }
        );
    }
    if let Some(result) = &job.result {
        let _ = write!(
            body,
            "<h2>Result</h2><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(result).unwrap_or_default())
        );
    }
    let _ = write!(
        body,
        "<h2>Log (attempt {})</h2><pre id=\"log\">{}</pre>",
        log.attempt,
        esc(&String::from_utf8_lossy(&log.data))
    );
    let live = !job.state.is_final() && log.attempt == job.attempt;
    if live {
        // No polling: a queued job's page holds a wait for it to start
        // (and fetches no log); a running job's page follows its log as
        // one stream, which the server ends when the attempt does. Either
        // way the page then reloads to show the new state. Text goes in
        // with textContent, never as HTML.
        let _ = write!(
            body,
            "<script>(function(){{var id={id},attempt={att},off={off},queued={queued};\
var pre=document.getElementById('log');\
function again(){{setTimeout(function(){{location.reload();}},3000);}}\
function wait(){{fetch('/api/v1/jobs/wait',{{method:'POST',headers:{{'content-type':'application/json'}},\
body:JSON.stringify({{ids:[id],until:'started',wait:30}})}}).then(function(r){{if(!r.ok)throw r;return r.json();}})\
.then(function(js){{if(js.length){{location.reload();}}else{{wait();}}}}).catch(again);}}\
function follow(){{fetch('/api/v1/jobs/'+id+'/log?follow=true&attempt='+attempt+'&offset='+off)\
.then(function(r){{if(!r.ok||!r.body)throw r;var rd=r.body.getReader(),dec=new TextDecoder();\
function more(){{return rd.read().then(function(x){{if(x.done){{location.reload();return;}}\
pre.appendChild(document.createTextNode(dec.decode(x.value,{{stream:true}})));return more();}});}}\
return more();}}).catch(again);}}\
if(queued){{wait();}}else{{follow();}}}})();</script>",
            att = log.attempt,
            off = log.end,
            queued = job.state == crate::wire::JobState::Queued,
        );
    }
    Ok(page(&format!("job #{id}"), live, &body))
}

async fn workers_page(State(st): State<AppState>) -> ApiResult<Html<String>> {
    let workers = st.db(|s| s.workers(now_ms())).await?;
    Ok(page("workers", false, &workers_table(&workers)))
}

async fn worker_page(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Html<String>> {
    let n = name.clone();
    let w = st.db(move |s| s.worker(&n, now_ms())).await?;
    let n = name.clone();
    let recent = st
        .db(move |s| {
            s.jobs(&JobFilter {
                worker: Some(n),
                limit: 50,
                ..Default::default()
            })
        })
        .await?;
    let mut body = workers_table(std::slice::from_ref(&w));
    let _ = write!(
        body,
        "<h2>Info</h2><pre>{}</pre><h2>Running</h2><pre>{}</pre><h2>Recent jobs</h2>{}",
        esc(&serde_json::to_string_pretty(&w.info).unwrap_or_default()),
        esc(&serde_json::to_string_pretty(&w.jobs).unwrap_or_default()),
        jobs_table(&recent)
    );
    Ok(page(&format!("worker {name}"), false, &body))
}

async fn builds_page(State(st): State<AppState>) -> ApiResult<Html<String>> {
    let builds = st
        .db(|s| {
            s.builds(&super::store::BuildFilter {
                limit: 100,
                ..Default::default()
            })
        })
        .await?;
    Ok(page("builds", false, &builds_table(&builds)))
}

async fn build_page(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Html<String>> {
    let b = st.db(move |s| s.build(id)).await?;
    let mut body = builds_table(std::slice::from_ref(&b));
    let _ = write!(
        body,
        "<h2>Metadata</h2><pre>{}</pre><h2>Jobs</h2>{}",
        esc(&serde_json::to_string_pretty(&b.meta).unwrap_or_default()),
        jobs_table(&b.jobs)
    );
    let ids: Vec<i64> = b.jobs.iter().map(|j| j.id).collect();
    let with_artifacts = st
        .db(move |s| {
            let mut out = Vec::new();
            for id in ids {
                let n = s.artifacts(id, None)?.len();
                if n > 0 {
                    out.push((id, n));
                }
            }
            Ok(out)
        })
        .await?;
    if !with_artifacts.is_empty() {
        let links: Vec<String> = with_artifacts
            .iter()
            .map(|(id, n)| {
                format!(
                    "<li><a href=\"/jobs/{id}#artifacts\">#{id}</a>: {n} file{}</li>",
                    if *n == 1 { "" } else { "s" }
                )
            })
            .collect();
        let _ = write!(body, "<h2>Artifacts</h2><ul>{}</ul>", links.concat());
    }
    let failing = BuildTestsQuery {
        outcome: Some("failing".into()),
        limit: 200,
        ..Default::default()
    };
    let tests = st.db(move |s| s.build_tests(id, &failing)).await?;
    let t = &tests.totals;
    if t.total > 0 {
        let _ = write!(
            body,
            "<h2>Tests</h2><p>{} tests: {} passed, {} failed, {} errors, {} skipped; {} flaky{}{}</p>",
            t.total,
            t.passed,
            t.failed,
            t.error,
            t.skipped,
            t.flaky,
            if t.pending > 0 { format!("; {} not run yet", t.pending) } else { String::new() },
            if t.not_run > 0 { format!("; {} never run", t.not_run) } else { String::new() },
        );
    }
    let runs = |x: &crate::wire::BuildTest| -> String {
        x.runs
            .iter()
            .map(|r| {
                format!(
                    "<a href=\"/jobs/{0}\">#{0}</a> {1} <span class=\"{2}\">{2}</span>",
                    r.job,
                    esc(&r.worker),
                    r.outcome
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !tests.tests.is_empty() {
        let _ = write!(
            body,
            "<h2>Failing tests</h2><table><tr><th>test</th><th>message</th><th>runs</th></tr>"
        );
        for x in &tests.tests {
            let _ = write!(
                body,
                "<tr><td class=\"failed\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.id),
                esc(x
                    .message
                    .as_deref()
                    .and_then(|m| m.lines().next())
                    .unwrap_or("")),
                runs(x)
            );
        }
        body.push_str("</table>");
        if tests.count > tests.tests.len() as u64 {
            let _ = write!(
                body,
                "<p>and {} more: <a href=\"/api/v1/builds/{id}/tests?outcome=failing&amp;limit=10000\">all failing tests</a></p>",
                tests.count - tests.tests.len() as u64
            );
        }
    }
    if t.flaky > 0 {
        let flaky = BuildTestsQuery {
            outcome: Some("flaky".into()),
            limit: 200,
            ..Default::default()
        };
        let flaky = st.db(move |s| s.build_tests(id, &flaky)).await?;
        let items: Vec<String> = flaky
            .tests
            .iter()
            .map(|x| format!("<li>{} ({})</li>", esc(&x.id), runs(x)))
            .collect();
        let _ = write!(
            body,
            "<h2>Flaky tests (failed, then passed on a rerun)</h2><ul class=\"flaky\">{}</ul>",
            items.concat()
        );
    }
    Ok(page(
        &format!("build #{id} {}", b.name),
        matches!(b.state, BuildState::Queued | BuildState::Running),
        &body,
    ))
}

async fn metrics(State(st): State<AppState>) -> ApiResult<Response> {
    let gauges = st.db(|s| s.gauges(now_ms())).await?;
    let out = st.metrics.render(&gauges);
    Ok(([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], out).into_response())
}
