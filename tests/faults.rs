//! Faults that lost output, reran healthy work or left processes behind,
//! each with a test that failed before: a full disk on a worker or under
//! the database, storage failures, signals to `serve --worker`, workers
//! killed with SIGKILL, results refused during a token rotation or for
//! their size, oversized info files, strikes, and work_dir ownership.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

fn kill_tagged(tag: &str) {
    for pid in processes_with(tag) {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// A worker config with its own `work_dir` and extra top-level keys.
fn config_at(dir: &Path, server: &str, name: &str, work_dir: &Path, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "server = \"{server}\"\nname = \"{name}\"\nheartbeat_interval = \"1s\"\n\
             kill_grace = \"1s\"\nwork_dir = \"{}\"\n{body}\n",
            work_dir.display()
        ),
    )
    .unwrap();
    path
}

fn health(base: &str) -> (u16, Value) {
    let r = http_get(&format!("{base}/api/v1/health"));
    (r.status, r.json())
}

#[test]
fn output_a_full_disk_cannot_keep_fails_the_job_as_the_workers_fault() {
    let dir = tempdir();
    let Some(disk) = Tmpfs::mount(&dir.path().join("small"), "4m") else {
        return;
    };
    let server = Server::start(dir.path());
    let config = config_at(
        dir.path(),
        &server.url,
        "small",
        &disk.0,
        "min_free_disk = \"0\"\n[jobtypes.fill]\n\
         command = \"head -c 8000000 /dev/zero > fill; seq 1 300; exit 0\"\n",
    );
    let mut w = Worker::start_config(dir.path(), "small", &config, &[]);
    wait_online(&server, "small");
    let id = server.submit(&["fill", "--max-attempts", "1"])[0];
    let job = server.wait_final(id, 30 * SEC);
    // Not `passed` with an empty log: the worker's failure, said so.
    assert_eq!(job["state"], "error", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(reason.contains("worker disk full"), "{reason}");
    assert!(
        reason.contains("bytes of output could not be kept"),
        "{reason}"
    );
    w.kill9();
    drop(w);

    // Below min_free_disk the worker claims nothing and says why.
    let Some(tight) = Tmpfs::mount(&dir.path().join("tight"), "4m") else {
        return;
    };
    std::fs::write(tight.0.join("ballast"), vec![b'#'; 3 << 20]).unwrap();
    let config = config_at(
        dir.path(),
        &server.url,
        "tight",
        &tight.0,
        "min_free_disk = \"2MiB\"\n[jobtypes.ok]\ncommand = \"echo fine\"\n",
    );
    let _w = Worker::start_config(dir.path(), "tight", &config, &[]);
    wait_online(&server, "tight");
    let id = server.submit(&["ok"])[0];
    let said = wait_until(20 * SEC, || {
        stdout(&server.cli(&["status", "--workers"])).contains("min_free_disk")
    });
    assert!(said, "{}", stdout(&server.cli(&["status", "--workers"])));
    assert_eq!(server.job(id)["state"], "queued");
    std::fs::remove_file(tight.0.join("ballast")).unwrap();
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");
}

#[test]
fn a_storage_outage_longer_than_a_lease_is_not_the_workers_fault() {
    let dir = tempdir();
    let Some(disk) = Tmpfs::mount(&dir.path().join("db"), "16m") else {
        return;
    };
    let server = Server::start(&disk.0);
    let runs = dir.path().join("runs");
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "steady",
        &format!(
            "[jobtypes.slow]\ncommand = \"echo run $TESTBOT_JOB_ID >> {}; sleep 9; echo done\"\n",
            runs.display()
        ),
    );
    wait_online(&server, "steady");
    let id = server.submit(&["slow"])[0];
    server.wait_state(id, "running", 20 * SEC);
    disk.fill("ballast");
    // Writes fail from here on (the first few may still find room).
    let big = format!(
        r#"{{"jobtype":"slow","params":{{"pad":"{}"}}}}"#,
        "x".repeat(60_000)
    );
    let refused = wait_until(10 * SEC, || {
        post(&server.url, "/api/v1/jobs", &big).0 == 503
    });
    assert!(refused, "the full disk was never noticed");
    // Longer than a lease (5 s) without a write.
    std::thread::sleep(7 * SEC);
    std::fs::remove_file(disk.0.join("ballast")).unwrap();
    let job = server.wait_final(id, 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(
        job["attempt"], 1,
        "the healthy worker's job was run again: {job}"
    );
    // (A job the refused submissions may have queued before the disk
    // filled runs too: only this one's runs count.)
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        ran.lines().filter(|l| *l == format!("run {id}")).count(),
        1,
        "the command ran twice: {job}\n{ran}\n{}",
        server.log_text()
    );
    let w = server.get("/api/v1/workers/steady");
    assert_eq!(w["infra_failures"], 0, "{w}");
}

#[test]
fn storage_failures_answer_503_with_their_cause() {
    let dir = tempdir();
    let Some(disk) = Tmpfs::mount(&dir.path().join("db"), "8m") else {
        return;
    };
    let server = Server::start(&disk.0);
    let base = server.url.clone();
    assert_eq!(health(&base).0, 200);
    disk.fill("ballast");
    let big = format!(
        r#"{{"jobtype":"x","params":{{"pad":"{}"}}}}"#,
        "x".repeat(60_000)
    );
    let mut answer = Value::Null;
    let full = wait_until(10 * SEC, || {
        let (code, body) = post(&base, "/api/v1/jobs", &big);
        answer = body;
        code == 503
    });
    assert!(full, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("disk is full"),
        "{answer}"
    );
    let (code, h) = health(&base);
    assert_eq!(code, 503, "{h}");
    assert!(h["error"].as_str().unwrap().contains("disk is full"), "{h}");
    std::fs::remove_file(disk.0.join("ballast")).unwrap();
    assert!(wait_until(5 * SEC, || health(&base).0 == 200));
    assert_eq!(post(&base, "/api/v1/jobs", r#"{"jobtype":"x"}"#).0, 201);

    // A database deleted under the server: no write goes into it again.
    let other = tempdir();
    let server = Server::start(other.path());
    std::fs::remove_file(&server.db).unwrap();
    let mut answer = Value::Null;
    let refused = wait_until(5 * SEC, || {
        let (code, body) = post(&server.url, "/api/v1/jobs", r#"{"jobtype":"x"}"#);
        answer = body;
        code == 503
    });
    assert!(refused, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("deleted"),
        "{answer}"
    );
    let (code, h) = health(&server.url);
    assert_eq!(code, 503, "{h}");
}

/// Starts `testbot serve` on `db` expecting it to refuse; its stderr.
fn refused_start(db: &Path) -> String {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("TESTBOT_SERVER")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started on {}", db.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_database_is_refused_at_start_naming_the_file() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    server.submit(&["x", "x", "x"]);
    let db = server.db.clone();
    server.signal_and_wait(libc::SIGTERM, 10 * SEC);
    // Clobber every page but the first (the header and the schema).
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let err = refused_start(&db);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains("backup"), "{err}");
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'j'; 10_000]).unwrap();
    let err = refused_start(&junk);
    assert!(err.contains(&junk.display().to_string()), "{err}");
    assert!(err.contains("not a testbot database"), "{err}");
}

#[test]
fn stopping_serve_with_an_embedded_worker_drains_it_first() {
    let dir = tempdir();
    let tag = format!("93{}", unique() % 100_000);
    let config = worker_config(
        dir.path(),
        "http://127.0.0.1:9",
        "inside",
        &format!(
            "[jobtypes.short]\ncommand = \"echo begun; sleep 2; echo finished\"\n\
             [jobtypes.long]\ncommand = \"echo begun; sleep 3{tag}\"\n"
        ),
    );
    let config = config.display().to_string();
    let mut server = Server::start_with(dir.path(), "127.0.0.1:0", &["--worker", &config]);
    wait_online(&server, "inside");
    let id = server.submit(&["short"])[0];
    server.wait_state(id, "running", 20 * SEC);
    // One signal: the running job finishes and is reported, then it stops.
    let t = Instant::now();
    assert_eq!(server.signal_and_wait(libc::SIGTERM, 20 * SEC), Some(0));
    assert!(t.elapsed() >= SEC, "it did not wait for the job");
    let mut server = Server::start_with(dir.path(), "127.0.0.1:0", &["--worker", &config]);
    let job = server.job(id);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(server.log_of(id).contains("finished"));

    // Two signals: the running job is killed and reported for retry.
    let id = server.submit(&["long"])[0];
    server.wait_state(id, "running", 20 * SEC);
    assert!(wait_until(10 * SEC, || !processes_with(&format!(
        "sleep 3{tag}"
    ))
    .is_empty()));
    server.signal(libc::SIGTERM);
    std::thread::sleep(SEC);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(20 * SEC), Some(0));
    assert!(
        wait_until(5 * SEC, || processes_with(&format!("sleep 3{tag}"))
            .is_empty()),
        "the job's processes outlived the server"
    );
    let server = Server::start(dir.path());
    let job = server.job(id);
    assert_eq!(job["state"], "queued", "{job}");
    let reason = job["attempts"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("shut down"), "{job}");
}

#[test]
fn serve_with_an_idle_embedded_worker_stops_at_once() {
    let dir = tempdir();
    let config = worker_config(
        dir.path(),
        "http://127.0.0.1:9",
        "idle-inside",
        "[jobtypes.short]\ncommand = \"echo hi\"\n",
    );
    let config = config.display().to_string();
    let mut server = Server::start_with(dir.path(), "127.0.0.1:0", &["--worker", &config]);
    wait_online(&server, "idle-inside");
    let id = server.submit(&["short"])[0];
    assert_eq!(server.wait_final(id, 20 * SEC)["state"], "passed");
    // Its worker waits in a claim: the signal must not wait for that.
    std::thread::sleep(SEC);
    let t = Instant::now();
    assert_eq!(server.signal_and_wait(libc::SIGTERM, 15 * SEC), Some(0));
    assert!(t.elapsed() < 8 * SEC, "took {:?}", t.elapsed());
}

#[test]
fn serve_whose_database_was_deleted_still_stops_at_once() {
    let dir = tempdir();
    let config = worker_config(
        dir.path(),
        "http://127.0.0.1:9",
        "orphaned-inside",
        "[jobtypes.short]\ncommand = \"echo hi\"\n",
    );
    let config = config.display().to_string();
    let mut server = Server::start_with(dir.path(), "127.0.0.1:0", &["--worker", &config]);
    wait_online(&server, "orphaned-inside");
    // The store takes no more writes, so the worker's draining heartbeat is
    // refused: its open claim must end anyway, not at its 15 s timeout.
    std::fs::remove_file(&server.db).unwrap();
    assert!(wait_until(10 * SEC, || health(&server.url).0 == 503));
    let t = Instant::now();
    assert_eq!(server.signal_and_wait(libc::SIGTERM, 30 * SEC), Some(0));
    assert!(t.elapsed() < 8 * SEC, "took {:?}", t.elapsed());
}

#[test]
fn a_worker_restarted_after_sigkill_kills_what_its_jobs_left_running() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("92{}", unique() % 100_000);
    // One process escapes the job's group (setsid): once the worker is
    // dead it is init's child, found only by the job's environment.
    let body =
        format!("[jobtypes.hang]\ncommand = \"setsid sleep 4{tag} & sleep 3{tag}; echo never\"\n");
    let mut w = Worker::start(dir.path(), &server.url, "crashy", &body);
    wait_online(&server, "crashy");
    let id = server.submit(&["hang"])[0];
    server.wait_state(id, "running", 20 * SEC);
    let needle = format!("sleep 3{tag}");
    let escaped = format!("sleep 4{tag}");
    assert!(wait_until(10 * SEC, || !processes_with(&needle).is_empty()
        && !processes_with(&escaped).is_empty()));
    // The slot records the job's group just after starting its shell; on
    // a loaded machine the shell may start the sleep first. A worker
    // killed in between leaves nothing to find: wait for the record.
    let record = dir.path().join("work-crashy/outbox/slot-0.pgid");
    assert!(wait_until(10 * SEC, || std::fs::read_to_string(&record)
        .is_ok_and(|r| !r.trim().is_empty())));
    w.kill9();
    std::thread::sleep(SEC / 2);
    let mut orphans = processes_with(&needle);
    assert!(!orphans.is_empty(), "the orphans should still run");
    orphans.extend(processes_with(&escaped));
    // Same config, same work_dir.
    let config = w.config.clone();
    let w = Worker::start_config(dir.path(), "crashy", &config, &[]);
    // Alive and not a zombie (whoever inherits them may be slow to reap).
    let alive = |pids: &[u32]| {
        pids.iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| !r.trim_start().starts_with('Z'))
                })
            })
            .count()
    };
    assert!(
        wait_until(10 * SEC, || alive(&orphans) == 0
            && w.stderr().contains("killed what an earlier run")),
        "{} of {orphans:?} alive; {}",
        alive(&orphans),
        w.stderr()
    );
    // The job runs again (attempt 2), and only that run's processes live.
    let again = wait_until(20 * SEC, || server.job(id)["attempt"] == 2);
    assert!(again, "{}", server.job(id));
    assert_eq!(alive(&orphans), 0);
    kill_tagged(&needle);
    kill_tagged(&escaped);
}

#[test]
fn a_result_refused_during_a_token_rotation_is_delivered_once_it_is_over() {
    let dir = tempdir();
    let tokens = dir.path().join("worker.tokens");
    std::fs::write(&tokens, "token-a\n").unwrap();
    let clients = dir.path().join("client.tokens");
    std::fs::write(&clients, "client\n").unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--worker-tokens",
            &tokens.display().to_string(),
            "--client-tokens",
            &clients.display().to_string(),
        ],
    );
    let token_file = dir.path().join("w.token");
    std::fs::write(&token_file, "token-a\n").unwrap();
    let runs = dir.path().join("runs");
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "rotating",
        &format!(
            "token_file = \"{}\"\n[jobtypes.t]\ncommand = \"echo run >> {}; sleep 1; echo done\"\n",
            token_file.display(),
            runs.display()
        ),
    );
    wait_online(&server, "rotating");
    let submitted = std::process::Command::new(BIN)
        .args(["submit", "t"])
        .env("TESTBOT_SERVER", &server.url)
        .env("TESTBOT_TOKEN", "client")
        .output()
        .unwrap();
    let id: i64 = stdout(&submitted).trim().parse().unwrap();
    server.wait_state(id, "running", 20 * SEC);
    // The worker's token is out while its job ends (shorter than a lease).
    std::fs::write(&tokens, "token-b\n").unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(3 * SEC);
    std::fs::write(&tokens, "token-a\n").unwrap();
    server.signal(libc::SIGHUP);
    let job = server.wait_final(id, 30 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "the result was dropped: {job}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    assert!(server.log_of(id).contains("done"));
}

#[test]
fn a_test_report_too_big_for_the_server_is_trimmed_not_lost() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // 40,000 tests with long names: over 4 MiB of per-test durations.
    let script = dir.path().join("suite.sh");
    std::fs::write(
        &script,
        r#"awk 'BEGIN {
  print "<testsuite name=\"big\">";
  for (i = 0; i < 40000; i++)
    printf "<testcase classname=\"tests.a_rather_long_module_name_for_a_test_%d\" name=\"test_with_a_long_descriptive_name_%d\" time=\"0.001\"/>\n", i, i;
  print "</testsuite>"
}' > "$TESTBOT_JUNIT_DIR/big.xml"
"#,
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "verbose",
        &format!("[jobtypes.suite]\ncommand = \"sh {}\"\n", script.display()),
    );
    wait_online(&server, "verbose");
    let id = server.submit(&["suite"])[0];
    let job = server.wait_final(id, 60 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let tests = &job["result"]["tests"];
    assert_eq!(tests["total"], 40000, "{}", job["result"]);
    let trimmed = job["result"]["trimmed"].as_str().unwrap_or_default();
    assert!(trimmed.contains("durations"), "{}", job["result"]);
}

#[test]
fn a_result_of_ten_mib_sent_by_hand_is_kept_trimmed() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let base = &server.url;
    let reg = r#"{"name": "hand", "jobtypes": ["h"], "heartbeat_interval_ms": 60000}"#;
    assert_eq!(post(base, "/api/v1/workers", reg).0, 200);
    let id = server.submit(&["h"])[0];
    assert_eq!(
        post(base, "/api/v1/workers/hand/claim", r#"{"wait": 5}"#).0,
        200
    );
    let durations: serde_json::Map<String, Value> = (0..150_000)
        .map(|i| {
            (
                format!("tests/test_module_{i}.py::test_case_{i}"),
                Value::from(i),
            )
        })
        .collect();
    let body = serde_json::json!({
        "attempt": 1, "state": "passed",
        "tests": {"total": 150000, "passed": 150000, "failed": 0, "errors": 0, "skipped": 0,
                  "failures": [], "durations": durations},
        "data": {"blob": "y".repeat(5 << 20)},
    })
    .to_string();
    assert!(body.len() > 10 << 20, "{} bytes", body.len());
    let (code, job) = post(base, &format!("/api/v1/jobs/{id}/result"), &body);
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["state"], "passed");
    assert_eq!(job["result"]["tests"]["total"], 150000);
    assert!(job["result"]["trimmed"]
        .as_str()
        .unwrap()
        .contains("150000 tests"));
    assert!(job["result"]["result_file_error"]
        .as_str()
        .unwrap()
        .contains("not kept"));
}

#[test]
fn an_info_file_too_big_or_not_a_file_costs_no_lease() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let script = dir.path().join("info.sh");
    std::fs::write(
        &script,
        r#"printf '{"big":"' > f
head -c 2000000 /dev/zero | tr '\0' x >> f
printf '"}' >> f
mv f "$TESTBOT_INFO_FILE"
sleep 7
rm "$TESTBOT_INFO_FILE"
mkfifo "$TESTBOT_INFO_FILE"
sleep 7
echo survived
"#,
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "noisy",
        &format!("[jobtypes.info]\ncommand = \"sh {}\"\n", script.display()),
    );
    wait_online(&server, "noisy");
    let id = server.submit(&["info"])[0];
    server.wait_state(id, "running", 20 * SEC);
    let noted = wait_until(6 * SEC, || {
        server.job(id)["info"]["info_error"]
            .as_str()
            .is_some_and(|e| e.contains("not sent"))
    });
    assert!(noted, "{}", server.job(id));
    let job = server.wait_final(id, 40 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    assert_eq!(job["attempt"], 1, "a lease ran out: {job}");
    assert!(server.log_of(id).contains("survived"));
}

#[test]
fn a_worker_restarted_with_three_jobs_running_takes_one_strike() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tag = format!("91{}", unique() % 100_000);
    let body = format!("slots = 3\n[jobtypes.hang]\ncommand = \"sleep 3{tag}\"\n");
    let mut w = Worker::start(dir.path(), &server.url, "busy3", &body);
    wait_online(&server, "busy3");
    let ids = server.submit(&["hang", "hang", "hang"]);
    for id in &ids {
        server.wait_state(*id, "running", 20 * SEC);
    }
    w.kill9();
    let config = w.config.clone();
    let _w = Worker::start_config(dir.path(), "busy3", &config, &[]);
    // Its registration finds the three jobs lost: one event.
    let requeued = wait_until(20 * SEC, || {
        ids.iter().all(|id| server.job(*id)["attempt"] == 2)
    });
    assert!(
        requeued,
        "{:?}",
        ids.iter().map(|i| server.job(*i)).collect::<Vec<_>>()
    );
    let worker = server.get("/api/v1/workers/busy3");
    assert_eq!(worker["infra_failures"], 1, "{worker}");
    assert_ne!(worker["status"], "quarantined", "{worker}");
    kill_tagged(&format!("sleep 3{tag}"));
}

#[test]
fn a_work_dir_that_another_user_owns_is_refused() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_err() {
        eprintln!("cannot chown (not root): skipped");
        return;
    }
    let config = config_at(
        dir.path(),
        &server.url,
        "intruded",
        &theirs,
        "[jobtypes.x]\ncommand = \"true\"\n",
    );
    let mut w = Worker::start_config(dir.path(), "intruded", &config, &[]);
    assert_eq!(w.wait_exit(10 * SEC), Some(2));
    let err = w.stderr();
    assert!(err.contains("belongs to user 65534"), "{err}");
    assert!(err.contains(&theirs.display().to_string()), "{err}");
}

#[test]
fn a_backup_leaves_nothing_in_the_temporary_directory() {
    let dir = tempdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // The server's temporary directory is one the test can look into.
    let server = Server::start_shell(
        dir.path(),
        &format!("export TMPDIR={}", tmp.display()),
        "127.0.0.1:0",
        &[],
    );
    server.submit(&["x"]);
    let out = dir.path().join("copy.db");
    let r = server.cli(&["backup", &out.display().to_string()]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
