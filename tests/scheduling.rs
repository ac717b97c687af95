//! Scheduling people can reason about: constraint expressions, accept
//! rules, "why is this job waiting", drain/undrain, infrastructure
//! failures retried elsewhere, and quarantine.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

fn explain(server: &Server, id: i64) -> Value {
    server.get(&format!("/api/v1/jobs/{id}/explain"))
}

#[test]
fn version_constraints_route_jobs_and_bad_expressions_are_pointed_at() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let body = |v: &str| {
        format!("[platform]\n\"python.version\" = \"{v}\"\n[jobtypes.py]\ncommand = \"true\"\n")
    };
    let _old = Worker::start(dir.path(), &server.url, "py39", &body("3.9"));
    let _new = Worker::start(dir.path(), &server.url, "py310", &body("3.10"));
    wait_online(&server, "py39");
    wait_online(&server, "py310");
    for (expr, worker) in [
        ("python.version>=3.10", "py310"),
        ("python.version<3.10", "py39"),
        ("python.version!=3.10", "py39"),
        ("python.version=3.8|3.9", "py39"),
    ] {
        let ids = server.submit(&["py", "-p", expr]);
        let job = server.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["worker"], worker, "{expr}: {job}");
    }
    let ids = server.submit(&["py", "-p", "gpu"]);
    let e = explain(&server, ids[0]);
    assert_eq!(e["reason"], "no_platform", "{e}");
    server.cli(&["cancel", &ids[0].to_string()]);
    let ids = server.submit(&["py", "-p", "gpu!", "-p", "python.version>3.9.5"]);
    assert_eq!(server.wait_final(ids[0], 20 * SEC)["worker"], "py310");

    let out = server.cli(&["submit", "py", "-p", "python.version>="]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("expected a value after '>='"), "{err}");
    assert!(
        err.contains("python.version>=\n") && err.contains("^"),
        "{err}"
    );
    // The API refuses a bad condition too.
    let (status, body) = post(
        &server.url,
        "/api/v1/jobs",
        r#"{"jobtype":"py","platform":{"v":">="}}"#,
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn accept_rules_reserve_a_worker_for_jobs_that_ask() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _r = Worker::start(
        dir.path(),
        &server.url,
        "release-box",
        "accept = [\"pool=release\"]\n[platform]\npool = \"release\"\n[jobtypes.build]\ncommand = \"true\"\n",
    );
    let _n = Worker::start(
        dir.path(),
        &server.url,
        "any-box",
        "slots = 2\n[jobtypes.build]\ncommand = \"true\"\n",
    );
    wait_online(&server, "release-box");
    wait_online(&server, "any-box");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.extend(server.submit(&["build"]));
    }
    for id in ids {
        assert_eq!(server.wait_final(id, 20 * SEC)["worker"], "any-box");
    }
    let ids = server.submit(&["build", "-p", "pool=release"]);
    assert_eq!(server.wait_final(ids[0], 20 * SEC)["worker"], "release-box");
    let w = server.get("/api/v1/workers/release-box");
    assert_eq!(w["accept"], serde_json::json!(["pool=release"]));
}

#[test]
fn why_a_job_waits_in_every_case() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "lonely",
        "[platform]\ndevice = \"N900\"\n[jobtypes.long]\ncommand = \"sleep 30\"\n",
    );
    wait_online(&server, "lonely");

    let ids = server.submit(&["nobody"]);
    let e = explain(&server, ids[0]);
    assert_eq!(e["reason"], "no_jobtype");
    assert!(e["message"].as_str().unwrap().contains("\"nobody\""));

    let out = server.cli(&["submit", "long", "-p", "device=iPad"]);
    assert!(
        stderr(&out).contains("lonely has device=N900, the job needs device=iPad"),
        "{}",
        text(&out)
    );
    let misfit: i64 = stdout(&out).trim().parse().unwrap();
    let e = explain(&server, misfit);
    assert_eq!(e["reason"], "no_platform");
    assert_eq!(e["workers"][0]["name"], "lonely");

    let running = server.submit(&["long"]);
    server.wait_state(running[0], "running", 20 * SEC);
    let second = server.submit(&["long"]);
    let third = server.submit(&["long", "--priority", "-1"]);
    let e = explain(&server, third[0]);
    assert_eq!(e["reason"], "busy", "{e}");
    assert_eq!(e["position"], 2);
    assert_eq!(explain(&server, second[0])["position"], 1);
    assert_eq!(explain(&server, running[0])["reason"], "running");
    let human = stdout(&server.cli(&["status", &third[0].to_string()]));
    assert!(
        human.contains("waiting:") && human.contains("busy"),
        "{human}"
    );
    let page = http_get(&format!("{}/jobs/{}", server.url, third[0])).body;
    assert!(page.contains("place in queue: 2"), "{page}");

    let out = server.cli(&["worker", "drain", "lonely"]);
    assert!(out.status.success(), "{}", text(&out));
    let e = explain(&server, second[0]);
    assert_eq!(e["reason"], "unavailable", "{e}");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("lonely is draining"));
    for id in [running[0], second[0], third[0], misfit, ids[0]] {
        server.cli(&["cancel", &id.to_string()]);
    }
}

#[test]
fn drain_and_undrain_round_trip_with_a_running_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let w = Worker::start(
        dir.path(),
        &server.url,
        "drainee",
        "[jobtypes.work]\ncommand = \"sleep 2; echo done\"\n",
    );
    wait_online(&server, "drainee");
    let first = server.submit(&["work"]);
    server.wait_state(first[0], "running", 20 * SEC);
    let out = server.cli(&["worker", "drain", "drainee"]);
    assert!(stdout(&out).contains("draining"), "{}", text(&out));
    let next = server.submit(&["work"]);
    assert_eq!(server.wait_final(first[0], 20 * SEC)["state"], "passed");
    std::thread::sleep(2 * SEC);
    assert_eq!(server.job(next[0])["state"], "queued");
    let workers: Value =
        serde_json::from_str(&stdout(&server.cli(&["status", "--workers", "--json"]))).unwrap();
    assert_eq!(workers[0]["status"], "draining");
    assert_eq!(workers[0]["drained"], true);
    // Drained, it still heartbeats: never shown offline or lost.
    std::thread::sleep(3 * SEC);
    assert_eq!(server.get("/api/v1/workers/drainee")["status"], "draining");

    let out = server.cli(&["worker", "undrain", "drainee"]);
    assert!(out.status.success(), "{}", text(&out));
    let job = server.wait_final(next[0], 20 * SEC);
    assert_eq!(job["state"], "passed");
    assert_eq!(job["worker"], "drainee");
    assert!(w.stderr().is_empty() || !w.stderr().contains("panicked"));
    let out = server.cli(&["worker", "drain", "no-such-worker"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_infrastructure_failure_is_retried_on_another_worker() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _broken = Worker::start(
        dir.path(),
        &server.url,
        "broken-box",
        "[jobtypes.x]\ncommand = \"no-such-program-xyz\"\n",
    );
    let _good = Worker::start(
        dir.path(),
        &server.url,
        "good-box",
        "[jobtypes.x]\ncommand = \"echo fine on $TESTBOT_WORKER\"\n[jobtypes.hold]\ncommand = \"sleep 2\"\n",
    );
    wait_online(&server, "broken-box");
    wait_online(&server, "good-box");
    // Keep the good worker busy so the broken one takes the job first.
    let hold = server.submit(&["hold"]);
    server.wait_state(hold[0], "running", 20 * SEC);
    let ids = server.submit(&["x"]);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["worker"], "good-box");
    assert_eq!(job["attempt"], 2);
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["worker"], "broken-box");
    assert!(attempts[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not found"));

    // A test failure is never retried.
    let out = server.cli(&["submit", "--wait", "-p", "hostname=*", "hold"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn repeated_infrastructure_failures_quarantine_a_worker_until_undrained() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _q = Worker::start(
        dir.path(),
        &server.url,
        "flaky-box",
        "[jobtypes.x]\ncommand = \"no-such-program-xyz\"\n[jobtypes.ok]\ncommand = \"true\"\n",
    );
    wait_online(&server, "flaky-box");
    for _ in 0..3 {
        let ids = server.submit(&["x", "--max-attempts", "1"]);
        let job = server.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["state"], "error", "{job}");
        assert_eq!(job["result"]["state"], "error");
    }
    let w = server.get("/api/v1/workers/flaky-box");
    assert_eq!(w["status"], "quarantined", "{w}");
    assert!(w["quarantined_until"].is_string());
    let ids = server.submit(&["ok"]);
    std::thread::sleep(2 * SEC);
    assert_eq!(server.job(ids[0])["state"], "queued");
    let e = explain(&server, ids[0]);
    assert_eq!(e["reason"], "unavailable");
    assert!(
        e["message"].as_str().unwrap().contains("quarantined"),
        "{e}"
    );
    let status: Value = serde_json::from_str(&stdout(&server.cli(&["status", "--json"]))).unwrap();
    assert_eq!(status["workers"]["quarantined"], 1);

    server.cli(&["worker", "undrain", "flaky-box"]);
    assert_eq!(server.wait_final(ids[0], 20 * SEC)["state"], "passed");
    let w = server.get("/api/v1/workers/flaky-box");
    assert_eq!(w["status"], "idle");
    assert!(w["quarantined_until"].is_null());
}
