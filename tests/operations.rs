//! Running testbot as a service: metrics, JSON logs, retention, backup,
//! completions, the disk guard, and tidy tables.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn metrics_after_jobs_pass_and_fail() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "metered",
        "[jobtypes.ok]\ncommand = \"echo fine\"\n[jobtypes.bad]\ncommand = \"echo broken; exit 1\"\n",
    );
    wait_online(&server, "metered");
    server.cli(&["submit", "--wait", "ok", "ok", "bad"]);
    server.submit(&["nobody-runs-this"]);
    let text = http_get(&format!("{}/metrics", server.url)).body;
    for name in [
        "testbot_jobs",
        "testbot_oldest_queued_job_age_seconds",
        "testbot_dispatch_latency_seconds",
        "testbot_job_duration_seconds",
        "testbot_workers",
        "testbot_http_requests",
        "testbot_log_bytes_stored",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    assert_eq!(
        metric(&text, "testbot_jobs{jobtype=\"ok\",state=\"passed\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "testbot_jobs{jobtype=\"bad\",state=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "testbot_jobs{jobtype=\"nobody-runs-this\",state=\"queued\"}"
        ),
        Some(1.0)
    );
    assert!(metric(
        &text,
        "testbot_oldest_queued_job_age_seconds{jobtype=\"nobody-runs-this\"}"
    )
    .is_some());
    assert_eq!(
        metric(&text, "testbot_dispatch_latency_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "testbot_job_duration_seconds_count{jobtype=\"ok\"}"),
        Some(2.0)
    );
    assert_eq!(metric(&text, "testbot_workers{status=\"idle\"}"), Some(1.0));
    // "fine\n" twice and "broken\n".
    assert_eq!(metric(&text, "testbot_log_bytes_stored"), Some(17.0));
    assert!(
        // Three jobs claimed (their results went with the next claims).
        metric(&text, "testbot_http_requests_total{route=\"/api/v1/workers/{name}/claim\",method=\"POST\",status=\"200\"}")
            == Some(3.0),
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.starts_with('#') || l.starts_with("testbot_")),
        "{text}"
    );
}

#[test]
fn json_logs_name_the_job_and_attempt() {
    let dir = tempdir();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--log-format", "json"]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "logger",
        "[jobtypes.ok]\ncommand = \"true\"\n",
    );
    wait_online(&server, "logger");
    let ids = server.submit(&["ok"]);
    server.wait_final(ids[0], 20 * SEC);
    let log = server.log_text();
    let mut claimed = false;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "job claimed" {
            assert_eq!(v["fields"]["job"], ids[0]);
            assert_eq!(v["fields"]["attempt"], 1);
            claimed = true;
        }
    }
    assert!(claimed, "{log}");
}

#[test]
fn retention_removes_old_jobs_and_keeps_new_ones() {
    let dir = tempdir();
    // Keep finished jobs for 3 seconds; look every second.
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--keep-days", "0.0000347", "--retention-interval", "1s"],
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "keeper",
        "[jobtypes.ok]\ncommand = \"echo output\"\n",
    );
    wait_online(&server, "keeper");
    let old = server.submit(&["ok", "--build", "old"]);
    server.wait_final(old[0], 20 * SEC);
    let waiting = server.submit(&["nobody-runs-this"]);
    std::thread::sleep(4 * SEC);
    let new = server.submit(&["ok"]);
    server.wait_final(new[0], 20 * SEC);
    let gone = wait_until(10 * SEC, || {
        http_get(&format!("{}/api/v1/jobs/{}", server.url, old[0])).status == 404
    });
    assert!(gone, "the old job was kept");
    assert_eq!(server.job(new[0])["state"], "passed");
    assert!(server.log_of(new[0]).contains("output"));
    assert_eq!(
        server.job(waiting[0])["state"],
        "queued",
        "a queued job was deleted"
    );
    let log = http_get(&format!("{}/api/v1/jobs/{}/log", server.url, old[0]));
    assert_eq!(log.status, 404);
    assert!(
        server.get("/api/v1/builds").as_array().unwrap().is_empty(),
        "the empty build stayed"
    );
}

#[test]
fn keep_days_that_would_delete_all_history_are_refused() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let id = server.submit(&["nobody-runs-this"])[0];
    server.cli(&["cancel", &id.to_string()]);
    assert_eq!(server.job(id)["state"], "canceled");
    assert_eq!(server.signal_and_wait(libc::SIGTERM, 20 * SEC), Some(0));
    for bad in ["-1", "0", "NaN", "inf", "1e15", "ten"] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&server.db)
            .arg(format!("--keep-days={bad}"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            stderr(&out).contains("--keep-days"),
            "{bad}: {}",
            text(&out)
        );
    }
    let server = Server::start(dir.path());
    assert_eq!(
        server.job(id)["state"],
        "canceled",
        "the history was deleted"
    );
}

#[test]
fn a_backup_taken_under_load_is_served_by_a_fresh_server() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "busy",
        "slots = 2\n[jobtypes.ok]\ncommand = \"echo job $TESTBOT_JOB_ID\"\n",
    );
    wait_online(&server, "busy");
    let before = server.submit(&["ok", "ok", "ok"]);
    for id in &before {
        server.wait_final(*id, 20 * SEC);
    }
    // Keep submitting while the backup is taken.
    let url = server.url.clone();
    let load = std::thread::spawn(move || {
        for _ in 0..60 {
            let _ = cli(&url, &["submit", "ok"]);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let out_path = dir.path().join("copy.db");
    let out = server.cli(&["backup", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    load.join().unwrap();

    let copy_dir = tempdir();
    std::fs::copy(&out_path, copy_dir.path().join("testbot.db")).unwrap();
    let fresh = Server::start(copy_dir.path());
    for id in &before {
        let job = fresh.job(*id);
        assert_eq!(job["state"], "passed", "{job}");
        assert_eq!(job["result"]["exit_code"], 0);
        assert!(fresh.log_of(*id).contains(&format!("job {id}")));
    }
    // The original serves on.
    assert_eq!(server.get("/api/v1/health")["ok"], true);
}

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = stdout(&out);
        for sub in [
            "serve",
            "worker",
            "submit",
            "status",
            "logs",
            "cancel",
            "backup",
            "completions",
        ] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(stdout(&out).starts_with("testbot "), "{}", text(&out));
}

#[test]
fn a_worker_short_of_disk_claims_nothing_and_says_why() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "cramped",
        "min_free_disk = \"1000TiB\"\n[jobtypes.ok]\ncommand = \"true\"\n",
    );
    wait_online(&server, "cramped");
    let ids = server.submit(&["ok"]);
    let ok = wait_until(15 * SEC, || {
        server.get("/api/v1/workers/cramped")["info"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("min_free_disk"))
    });
    assert!(ok, "the heartbeat did not say why");
    assert_eq!(server.job(ids[0])["state"], "queued");
}

#[test]
fn tables_fit_80_columns_without_colour_off_a_terminal() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let long = "j".repeat(60);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        &"w".repeat(50),
        &format!("[jobtypes.{long}]\ncommand = \"true\"\n"),
    );
    wait_online(&server, &"w".repeat(50));
    server.cli(&["submit", "--wait", &long]);
    for args in [
        vec!["status", "--workers"],
        vec!["status", "--jobs"],
        vec!["status", "--builds"],
        vec!["status"],
    ] {
        let out = server.cli(&args);
        let text = stdout(&out);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{args:?}: {line}");
        }
        assert!(!text.contains('\x1b'), "colour off a terminal");
    }
}

#[test]
fn two_workers_cannot_share_a_work_dir() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let body = "[jobtypes.t]\ncommand = \"true\"\n";
    let mut first = Worker::start(dir.path(), &server.url, "first", body);
    wait_online(&server, "first");
    // Same work_dir, another name.
    let shared_dir = dir.path().join("work-first");
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nname = \"second\"\nwork_dir = \"{}\"\n{body}",
            server.url,
            shared_dir.display()
        ),
    )
    .unwrap();
    let mut second = Worker::start_config(dir.path(), "second", &config, &[]);
    assert_eq!(second.wait_exit(10 * SEC), Some(2));
    let err = second.stderr();
    assert!(
        err.contains("in use by another testbot worker") && err.contains("work-first"),
        "{err}"
    );
    // The first worker still runs jobs; once it has stopped, the work_dir
    // is free again.
    let ids = server.submit(&["t"]);
    server.wait_state(ids[0], "passed", 20 * SEC);
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(10 * SEC), Some(0));
    let _again = Worker::start_config(dir.path(), "second", &config, &[]);
    wait_online(&server, "second");
}
