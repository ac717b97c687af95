//! Test harness: the real `testbot` binary as server, workers and CLI, on
//! loopback, with temporary databases and configs. Every process a test
//! starts is ended by PID when its handle drops.

#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_testbot");

/// A temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testbot-test-")
        .tempdir()
        .expect("tempdir")
}

/// A process a test started: ended by PID (SIGKILL) when dropped.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("the process still runs").id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.0 {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits for the process to exit by itself; its exit code, or None
    /// if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let c = self.0.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.0 = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Server {
    proc: Proc,
    pub url: String,
    pub addr: String,
    pub db: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts a server on a free loopback port with a database in `dir`.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, "127.0.0.1:0", &[])
    }

    pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::start_shell(dir, "", listen, extra)
    }

    /// Starts the server through `sh -c "PREFIX; exec testbot serve ..."`,
    /// for limits set with `ulimit` (the PID is still the server's).
    pub fn start_shell(dir: &Path, prefix: &str, listen: &str, extra: &[&str]) -> Server {
        let db = dir.join("testbot.db");
        Server::start_full(dir, prefix, listen, &db.display().to_string(), extra)
    }

    /// A server on the database `db` (a path or a `postgres://` URL).
    pub fn start_db(dir: &Path, db: &str, extra: &[&str]) -> Server {
        Server::start_full(dir, "", "127.0.0.1:0", db, extra)
    }

    fn start_full(dir: &Path, prefix: &str, listen: &str, db_arg: &str, extra: &[&str]) -> Server {
        let db = dir.join("testbot.db");
        let log = dir.join(format!("server-{}.log", unique()));
        let mut cmd = if prefix.is_empty() {
            Command::new(BIN)
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("{prefix} && exec \"$0\" \"$@\""), BIN]);
            c
        };
        cmd.args(["serve", "--listen", listen, "--db", db_arg])
            .args(extra)
            .env_remove("TESTBOT_SERVER")
            .env_remove("TESTBOT_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start testbot serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on stdout.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server printed no first line; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let url = first
            .strip_prefix("testbot listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let addr = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string();
        Server {
            proc: Proc(Some(child)),
            url,
            addr,
            db,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Sends a signal, and goes on.
    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Waits for the server to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.proc.wait_exit(timeout)
    }

    /// Sends a signal and waits for the exit, returning its status (None,
    /// and a SIGKILL, when it does not exit within `timeout`).
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<i32> {
        self.proc.signal(sig);
        let code = self.proc.wait_exit(timeout);
        self.proc.kill9();
        code
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.url, args)
    }

    pub fn get(&self, path: &str) -> Value {
        get(&self.url, path)
    }

    pub fn job(&self, id: i64) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    /// Submits through the CLI and returns the new job ids.
    pub fn submit(&self, args: &[&str]) -> Vec<i64> {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(out.status.success(), "submit failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().expect("a job id"))
            .collect()
    }

    /// Waits until the job is in a final state and returns it.
    pub fn wait_final(&self, id: i64, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(timeout, || {
            last = self.job(id);
            !matches!(last["state"].as_str(), Some("queued") | Some("running"))
        });
        assert!(ok, "job {id} did not end in {timeout:?}: {last}");
        last
    }

    pub fn wait_state(&self, id: i64, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(timeout, || {
            last = self.job(id);
            last["state"] == state
        });
        assert!(ok, "job {id} never became {state} in {timeout:?}: {last}");
        last
    }

    pub fn log_of(&self, id: i64) -> String {
        let r = http_get(&format!("{}/api/v1/jobs/{id}/log", self.url));
        assert_eq!(r.status, 200, "log of job {id}: {}", r.body);
        r.body
    }
}

pub struct Worker {
    proc: Proc,
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Writes a worker config: `server`, `name`, a 1 s heartbeat and a work_dir
/// in `dir`, then `body` (jobtypes, platforms...).
pub fn worker_config(dir: &Path, server: &str, name: &str, body: &str) -> PathBuf {
    let work = dir.join(format!("work-{name}"));
    let path = dir.join(format!("{name}.toml"));
    let heartbeat = if body.contains("heartbeat_interval") {
        ""
    } else {
        "heartbeat_interval = \"1s\"\n"
    };
    std::fs::write(
        &path,
        format!(
            "server = \"{server}\"\nname = \"{name}\"\n{heartbeat}work_dir = \"{}\"\nkill_grace = \"1s\"\n{body}\n",
            work.display()
        ),
    )
    .unwrap();
    path
}

impl Worker {
    pub fn start(dir: &Path, server: &str, name: &str, body: &str) -> Worker {
        let config = worker_config(dir, server, name, body);
        Worker::start_config(dir, name, &config, &[])
    }

    pub fn start_config(dir: &Path, name: &str, config: &Path, extra: &[&str]) -> Worker {
        let log = dir.join(format!("worker-{name}-{}.log", unique()));
        let child = Command::new(BIN)
            .args(["worker", "--config"])
            .arg(config)
            .args(extra)
            .env_remove("TESTBOT_SERVER")
            .env_remove("TESTBOT_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("start testbot worker");
        Worker {
            proc: Proc(Some(child)),
            name: name.to_string(),
            config: config.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Waits for the worker to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.proc.wait_exit(timeout)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }
}

/// Waits until the server lists the worker as online.
/// A token file (mode 600, as the server wants it) holding `tokens`.
pub fn write_tokens(dir: &Path, name: &str, tokens: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, tokens.join("\n") + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// An agent that shows redirects instead of following them.
pub fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The value a `Set-Cookie` header sets.
pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

pub fn wait_online(server: &Server, name: &str) {
    let ok = wait_until(Duration::from_secs(20), || {
        let r = http_get(&format!("{}/api/v1/workers/{name}", server.url));
        r.status == 200 && r.json()["status"] != "offline"
    });
    assert!(ok, "worker {name} never came online");
}

pub fn cli(server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("TESTBOT_SERVER", server)
        .env_remove("TESTBOT_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run testbot")
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An HTTP answer of any status, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON, or Null when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An agent for tests: every status is an answer, not an error, and no
/// request waits longer than `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// One request through `agent`: the method, the headers, and a body if
/// any. Only a failure to talk to the server is an error.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply, ureq::Error> {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = match body {
        Some(b) => agent.run(req.body(b.to_vec())?)?,
        None => agent.run(req.body(())?)?,
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// [`send`] with a fresh agent and a 30 s limit, panicking when the server
/// cannot be reached.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    send(&agent(Duration::from_secs(30)), method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// GET a URL; any status is returned.
pub fn http_get(url: &str) -> Reply {
    http("GET", url, &[], None)
}

/// GET a JSON document that must be there (200).
pub fn get(base: &str, path: &str) -> Value {
    let r = http_get(&format!("{base}{path}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
}

/// POSTs JSON; returns the status and the parsed body (or Null).
pub fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    let r = http(
        "POST",
        &format!("{base}{path}"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    (r.status, r.json())
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes whose command line contains `needle`, by PID.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// A number unique within this test process, for names and markers.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    (std::process::id() as u64) * 1000 + n
}

/// The value of the first `/metrics` line that starts with `line_start`.
pub fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A small tmpfs mounted for a test (needs root), unmounted when dropped;
/// `None` where this machine will not mount one.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot mount a tmpfs at {} (not root?)", at.display());
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    /// Fills it up with a file `name`, leaving no room.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let block = vec![b'#'; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(b"#");
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A fresh, empty PostgreSQL database on the private cluster
/// `TESTBOT_PG_URL` names (scripts/test.sh starts one); `None`, said on
/// stderr, only when `TESTBOT_SKIP_POSTGRES=1`.
#[allow(dead_code)]
pub fn postgres_db() -> Option<String> {
    let Ok(admin) = std::env::var("TESTBOT_PG_URL") else {
        assert!(
            std::env::var("TESTBOT_SKIP_POSTGRES").as_deref() == Ok("1"),
            "TESTBOT_PG_URL is not set: run the tests with scripts/test.sh, which starts a \
             private PostgreSQL cluster, or set TESTBOT_SKIP_POSTGRES=1 to leave PostgreSQL out"
        );
        eprintln!("TESTBOT_SKIP_POSTGRES=1: this PostgreSQL test is skipped");
        return None;
    };
    let name = format!("e2e_{}_{}", std::process::id(), unique());
    let mut c = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach TESTBOT_PG_URL ({admin}): {e}"));
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}
