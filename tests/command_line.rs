//! The command line as a Unix user meets it: closed pipes, Ctrl-C while
//! waiting, `testbot wait`, JSON kept apart from logs, workers that stop
//! showing offline at once, server URLs without a scheme, and the messages
//! that tell a new user what happened.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

const JOBTYPES: &str = "[jobtypes.hello]\ncommand = \"echo hello $TESTBOT_JOB_ID\"\n\
    [jobtypes.fail]\ncommand = \"echo failing; exit 1\"\n\
    [jobtypes.sleep]\ncommand = \"echo sleeping; sleep 30\"\n";

fn testbot(server: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("TESTBOT_SERVER", server)
        .env_remove("TESTBOT_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Runs the CLI with its stdout read for one line and then closed.
fn into_closed_pipe(server: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = testbot(server)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // Enough output to fill a pipe: 3,000 queued jobs.
    let body: Vec<Value> = (0..3000)
        .map(|_| serde_json::json!({"jobtype": "x"}))
        .collect();
    let (code, _) = post(&server.url, "/api/v1/jobs", &Value::Array(body).to_string());
    assert_eq!(code, 201);
    for args in [
        &["status", "--jobs", "--json", "--state", "queued"][..],
        &["status", "--jobs"],
        &["completions", "bash"],
        &["status", "1", "--json"],
    ] {
        let (status, err) = into_closed_pipe(&server.url, args);
        let quiet = status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?}: {status:?}");
        assert!(err.is_empty(), "{args:?} said: {err}");
    }
}

#[test]
fn wait_blocks_until_jobs_or_builds_end_and_exits_by_their_outcome() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(dir.path(), &server.url, "waiter", JOBTYPES);
    wait_online(&server, "waiter");
    let ok = server.submit(&["hello", "hello"]);
    let out = server.cli(&["wait", &ok[0].to_string(), &ok[1].to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", text(&out));
    let built = server.cli(&["submit", "--build", "mixed", "hello", "fail"]);
    assert!(built.status.success(), "{}", text(&built));
    for args in [
        &["wait", "b1"][..],
        &["wait", "--build", "1"],
        &["wait", "--build", "b1"],
    ] {
        let out = server.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stdout(&out).contains("failed"), "{}", text(&out));
    }
    // `status --build` takes a build as `wait` shows it.
    for build in ["1", "b1"] {
        let out = server.cli(&["status", "--build", build]);
        assert_eq!(out.status.code(), Some(0), "{build}: {}", text(&out));
        assert!(stdout(&out).contains("mixed"), "{}", text(&out));
    }
    let out = server.cli(&["wait", "--json", &ok[0].to_string()]);
    let jobs: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(jobs[0]["state"], "passed");
    // `status` reads; it exits 0 whatever the jobs' states.
    assert_eq!(
        server.cli(&["status", "--build", "1"]).status.code(),
        Some(0)
    );
    let out = server.cli(&["wait", "seven"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"seven\""), "{}", text(&out));
}

#[test]
fn ctrl_c_on_submit_wait_says_which_jobs_run_on() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(dir.path(), &server.url, "sleeper", JOBTYPES);
    wait_online(&server, "sleeper");
    let mut child = testbot(&server.url)
        .args(["submit", "--wait", "sleep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    // The ids at once.
    let id = first
        .trim()
        .strip_prefix("queued: ")
        .expect(&first)
        .to_string();
    server.wait_state(id.parse().unwrap(), "running", 20 * SEC);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains(&format!("testbot wait {id}")), "{rest}");
    // The job runs on.
    assert_eq!(server.job(id.parse().unwrap())["state"], "running");
    server.cli(&["cancel", &id]);
}

#[test]
fn submit_follow_json_keeps_stdout_for_the_json() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(dir.path(), &server.url, "jsonny", JOBTYPES);
    wait_online(&server, "jsonny");
    let out = server.cli(&["submit", "--wait", "--follow", "--json", "hello"]);
    assert!(out.status.success(), "{}", text(&out));
    let jobs: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("stdout is only JSON");
    assert_eq!(jobs[0]["state"], "passed");
    assert!(stderr(&out).contains("hello"), "{}", text(&out));
}

#[test]
fn a_worker_that_stops_shows_offline_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let config = worker_config(dir.path(), &server.url, "oneshot", JOBTYPES);
    let mut w = Worker::start_config(dir.path(), "oneshot", &config, &["--once"]);
    wait_online(&server, "oneshot");
    let id = server.submit(&["hello"])[0];
    assert_eq!(w.wait_exit(30 * SEC), Some(0));
    assert_eq!(server.job(id)["state"], "passed");
    let worker = server.get("/api/v1/workers/oneshot");
    assert_eq!(worker["status"], "offline", "{worker}");
    // And the explainer does not count it as free.
    let queued = server.submit(&["hello"])[0];
    let e = server.get(&format!("/api/v1/jobs/{queued}/explain"));
    assert_ne!(e["reason"], "busy", "{e}");
    assert!(!e["message"].as_str().unwrap().contains("is free"), "{e}");
}

#[test]
fn server_urls_without_a_scheme_work_and_bad_ones_are_named() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let out = testbot(&server.addr).args(["status"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for bad in ["h:port", "ftp://x", "http://"] {
        let out = testbot(bad).args(["status"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(stderr(&out).contains(&format!("{bad:?}")), "{}", text(&out));
    }
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "server = \"ci.example.org:notaport\"\n[jobtypes.x]\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = testbot(&server.url)
        .args(["worker", "--config", config.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("key `server`"), "{}", text(&out));
    // The unreachable server's URL is said once.
    let out = testbot("127.0.0.1:9").args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out).matches("127.0.0.1:9").count(),
        1,
        "{}",
        text(&out)
    );
}

#[test]
fn messages_that_tell_a_new_user_what_happened() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(dir.path(), &server.url, "helpful", JOBTYPES);
    wait_online(&server, "helpful");
    // A mistyped jobtype: the nearest registered one is suggested.
    let out = server.cli(&["submit", "helo"]);
    assert!(
        stderr(&out).contains("did you mean \"hello\""),
        "{}",
        text(&out)
    );
    let queued: i64 = stdout(&out).trim().parse().unwrap();
    // Its log: nothing yet, and why.
    let out = server.cli(&["logs", &queued.to_string()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("is queued; it has no log yet"),
        "{}",
        text(&out)
    );
    // Zero timeouts and params that would hide each other are refused.
    let out = server.cli(&["submit", "hello", "--timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = server.cli(&["submit", "hello", "-P", "a.b=1", "-P", "a_b=2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("TESTBOT_PARAM_A_B"), "{}", text(&out));
    // An operator too many, pointed at.
    let out = server.cli(&["submit", "hello", "-p", "py>=>3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("operator"), "{}", text(&out));
    // Requirements as written; attempts as what they mean.
    let ids = server.submit(&["hello", "-p", "os.family>=a"]);
    server.wait_final(ids[0], 20 * SEC);
    let out = server.cli(&["status", &ids[0].to_string()]);
    let shown = stdout(&out);
    assert!(shown.contains("os.family>=a"), "{shown}");
    assert!(!shown.contains("of 3"), "{shown}");
    // Canceling what already ended.
    let out = server.cli(&["cancel", &ids[0].to_string()]);
    assert!(
        stderr(&out).contains("already passed; nothing to cancel"),
        "{}",
        text(&out)
    );
    // An id that names no job is said, and the ids after it are canceled.
    let queued = server.submit(&["nobody-runs-this"])[0];
    let out = server.cli(&["cancel", "999999", &queued.to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("job 999999"), "{}", text(&out));
    assert!(
        stdout(&out).contains(&format!("{queued} canceled")),
        "{}",
        text(&out)
    );
    assert_eq!(server.job(queued)["state"], "canceled");
}

#[test]
fn serve_listens_before_it_touches_the_database_and_one_file_has_one_server() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // A port that is taken: refused, and no database made for nothing.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let db = other.join("testbot.db");
    let out = testbot(&server.url)
        .args([
            "serve",
            "--listen",
            &server.addr,
            "--db",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("cannot listen"), "{}", text(&out));
    assert!(!db.exists(), "a database was made before listening");
    // A second server on the first one's database: refused, naming both.
    let out = testbot(&server.url)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            server.db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(&server.db.display().to_string()), "{err}");
    assert!(err.contains(&server.url), "{err}");
}

#[test]
fn help_shows_each_command_what_it_reads_with_defaults() {
    let help = |args: &[&str]| {
        let out = testbot("http://127.0.0.1:9").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        stdout(&out)
    };
    let status = help(&["status", "--help"]);
    let globals = status
        .split_once("Global options:")
        .map(|(_, g)| g.to_string())
        .unwrap_or_else(|| panic!("no global options heading: {status}"));
    for flag in ["--server <URL>", "--token <TOKEN>", "--ca-file <FILE>"] {
        assert!(
            globals.contains(flag),
            "{flag} not under the heading: {status}"
        );
    }
    let flat = status.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("[default: http://127.0.0.1:8080] [env: TESTBOT_SERVER]"),
        "{status}"
    );
    // serve reads --token (for its embedded workers) but no server URL.
    let serve = help(&["serve", "--help"]);
    assert!(
        !serve.contains("--server") && !serve.contains("--ca-file"),
        "{serve}"
    );
    assert!(serve.contains("--token <TOKEN>"), "{serve}");
    let completions = help(&["completions", "--help"]);
    for flag in ["--server", "--token", "--ca-file"] {
        assert!(!completions.contains(flag), "{completions}");
    }
    let worker = help(&["worker", "--help"]);
    assert!(worker.contains("worker token"), "{worker}");
    // Arguments are described; defaults are said.
    let logs = help(&["logs", "--help"]);
    assert!(logs.contains("<JOB_ID>  The job"), "{logs}");
    let drain = help(&["worker", "drain", "--help"]);
    assert!(
        drain
            .lines()
            .any(|l| l.trim_start().starts_with("<NAME>  ")),
        "{drain}"
    );
    let submit = help(&["submit", "--help"]);
    assert!(
        submit.contains("default 3") || submit.contains("[default: 3]"),
        "{submit}"
    );
    // The hidden options are still taken where they always were.
    let out = testbot("http://127.0.0.1:9")
        .args(["--server", "127.0.0.1:9", "completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn clients_and_workers_move_to_the_next_server_in_their_list() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // Nothing listens on port 9: the first server in each list is down.
    let dead = "http://127.0.0.1:9";
    let config = worker_config(dir.path(), "unused", "lister", JOBTYPES);
    let body = std::fs::read_to_string(&config).unwrap().replace(
        "server = \"unused\"",
        &format!("server = [\"{dead}\", \"{}\"]", server.url),
    );
    std::fs::write(&config, body).unwrap();
    let w = Worker::start_config(dir.path(), "lister", &config, &[]);
    wait_online(&server, "lister");
    // Each says which server it moved to, and why.
    let moved = format!("{dead} did not answer");
    let now = format!("using {} now", server.url);
    assert!(
        wait_until(10 * SEC, || w.stderr().contains(&moved)),
        "{}",
        w.stderr()
    );
    assert!(w.stderr().contains(&now), "{}", w.stderr());
    let list = format!("{dead},{}", server.url);
    let out = testbot(&list)
        .args(["submit", "--wait", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = testbot("unused")
        .args([
            "--server",
            dead,
            "--server",
            &server.url,
            "status",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains(&moved), "{}", text(&out));
    assert!(stderr(&out).contains(&now), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout stays JSON");
    // A list with a bad URL is refused, naming it.
    let out = testbot(&format!("{},http://x:0", server.url))
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("http://x:0"), "{}", text(&out));
}

#[test]
fn text_from_the_server_cannot_drive_the_terminal() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let evil = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nfake line";
    let body = serde_json::json!({
        "name": evil,
        "jobs": [{"jobtype": "nobody-runs-this", "params": {"p": evil}}],
    });
    let (code, build) = post(&server.url, "/api/v1/builds", &body.to_string());
    assert_eq!(code, 201, "{build}");
    let job = build["jobs"][0]["id"].as_i64().unwrap().to_string();
    let b = build["id"].to_string();
    for args in [
        vec!["status", "--builds"],
        vec!["status", "--build", &b],
        vec!["status", &job],
        vec!["status"],
    ] {
        let out = server.cli(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let shown = stdout(&out);
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\r'),
            "{args:?}: {shown:?}"
        );
        assert!(
            !shown.lines().any(|l| l.starts_with("fake line")),
            "{args:?}: {shown}"
        );
    }
    assert!(stdout(&server.cli(&["status", &job])).contains("\\u{1b}"));
}

/// A proxy to `target` that, for its first `lose` connections, passes the
/// request on and cuts the connection as the answer begins (the server has
/// done what was asked; the client never hears it); later ones pass both
/// ways. Returns its URL.
fn lossy_proxy(target: &str, lose: usize) -> String {
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate().take(50) {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&target) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            if n < lose {
                let mut first = [0u8; 1];
                let _ = server.read(&mut first);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            } else {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.flush();
                    let _ = client.shutdown(Shutdown::Both);
                });
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_submission_whose_answer_is_lost_is_sent_again_and_made_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let proxy = lossy_proxy(&server.url, 1);
    let out = testbot(&proxy)
        .args(["submit", "nobody-runs-this", "-P", "n=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("sending the submission again"),
        "{}",
        text(&out)
    );
    let ids: Vec<i64> = stdout(&out)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let jobs = server.get("/api/v1/jobs?jobtype=nobody-runs-this");
    let stored: Vec<i64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, ids, "the lost answer's jobs were made twice");
    // A build likewise.
    let proxy = lossy_proxy(&server.url, 1);
    let out = testbot(&proxy)
        .args(["submit", "nobody-runs-this", "--build", "once", "-P", "n=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let builds = server.get("/api/v1/builds");
    let named: Vec<&Value> = builds
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "once")
        .collect();
    assert_eq!(named.len(), 1, "{builds}");
    assert_eq!(
        server
            .get("/api/v1/jobs?jobtype=nobody-runs-this")
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn the_api_answers_a_repeated_idempotency_key_with_the_jobs_it_made() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let url = format!("{}/api/v1/jobs", server.url);
    let body = br#"[{"jobtype":"nobody-runs-this"},{"jobtype":"nobody-runs-this"}]"#;
    let key = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "abc-1"),
    ];
    let first = http("POST", &url, &key, Some(body));
    assert_eq!(first.status, 201, "{}", first.body);
    let again = http("POST", &url, &key, Some(body));
    assert_eq!(again.status, 200, "{}", again.body);
    // The same jobs, as they are now (a submit-time warning is not kept).
    let ids = |r: &Reply| -> Vec<Value> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect()
    };
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Another request under the same key is refused, naming it.
    let other = http(
        "POST",
        &url,
        &key,
        Some(br#"{"jobtype":"nobody-runs-this"}"#),
    );
    assert_eq!(other.status, 409, "{}", other.body);
    assert!(other.body.contains("abc-1"), "{}", other.body);
    // A key that cannot be one.
    for bad in ["", "has space", &"k".repeat(256)] {
        let r = http(
            "POST",
            &url,
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", bad),
            ],
            Some(body),
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert!(r.body.contains("Idempotency-Key"), "{}", r.body);
    }
    // Without a key, every request is a new submission.
    let plain = [("Content-Type", "application/json")];
    assert_eq!(http("POST", &url, &plain, Some(body)).status, 201);
    assert_eq!(http("POST", &url, &plain, Some(body)).status, 201);
    let all = server.get("/api/v1/jobs?jobtype=nobody-runs-this");
    assert_eq!(all.as_array().unwrap().len(), 6, "{all}");
}

#[test]
fn standard_output_that_cannot_be_written_is_said_in_one_line() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    for args in [
        &["status", "--jobs"][..],
        &["status", "--json"],
        &["completions", "bash"],
    ] {
        let out = testbot(&server.url)
            .args(args)
            .stdout(
                std::fs::File::options()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_log_level_that_is_not_one_is_refused() {
    let out = testbot("http://127.0.0.1:9")
        .args(["--log-level", "bogus", "completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("\"bogus\" is not a log level"),
        "{}",
        text(&out)
    );
    for ok in ["debug", "WARN", "testbot=debug,warn"] {
        let out = testbot("http://127.0.0.1:9")
            .args(["--log-level", ok, "completions", "bash"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{ok}: {}", text(&out));
    }
}
