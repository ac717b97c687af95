//! How fast testbot dispatches: a real server on a temporary database and
//! simulated workers that use the real client code. Prints each figure,
//! then one JSON line with all of them. `cargo bench --bench dispatch`.
//!
//! Set `DISPATCH_QUICK=1` for a smaller run (fewer jobs and workers), and
//! `DISPATCH_ONLY=latency,throughput,e2e,idle,deep,heartbeat` (any of them)
//! to run only those figures.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbot::client::{Client, Maybe};
use testbot::wire::{
    ClaimRequest, ClaimResult, Heartbeat, HeartbeatReply, Job, JobState, Outcome, RESULT_HEADER,
    RESULT_RECORDED,
};

fn quick() -> bool {
    std::env::var_os("DISPATCH_QUICK").is_some()
}

/// Whether `DISPATCH_ONLY` (when set) names this figure.
fn wanted(figure: &str) -> bool {
    match std::env::var("DISPATCH_ONLY") {
        Ok(only) => only.split(',').any(|f| f.trim() == figure),
        Err(_) => true,
    }
}

fn register(client: &Client, name: &str, jobtypes: &[&str], props: Value) {
    let reg = json!({
        "name": name,
        "jobtypes": jobtypes,
        "platforms": [props],
        "heartbeat_interval_ms": 10_000,
    });
    let _: Value = client.post("/api/v1/workers", &reg).expect("register");
}

fn claim(client: &Client, name: &str, wait: f64) -> Option<Job> {
    match client
        .post_maybe::<_, Job>(
            &format!("/api/v1/workers/{name}/claim"),
            &ClaimRequest {
                wait,
                result: None,
                slot: None,
                seq: None,
            },
            Duration::from_secs_f64(wait + 30.0),
        )
        .expect("claim")
    {
        Maybe::Some(j) => Some(j),
        Maybe::NoContent => None,
    }
}

fn outcome(name: &str, job: &Job) -> Outcome {
    Outcome {
        worker: name.to_string(),
        attempt: job.attempt,
        state: JobState::Passed,
        exit_code: Some(0),
        duration_ms: 0,
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: "2026-01-01T00:00:00Z".into(),
        reason: None,
        infrastructure: false,
        tests: None,
        data: Default::default(),
    }
}

fn finish(client: &Client, name: &str, job: &Job) {
    let _: Value = client
        .post(
            &format!("/api/v1/jobs/{}/result", job.id),
            &outcome(name, job),
        )
        .expect("result");
}

/// A claim carrying the previous job's result, as the worker sends it.
fn claim_with_result(client: &Client, name: &str, done: Option<&Job>) -> Option<Job> {
    let req = ClaimRequest {
        wait: 0.0,
        result: done.map(|job| ClaimResult {
            job: job.id,
            outcome: outcome(name, job),
        }),
        slot: None,
        seq: None,
    };
    let (answer, said) = client
        .post_maybe_header::<_, Job>(
            &format!("/api/v1/workers/{name}/claim"),
            &req,
            Duration::from_secs(30),
            RESULT_HEADER,
        )
        .expect("claim");
    if done.is_some() {
        assert_eq!(
            said.as_deref(),
            Some(RESULT_RECORDED),
            "result not recorded"
        );
    }
    match answer {
        Maybe::Some(j) => Some(j),
        Maybe::NoContent => None,
    }
}

/// Figure 1: Idle workers wait in claims; each submission's time until a worker
/// has it in hand.
fn dispatch_latency(url: &str) -> (f64, f64) {
    let n = if quick() { 200 } else { 1000 };
    let workers = 4;
    let (tx, rx) = mpsc::channel::<(i64, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..workers {
        let client = Client::new(url, None);
        let name = format!("lat{i}");
        register(&client, &name, &["lat"], json!({"os.family": "linux"}));
        let tx = tx.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(job) = claim(&client, &name, 1.0) {
                    let _ = tx.send((job.id, Instant::now()));
                    finish(&client, &name, &job);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = Client::new(url, None);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        let job: Job = client
            .post("/api/v1/jobs", &json!({"jobtype": "lat"}))
            .expect("submit");
        let (id, got) = rx.recv().unwrap();
        assert_eq!(id, job.id);
        lat.push(got.duration_since(sent).as_secs_f64() * 1000.0);
        // Let the worker get back into its claim.
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (
        percentile(&mut lat.clone(), 0.5),
        percentile(&mut lat, 0.99),
    )
}

/// Submits `total` jobs in builds of `per_build`; returns jobs per second.
fn submit_builds(url: &str, total: usize, per_build: usize, make: impl Fn(usize) -> Value) -> f64 {
    let client = Client::new(url, None);
    let t = Instant::now();
    let mut done = 0;
    while done < total {
        let jobs: Vec<Value> = (done..(done + per_build).min(total)).map(&make).collect();
        let n = jobs.len();
        // The answer (every job of the build) is checked for being JSON
        // but not kept: building a tree of it cost the bench more than the
        // server spent on the whole request.
        let _: serde::de::IgnoredAny = client
            .post("/api/v1/builds", &json!({"name": "bench", "jobs": jobs}))
            .expect("submit build");
        done += n;
    }
    total as f64 / t.elapsed().as_secs_f64()
}

/// Figure 2: 64 simulated slots doing claim -> result, no process spawned;
/// each result goes with the slot's next claim, as the worker sends it.
fn server_throughput(url: &str) -> f64 {
    let total = if quick() { 5_000 } else { 30_000 };
    submit_builds(url, total, 1000, |_| json!({"jobtype": "tp"}));
    let done = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(65));
    let mut handles = Vec::new();
    for i in 0..64 {
        let client = Client::new(url, None);
        let name = format!("tp{i}");
        register(&client, &name, &["tp"], json!({"os.family": "linux"}));
        let done = done.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let mut last: Option<Job> = None;
            loop {
                let next = claim_with_result(&client, &name, last.as_ref());
                if last.is_some() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                match next {
                    Some(job) => last = Some(job),
                    None => break,
                }
            }
        }));
    }
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(done.load(Ordering::Relaxed) as usize, total);
    total as f64 / secs
}

/// Figure 3: Two real workers with 4 slots each running `true`, against spawning
/// `sh -c true` directly with the same parallelism. Neither the floor's
/// shells nor the workers get the `LD_LIBRARY_PATH` cargo sets for benches:
/// the dynamic loader searching it makes every `sh` slower, which would
/// flatter the ratio.
fn e2e_vs_floor(dir: &std::path::Path, url: &str) -> (f64, f64, f64) {
    // DISPATCH_E2E_JOBS makes a longer run, e.g. to profile it.
    let n = std::env::var("DISPATCH_E2E_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 400 } else { 2000 });
    let parallel = 8;
    let t = Instant::now();
    let handles: Vec<_> = (0..parallel)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n / parallel {
                    let st = Command::new("sh")
                        .args(["-c", "true"])
                        .env_remove("LD_LIBRARY_PATH")
                        .status()
                        .unwrap();
                    assert!(st.success());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let floor_ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;

    let body = "slots = 4\n[jobtypes.true]\ncommand = \"true\"\n";
    let _a = worker(dir, url, "real1", body);
    let _b = worker(dir, url, "real2", body);
    wait_online(url, "real1");
    wait_online(url, "real2");
    let client = Client::new(url, None);
    let t = Instant::now();
    let jobs: Vec<Value> = (0..n).map(|_| json!({"jobtype": "true"})).collect();
    let submitted: Vec<Job> = client.post("/api/v1/jobs", &jobs).expect("submit");
    assert_eq!(submitted.len(), n);
    // Watch the last job (jobs start in order) with a cheap lookup, then
    // make sure with the status counts; polling the counts all along costs
    // the server a count over every job in the database each time.
    let last = submitted.last().unwrap().id;
    loop {
        let j: Job = client.get(&format!("/api/v1/jobs/{last}")).unwrap();
        if j.state.is_final() {
            let s: Value = client.get("/api/v1/status").unwrap();
            if s["jobs"]["queued"] == 0 && s["jobs"]["running"] == 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let testbot_ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let failed: Vec<Job> = client.get("/api/v1/jobs?state=failed&limit=10").unwrap();
    assert!(failed.is_empty(), "jobs failed");
    (floor_ms, testbot_ms, floor_ms / testbot_ms)
}

/// Figure 4: Many simulated workers heartbeating every 10 s and holding
/// a claim long-poll open in between, each on one connection as a worker
/// with one slot would: the server's CPU and memory meanwhile.
fn heartbeat_load(url: &str, server_pid: u32) -> (usize, f64, f64) {
    let n = if quick() { 1000 } else { 10_000 };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..n {
        let url = url.to_string();
        let stop = stop.clone();
        let started = started.clone();
        let h = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let client = Client::new(&url, None);
                let name = format!("hb{i}");
                let reg = json!({
                    "name": name, "jobtypes": ["nothing-queued"],
                    "platforms": [{"os.family": "linux"}], "heartbeat_interval_ms": 10_000,
                });
                // Connection storms get refused by the listen backlog;
                // retry like a worker would.
                while client.post::<_, Value>("/api/v1/workers", &reg).is_err() {
                    std::thread::sleep(Duration::from_millis(100 + (i as u64 % 500)));
                }
                started.fetch_add(1, Ordering::Relaxed);
                // Spread the beats over the interval.
                std::thread::sleep(Duration::from_millis((i as u64 * 7919) % 10_000));
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.post::<_, HeartbeatReply>(
                        &format!("/api/v1/workers/{name}/heartbeat"),
                        &Heartbeat {
                            status: "idle".into(),
                            ..Default::default()
                        },
                    );
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = client.post_maybe::<_, Job>(
                        &format!("/api/v1/workers/{name}/claim"),
                        &ClaimRequest {
                            wait: 10.0,
                            result: None,
                            slot: None,
                            seq: None,
                        },
                        Duration::from_secs(40),
                    );
                }
            })
            .expect("spawn simulated worker");
        handles.push(h);
    }
    while (started.load(Ordering::Relaxed) as usize) < n {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settle, then measure over a window.
    std::thread::sleep(Duration::from_secs(12));
    let cpu0 = cpu_secs(server_pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let cpu = (cpu_secs(server_pid) - cpu0) / t.elapsed().as_secs_f64();
    let rss = rss_mb(server_pid);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (n, cpu * 100.0, rss)
}

/// Figure 5: Claim latency with a deep queue of jobs over 50 jobtypes and varied
/// requirements, against an empty queue; and the submit rate that filled it.
fn deep_queue(url: &str) -> (f64, f64, f64, usize) {
    let client = Client::new(url, None);
    register(
        &client,
        "deep",
        &["dq7"],
        json!({"os.family": "linux", "cpu": "8"}),
    );
    let sample = |client: &Client| {
        let mut v = Vec::new();
        for _ in 0..200 {
            let _: Job = client
                .post(
                    "/api/v1/jobs",
                    &json!({"jobtype": "dq7", "platform": {"os.family": "linux"}}),
                )
                .unwrap();
            let t = Instant::now();
            let job = claim(client, "deep", 0.0).expect("a job");
            v.push(t.elapsed().as_secs_f64() * 1000.0);
            finish(client, "deep", &job);
        }
        percentile(&mut v, 0.5)
    };
    let empty = sample(&client);
    let total = if quick() { 100_000 } else { 1_000_000 };
    let rate = submit_builds(url, total, 1000, |i| {
        let mut platform = serde_json::Map::new();
        match i % 4 {
            0 => {}
            1 => {
                platform.insert("os.family".into(), "linux".into());
            }
            2 => {
                platform.insert("os.family".into(), "windows".into());
            }
            _ => {
                platform.insert("cpu".into(), format!("{}", i % 16).into());
            }
        }
        json!({"jobtype": format!("dq{}", i % 50), "platform": platform, "priority": (i % 3) as i64})
    });
    let deep = sample(&client);
    (empty, deep, rate, total)
}

fn main() {
    let dir = tempdir();
    let (server, url) = serve(dir.path(), &[]);
    let server_pid = server.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let server_idle = rss_mb(server_pid);
    let mut figures = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        figures.insert(k.to_string(), v);
    };
    put(
        "cores",
        json!(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)),
    );

    if wanted("latency") {
        let (p50, p99) = dispatch_latency(&url);
        println!("dispatch_p50_ms:      {p50:.3}  (submit sent -> claim answered, 1000 jobs, 4 idle workers)");
        println!("dispatch_p99_ms:      {p99:.3}");
        put("dispatch_p50_ms", json!(round3(p50)));
        put("dispatch_p99_ms", json!(round3(p99)));
    }

    if wanted("throughput") {
        let tp = server_throughput(&url);
        println!("server_jobs_per_s:    {tp:.0}  (64 simulated slots, claim -> result)");
        put("server_jobs_per_s", json!(tp.round()));
    }

    if wanted("e2e") {
        let (floor, per_job, ratio) = e2e_vs_floor(dir.path(), &url);
        println!("floor_ms_per_job:     {floor:.3}  (sh -c true, 8 in parallel)");
        println!("testbot_ms_per_job:   {per_job:.3}  (2 workers x 4 slots running true)");
        println!("e2e_vs_floor:         {ratio:.2}");
        put("floor_ms_per_job", json!(round3(floor)));
        put("testbot_ms_per_job", json!(round3(per_job)));
        put("e2e_vs_floor", json!(round3(ratio)));
    }

    if wanted("idle") {
        let idle_worker = {
            let w = worker(
                dir.path(),
                &url,
                "idle",
                "[jobtypes.idle]\ncommand = \"true\"\n",
            );
            wait_online(&url, "idle");
            std::thread::sleep(Duration::from_secs(1));
            rss_mb(w.0.id())
        };
        println!("worker_idle_rss_mb:   {idle_worker:.1}");
        println!("server_idle_rss_mb:   {server_idle:.1}");
        put("worker_idle_rss_mb", json!(round3(idle_worker)));
        put("server_idle_rss_mb", json!(round3(server_idle)));
    }

    if wanted("deep") {
        // A fresh server for the deep queue, and another for the heartbeat load.
        let dir2 = tempdir();
        let (server2, url2) = serve(dir2.path(), &[]);
        let (empty, deep, rate, total) = deep_queue(&url2);
        println!("claim_ms_empty_queue: {empty:.3}");
        println!("claim_ms_deep_queue:  {deep:.3}  ({total} queued over 50 jobtypes)");
        println!("submit_jobs_per_s:    {rate:.0}  (builds of 1000)");
        drop(server2);
        put("claim_ms_empty_queue", json!(round3(empty)));
        put("claim_ms_deep_queue", json!(round3(deep)));
        put("deep_queue_jobs", json!(total));
        put("submit_jobs_per_s", json!(rate.round()));
    }

    if wanted("heartbeat") {
        let dir3 = tempdir();
        let (server3, url3) = serve(dir3.path(), &[]);
        let (n, cpu, rss) = heartbeat_load(&url3, server3.0.id());
        println!("heartbeat_cpu:        {cpu:.1}% of one core  ({n} workers, beat every 10 s, claims held open)");
        println!("heartbeat_rss_mb:     {rss:.1}");
        drop(server3);
        put("heartbeat_workers", json!(n));
        put("heartbeat_cpu", json!(round3(cpu)));
        put("heartbeat_rss_mb", json!(round3(rss)));
    }

    println!("{}", Value::Object(figures));
    drop(server);
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
