//! The foundation end to end: a real server, real workers with temp
//! configs running real shell commands, and the real CLI.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn passing_and_failing_jobs_exit_by_their_outcome() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w1",
        "[jobtypes.ok]\ncommand = \"echo all good\"\n[jobtypes.bad]\ncommand = \"echo broken >&2; exit 3\"\n",
    );
    wait_online(&server, "w1");

    let out = server.cli(&["submit", "--wait", "ok"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = stdout(&out);
    assert!(
        line.contains("ok") && line.contains("passed") && line.contains("w1"),
        "{line}"
    );

    let out = server.cli(&["submit", "--wait", "ok", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = stdout(&out);
    assert!(lines.contains("failed"), "{lines}");
    assert!(lines.contains("passed"), "{lines}");

    // The failed job's record: exit code, reason, and its stderr in the log.
    let jobs: Value = serde_json::from_str(&stdout(
        &server.cli(&["status", "--jobs", "--state", "failed", "--json"]),
    ))
    .unwrap();
    let failed = &jobs.as_array().unwrap()[0];
    assert_eq!(failed["jobtype"], "bad");
    assert_eq!(failed["result"]["exit_code"], 3);
    assert_eq!(failed["result"]["passed"], false);
    assert!(server
        .log_of(failed["id"].as_i64().unwrap())
        .contains("broken"));

    // --json prints the jobs with their numeric ids.
    let out = server.cli(&["submit", "--json", "ok"]);
    let jobs: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(jobs[0]["id"].as_i64().unwrap() > 0);
    assert_eq!(jobs[0]["state"], "queued");
}

#[test]
fn jobs_are_routed_by_platform_requirements() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let body = |device: &str| {
        format!("[platform]\ndevice = \"{device}\"\n[jobtypes.unit]\ncommand = \"echo on $TESTBOT_WORKER\"\n")
    };
    let _a = Worker::start(dir.path(), &server.url, "phone", &body("N900"));
    let _b = Worker::start(dir.path(), &server.url, "tablet", &body("iPad-2"));
    wait_online(&server, "phone");
    wait_online(&server, "tablet");

    for _ in 0..3 {
        let ids = server.submit(&["unit", "-p", "device=iPad*"]);
        let job = server.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["worker"], "tablet", "{job}");
        assert_eq!(job["matched_platform"]["device"], "iPad-2");
        assert_eq!(job["requirements"]["device"], "iPad*");
        let ids = server.submit(&["unit", "-p", "device=N900", "-p", "os.family=*"]);
        let job = server.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["worker"], "phone", "{job}");
        assert!(server.log_of(ids[0]).contains("on phone"));
    }
}

#[test]
fn a_job_no_worker_can_run_stays_queued_and_is_listed() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "linux1",
        "[jobtypes.unit]\ncommand = \"true\"\n",
    );
    wait_online(&server, "linux1");

    let out = server.cli(&["submit", "unit", "-p", "os.family=plan9"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id: i64 = stdout(&out).trim().parse().unwrap();
    assert!(stderr(&out).contains("warning"), "{}", text(&out));
    assert!(stderr(&out).contains("os.family"), "{}", text(&out));

    let out = server.cli(&["submit", "no-such-type"]);
    assert!(
        stderr(&out).contains("no registered worker has the jobtype"),
        "{}",
        text(&out)
    );

    // A runnable job submitted after it still runs; the stuck one waits.
    let ok = server.submit(&["unit"]);
    server.wait_state(ok[0], "passed", 20 * SEC);
    std::thread::sleep(SEC);
    assert_eq!(server.job(id)["state"], "queued");
    let out = server.cli(&["status", "--jobs", "--state", "queued"]);
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&id.to_string())),
        "{listed}"
    );
}

#[test]
fn a_multi_platform_worker_applies_the_matched_platforms_env() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "py",
        r#"
[jobtypes.pytest]
command = "echo \"interpreter=$PYTHON\""
[[platforms]]
properties = { "python.version" = "3.11" }
env = { PYTHON = "python3.11" }
[[platforms]]
properties = { "python.version" = "3.12" }
env = { PYTHON = "python3.12" }
"#,
    );
    wait_online(&server, "py");
    let ids = server.submit(&["pytest", "-p", "python.version=3.12"]);
    let job = server.wait_state(ids[0], "passed", 20 * SEC);
    assert_eq!(job["platform_index"], 1);
    assert_eq!(job["matched_platform"]["python.version"], "3.12");
    // The job records which platform it ran on.
    assert_eq!(job["platform"]["python.version"], "3.12");
    assert!(server.log_of(ids[0]).contains("interpreter=python3.12"));

    // With no requirement the first platform in config order wins.
    let ids = server.submit(&["pytest"]);
    let job = server.wait_state(ids[0], "passed", 20 * SEC);
    assert_eq!(job["platform"]["python.version"], "3.11");
    assert!(job["requirements"].as_object().unwrap().is_empty());
    assert!(server.log_of(ids[0]).contains("interpreter=python3.11"));

    // Both platforms are registered.
    let w = server.get("/api/v1/workers/py");
    assert_eq!(w["platforms"].as_array().unwrap().len(), 2);
}

#[test]
fn params_arrive_as_literal_text_and_run_nothing() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let marker = dir.path().join("pwned");
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "safe",
        "[jobtypes.echo]\ncommand = 'printf \"%s|%s|%s\\n\" \"$TESTBOT_PARAM_A\" \"$TESTBOT_PARAM_B\" \"$TESTBOT_PARAM_WEIRD_KEY\"'\n",
    );
    wait_online(&server, "safe");
    let m = marker.display().to_string();
    let a = format!("$(touch {m}); `touch {m}`");
    let b = format!("x; touch {m}; echo 'q' \"dq\"");
    let weird = "$HOME";
    let pa = format!("a={a}");
    let pb = format!("b={b}");
    let pw = format!("weird-key={weird}");
    let ids = server.submit(&["echo", "-P", &pa, "-P", &pb, "-P", &pw]);
    server.wait_state(ids[0], "passed", 20 * SEC);
    let log = server.log_of(ids[0]);
    assert_eq!(log.trim_end(), format!("{a}|{b}|{weird}"));
    assert!(!marker.exists(), "a param was executed");
    assert_eq!(server.job(ids[0])["params"]["a"], a.as_str());
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("98{}", unique() % 100_000);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "slow",
        &format!(
            "[jobtypes.hang]\ncommand = \"echo started; sleep {tag} & wait\"\ntimeout = \"1s\"\n"
        ),
    );
    wait_online(&server, "slow");
    let started = Instant::now();
    let ids = server.submit(&["hang"]);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("timed out"));
    assert!(started.elapsed() < 15 * SEC);
    assert!(server.log_of(ids[0]).contains("started"));
    let ok = wait_until(5 * SEC, || {
        processes_with(&format!("sleep {tag}")).is_empty()
    });
    assert!(
        ok,
        "the job's child survived: {:?}",
        processes_with(&format!("sleep {tag}"))
    );

    // A job's own --timeout wins over the jobtype's.
    let ids = server.submit(&["hang", "--timeout", "2s"]);
    let job = server.wait_final(ids[0], 30 * SEC);
    assert_eq!(job["state"], "timed_out");
    assert_eq!(job["timeout"], "2s");
}

#[test]
fn two_slots_run_two_jobs_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let meet = dir.path().join("meet");
    std::fs::create_dir(&meet).unwrap();
    // Each job marks its arrival and passes only if the other arrives
    // while it is still running.
    let cmd = format!(
        "touch {m}/$TESTBOT_PARAM_ME; i=0; while [ ! -e {m}/$TESTBOT_PARAM_OTHER ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; test -e {m}/$TESTBOT_PARAM_OTHER",
        m = meet.display()
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "double",
        &format!("slots = 2\n[jobtypes.meet]\ncommand = \"{cmd}\"\n"),
    );
    wait_online(&server, "double");
    let a = server.submit(&["meet", "-P", "me=a", "-P", "other=b"]);
    let b = server.submit(&["meet", "-P", "me=b", "-P", "other=a"]);
    assert_eq!(server.wait_final(a[0], 30 * SEC)["state"], "passed");
    assert_eq!(server.wait_final(b[0], 30 * SEC)["state"], "passed");
}

#[test]
fn result_file_json_is_merged_into_the_result() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "res",
        "[jobtypes.r]\ncommand = '''echo '{\"tests\": 12, \"passed\": false, \"suite\": \"core\"}' > \"$TESTBOT_RESULT_FILE\"'''\n",
    );
    wait_online(&server, "res");
    let ids = server.submit(&["r"]);
    let job = server.wait_final(ids[0], 20 * SEC);
    assert_eq!(job["result"]["tests"], 12);
    assert_eq!(job["result"]["suite"], "core");
    // The command cannot overrule testbot's own verdict.
    assert_eq!(job["result"]["passed"], true);
    assert_eq!(job["state"], "passed");
    assert_eq!(job["result"]["worker"], "res");
    assert!(job["result"]["duration_ms"].is_u64());
    let out = server.cli(&["status", &ids[0].to_string(), "--json"]);
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["result"]["tests"], 12);
    // A command's own `tests` key is not mistaken for a JUnit report.
    let human = stdout(&server.cli(&["status", &ids[0].to_string()]));
    assert!(!human.contains("null passed"), "{human}");
    assert!(!human.contains("tests:"), "{human}");
}

#[test]
fn info_file_json_shows_in_status_workers() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "inf",
        "[info]\nrack = \"7\"\n[jobtypes.long]\ncommand = '''echo '{\"progress\": 42}' > \"$TESTBOT_INFO_FILE\"; sleep 30'''\n",
    );
    wait_online(&server, "inf");
    let ids = server.submit(&["long"]);
    let mut seen = Value::Null;
    let ok = wait_until(20 * SEC, || {
        let out = server.cli(&["status", "--workers", "--json"]);
        seen = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
        seen[0]["jobs"][0]["info"]["progress"] == 42
    });
    assert!(ok, "{seen}");
    assert_eq!(seen[0]["info"]["rack"], "7");
    assert_eq!(seen[0]["status"], "busy");
    assert_eq!(seen[0]["jobs"][0]["id"], ids[0]);
    assert_eq!(server.job(ids[0])["info"]["progress"], 42);
    server.cli(&["cancel", &ids[0].to_string()]);
    server.wait_final(ids[0], 20 * SEC);
}

#[test]
fn a_restarted_server_keeps_queued_jobs_and_finished_results() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let mut w = Worker::start(
        dir.path(),
        &server.url,
        "keep",
        "[jobtypes.unit]\ncommand = \"echo kept-output\"\n",
    );
    wait_online(&server, "keep");
    let done = server.submit(&["unit", "-P", "n=1"]);
    server.wait_state(done[0], "passed", 20 * SEC);
    w.kill9();
    let queued = server.submit(&["never-runs", "--priority", "5"]);

    assert_eq!(server.signal_and_wait(libc::SIGINT, 10 * SEC), Some(0));
    let server = Server::start(dir.path());
    let job = server.job(done[0]);
    assert_eq!(job["state"], "passed");
    assert_eq!(job["params"]["n"], "1");
    assert_eq!(job["result"]["exit_code"], 0);
    assert!(server.log_of(done[0]).contains("kept-output"));
    let q = server.job(queued[0]);
    assert_eq!(q["state"], "queued");
    assert_eq!(q["priority"], 5);
}

#[test]
fn a_killed_worker_shows_offline() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let mut w = Worker::start(
        dir.path(),
        &server.url,
        "mortal",
        "[jobtypes.unit]\ncommand = \"true\"\n",
    );
    wait_online(&server, "mortal");
    // Registering again under the same name reconnects, never duplicates.
    let mut again = Worker::start_config(dir.path(), "mortal", &w.config.clone(), &[]);
    std::thread::sleep(SEC);
    let workers = server.get("/api/v1/workers");
    assert_eq!(workers.as_array().unwrap().len(), 1);
    w.kill9();
    again.kill9();
    let ok = wait_until(20 * SEC, || {
        server.get("/api/v1/workers/mortal")["status"] == "offline"
    });
    assert!(ok, "worker never shown offline");
    let status: Value = serde_json::from_str(&stdout(&server.cli(&["status", "--json"]))).unwrap();
    assert_eq!(status["workers"]["offline"], 1);
}

#[test]
fn an_idle_worker_starts_a_new_job_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "quick",
        "heartbeat_interval = \"60s\"\n[jobtypes.unit]\ncommand = \"true\"\n",
    );
    wait_online(&server, "quick");
    // Let the worker settle into its long-poll.
    std::thread::sleep(2 * SEC);
    for _ in 0..5 {
        let ids = server.submit(&["unit"]);
        let job = server.wait_final(ids[0], 20 * SEC);
        let created = job["created_at"].as_str().unwrap();
        let started = job["started_at"].as_str().unwrap();
        let ms = |s: &str| testbot::time::parse_rfc3339(s).unwrap();
        // Claims long-poll: the job is claimed as soon as it is queued,
        // not at the next poll (which would be up to 15 s away).
        assert!(ms(started) - ms(created) < 1000, "{created} -> {started}");
    }
}

#[test]
fn unknown_commands_and_missing_programs_are_errors() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "err",
        "[jobtypes.missing]\ncommand = \"definitely-not-a-program-xyz\"\n",
    );
    wait_online(&server, "err");
    let t = Instant::now();
    let ids = server.submit(&["missing"]);
    let job = server.wait_final(ids[0], 20 * SEC);
    assert_eq!(job["state"], "error", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("not found"));
    // Retried on the same worker (no other fits) at once, each time its
    // result goes with its next claim.
    assert_eq!(job["attempt"], 3, "{job}");
    assert!(
        t.elapsed() < 5 * SEC,
        "three attempts took {:?}",
        t.elapsed()
    );
}

#[test]
fn once_runs_one_job_and_exits_by_it() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let ids = server.submit(&["flaky", "-P", "code=0"]);
    let cfg = worker_config(
        dir.path(),
        &server.url,
        "one",
        "[jobtypes.flaky]\ncommand = \"exit $TESTBOT_PARAM_CODE\"\n",
    );
    let mut w = Worker::start_config(dir.path(), "one", &cfg, &["--once"]);
    assert_eq!(w.wait_exit(30 * SEC), Some(0), "{}", w.stderr());
    assert_eq!(server.job(ids[0])["state"], "passed");

    let ids = server.submit(&["flaky", "-P", "code=4"]);
    let mut w = Worker::start_config(dir.path(), "one", &cfg, &["--once"]);
    assert_eq!(w.wait_exit(30 * SEC), Some(1), "{}", w.stderr());
    assert_eq!(server.job(ids[0])["state"], "failed");
}

#[test]
fn ctrl_c_stops_the_server_cleanly() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    server.submit(&["unit"]);
    assert_eq!(server.signal_and_wait(libc::SIGINT, 10 * SEC), Some(0));
    assert!(server.log_text().contains("shutting down"));
}

#[test]
fn serve_with_an_embedded_worker_runs_the_example_config() {
    let dir = tempdir();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/testbot.toml.example");
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--worker", example]);
    let out = server.cli(&["submit", "--wait", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id: i64 = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(server.log_of(id).contains("hello from"));
    let out = server.cli(&["submit", "--wait", "fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_job_that_removes_its_directories_does_not_break_the_next() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // Each job checks that its directories and job file are there, then
    // removes them all; the slot reuses them for the next job.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "wrecker",
        "[jobtypes.wreck]\ncommand = \"ls -d \\\"$TESTBOT_JUNIT_DIR\\\" . \\\"$TESTBOT_JOB_FILE\\\" && \
         grep -q wreck \\\"$TESTBOT_JOB_FILE\\\" && \
         rm -rf \\\"$TESTBOT_JUNIT_DIR\\\" \\\"$(dirname \\\"$TESTBOT_JOB_FILE\\\")\\\" \\\"$PWD\\\"\"\n",
    );
    wait_online(&server, "wrecker");
    for _ in 0..3 {
        let ids = server.submit(&["wreck"]);
        let job = server.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["state"], "passed", "{job}\n{}", server.log_of(ids[0]));
    }
}
