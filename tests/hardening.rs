//! What an outside fuzzer found, each closed with a test that failed
//! before: one worker acting for another (an omitted worker name, a name
//! binding lost with a restart, two machines under one name), slow
//! connections starving the server, numbers that wrapped, JSON nested too
//! deep to read back, and errors that were not JSON.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

fn write_tokens(dir: &Path, name: &str, tokens: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, tokens.join("\n") + "\n").unwrap();
    path.display().to_string()
}

/// A request with a bearer token (scheme as given); status and body.
fn call(method: &str, url: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut headers = vec![];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let body = if method == "GET" {
        None
    } else {
        headers.push(("Content-Type", "application/json"));
        Some(body)
    };
    let r = send(&agent(Duration::from_secs(20)), method, url, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (r.status, r.body)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn register(base: &str, token: &str, name: &str) -> (u16, String) {
    let body = json!({"name": name, "jobtypes": ["unit"], "heartbeat_interval_ms": 60000});
    call(
        "POST",
        &format!("{base}/api/v1/workers"),
        Some(&bearer(token)),
        body.to_string().as_bytes(),
    )
}

fn tokens_server(dir: &Path) -> Server {
    let wt = write_tokens(dir, "worker.tokens", &["token-a", "token-b"]);
    let ct = write_tokens(dir, "client.tokens", &["client"]);
    Server::start_with(
        dir,
        "127.0.0.1:0",
        &["--worker-tokens", &wt, "--client-tokens", &ct],
    )
}

fn submit_unit(base: &str) -> i64 {
    let (code, body) = call(
        "POST",
        &format!("{base}/api/v1/jobs"),
        Some(&bearer("client")),
        br#"{"jobtype":"unit"}"#,
    );
    assert_eq!(code, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[test]
fn leaving_out_the_worker_name_does_not_act_for_another_worker() {
    let dir = tempdir();
    let server = tokens_server(dir.path());
    let base = &server.url;
    assert_eq!(register(base, "token-a", "victim").0, 200);
    assert_eq!(register(base, "token-b", "attacker").0, 200);
    let id = submit_unit(base);
    let (code, body) = call(
        "POST",
        &format!("{base}/api/v1/workers/victim/claim"),
        Some(&bearer("token-a")),
        br#"{"wait": 5}"#,
    );
    assert_eq!(code, 200, "{body}");
    // The attacker's token, no worker name (or an empty one): 403.
    for result in [
        r#"{"attempt":1,"state":"passed"}"#,
        r#"{"worker":"","attempt":1,"state":"passed"}"#,
    ] {
        let (code, body) = call(
            "POST",
            &format!("{base}/api/v1/jobs/{id}/result"),
            Some(&bearer("token-b")),
            result.as_bytes(),
        );
        assert_eq!(code, 403, "{result}: {body}");
        assert!(body.contains("victim"), "{body}");
    }
    for query in ["attempt=1&offset=0", "worker=&attempt=1"] {
        let (code, body) = call(
            "POST",
            &format!("{base}/api/v1/jobs/{id}/log?{query}"),
            Some(&bearer("token-b")),
            b"forged output\n",
        );
        assert_eq!(code, 403, "{query}: {body}");
    }
    assert_eq!(server.job(id)["state"], "running");
    assert_eq!(server.log_of(id), "");
    // The holder's own token may leave its name out.
    let (code, body) = call(
        "POST",
        &format!("{base}/api/v1/jobs/{id}/log?attempt=1"),
        Some(&bearer("token-a")),
        b"real output\n",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(
        "POST",
        &format!("{base}/api/v1/jobs/{id}/result"),
        Some(&bearer("token-a")),
        br#"{"attempt":1,"state":"passed"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let job = server.job(id);
    assert_eq!(job["state"], "passed");
    assert_eq!(job["worker"], "victim");
    assert_eq!(server.log_of(id), "real output\n");
    // No attempt runs now: a result without a name names no holder.
    let (code, body) = call(
        "POST",
        &format!("{base}/api/v1/jobs/{id}/result"),
        Some(&bearer("token-a")),
        br#"{"attempt":1,"state":"failed"}"#,
    );
    assert_eq!(code, 409, "{body}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn a_worker_name_stays_bound_to_its_token_across_a_restart() {
    let dir = tempdir();
    let mut server = tokens_server(dir.path());
    assert_eq!(register(&server.url, "token-a", "alpha").0, 200);
    server.kill9();
    let server = tokens_server(dir.path());
    let base = &server.url;
    // The first token to speak after the restart does not get the name.
    let hb = |token: &str| {
        call(
            "POST",
            &format!("{base}/api/v1/workers/alpha/heartbeat"),
            Some(&bearer(token)),
            br#"{"status":"idle"}"#,
        )
    };
    let (code, body) = hb("token-b");
    assert_eq!(code, 403, "{body}");
    assert_eq!(register(base, "token-b", "alpha").0, 403);
    assert_eq!(hb("token-a").0, 200);
    assert_eq!(register(base, "token-a", "alpha").0, 200);

    // Heartbeats to names nobody registered cost no memory: each is a 404.
    let before = rss_kib(server.pid());
    let agent = agent(Duration::from_secs(20));
    for i in 0..10_000 {
        let r = send(
            &agent,
            "POST",
            &format!("{base}/api/v1/workers/ghost-{i}/heartbeat"),
            &[("Authorization", "Bearer token-b")],
            Some(br#"{"status":"idle"}"#),
        )
        .unwrap();
        assert_eq!(r.status, 404, "{r:?}");
    }
    let grown = rss_kib(server.pid()).saturating_sub(before);
    // Before the change 10,000 such names took about 40 MB.
    assert!(grown < 8 * 1024, "the server grew by {grown} KiB");
}

fn unit_worker_config(dir: &Path, server: &str, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    worker_config(
        dir,
        server,
        name,
        "[jobtypes.unit]\ncommand = \"echo ran on $TESTBOT_WORKER\"\n",
    )
}

#[test]
fn two_machines_cannot_share_a_worker_name() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    let first_config = unit_worker_config(&first_dir, &server.url, "box");
    let second_config = unit_worker_config(&second_dir, &server.url, "box");
    let mut first = Worker::start_config(&first_dir, "box", &first_config, &[]);
    wait_online(&server, "box");
    let id = server.submit(&["unit"])[0];
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");

    // Another work_dir (another machine) under the same name is refused
    // while the first is alive, and told what to do.
    let mut second = Worker::start_config(&second_dir, "box", &second_config, &[]);
    let code = second.wait_exit(20 * SEC);
    assert_eq!(code, Some(2), "the second worker should exit 2");
    let err = second.stderr();
    assert!(err.contains("\"box\""), "{err}");
    assert!(err.contains("host"), "{err}");
    assert!(err.contains("last heartbeat"), "{err}");
    assert!(err.contains("name ="), "{err}");
    let id = server.submit(&["unit"])[0];
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");

    // The same worker restarted (same work_dir) reconnects at once, even
    // though its lease has not run out.
    first.kill9();
    let mut first = Worker::start_config(&first_dir, "box", &first_config, &[]);
    let id = server.submit(&["unit"])[0];
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");

    // Once the first has been silent for a whole lease, the name is free.
    first.kill9();
    drop(second);
    let mut taker = None;
    let taken = wait_until(30 * SEC, || {
        let mut w = Worker::start_config(&second_dir, "box", &second_config, &[]);
        if w.wait_exit(3 * SEC).is_none() {
            taker = Some(w);
            true
        } else {
            false
        }
    });
    assert!(taken, "the second worker never got the free name");
    let id = server.submit(&["unit"])[0];
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");
}

#[test]
fn slow_connections_do_not_starve_a_health_probe() {
    // The test opens more connections than the server may have files.
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < 4096) {
        lim.current = lim.maximum.map(|m| m.min(8192));
        setrlimit(Resource::Nofile, lim).expect("raise this test's open-file limit");
    }
    let dir = tempdir();
    // Soft and hard limit 1,024: the server cannot raise it and must cap.
    let server = Server::start_shell(dir.path(), "ulimit -n 1024", "127.0.0.1:0", &[]);
    let mut slow = Vec::new();
    for i in 0..1100 {
        let mut s = match TcpStream::connect(&server.addr) {
            Ok(s) => s,
            Err(e) => panic!("connection {i}: {e}"),
        };
        // Half a request head, never finished.
        let _ = s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: slow\r\n");
        slow.push(s);
    }
    let agent = agent(Duration::from_secs(5));
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let url = format!("{}/api/v1/health", server.url);
        let r = send(&agent, "GET", &url, &[], None).expect("the health probe is answered");
        assert_eq!(r.status, 200);
    }
    eprintln!(
        "5 health probes with 1,100 slow connections open: {:?}",
        started.elapsed()
    );
    let log = server.log_text();
    assert!(log.contains("open_files=1024"), "{log}");
    assert!(log.contains("max_connections=896"), "{log}");
    // The slow ones that were closed for room read an end of file.
    let closed = slow
        .iter_mut()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let mut b = [0u8; 64];
            match (&**s).read(&mut b) {
                Ok(n) => n == 0,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    eprintln!("{closed} of 1,100 slow connections were closed for room");
    assert!(closed > 0, "no slow connection was closed");

    // With a soft limit below the hard one, the server raises it.
    let dir = tempdir();
    let server = Server::start_shell(dir.path(), "ulimit -Sn 1024", "127.0.0.1:0", &[]);
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
    let log = server.log_text();
    assert!(
        hard <= 1024 || !log.contains("open_files=1024"),
        "the soft limit was not raised: {log}"
    );
}

#[test]
fn numbers_out_of_range_are_refused_naming_the_field() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let post =
        |path: &str, body: String| call("POST", &format!("{base}{path}"), None, body.as_bytes());
    for (body, field) in [
        (
            r#"{"jobtype":"unit","timeout":18446744073709552}"#,
            "timeout",
        ),
        (
            r#"{"jobtype":"unit","timeout":"213503982334601d"}"#,
            "timeout",
        ),
        (
            r#"{"jobtype":"unit","priority":9223372036854775807}"#,
            "priority",
        ),
        (
            r#"{"jobtype":"unit","priority":-4611686018427387904}"#,
            "priority",
        ),
        (
            r#"{"jobtype":"unit","max_attempts":4294967296}"#,
            "max_attempts",
        ),
        (r#"{"jobtype":"unit","build":-1}"#, "build"),
        (r#"{"jobtype":"unit","retry_failed":1000}"#, "retry_failed"),
    ] {
        let (code, text) = post("/api/v1/jobs", body.to_string());
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    // A timeout of 30 days is kept as given, not wrapped.
    let (code, text) = post(
        "/api/v1/jobs",
        r#"{"jobtype":"unit","timeout":"30d"}"#.into(),
    );
    assert_eq!(code, 201, "{text}");
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["timeout"], "30d");

    for (body, field) in [
        (
            json!({"name": "w", "heartbeat_interval_ms": u64::MAX}),
            "heartbeat_interval_ms",
        ),
        (
            json!({"name": "w", "heartbeat_interval_ms": 0}),
            "heartbeat_interval_ms",
        ),
        (json!({"name": "w", "slots": 0}), "slots"),
        (json!({"name": "w", "slots": 100000}), "slots"),
    ] {
        let (code, text) = post("/api/v1/workers", body.to_string());
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (code, text) = post(
        "/api/v1/workers",
        json!({"name": "w", "jobtypes": ["unit"], "heartbeat_interval_ms": 60000}).to_string(),
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = post("/api/v1/workers/w/claim", r#"{"wait": 5}"#.into());
    assert_eq!(code, 200, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_i64()
        .unwrap();
    for query in [
        "attempt=1&offset=9223372036854775808",
        "attempt=1&offset=18446744073709551615",
        "attempt=0",
    ] {
        let (code, text) = post(&format!("/api/v1/jobs/{id}/log?{query}"), "x".into());
        assert_eq!(code, 400, "{query}: {text}");
    }
    let (code, text) = post(
        &format!("/api/v1/jobs/{id}/log?attempt=1&offset=0"),
        "12345".into(),
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["size"], 5);
    for (body, field) in [
        (
            r#"{"attempt":1,"state":"passed","duration_ms":18446744073709551615}"#,
            "duration_ms",
        ),
        (
            r#"{"attempt":1,"state":"passed","duration_ms":9223372036854775808}"#,
            "duration_ms",
        ),
        (r#"{"attempt":0,"state":"passed"}"#, "attempt"),
    ] {
        let (code, text) = post(&format!("/api/v1/jobs/{id}/result"), body.into());
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (code, _) = call(
        "GET",
        &format!("{base}/api/v1/jobs/{id}/log?offset=9223372036854775808"),
        None,
        b"",
    );
    assert_eq!(code, 400);
    let (code, text) = call("GET", &format!("{base}/api/v1/jobs?limit=0"), None, b"");
    assert_eq!(code, 400, "{text}");
    // Over the maximum a limit is clamped, as documented.
    let (code, text) = call(
        "GET",
        &format!("{base}/api/v1/jobs?limit=18446744073709551615"),
        None,
        b"",
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = post(
        "/api/v1/workers/w/heartbeat",
        r#"{"status":"sleeping"}"#.into(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("status"), "{text}");
    // An invalid result still ends its attempt, as an error saying why,
    // instead of leaving the job to its lease and a rerun.
    let job = server.job(id);
    assert_eq!(job["state"], "error", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused") && reason.contains("duration_ms"),
        "{reason}"
    );
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!("leaf"), |v, _| json!({ "k": v }))
}

#[test]
fn free_form_json_is_kept_only_as_deep_as_every_client_reads() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let build = |meta: Value| json!({"name": "deep", "meta": meta, "jobs": [{"jobtype": "unit"}]});
    let (code, text) = call(
        "POST",
        &format!("{base}/api/v1/builds"),
        None,
        build(nested(124)).to_string().as_bytes(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("meta") && text.contains("32"), "{text}");
    for (path, body, field) in [
        (
            "/api/v1/jobs",
            json!({"jobtype": "unit", "note": nested(40)}),
            "extra fields",
        ),
        (
            "/api/v1/workers",
            json!({"name": "w", "info": {"x": nested(40)}}),
            "info",
        ),
    ] {
        let (code, text) = call(
            "POST",
            &format!("{base}{path}"),
            None,
            body.to_string().as_bytes(),
        );
        assert_eq!(code, 400, "{path}: {text}");
        assert!(text.contains(field), "{path}: {text}");
    }
    // The deepest meta allowed still reads back through every client.
    let (code, text) = call(
        "POST",
        &format!("{base}/api/v1/builds"),
        None,
        build(nested(31)).to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{text}");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "--build", "1", "--json"],
    ] {
        let out = server.cli(args);
        assert!(out.status.success(), "{args:?}: {}", text_of(&out));
    }
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_error_is_json_and_the_bearer_scheme_is_case_insensitive() {
    let dir = tempdir();
    let server = tokens_server(dir.path());
    let base = &server.url;
    for (method, path) in [
        ("DELETE", "/api/v1/jobs"),
        ("PUT", "/api/v1/health"),
        ("PATCH", "/api/v1/jobs/1"),
    ] {
        let (code, text) = call(
            method,
            &format!("{base}{path}"),
            Some(&bearer("client")),
            b"{}",
        );
        assert_eq!(code, 405, "{method} {path}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text:?}"));
        assert!(v["error"].as_str().unwrap().contains(method), "{text}");
    }
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (code, text) = call(
            "POST",
            &format!("{base}/api/v1/jobs"),
            Some(&format!("{scheme} client")),
            br#"{"jobtype":"unit"}"#,
        );
        assert_eq!(code, 201, "{scheme}: {text}");
    }
    let (code, text) = call(
        "POST",
        &format!("{base}/api/v1/jobs"),
        Some("Basic client"),
        br#"{"jobtype":"unit"}"#,
    );
    assert_eq!(code, 401, "{text}");
    // The registration answer is what the document says it is.
    let (code, text) = register(base, "token-a", "w1");
    assert_eq!(code, 200);
    let doc: Value =
        serde_json::from_str(&call("GET", &format!("{base}/api/v1/openapi.json"), None, b"").1)
            .unwrap();
    let schema = &doc["components"]["schemas"]["Registered"]["properties"];
    for key in serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            schema[key].is_object(),
            "the document lacks Registered.{key}"
        );
    }
}

#[test]
fn files_a_job_leaves_cannot_crash_hang_or_bloat_its_worker() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let deep = format!(
        "<testsuites>{}<testcase name='t'/>{}</testsuites>",
        "<testsuite>".repeat(2000),
        "</testsuite>".repeat(2000)
    );
    std::fs::write(dir.path().join("deep.xml"), deep).unwrap();
    let deep_path = dir.path().join("deep.xml");
    let mut w = Worker::start(
        dir.path(),
        &server.url,
        "sturdy",
        &format!(
            "[jobtypes.deep]\ncommand = \"cp {} $TESTBOT_JUNIT_DIR/r.xml\"\n\
             [jobtypes.fifo]\ncommand = \"rm -f $TESTBOT_RESULT_FILE; mkfifo $TESTBOT_RESULT_FILE\"\n\
             [jobtypes.endless]\ncommand = \"ln -s /dev/zero $TESTBOT_JUNIT_DIR/z.xml; ln -sf /dev/zero $TESTBOT_RESULT_FILE\"\n",
            deep_path.display()
        ),
    );
    wait_online(&server, "sturdy");
    let ids = server.submit(&["deep", "fifo", "endless"]);
    let deep = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(deep["state"], "passed", "{deep}");
    let unreadable = deep["result"]["tests"]["unreadable"].to_string();
    assert!(unreadable.contains("levels deep"), "{deep}");
    let fifo = server.wait_final(ids[1], 30 * SEC);
    assert_eq!(fifo["state"], "passed", "{fifo}");
    assert!(
        fifo["result"]["result_file_error"]
            .as_str()
            .unwrap_or_default()
            .contains("regular"),
        "{fifo}"
    );
    let endless = server.wait_final(ids[2], 30 * SEC);
    assert!(
        endless["result"]["tests"]["unreadable"]
            .to_string()
            .contains("regular"),
        "{endless}"
    );
    assert!(
        endless["result"]["result_file_error"].is_string(),
        "{endless}"
    );
    // The worker is the same process, still serving.
    assert_eq!(w.wait_exit(Duration::from_millis(100)), None);
    assert_eq!(server.get("/api/v1/workers/sturdy")["status"], "idle");
}

#[test]
fn params_that_cannot_be_an_environment_are_refused_at_submit() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let big: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("p{i}"), Value::from("v".repeat(65_000))))
        .collect();
    for (params, says) in [
        (json!({"a": "x\u{0}y"}), "NUL"),
        (json!({"a\u{0}b": "x"}), "NUL"),
        (Value::Object(big), "bytes together"),
        (json!({"wide": "é".repeat(65_000)}), "bytes"),
    ] {
        let body = json!({"jobtype": "unit", "params": params}).to_string();
        let (code, answer) = post(&server.url, "/api/v1/jobs", &body);
        assert_eq!(code, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("params") && error.contains(says), "{error}");
    }
    // Within the limits: accepted, and the command gets them.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "envy",
        "[jobtypes.unit]\ncommand = \"printf %s \\\"$TESTBOT_PARAM_A\\\" | wc -c\"\n",
    );
    wait_online(&server, "envy");
    let body = json!({"jobtype": "unit", "params": {"a": "v".repeat(60_000)}}).to_string();
    let (code, job) = post(&server.url, "/api/v1/jobs", &body);
    assert_eq!(code, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    assert_eq!(server.wait_final(id, 30 * SEC)["state"], "passed");
    assert!(server.log_of(id).contains("60000"), "{}", server.log_of(id));
}

#[test]
fn registration_fields_are_bounded() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let rules: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    for (body, field) in [
        (
            json!({"name": "big", "version": "v".repeat(200)}),
            "version",
        ),
        (json!({"name": "big", "accept": rules}), "accept"),
        (
            json!({"name": "big", "accept": [format!("k={}", "v".repeat(1000))]}),
            "accept",
        ),
    ] {
        let (code, answer) = post(&server.url, "/api/v1/workers", &body.to_string());
        assert_eq!(code, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let (code, answer) = post(
        &server.url,
        "/api/v1/workers",
        &json!({"name": "fine", "version": "1.2.3", "accept": ["pool=a"]}).to_string(),
    );
    assert_eq!(code, 200, "{answer}");
}

/// A job of jobtype `t` submitted and claimed through the API by worker
/// `r` (registered the first time): its id, attempt 1 running.
fn claimed_by_hand(base: &str) -> i64 {
    let reg = json!({"name": "r", "jobtypes": ["t"]}).to_string();
    assert_eq!(post(base, "/api/v1/workers", &reg).0, 200);
    let (code, job) = post(base, "/api/v1/jobs", r#"{"jobtype":"t"}"#);
    assert_eq!(code, 201, "{job}");
    let (code, claimed) = post(base, "/api/v1/workers/r/claim", r#"{"wait": 5}"#);
    assert_eq!(code, 200, "{claimed}");
    assert_eq!(claimed["id"], job["id"], "{claimed}");
    claimed["id"].as_i64().unwrap()
}

#[test]
fn a_result_is_not_refused_for_a_long_reason_or_deep_data() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    for (extra, check) in [
        (json!({"reason": "r".repeat(70_000)}), "reason"),
        (json!({"data": {"deep": deep.clone()}}), "data"),
    ] {
        let id = claimed_by_hand(base);
        let mut result = json!({"attempt": 1, "state": "failed", "worker": "r"});
        for (k, v) in extra.as_object().unwrap() {
            result[k] = v.clone();
        }
        let (code, answer) = post(
            base,
            &format!("/api/v1/jobs/{id}/result"),
            &result.to_string(),
        );
        assert_eq!(code, 200, "{check}: {answer}");
        let job = server.job(id);
        assert_eq!(job["state"], "failed", "{check}: {job}");
        match check {
            "reason" => {
                let reason = job["result"]["reason"]
                    .as_str()
                    .or(job["reason"].as_str())
                    .unwrap();
                assert!(
                    reason.contains("70000 characters in all"),
                    "{}",
                    &reason[reason.len() - 80..]
                );
            }
            _ => assert!(job.to_string().contains("data_error"), "{job}"),
        }
    }
}

#[test]
fn unknown_fields_of_a_result_are_kept_and_returned() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let id = claimed_by_hand(base);
    let result = json!({"attempt": 1, "state": "passed", "mydata": {"k": 1}, "data": {"own": true}, "started_at": "yesterday"});
    let (code, answer) = post(
        base,
        &format!("/api/v1/jobs/{id}/result"),
        &result.to_string(),
    );
    assert_eq!(code, 200, "{answer}");
    let job = server.job(id);
    assert_eq!(job["result"]["mydata"]["k"], 1, "{job}");
    assert_eq!(job["result"]["own"], true, "{job}");
    assert_eq!(job["state"], "passed");
    // A time that is not one is the server's, with a note.
    let started = job["result"]["started_at"].as_str().unwrap();
    assert!(started.starts_with("20"), "{job}");
    let note = job["result"]["started_at_error"].as_str().unwrap();
    assert!(note.contains("yesterday"), "{job}");
}

#[test]
fn the_log_of_an_attempt_that_never_began_is_not_found() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let id = claimed_by_hand(base);
    let result = json!({"attempt": 1, "state": "passed"}).to_string();
    assert_eq!(
        post(base, &format!("/api/v1/jobs/{id}/result"), &result).0,
        200
    );
    assert_eq!(
        http_get(&format!("{base}/api/v1/jobs/{id}/log?attempt=1")).status,
        200
    );
    let missing = http_get(&format!("{base}/api/v1/jobs/{id}/log?attempt=7"));
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.body.contains("no attempt 7"), "{}", missing.body);
    let out = server.cli(&["logs", &id.to_string(), "--attempt", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
}
