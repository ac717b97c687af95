//! The blocking HTTP client the worker and the CLI share.
//!
//! It turns every way a request can fail into a [`ClientError`] that says
//! whether the server was unreachable or failing (exit 3) or refused the
//! input (exit 2), with the server's own message.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::ErrorBody;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug)]
pub enum ClientError {
    /// No answer at all: connection refused, DNS, timeout. `connect` when
    /// the request never left (no connection was made).
    Unreachable {
        url: String,
        detail: String,
        connect: bool,
    },
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
            ClientError::Unreachable { url, detail, .. } => {
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

/// A list of server URLs as users write it: `a,b` or one URL; each as
/// [`server_url`] reads it.
pub fn server_urls(given: &str) -> std::result::Result<Vec<String>, String> {
    let urls: Vec<String> = given
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(server_url)
        .collect::<std::result::Result<_, _>>()?;
    if urls.is_empty() {
        return Err(format!("{given:?} names no server URL"));
    }
    Ok(urls)
}

/// The longest one read or write on a connection may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read into memory (a build of 10,000 jobs is a few MB).
const ANSWER_LIMIT: u64 = 256 << 20;

type Response = ureq::http::Response<ureq::Body>;

/// A connection to a testbot server, or to one of several that share a
/// database: when the one in use does not answer, the next is tried, and
/// the one that answered is kept.
#[derive(Clone)]
pub struct Client {
    bases: Arc<Vec<String>>,
    /// The server in use, an index into `bases`.
    current: Arc<AtomicUsize>,
    /// Whether a POST that may have reached a server that then did not
    /// answer is sent to the next one (the worker's requests are
    /// idempotent; a submit is not).
    resend_posts: bool,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A response body that may be absent (204).
pub enum Maybe<T> {
    Some(T),
    NoContent,
}

/// An answer whose body the caller reads itself (a log, possibly followed;
/// a backup).
pub struct Raw(Response);

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.headers().get(name).and_then(|v| v.to_str().ok())
    }

    pub fn into_reader(self) -> impl Read {
        self.0
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
    }

    pub fn into_string(self) -> std::io::Result<String> {
        let mut text = String::new();
        self.into_reader()
            .take(ANSWER_LIMIT)
            .read_to_string(&mut text)?;
        Ok(text)
    }
}

impl Client {
    /// A client trusting the system's certificate roots for `https://`.
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client::build(server, token, ureq::tls::RootCerts::PlatformVerifier)
    }

    /// A client trusting only the CA certificates in `ca_file` (PEM).
    pub fn with_ca_file(
        server: &str,
        token: Option<String>,
        ca_file: &std::path::Path,
    ) -> anyhow::Result<Client> {
        let certs = crate::tls::ca_certs(ca_file)?
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs));
        Ok(Client::build(server, token, roots))
    }

    fn build(server: &str, token: Option<String>, roots: ureq::tls::RootCerts) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            // Every answer is read here, whatever its status: a refusal's
            // body says why.
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(READ_TIMEOUT))
            .timeout_per_write(Some(READ_TIMEOUT))
            .user_agent(concat!("testbot/", env!("CARGO_PKG_VERSION")))
            // A worker's slots, heartbeat and log uploads share this agent:
            // keep a connection for each of them rather than closing and
            // reopening one for nearly every job.
            .max_idle_connections_per_host(64)
            .max_idle_connections(64)
            .build();
        Client {
            bases: Arc::new(
                server_urls(server)
                    .unwrap_or_else(|_| vec![server.trim_end_matches('/').to_string()]),
            ),
            current: Arc::default(),
            resend_posts: false,
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends POSTs that may have reached a server that then failed to the
    /// next server too: for requests the server takes only once however
    /// often they come (the worker protocol's).
    pub fn resending_posts(mut self) -> Client {
        self.resend_posts = true;
        self
    }

    /// The server in use.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// Runs `f` against the server in use, then, while none answers, the
    /// others in turn; the first that answers stays in use.
    fn failover<T>(&self, post: bool, f: impl Fn(&Client) -> Result<T>) -> Result<T> {
        self.failover_with(post, self.resend_posts, f)
    }

    /// [`Client::failover`]; `resend` says whether a POST that may have
    /// reached a server may go to the next one.
    fn failover_with<T>(
        &self,
        post: bool,
        resend: bool,
        f: impl Fn(&Client) -> Result<T>,
    ) -> Result<T> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            if k > 0 {
                self.current.store(i, Ordering::Relaxed);
            }
            match f(self) {
                Err(e) if k + 1 < n && self.may_fail_over(&e, post, resend) => last = Some((i, e)),
                other => {
                    if let (Some((failed, e)), true) = (&last, other.is_ok()) {
                        tracing::warn!(
                            "{} did not answer ({e}); using {} now",
                            self.bases[*failed],
                            self.bases[i]
                        );
                    }
                    return other;
                }
            }
        }
        Err(last.expect("at least one server was tried").1)
    }

    fn may_fail_over(&self, e: &ClientError, post: bool, resend: bool) -> bool {
        match e {
            ClientError::Unreachable { connect, .. } => *connect || !post || resend,
            // A server stopping, or a proxy without its server behind.
            ClientError::Failing { status, .. } => matches!(status, 502..=504) && (!post || resend),
            ClientError::Refused { .. } => false,
        }
    }

    fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    fn get_request(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = self.agent.get(self.url(path));
        match self.bearer() {
            Some(b) => req.header("Authorization", b),
            None => req,
        }
    }

    fn post_request(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let req = self.agent.post(self.url(path));
        match self.bearer() {
            Some(b) => req.header("Authorization", b),
            None => req,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.failover(false, |c| {
            let url = c.url(path);
            decode(&url, c.get_request(path).call())
        })
    }

    /// GET whose body the caller reads itself (logs, possibly followed).
    /// `timeout` bounds the whole exchange, body included.
    pub fn get_raw(&self, path: &str, timeout: Duration) -> Result<Raw> {
        self.failover(false, |c| c.get_raw_once(path, timeout))
    }

    fn get_raw_once(&self, path: &str, timeout: Duration) -> Result<Raw> {
        let url = self.url(path);
        let resp = self
            .get_request(path)
            .config()
            .timeout_global(Some(timeout))
            // A followed log may be quiet for longer than a read timeout.
            .timeout_per_read(None)
            .build()
            .call()
            .map_err(|e| transport(&url, e))?;
        if resp.status().as_u16() >= 400 {
            return Err(refusal(&url, resp));
        }
        Ok(Raw(resp))
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
        self.failover(true, |c| c.post_once(path, body, timeout, header))
    }

    fn post_once<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
        header: &str,
    ) -> Result<(Maybe<T>, Option<String>)> {
        let url = self.url(path);
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Failing {
            status: 0,
            url: url.clone(),
            message: format!("cannot encode the request: {e}"),
        })?;
        let req = self
            .post_request(path)
            .header("Content-Type", "application/json");
        // A wait other than the agent's per-read timeout is a deadline of
        // its own for the whole exchange: a claim or heartbeat whose answer
        // is lost on the way (no reset, no close) is given up in time to
        // send the next before the worker's leases run out.
        // (A deadline for the answer, not a global one: with a global
        // timeout ureq resolves the host name on a thread of its own, one
        // thread per claim.)
        let resp = if timeout != READ_TIMEOUT {
            req.config()
                .timeout_per_read(None)
                .timeout_recv_response(Some(timeout))
                .timeout_recv_body(Some(timeout))
                .build()
                .send(&json[..])
        } else {
            req.send(&json[..])
        };
        let resp = resp.map_err(|e| transport(&url, e))?;
        let value = resp
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if resp.status().as_u16() == 204 {
            // Read the (empty) body so the connection goes back to the pool.
            let _ = std::io::copy(&mut Raw(resp).into_reader(), &mut std::io::sink());
            return Ok((Maybe::NoContent, value));
        }
        decode(&url, Ok(resp)).map(|t| (Maybe::Some(t), value))
    }

    /// PUT of `len` bytes read from `body` (a file, streamed: never held
    /// whole), with a deadline of its own for big uploads.
    pub fn put_reader<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<T> {
        let url = self.url(path);
        let mut req = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string());
        if let Some(b) = self.bearer() {
            req = req.header("Authorization", b);
        }
        let resp = req.send(ureq::SendBody::from_reader(body));
        decode(&url, resp)
    }

    /// POST of a submission under a fresh `Idempotency-Key`: when its
    /// answer is lost (a server that died or hung after taking it, a cut
    /// connection), it is sent again — to the next server of the list, or
    /// to the same one a moment later — and the server answers with the
    /// jobs the first one made rather than making them twice.
    pub fn submit<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let key = submit_key();
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Failing {
            status: 0,
            url: self.url(path),
            message: format!("cannot encode the request: {e}"),
        })?;
        let mut pause = Duration::from_millis(250);
        let mut tries = 0;
        loop {
            let sent = self.failover_with(true, true, |c| {
                let url = c.url(path);
                let resp = c
                    .post_request(path)
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", &key)
                    .send(&json[..]);
                decode(&url, resp)
            });
            match sent {
                Err(e) if tries < 2 && self.may_fail_over_keyed(&e) => {
                    tracing::warn!("{e}; sending the submission again");
                    tries += 1;
                    std::thread::sleep(pause);
                    pause *= 4;
                }
                other => return other,
            }
        }
    }

    fn may_fail_over_keyed(&self, e: &ClientError) -> bool {
        match e {
            ClientError::Unreachable { .. } => true,
            ClientError::Failing { status, .. } => matches!(status, 502..=504),
            ClientError::Refused { .. } => false,
        }
    }

    pub fn post_bytes<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<T> {
        self.failover(true, |c| {
            let url = c.url(path);
            let resp = c
                .post_request(path)
                .header("Content-Type", "application/octet-stream")
                .send(bytes);
            decode(&url, resp)
        })
    }
}

/// A key no other submission has: 128 random bits from the kernel, in hex
/// (the clock and process id where it has none).
fn submit_key() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..8].copy_from_slice(&(now as u64).to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode<T: DeserializeOwned>(
    url: &str,
    resp: std::result::Result<Response, ureq::Error>,
) -> Result<T> {
    let resp = resp.map_err(|e| transport(url, e))?;
    let status = resp.status().as_u16();
    if status >= 400 {
        return Err(refusal(url, resp));
    }
    let body = Raw(resp)
        .into_string()
        .map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            detail: format!("reading the answer: {e}"),
            connect: false,
        })?;
    serde_json::from_str(&body).map_err(|e| ClientError::Failing {
        status,
        url: url.to_string(),
        message: format!("unexpected answer ({e}): {}", snippet(&body)),
    })
}

/// A 4xx or 5xx answer, with the server's own message.
fn refusal(url: &str, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let body = Raw(resp).into_string().unwrap_or_default();
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

/// No answer: said once, without the URL again (the message names it).
fn transport(url: &str, err: ureq::Error) -> ClientError {
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !detail.contains(&s_text) {
            detail.push_str(": ");
            detail.push_str(&s_text);
        }
        source = s.source();
    }
    let connect = matches!(
        err,
        ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
    ) || matches!(&err, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    ClientError::Unreachable {
        url: url.to_string(),
        detail,
        connect,
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
