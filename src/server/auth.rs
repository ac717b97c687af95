//! Who may do what: worker tokens for the worker protocol, client tokens
//! for submitting and steering, reads open unless `--private`.
//!
//! Tokens come from files, one per line (several, so one can be rotated or
//! revoked), re-read on SIGHUP. They are compared in constant time, never
//! logged, and the server keeps only their SHA-256 for binding a worker
//! name to the token that registered it, so one worker cannot act for
//! another.

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

type Hash = [u8; 32];

#[derive(Default)]
struct Tokens {
    worker: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
}

pub struct Auth {
    worker_file: Option<PathBuf>,
    client_file: Option<PathBuf>,
    /// Reads need a token too.
    private: bool,
    tokens: RwLock<Tokens>,
    /// Worker name -> hash of the token it registered with.
    bound: Mutex<HashMap<String, Hash>>,
}

/// What a request proved about its sender.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// Tokens are off: anyone may do anything.
    Open,
    Worker(Hash),
    Client,
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
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
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
    pub fn new(
        worker_file: Option<PathBuf>,
        client_file: Option<PathBuf>,
        private: bool,
    ) -> anyhow::Result<Auth> {
        let auth = Auth {
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

    fn caller(&self, bearer: Option<&str>) -> Caller {
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

    /// A worker may act only under the name it registered with: the first
    /// token to use a name binds it, until that token is revoked.
    pub fn check_worker(&self, caller: &Caller, name: &str) -> Result<(), String> {
        let Caller::Worker(hash) = caller else {
            return Ok(());
        };
        let mut bound = self.bound.lock().unwrap();
        match bound.get(name) {
            Some(h) if h == hash => Ok(()),
            Some(h) if self.still_valid(h) => Err(format!(
                "worker {name:?} is registered with another worker token; a worker acts only for itself"
            )),
            _ => {
                bound.insert(name.to_string(), *hash);
                Ok(())
            }
        }
    }

    fn still_valid(&self, hash: &Hash) -> bool {
        let t = self.tokens.read().unwrap();
        t.worker
            .iter()
            .any(|tok| <Hash>::from(Sha256::digest(tok)) == *hash)
    }
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

/// The middleware: sorts each request by the route's access class and
/// checks the bearer token for it.
pub async fn layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let caller = st.auth.caller(bearer.as_deref());
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
    let allowed = match (&caller, access) {
        (Caller::Open, _) => true,
        (Caller::Worker(_), Access::Worker) => true,
        (Caller::Client, Access::Client) => true,
        (Caller::Worker(_) | Caller::Client, Access::Read) => true,
        (Caller::Anonymous, Access::Read) => !st.auth.private,
        _ => false,
    };
    if !allowed {
        let need = match access {
            Access::Worker => "a worker token",
            Access::Client => "a client token",
            Access::Read => "a token (the server is --private)",
        };
        let what = match (&caller, bearer.is_some()) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
