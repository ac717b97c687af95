//! Several `testbot serve` on one PostgreSQL database behave as one server:
//! a job submitted to one is run by a worker of another, a cancel and a
//! followed log cross between them, and the rest of the API works on
//! PostgreSQL as on SQLite. Needs `TESTBOT_PG_URL` (scripts/test.sh starts a
//! private cluster); skipped only with `TESTBOT_SKIP_POSTGRES=1`.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SEC: Duration = Duration::from_secs(1);

const JOBTYPES: &str = "[jobtypes.hello]\ncommand = \"echo hello from $TESTBOT_JOB_ID\"\n\
    [jobtypes.fail]\ncommand = \"echo failing; exit 1\"\n\
    [jobtypes.slow]\ncommand = \"echo started; sleep 60\"\n\
    [jobtypes.chatty]\ncommand = \"for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done\"\n";

#[test]
fn one_server_on_postgres_runs_jobs_like_on_sqlite() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let server = Server::start_db(dir.path(), &db, &[]);
    let _w = Worker::start(dir.path(), &server.url, "pg-w", JOBTYPES);
    wait_online(&server, "pg-w");
    let out = server.cli(&["submit", "--wait", "hello", "fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let jobs = server.get("/api/v1/jobs");
    let states: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "passed"], "{jobs}");
    let passed = jobs[1]["id"].as_i64().unwrap();
    assert!(server
        .log_of(passed)
        .contains(&format!("hello from {passed}")));
    // Backups are PostgreSQL's own.
    let backup = http_get(&format!("{}/api/v1/backup", server.url));
    assert_eq!(backup.status, 409, "{}", backup.body);
    assert!(backup.body.contains("pg_dump"), "{}", backup.body);
    let log = server.log_text();
    assert!(!log.contains("testbot.db"), "{log}");
}

#[test]
fn a_job_submitted_to_one_server_runs_on_a_worker_of_another_at_once() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let _w = Worker::start(dir.path(), &b.url, "on-b", JOBTYPES);
    wait_online(&a, "on-b");
    // The worker's claim is held on b; a submit to a wakes it.
    std::thread::sleep(SEC);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let ids = a.submit(&["hello"]);
        let job = a.wait_final(ids[0], 20 * SEC);
        assert_eq!(job["state"], "passed", "{job}");
        assert_eq!(job["worker"], "on-b");
        waits.push(started.elapsed());
    }
    waits.sort();
    // Without a wake-up across servers the held claim would wait out its
    // long-poll (tens of seconds).
    assert!(waits[2] < 3 * SEC, "median submit-to-passed {:?}", waits[2]);
    // Both servers tell the same story.
    for s in [&a, &b] {
        let w = s.get("/api/v1/workers/on-b");
        assert_ne!(w["status"], "offline", "{w}");
        assert_eq!(s.get("/api/v1/status")["jobs"]["passed"], 5);
    }
}

#[test]
fn jobs_queued_together_start_at_once_on_free_slots_behind_two_servers() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let c = Server::start_db(dir.path(), &db, &[]);
    let body = format!("slots = 2\n{JOBTYPES}");
    let _w1 = Worker::start(dir.path(), &a.url, "two-on-a", &body);
    let _w2 = Worker::start(dir.path(), &b.url, "two-on-b", &body);
    wait_online(&c, "two-on-a");
    wait_online(&c, "two-on-b");
    std::thread::sleep(SEC);
    // Four held claims wake together for three jobs: the claims that find
    // them held by another claim in flight must not wait for news that
    // never comes (the jobs left queued are announced by nobody).
    for round in 0..5 {
        let ids = c.submit(&["slow", "slow", "slow"]);
        let running = wait_until(5 * SEC, || {
            ids.iter().all(|id| c.job(*id)["state"] == "running")
        });
        let states: Vec<serde_json::Value> =
            ids.iter().map(|id| c.job(*id)["state"].clone()).collect();
        assert!(running, "round {round}: {states:?}");
        let mut args = vec!["cancel".to_string()];
        args.extend(ids.iter().map(|i| i.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.cli(&args);
        for id in &ids {
            c.wait_final(*id, 30 * SEC);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_wait_on_one_server_answers_when_a_job_ends_through_another() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let _w = Worker::start(dir.path(), &a.url, "on-a", JOBTYPES);
    wait_online(&b, "on-a");
    std::thread::sleep(SEC);
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = b.cli(&["submit", "--wait", "hello"]);
        assert!(out.status.success(), "{}", text(&out));
        took.push(started.elapsed());
    }
    took.sort();
    // Told by the server that recorded the result, not found by a look a
    // second later.
    assert!(took[2] < Duration::from_millis(900), "{took:?}");
}

#[test]
fn a_followed_log_goes_on_from_the_next_server_when_its_server_dies() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let mut a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let _w = Worker::start(dir.path(), &b.url, "steady", JOBTYPES);
    wait_online(&a, "steady");
    let ids = b.submit(&["chatty"]);
    let running = wait_until(20 * SEC, || b.job(ids[0])["state"] == "running");
    assert!(running, "{}", b.job(ids[0]));
    let mut follow = Command::new(BIN)
        .args(["logs", "-f", &ids[0].to_string()])
        .env("TESTBOT_SERVER", format!("{},{}", a.url, b.url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    // The follower reads through a; a dies while the job still prints.
    std::thread::sleep(Duration::from_millis(400));
    a.kill9();
    let deadline = Instant::now() + 30 * SEC;
    while Instant::now() < deadline && matches!(follow.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let status = follow.wait().unwrap();
    let out = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    for i in 1..=5 {
        assert_eq!(out.matches(&format!("line {i}\n")).count(), 1, "{out}");
    }
}

#[test]
fn cancel_and_followed_logs_cross_servers() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let _w = Worker::start(dir.path(), &b.url, "crosser", JOBTYPES);
    wait_online(&a, "crosser");

    // `logs -f` through a follows a job streamed through b.
    let ids = a.submit(&["chatty"]);
    let mut follow = Command::new(BIN)
        .args(["logs", "-f", &ids[0].to_string()])
        .env("TESTBOT_SERVER", &a.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + 30 * SEC;
    while Instant::now() < deadline && matches!(follow.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let out = reader.join().unwrap();
    for i in 1..=5 {
        assert!(out.contains(&format!("line {i}")), "{out}");
    }

    // A cancel sent to a reaches the job its worker runs through b.
    let ids = a.submit(&["slow"]);
    let running = wait_until(20 * SEC, || a.job(ids[0])["state"] == "running");
    assert!(running, "{}", a.job(ids[0]));
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    let out = a.cli(&["cancel", &ids[0].to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let job = a.wait_final(ids[0], 10 * SEC);
    assert_eq!(job["state"], "canceled", "{job}");
    assert!(
        sent.elapsed() < 2 * SEC,
        "the cancel took {:?} to end the job",
        sent.elapsed()
    );
}

#[test]
fn workers_fail_over_when_a_server_is_killed_and_every_job_runs_once() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let mut a = Server::start_db(dir.path(), &db, &[]);
    let b = Server::start_db(dir.path(), &db, &[]);
    let ran = dir.path().join("ran.txt");
    let body = format!(
        "slots = 2\n[jobtypes.count]\ncommand = \"echo $TESTBOT_JOB_ID >> {}; sleep 0.05\"\n",
        ran.display()
    );
    // Each worker starts on a different server and knows both.
    let both = |first: &Server, second: &Server| format!("[\"{}\", \"{}\"]", first.url, second.url);
    let config = |name: &str, servers: String| {
        let path = worker_config(dir.path(), "unused", name, &body);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("server = \"unused\"", &format!("server = {servers}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let _wa = Worker::start_config(dir.path(), "fa", &config("fa", both(&a, &b)), &[]);
    let _wb = Worker::start_config(dir.path(), "fb", &config("fb", both(&b, &a)), &[]);
    wait_online(&b, "fa");
    wait_online(&b, "fb");
    let body: Vec<serde_json::Value> = (0..300)
        .map(|_| serde_json::json!({"jobtype": "count"}))
        .collect();
    let (code, jobs) = post(
        &a.url,
        "/api/v1/jobs",
        &serde_json::to_string(&body).unwrap(),
    );
    assert_eq!(code, 201, "the submit was refused");
    let ids: Vec<i64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 300);
    // Kill a with jobs in flight on both workers.
    let some_done = wait_until(60 * SEC, || {
        std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .count()
            >= 60
    });
    assert!(some_done, "jobs did not start");
    a.kill9();
    let all_done = wait_until(120 * SEC, || {
        b.get("/api/v1/status")["jobs"]["passed"].as_u64() == Some(300)
    });
    let status = b.get("/api/v1/status");
    assert!(all_done, "not every job passed: {status}");
    let ran = std::fs::read_to_string(&ran).unwrap();
    let mut seen: Vec<i64> = ran.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(seen.len(), 300, "some command ran twice (or not at all)");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 300, "some command ran twice");
    for id in ids {
        let job = b.job(id);
        assert_eq!(job["state"], "passed", "{job}");
    }
}

#[test]
fn db_copy_moves_a_database_from_sqlite_to_postgres_and_back() {
    let Some(pg) = postgres_db() else { return };
    let dir = tempdir();
    let sqlite = dir.path().join("first.db");
    let sqlite = sqlite.to_str().unwrap();
    // History on SQLite: passed and failed jobs in a build, with logs.
    let ids = {
        let server = Server::start_db(dir.path(), sqlite, &[]);
        let _w = Worker::start(dir.path(), &server.url, "mover", JOBTYPES);
        wait_online(&server, "mover");
        let out = server.cli(&["submit", "--build", "moving", "--wait", "hello", "fail"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        server.submit(&["nobody-has-this"])
    };
    let copy = |from: &str, to: &str| {
        Command::new(BIN)
            .args(["db", "copy", "--from", from, "--to", to])
            .output()
            .unwrap()
    };
    let out = copy(sqlite, &pg);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("3 jobs"), "{}", text(&out));
    // The copy serves as the original did, and goes on numbering.
    {
        let server = Server::start_db(dir.path(), &pg, &[]);
        let jobs = server.get("/api/v1/jobs");
        assert_eq!(jobs.as_array().unwrap().len(), 3, "{jobs}");
        let passed = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["state"] == "passed")
            .unwrap();
        let id = passed["id"].as_i64().unwrap();
        assert!(server.log_of(id).contains(&format!("hello from {id}")));
        assert_eq!(server.job(ids[0])["state"], "queued");
        assert_eq!(server.get("/api/v1/builds")[0]["name"], "moving");
        assert!(server.get("/api/v1/workers/mover")["name"] == "mover");
        let new = server.submit(&["hello"]);
        assert_eq!(new[0], 4, "ids go on after the copied ones");
    }
    // A non-empty target is refused; back to a new SQLite file works.
    let out = copy(sqlite, &pg);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("not empty"), "{}", text(&out));
    let back = dir.path().join("back.db");
    let out = copy(&pg, back.to_str().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("4 jobs"), "{}", text(&out));
    let server = Server::start_db(dir.path(), back.to_str().unwrap(), &[]);
    assert_eq!(server.get("/api/v1/jobs").as_array().unwrap().len(), 4);
}

#[test]
fn a_database_that_goes_away_is_reported_and_the_server_recovers() {
    let Some(db) = postgres_db() else { return };
    let dir = tempdir();
    let server = Server::start_db(dir.path(), &db, &[]);
    let first = server.submit(&["hello"]);
    let name = db.rsplit('/').next().unwrap().to_string();
    let admin = std::env::var("TESTBOT_PG_URL").unwrap();
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let set_open = |c: &mut postgres::Client, open: bool| {
        c.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {open}"))
            .unwrap();
        if !open {
            c.batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .unwrap();
        }
    };
    set_open(&mut c, false);
    let mut last = None;
    let down = wait_until(30 * SEC, || {
        let r = http_get(&format!("{}/api/v1/health", server.url));
        let is_down = r.status == 503;
        last = Some(r);
        is_down
    });
    let last = last.unwrap();
    assert!(down, "health never said so: {last:?}");
    assert!(last.body.contains("PostgreSQL"), "{}", last.body);
    let out = server.cli(&["submit", "hello"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stderr(&out).contains("PostgreSQL"), "{}", text(&out));
    set_open(&mut c, true);
    let up = wait_until(30 * SEC, || {
        http_get(&format!("{}/api/v1/health", server.url)).status == 200
    });
    assert!(up, "the server did not recover");
    let again = server.submit(&["hello"]);
    assert!(again[0] > first[0]);
    assert_eq!(server.job(first[0])["state"], "queued");
}
