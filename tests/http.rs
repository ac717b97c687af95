//! The server's HTTP/1.1 on raw sockets: what clients other than ours
//! send (pipelined requests, chunked bodies, `Expect: 100-continue`,
//! HTTP/1.0, malformed heads) and a client that goes away while its claim
//! is held.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const SEC: Duration = Duration::from_secs(1);

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(10 * SEC)).unwrap();
    s
}

/// Reads one response: its head and its body (by Content-Length or
/// chunked); what follows stays in `pending`.
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    let fill = |s: &mut TcpStream, pending: &mut Vec<u8>| {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).expect("read a response");
        assert!(n > 0, "the server closed before answering");
        pending.extend_from_slice(&b[..n]);
    };
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, pending);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    pending.drain(..end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = len.trim().parse().unwrap();
        while pending.len() < len {
            fill(s, pending);
        }
        body.extend(pending.drain(..len));
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(s, pending);
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).unwrap(), 16)
                    .unwrap();
            pending.drain(..line_end + 2);
            while pending.len() < size + 2 {
                fill(s, pending);
            }
            body.extend(pending.drain(..size));
            pending.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    (head, String::from_utf8_lossy(&body).to_string())
}

fn status(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn pipelined_chunked_and_continued_requests_are_answered_in_order() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let mut s = connect(&server);
    let mut pending = Vec::new();

    // Two submits and a read, sent in one write: three answers, in order.
    let job = r#"{"jobtype": "unit", "params": {"n": "1"}}"#;
    let chunked_job = r#"{"jobtype": "unit", "params": {"n": "2"}}"#;
    let (a, b) = chunked_job.split_at(10);
    let three = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{job}\
         POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n\
         GET /api/v1/jobs?limit=10 HTTP/1.1\r\nHost: x\r\n\r\n",
        job.len(),
        a.len(),
        b.len()
    );
    s.write_all(three.as_bytes()).unwrap();
    let (h1, b1) = read_response(&mut s, &mut pending);
    let (h2, b2) = read_response(&mut s, &mut pending);
    let (h3, b3) = read_response(&mut s, &mut pending);
    assert_eq!(status(&h1), 201, "{h1}{b1}");
    assert_eq!(status(&h2), 201, "{h2}{b2}");
    assert_eq!(status(&h3), 200, "{h3}{b3}");
    let first: serde_json::Value = serde_json::from_str(&b1).unwrap();
    let second: serde_json::Value = serde_json::from_str(&b2).unwrap();
    assert_eq!(first["params"]["n"], "1");
    assert_eq!(
        second["params"]["n"], "2",
        "the chunked body was read whole"
    );
    let listed: serde_json::Value = serde_json::from_str(&b3).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(h1.to_ascii_lowercase().contains("\r\ndate: "), "{h1}");

    // A body over 64 KiB (streamed to the handler) behind Expect:
    // 100-continue: the server asks for it, then answers on the same
    // connection.
    let padded = format!("{job}{}", " ".repeat(100 << 10));
    s.write_all(
        format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            padded.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let (cont, _) = read_response(&mut s, &mut pending);
    assert_eq!(status(&cont), 100, "{cont}");
    s.write_all(padded.as_bytes()).unwrap();
    let (h, b) = read_response(&mut s, &mut pending);
    assert_eq!(status(&h), 201, "{h}{b}");

    // A chunked body in many small chunks, over 64 KiB in all.
    let mut body = String::new();
    let big = format!("{chunked_job}{}", "\n".repeat(70 << 10));
    for piece in big.as_bytes().chunks(1000) {
        body.push_str(&format!("{:X}\r\n", piece.len()));
        body.push_str(std::str::from_utf8(piece).unwrap());
        body.push_str("\r\n");
    }
    body.push_str("0\r\n\r\n");
    s.write_all(
        format!("POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
            .as_bytes(),
    )
    .unwrap();
    let (h, b) = read_response(&mut s, &mut pending);
    assert_eq!(status(&h), 201, "{h}{b}");
    assert_eq!(
        server
            .get("/api/v1/jobs?limit=10")
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // HEAD: the length of what GET would send, and no body.
    s.write_all(b"HEAD /api/v1/jobs/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        pending.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    pending.drain(..end);
    assert_eq!(status(&head), 200, "{head}");
    assert!(head.contains("content-length: "), "{head}");

    // Connection: close is honoured after the answer.
    s.write_all(b"GET /api/v1/jobs/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (h, b) = read_response(&mut s, &mut pending);
    assert_eq!(status(&h), 200, "{h}");
    assert!(b.contains("\"id\":1"), "{b}");
    assert!(h.contains("connection: close"), "{h}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty() && pending.is_empty(),
        "nothing after the close"
    );
}

#[test]
fn http_1_0_and_malformed_requests_get_clear_answers() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    server.submit(&["unit"]);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut s = connect(&server);
    s.write_all(b"GET /api/v1/jobs/1 HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.contains("\"jobtype\":\"unit\""), "{all}");

    let cases: [(&[u8], u16, &str); 6] = [
        (b"GARBAGE\r\n\r\n", 400, "malformed request head"),
        (
            b"POST /api/v1/jobs HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
            "conflicting Content-Length",
        ),
        (
            b"POST /api/v1/jobs HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"POST /api/v1/jobs HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            "Transfer-Encoding",
        ),
        (
            b"POST /api/v1/jobs HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
            400,
            "Content-Length",
        ),
        (
            b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
            400,
            "malformed",
        ),
    ];
    for (raw, want, needle) in cases {
        let mut s = connect(&server);
        s.write_all(raw).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let text = String::from_utf8_lossy(raw);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "{text:?} -> {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let err: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{text:?} -> {answer}"
        );
    }
    // A head over 8 KiB.
    let mut s = connect(&server);
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(9000));
    let _ = s.write_all(long.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("over 8192 bytes"), "{answer}");
    // A chunked body that lies about its chunk size.
    let mut s = connect(&server);
    s.write_all(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx\r\n0\r\n\r\n").unwrap();
    let mut pending = Vec::new();
    let (h, b) = read_response(&mut s, &mut pending);
    assert_eq!(status(&h), 400, "{h}{b}");

    // The server still serves and lost nothing.
    assert_eq!(server.job(1)["state"], "queued");
    assert_eq!(server.submit(&["unit"]).len(), 1);
}

#[test]
fn a_claim_held_by_a_client_that_went_away_takes_no_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let (code, text) = {
        let r = http(
            "POST",
            &format!("{}/api/v1/workers", server.url),
            &[("content-type", "application/json")],
            Some(br#"{"name": "hand", "jobtypes": ["unit"]}"#),
        );
        (r.status, r.body)
    };
    assert_eq!(code, 200, "{text}");
    // A claim held open on a raw connection, then the connection closes.
    let mut s = connect(&server);
    let claim = r#"{"wait": 20}"#;
    s.write_all(
        format!(
            "POST /api/v1/workers/hand/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{claim}",
            claim.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // Held: no answer yet.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 64];
    assert!(s.read(&mut b).is_err(), "the claim was answered at once");
    drop(s);
    // The server notices (it reads the closed socket) before the job comes.
    std::thread::sleep(Duration::from_millis(300));
    let id = server.submit(&["unit"])[0];
    let t = Instant::now();
    while t.elapsed() < 2 * SEC {
        assert_eq!(
            server.job(id)["state"],
            "queued",
            "a claim whose client is gone took the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A live claim takes it.
    let r = http(
        "POST",
        &format!("{}/api/v1/workers/hand/claim", server.url),
        &[("content-type", "application/json")],
        Some(br#"{"wait": 5}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], id);
}
