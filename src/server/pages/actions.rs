//! What the pages' buttons do: cancel, rerun, drain and undrain, and
//! signing in with a token.
//!
//! Every form carries the browser's CSRF token (a random value it also
//! holds in an HttpOnly, SameSite=Strict cookie); a form whose token does
//! not match its cookie is refused. On a server with client tokens, the
//! browser must have signed in with one: the token is kept in an HttpOnly,
//! SameSite=Strict cookie (Secure on https) and counts, for the API, for
//! reading only.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::*;
use crate::server::checks::check_spec as check_spec_for_rerun;
use crate::server::error::ApiResult;
use crate::server::extract::{Path, Query};

/// A form's fields; a body that is not one is answered with a page.
pub struct PageForm<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for PageForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(PageForm(v)),
            Err(e) => Err(error_page(
                e.status(),
                &format!("the form could not be read: {}", e.body_text()),
            )),
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// A form allowed to change something: its CSRF token is the browser's
/// and the browser may act (see [`allowed`]). Refused forms are answered
/// with a page; the page to go back to is the action's path without its
/// last part (`/jobs/5/cancel` -> `/jobs/5`).
pub struct Act;

impl axum::extract::FromRequest<AppState> for Act {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, st: &AppState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let path = req.uri().path().to_string();
        let back = path.rsplit_once('/').map_or("/", |(b, _)| b).to_string();
        let PageForm(form) = PageForm::<ActionForm>::from_request(req, st).await?;
        allowed(st, &headers, &form, &back).map_err(|r| *r)?;
        Ok(Act)
    }
}

/// Whether a form's CSRF token is the browser's: the cookie this server
/// made (32 hex digits, as `Viewer` makes them) and the same in the form.
fn csrf_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie(headers, CSRF_COOKIE).is_some_and(|c| {
        c.len() == 32
            && c.bytes().all(|b| b.is_ascii_hexdigit())
            && super::super::auth::ct_eq(c.as_bytes(), sent.as_bytes())
    })
}

/// Checks a form: its CSRF token, then that the browser may change
/// things. `back` is the page to return to.
fn allowed(
    st: &AppState,
    headers: &HeaderMap,
    form: &ActionForm,
    back: &str,
) -> Result<(), Box<Response>> {
    if !csrf_ok(headers, &form.csrf) {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match this browser's: reload the page and try again",
        )));
    }
    let viewer = Viewer::of(st, headers);
    if !viewer.may_act {
        return Err(Box::new(sign_in_page(
            StatusCode::FORBIDDEN,
            &viewer,
            back,
            Some("This server needs a client token to change anything: sign in with one, then try again."),
        )));
    }
    Ok(())
}

fn back_to(path: String) -> Response {
    Redirect::to(&path).into_response()
}

pub async fn cancel_job(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    _: Act,
) -> ApiResult<Response> {
    let back = format!("/jobs/{id}");
    let job = st.db(move |s| s.cancel(id, now_ms())).await?;
    tracing::info!(job = id, state = %job.state, "cancel requested from the pages");
    st.cancels.send_modify(|n| *n = n.wrapping_add(1));
    st.job_changed();
    Ok(back_to(back))
}

/// The spec a finished job was submitted with, to run it again (outside
/// any build).
fn spec_of(j: &Job) -> JobSpec {
    JobSpec {
        jobtype: j.jobtype.clone(),
        platform: j.requirements.clone(),
        params: j.params.clone(),
        priority: j.priority,
        timeout: j.timeout,
        max_attempts: Some(j.max_attempts),
        build: None,
        shard_index: None,
        shard_total: None,
        retry_failed: (j.retry_failed > 0).then_some(j.retry_failed),
        extra: Default::default(),
    }
}

pub async fn rerun_job(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    _: Act,
) -> ApiResult<Response> {
    let job = st.db(move |s| s.job(id)).await?;
    if !job.state.is_final() {
        return Ok(error_page(
            StatusCode::CONFLICT,
            &format!("job {id} is {}: only an ended job can run again", job.state),
        ));
    }
    let spec = spec_of(&job);
    check_spec_for_rerun(&spec)?;
    let jobs = st
        .db(move |s| s.submit(None, vec![spec], now_ms(), None))
        .await?
        .jobs;
    st.wake_claims();
    st.job_changed();
    tracing::info!(job = id, new = jobs[0].id, "job run again from the pages");
    Ok(back_to(format!("/jobs/{}", jobs[0].id)))
}

pub async fn cancel_build(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    _: Act,
) -> ApiResult<Response> {
    let back = format!("/builds/{id}");
    let n = st
        .db(move |s| {
            let b = s.build(id)?;
            let now = now_ms();
            let mut n = 0;
            for j in b.jobs.iter().filter(|j| !j.state.is_final()) {
                s.cancel(j.id, now)?;
                n += 1;
            }
            Ok(n)
        })
        .await?;
    tracing::info!(build = id, jobs = n, "build canceled from the pages");
    st.cancels.send_modify(|n| *n = n.wrapping_add(1));
    st.job_changed();
    Ok(back_to(back))
}

pub async fn rerun_build(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    _: Act,
) -> ApiResult<Response> {
    let b = st.db(move |s| s.build(id)).await?;
    let specs: Vec<JobSpec> = b
        .jobs
        .iter()
        .filter(|j| {
            matches!(
                j.state,
                JobState::Failed | JobState::Error | JobState::TimedOut | JobState::Canceled
            )
        })
        .map(spec_of)
        .collect();
    if specs.is_empty() {
        return Ok(error_page(
            StatusCode::CONFLICT,
            &format!("build {id} has no failed, timed out or canceled job to run again"),
        ));
    }
    for s in &specs {
        check_spec_for_rerun(s)?;
    }
    let mut meta = b.meta.clone();
    meta.insert("rerun_of".into(), serde_json::Value::from(id));
    let name = b.name.clone();
    let new = st
        .db(move |s| {
            s.submit(
                Some((name, meta, Default::default())),
                specs,
                now_ms(),
                None,
            )
        })
        .await?
        .build;
    st.wake_claims();
    st.job_changed();
    let new = new.unwrap_or(id);
    tracing::info!(
        build = id,
        new,
        "failed jobs of a build run again from the pages"
    );
    Ok(back_to(format!("/builds/{new}")))
}

async fn set_drained(st: AppState, name: String, drained: bool) -> ApiResult<Response> {
    let back = format!("/workers/{}", query_escape(&name));
    let w = st
        .db(move |s| s.set_drained(&name, drained, now_ms()))
        .await?;
    tracing::info!(worker = %w.name, drained, "worker drained or undrained from the pages");
    st.job_changed();
    Ok(back_to(back))
}

pub async fn drain(
    State(st): State<AppState>,
    Path(name): Path<String>,
    _: Act,
) -> ApiResult<Response> {
    set_drained(st, name, true).await
}

pub async fn undrain(
    State(st): State<AppState>,
    Path(name): Path<String>,
    _: Act,
) -> ApiResult<Response> {
    set_drained(st, name, false).await
}

#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path on this server: never another site. Browsers drop tabs
/// and newlines from a URL (`/<TAB>/evil.example` is `//evil.example`), so
/// a path with any whitespace or control character is refused too.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.to_string()
        }
        _ => "/".into(),
    }
}

fn sign_in_page(status: StatusCode, viewer: &Viewer, next: &str, note: Option<&str>) -> Response {
    let body = html! {
        @if let Some(n) = note { p.reason { (n) } }
        @if !viewer.tokens {
            p { "This server has no tokens: anyone who reaches it may read and act. Nothing to sign in with." }
        } @else {
            p { "Sign in with a client token (from the server's client token file) to cancel, rerun and drain from these pages. "
                "The token is kept in a cookie this browser sends to this server only." }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="next" value=(next);
                p { label { "Token " input type="password" name="token" autocomplete="current-password" required; } }
                p { button type="submit" { "Sign in" } }
            }
        }
    };
    let mut resp = Page {
        title: "Sign in".into(),
        state: None,
        live: false,
        viewer,
    }
    .render(body);
    *resp.status_mut() = status;
    resp
}

pub async fn login_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let viewer = Viewer::of(&st, &headers);
    sign_in_page(StatusCode::OK, &viewer, &local(q.next.as_deref()), None)
}

#[derive(serde::Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let next = local(form.next.as_deref());
    let viewer = Viewer::of(&st, &headers);
    if !csrf_ok(&headers, &form.csrf) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &viewer,
            &next,
            Some("The form's CSRF token does not match this browser's (are cookies blocked?): try again."),
        );
    }
    let token = form.token.trim();
    use super::super::auth::Caller;
    let refused = |why: &str| sign_in_page(StatusCode::UNAUTHORIZED, &viewer, &next, Some(why));
    if token.is_empty() {
        return refused("No token was given.");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
    {
        return refused(
            "That token holds characters a cookie cannot carry (spaces, quotes, ; , or \\).",
        );
    }
    match st.auth.caller(Some(token)) {
        Caller::Anonymous => return refused("That token is not one of this server's tokens."),
        Caller::Worker(_) if !st.auth.private() => {
            return refused("That is a worker token: the pages need a client token.")
        }
        _ => {}
    }
    let mut resp = Redirect::to(&next).into_response();
    let secure = if st.https { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{secure}"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    tracing::info!("a browser signed in on the pages");
    resp
}

pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match this browser's: reload the page and try again",
        );
    }
    let mut resp = Redirect::to("/").into_response();
    let secure = if st.https { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
