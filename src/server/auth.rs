//! Who may do what: worker tokens for the worker protocol, client tokens
//! for submitting and steering, reads open unless `--private`.
//!
//! Tokens come from files, one per line (several, so one can be rotated or
//! revoked), re-read on SIGHUP. They are compared in constant time, never
//! logged. A worker name is bound to the SHA-256 of the token that
//! registered it; the binding lives with the worker in the database (so it
//! survives restarts and is shared by every server on that database), and
//! this module only caches bindings the database confirmed, so names no
//! worker registered never cost memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::api::{Access, ROUTES};
use super::AppState;
use crate::wire::ErrorBody;

pub type Hash = [u8; 32];

#[derive(Default)]
struct Tokens {
    worker: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
}

pub struct Auth {
    worker_file: Option<PathBuf>,
    client_file: Option<PathBuf>,
    /// An open server on loopback answers a browser only when addressed
    /// by a loopback name: see [`host_is_loopback`].
    loopback_names_only: bool,
    /// Reads need a token too.
    private: bool,
    tokens: RwLock<Tokens>,
    /// Worker name -> hash of the token it registered with, as the
    /// database said; only names of registered workers.
    bound: Mutex<HashMap<String, Hash>>,
}

/// What a request proved about its sender.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// Tokens are off: anyone may do anything.
    Open,
    Worker(Hash),
    Client,
    /// A job's own command, with the token of its current attempt (checked
    /// to be current by the store).
    Job {
        job: i64,
        attempt: u32,
    },
    Anonymous,
}

fn read_tokens(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
    let tokens: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect();
    if tokens.is_empty() {
        anyhow::bail!("the token file {} holds no token", path.display());
    }
    Ok(tokens)
}

/// Equal in time independent of where the first difference is.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Whether `token` is one of `set`, looking at every entry.
fn one_of(set: &[Vec<u8>], token: &[u8]) -> bool {
    set.iter().fold(false, |found, t| found | ct_eq(t, token))
}

impl Auth {
    /// `insecure`: an open server was told to listen beyond loopback.
    pub fn new(
        worker_file: Option<PathBuf>,
        client_file: Option<PathBuf>,
        private: bool,
        insecure: bool,
    ) -> anyhow::Result<Auth> {
        let auth = Auth {
            loopback_names_only: worker_file.is_none() && client_file.is_none() && !insecure,
            worker_file,
            client_file,
            private,
            tokens: RwLock::default(),
            bound: Mutex::default(),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Whether any token file is in force.
    pub fn private(&self) -> bool {
        self.private
    }

    pub fn enabled(&self) -> bool {
        self.worker_file.is_some() || self.client_file.is_some()
    }

    /// Re-reads the token files; on error the old tokens stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut t = Tokens::default();
        if let Some(f) = &self.worker_file {
            t.worker = read_tokens(f)?;
        }
        if let Some(f) = &self.client_file {
            t.client = read_tokens(f)?;
        }
        *self.tokens.write().unwrap() = t;
        Ok(())
    }

    /// A worker token for the workers `serve --worker` runs in-process.
    pub fn embedded_worker_token(&self) -> Option<String> {
        let t = self.tokens.read().unwrap();
        t.worker
            .first()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn caller(&self, bearer: Option<&str>) -> Caller {
        if !self.enabled() {
            return Caller::Open;
        }
        let Some(token) = bearer else {
            return Caller::Anonymous;
        };
        let t = self.tokens.read().unwrap();
        if one_of(&t.worker, token.as_bytes()) {
            Caller::Worker(Sha256::digest(token.as_bytes()).into())
        } else if one_of(&t.client, token.as_bytes()) {
            Caller::Client
        } else {
            Caller::Anonymous
        }
    }

    /// Whether the database already confirmed that `name` is bound to
    /// `hash`.
    pub fn is_bound(&self, name: &str, hash: &Hash) -> bool {
        self.bound.lock().unwrap().get(name) == Some(hash)
    }

    /// Notes a binding the database confirmed or registration made.
    pub fn remember(&self, name: &str, hash: Hash) {
        self.bound.lock().unwrap().insert(name.to_string(), hash);
    }

    /// Whether the token with this hash (hex) is no longer a worker token,
    /// so the name bound to it may be taken by another.
    pub fn revoked(&self, hex_hash: &str) -> bool {
        let t = self.tokens.read().unwrap();
        !t.worker
            .iter()
            .any(|tok| hex(&Sha256::digest(tok).into()) == hex_hash)
    }
}

/// A token hash as the database keeps it.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive, as HTTP says.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

/// The middleware: sorts each request by the route's access class and
/// checks the bearer token for it.
pub async fn layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some((status, error)) = cross_site(&st.auth, &req) {
        // A browser asking for a page gets the refusal as a page.
        if super::pages::wants_page(&req) {
            return super::pages::error_page(status, &error);
        }
        return refuse(status, error);
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let access = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| {
            ROUTES.iter().find(|r| {
                r.path == p.as_str()
                    && Method::from_bytes(r.method.as_bytes()).ok().as_ref() == Some(req.method())
            })
        })
        .map(|r| r.access)
        .unwrap_or(Access::Read);
    // A job's calls about itself take its job token, whether or not the
    // server has token files: the token says which attempt is calling.
    if access == Access::Job {
        let Some(token) = bearer.as_deref() else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} {} needs the job's token (TESTBOT_JOB_TOKEN in the job's environment): no token was sent",
                    req.method(),
                    req.uri().path()
                ),
            );
        };
        let Some((job, attempt)) = st.job_tokens.check(token) else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} {} needs the job's token (TESTBOT_JOB_TOKEN in the job's environment): \
                     the token sent is not a job token of this server",
                    req.method(),
                    req.uri().path()
                ),
            );
        };
        req.extensions_mut().insert(Caller::Job { job, attempt });
        return next.run(req).await;
    }
    // Artifacts come from a worker, or from the job itself with its token.
    if access == Access::Upload {
        if let Some((job, attempt)) = bearer.as_deref().and_then(|t| st.job_tokens.check(t)) {
            req.extensions_mut().insert(Caller::Job { job, attempt });
            return next.run(req).await;
        }
    }
    // A browser signed in on the pages sends its token as a cookie
    // (HttpOnly, SameSite=Strict): it counts for reading only, so no page
    // of another site can make a browser change anything through the API.
    // The pages' own forms check a CSRF token besides (pages::actions).
    let from_cookie = if bearer.is_none() && access == Access::Read {
        crate::server::pages::cookie(req.headers(), crate::server::pages::TOKEN_COOKIE)
    } else {
        None
    };
    let caller = st.auth.caller(bearer.as_deref().or(from_cookie.as_deref()));
    // The sign-in page and what every page loads are open to all.
    let public = crate::server::pages::is_public(req.uri().path());
    let allowed = public
        || match (&caller, access) {
            (Caller::Open, _) => true,
            (Caller::Worker(_), Access::Worker | Access::Upload) => true,
            (Caller::Client, Access::Client) => true,
            (Caller::Worker(_) | Caller::Client, Access::Read) => true,
            (Caller::Anonymous, Access::Read) => !st.auth.private,
            _ => false,
        };
    if !allowed && crate::server::pages::wants_page(&req) {
        // A browser on a --private server: the sign-in page, then back.
        return crate::server::pages::to_sign_in(req.uri());
    }
    if !allowed {
        let need = match access {
            Access::Worker => "a worker token",
            Access::Client => "a client token",
            Access::Read => "a token (the server is --private)",
            Access::Job => "a job token",
            Access::Upload => "a worker token or the job's token",
        };
        let what = match (&caller, bearer.is_some()) {
            (Caller::Anonymous, false) if req.headers().contains_key(header::AUTHORIZATION) => {
                "the Authorization header is not `Bearer TOKEN`".to_string()
            }
            (Caller::Anonymous, false) => "no token was sent".to_string(),
            (Caller::Anonymous, true) => "the token is not valid".to_string(),
            (Caller::Worker(_), _) => "a worker token is not a client token".to_string(),
            _ => "a client token is not a worker token".to_string(),
        };
        let status = if matches!(caller, Caller::Anonymous) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        return refuse(
            status,
            format!("{} {} needs {need}: {what}", req.method(), req.uri().path()),
        );
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Requests a web page elsewhere may have made a browser send:
///
/// - to an open server (no tokens, on loopback), from a browser, addressed
///   to any name but a loopback one: a page whose own name was rebound to
///   127.0.0.1 (DNS rebinding) would otherwise read and drive it as its
///   own origin;
/// - to any server, a change (any method but GET and HEAD) from a page of
///   another origin (`Origin` names another host than `Host`): a form
///   posting `text/plain` needs no preflight.
///
/// Clients other than browsers send no `Origin`, and a `Host` of the
/// address they were given.
fn cross_site(auth: &Auth, req: &Request) -> Option<(StatusCode, String)> {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    // Browsers (every one says `Mozilla/`) are what a page can drive;
    // scripts and tools are let be, whatever Host they write.
    let browser = headers
        .get(header::USER_AGENT)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.starts_with("Mozilla/"));
    if browser && auth.loopback_names_only {
        if let Some(host) = host.filter(|h| !host_is_loopback(h)) {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "this server has no token files, so it answers only requests addressed to \
                     it by a loopback name (127.0.0.1, localhost, [::1]), not to {host:?}; \
                     give it --worker-tokens and --client-tokens to serve other names (or \
                     --insecure if the network is yours alone)"
                ),
            ));
        }
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let (true, Some(origin)) = (changes, headers.get(header::ORIGIN)) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
        if !same {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} from a page of another site ({origin:?}) is refused",
                    req.method(),
                    req.uri().path()
                ),
            ));
        }
    }
    None
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// an address of 127.0.0.0/8 or `[::1]`, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "[::1]",
            "127.9.9.9:5",
        ] {
            assert!(host_is_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "10.0.0.1:80",
            "[::2]:80",
            "localhost.evil:1",
            "",
        ] {
            assert!(!host_is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
        assert!(one_of(&[b"a".to_vec(), b"b".to_vec()], b"b"));
        assert!(!one_of(&[b"a".to_vec()], b"c"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
