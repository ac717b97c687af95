//! What the pages weigh and cost with a big database: 100,000 jobs (99
//! builds of 1,000, run through simulated workers, one in ten failing),
//! a build of 1,000 jobs, a log of 10,000 coloured lines from a real
//! worker. For `/`, `/jobs`, a 1,000-job build's page and the 10,000-line
//! log's page: the bytes sent plain and gzipped, and the median and p90
//! time to the whole answer over loopback. `cargo bench --bench pages`;
//! `PAGES_JOBS=N` for another size.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbot::client::{Client, Maybe};
use testbot::wire::{ClaimRequest, ClaimResult, Job, JobState, Outcome};

fn outcome(name: &str, job: &Job) -> Outcome {
    let failed = job.id % 10 == 0;
    Outcome {
        worker: name.to_string(),
        attempt: job.attempt,
        state: if failed {
            JobState::Failed
        } else {
            JobState::Passed
        },
        exit_code: Some(if failed { 1 } else { 0 }),
        duration_ms: 0,
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: "2026-01-01T00:00:00Z".into(),
        reason: None,
        infrastructure: false,
        tests: None,
        data: Default::default(),
    }
}

/// Claims and finishes every queued `bulk` job, as `name`.
fn drain_queue(url: &str, name: &str) {
    let client = Client::new(url, None);
    let _: Value = client
        .post(
            "/api/v1/workers",
            &json!({"name": name, "jobtypes": ["bulk"], "platforms": [{"python.version": "3.13"}], "heartbeat_interval_ms": 60_000}),
        )
        .expect("register");
    let mut done: Option<Job> = None;
    loop {
        let req = ClaimRequest {
            wait: 0.0,
            result: done.as_ref().map(|job| ClaimResult {
                job: job.id,
                outcome: outcome(name, job),
            }),
            slot: None,
            seq: None,
        };
        match client
            .post_maybe::<_, Job>(
                &format!("/api/v1/workers/{name}/claim"),
                &req,
                Duration::from_secs(30),
            )
            .expect("claim")
        {
            Maybe::Some(j) => done = Some(j),
            Maybe::NoContent => return,
        }
    }
}

/// One GET over a fresh connection: (header bytes, body bytes, seconds).
fn fetch(addr: &str, path: &str, gzip: bool) -> (usize, f64) {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let enc = if gzip {
        "Accept-Encoding: gzip, br\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n{enc}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    (buf.len() - split - 4, secs)
}

fn main() {
    let total: usize = std::env::var("PAGES_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempdir();
    let (_server, url) = serve(dir.path(), &[]);
    let client = Client::new(&url, None);
    let t = Instant::now();
    let builds = total.div_ceil(1000);
    for b in 0..builds {
        let jobs: Vec<Value> = (0..1000.min(total - b * 1000))
            .map(|i| json!({"jobtype": "bulk", "params": {"suite": format!("suite-{i}")}, "platform": {"python.version": format!(">=3.{}", 10 + i % 4)}}))
            .collect();
        let _: serde::de::IgnoredAny = client
            .post(
                "/api/v1/builds",
                &json!({"name": format!("nightly-{b}"), "meta": {"branch": "main", "revision": format!("{b:040x}")}, "jobs": jobs}),
            )
            .expect("submit build");
    }
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || drain_queue(&url, &format!("sim-{i}")))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    eprintln!(
        "{total} jobs submitted and run through simulated workers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // And some that wait: a jobtype no worker has.
    let later: Vec<Value> = (0..1000)
        .map(|i| json!({"jobtype": "later", "params": {"n": i.to_string()}}))
        .collect();
    let _: serde::de::IgnoredAny = client.post("/api/v1/jobs", &later).expect("submit");
    let _w = worker(
        dir.path(),
        &url,
        "logger",
        "[jobtypes.log10k]\ncommand = \"i=1; while [ $i -le 10000 ]; do printf '\\\\033[32mok\\\\033[0m line %d of the log: some text a test runner would print\\\\n' $i; i=$((i+1)); done\"\n",
    );
    wait_online(&url, "logger");
    let job = submit(&url, json!({"jobtype": "log10k"}));
    let log_job = job["id"].as_i64().unwrap();
    let done = wait_final(&url, log_job);
    assert_eq!(done["state"], "passed", "{done}");
    let last_build = builds;
    let addr = url.trim_start_matches("http://").to_string();
    let pages = [
        ("home /", "/".to_string()),
        ("/jobs", "/jobs".to_string()),
        ("/jobs?state=failed", "/jobs?state=failed".to_string()),
        ("a 1,000-job build", format!("/builds/{last_build}")),
        ("a 10,000-line log (tail)", format!("/jobs/{log_job}")),
        ("the same log, all lines", format!("/jobs/{log_job}?full=1")),
        ("/builds", "/builds".to_string()),
        ("/workers", "/workers".to_string()),
    ];
    println!(
        "{total} jobs run (one in ten failed), 1,000 waiting, one 10,000-line log; \
         each page fetched 20 times over loopback\n"
    );
    println!("| page | bytes | gzipped | median ms | p90 ms |\n|---|---|---|---|---|");
    let mut figures = serde_json::Map::new();
    for (name, path) in &pages {
        let (plain, _) = fetch(&addr, path, false);
        let mut times = Vec::new();
        let mut zipped = 0;
        for _ in 0..20 {
            let (n, s) = fetch(&addr, path, true);
            zipped = n;
            times.push(s * 1000.0);
        }
        let med = median(&mut times);
        let p90 = percentile(&mut times, 0.9);
        println!("| {name} | {plain} | {zipped} | {med:.2} | {p90:.2} |");
        figures.insert(
            path.clone(),
            json!({"bytes": plain, "gzip_bytes": zipped, "median_ms": (med * 100.0).round() / 100.0, "p90_ms": (p90 * 100.0).round() / 100.0}),
        );
    }
    println!("{}", json!({"jobs": total, "pages": figures}));
}
