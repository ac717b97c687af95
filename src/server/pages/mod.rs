//! Server-rendered HTML pages, and `/metrics`.
//!
//! Pages are rendered with maud templates, which escape every value they
//! are given, and read well without JavaScript: forms are plain HTML
//! forms, lists page with links. With JavaScript (`static/testbot.js`),
//! times stay current and live pages (`data-live`) update their parts in
//! place through one server-sent-events stream, `/events`.
//!
//! - `jobs`: the home page, `/jobs` and a job's page with its log viewer
//!   (`ansi` renders colours);
//! - `builds`: `/builds` and a build's page;
//! - `workers`: `/workers` and a worker's page;
//! - `actions`: cancel, rerun, drain; signing in with a client token (kept
//!   in an HttpOnly cookie) and the CSRF token every form carries;
//! - here: the layout, the shared pieces, static files, the favicon, the
//!   event stream and HTML error pages for browsers.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::AppState;
use crate::time::{now_ms, parse_rfc3339};
use crate::wire::*;

mod actions;
pub mod ansi;
mod builds;
mod jobs;
mod workers;

/// The cookie that holds a signed-in browser's token.
pub const TOKEN_COOKIE: &str = "testbot_token";
/// The cookie that holds the browser's CSRF token, which every form
/// repeats.
pub const CSRF_COOKIE: &str = "testbot_csrf";

pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(jobs::home))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::page))
        .route("/workers", get(workers::list))
        .route("/workers/{name}", get(workers::page))
        .route("/builds", get(builds::list))
        .route("/builds/{id}", get(builds::page))
        .route("/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/jobs/{id}/rerun", post(actions::rerun_job))
        .route("/builds/{id}/cancel", post(actions::cancel_build))
        .route("/builds/{id}/rerun", post(actions::rerun_build))
        .route("/workers/{name}/drain", post(actions::drain))
        .route("/workers/{name}/undrain", post(actions::undrain))
        .route("/login", get(actions::login_page).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/static/testbot.css", get(css))
        .route("/static/testbot.js", get(js))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        // Only the pages' own requests pay for these: a browser gets its
        // errors (and a panic) as pages, and pages are gzipped.
        .layer(axum::middleware::from_fn(html_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::page_panic_response,
        ))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true));
    pages
        .route("/events", get(events))
        .route("/metrics", get(metrics))
}

/// Paths anyone may load, even on a `--private` server: the sign-in page
/// and what it is made of.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/static/testbot.css" | "/static/testbot.js" | "/favicon.svg" | "/favicon.ico"
    )
}

/// A browser asking for a page (not an API client, not a script).
pub fn wants_page(req: &Request) -> bool {
    is_browser(req.uri().path(), req.headers())
}

pub fn is_browser(path: &str, headers: &HeaderMap) -> bool {
    !path.starts_with("/api/") && path != "/metrics" && path != "/events" && accepts_html(headers)
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Where a browser goes when a page needs a token it has not given.
pub fn to_sign_in(uri: &Uri) -> Response {
    let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Redirect::to(&format!("/login?next={}", query_escape(next))).into_response()
}

/// A cookie's value from a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

pub(crate) fn query_escape(s: &str) -> String {
    crate::cmd::test_queue::query_escape(s)
}

/// Who is looking: the browser's CSRF token (made now if it has none),
/// and whether it may change things.
pub struct Viewer {
    pub csrf: String,
    /// The CSRF cookie to set, for a browser that had none.
    new_csrf: bool,
    /// Whether this server has tokens at all.
    pub tokens: bool,
    /// Whether the browser holds a client token (or none is needed).
    pub may_act: bool,
    /// Whether the browser is signed in with a token.
    pub signed_in: bool,
    https: bool,
}

impl Viewer {
    pub fn of(st: &AppState, headers: &HeaderMap) -> Viewer {
        let (csrf, new_csrf) = match cookie(headers, CSRF_COOKIE)
            .filter(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Some(c) => (c, false),
            // Without randomness no form is accepted (the check wants 32
            // hex digits); the page still reads.
            None => (super::job_token::random_hex(16).unwrap_or_default(), true),
        };
        let token = cookie(headers, TOKEN_COOKIE);
        let caller = st.auth.caller(token.as_deref());
        use super::auth::Caller;
        Viewer {
            csrf,
            new_csrf,
            tokens: st.auth.enabled(),
            may_act: matches!(caller, Caller::Open | Caller::Client),
            signed_in: token.is_some() && !matches!(caller, Caller::Anonymous | Caller::Open),
            https: st.https,
        }
    }

    fn cookie_attrs(&self) -> &'static str {
        if self.https {
            "; Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Strict"
        }
    }

    /// Adds the cookies this viewer needs to a response.
    pub fn finish(&self, mut resp: Response) -> Response {
        if self.new_csrf {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{CSRF_COOKIE}={}{}",
                self.csrf,
                self.cookie_attrs()
            )) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// A form that changes something: posts to `action` with the CSRF
    /// token; the button says `label`.
    pub fn button(&self, action: &str, label: &str, danger: bool) -> Markup {
        html! {
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(self.csrf);
                button type="submit" class=[danger.then_some("danger")] { (label) }
            }
        }
    }
}

/// What a page shows of itself besides its body.
pub struct Page<'a> {
    pub title: String,
    /// The state the favicon shows, and `data-state` on the body.
    pub state: Option<&'a str>,
    /// Updates itself through `/events`.
    pub live: bool,
    pub viewer: &'a Viewer,
}

impl Page<'_> {
    pub fn render(self, body: Markup) -> Response {
        let title = if self.title == "testbot" {
            "testbot".to_string()
        } else {
            format!("{} · testbot", self.title)
        };
        let icon = format!("/favicon.svg?state={}", self.state.unwrap_or(""));
        let v = self.viewer;
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="color-scheme" content="light dark";
                    title { (title) }
                    link rel="icon" type="image/svg+xml" href=(icon);
                    link rel="stylesheet" href="/static/testbot.css";
                    @if self.live {
                        noscript { meta http-equiv="refresh" content="5"; }
                    }
                    script src="/static/testbot.js" defer {}
                }
                body data-state=[self.state] data-live[self.live] {
                    a.skip href="#main" { "Skip to content" }
                    header {
                        a.brand href="/" { "testbot" }
                        nav aria-label="main" {
                            a href="/jobs" { "Jobs" }
                            a href="/builds" { "Builds" }
                            a href="/workers" { "Workers" }
                        }
                        @if v.tokens {
                            @if v.signed_in {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            } @else {
                                a href="/login" { "Sign in" }
                            }
                        }
                    }
                    main id="main" {
                        h1 { (self.title) }
                        (body)
                    }
                }
            }
        };
        let mut resp = (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        v.finish(resp)
    }
}

/// A query value as typed in a filter form: trimmed, `None` when empty.
/// Bad values are 400s (`ApiError`), which `html_errors` shows a browser
/// as a page.
pub fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A state named in a query, of the closed set `all`.
pub fn state_param<T: Copy + std::fmt::Display>(
    v: &Option<String>,
    all: &[T],
) -> super::error::ApiResult<Option<T>> {
    let Some(s) = given(v) else {
        return Ok(None);
    };
    match all.iter().find(|x| x.to_string() == s) {
        Some(x) => Ok(Some(*x)),
        None => Err(super::error::ApiError::bad(format!(
            "state: unknown state {s:?}; states are {}",
            all.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A positive whole number in a query (`#12` reads as 12).
pub fn id_param(field: &str, v: &Option<String>) -> super::error::ApiResult<Option<i64>> {
    let Some(s) = given(v) else {
        return Ok(None);
    };
    match s.trim_start_matches('#').parse::<i64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(super::error::ApiError::bad(format!(
            "{field}: expected a positive whole number, got {s:?}"
        ))),
    }
}

/// A free-text filter in a query (see `checks::check_filter`).
pub fn text_param(field: &str, v: &Option<String>) -> super::error::ApiResult<Option<String>> {
    if let Some(raw) = v {
        super::checks::check_filter(field, raw)?;
    }
    Ok(given(v).map(str::to_string))
}

/// A build meta or worker info value as text: strings without quotes.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A time: "3m ago" (kept current in the browser), the UTC time on
/// hover (the browser's local time with JavaScript).
pub fn when(ts: Option<&str>) -> Markup {
    let Some(ts) = ts.filter(|t| !t.is_empty()) else {
        return html! {};
    };
    let rel = parse_rfc3339(ts)
        .map(|t| ago(now_ms() - t))
        .unwrap_or_else(|| ts.to_string());
    html! { time datetime=(ts) title=(ts) data-rel { (rel) } }
}

/// How long ago `ms` milliseconds were; a negative span is to come ("in
/// 41s": a quarantine's end).
fn ago(ms: i64) -> String {
    let s = (ms / 1000).unsigned_abs();
    let span = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86400),
    };
    if ms < -999 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A duration as people read it: 340 ms, 4.2 s, 3m 07s, 2h 05m, 3d 4h.
pub fn dur(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..=9 => format!("{:.1} s", ms as f64 / 1000.0),
        10..=59 => format!("{s} s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn ms_of(ts: Option<&str>) -> Option<i64> {
    ts.and_then(parse_rfc3339)
}

/// How long a job waited in the queue: to its start, or until now.
pub fn queued_for(j: &Job) -> Markup {
    let Some(created) = ms_of(Some(&j.created_at)) else {
        return html! {};
    };
    match (ms_of(j.started_at.as_deref()), j.state) {
        // Queued, perhaps again after a lost attempt (whose start is
        // still `started_at`): waiting since it was submitted.
        (_, JobState::Queued) => {
            html! { span data-since=(created) { (dur(now_ms() - created)) } }
        }
        (Some(started), _) => html! { (dur(started - created)) },
        // Ended without starting (canceled in the queue).
        (None, _) => match ms_of(j.finished_at.as_deref()) {
            Some(f) => html! { (dur(f - created)) },
            None => html! {},
        },
    }
}

/// How long a job ran: to its end, or ticking while it runs.
pub fn ran_for(j: &Job) -> Markup {
    // A queued job is not running, whatever an attempt it lost began.
    let Some(started) = ms_of(j.started_at.as_deref()).filter(|_| j.state != JobState::Queued)
    else {
        return html! {};
    };
    match ms_of(j.finished_at.as_deref()) {
        Some(f) if j.state.is_final() => html! { (dur(f - started)) },
        _ => html! { span data-since=(started) { (dur(now_ms() - started)) } },
    }
}

pub fn state_badge(state: &str) -> Markup {
    let mark = match state {
        "passed" => "✓ ",
        "failed" | "error" | "timed_out" | "lost" => "✗ ",
        "running" | "busy" => "● ",
        "queued" => "○ ",
        _ => "",
    };
    html! { span class={"st " (state)} { (mark) (state.replace('_', " ")) } }
}

/// One requirement or property as written on the command line: `os=linux`,
/// `python.version>=3.13` (not `=>=`).
pub fn prop(k: &str, v: &str) -> String {
    match crate::matching::parse_condition(v) {
        Ok(c) => format!("{k}{}", c.describe()),
        Err(_) => format!("{k}={v}"),
    }
}

pub fn labels<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>, cond: bool) -> Markup {
    html! {
        ul.labels {
            @for (k, v) in items {
                li.label { (if cond { prop(k, v) } else { format!("{k}={v}") }) }
            }
        }
    }
}

/// A job's link with its jobtype and params in brief.
pub fn job_title(j: &Job) -> String {
    // A long param is cut in titles and headings (the job page's facts
    // hold it whole): a 5 KB value filled screens before the facts.
    const SHOWN: usize = 60;
    let params: Vec<String> = j
        .params
        .iter()
        .map(|(k, v)| match v.char_indices().nth(SHOWN) {
            Some((at, _)) => format!("{k}={}…", &v[..at]),
            None => format!("{k}={v}"),
        })
        .collect();
    if params.is_empty() {
        j.jobtype.clone()
    } else {
        format!("{} {}", j.jobtype, params.join(" "))
    }
}

/// A table that scrolls sideways inside itself on a narrow screen.
pub fn scroll(inner: Markup) -> Markup {
    html! { div.scroll { (inner) } }
}

/// The jobs table of every list: state, job, worker, queued for, ran for,
/// created.
pub fn jobs_table(jobs: &[Job], show_build: bool) -> Markup {
    scroll(html! {
        table {
            thead { tr {
                th scope="col" { "job" } th scope="col" { "state" } th scope="col" { "worker" }
                th.num scope="col" { "queued for" } th.num scope="col" { "duration" }
                @if show_build { th.hide-narrow scope="col" { "build" } }
                th.hide-narrow scope="col" { "created" }
            } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={"/jobs/" (j.id)} { "#" (j.id) } " " (job_title(j))
                             @if let Some(i) = j.shard_index { " " span.muted { "shard " (i + 1) "/" (j.shard_total.unwrap_or(0)) } } }
                        td { (state_badge(j.state.as_str())) @if j.flaky { " " span.flaky { "flaky" } } }
                        td { @if let Some(w) = &j.worker { a href={"/workers/" (query_escape(w))} { (w) } } }
                        td.num { (queued_for(j)) }
                        td.num { (ran_for(j)) }
                        @if show_build { td.hide-narrow { @if let Some(b) = j.build { a href={"/builds/" (b)} { "#" (b) } } } }
                        td.hide-narrow { (when(Some(&j.created_at))) }
                    }
                }
            }
        }
    })
}

async fn css() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("static/testbot.css"),
    )
}

async fn js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("static/testbot.js"),
    )
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct IconQuery {
    state: Option<String>,
}

/// A round icon in the colour of a page's job or build state.
async fn favicon(axum::extract::Query(q): axum::extract::Query<IconQuery>) -> Response {
    let (fill, ring) = match q.state.as_deref().unwrap_or("") {
        "passed" => ("#1a7f37", false),
        "failed" | "error" | "timed_out" => ("#c62828", false),
        "running" => ("#0b57d0", true),
        "queued" => ("#8c959f", true),
        "canceled" => ("#8c959f", false),
        _ => ("#0b57d0", false),
    };
    let svg = if ring {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"6\" fill=\"none\" stroke=\"{fill}\" stroke-width=\"3\"/><circle cx=\"8\" cy=\"8\" r=\"2.5\" fill=\"{fill}\"/></svg>"
        )
    } else {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"7\" fill=\"{fill}\"/></svg>"
        )
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        svg,
    )
        .into_response()
}

/// One stream of server-sent events for every live page: `change` when
/// a job was submitted, started, ended or went back to the queue, or a
/// worker came or went (at most a few times a second), and a comment now
/// and then to keep the connection open.
async fn events(State(st): State<AppState>) -> Response {
    struct Watch {
        changes: tokio::sync::watch::Receiver<u64>,
        queue: tokio::sync::watch::Receiver<u64>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        first: bool,
        /// An event just went: changes in the next moment join it.
        settle: bool,
    }
    let watch = Watch {
        changes: st.changes.subscribe(),
        queue: st.queue.subscribe(),
        shutdown: st.shutdown.clone(),
        first: true,
        settle: false,
    };
    // The stream lives in the response body: a browser that goes away
    // drops it, and with it the subscriptions.
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        if std::mem::take(&mut w.first) {
            return Some((Ok::<_, std::convert::Infallible>("retry: 3000\n\n"), w));
        }
        if std::mem::take(&mut w.settle) {
            // Several changes in a burst make one event.
            tokio::time::sleep(Duration::from_millis(250)).await;
            w.changes.borrow_and_update();
            w.queue.borrow_and_update();
        }
        let msg = tokio::select! {
            r = w.changes.changed() => { r.ok()?; "event: change\ndata: job\n\n" }
            r = w.queue.changed() => { r.ok()?; "event: change\ndata: queue\n\n" }
            _ = w.shutdown.changed() => return None,
            _ = tokio::time::sleep(Duration::from_secs(20)) => return Some((Ok(": still here\n\n"), w)),
        };
        w.settle = true;
        Some((Ok(msg), w))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn metrics(State(st): State<AppState>) -> super::error::ApiResult<Response> {
    let gauges = st.db(|s| s.gauges(now_ms())).await?;
    let out = st.metrics.render(&gauges);
    Ok(([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], out).into_response())
}

/// Errors for browsers: an HTML page with the message where an API client
/// gets JSON (`{"error": ...}`) with the same status.
pub async fn html_errors(req: Request, next: Next) -> Response {
    let page = wants_page(&req);
    let resp = next.run(req).await;
    if !page || resp.status().as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    error_page(status, &message)
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status.as_u16() {
        404 => "Not found".to_string(),
        401 | 403 => "Not allowed".to_string(),
        s if s >= 500 => "Something went wrong on the server".to_string(),
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · testbot" }
                link rel="icon" type="image/svg+xml" href="/favicon.svg?state=failed";
                link rel="stylesheet" href="/static/testbot.css";
            }
            body {
                header {
                    a.brand href="/" { "testbot" }
                    nav aria-label="main" {
                        a href="/jobs" { "Jobs" } a href="/builds" { "Builds" } a href="/workers" { "Workers" }
                    }
                }
                main id="main" {
                    h1 { (status.as_u16()) " " (title) }
                    p.reason { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// Markup already made safe (the log renderer escapes as it goes).
pub fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_to_come_read_as_such() {
        assert_eq!(ago(41_000), "41s ago");
        assert_eq!(ago(-41_000), "in 41s");
        assert_eq!(ago(-3_700_000), "in 1h 1m");
        assert_eq!(ago(-200), "0s ago");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(dur(340), "340 ms");
        assert_eq!(dur(4_200), "4.2 s");
        assert_eq!(dur(42_000), "42 s");
        assert_eq!(dur(187_000), "3m 07s");
        assert_eq!(dur(7_500_000), "2h 05m");
        assert_eq!(dur(-5), "0 ms");
        assert_eq!(
            dur(i64::MAX),
            format!(
                "{}d {}h",
                i64::MAX / 1000 / 86400,
                i64::MAX / 1000 % 86400 / 3600
            )
        );
    }

    #[test]
    fn conditions_read_as_written() {
        assert_eq!(prop("python.version", ">=3.13"), "python.version>=3.13");
        assert_eq!(prop("os", "linux"), "os=linux");
        assert_eq!(prop("gpu", "!"), "gpu!");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; testbot_csrf=abc; b="),
        );
        assert_eq!(cookie(&h, "testbot_csrf").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(cookie(&h, "c"), None);
    }
}
