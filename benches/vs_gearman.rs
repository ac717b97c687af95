//! testbot side by side with Gearman (gearmand 1.1, in-memory queue) on the
//! same machine in the same run, every job `/bin/sh -c true`:
//!
//! - the spawn floor: the bench itself running `/bin/sh -c true` in a loop
//!   (1 loop, 2 loops);
//! - per job with 1 worker, 2 workers of 1 slot, 8 slots (Gearman: 8
//!   `gearman -w` workers; testbot: 2 workers of 4 slots): N jobs
//!   submitted at once (Gearman: pipelined `SUBMIT_JOB`s on one
//!   connection; testbot: one `POST /api/v1/jobs` of N), timed until the
//!   last one finished, each row with its own floor measured just before
//!   it, and what each adds above the floor;
//! - submit -> finished with an idle worker through each one's API (p50);
//! - the command line as a user types it: `gearman -s` against `testbot
//!   submit --wait` (p50 of the whole process).
//!
//! Installs gearman-job-server and gearman-tools with apt-get when
//! `gearmand` is missing. `cargo bench --bench vs_gearman`; prints each
//! figure, the ratios, and one JSON line. VS_GEARMAN_JOBS sets N (default
//! 2000), VS_GEARMAN_QUICK=1 makes everything small.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbot::client::Client;

fn quick() -> bool {
    std::env::var("VS_GEARMAN_QUICK").is_ok_and(|v| v == "1")
}

fn jobs() -> usize {
    std::env::var("VS_GEARMAN_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 300 } else { 2000 })
}

fn samples() -> usize {
    if quick() {
        15
    } else {
        50
    }
}

fn find(names: &[&str]) -> Option<String> {
    for n in names {
        if Path::new(n).is_file() {
            return Some(n.to_string());
        }
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {n}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Some(p) = found.filter(|p| !p.is_empty()) {
            return Some(p);
        }
    }
    None
}

/// gearmand and gearman, installed from Debian's packages when missing.
fn gearman_tools() -> (String, String) {
    let look = || {
        Some((
            find(&["/usr/sbin/gearmand", "gearmand"])?,
            find(&["/usr/bin/gearman", "gearman"])?,
        ))
    };
    if let Some(t) = look() {
        return t;
    }
    eprintln!("installing gearman-job-server and gearman-tools with apt-get");
    let install = ["install", "-y", "gearman-job-server", "gearman-tools"];
    if !apt_get(&install) {
        // The package lists may be missing on a fresh machine.
        apt_get(&["update"]);
        assert!(apt_get(&install), "could not install Gearman");
    }
    look().expect("gearmand and gearman after installing them")
}

/// apt-get with these arguments, through `sudo -n` unless root.
fn apt_get(args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    };
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gearman {
    _server: Proc,
    port: u16,
    gearman: String,
    dir: std::path::PathBuf,
}

impl Gearman {
    fn start(dir: &Path) -> Gearman {
        let (gearmand, gearman) = gearman_tools();
        let port = free_port();
        let server = Command::new(gearmand)
            .args(["--listen", "127.0.0.1", "--port", &port.to_string()])
            .arg(format!("--log-file={}", dir.join("gearmand.log").display()))
            .args(["--verbose", "ERROR"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gearmand");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "gearmand did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Gearman {
            _server: Proc(server),
            port,
            gearman,
            dir: dir.to_path_buf(),
        }
    }

    /// `n` `gearman -w` workers for `noop`, each running `/bin/sh -c true`
    /// per job; waits until the server counts them.
    fn workers(&self, func: &str, n: usize) -> Vec<Proc> {
        let procs: Vec<Proc> = (0..n)
            .map(|_| {
                Proc(
                    Command::new(&self.gearman)
                        .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                        .args(["-w", "-f", func, "--", "/bin/sh", "-c", "true"])
                        .env_remove("LD_LIBRARY_PATH")
                        .current_dir(&self.dir)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start gearman -w"),
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.capable(func) >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gearman workers did not register"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        procs
    }

    /// Workers registered for `func`, from the admin `status` command.
    fn capable(&self, func: &str) -> usize {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0;
        };
        let _ = s.write_all(b"status\n");
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.ends_with(".\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => text.push_str(&String::from_utf8_lossy(&buf[..k])),
            }
        }
        text.lines()
            .find(|l| l.split('\t').next() == Some(func))
            .and_then(|l| l.split('\t').nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
}

// The Gearman binary protocol: "\0REQ"/"\0RES", type, size (big-endian).
const SUBMIT_JOB: u32 = 7;
const JOB_CREATED: u32 = 8;
const WORK_COMPLETE: u32 = 13;
const WORK_FAIL: u32 = 14;
const WORK_EXCEPTION: u32 = 25;

fn packet(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + data.len());
    p.extend_from_slice(b"\0REQ");
    p.extend_from_slice(&kind.to_be_bytes());
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(data);
    p
}

fn read_packet(r: &mut impl Read) -> (u32, Vec<u8>) {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).expect("gearman answer");
    assert_eq!(&head[..4], b"\0RES", "gearman answer");
    let kind = u32::from_be_bytes(head[4..8].try_into().unwrap());
    let size = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
    let mut data = vec![0u8; size];
    r.read_exact(&mut data).unwrap();
    (kind, data)
}

/// Reads answers until `n` jobs have completed; panics on a failed job.
fn await_completions(r: &mut impl Read, n: usize) {
    let mut done = 0;
    while done < n {
        let (kind, _) = read_packet(r);
        match kind {
            WORK_COMPLETE => done += 1,
            WORK_FAIL | WORK_EXCEPTION => panic!("a gearman job failed"),
            _ => {}
        }
    }
}

/// N jobs submitted at once on one connection (a writer thread pipelines
/// them), timed until the last completes: ms per job.
fn gearman_batch(g: &Gearman, func: &str, n: usize) -> f64 {
    let stream = g.connect();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let t = Instant::now();
    let func = func.to_string();
    let w = std::thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..n {
            all.extend(packet(SUBMIT_JOB, format!("{func}\0u{i}\0").as_bytes()));
        }
        writer.write_all(&all).unwrap();
    });
    await_completions(&mut reader, n);
    w.join().unwrap();
    t.elapsed().as_secs_f64() * 1000.0 / n as f64
}

/// One job at a time on an open connection: ms from submit to complete.
fn gearman_latency(g: &Gearman, func: &str) -> f64 {
    let mut s = g.connect();
    let mut ms = Vec::new();
    for i in 0..samples() {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        s.write_all(&packet(SUBMIT_JOB, format!("{func}\0lat{i}\0").as_bytes()))
            .unwrap();
        loop {
            let (kind, _) = read_packet(&mut s);
            if kind == WORK_COMPLETE {
                break;
            }
            assert!(kind == JOB_CREATED, "unexpected gearman answer {kind}");
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(&mut ms)
}

/// `gearman -s` as a user types it: the whole process, p50 in ms.
fn gearman_cli(g: &Gearman, func: &str) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..samples() {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let st = Command::new(&g.gearman)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &g.port.to_string(),
                "-f",
                func,
                "-s",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(st.success(), "gearman -s failed");
    }
    median(&mut ms)
}

/// `loops` threads each spawning `/bin/sh -c true` in turn: ms per job.
fn floor(n: usize, loops: usize) -> f64 {
    let t = Instant::now();
    let hs: Vec<_> = (0..loops)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n / loops {
                    let st = Command::new("/bin/sh")
                        .args(["-c", "true"])
                        .env_remove("LD_LIBRARY_PATH")
                        .status()
                        .unwrap();
                    assert!(st.success());
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed().as_secs_f64() * 1000.0 / (n / loops * loops) as f64
}

/// testbot workers `names` with `slots` each for jobtype `jt`.
fn testbot_workers(dir: &Path, url: &str, jt: &str, names: &[&str], slots: usize) -> Vec<Proc> {
    let body = format!("slots = {slots}\n[jobtypes.{jt}]\ncommand = \"true\"\n");
    let ws: Vec<Proc> = names.iter().map(|n| worker(dir, url, n, &body)).collect();
    for n in names {
        wait_online(url, n);
    }
    // Let every slot settle into its claim.
    std::thread::sleep(Duration::from_millis(300));
    ws
}

/// Waits until every job in `ids` has ended, with the server-side wait.
fn wait_all(client: &Client, ids: &[i64]) {
    let mut left: Vec<i64> = ids.to_vec();
    while !left.is_empty() {
        let chunk: Vec<i64> = left.iter().take(1000).copied().collect();
        let ended: Vec<Value> = client
            .post("/api/v1/jobs/wait", &json!({"ids": chunk, "wait": 10}))
            .expect("wait");
        for j in &ended {
            assert_eq!(j["state"], "passed", "{j}");
        }
        let gone: std::collections::HashSet<i64> =
            ended.iter().filter_map(|j| j["id"].as_i64()).collect();
        left.retain(|i| !gone.contains(i));
    }
}

/// N jobs in one POST, timed until the last ends: ms per job.
fn testbot_batch(url: &str, jt: &str, n: usize) -> f64 {
    let client = Client::new(url, None);
    let body: Vec<Value> = (0..n).map(|_| json!({"jobtype": jt})).collect();
    let t = Instant::now();
    let jobs: Vec<Value> = client.post("/api/v1/jobs", &body).expect("submit");
    let ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    wait_all(&client, &ids);
    t.elapsed().as_secs_f64() * 1000.0 / n as f64
}

fn testbot_latency(url: &str, jt: &str) -> f64 {
    let client = Client::new(url, None);
    let mut ms = Vec::new();
    for _ in 0..samples() {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let job: Value = client
            .post("/api/v1/jobs", &json!({"jobtype": jt}))
            .expect("submit");
        wait_all(&client, &[job["id"].as_i64().unwrap()]);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(&mut ms)
}

fn testbot_cli(url: &str, jt: &str) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..samples() {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let st = Command::new(BIN)
            .args(["submit", jt, "--wait", "--server", url])
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(st.success(), "testbot submit --wait failed");
    }
    median(&mut ms)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let n = jobs();
    let dir = tempdir();
    let g = Gearman::start(dir.path());
    let (_server, url) = serve(dir.path(), &[]);
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);

    // Each row's floor is measured just before it: the machine's speed
    // drifts over a run, and the floor is what the rows are read against.
    let mut rows: Vec<(&str, f64, f64, f64)> = Vec::new();
    // 1 worker, 1 at a time.
    {
        let floor1 = floor(n / 2, 1);
        let _gw = g.workers("one", 1);
        let gm = gearman_batch(&g, "one", n / 2);
        let _tw = testbot_workers(dir.path(), &url, "one", &["one-a"], 1);
        let tb = testbot_batch(&url, "one", n / 2);
        rows.push(("1 worker, 1 at a time", floor1, gm, tb));
    }
    {
        let floor2 = floor(n, 2);
        let _gw = g.workers("two", 2);
        let gm = gearman_batch(&g, "two", n);
        let _tw = testbot_workers(dir.path(), &url, "two", &["two-a", "two-b"], 1);
        let tb = testbot_batch(&url, "two", n);
        rows.push(("2 workers, 1 slot each", floor2, gm, tb));
    }
    {
        let floor2 = floor(n, 2);
        let _gw = g.workers("eight", 8);
        let gm = gearman_batch(&g, "eight", n);
        let _tw = testbot_workers(dir.path(), &url, "eight", &["eight-a", "eight-b"], 4);
        let tb = testbot_batch(&url, "eight", n);
        rows.push(("8 slots (Gearman 8 workers; testbot 2 x 4)", floor2, gm, tb));
    }
    let (lat_g, lat_t, cli_g, cli_t) = {
        let _gw = g.workers("idle", 1);
        let _tw = testbot_workers(dir.path(), &url, "idle", &["idle-a"], 1);
        (
            gearman_latency(&g, "idle"),
            testbot_latency(&url, "idle"),
            gearman_cli(&g, "idle"),
            testbot_cli(&url, "idle"),
        )
    };

    println!("testbot vs Gearman, {cores} cores, /bin/sh -c true per job, {n} jobs a run");
    println!(
        "{:<46} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "per job (ms)", "floor", "Gearman", "testbot", "tb/gm", "floor/tb", "gm-floor", "tb-floor"
    );
    let mut figures = serde_json::Map::new();
    let keys = ["one_worker", "two_workers", "eight_slots"];
    for ((label, fl, gm, tb), key) in rows.iter().zip(keys) {
        println!(
            "{label:<46} {fl:>8.3} {gm:>9.3} {tb:>9.3} {:>9.2} {:>9.2} {:>9.3} {:>9.3}",
            tb / gm,
            fl / tb,
            gm - fl,
            tb - fl
        );
        // What each adds to spawning the job, steadier than the ratio of
        // the totals when the machine's speed drifts.
        figures.insert(format!("{key}_gearman_over_floor_ms"), json!(r3(gm - fl)));
        figures.insert(format!("{key}_testbot_over_floor_ms"), json!(r3(tb - fl)));
        figures.insert(format!("{key}_floor_ms"), json!(r3(*fl)));
        figures.insert(format!("{key}_gearman_ms"), json!(r3(*gm)));
        figures.insert(format!("{key}_testbot_ms"), json!(r3(*tb)));
        figures.insert(format!("{key}_ratio"), json!(r3(tb / gm)));
        figures.insert(format!("{key}_vs_floor"), json!(r3(fl / tb)));
    }
    println!(
        "{:<46} {:>8} {lat_g:>9.3} {lat_t:>9.3} {:>9.2}",
        "submit -> finished, API, idle worker (p50)",
        "-",
        lat_t / lat_g
    );
    println!(
        "{:<46} {:>8} {cli_g:>9.3} {cli_t:>9.3} {:>9.2}",
        "submit --wait vs gearman -s (p50)",
        "-",
        cli_t / cli_g
    );
    figures.insert("api_gearman_ms".into(), json!(r3(lat_g)));
    figures.insert("api_testbot_ms".into(), json!(r3(lat_t)));
    figures.insert("api_ratio".into(), json!(r3(lat_t / lat_g)));
    figures.insert("cli_gearman_ms".into(), json!(r3(cli_g)));
    figures.insert("cli_testbot_ms".into(), json!(r3(cli_t)));
    figures.insert("cli_ratio".into(), json!(r3(cli_t / cli_g)));
    figures.insert("cores".into(), json!(cores));
    figures.insert("jobs".into(), json!(n));
    println!("{}", Value::Object(figures));
}
