//! What users see at the edges: config errors, exit codes, `--check`, and
//! the HTTP API's answers to good and bad input.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn worker_check(config_text: &str) -> std::process::Output {
    let dir = tempdir();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    // A server address nobody listens on: a config error must come first.
    Command::new(BIN)
        .args(["worker", "--server", "http://127.0.0.1:9", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn bad_configs_exit_2_naming_file_line_and_key() {
    let cases = [
        (
            "name = \"w\"\nslotz = 2\n[jobtypes.unit]\ncommand = \"true\"\n",
            "line 2",
            "slotz",
        ),
        (
            "[jobtypes.unit]\ncommand = \"true\"\ntimeout = \"ten minutes\"\n",
            "line 3",
            "timeout",
        ),
        (
            "heartbeat_interval = \"5 parsecs\"\n[jobtypes.unit]\ncommand = \"true\"\n",
            "line 1",
            "heartbeat_interval",
        ),
        ("[jobtypes.unit]\ntimeout = \"1m\"\n", "line 1", "command"),
        ("[jobtypes.unit\ncommand = \"true\"\n", "line 1", "bad.toml"),
        (
            "[jobtypes.unit]\ncommand = \"true\"\n[[platforms]]\nproperties = { a = \"1\" }\nenvv = {}\n",
            "line 5",
            "envv",
        ),
    ];
    for (config, line, key) in cases {
        let out = worker_check(config);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{config}\n{}", text(&out));
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains(line), "{config}\n{err}");
        assert!(err.contains(key), "{config}\n{err}");
        assert!(!err.contains("cannot reach"), "contacted a server: {err}");
    }
}

#[test]
fn check_prints_the_capabilities_as_json() {
    let dir = tempdir();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "name = \"checker\"\n[platform]\ndevice = \"N900\"\n[jobtypes.unit]\ncommand = \"true\"\n[jobtypes.lint]\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["worker", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let caps: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(caps["name"], "checker");
    assert_eq!(caps["jobtypes"], serde_json::json!(["lint", "unit"]));
    let p = &caps["platforms"][0]["properties"];
    assert_eq!(p["device"], "N900");
    assert_eq!(p["os.family"], std::env::consts::OS);
    assert_eq!(p["os.arch"], std::env::consts::ARCH);
    for key in ["os.name", "os.version", "hostname"] {
        assert!(p[key].is_string(), "{key} missing in {p}");
    }
}

#[test]
fn exit_codes_for_a_dead_server_and_refused_input() {
    // Nothing listens on port 9 of loopback.
    let out = cli("http://127.0.0.1:9", &["submit", "unit"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", text(&out));
    let out = cli("http://127.0.0.1:9", &["status"]);
    assert_eq!(out.status.code(), Some(3));

    let dir = tempdir();
    let server = Server::start(dir.path());
    let out = server.cli(&["submit", "bad jobtype!"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("jobtype"), "{}", text(&out));
    let out = server.cli(&["status", "999999"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("no job 999999"));
    let out = server.cli(&["submit", "unit", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = server.cli(&["submit", "unit", "-p", "=nokey"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = server.cli(&["status", "--jobs", "--state", "sleeping"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // --server beats TESTBOT_SERVER.
    let out = Command::new(BIN)
        .args(["--server", &server.url, "status", "--json"])
        .env("TESTBOT_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn the_api_keeps_unknown_fields_and_answers_bad_input_with_json_errors() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;

    let (status, job) = post(base, "/api/v1/jobs", r#"{"jobtype": "unit"}"#);
    assert_eq!(status, 201);
    assert!(job["id"].as_i64().unwrap() > 0);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["max_attempts"], 3);

    let (status, job) = post(
        base,
        "/api/v1/jobs",
        r#"{"jobtype": "unit", "ticket": {"id": "T-9"}, "priority": 4, "timeout": "5m", "params": {"k": "v"}}"#,
    );
    assert_eq!(status, 201);
    let id = job["id"].as_i64().unwrap();
    let again = server.job(id);
    assert_eq!(again["ticket"]["id"], "T-9");
    assert_eq!(again["timeout"], "5m");
    assert_eq!(again["params"]["k"], "v");

    for (body, needle) in [
        (r#"{"jobtype": "unit""#, "invalid"),
        (r#"{"jobtype": 5}"#, "invalid"),
        (r#"{"priority": 1}"#, "jobtype"),
        (r#"{"jobtype": "a b"}"#, "jobtype"),
        (
            r#"{"jobtype": "unit", "timeout": "eventually"}"#,
            "duration",
        ),
        (r#"{"jobtype": "unit", "max_attempts": 0}"#, "max_attempts"),
        (r#"[]"#, "no jobs"),
    ] {
        let (status, err) = post(base, "/api/v1/jobs", body);
        assert_eq!(status, 400, "{body} -> {err}");
        let msg = err["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body} -> {err}"));
        assert!(msg.contains(needle), "{body} -> {msg}");
    }
    let (status, err) = post(base, "/api/v1/jobs/abc/cancel", "{}");
    assert_eq!(status, 400);
    assert!(err["error"].is_string());
    let (status, _) = post(base, "/api/v1/jobs/424242/cancel", "{}");
    assert_eq!(status, 404);
    let (status, err) = post(base, "/api/v1/nowhere", "{}");
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("/api/v1/nowhere"));

    // After all that, the server still serves and lost nothing.
    assert_eq!(server.job(id)["ticket"]["id"], "T-9");
    let health = server.get("/api/v1/health");
    assert_eq!(health["ok"], true);
}

#[test]
fn list_endpoints_filter_and_limit() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    for _ in 0..5 {
        server.submit(&["unit"]);
    }
    let ids = server.submit(&["other"]);
    server.cli(&["cancel", &ids[0].to_string()]);
    let jobs = server.get("/api/v1/jobs?state=queued&limit=3");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["state"] == "queued"));
    // Newest first.
    assert!(jobs[0]["id"].as_i64() > jobs[1]["id"].as_i64());
    let canceled = server.get("/api/v1/jobs?state=canceled");
    assert_eq!(canceled[0]["id"], ids[0]);
    let status = server.get("/api/v1/status");
    assert_eq!(status["jobs"]["queued"], 5);
    assert_eq!(status["jobs"]["canceled"], 1);
    let all = server.get("/api/v1/jobs?limit=1000");
    assert_eq!(all.as_array().unwrap().len(), 6);

    let out = server.cli(&["status"]);
    assert!(stdout(&out).contains("5 queued"), "{}", text(&out));
}

#[test]
fn builds_group_jobs_and_derive_their_state() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "b1",
        "[jobtypes.ok]\ncommand = \"echo build=$TESTBOT_BUILD_ID\"\n[jobtypes.bad]\ncommand = \"exit 1\"\n",
    );
    wait_online(&server, "b1");
    let out = server.cli(&[
        "submit",
        "--build",
        "nightly",
        "--meta",
        "revision=abc123",
        "--wait",
        "ok",
        "bad",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let builds: Value =
        serde_json::from_str(&stdout(&server.cli(&["status", "--builds", "--json"]))).unwrap();
    let b = &builds[0];
    assert_eq!(b["name"], "nightly");
    assert_eq!(b["state"], "failed");
    assert_eq!(b["meta"]["revision"], "abc123");
    let id = b["id"].as_i64().unwrap();
    let full: Value = serde_json::from_str(&stdout(&server.cli(&[
        "status",
        "--build",
        &id.to_string(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(full["jobs"].as_array().unwrap().len(), 2);
    let ok = full["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobtype"] == "ok")
        .unwrap();
    let log = server.log_of(ok["id"].as_i64().unwrap());
    assert!(log.contains(&format!("build={id}")), "{log}");

    let out = server.cli(&["submit", "--build", "green", "--wait", "ok"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let builds = server.get("/api/v1/builds");
    assert_eq!(builds[0]["state"], "passed");
}

#[test]
fn pages_render_and_escape_what_users_sent() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let ids = server.submit(&["unit", "-P", "x=<script>alert(1)</script>"]);
    for path in [
        "/",
        "/workers",
        "/builds",
        &format!("/jobs/{}", ids[0]),
        "/metrics",
    ] {
        let resp = http_get(&format!("{}{path}", server.url));
        assert_eq!(resp.status, 200, "{path}");
        let body = resp.body;
        assert!(!body.contains("<script>alert"), "{path} is not escaped");
    }
    let page = http_get(&format!("{}/jobs/{}", server.url, ids[0])).body;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn the_worker_protocol_by_hand_with_the_fewest_fields() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let (status, reg) = post(
        base,
        "/api/v1/workers",
        r#"{"name": "hand", "jobtypes": ["unit"]}"#,
    );
    assert_eq!(status, 200, "{reg}");
    assert!(reg["lease_ms"].as_u64().unwrap() >= 5000);
    let (status, _) = post(base, "/api/v1/workers/hand/claim", r#"{"wait": 0}"#);
    assert_eq!(status, 204);
    let ids = server.submit(&["unit"]);
    let (status, job) = post(base, "/api/v1/workers/hand/claim", "");
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], ids[0]);
    assert_eq!(job["attempt"], 1);
    let (status, _) = post(base, "/api/v1/workers/hand/heartbeat", "{}");
    assert_eq!(status, 200);
    for chunk in ["one\n", "two\n"] {
        let url = format!("{base}/api/v1/jobs/{}/log?attempt=1", ids[0]);
        assert_eq!(http("POST", &url, &[], Some(chunk.as_bytes())).status, 200);
    }
    let (status, done) = post(
        base,
        &format!("/api/v1/jobs/{}/result", ids[0]),
        r#"{"attempt": 1, "exit_code": 0}"#,
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "passed");
    assert_eq!(done["result"]["worker"], "hand");
    assert_eq!(server.log_of(ids[0]), "one\ntwo\n");
    let (status, err) = post(
        base,
        &format!("/api/v1/jobs/{}/result", ids[0]),
        r#"{"attempt": 1}"#,
    );
    assert_eq!(status, 400, "{err}");
}

#[test]
fn a_wait_is_answered_when_a_job_ends_not_by_polling() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.nap]\ncommand = \"sleep 1\"\n[jobtypes.quick]\ncommand = \"true\"\n",
    );
    wait_online(&server, "w");
    let nap = server.submit(&["nap"])[0];
    let nobody = server.submit(&["nobody-runs-this"])[0];
    let wait = |body: String| post(&server.url, "/api/v1/jobs/wait", &body);
    let started = std::time::Instant::now();
    let (code, ended) = wait(format!(r#"{{"ids": [{nap}, {nobody}], "wait": 20}}"#));
    let took = started.elapsed();
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended.as_array().unwrap().len(), 1, "{ended}");
    assert_eq!(ended[0]["id"], nap);
    assert!(
        took < std::time::Duration::from_secs(10),
        "answered when the job ended: {took:?}"
    );
    // Ended already: at once. None ends: [] at the timeout.
    let (_, again) = wait(format!(r#"{{"ids": [{nap}]}}"#));
    assert_eq!(again[0]["state"], "passed");
    // One of two ended already: the answer waits a moment for the other,
    // so a client asking again for the rest of a build of quick jobs gets
    // them in a few answers, not one each.
    let started = std::time::Instant::now();
    let (_, one) = wait(format!(r#"{{"ids": [{nap}, {nobody}], "wait": 20}}"#));
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(15) && took < std::time::Duration::from_secs(10),
        "gathered for a moment: {took:?}"
    );
    let started = std::time::Instant::now();
    let (_, none) = wait(format!(r#"{{"ids": [{nobody}], "wait": 0.5}}"#));
    assert_eq!(none, serde_json::json!([]));
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    for bad in [
        r#"{"ids": []}"#,
        r#"{"ids": [0]}"#,
        r#"{"ids": ["x"]}"#,
        r#"{"ids": [1], "wait": -1}"#,
    ] {
        let (code, body) = wait(bad.to_string());
        assert_eq!(code, 400, "{bad}: {body}");
    }
    // A wait for a job to start is answered when it runs, not when it ends.
    let nap2 = server.submit(&["nap"])[0];
    let (code, started_jobs) = wait(format!(
        r#"{{"ids": [{nap2}], "until": "started", "wait": 20}}"#
    ));
    assert_eq!(code, 200, "{started_jobs}");
    assert_eq!(started_jobs[0]["state"], "running", "{started_jobs}");
    // An id that names no job is a 404 at once, beside an ended job too;
    // bad input 400.
    let started = std::time::Instant::now();
    let (code, body) = wait(r#"{"ids": [999999], "wait": 20}"#.to_string());
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("999999"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (code, body) = wait(format!(r#"{{"ids": [{nap}, 999998], "wait": 20}}"#));
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("999998"), "{body}");
    let many: Vec<String> = (1..=1001).map(|i| i.to_string()).collect();
    for bad in [
        format!(r#"{{"ids": [{}]}}"#, many.join(",")),
        format!(r#"{{"ids": [{nap}], "until": "soon"}}"#),
    ] {
        let (code, body) = wait(bad.clone());
        assert_eq!(code, 400, "{body}");
    }
    // submit --wait of a quick job is answered as it ends, and `testbot
    // wait` on a job of 2 s holds a few long-polls instead of polling.
    let started = std::time::Instant::now();
    let out = server.cli(&["submit", "--wait", "quick"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let slow = server.submit(&["nap", "--timeout", "1m"])[0];
    let out = server.cli(&["wait", &slow.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = http_get(&format!("{}/metrics", server.url)).body;
    let waits = metric(
        &metrics,
        "testbot_http_requests_total{route=\"/api/v1/jobs/wait\",method=\"POST\",status=\"200\"}",
    )
    .unwrap_or(0.0);
    let polls = metric(
        &metrics,
        "testbot_http_requests_total{route=\"/api/v1/jobs\",method=\"GET\",status=\"200\"}",
    )
    .unwrap_or(0.0);
    assert!(waits >= 2.0, "{metrics}");
    assert_eq!(polls, 0.0, "no client polled the job list: {metrics}");
}

#[test]
fn a_build_is_answered_as_a_later_read_shows_it() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let (code, posted) = post(
        &server.url,
        "/api/v1/builds",
        r#"{"name": "nightly", "meta": {"branch": "main"}, "ci_url": "https://ci.example/1",
            "jobs": [{"jobtype": "a", "params": {"k": "v"}, "timeout": "5m", "priority": 3},
                     {"jobtype": "b", "max_attempts": 2, "platform": {"os.family": "linux"}}]}"#,
    );
    assert_eq!(code, 201, "{posted}");
    let read = server.get(&format!("/api/v1/builds/{}", posted["id"]));
    let strip = |mut v: Value| {
        for j in v["jobs"].as_array_mut().unwrap() {
            j.as_object_mut().unwrap().remove("warning");
        }
        v
    };
    assert_eq!(posted["state"], "queued");
    assert_eq!(posted["counts"], serde_json::json!({"queued": 2}));
    assert_eq!(posted["ci_url"], "https://ci.example/1");
    assert!(posted["jobs"][0]["warning"].is_string(), "{posted}");
    assert_eq!(strip(posted), strip(read));
}
