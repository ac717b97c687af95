//! A request head: read within its time, parsed with httparse, its body's
//! framing and whether the connection stays open decided.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest request head, its request line and header fields together
/// (what hyper's smallest buffer allowed before).
const MAX_HEAD: usize = 8192;
/// The most header fields in one request.
const MAX_HEADERS: usize = 100;

/// Why a connection stops before a request is answered.
pub(super) enum Stop {
    /// The client closed, the server is shutting down, or reading failed.
    Quiet,
    /// The request was malformed: answer this and close.
    Answer(StatusCode, String),
}

/// A parsed request head.
pub(super) struct Head {
    pub(super) parts: Parts,
    pub(super) keep_alive: bool,
}

/// What the request is, without its body.
pub(super) struct Parts {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) framing: Framing,
    pub(super) expect_continue: bool,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Reads until `buf` holds a whole request head and takes it out.
pub(super) async fn read_head<I: AsyncRead + Unpin>(
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
            // Only chunked is understood, once: a body under another coding
            // (gzip, chunked) would reach the handler still encoded.
            for coding in field.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                transfer_encoding = Some(chunked && transfer_encoding.is_none());
                if !chunked {
                    return Err(bad(
                        "unsupported Transfer-Encoding: only chunked is understood",
                    ));
                }
            }
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
                "unsupported Transfer-Encoding: chunked may be applied once",
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
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
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
        assert!(head("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(head("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n").is_err());
        let (h, _) =
            head("PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n")
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
    }
}
