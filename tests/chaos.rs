//! The chaos run, bounded: jobs over four workers while workers are killed
//! with SIGKILL and restarted, frozen past their lease, drained, and the
//! server is killed with SIGKILL and restarted; then it counts what was
//! lost, recorded twice, run twice (and why) and logs with gaps.
//!
//! `TESTBOT_CHAOS_JOBS=3000 cargo test --release --test chaos -- --nocapture`
//! makes the long run; the default is a short one for CI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    KillServer,
    FreezeWorker,
    DrainWorker,
}

#[test]
fn a_chaos_run_loses_nothing_and_records_nothing_twice() {
    let jobs: usize = std::env::var("TESTBOT_CHAOS_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(240);
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let addr = server.addr.clone();
    let runs = dir.path().join("runs");
    let body = format!(
        "slots = 2\n[jobtypes.c]\ncommand = \"echo $TESTBOT_JOB_ID $TESTBOT_ATTEMPT $TESTBOT_WORKER >> {}; \
         for i in 1 2 3 4 5; do echo line $i of $TESTBOT_JOB_ID; done; sleep 0.$((TESTBOT_JOB_ID % 4 + 2))\"\n",
        runs.display()
    );
    let names = ["chaos-a", "chaos-b", "chaos-c", "chaos-d"];
    let mut workers: Vec<Worker> = names
        .iter()
        .map(|n| Worker::start(dir.path(), &server.url, n, &body))
        .collect();
    for n in names {
        wait_online(&server, n);
    }
    let mut ids = Vec::new();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(500) {
        let args: Vec<&str> = chunk.iter().map(|_| "c").collect();
        ids.extend(server.submit(&args));
    }
    let kinds = [
        Fault::KillWorker,
        Fault::FreezeWorker,
        Fault::KillServer,
        Fault::DrainWorker,
    ];
    let mut faults: BTreeMap<String, u32> = BTreeMap::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 + jobs as u64 / 10);
    let mut n = 0usize;
    let all_done = |server: &Server| {
        let s: Value = serde_json::from_str(&stdout(&server.cli(&["status", "--json"])))
            .unwrap_or(Value::Null);
        let open =
            s["jobs"]["queued"].as_u64().unwrap_or(0) + s["jobs"]["running"].as_u64().unwrap_or(0);
        s.is_object() && open == 0
    };
    // Every kind of fault at least once, then on until the jobs are done.
    while (n < kinds.len() || !all_done(&server)) && Instant::now() < deadline {
        let kind = kinds[n % kinds.len()];
        let w = n % workers.len();
        *faults.entry(format!("{kind:?}")).or_default() += 1;
        match kind {
            Fault::KillWorker => {
                workers[w].kill9();
                std::thread::sleep(SEC / 2);
                let config = workers[w].config.clone();
                workers[w] = Worker::start_config(dir.path(), names[w], &config, &[]);
            }
            Fault::KillServer => {
                server.kill9();
                std::thread::sleep(SEC);
                server = Server::start_with(dir.path(), &addr, &[]);
            }
            Fault::FreezeWorker => {
                workers[w].signal(libc::SIGSTOP);
                // Past the lease (5 s): its jobs go to the others.
                std::thread::sleep(7 * SEC);
                workers[w].signal(libc::SIGCONT);
            }
            Fault::DrainWorker => {
                workers[w].signal(libc::SIGTERM);
                let code = workers[w].wait_exit(60 * SEC);
                assert_eq!(code, Some(0), "a drained worker exits 0");
                let config = workers[w].config.clone();
                workers[w] = Worker::start_config(dir.path(), names[w], &config, &[]);
            }
        }
        n += 1;
        std::thread::sleep(2 * SEC);
    }
    assert!(
        wait_until(
            deadline.saturating_duration_since(Instant::now()) + 30 * SEC,
            || all_done(&server)
        ),
        "jobs still open after the run"
    );

    // What the commands say ran: job -> [(attempt, worker)].
    let mut ran: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [id, attempt, worker] = f[..] {
            ran.entry(id.parse().unwrap())
                .or_default()
                .push((attempt.parse().unwrap(), worker.to_string()));
        }
    }
    let (mut lost, mut recorded_twice, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    let mut reruns: BTreeMap<String, u32> = BTreeMap::new();
    let mut same_attempt_twice = Vec::new();
    for &id in &ids {
        let job = server.job(id);
        if job["state"] != "passed" {
            lost.push((id, job["state"].clone(), job["reason"].clone()));
            continue;
        }
        let attempts = job["attempts"].as_array().cloned().unwrap_or_default();
        let results = attempts
            .iter()
            .filter(|a| matches!(a["state"].as_str(), Some("passed" | "failed")))
            .count();
        if results != 1 {
            recorded_twice.push(id);
        }
        let runs = ran.get(&id).cloned().unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for (attempt, _) in &runs {
            if !seen.insert(*attempt) {
                same_attempt_twice.push((id, *attempt));
            }
        }
        if runs.len() > 1 {
            // Every extra run must follow an attempt the server gave up on.
            for a in attempts
                .iter()
                .filter(|a| a["state"] == "lost" || a["state"] == "error")
            {
                let why = a["reason"].as_str().unwrap_or("?").to_string();
                *reruns.entry(why).or_default() += 1;
            }
            if attempts.len() < runs.len() {
                *reruns.entry("unexplained".into()).or_default() += 1;
            }
        }
        let log = server.log_of(id);
        let want: String = (1..=5).map(|i| format!("line {i} of {id}\n")).collect();
        if log != want {
            gaps.push((id, log));
        }
    }
    eprintln!(
        "chaos: {} jobs, {} faults {:?}, {:.0} s; lost {}, recorded twice {}, same attempt run twice {}, \
         logs with gaps {}; reruns by cause {:?}",
        ids.len(),
        n,
        faults,
        started.elapsed().as_secs_f64(),
        lost.len(),
        recorded_twice.len(),
        same_attempt_twice.len(),
        gaps.len(),
        reruns
    );
    assert!(n >= 4, "the run ended before every kind of fault: {n}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        recorded_twice.is_empty(),
        "recorded twice: {recorded_twice:?}"
    );
    assert!(same_attempt_twice.is_empty(), "{same_attempt_twice:?}");
    assert!(!reruns.contains_key("unexplained"), "{reruns:?}");
    assert!(
        gaps.is_empty(),
        "logs with gaps: {:?}",
        &gaps[..gaps.len().min(3)]
    );
}
