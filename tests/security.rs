//! Security and bad input: tokens, workers acting only for themselves,
//! limits, job directory permissions, the route table against a live
//! router, and a corpus of malformed requests at a live server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

fn with_token(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("TESTBOT_SERVER", &server.url)
        .env("TESTBOT_TOKEN", token)
        .output()
        .unwrap()
}

fn status_of(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let body = if method == "GET" {
        None
    } else {
        headers.push(("Content-Type", "application/json"));
        Some(body.as_bytes())
    };
    let r = http(method, url, &headers, body);
    (r.status, r.body)
}

#[test]
fn tokens_separate_workers_clients_and_readers() {
    let dir = tempdir();
    let wt = write_tokens(dir.path(), "worker.tokens", &["w-secret-1", "w-secret-2"]);
    let ct = write_tokens(dir.path(), "client.tokens", &["c-secret-1"]);
    let mut server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--worker-tokens", &wt, "--client-tokens", &ct],
    );
    let token_file = write_tokens(dir.path(), "my.token", &["w-secret-1"]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "secure",
        &format!("token_file = \"{token_file}\"\n[jobtypes.unit]\ncommand = \"echo ok\"\n"),
    );
    wait_online(&server, "secure");

    let out = with_token(&server, "c-secret-1", &["submit", "--wait", "unit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = server.cli(&["submit", "unit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("needs a client token") && err.contains("no token"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let out = with_token(&server, "w-secret-2", &["submit", "unit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a worker token is not a client token"),
        "{}",
        text(&out)
    );
    let out = with_token(&server, "wrong", &["cancel", "1"]);
    assert!(stderr(&out).contains("not valid"), "{}", text(&out));
    // A client token cannot speak for a worker.
    let (code, _) = status_of(
        "POST",
        &format!("{}/api/v1/workers/secure/claim", server.url),
        Some("c-secret-1"),
        "{}",
    );
    assert_eq!(code, 403);
    // Reads are open.
    assert_eq!(server.cli(&["status"]).status.code(), Some(0));
    // The tokens never reach the log.
    assert!(!server.log_text().contains("secret"), "a token was logged");

    // SIGHUP re-reads the files: a new token works, a revoked one not.
    write_tokens(dir.path(), "client.tokens", &["c-secret-2"]);
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    let ok = wait_until(10 * SEC, || {
        with_token(&server, "c-secret-2", &["submit", "unit"])
            .status
            .success()
    });
    assert!(ok, "the new token was not taken");
    assert_eq!(
        with_token(&server, "c-secret-1", &["submit", "unit"])
            .status
            .code(),
        Some(2)
    );
    let _ = &mut server;
}

#[test]
fn a_private_server_closes_reads_too() {
    let dir = tempdir();
    let ct = write_tokens(dir.path(), "client.tokens", &["reader"]);
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--client-tokens", &ct, "--private"],
    );
    let (code, body) = status_of("GET", &format!("{}/api/v1/status", server.url), None, "");
    assert_eq!(code, 401, "{body}");
    let (code, _) = status_of("GET", &format!("{}/", server.url), None, "");
    assert_eq!(code, 401);
    let (code, _) = status_of(
        "GET",
        &format!("{}/api/v1/status", server.url),
        Some("reader"),
        "",
    );
    assert_eq!(code, 200);
}

/// One request on a fresh connection, written as given; the status.
fn raw_status(addr: &str, request: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(10 * SEC)).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn pages_of_other_sites_cannot_drive_a_server_through_a_browser() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let get = |host: &str| {
        raw_status(
            &server.addr,
            &format!(
                "GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11)\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    // An open server answers only names of its loopback: a page whose name
    // was rebound to 127.0.0.1 is refused.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        assert_eq!(get(&host).0, 200, "{host}");
    }
    let (status, text) = get(&format!("evil.example:{port}"));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("loopback name"), "{text}");
    // Tools and scripts are not what a page drives: any Host they write.
    let (status, text) = raw_status(
        &server.addr,
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    // A change from a page of another origin is refused; from its own
    // pages, and without an Origin (every other client), it is taken.
    let post = |origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let body = r#"{"jobtype":"x"}"#;
        raw_status(
            &server.addr,
            &format!(
                "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (status, text) = post(Some("http://evil.example"));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("another site"), "{text}");
    assert_eq!(post(Some("null")).0, 403);
    // A browser's form post to a page is refused with a page, not JSON.
    let (status, text) = raw_status(
        &server.addr,
        &format!(
            "POST /jobs/1/cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nAccept: text/html\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncsrf=x"
        ),
    );
    assert_eq!(status, 403, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/html")
            && text.contains("another site"),
        "{text}"
    );
    assert_eq!(post(Some(&format!("http://127.0.0.1:{port}"))).0, 201);
    assert_eq!(post(None).0, 201);
    assert_eq!(
        server.get("/api/v1/jobs").as_array().unwrap().len(),
        2,
        "only the two allowed submits made jobs"
    );
    // A server with tokens answers any name: a page has no token to send.
    let other = tempdir();
    let workers = write_tokens(other.path(), "w", &["wtoken"]);
    let clients = write_tokens(other.path(), "c", &["ctoken"]);
    let guarded = Server::start_with(
        other.path(),
        "127.0.0.1:0",
        &["--worker-tokens", &workers, "--client-tokens", &clients],
    );
    let (status, text) = raw_status(
        &guarded.addr,
        "GET /api/v1/health HTTP/1.1\r\nHost: ci.example.org\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn an_open_server_refuses_to_listen_beyond_loopback() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("without tokens") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn a_worker_acts_only_for_itself() {
    let dir = tempdir();
    let wt = write_tokens(dir.path(), "worker.tokens", &["alpha-token", "beta-token"]);
    let ct = write_tokens(dir.path(), "client.tokens", &["client"]);
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--worker-tokens", &wt, "--client-tokens", &ct],
    );
    let base = &server.url;
    let reg = |name: &str| {
        format!(
            r#"{{"name": "{name}", "jobtypes": ["unit"], "platforms": [{{}}], "heartbeat_interval_ms": 60000}}"#
        )
    };
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/workers"),
            Some("alpha-token"),
            &reg("alpha")
        )
        .0,
        200
    );
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/workers"),
            Some("beta-token"),
            &reg("beta")
        )
        .0,
        200
    );
    // beta cannot take over alpha's name, heartbeat or claim for it.
    let (code, body) = status_of(
        "POST",
        &format!("{base}/api/v1/workers"),
        Some("beta-token"),
        &reg("alpha"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("acts only for itself"));
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/workers/alpha/heartbeat"),
            Some("beta-token"),
            r#"{"status":"idle"}"#
        )
        .0,
        403
    );
    let submitted = status_of(
        "POST",
        &format!("{base}/api/v1/jobs"),
        Some("client"),
        r#"{"jobtype":"unit"}"#,
    );
    assert_eq!(submitted.0, 201);
    let (code, job) = status_of(
        "POST",
        &format!("{base}/api/v1/workers/alpha/claim"),
        Some("alpha-token"),
        r#"{"wait": 1}"#,
    );
    assert_eq!(code, 200, "{job}");
    let job: Value = serde_json::from_str(&job).unwrap();
    let id = job["id"].as_i64().unwrap();
    let result = |worker: &str| {
        format!(
            r#"{{"worker":"{worker}","attempt":1,"state":"passed","exit_code":0,"duration_ms":1,"started_at":"x","finished_at":"y"}}"#
        )
    };
    // Reporting as alpha with beta's token: 403; as beta for alpha's job: 409.
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/jobs/{id}/result"),
            Some("beta-token"),
            &result("alpha")
        )
        .0,
        403
    );
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/jobs/{id}/result"),
            Some("beta-token"),
            &result("beta")
        )
        .0,
        409
    );
    let log = http(
        "POST",
        &format!("{base}/api/v1/jobs/{id}/log?worker=alpha&attempt=1&offset=0"),
        &[("Authorization", "Bearer beta-token")],
        Some(b"forged"),
    );
    assert_eq!(log.status, 403, "{log:?}");
    assert_eq!(
        status_of(
            "POST",
            &format!("{base}/api/v1/jobs/{id}/result"),
            Some("alpha-token"),
            &result("alpha")
        )
        .0,
        200
    );
    assert_eq!(server.job(id)["state"], "passed");
}

#[test]
fn limits_are_4xx_errors_naming_the_field() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let many: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("k{i}"), Value::from("v")))
        .collect();
    let cases: Vec<(String, u16, &str)> = vec![
        (
            serde_json::json!({"jobtype": "unit", "params": many}).to_string(),
            400,
            "params",
        ),
        (
            serde_json::json!({"jobtype": "u".repeat(200)}).to_string(),
            400,
            "jobtype",
        ),
        (
            serde_json::json!({"jobtype": "unit", "params": {"k": "v".repeat(70_000)}}).to_string(),
            400,
            "params",
        ),
        (
            serde_json::json!({"jobtype": "unit", "platform": {"os": "x".repeat(300)}}).to_string(),
            400,
            "platform",
        ),
        (
            serde_json::json!({"jobtype": "unit", "max_attempts": 1_000_000}).to_string(),
            400,
            "max_attempts",
        ),
        (
            serde_json::json!({"jobtype": "unit", "priority": 1e300}).to_string(),
            400,
            "priority",
        ),
        (
            format!("{}1{}", "[".repeat(1000), "]".repeat(1000)),
            400,
            "invalid",
        ),
    ];
    for (body, want, needle) in cases {
        let (code, text) = status_of("POST", &format!("{base}/api/v1/jobs"), None, &body);
        assert_eq!(code, want, "{} -> {text}", &body[..body.len().min(80)]);
        let err: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{needle}: {text}"
        );
    }
    // A body over the limit is refused while it is still being sent.
    let answer = send_oversized(&server.addr, "/api/v1/jobs", 9 << 20);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("limit"), "{answer}");
    let meta: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("m{i}"), Value::from("x".repeat(20))))
        .collect();
    let (code, text) = status_of(
        "POST",
        &format!("{base}/api/v1/builds"),
        None,
        &serde_json::json!({"name": "b", "meta": meta, "jobs": [{"jobtype": "u"}]}).to_string(),
    );
    assert_eq!(code, 400);
    assert!(text.contains("meta"), "{text}");
    let (code, _) = status_of(
        "GET",
        &format!("{base}/api/v1/jobs/99999999999999999999999"),
        None,
        "",
    );
    assert_eq!(code, 400);
    let (code, _) = status_of("GET", &format!("{base}/api/v1/jobs/-5"), None, "");
    assert_eq!(code, 404);
    let big = vec![b'x'; 5 << 20];
    let url = format!("{base}/api/v1/jobs/1/log?worker=w&attempt=1&offset=0");
    let r = http("POST", &url, &[], Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("log chunk"), "{}", r.body);
}

#[test]
fn job_directories_are_private_fresh_and_emptied() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "tidy",
        "[jobtypes.where]\ncommand = \"stat -c %a . ; pwd; ls -A | wc -l; \
         touch left; mkdir -p sub/deeper; echo $TESTBOT_JOB_FILE; echo '{}' > $TESTBOT_RESULT_FILE\"\n",
    );
    wait_online(&server, "tidy");
    // Two jobs one after the other on the same slot: the second must not
    // see what the first left.
    for _ in 0..2 {
        let ids = server.submit(&["where"]);
        server.wait_state(ids[0], "passed", 20 * SEC);
        let log = server.log_of(ids[0]);
        let mut lines = log.lines();
        assert_eq!(lines.next(), Some("700"), "{log}");
        let job_dir = Path::new(lines.next().unwrap());
        assert_eq!(lines.next().map(str::trim), Some("0"), "not fresh: {log}");
        let job_file = Path::new(lines.next().unwrap());
        let left: Vec<_> = std::fs::read_dir(job_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} kept {left:?}", job_dir.display());
        let meta: Vec<_> = std::fs::read_dir(job_file.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!meta.contains(&"result.json".to_string()), "{meta:?}");
        let kept = std::fs::read_to_string(job_file).unwrap_or_default();
        assert!(!kept.contains("where"), "the job file kept the job: {kept}");
    }

    let _k = Worker::start(
        dir.path(),
        &server.url,
        "keeper",
        "keep_job_dirs = true\n[jobtypes.keep]\ncommand = \"pwd\"\n",
    );
    wait_online(&server, "keeper");
    let ids = server.submit(&["keep"]);
    server.wait_state(ids[0], "passed", 20 * SEC);
    let kept = server.log_of(ids[0]);
    assert!(
        Path::new(kept.trim()).is_dir(),
        "keep_job_dirs did not keep {kept}"
    );
}

#[test]
fn a_readable_token_in_a_config_gets_a_warning() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let cfg = worker_config(
        dir.path(),
        &server.url,
        "leaky",
        "token = \"t0k3n\"\n[jobtypes.u]\ncommand = \"true\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut w = Worker::start_config(dir.path(), "leaky", &cfg, &["--check"]);
    assert_eq!(w.wait_exit(20 * SEC), Some(0));
    let err = w.stderr();
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(
        !std::fs::read_to_string(&w.log).unwrap().contains("t0k3n"),
        "--check printed the token"
    );
}

#[test]
fn every_documented_route_is_served_and_no_other_method() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    for route in testbot::server::api::ROUTES {
        let path = route
            .path
            .replace("{id}", "1")
            .replace("{name}", "nobody")
            .replace("{*path}", "some/file.txt");
        let (code, body) = status_of(route.method, &format!("{}{path}", server.url), None, "{}");
        assert_ne!(code, 405, "{} {path}", route.method);
        assert!(
            !body.contains("no such path"),
            "{} {path}: {body}",
            route.method
        );
        let other = if matches!(route.method, "GET" | "PUT") {
            "DELETE"
        } else {
            "PUT"
        };
        let (code, _) = status_of(other, &format!("{}{path}", server.url), None, "{}");
        assert!(code == 405 || code == 404, "{other} {path} answered {code}");
    }
}

/// Posts a body of `len` spaces on a raw socket, from a thread that keeps
/// writing while this one reads: the server may answer and close before
/// the body is all sent. Returns the start of the answer.
fn send_oversized(addr: &str, path: &str, len: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(10 * SEC)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..len.div_ceil(1 << 20) {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() > 100 {
            break;
        }
    }
    drop(s);
    let _ = sender.join();
    String::from_utf8_lossy(&got).to_string()
}

/// Sends raw bytes as an HTTP/1.1 request; the status code of the answer.
fn raw_request(addr: &str, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(10 * SEC)).unwrap();
    s.write_all(request).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_corpus_of_malformed_requests_gets_4xx_and_loses_nothing() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "steady",
        "[jobtypes.unit]\ncommand = \"echo kept\"\n",
    );
    wait_online(&server, "steady");
    let done = server.submit(&["unit", "-P", "n=1"]);
    server.wait_state(done[0], "passed", 20 * SEC);
    let queued = server.submit(&["never"]);

    let base = &server.url;
    let mut tried = 0;
    let json_bodies: Vec<String> = vec![
        "".into(),
        "{".into(),
        r#"{"jobtype": "unit""#.into(),
        r#"{"jobtype": ["unit"]}"#.into(),
        r#"{"jobtype": null}"#.into(),
        r#"{"jobtype": "unit", "priority": "high"}"#.into(),
        r#"{"jobtype": "unit", "priority": 99999999999999999999999}"#.into(),
        r#"{"jobtype": "unit", "params": {"a": 1}}"#.into(),
        r#"{"jobtype": "unit", "platform": "linux"}"#.into(),
        r#"{"jobtype": "../../etc/passwd"}"#.into(),
        r#"{"jobtype": "unit", "timeout": -5}"#.into(),
        r#"{"jobtype": "unit", "timeout": "forever"}"#.into(),
        r#"{"jobtype": "unit", "platform": {"os": ">="}}"#.into(),
        "[1, 2, 3]".into(),
        "null".into(),
        "\"just a string\"".into(),
        format!("{}{}", "{\"a\":".repeat(500), "}".repeat(500)),
    ];
    for body in &json_bodies {
        for path in ["/api/v1/jobs", "/api/v1/builds", "/api/v1/workers"] {
            let (code, text) = status_of("POST", &format!("{base}{path}"), None, body);
            tried += 1;
            assert!(
                (400..500).contains(&code),
                "{path} {body:.60} -> {code} {text}"
            );
        }
    }
    for (method, path) in [
        ("POST", "/api/v1/workers/..%2F..%2Fetc/heartbeat"),
        ("POST", "/api/v1/workers/a%20b/claim"),
        ("GET", "/api/v1/jobs/1%00"),
        ("GET", "/api/v1/jobs/abc"),
        ("GET", "/api/v1/jobs?state=bogus"),
        ("GET", "/api/v1/jobs?limit=-1"),
        ("GET", "/api/v1/builds/1e99"),
        ("POST", "/api/v1/jobs/1/result"),
        ("POST", "/api/v1/jobs/1/log?attempt=x"),
        ("DELETE", "/api/v1/jobs/1"),
        ("PUT", "/api/v1/jobs"),
        ("PATCH", "/api/v1/workers"),
        ("GET", "/../../etc/passwd"),
        ("GET", "/api/v2/jobs"),
    ] {
        let (code, text) = status_of(method, &format!("{base}{path}"), None, "{}");
        tried += 1;
        assert!(
            (400..500).contains(&code),
            "{method} {path} -> {code} {text}"
        );
    }
    // Invalid UTF-8 and a lying Content-Length, on the raw socket.
    let bad_utf8 = b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"jobtype\":\"\xff\xfe\"}  ";
    let code = raw_request(&server.addr, bad_utf8);
    tried += 1;
    assert!((400..500).contains(&code), "invalid UTF-8 -> {code}");
    let code = raw_request(&server.addr, b"GARBAGE\r\n\r\n");
    tried += 1;
    assert!((400..500).contains(&code) || code == 0, "garbage -> {code}");
    // A 20 MB body: refused once it passes the limit, while still sending.
    let answer = send_oversized(&server.addr, "/api/v1/jobs", 20 << 20);
    tried += 1;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    eprintln!("malformed requests tried: {tried}");

    // The server still serves and lost nothing.
    let job = server.job(done[0]);
    assert_eq!(job["state"], "passed");
    assert_eq!(job["params"]["n"], "1");
    assert!(server.log_of(done[0]).contains("kept"));
    assert_eq!(server.job(queued[0])["state"], "queued");
    let again = server.submit(&["unit"]);
    assert_eq!(server.wait_final(again[0], 20 * SEC)["state"], "passed");
}

#[test]
fn tls_serves_https_and_clients_verify_the_server() {
    let dir = tempdir();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca = cert.to_str().unwrap();
    let cfg = worker_config(
        dir.path(),
        &server.url,
        "tls-worker",
        &format!("ca_file = \"{ca}\"\n[jobtypes.unit]\ncommand = \"echo over tls\"\n"),
    );
    let _w = Worker::start_config(dir.path(), "tls-worker", &cfg, &[]);
    let out = Command::new(BIN)
        .args(["--ca-file", ca, "submit", "--wait", "unit"])
        .env("TESTBOT_SERVER", &server.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id: i64 = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = Command::new(BIN)
        .args(["logs", &id.to_string()])
        .env("TESTBOT_SERVER", &server.url)
        .env("TESTBOT_CA_FILE", ca)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "over tls\n", "{}", text(&out));
    // Without the CA the client refuses the server's certificate.
    let out = server.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    // Plain http to the TLS port gets nowhere.
    let url = format!("http://{}/api/v1/health", server.addr);
    assert!(send(&agent(Duration::from_secs(10)), "GET", &url, &[], None).is_err());
}
