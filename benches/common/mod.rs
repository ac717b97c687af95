//! Shared by the benchmarks: the real binary as server and worker on
//! loopback, temp databases and configs, cleanup by PID.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_testbot");

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `testbot serve` on a free loopback port; returns it and its URL.
pub fn serve(dir: &Path, extra: &[&str]) -> (Proc, String) {
    serve_db(&dir.join("bench.db").display().to_string(), extra)
}

/// Starts `testbot serve` on the database `db` (a path or a URL).
///
/// `BENCH_SERVER_WRAP` runs the server under another program, for
/// profiling: `BENCH_SERVER_WRAP=heaptrack` (memory by call site), or
/// `BENCH_SERVER_WRAP="env LD_PRELOAD=..."`. The CPU and memory figures
/// then measure the wrapper when it does not exec the server itself.
pub fn serve_db(db: &str, extra: &[&str]) -> (Proc, String) {
    let wrap = std::env::var("BENCH_SERVER_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut cmd = match wrap.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrap).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    // A wrapper may print first.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("testbot listening on ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server ended");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line
        .trim()
        .strip_prefix("testbot listening on ")
        .expect("listening line")
        .to_string();
    (Proc(child), url)
}

pub fn worker(dir: &Path, url: &str, name: &str, body: &str) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "server = \"{url}\"\nname = \"{name}\"\nheartbeat_interval = \"5s\"\nwork_dir = \"{}\"\n{body}\n",
            dir.join(format!("work-{name}")).display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["worker", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker");
    Proc(child)
}

pub fn wait_online(url: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let w: Result<serde_json::Value, _> =
            testbot::client::Client::new(url, None).get(&format!("/api/v1/workers/{name}"));
        if let Ok(w) = w {
            if w["status"] != "offline" {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("worker {name} never came online");
}

pub fn submit(url: &str, body: serde_json::Value) -> serde_json::Value {
    testbot::client::Client::new(url, None)
        .post("/api/v1/jobs", &body)
        .expect("submit")
}

pub fn wait_final(url: &str, id: i64) -> serde_json::Value {
    let mut delay = Duration::from_millis(1);
    loop {
        let j: serde_json::Value = testbot::client::Client::new(url, None)
            .get(&format!("/api/v1/jobs/{id}"))
            .expect("job");
        if j["state"] != "queued" && j["state"] != "running" {
            return j;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Peak resident memory of a process, in MiB (VmHWM).
pub fn peak_rss_mb(pid: u32) -> f64 {
    rss_field(pid, "VmHWM:")
}

/// Current resident memory of a process, in MiB (VmRSS).
pub fn rss_mb(pid: u32) -> f64 {
    rss_field(pid, "VmRSS:")
}

fn rss_field(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testbot-bench-")
        .tempdir()
        .unwrap()
}

/// CPU seconds a process has used (user and system).
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}
