//! testbot on PostgreSQL, one server and two, against SQLite in the same
//! run: dispatch latency (a job submitted to the first server, claimed by a
//! worker held on the last), server throughput (simulated workers split
//! over the servers), and the CPU that 10,000 heartbeating workers cost,
//! split over the servers. Prints each figure, then one JSON line.
//!
//! `bash scripts/bench-replicas.sh` starts a private PostgreSQL cluster
//! and runs it; by hand: `TESTBOT_PG_URL=postgres://... cargo bench
//! --bench replicas`. `REPLICAS_QUICK=1` makes it smaller.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbot::client::{Client, Maybe};
use testbot::wire::{ClaimRequest, ClaimResult, Heartbeat, HeartbeatReply, Job, JobState, Outcome};

fn quick() -> bool {
    std::env::var_os("REPLICAS_QUICK").is_some()
}

fn register(client: &Client, name: &str, jobtypes: &[&str]) {
    let reg = json!({
        "name": name, "jobtypes": jobtypes, "platforms": [{"os.family": "linux"}],
        "heartbeat_interval_ms": 10_000,
    });
    while client.post::<_, Value>("/api/v1/workers", &reg).is_err() {
        std::thread::sleep(Duration::from_millis(100));
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

fn claim(client: &Client, name: &str, wait: f64, done: Option<&Job>) -> Option<Job> {
    let req = ClaimRequest {
        wait,
        result: done.map(|job| ClaimResult {
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
            Duration::from_secs_f64(wait + 30.0),
        )
        .expect("claim")
    {
        Maybe::Some(j) => Some(j),
        Maybe::NoContent => None,
    }
}

/// A job submitted to the first server, until a worker waiting in a claim
/// on the last one has it: p50 and p99 in ms.
fn dispatch(urls: &[String]) -> (f64, f64) {
    let n = if quick() { 100 } else { 400 };
    let (tx, rx) = mpsc::channel::<(i64, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let last = urls.last().unwrap().clone();
    for i in 0..2 {
        let client = Client::new(&last, None);
        let name = format!("lat{i}");
        register(&client, &name, &["lat"]);
        let (tx, stop) = (tx.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut done: Option<Job> = None;
            while !stop.load(Ordering::Relaxed) {
                let got = claim(&client, &name, 1.0, done.as_ref());
                if let Some(job) = &got {
                    let _ = tx.send((job.id, Instant::now()));
                }
                done = got;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let client = Client::new(&urls[0], None);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        let job: Job = client
            .post("/api/v1/jobs", &json!({"jobtype": "lat"}))
            .expect("submit");
        let (id, got) = rx.recv().unwrap();
        assert_eq!(id, job.id);
        lat.push(got.duration_since(sent).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(3));
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

/// Jobs per second through the servers: queued first, then claimed and
/// finished by simulated workers split evenly over the servers, each
/// result sent with the next claim.
fn throughput(urls: &[String], pids: &[u32]) -> (f64, f64, f64) {
    let total = if quick() { 2_000 } else { 8_000 };
    let jobs: Vec<Value> = (0..1000).map(|_| json!({"jobtype": "tp"})).collect();
    for _ in 0..total / 1000 {
        let _: Value = Client::new(&urls[0], None)
            .post("/api/v1/builds", &json!({"name": "tp", "jobs": jobs}))
            .expect("submit");
    }
    let threads = 32;
    let done = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for i in 0..threads {
        let client = Client::new(&urls[i % urls.len()], None);
        let name = format!("tp{i}");
        register(&client, &name, &["tp"]);
        let (done, barrier) = (done.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let mut last: Option<Job> = None;
            loop {
                let next = claim(&client, &name, 0.0, last.as_ref());
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
    let servers = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    barrier.wait();
    let (s0, d0, t) = (servers(), postgres_cpu(), Instant::now());
    for h in handles {
        let _ = h.join();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(done.load(Ordering::Relaxed) as usize, total);
    // Where the cores went meanwhile: the servers, and the database.
    let server_cpu = (servers() - s0) / secs * 100.0;
    let db_cpu = (postgres_cpu() - d0) / secs * 100.0;
    (total as f64 / secs, server_cpu, db_cpu)
}

/// CPU seconds used so far by every PostgreSQL process on the machine.
fn postgres_cpu() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += cpu_secs(pid);
        }
    }
    total
}

/// 10,000 idle workers (heartbeat every 10 s, a claim held in between),
/// split over the servers: the servers' CPU and the database's, in % of
/// one core, and the servers' memory.
fn heartbeats(urls: &[String], pids: &[u32]) -> (usize, f64, f64, f64) {
    let n = if quick() { 1_000 } else { 10_000 };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let (stop, started) = (stop.clone(), started.clone());
        let h = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let client = Client::new(&url, None);
                let name = format!("hb{i}");
                register(&client, &name, &["nothing-queued"]);
                started.fetch_add(1, Ordering::Relaxed);
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
    while started.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(12));
    let servers = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let (s0, d0, t) = (servers(), postgres_cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(20));
    let secs = t.elapsed().as_secs_f64();
    let server_cpu = (servers() - s0) / secs * 100.0;
    let db_cpu = (postgres_cpu() - d0) / secs * 100.0;
    let rss: f64 = pids.iter().map(|p| rss_mb(*p)).sum();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (n, server_cpu, db_cpu, rss)
}

/// A fresh database on the cluster `TESTBOT_PG_URL` names.
fn fresh_pg(admin: &str, name: &str) -> String {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("TESTBOT_PG_URL");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let admin = std::env::var("TESTBOT_PG_URL").expect(
        "TESTBOT_PG_URL: run `bash scripts/bench-replicas.sh`, which starts a private cluster",
    );
    let mut out = serde_json::Map::new();
    let setups: [(&str, usize); 3] = [("sqlite", 1), ("pg1", 1), ("pg2", 2)];
    for (setup, servers) in setups {
        for figure in ["dispatch", "throughput", "heartbeat"] {
            if figure == "heartbeat" && setup == "pg1" {
                continue;
            }
            let dir = tempdir();
            let db = if setup == "sqlite" {
                dir.path().join("bench.db").display().to_string()
            } else {
                fresh_pg(&admin, &format!("bench_{setup}_{figure}"))
            };
            let procs: Vec<(Proc, String)> = (0..servers).map(|_| serve_db(&db, &[])).collect();
            let urls: Vec<String> = procs.iter().map(|(_, u)| u.clone()).collect();
            let pids: Vec<u32> = procs.iter().map(|(p, _)| p.0.id()).collect();
            match figure {
                "dispatch" => {
                    let (p50, p99) = dispatch(&urls);
                    println!("{setup}: dispatch p50 {p50:.2} ms, p99 {p99:.2} ms");
                    out.insert(format!("{setup}_dispatch_p50_ms"), json!(round(p50)));
                    out.insert(format!("{setup}_dispatch_p99_ms"), json!(round(p99)));
                }
                "throughput" => {
                    let (rate, cpu, db_cpu) = throughput(&urls, &pids);
                    println!(
                        "{setup}: {rate:.0} jobs/s through {servers} server(s) (servers {cpu:.0} % \
                         of a core, PostgreSQL {db_cpu:.0} %, of {} cores)",
                        std::thread::available_parallelism().map_or(0, |n| n.get())
                    );
                    out.insert(format!("{setup}_server_jobs_per_s"), json!(rate.round()));
                    out.insert(
                        format!("{setup}_throughput_server_cpu_pct"),
                        json!(cpu.round()),
                    );
                    out.insert(
                        format!("{setup}_throughput_db_cpu_pct"),
                        json!(db_cpu.round()),
                    );
                }
                _ => {
                    let (n, cpu, db_cpu, rss) = heartbeats(&urls, &pids);
                    println!(
                        "{setup}: {n} heartbeating workers cost the server(s) {cpu:.1} % of a \
                         core ({rss:.0} MB) and PostgreSQL {db_cpu:.1} %"
                    );
                    out.insert(format!("{setup}_heartbeat_workers"), json!(n));
                    out.insert(
                        format!("{setup}_heartbeat_server_cpu_pct"),
                        json!(round(cpu)),
                    );
                    out.insert(
                        format!("{setup}_heartbeat_db_cpu_pct"),
                        json!(round(db_cpu)),
                    );
                    out.insert(
                        format!("{setup}_heartbeat_server_rss_mb"),
                        json!(round(rss)),
                    );
                }
            }
        }
    }
    if let (Some(one), Some(two)) = (
        out.get("pg1_server_jobs_per_s").and_then(Value::as_f64),
        out.get("pg2_server_jobs_per_s").and_then(Value::as_f64),
    ) {
        let ratio = two / one;
        println!("pg: two servers carry {ratio:.2}x of one");
        out.insert("pg2_vs_pg1_throughput".into(), json!(round(ratio)));
    }
    println!("{}", Value::Object(out));
}
