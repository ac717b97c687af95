//! Faults: workers killed mid-job, a server killed with jobs in flight, a
//! server away for a while, stale attempts, cancels and worker shutdown.
//! Every test is bounded in time and ends the processes it started.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

/// A loopback address with a port that was free a moment ago, so a server
/// can be restarted on the same address.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Kills (by PID) processes a job of this test left behind on purpose.
fn kill_tagged(tag: &str) {
    for pid in processes_with(tag) {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn a_job_whose_worker_is_killed_runs_again_elsewhere() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("97{}", unique() % 100_000);
    let body = format!(
        "[jobtypes.work]\ncommand = \"if [ $TESTBOT_ATTEMPT = 1 ]; then sleep {tag}; fi; echo attempt $TESTBOT_ATTEMPT on $TESTBOT_WORKER\"\n"
    );
    let mut a = Worker::start(dir.path(), &server.url, "doomed", &body);
    wait_online(&server, "doomed");
    let ids = server.submit(&["work"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    a.kill9();
    kill_tagged(&tag);
    let killed = Instant::now();
    let _b = Worker::start(dir.path(), &server.url, "rescuer", &body);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 2);
    assert_eq!(job["worker"], "rescuer");
    assert_eq!(job["result"]["attempt"], 2);
    assert!(server.log_of(ids[0]).contains("attempt 2 on rescuer"));
    eprintln!("recovered in {:?}", killed.elapsed());

    // With one attempt allowed, a lost worker ends the job as an error.
    let once = format!("[jobtypes.once]\ncommand = \"sleep {tag}\"\n");
    let mut c = Worker::start(dir.path(), &server.url, "doomed2", &once);
    let ids = server.submit(&["once", "--max-attempts", "1"]);
    let job = server.wait_state(ids[0], "running", 20 * SEC);
    assert_eq!(job["worker"], "doomed2");
    c.kill9();
    kill_tagged(&tag);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "error", "{job}");
    assert_eq!(job["reason"], "worker lost", "{job}");
    kill_tagged(&tag);
}

#[test]
fn killing_the_server_with_200_jobs_in_flight_loses_none_and_runs_none_twice() {
    let dir = tempdir();
    let addr = free_addr();
    let mut server = Server::start_with(dir.path(), &addr, &[]);
    let runs = dir.path().join("runs");
    let body = format!(
        "slots = 4\n[jobtypes.quick]\ncommand = \"echo $TESTBOT_JOB_ID >> {}; sleep 0.05\"\n",
        runs.display()
    );
    let _w1 = Worker::start(dir.path(), &server.url, "fleet1", &body);
    let _w2 = Worker::start(dir.path(), &server.url, "fleet2", &body);
    wait_online(&server, "fleet1");
    wait_online(&server, "fleet2");
    let specs: Vec<Value> = (0..200)
        .map(|_| serde_json::json!({"jobtype": "quick"}))
        .collect();
    let (status, jobs) = post(
        &server.url,
        "/api/v1/jobs",
        &Value::Array(specs).to_string(),
    );
    assert_eq!(status, 201);
    let ids: Vec<i64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    // Kill it mid-way.
    let ok = wait_until(30 * SEC, || {
        server.get("/api/v1/status")["jobs"]["passed"]
            .as_u64()
            .unwrap_or(0)
            >= 40
    });
    assert!(ok);
    server.kill9();
    std::thread::sleep(SEC);
    let restarted = Instant::now();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let ok = wait_until(90 * SEC, || {
        let s = server.get("/api/v1/status");
        s["jobs"]["passed"] == 200
    });
    let status = server.get("/api/v1/status");
    assert!(ok, "not all passed: {status}");
    eprintln!("all 200 passed {:?} after the restart", restarted.elapsed());

    let all = server.get("/api/v1/jobs?limit=1000");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 200);
    let mut attempts = BTreeMap::new();
    for j in all {
        assert_eq!(j["state"], "passed");
        assert_eq!(j["result"]["attempt"], j["attempt"], "{j}");
        *attempts.entry(j["attempt"].as_u64().unwrap()).or_insert(0) += 1;
    }
    eprintln!("jobs by attempt: {attempts:?}");
    // Each job's command ran exactly once.
    let text = std::fs::read_to_string(&runs).unwrap();
    let mut count: BTreeMap<i64, u32> = BTreeMap::new();
    for l in text.lines() {
        *count.entry(l.trim().parse().unwrap()).or_default() += 1;
    }
    assert_eq!(count.len(), 200, "some jobs never ran");
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    for id in ids {
        assert_eq!(count.get(&id), Some(&1));
    }
}

#[test]
fn a_result_made_while_the_server_is_away_arrives_when_it_is_back() {
    let dir = tempdir();
    let addr = free_addr();
    let mut server = Server::start_with(dir.path(), &addr, &[]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "patient",
        "[jobtypes.slow]\ncommand = \"echo begun; sleep 3; echo finished-while-away\"\n",
    );
    wait_online(&server, "patient");
    let ids = server.submit(&["slow"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    // Away for several heartbeats (1 s each), past the job's end.
    std::thread::sleep(7 * SEC);
    let server = Server::start_with(dir.path(), &addr, &[]);
    let back = Instant::now();
    let job = server.wait_final(ids[0], 60 * SEC);
    eprintln!(
        "result arrived {:?} after the server came back",
        back.elapsed()
    );
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "the job ran again: {job}");
    let log = server.log_of(ids[0]);
    assert!(
        log.contains("begun") && log.contains("finished-while-away"),
        "{log}"
    );
}

#[test]
fn a_result_left_by_a_killed_worker_is_delivered_when_it_restarts() {
    let dir = tempdir();
    let addr = free_addr();
    let mut server = Server::start_with(dir.path(), &addr, &[]);
    let marker = dir.path().join("runs");
    let config = worker_config(
        dir.path(),
        &server.url,
        "phoenix",
        &format!(
            "[jobtypes.once]\ncommand = \"echo run >> '{}'; echo from-the-first-run; sleep 1\"\n",
            marker.display()
        ),
    );
    let mut w = Worker::start_config(dir.path(), "phoenix", &config, &[]);
    wait_online(&server, "phoenix");
    let ids = server.submit(&["once"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    server.kill9();
    // The job ends while the server is away: its outcome waits in the
    // outbox. Then the worker dies too.
    std::thread::sleep(Duration::from_millis(2500));
    w.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let _w = Worker::start_config(dir.path(), "phoenix", &config, &[]);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "the job ran again: {job}");
    assert!(
        server.log_of(ids[0]).contains("from-the-first-run"),
        "the log of the first run was lost"
    );
    let runs = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(runs.lines().count(), 1, "the command ran {runs:?}");
}

#[test]
fn a_stale_attempt_is_refused_with_409() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let reg = r#"{"name": "fake", "jobtypes": ["unit"], "platforms": [{"os.family": "linux"}], "heartbeat_interval_ms": 60000}"#;
    assert_eq!(post(base, "/api/v1/workers", reg).0, 200);
    let ids = server.submit(&["unit"]);
    let (status, job) = post(base, "/api/v1/workers/fake/claim", r#"{"wait": 1}"#);
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], ids[0]);
    assert_eq!(job["attempt"], 1);
    let id = ids[0];
    let result = |attempt: u32, worker: &str| {
        format!(
            r#"{{"worker": "{worker}", "attempt": {attempt}, "state": "passed", "exit_code": 0, "duration_ms": 5,
                "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z", "reason": null}}"#
        )
    };
    let log = |attempt: u32| -> u16 {
        let url = format!("{base}/api/v1/jobs/{id}/log?worker=fake&attempt={attempt}&offset=0");
        http("POST", &url, &[], Some(b"hello\n")).status
    };
    assert_eq!(log(2), 409);
    assert_eq!(log(1), 200);
    // A retried upload of the same bytes is not stored twice.
    assert_eq!(log(1), 200);
    assert_eq!(server.log_of(id), "hello\n");
    let (status, err) = post(
        base,
        &format!("/api/v1/jobs/{id}/result"),
        &result(2, "fake"),
    );
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("not current"));
    let (status, _) = post(
        base,
        &format!("/api/v1/jobs/{id}/result"),
        &result(1, "other"),
    );
    assert_eq!(status, 409);
    let (status, job) = post(
        base,
        &format!("/api/v1/jobs/{id}/result"),
        &result(1, "fake"),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "passed");
    // The same result again: recorded once only.
    let (status, _) = post(
        base,
        &format!("/api/v1/jobs/{id}/result"),
        &result(1, "fake"),
    );
    assert_eq!(status, 409);
    assert_eq!(log(1), 409);
}

#[test]
fn a_result_sent_with_the_next_claim_is_recorded_and_a_stale_one_is_set_aside() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let reg = r#"{"name": "hand", "jobtypes": ["h"], "heartbeat_interval_ms": 60000}"#;
    assert_eq!(post(base, "/api/v1/workers", reg).0, 200);
    let mut ids = server.submit(&["h", "h"]);
    // A hand-written worker: ureq, raw JSON, reading the header.
    let claim = |body: String| -> (u16, Option<Value>, Option<String>) {
        let r = http(
            "POST",
            &format!("{base}/api/v1/workers/hand/claim"),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        let said = r.header("testbot-result").map(str::to_string);
        let job = (r.status == 200).then(|| r.json());
        (r.status, job, said)
    };
    let with_result = |job: &Value, attempt: u64, state: &str| {
        format!(
            r#"{{"wait": 0, "result": {{"job": {}, "outcome": {{"attempt": {attempt}, "state": "{state}", "exit_code": 0}}}}}}"#,
            job["id"]
        )
    };
    let (_, first, said) = claim(r#"{"wait": 0}"#.to_string());
    assert_eq!(said, None, "no result, no word on one");
    let first = first.expect("a job");
    assert_eq!(first["id"], ids[0]);
    let (status, second, said) = claim(with_result(&first, 1, "passed"));
    assert_eq!(status, 200);
    assert_eq!(said.as_deref(), Some("recorded"));
    let second = second.expect("the second job");
    assert_eq!(second["id"], ids[1]);
    let done = server.job(ids[0]);
    assert_eq!(done["state"], "passed", "{done}");
    assert_eq!(done["result"]["worker"], "hand", "{done}");
    // The first job's result again, and the second's with a wrong attempt:
    // both refused, said in the header, and neither job changes.
    let (status, none, said) = claim(with_result(&first, 1, "failed"));
    assert_eq!((status, none), (204, None));
    assert!(said.is_some_and(|r| r.starts_with("refused: ")));
    let (status, _, said) = claim(with_result(&second, 7, "failed"));
    assert_eq!(status, 204);
    let refused = said.expect("a refusal");
    assert!(
        refused.starts_with("refused: ") && (refused.contains('7') || refused.contains("attempt")),
        "{refused}"
    );
    assert_eq!(server.job(ids[0])["state"], "passed");
    assert_eq!(server.job(ids[1])["state"], "running");
    // A result for another worker is the claim's error.
    let (code, body) = post(
        base,
        "/api/v1/workers/hand/claim",
        &format!(
            r#"{{"wait": 0, "result": {{"job": {}, "outcome": {{"worker": "other", "attempt": 1, "state": "passed"}}}}}}"#,
            ids[1]
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("worker"), "{body}");
    // As forgiving as /result: `passed` in place of a state.
    ids.extend(server.submit(&["h"]));
    let (_, third, said) = claim(format!(
        r#"{{"wait": 0, "result": {{"job": {}, "outcome": {{"attempt": 1, "passed": true}}}}}}"#,
        ids[1]
    ));
    assert_eq!(said.as_deref(), Some("recorded"));
    assert_eq!(server.job(ids[1])["state"], "passed");
    // A result without any state is refused, not the claim; the attempt it
    // names ends as an error that says why, rather than waiting for its
    // lease and a rerun.
    let third = third.expect("the third job");
    let (status, _, said) = claim(format!(
        r#"{{"wait": 0, "result": {{"job": {}, "outcome": {{"attempt": 1}}}}}}"#,
        third["id"]
    ));
    assert_eq!(status, 204);
    assert!(said.is_some_and(|s| s.starts_with("refused: ") && s.contains("state")));
    let ended = server.job(ids[2]);
    assert_eq!(ended["state"], "error", "{ended}");
    assert!(
        ended["reason"].as_str().unwrap().contains("refused"),
        "{ended}"
    );
}

#[test]
fn a_process_that_escapes_the_jobs_group_ends_with_the_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // `setsid` takes the sleep out of the job's process group, where
    // killing the group does not reach it; it would hold the job's output
    // pipe. It comes back to the worker (a subreaper) when the shell
    // exits, and goes with its job.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "leaky",
        "[jobtypes.leak]\ncommand = \"setsid sleep 7.25 & sleep 0.5; echo first\"\n\
         [jobtypes.next]\ncommand = \"echo second\"\n",
    );
    wait_online(&server, "leaky");
    let first = server.submit(&["leak"]);
    let job = server.wait_final(first[0], 20 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert!(
        wait_until(2 * SEC, || processes_with("sleep 7.25").is_empty()),
        "the escaped sleep outlived its job"
    );
    let t = Instant::now();
    let second = server.submit(&["next"]);
    let job = server.wait_final(second[0], 20 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert!(
        t.elapsed() < 4 * SEC,
        "the next job waited {:?}",
        t.elapsed()
    );
    assert!(server.log_of(second[0]).contains("second"));
    assert!(server.log_of(first[0]).contains("first"));
    kill_tagged("7.25");
}

#[test]
fn a_process_that_escapes_the_jobs_group_and_keeps_writing_ends_with_the_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("spam-{}", unique() % 100_000);
    // `yes` out of the job's group writes to the job's output for as long
    // as it lives: the job still ends when its shell does, with its log.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "chatty",
        &format!("[jobtypes.spam]\ncommand = \"setsid yes {tag} & sleep 0.3; echo last-line\"\n"),
    );
    wait_online(&server, "chatty");
    let id = server.submit(&["spam"])[0];
    let job = server.wait_final(id, 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert!(
        wait_until(5 * SEC, || processes_with(&format!("yes {tag}")).is_empty()),
        "the escaped writer outlived its job"
    );
    let log = server.log_of(id);
    assert!(
        log.contains("last-line"),
        "{}",
        &log[log.len().saturating_sub(300)..]
    );
    kill_tagged(&tag);
}

/// How [`proxy`] changes what passes.
#[derive(Clone, Copy)]
enum Proxy {
    /// As a server would that predates results sent with claims: its
    /// registration answer does not offer them, it drops `result` from
    /// claim bodies and answers without the `Testbot-Result` header.
    OldServer,
    /// Claims carrying a result reach the server this much later.
    SlowResults(Duration),
    /// The first claim the server answers with a job loses its answer:
    /// the connection is reset after the server committed the claim.
    LoseFirstJob,
    /// Log uploads reach the server this much later.
    SlowLogs(Duration),
}

/// Whether [`Proxy::LoseFirstJob`] has dropped its answer yet.
static LOST_ONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A loopback HTTP proxy to `upstream`; its threads end with the test.
fn proxy(upstream: &str, mode: Proxy) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(120));
                let mut out = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if path.ends_with("/claim") {
                        let mut v: Value = serde_json::from_slice(&body).unwrap();
                        match mode {
                            Proxy::OldServer => {
                                v.as_object_mut().unwrap().remove("result");
                            }
                            Proxy::SlowResults(d) if v.get("result").is_some() => {
                                std::thread::sleep(d)
                            }
                            Proxy::SlowResults(_) | Proxy::LoseFirstJob | Proxy::SlowLogs(_) => {}
                        }
                        body = serde_json::to_vec(&v).unwrap();
                    }
                    if let Proxy::SlowLogs(d) = mode {
                        if method == "POST" && path.contains("/log?") {
                            std::thread::sleep(d);
                        }
                    }
                    let sent = (method != "GET" || !body.is_empty()).then_some(&body[..]);
                    let headers = [("Content-Type", "application/json")];
                    let url = format!("{upstream}{path}");
                    let Ok(resp) = send(&agent, &method, &url, &headers, sent) else {
                        return;
                    };
                    let status = resp.status;
                    let mut bytes = resp.body.into_bytes();
                    if matches!(mode, Proxy::LoseFirstJob)
                        && path.ends_with("/claim")
                        && status == 200
                        && !LOST_ONE.swap(true, std::sync::atomic::Ordering::SeqCst)
                    {
                        let _ = out.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if matches!(mode, Proxy::OldServer)
                        && path == "/api/v1/workers"
                        && status == 200
                    {
                        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
                        v.as_object_mut().unwrap().remove("claim_results");
                        bytes = serde_json::to_vec(&v).unwrap();
                    }
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        bytes.len()
                    );
                    if out.write_all(head.as_bytes()).is_err() || out.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn results_reach_a_server_that_ignores_results_sent_with_claims() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let proxy = proxy(&server.url, Proxy::OldServer);
    let _w = Worker::start(
        dir.path(),
        &proxy,
        "skew",
        "slots = 2\n[jobtypes.t]\ncommand = \"echo ran\"\n",
    );
    wait_online(&server, "skew");
    let ids = server.submit(&["t", "t", "t", "t"]);
    for id in &ids {
        let job = server.wait_final(*id, 20 * SEC);
        assert_eq!(job["state"], "passed", "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
    }
    // Every result went on its own, the way such a server takes them.
    let metrics = http_get(&format!("{}/metrics", server.url)).body;
    let sent_alone = metric(
        &metrics,
        "testbot_http_requests_total{route=\"/api/v1/jobs/{id}/result\",method=\"POST\",status=\"200\"}",
    );
    assert_eq!(sent_alone, Some(4.0), "{metrics}");
}

#[test]
fn a_claim_whose_answer_is_lost_gets_the_same_job_again() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let proxy = proxy(&server.url, Proxy::LoseFirstJob);
    let _w = Worker::start(
        dir.path(),
        &proxy,
        "unlucky",
        "[jobtypes.t]\ncommand = \"echo ran attempt $TESTBOT_ATTEMPT\"\n",
    );
    wait_online(&server, "unlucky");
    let ids = server.submit(&["t"]);
    // Without idempotent claims the job would sit running on nobody until
    // its lease (5 s) ran out, then run as attempt 2.
    let job = server.wait_final(ids[0], 4 * SEC);
    assert!(LOST_ONE.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(server.log_of(ids[0]), "ran attempt 1\n");
}

#[test]
fn a_cancel_reaches_a_quiet_job_within_two_seconds_whatever_the_heartbeat() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("95{}", unique() % 100_000);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "quiet",
        &format!("heartbeat_interval = \"60s\"\n[jobtypes.hang]\ncommand = \"sleep {tag}\"\n"),
    );
    wait_online(&server, "quiet");
    let ids = server.submit(&["hang"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    // Past the first held heartbeat (the server holds one at most 30 s).
    std::thread::sleep(32 * SEC);
    let t = Instant::now();
    let out = server.cli(&["cancel", &ids[0].to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let job = server.wait_final(ids[0], 20 * SEC);
    let took = t.elapsed();
    assert_eq!(job["state"], "canceled", "{job}");
    assert!(took < 2 * SEC, "the cancel took {took:?}");
    kill_tagged(&tag);
}

#[test]
fn a_restarted_worker_keeps_its_leases_while_it_delivers_what_it_left() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // Each log upload takes 2 s to get through: delivering 4 MiB takes
    // longer than a lease (5 s).
    let proxy = proxy(&server.url, Proxy::SlowLogs(Duration::from_secs(2)));
    let runs = dir.path().join("runs");
    let body = format!(
        "[jobtypes.loud]\ncommand = \"echo run >> {}; head -c 4000000 /dev/zero | tr '\\\\0' x; echo; echo END\"\n",
        runs.display()
    );
    let mut w = Worker::start(dir.path(), &proxy, "deliverer", &body);
    wait_online(&server, "deliverer");
    let id = server.submit(&["loud"])[0];
    // The job ends at once; its log is still on its way.
    assert!(wait_until(20 * SEC, || std::fs::read_to_string(&runs)
        .is_ok_and(|r| !r.is_empty())));
    std::thread::sleep(SEC);
    w.kill9();
    assert_eq!(server.job(id)["state"], "running");
    let config = w.config.clone();
    let _w = Worker::start_config(dir.path(), "deliverer", &config, &[]);
    let job = server.wait_final(id, 60 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(
        job["attempt"], 1,
        "a lease ran out during the delivery: {job}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    assert!(server.log_of(id).ends_with("END\n"));
}

#[test]
fn a_result_waiting_for_its_claim_keeps_the_jobs_lease() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // The claim carrying the result takes longer than a lease (5 s) to get
    // through; heartbeats pass meanwhile.
    let proxy = proxy(&server.url, Proxy::SlowResults(Duration::from_secs(7)));
    let _w = Worker::start(
        dir.path(),
        &proxy,
        "patient2",
        "[jobtypes.t]\ncommand = \"echo ran\"\n",
    );
    wait_online(&server, "patient2");
    let ids = server.submit(&["t"]);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "the lease ran out meanwhile: {job}");
}

#[test]
fn canceling_a_running_job_kills_its_process_group_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("96{}", unique() % 100_000);
    // A long heartbeat: the cancel must not wait for the next beat.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "victim",
        &format!("heartbeat_interval = \"60s\"\n[jobtypes.hang]\ncommand = \"echo up; sleep {tag} & wait\"\n"),
    );
    wait_online(&server, "victim");
    let ids = server.submit(&["hang"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    assert!(wait_until(10 * SEC, || !processes_with(&format!(
        "sleep {tag}"
    ))
    .is_empty()));
    std::thread::sleep(SEC);
    let t = Instant::now();
    let out = server.cli(&["cancel", &ids[0].to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let job = server.wait_final(ids[0], 20 * SEC);
    let took = t.elapsed();
    assert_eq!(job["state"], "canceled", "{job}");
    assert!(took < 5 * SEC, "cancel took {took:?}");
    let gone = wait_until(5 * SEC, || {
        processes_with(&format!("sleep {tag}")).is_empty()
    });
    kill_tagged(&tag);
    assert!(gone, "the job's process survived the cancel");
    eprintln!("canceled in {took:?}");

    // A queued job is canceled at once.
    let ids = server.submit(&["nobody-runs-this"]);
    let out = server.cli(&["cancel", &ids[0].to_string()]);
    assert!(stdout(&out).contains("canceled"), "{}", text(&out));
    assert_eq!(server.job(ids[0])["state"], "canceled");
}

#[test]
fn sigterm_drains_and_a_second_sigterm_aborts() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("95{}", unique() % 100_000);
    let body = format!(
        "slots = 2\n[jobtypes.finish]\ncommand = \"sleep 2; echo finished\"\n[jobtypes.stuck]\ncommand = \"if [ $TESTBOT_ATTEMPT = 1 ]; then sleep {tag} & wait; fi; echo retried on $TESTBOT_WORKER\"\n"
    );
    let mut w = Worker::start(dir.path(), &server.url, "drainer", &body);
    wait_online(&server, "drainer");
    let ids = server.submit(&["finish"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    let t = Instant::now();
    w.signal(libc::SIGTERM);
    // Draining: the running job finishes, nothing new is claimed.
    std::thread::sleep(Duration::from_millis(300));
    let later = server.submit(&["finish"]);
    assert_eq!(w.wait_exit(20 * SEC), Some(0), "{}", w.stderr());
    eprintln!("drained in {:?}", t.elapsed());
    assert_eq!(server.job(ids[0])["state"], "passed");
    assert!(server.log_of(ids[0]).contains("finished"));
    assert_eq!(server.job(later[0])["state"], "queued");
    server.cli(&["cancel", &later[0].to_string()]);

    // Second signal: the job is killed and queued again for another worker.
    let mut w = Worker::start(dir.path(), &server.url, "aborter", &body);
    wait_online(&server, "aborter");
    let ids = server.submit(&["stuck"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    assert!(wait_until(10 * SEC, || !processes_with(&format!(
        "sleep {tag}"
    ))
    .is_empty()));
    w.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit(20 * SEC).is_some(), "worker did not exit");
    let gone = wait_until(5 * SEC, || {
        processes_with(&format!("sleep {tag}")).is_empty()
    });
    kill_tagged(&tag);
    assert!(gone, "the aborted job's process survived");
    let job = server.job(ids[0]);
    assert_eq!(job["state"], "queued", "{job}");
    assert!(
        job["reason"].as_str().unwrap().contains("worker shut down"),
        "{job}"
    );
    let _b = Worker::start(dir.path(), &server.url, "successor", &body);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 2);
    assert!(server.log_of(ids[0]).contains("retried on successor"));
}

#[test]
fn a_restarted_worker_requeues_what_it_no_longer_runs() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("94{}", unique() % 100_000);
    let body = format!(
        "heartbeat_interval = \"60s\"\n[jobtypes.work]\ncommand = \"if [ $TESTBOT_ATTEMPT = 1 ]; then sleep {tag}; fi; echo attempt $TESTBOT_ATTEMPT\"\n"
    );
    let mut w = Worker::start(dir.path(), &server.url, "phoenix", &body);
    wait_online(&server, "phoenix");
    let ids = server.submit(&["work"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    w.kill9();
    kill_tagged(&tag);
    // Its lease would last 3 minutes; the restarted worker says at once
    // that it does not run the job any more.
    let t = Instant::now();
    let _again = Worker::start(dir.path(), &server.url, "phoenix", &body);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 2);
    assert!(t.elapsed() < 20 * SEC);
    let _: Value = job;
}

#[test]
fn a_worker_without_its_server_stops_promptly_on_sigterm() {
    let dir = tempdir();
    // Never reached: the worker retries registering with backoff.
    let mut w = Worker::start(
        dir.path(),
        "http://127.0.0.1:9",
        "orphan",
        "[jobtypes.u]\ncommand = \"true\"\n",
    );
    std::thread::sleep(3 * SEC);
    let t = Instant::now();
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(10 * SEC), Some(0), "{}", w.stderr());
    assert!(t.elapsed() < 3 * SEC, "took {:?}", t.elapsed());
    assert_eq!(
        w.stderr().matches("cannot reach").count(),
        1,
        "one line per outage: {}",
        w.stderr()
    );

    // Registered, then the server goes away: the same.
    let mut server = Server::start(dir.path());
    let mut w = Worker::start(
        dir.path(),
        &server.url,
        "stranded",
        "[jobtypes.u]\ncommand = \"true\"\n",
    );
    wait_online(&server, "stranded");
    server.kill9();
    std::thread::sleep(4 * SEC);
    let t = Instant::now();
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(10 * SEC), Some(0), "{}", w.stderr());
    assert!(t.elapsed() < 3 * SEC, "took {:?}", t.elapsed());
}

#[test]
fn logs_follow_goes_on_across_a_server_restart_and_prints_the_whole_log() {
    let dir = tempdir();
    let addr = free_addr();
    let mut server = Server::start_with(dir.path(), &addr, &[]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "ticker",
        "[jobtypes.tick]\ncommand = \"for i in $(seq 1 12); do echo tick-$i; sleep 0.5; done\"\n",
    );
    wait_online(&server, "ticker");
    let id = server.submit(&["tick"])[0];
    server.wait_state(id, "running", 20 * SEC);
    let follow = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("TESTBOT_SERVER", &server.url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let logs = follow(&["logs", "-f", &id.to_string()]);
    let submitted = follow(&["submit", "tick", "--follow"]);
    std::thread::sleep(2 * SEC);
    // Down for longer than a retry or two, then back on the same address.
    server.kill9();
    std::thread::sleep(3 * SEC);
    let server = Server::start_with(dir.path(), &addr, &[]);
    let out = logs.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let want: String = (1..=12).map(|i| format!("tick-{i}\n")).collect();
    assert_eq!(stdout, want, "{stderr}");
    assert!(stderr.contains("going on from byte"), "{stderr}");
    assert_eq!(server.job(id)["state"], "passed");
    // submit --follow: every line of its job, once, then its ending.
    let out = submitted.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for i in 1..=12 {
        assert_eq!(
            stdout.matches(&format!("tick-{i}\n")).count(),
            1,
            "tick-{i}: {stdout}\n{stderr}"
        );
    }
}

#[test]
fn a_stopped_job_gets_its_grace_period_even_when_its_shell_dies_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let script = dir.path().join("cleanup.sh");
    // The job's shell does not exec the script (`cd . &&`), so it dies of
    // the TERM at once; the script traps it and needs a moment to clean up
    // (the test workers' kill_grace is 1s).
    std::fs::write(
        &script,
        "trap 'sleep 0.3; echo CLEAN > \"$MARKER\"; exit 0' TERM\necho ready > \"$MARKER\"\nwhile true; do sleep 0.1; done\n",
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "graceful",
        &format!(
            "[jobtypes.clean]\ncommand = \"cd . && MARKER={}/marker-$TESTBOT_JOB_ID sh {}\"\n",
            dir.path().display(),
            script.display()
        ),
    );
    wait_online(&server, "graceful");
    let marker = |id: i64| dir.path().join(format!("marker-{id}"));
    // A timeout, then a cancel: both let the cleanup finish.
    let timed = server.submit(&["clean", "--timeout", "1s"])[0];
    let job = server.wait_final(timed, 30 * SEC);
    assert_eq!(job["state"], "timed_out", "{job}");
    assert_eq!(std::fs::read_to_string(marker(timed)).unwrap(), "CLEAN\n");
    let canceled = server.submit(&["clean"])[0];
    assert!(wait_until(20 * SEC, || marker(canceled).exists()));
    assert!(server
        .cli(&["cancel", &canceled.to_string()])
        .status
        .success());
    let job = server.wait_final(canceled, 30 * SEC);
    assert_eq!(job["state"], "canceled", "{job}");
    assert_eq!(
        std::fs::read_to_string(marker(canceled)).unwrap(),
        "CLEAN\n"
    );
}

/// A proxy to `target` whose answers are thrown away while `drop` is set
/// (the connections stay open: a network that loses packets without a
/// reset). Returns its URL.
fn dropping_proxy(target: &str, drop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().take(200) {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&target) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            let drop = drop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                loop {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !drop.load(Ordering::SeqCst) && client.write_all(&buf[..n]).is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn answers_lost_on_the_way_for_a_moment_cost_a_running_job_nothing() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let drop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = dropping_proxy(&server.url, drop.clone());
    let _w = Worker::start(
        dir.path(),
        &proxy,
        "lossy",
        "heartbeat_interval = \"2s\"\n[jobtypes.quiet]\ncommand = \"sleep 9\"\n",
    );
    wait_online(&server, "lossy");
    let id = server.submit(&["quiet"])[0];
    server.wait_state(id, "running", 20 * SEC);
    std::thread::sleep(SEC);
    // 2.5 s of answers lost: less than the 6 s lease.
    drop.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    drop.store(false, std::sync::atomic::Ordering::SeqCst);
    let job = server.wait_final(id, 60 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "the job ran again: {job}");
}
