//! A request's body: read whole when small, else moved to the handler a
//! piece at a time by a [`Pump`] as the handler takes it (Content-Length or
//! chunked framing).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::head::{Framing, Parts};
use super::send;

/// Request bodies up to this size are read whole before the handler runs;
/// longer and chunked ones are streamed to it.
const SMALL_BODY: u64 = 64 * 1024;
/// The longest a streamed request body may pause between two bytes.
const BODY_IDLE: Duration = Duration::from_secs(30);
/// Bytes read at a time for a streamed request body.
const CHUNK: usize = 16 * 1024;
/// The longest line of a chunked body's framing (a size and extensions, or
/// a trailer field), and the most trailer bytes.
const MAX_CHUNK_LINE: usize = 4096;

/// Makes the request with its body: a small body read whole (bytes already
/// in `buf` first), a larger or chunked one streamed through a [`Pump`].
/// `None` when the client went away or took too long.
pub(super) async fn request_with_body<I>(
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
            let (pump, body) = Pump::new(framing);
            (Body::new(body), Some(pump))
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
pub(super) struct Pump {
    /// To the handler's body; gone once the body ended or stopped.
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    state: PumpState,
    pub(super) status: PumpStatus,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpStatus {
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

impl Pump {
    /// A pump for a body of this framing, and the body the handler reads.
    fn new(framing: Framing) -> (Pump, Streamed) {
        let (tx, rx) = mpsc::channel(1);
        let (state, left) = match framing {
            Framing::Length(n) => (PumpState::Length(n), Some(n)),
            _ => (PumpState::ChunkSize, None),
        };
        let pump = Pump {
            tx: Some(tx),
            state,
            status: PumpStatus::Running,
            trailer_bytes: 0,
        };
        (pump, Streamed { rx, left })
    }

    /// Moves the next piece to the handler (waiting until it has taken the
    /// last); once the body ended or stopped, the handler's side is closed.
    pub(super) async fn step<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut Vec<u8>) {
        if !self.move_piece(io, buf).await {
            self.status = PumpStatus::Stopped;
        }
        if self.status != PumpStatus::Running {
            self.tx = None;
        }
    }
    /// Tells a handler still reading that the body will not be finished.
    pub(super) fn abandon(self) {
        if let Some(tx) = self.tx {
            let _ = tx.try_send(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body was not read to its end",
            )));
        }
    }

    /// False when the handler dropped the body, or the body was broken
    /// (the handler was told).
    async fn move_piece<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut Vec<u8>) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        let Ok(permit) = tx.reserve().await else {
            return false;
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
                            return true;
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
                        return true;
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
                return false;
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
    if read_some(io, &mut piece).await? == 0 {
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
        if read_some(io, buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the request body ended",
            ));
        }
    }
}

/// One read of a streamed body from the connection, given up after
/// [`BODY_IDLE`] without a byte: a client that stops sending half-way would
/// otherwise keep its connection busy, never closed for room, for ever.
async fn read_some<I: AsyncRead + Unpin>(io: &mut I, buf: &mut Vec<u8>) -> io::Result<usize> {
    match tokio::time::timeout(BODY_IDLE, io.read_buf(buf)).await {
        Ok(read) => read,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client sent nothing of the request body for {} s",
                BODY_IDLE.as_secs()
            ),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http1::head::parse_length;

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

    /// or stops; what the handler would have read, and how it ended.
    fn pump_all(wire: &[u8], framing: Framing) -> (Vec<u8>, Option<io::Error>, PumpStatus) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut pump, Streamed { mut rx, .. }) = Pump::new(framing);
            let mut io = wire;
            let mut buf = Vec::new();
            let (mut got, mut error) = (Vec::new(), None);
            while pump.status == PumpStatus::Running {
                pump.step(&mut io, &mut buf).await;
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
