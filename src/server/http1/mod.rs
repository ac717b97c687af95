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
//! the handler runs up to 64 KiB (`body.rs`) and streamed to it beyond;
//! `Expect: 100-continue`; keep-alive; responses framed by Content-Length,
//! chunked, or (to HTTP/1.0) by closing, written in one write when the body
//! is ready at once and flushed whenever it has nothing more ready (a
//! followed log). A client that closes its connection while its request is
//! being answered cancels the handler, as hyper's server did: a held claim
//! must not take a job for a worker that is gone. A malformed request gets
//! an answer naming what was wrong, in JSON like every API error, and the
//! connection closes after it.

mod body;
mod head;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use axum::http::{header, Method, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::connections::Ticket;
use body::{request_with_body, Pump, PumpStatus};
use head::{parse_length, read_head, Stop};

/// Response bytes gathered before they are written.
const WRITE_AT: usize = 64 * 1024;
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
            p.step(io, buf).await;
            // After the body, the client should be silent until its next
            // request; a body that stopped part way stays unread (the
            // connection closes after the answer), so reads would find it.
            *watching = p.status == PumpStatus::Finished && buf.is_empty();
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

    /// A client that stops sending a streamed body half-way (a declared
    /// length over the small-body size, or chunks) is let go too.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_sending_its_body_is_let_go() {
        use tokio::io::AsyncWriteExt;
        for head in [
            &b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"[..],
            b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ] {
            let app = axum::Router::new().route(
                "/in",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            );
            let (mut client, server) = tokio::io::duplex(64 << 10);
            let tracker = crate::server::connections::Tracker::new(4);
            let ticket = tracker.admit().unwrap();
            let (_stop, stopping) = watch::channel(false);
            client.write_all(head).await.unwrap();
            let served = tokio::time::timeout(
                Duration::from_secs(120),
                serve_connection(server, app, &ticket, Duration::from_secs(30), stopping),
            )
            .await;
            assert!(served.is_ok(), "the connection is still held");
            drop(client);
        }
    }
}
