//! The blocking HTTP client the worker and the CLI share.
//!
//! It turns every way a request can fail into a [`ClientError`] that says
//! whether the server was unreachable or failing (exit 3) or refused the
//! input (exit 2), with the server's own message.

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::ErrorBody;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug)]
pub enum ClientError {
    /// No answer at all: connection refused, DNS, timeout.
    Unreachable { url: String, detail: String },
    /// The server answered 4xx: the input was refused.
    Refused {
        status: u16,
        url: String,
        message: String,
    },
    /// The server answered 5xx or something that was not its protocol.
    Failing {
        status: u16,
        url: String,
        message: String,
    },
}

impl ClientError {
    /// Any refusal (4xx): the server answered, and said no.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }

    /// A refusal that will not pass by waiting (see [`Self::may_pass`]).
    pub fn is_lasting_refusal(&self) -> bool {
        !self.may_pass()
    }

    /// A refusal that may pass: a token being rotated (401, 403), a
    /// timeout (408), too many requests (429). What the worker must not
    /// lose (results, logs) is sent again after these, as after a failure
    /// of the server; anything else the server refused will stay refused.
    pub fn may_pass(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => matches!(status, 401 | 403 | 408 | 429),
            _ => true,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unreachable { .. } => None,
            ClientError::Refused { status, .. } | ClientError::Failing { status, .. } => {
                Some(*status)
            }
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { url, detail } => {
                write!(f, "cannot reach the testbot server ({url}): {detail}")
            }
            ClientError::Refused {
                status,
                url,
                message,
            } => write!(
                f,
                "the server refused the request ({status}, {url}): {message}"
            ),
            ClientError::Failing {
                status,
                url,
                message,
            } => write!(f, "the server failed ({status}, {url}): {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A server URL as users write it: `HOST:PORT` means `http://HOST:PORT`;
/// anything that is still not an http(s) URL with a host is refused,
/// naming the value.
pub fn server_url(given: &str) -> std::result::Result<String, String> {
    let t = given.trim().trim_end_matches('/');
    let url = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let bad = |why: &str| {
        Err(format!(
            "invalid server URL {given:?}: {why}; write it like http://ci.example.org:8080 or 127.0.0.1:8080"
        ))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("no scheme");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || url.chars().any(char::is_whitespace) {
        return bad("no host");
    }
    // The port, after the last ':' outside an IPv6 literal's brackets.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    if let Some((host, port)) = authority[host_end..].rsplit_once(':') {
        if authority[..host_end].is_empty() && host.is_empty() {
            return bad("no host");
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(url)
}

/// The longest one read or write on a connection may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one testbot server.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A response body that may be absent (204).
pub enum Maybe<T> {
    Some(T),
    NoContent,
}

impl Client {
    /// A client trusting the system's certificate roots for `https://`.
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client::build(server, token, None)
    }

    /// A client trusting only the CA certificates in `ca_file` (PEM).
    pub fn with_ca_file(
        server: &str,
        token: Option<String>,
        ca_file: &std::path::Path,
    ) -> anyhow::Result<Client> {
        let tls = crate::tls::client_config(ca_file)?;
        Ok(Client::build(server, token, Some(tls)))
    }

    fn build(
        server: &str,
        token: Option<String>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Client {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(READ_TIMEOUT)
            .timeout_write(READ_TIMEOUT)
            // A worker's slots, heartbeat and log uploads share this agent:
            // keep a connection for each of them rather than ureq's default
            // of one, which closed and reopened one for nearly every job.
            .max_idle_connections_per_host(64);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls);
        }
        Client {
            base: server_url(server).unwrap_or_else(|_| server.trim_end_matches('/').to_string()),
            token,
            agent: builder.build(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self.agent.request(method, &self.url(path));
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        req
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let resp = self.request("GET", path).call();
        decode(&url, resp)
    }

    /// GET whose body the caller reads itself (logs, possibly followed).
    pub fn get_raw(&self, path: &str, timeout: Duration) -> Result<ureq::Response> {
        let url = self.url(path);
        self.request("GET", path)
            .timeout(timeout)
            .call()
            .map_err(|e| classify(&url, e))
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        match self.post_maybe(path, body, Duration::from_secs(60))? {
            Maybe::Some(t) => Ok(t),
            Maybe::NoContent => Err(ClientError::Failing {
                status: 204,
                url: self.url(path),
                message: "the server sent no body".into(),
            }),
        }
    }

    /// POST that may legitimately answer 204 (a claim that got no job).
    pub fn post_maybe<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Maybe<T>> {
        self.post_maybe_header(path, body, timeout, "")
            .map(|(m, _)| m)
    }

    /// [`Client::post_maybe`], also returning the value of one header of
    /// the answer.
    pub fn post_maybe_header<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
        header: &str,
    ) -> Result<(Maybe<T>, Option<String>)> {
        let url = self.url(path);
        let mut req = self.request("POST", path);
        // A deadline for the whole request makes ureq set both socket
        // timeouts before every read (two system calls each); the agent's
        // per-read timeout bounds claims and heartbeats well enough, which
        // the server answers within a minute.
        if timeout > READ_TIMEOUT {
            req = req.timeout(timeout);
        }
        let resp = req.send_json(body);
        let value = resp
            .as_ref()
            .ok()
            .and_then(|r| r.header(header))
            .map(str::to_string);
        match resp {
            Ok(r) if r.status() == 204 => {
                // Read the (empty) body so the connection goes back to the
                // pool.
                let _ = std::io::copy(&mut r.into_reader(), &mut std::io::sink());
                Ok((Maybe::NoContent, value))
            }
            other => decode(&url, other).map(|t| (Maybe::Some(t), value)),
        }
    }

    pub fn post_bytes<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<T> {
        let url = self.url(path);
        let resp = self
            .request("POST", path)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes);
        decode(&url, resp)
    }
}

fn decode<T: DeserializeOwned>(
    url: &str,
    resp: std::result::Result<ureq::Response, ureq::Error>,
) -> Result<T> {
    let resp = resp.map_err(|e| classify(url, e))?;
    let status = resp.status();
    let mut body = String::new();
    resp.into_reader()
        .take(256 << 20)
        .read_to_string(&mut body)
        .map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            detail: format!("reading the answer: {e}"),
        })?;
    serde_json::from_str(&body).map_err(|e| ClientError::Failing {
        status,
        url: url.to_string(),
        message: format!("unexpected answer ({e}): {}", snippet(&body)),
    })
}

fn classify(url: &str, err: ureq::Error) -> ClientError {
    match err {
        ureq::Error::Status(status, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| snippet(&body));
            if (400..500).contains(&status) {
                ClientError::Refused {
                    status,
                    url: url.to_string(),
                    message,
                }
            } else {
                ClientError::Failing {
                    status,
                    url: url.to_string(),
                    message,
                }
            }
        }
        // Said once, without the URL again (the message names it).
        ureq::Error::Transport(t) => {
            let mut detail = t.kind().to_string();
            if let Some(m) = t.message() {
                detail.push_str(": ");
                detail.push_str(m);
            }
            if let Some(source) = std::error::Error::source(&t) {
                detail.push_str(": ");
                detail.push_str(&source.to_string());
            }
            ClientError::Unreachable {
                url: url.to_string(),
                detail,
            }
        }
    }
}

fn snippet(body: &str) -> String {
    let t = body.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    t.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::server_url;

    #[test]
    fn server_urls_as_users_write_them() {
        assert_eq!(
            server_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            server_url("https://ci.example.org/").unwrap(),
            "https://ci.example.org"
        );
        assert_eq!(server_url("ci:80").unwrap(), "http://ci:80");
        assert_eq!(server_url("[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in ["", "http://", "ftp://x", "h:0", "h:port", "a b:1", ":8080"] {
            let e = server_url(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
