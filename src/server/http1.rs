//! HTTP/1.1 on one connection, holding no buffer while a request is being
//! answered.
//!
//! Why not hyper's server: it keeps an 8 KiB read buffer and an 8 KiB write
//! buffer for each connection for the connection's whole life. A worker
//! holds a claim open on its connection most of the time, so with 10,000
//! workers those buffers were 160 of the server's 197 MB (heaptrack). Here
//! the request head is parsed (httparse) from a buffer that is freed once
//! the request is taken apart, and the response is gathered in one that is
//! freed once it is sent; a connection waiting on its handler holds the
//! handler's future and little else.
//!
//! What it serves: HTTP/1.0 and 1.1 requests, one at a time (pipelined ones
//! wait their turn); bodies by Content-Length or chunked, read whole before
//! the handler runs up to [`SMALL_BODY`] and streamed to it beyond;
//! `Expect: 100-continue`; keep-alive; responses framed by Content-Length,
//! chunked, or (to HTTP/1.0) by closing, written in one write when the body
//! is ready at once and flushed whenever it has nothing more ready (a
//! followed log). A client that closes its connection while its request is
//! being answered cancels the handler, as hyper's server did: a held claim
//! must not take a job for a worker that is gone. A malformed request gets
//! an answer naming what was wrong, in JSON like every API error, and the
//! connection closes after it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version,
};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::connections::Ticket;

/// The longest request head, its request line and header fields together
/// (what hyper's smallest buffer allowed before).
pub const MAX_HEAD: usize = 8192;
/// The most header fields in one request.
const MAX_HEADERS: usize = 100;
/// Request bodies up to this size are read whole before the handler runs;
/// longer and chunked ones are streamed to it.
const SMALL_BODY: u64 = 64 * 1024;
/// Bytes read at a time for a streamed request body.
const CHUNK: usize = 16 * 1024;
/// Response bytes gathered before they are written.
const WRITE_AT: usize = 64 * 1024;
/// The longest line of a chunked body's framing (a size and extensions, or
/// a trailer field), and the most trailer bytes.
const MAX_CHUNK_LINE: usize = 4096;
/// Closing after an answer while the client may still be sending, the
/// server reads and drops what comes for up to this long (and
/// [`LINGER_BYTES`]), so that the client reads the answer rather than a
/// reset (a 413 for an oversized body).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;
/// The longest a client may take to read one write of an answer (at most
/// [`WRITE_AT`] bytes, so at least about 1 KB/s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves requests on `io` with `app` until the client closes, a request
/// asks to close, `shutdown` turns true between requests, or something is
/// wrong with the connection. `ticket` is marked busy while a handler
/// runs and its response is sent; a head (and a small body after it) has
/// `header_timeout` from its first byte to arrive whole.
pub async fn serve_connection<I>(
    mut io: I,
    mut app: axum::Router,
    ticket: &Ticket,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // Bytes read and not yet used: part of a head, or what a client sent
    // ahead of its turn.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head = match read_head(&mut io, &mut buf, header_timeout, &mut shutdown).await {
            Ok(head) => head,
            Err(Stop::Quiet) => return,
            Err(Stop::Answer(status, error)) => {
                // Rare: boxed so their buffers do not enlarge every
                // connection's future.
                if Box::pin(write_error(&mut io, status, &error)).await.is_ok() {
                    Box::pin(linger(&mut io)).await;
                }
                return;
            }
        };
        // Boxed, as is the answer below: only the states a held request
        // is in are kept in every connection's future.
        let Some((request, mut pump)) = Box::pin(request_with_body(
            &mut io,
            &mut buf,
            head.parts,
            header_timeout,
        ))
        .await
        else {
            return;
        };
        // Busy from here: a client still sending a small body is as idle
        // as one still sending its head (it may be closed for room).
        let busy = ticket.begin();
        if buf.is_empty() {
            // Nothing more is waiting: free the buffer while the handler runs.
            buf = Vec::new();
        }
        let is_head = request.method() == Method::HEAD;
        let version = request.version();
        let mut call = std::pin::pin!(tower_service::Service::call(&mut app, request));
        // Whether a read may still find the client gone: not while a body
        // is streamed, nor once the next request has begun to arrive.
        let mut watching = buf.is_empty();
        let response = loop {
            tokio::select! {
                biased;
                r = &mut call => break r,
                side = io_side(&mut io, &mut buf, &mut pump, &mut watching) => {
                    if side == Side::Gone {
                        // The client went away: dropping the handler's future cancels it.
                        return;
                    }
                }
            }
        };
        let response = match response {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let body_read = pump
            .as_ref()
            .is_none_or(|p| p.status == PumpStatus::Finished);
        if let Some(p) = pump.take() {
            p.abandon();
        }
        let keep_alive = head.keep_alive && body_read && !*shutdown.borrow();
        let sent = Box::pin(write_response(
            &mut io,
            &mut buf,
            response,
            version,
            is_head,
            keep_alive,
            &mut watching,
        ))
        .await;
        drop(busy);
        match sent {
            Ok(true) => {}
            Ok(false) => {
                if !body_read {
                    Box::pin(linger(&mut io)).await;
                } else {
                    let _ = io.shutdown().await;
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// Why a connection stops before a request is answered.
enum Stop {
    /// The client closed, the server is shutting down, or reading failed.
    Quiet,
    /// The request was malformed: answer this and close.
    Answer(StatusCode, String),
}

/// A parsed request head.
struct Head {
    parts: Parts,
    keep_alive: bool,
}

/// What the request is, without its body.
struct Parts {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    expect_continue: bool,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Reads until `buf` holds a whole request head and takes it out.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    timeout: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Head, Stop> {
    let mut deadline: Option<Instant> = None;
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((head, len))) => {
                    buf.drain(..len);
                    return Ok(head);
                }
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return Err(Stop::Answer(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!("the request head is over {MAX_HEAD} bytes"),
                    ))
                }
                Ok(None) => {}
                Err((status, error)) => return Err(Stop::Answer(status, error)),
            }
            deadline.get_or_insert_with(|| Instant::now() + timeout);
        } else if *shutdown.borrow() {
            return Err(Stop::Quiet);
        }
        let want = (buf.len() + 1024).min(MAX_HEAD + 1);
        if buf.capacity() < want {
            buf.reserve_exact(want - buf.len());
        }
        let read = match deadline {
            None => tokio::select! {
                r = io.read_buf(buf) => r,
                _ = shutdown.changed() => return Err(Stop::Quiet),
            },
            Some(at) => match tokio::time::timeout_at(at, io.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Stop::Answer(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the request head did not arrive within {timeout:?}"),
                    ))
                }
            },
        };
        match read {
            Ok(0) | Err(_) => return Err(Stop::Quiet),
            Ok(_) => {}
        }
    }
}

fn bad(error: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, error.into())
}

/// Parses a request head from the start of `buf`: `None` while it is
/// incomplete, else the head and its length in bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, (StatusCode, String)> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request has over {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request head"));
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| bad("invalid request method"))?;
    let uri: Uri = target
        .parse()
        .map_err(|e| bad(format!("invalid request target: {e}")))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    for field in req.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad(format!("invalid header field name {:?}", field.name)))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| bad(format!("invalid value of header field {name}")))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(field.value).ok_or_else(|| bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length fields"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // The last coding of the last field decides.
            let last = field.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            expect_continue |= field
                .value
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    let framing = match (transfer_encoding, length) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "a request may not have both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(bad(
                "unsupported Transfer-Encoding: only chunked (last) is understood",
            ))
        }
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if version == Version::HTTP_10 {
        keep_alive && !close
    } else {
        !close
    };
    let parts = Parts {
        method,
        uri,
        version,
        headers,
        framing,
        expect_continue: expect_continue && version == Version::HTTP_11,
    };
    Ok(Some((Head { parts, keep_alive }, len)))
}

/// A Content-Length value: decimal digits only, within u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Makes the request with its body: a small body read whole (bytes already
/// in `buf` first), a larger or chunked one streamed through a [`Pump`].
/// `None` when the client went away or took too long.
async fn request_with_body<I>(
    io: &mut I,
    buf: &mut Vec<u8>,
    parts: Parts,
    timeout: Duration,
) -> Option<(Request<Body>, Option<Pump>)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (body, pump) = match parts.framing {
        Framing::Empty => (Body::empty(), None),
        Framing::Length(n) if n <= SMALL_BODY => {
            let n = n as usize;
            if parts.expect_continue && buf.len() < n {
                write_continue(io).await.ok()?;
            }
            let at = Instant::now() + timeout;
            while buf.len() < n {
                buf.reserve_exact(n - buf.len());
                match tokio::time::timeout_at(at, io.read_buf(buf)).await {
                    Ok(Ok(0) | Err(_)) | Err(_) => return None,
                    Ok(Ok(_)) => {}
                }
            }
            let rest = buf.split_off(n);
            (Body::from(std::mem::replace(buf, rest)), None)
        }
        framing => {
            if parts.expect_continue {
                write_continue(io).await.ok()?;
            }
            let (tx, rx) = mpsc::channel(1);
            let left = match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            let state = match framing {
                Framing::Length(n) => PumpState::Length(n),
                _ => PumpState::ChunkSize,
            };
            let pump = Pump {
                tx: Some(tx),
                state,
                status: PumpStatus::Running,
                trailer_bytes: 0,
            };
            (Body::new(Streamed { rx, left }), Some(pump))
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts.uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    Some((request, pump))
}

async fn write_continue<I: AsyncWrite + Unpin>(io: &mut I) -> io::Result<()> {
    send(io, b"HTTP/1.1 100 Continue\r\n\r\n").await
}

/// A streamed request body as the handler sees it.
struct Streamed {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// Bytes still to come, when the length was declared.
    left: Option<u64>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.left {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// Moves a streamed request body from the connection to the handler, one
/// piece per step, as fast as the handler takes it.
struct Pump {
    /// To the handler's body; gone once the body ended or stopped.
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    state: PumpState,
    status: PumpStatus,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpStatus {
    Running,
    /// The whole body was read from the connection.
    Finished,
    /// The handler dropped the body, or the body was broken.
    Stopped,
}

#[derive(Debug, Clone, Copy)]
enum PumpState {
    /// Bytes left of a body with a declared length.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields, up to an empty line.
    Trailer,
}

/// How a pump's step ended.
enum Step {
    /// A piece went to the handler, or the body ended.
    Moved,
    /// The handler dropped the body, or the body was broken (the handler was told).
    Stopped,
}

impl Pump {
    /// Tells a handler still reading that the body will not be finished.
    fn abandon(self) {
        if let Some(tx) = self.tx {
            let _ = tx.try_send(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body was not read to its end",
            )));
        }
    }

    async fn step<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut Vec<u8>) -> Step {
        let Some(tx) = &self.tx else {
            return Step::Stopped;
        };
        let Ok(permit) = tx.reserve().await else {
            return Step::Stopped;
        };
        loop {
            let result = match self.state {
                PumpState::Length(left) | PumpState::ChunkData(left) => {
                    match take(io, buf, left).await {
                        Ok(data) => {
                            let left = left - data.len() as u64;
                            self.state = match self.state {
                                PumpState::Length(_) => PumpState::Length(left),
                                _ if left == 0 => PumpState::ChunkEnd,
                                _ => PumpState::ChunkData(left),
                            };
                            if matches!(self.state, PumpState::Length(0)) {
                                self.status = PumpStatus::Finished;
                            }
                            permit.send(Ok(data));
                            return Step::Moved;
                        }
                        Err(e) => Err(e),
                    }
                }
                PumpState::ChunkSize => match line(io, buf).await {
                    Ok(line) => match parse_chunk_size(&line) {
                        Some(0) => {
                            self.state = PumpState::Trailer;
                            Ok(())
                        }
                        Some(n) => {
                            self.state = PumpState::ChunkData(n);
                            Ok(())
                        }
                        None => Err(invalid("invalid chunk size in a chunked request body")),
                    },
                    Err(e) => Err(e),
                },
                PumpState::ChunkEnd => match line(io, buf).await {
                    Ok(line) if line.is_empty() => {
                        self.state = PumpState::ChunkSize;
                        Ok(())
                    }
                    Ok(_) => Err(invalid(
                        "a chunk of the request body is longer than its size",
                    )),
                    Err(e) => Err(e),
                },
                PumpState::Trailer => match line(io, buf).await {
                    Ok(line) if line.is_empty() => {
                        self.status = PumpStatus::Finished;
                        drop(permit);
                        return Step::Moved;
                    }
                    Ok(line) => {
                        self.trailer_bytes += line.len();
                        if self.trailer_bytes > MAX_CHUNK_LINE {
                            Err(invalid("the request body's trailer is too long"))
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                permit.send(Err(e));
                return Step::Stopped;
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Up to `left` bytes of body: from `buf` when it holds some, else from
/// one read of the connection.
async fn take<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>, left: u64) -> io::Result<Bytes> {
    let most = usize::try_from(left).unwrap_or(usize::MAX);
    if !buf.is_empty() {
        let n = most.min(buf.len());
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.drain(..n);
        return Ok(data);
    }
    let mut piece = Vec::with_capacity(most.min(CHUNK));
    if io.read_buf(&mut piece).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed the connection before the request body ended",
        ));
    }
    Ok(Bytes::from(piece))
}

/// The next CRLF-ended line of a chunked body's framing, without its end.
async fn line<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..i].to_vec();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_CHUNK_LINE {
            return Err(invalid("a line of the chunked request body is too long"));
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the request body ended",
            ));
        }
    }
}

/// A chunk-size line's size (hex, before any extensions).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// What the connection's side of a request did while the handler ran.
#[derive(PartialEq, Eq)]
enum Side {
    Busy,
    Gone,
}

/// While the handler runs: moves a streamed body, else watches for the
/// client going away (and keeps what it sends ahead of its turn).
async fn io_side<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    pump: &mut Option<Pump>,
    watching: &mut bool,
) -> Side {
    match pump {
        Some(p) if p.status == PumpStatus::Running => {
            match p.step(io, buf).await {
                Step::Moved if p.status == PumpStatus::Finished => {
                    // The handler sees the body end.
                    p.tx = None;
                    *watching = buf.is_empty();
                }
                Step::Moved => {}
                Step::Stopped => {
                    // The rest of the body stays unread: the connection
                    // closes after the answer.
                    p.status = PumpStatus::Stopped;
                    p.tx = None;
                    *watching = false;
                }
            }
            Side::Busy
        }
        _ if *watching => match probe(io, buf).await {
            true => Side::Busy,
            false => Side::Gone,
        },
        _ => std::future::pending().await,
    }
}

/// One read while the client should be silent: false when it closed (or
/// the read failed); otherwise what came is kept as the next request's
/// beginning, and watching stops.
async fn probe<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>) -> bool {
    let mut bytes = [0u8; 64];
    match io.read(&mut bytes).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&bytes[..n]);
            true
        }
    }
}

/// How a response's body is delimited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `response`; Ok(true) when the connection may serve another
/// request.
async fn write_response<I>(
    io: &mut I,
    buf: &mut Vec<u8>,
    response: axum::response::Response,
    version: Version,
    is_head: bool,
    keep_alive: bool,
    watching: &mut bool,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let mut keep_alive = keep_alive
        && !parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| parse_length(v.as_bytes()));
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT;
    let exact = http_body::Body::size_hint(&body).exact();
    let out = if no_body {
        Out::None
    } else if let Some(n) = declared.or(exact) {
        Out::Length(n)
    } else if is_head || status == StatusCode::NOT_MODIFIED {
        Out::None
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        keep_alive = false;
        Out::UntilClose
    };
    let small = match out {
        Out::Length(n) if !is_head && n <= WRITE_AT as u64 => n as usize,
        _ => 0,
    };
    let mut w = Vec::with_capacity(256 + small);
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name == header::DATE
        {
            continue;
        }
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(value.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    match out {
        Out::Length(n) => {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(n.to_string().as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        Out::Chunked => w.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::None | Out::UntilClose => {}
    }
    w.extend_from_slice(b"date: ");
    date(&mut w);
    w.extend_from_slice(b"\r\n");
    if !keep_alive {
        w.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        w.extend_from_slice(b"connection: keep-alive\r\n");
    }
    w.extend_from_slice(b"\r\n");

    let mut sent: u64 = 0;
    // HEAD and 304 answers carry the length of what a GET would, and no body.
    if !is_head && status != StatusCode::NOT_MODIFIED && out != Out::None {
        loop {
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more ready: send what there is, then wait for
                    // the body or the client going away.
                    if !w.is_empty() {
                        send(io, &w).await?;
                        w.clear();
                    }
                    loop {
                        tokio::select! {
                            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => break frame,
                            alive = probe(io, buf), if *watching => {
                                if !alive {
                                    return Err(io::ErrorKind::ConnectionAborted.into());
                                }
                                *watching = false;
                            }
                        }
                    }
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    // The body failed part way: the client must not take
                    // what it got for the whole.
                    tracing::debug!("response body failed: {e}");
                    return Err(io::Error::other(e));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            match out {
                Out::Length(n) => {
                    let room = n - sent;
                    if data.len() as u64 > room {
                        tracing::warn!("a response body is longer than its Content-Length");
                        w.extend_from_slice(&data[..room as usize]);
                        sent = n;
                        keep_alive = false;
                        break;
                    }
                    w.extend_from_slice(&data);
                }
                Out::Chunked => {
                    w.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    w.extend_from_slice(&data);
                    w.extend_from_slice(b"\r\n");
                }
                Out::UntilClose => w.extend_from_slice(&data),
                Out::None => {}
            }
            sent += data.len() as u64;
            if w.len() >= WRITE_AT {
                send(io, &w).await?;
                w.clear();
            }
        }
        match out {
            Out::Chunked => w.extend_from_slice(b"0\r\n\r\n"),
            Out::Length(n) if sent < n => {
                tracing::warn!("a response body is shorter than its Content-Length");
                send(io, &w).await?;
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            _ => {}
        }
    }
    send(io, &w).await?;
    Ok(keep_alive)
}

/// Writes all of `bytes`, or fails when the client takes more than
/// [`WRITE_TIMEOUT`] to take them: a client that stops reading its answer
/// would otherwise keep its connection busy, and so never closed for room,
/// for as long as it likes.
async fn send<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read its answer",
        )),
    }
}

/// Answers a request that could not be read, in the API's error form.
async fn write_error<I: AsyncWrite + Unpin>(
    io: &mut I,
    status: StatusCode,
    error: &str,
) -> io::Result<()> {
    let body = serde_json::json!({ "error": error }).to_string();
    let mut w = Vec::with_capacity(200 + body.len());
    w.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndate: ",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .as_bytes(),
    );
    date(&mut w);
    w.extend_from_slice(b"\r\n\r\n");
    w.extend_from_slice(body.as_bytes());
    send(io, &w).await
}

/// Closes the sending side, then reads and drops what the client still
/// sends for a while, so that it reads the answer before the connection
/// goes.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I) {
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut bytes = [0u8; 4096];
        let mut dropped = 0u64;
        while dropped < LINGER_BYTES {
            match io.read(&mut bytes).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n as u64,
            }
        }
    })
    .await;
}

/// Appends the current time as an HTTP date, formatted once a second.
fn date(w: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        w.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(Head, usize)>, (StatusCode, String)> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn a_head_is_parsed_with_its_framing_and_keep_alive() {
        let (h, len) = head("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(len, 53);
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri.path(), "/a");
        assert_eq!(h.parts.uri.query(), Some("b=1"));
        assert_eq!(h.parts.framing, Framing::Length(12));
        assert!(h.keep_alive);
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = head(
            "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.parts.framing, Framing::Chunked);
        assert!(h.parts.expect_continue);
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn a_malformed_head_is_refused_naming_what_is_wrong() {
        for (raw, status, needle) in [
            ("GARBAGE\r\n\r\n", 400, "malformed"),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                400,
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
                "conflicting",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                "both",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
                "Transfer-Encoding",
            ),
            ("GET / HTTP/2.0\r\n\r\n", 400, "malformed"),
        ] {
            let Err((s, e)) = head(raw) else {
                panic!("{raw:?} was accepted");
            };
            assert_eq!(s.as_u16(), status, "{raw:?}: {e}");
            assert!(e.contains(needle), "{raw:?}: {e}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let Err((s, _)) = head(&format!("GET / HTTP/1.1\r\n{many}\r\n")) else {
            panic!("too many fields accepted");
        };
        assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn chunk_sizes_and_lengths_never_wrap() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0;ext=1"), Some(0));
        assert_eq!(parse_chunk_size(b"fffffffffffffffff"), None);
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_length(b"18446744073709551616"), None);
        assert_eq!(parse_length(b"+5"), None);
    }

    /// Every connection's task holds this future for the connection's
    /// life, 10,000 of them with 10,000 workers: the states it passes
    /// through briefly (answering, a malformed request) are boxed so they
    /// do not set its size. (It was 5,752 bytes before they were.)
    #[tokio::test]
    async fn a_connections_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let io = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let tracker = crate::server::connections::Tracker::new(4);
        let ticket = tracker.admit().unwrap();
        let (_stop, stopping) = watch::channel(false);
        let connection = serve_connection(
            io,
            axum::Router::new(),
            &ticket,
            Duration::from_secs(1),
            stopping,
        );
        let size = std::mem::size_of_val(&connection);
        assert!(size <= 2048, "a connection's future is {size} bytes");
    }

    /// A client that asks for a big answer and never reads it does not
    /// keep the connection (busy, so never closed for room) for ever.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_answer_is_let_go() {
        use tokio::io::AsyncWriteExt;
        let app =
            axum::Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; 4 << 20] }));
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let tracker = crate::server::connections::Tracker::new(4);
        let ticket = tracker.admit().unwrap();
        let (_stop, stopping) = watch::channel(false);
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let served = tokio::time::timeout(
            WRITE_TIMEOUT * 2,
            serve_connection(server, app, &ticket, Duration::from_secs(30), stopping),
        )
        .await;
        assert!(served.is_ok(), "the connection is still held");
        drop(client);
    }

    /// Drives a pump over `wire` (what follows a head) until the body ends
    /// or stops; what the handler would have read, and how it ended.
    fn pump_all(wire: &[u8], framing: Framing) -> (Vec<u8>, Option<io::Error>, PumpStatus) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(1);
            let mut pump = Pump {
                tx: Some(tx),
                state: match framing {
                    Framing::Length(n) => PumpState::Length(n),
                    _ => PumpState::ChunkSize,
                },
                status: PumpStatus::Running,
                trailer_bytes: 0,
            };
            let mut io = wire;
            let mut buf = Vec::new();
            let (mut got, mut error) = (Vec::new(), None);
            while pump.status == PumpStatus::Running {
                match pump.step(&mut io, &mut buf).await {
                    Step::Moved => {}
                    Step::Stopped => pump.status = PumpStatus::Stopped,
                }
                while let Ok(piece) = rx.try_recv() {
                    match piece {
                        Ok(bytes) => got.extend_from_slice(&bytes),
                        Err(e) => error = Some(e),
                    }
                }
            }
            (got, error, pump.status)
        })
    }

    proptest::proptest! {
        /// Whatever bytes arrive as a head, parsing answers (a head, not
        /// yet, or an error) and never panics.
        #[test]
        fn any_bytes_as_a_head_are_parsed_or_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
            let mut head = b"POST / HTTP/1.1\r\n".to_vec();
            head.extend_from_slice(&bytes);
            head.extend_from_slice(b"\r\n\r\n");
            let _ = parse_head(&head);
        }

        /// A body cut into chunks of any sizes, with extensions and a
        /// trailer, reaches the handler whole; cut short anywhere, the
        /// handler is told it is broken and never gets more than was sent.
        #[test]
        fn chunked_bodies_arrive_whole_or_broken(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..700, 1..20),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut wire = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                let ext = if i % 3 == 0 { ";name=value" } else { "" };
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
            let (got, error, status) = pump_all(&wire, Framing::Chunked);
            proptest::prop_assert!(error.is_none(), "{:?}", error);
            proptest::prop_assert_eq!(status, PumpStatus::Finished);
            proptest::prop_assert_eq!(&got, &data);

            let short = &wire[..cut.index(wire.len())];
            let (got, error, status) = pump_all(short, Framing::Chunked);
            proptest::prop_assert_eq!(status, PumpStatus::Stopped);
            proptest::prop_assert!(error.is_some());
            proptest::prop_assert!(data.starts_with(&got));
        }

        /// A body with a declared length is read to exactly that length.
        #[test]
        fn a_declared_length_is_read_exactly(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..5000),
            extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
        ) {
            let mut wire = data.clone();
            wire.extend_from_slice(&extra);
            let (got, error, status) = pump_all(&wire, Framing::Length(data.len() as u64));
            proptest::prop_assert!(error.is_none());
            proptest::prop_assert_eq!(status, PumpStatus::Finished);
            proptest::prop_assert_eq!(got, data);
        }
    }
}
