//! `testbot worker`: the agent on a test machine.
//!
//! Read it in this order: [`config`] (what the machine offers) ->
//! [`platform`] (what it detects) -> [`claim_loop`] (one thread per slot
//! asking for work) -> [`job_runner`] (one job from start to report) ->
//! [`log_streamer`] (output to the server while it runs) -> [`report`]
//! (results that survive a server away). [`heartbeat`] runs beside them.
//!
//! The worker is plain threads and blocking HTTP: it never runs a command
//! its own config does not name, and it never exits because the server is
//! away for a while.

pub mod artifacts;
pub mod backoff;
pub mod claim_loop;
pub mod config;
pub mod files;
pub mod heartbeat;
pub mod job_runner;
pub mod junit;
pub mod log_streamer;
pub mod orphans;
pub mod platform;
pub mod report;
pub mod slot;
pub mod spool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::client::{Client, ClientError, DEFAULT_SERVER};
use crate::wire::{Registered, Registration, RunningJob};
use backoff::Backoff;
use config::Config;

pub struct WorkerOptions {
    pub config: Config,
    /// `--server` / `TESTBOT_SERVER`, over the config's `server`.
    pub server: Option<String>,
    pub token: Option<String>,
    /// `--ca-file`, over the config's `ca_file`.
    pub ca_file: Option<PathBuf>,
    pub name: Option<String>,
    pub slots: Option<u32>,
    /// Run one job, then exit by its outcome.
    pub once: bool,
    /// Drain on the first SIGINT/SIGTERM, abort on the second. Off when the
    /// worker runs inside `testbot serve`, which owns the signals and
    /// passes them on through `stopper`.
    pub handle_signals: bool,
    /// How a worker inside `testbot serve` is told of the server's
    /// signals: [`Stopper::signal`] drains it, then aborts its jobs.
    pub stopper: Option<Arc<Stopper>>,
}

/// Passes shutdown signals to a worker that does not take them itself (one
/// inside `testbot serve`), with the same effect: the first drains it, the
/// second aborts its running jobs.
#[derive(Default)]
pub struct Stopper {
    shared: std::sync::OnceLock<Arc<Shared>>,
    /// Signals that came before the worker was ready.
    early: AtomicU8,
}

impl Stopper {
    pub fn signal(&self) {
        match self.shared.get() {
            Some(s) => s.on_signal(),
            None => {
                self.early.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(shared.clone());
        for _ in 0..self.early.swap(0, Ordering::SeqCst) {
            shared.on_signal();
        }
    }
}

/// What a running job's controller can be told.
pub enum Control {
    /// The child process exited (sent by the waiter thread).
    Exited(std::process::ExitStatus),
    /// The job was canceled on the server.
    Cancel,
    /// The worker is shutting down hard.
    Abort,
}

/// A job this process runs now.
pub struct Running {
    pub attempt: u32,
    pub info_file: PathBuf,
    pub control: mpsc::Sender<Control>,
    /// A cancel came and the job is being stopped.
    pub canceling: bool,
}

/// How far the worker is in shutting down.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Phase {
    Run = 0,
    /// First signal: claim nothing new, finish what runs.
    Drain = 1,
    /// Second signal: kill what runs and report it for retry elsewhere.
    Abort = 2,
}

/// What the worker's threads share.
pub struct Shared {
    pub client: Client,
    pub config: Config,
    pub running: Mutex<HashMap<i64, Running>>,
    phase: AtomicU8,
    /// Notified when the phase changes, so pauses end early on shutdown.
    phase_changed: (Mutex<()>, Condvar),
    /// Set to wake the heartbeat thread at once (a job started or ended).
    poke: (Mutex<bool>, Condvar),
    /// Whether the last request reached the server, to log once per outage.
    reachable: AtomicBool,
    /// Every slot has ended: the heartbeat thread sends its last and ends.
    stopped: AtomicBool,
    /// The server takes a result with the next claim (it said so when this
    /// worker registered).
    pub claim_results: AtomicBool,
    /// The most bytes of a job's output to keep, as the server announced
    /// (0: no limit): the start and the end, the middle cut.
    pub log_cap: AtomicU64,
    /// The server's artifact caps (0: none announced).
    pub artifact_max_file: AtomicU64,
    pub artifact_max_job: AtomicU64,
    /// Set to wake the artifact uploader (a job staged some).
    uploads: (Mutex<bool>, Condvar),
    /// Jobs whose outcomes an earlier run left in the outbox, until they
    /// are delivered (see [`report::left_over`]), and jobs whose
    /// results wait for their slot's next claim.
    outbox_jobs: Mutex<Vec<RunningJob>>,
    /// Why the worker claims nothing now (low disk), for its heartbeat.
    pub problem: Mutex<Option<String>>,
    /// Runs inside `testbot serve`: the server it cannot reach is its own
    /// process shutting down, not news.
    embedded: bool,
    /// This worker's own identity, kept in `work_dir/identity`.
    instance: String,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Run,
            1 => Phase::Drain,
            _ => Phase::Abort,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        {
            let _guard = self.phase_changed.0.lock().unwrap();
            self.phase.fetch_max(p as u8, Ordering::SeqCst);
            self.phase_changed.1.notify_all();
        }
        self.poke();
    }

    /// Sleeps for `d`, or until the worker starts shutting down (or goes
    /// from draining to aborting), whichever comes first.
    pub fn pause(&self, d: Duration) {
        let guard = self.phase_changed.0.lock().unwrap();
        let at = self.phase();
        let _ = self
            .phase_changed
            .1
            .wait_timeout_while(guard, d, |_| self.phase() == at)
            .unwrap();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Wakes the heartbeat thread to report status now.
    pub fn poke(&self) {
        *self.poke.0.lock().unwrap() = true;
        self.poke.1.notify_all();
    }

    /// Waits up to `timeout` for a poke; says whether one came.
    pub fn wait_poke(&self, timeout: Duration) -> bool {
        let guard = self.poke.0.lock().unwrap();
        let (mut guard, _) = self
            .poke
            .1
            .wait_timeout_while(guard, timeout, |poked| !*poked)
            .unwrap();
        std::mem::replace(&mut *guard, false)
    }

    /// Wakes the artifact uploader.
    pub fn poke_uploads(&self) {
        *self.uploads.0.lock().unwrap() = true;
        self.uploads.1.notify_all();
    }

    /// Waits up to `timeout` for [`Shared::poke_uploads`].
    pub fn wait_uploads(&self, timeout: Duration) {
        let guard = self.uploads.0.lock().unwrap();
        let (mut guard, _) = self
            .uploads
            .1
            .wait_timeout_while(guard, timeout, |poked| !*poked)
            .unwrap();
        *guard = false;
    }

    /// The `[info]` of the config, plus the problem keeping the worker from
    /// claiming, if any.
    pub fn info(&self) -> crate::wire::Extra {
        let mut info = self.config.info.clone();
        if let Some(p) = self.problem.lock().unwrap().as_ref() {
            info.insert("problem".into(), p.clone().into());
        }
        info
    }

    /// Whether `work_dir` has the free space `min_free_disk` asks for; when
    /// not, records and logs (once) why the worker claims nothing.
    pub fn disk_ok(&self) -> bool {
        let Some(min) = self.config.min_free_disk else {
            return true;
        };
        let free = free_bytes(&self.config.work_dir).unwrap_or(u64::MAX);
        let mut problem = self.problem.lock().unwrap();
        if free >= min {
            if problem.take().is_some() {
                tracing::info!("work_dir has free space again; claiming jobs");
            }
            return true;
        }
        let msg = format!(
            "claiming nothing: work_dir {} has {} MiB free, below min_free_disk {} MiB",
            self.config.work_dir.display(),
            free >> 20,
            min >> 20
        );
        if problem.as_deref() != Some(msg.as_str()) {
            if problem.is_none() {
                tracing::warn!("{msg}");
            }
            *problem = Some(msg);
        }
        false
    }

    pub fn running_jobs(&self) -> Vec<RunningJob> {
        // The files are read outside the lock that job starts, ends and
        // signals take.
        let mut jobs: Vec<(RunningJob, PathBuf)> = {
            let running = self.running.lock().unwrap();
            running
                .iter()
                .map(|(&id, r)| {
                    let job = RunningJob {
                        id,
                        attempt: r.attempt,
                        info: None,
                        canceling: r.canceling,
                    };
                    (job, r.info_file.clone())
                })
                .collect()
        };
        for (job, path) in &mut jobs {
            job.info = read_info(path);
        }
        jobs.sort_by_key(|(j, _)| j.id);
        jobs.into_iter().map(|(j, _)| j).collect()
    }

    /// Logs the first failure of an outage and the recovery, not each retry.
    pub fn note_unreachable(&self, err: &ClientError) {
        if self.reachable.swap(false, Ordering::SeqCst) {
            if self.embedded {
                tracing::debug!("{err}; retrying with backoff until it answers");
            } else {
                tracing::warn!("{err}; retrying with backoff until it answers");
            }
        }
    }

    pub fn note_reachable(&self) {
        if !self.reachable.swap(true, Ordering::SeqCst) {
            tracing::info!("the server answers again");
        }
    }

    /// A job's outcome waits to be sent: registrations name it as still
    /// this worker's until [`Shared::outbox_done`].
    pub fn outbox_add(&self, id: i64, attempt: u32) {
        self.outbox_jobs.lock().unwrap().push(RunningJob {
            id,
            attempt,
            info: None,
            canceling: false,
        });
    }

    pub fn outbox_done(&self, id: i64) {
        self.outbox_jobs.lock().unwrap().retain(|j| j.id != id);
    }

    /// The jobs this worker holds a lease on: those running, and those
    /// whose outcome waits to be sent.
    pub fn held_jobs(&self) -> Vec<RunningJob> {
        let mut jobs = self.running_jobs();
        jobs.extend(self.outbox_jobs.lock().unwrap().iter().cloned());
        jobs
    }

    pub fn registration(&self) -> Registration {
        Registration {
            name: self.config.name.clone(),
            jobtypes: self.config.jobtypes.keys().cloned().collect(),
            platforms: self
                .config
                .platforms
                .iter()
                .map(|p| p.properties.clone())
                .collect(),
            info: self.config.info.clone(),
            slots: self.config.slots,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
            running: self.held_jobs(),
            accept: self
                .config
                .accept
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            instance: Some(self.instance.clone()),
            host: platform::hostname(),
            extra: Default::default(),
        }
    }

    /// Registers, retrying while the server is away. Fails only when the
    /// server refuses the registration outright, or the worker stops.
    pub fn register(&self) -> anyhow::Result<Registered> {
        let sent = self.until_answered(Phase::Drain, ClientError::is_refusal, || {
            self.client
                .post::<_, Registered>("/api/v1/workers", &self.registration())
        });
        match sent {
            Ok(r) => {
                self.claim_results.store(r.claim_results, Ordering::SeqCst);
                self.log_cap.store(r.log_cap.unwrap_or(0), Ordering::SeqCst);
                self.artifact_max_file
                    .store(r.artifact_max_file.unwrap_or(0), Ordering::SeqCst);
                self.artifact_max_job
                    .store(r.artifact_max_job.unwrap_or(0), Ordering::SeqCst);
                Ok(r)
            }
            Err(Unsent::Refused(e)) => {
                Err(e).context("the server refused this worker's registration")
            }
            Err(Unsent::GaveUp(e)) => Err(e.into()),
        }
    }

    /// The one retry loop of the worker: sends with `send` until the server
    /// answers, waiting with capped, jittered backoff while it is away or
    /// failing, until `lasting` says a refusal will stay (then
    /// [`Unsent::Refused`]) or the worker reaches `stop_at` (then
    /// [`Unsent::GaveUp`]).
    pub fn until_answered<T>(
        &self,
        stop_at: Phase,
        lasting: impl Fn(&ClientError) -> bool,
        mut send: impl FnMut() -> crate::client::Result<T>,
    ) -> Result<T, Unsent> {
        let mut backoff = Backoff::new();
        loop {
            match send() {
                Ok(t) => {
                    self.note_reachable();
                    return Ok(t);
                }
                Err(e) if lasting(&e) => return Err(Unsent::Refused(e)),
                Err(e) => {
                    self.note_unreachable(&e);
                    if self.phase() >= stop_at {
                        return Err(Unsent::GaveUp(e));
                    }
                    self.pause(backoff.next_delay());
                }
            }
        }
    }
}

/// Why [`Shared::until_answered`] stopped without an answer.
pub enum Unsent {
    /// The server refused, and will go on refusing.
    Refused(ClientError),
    /// The worker stopped trying (shutting down) while the server was away.
    GaveUp(ClientError),
}

/// Runs the worker until it is told to stop; returns the exit code.
pub fn run(opts: WorkerOptions) -> anyhow::Result<i32> {
    let mut config = opts.config;
    if let Some(name) = opts.name {
        config.name = name;
    }
    if let Some(slots) = opts.slots {
        config.slots = slots.max(1);
    }
    if opts.once {
        config.slots = 1;
    }
    let server = opts
        .server
        .or_else(|| config.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = config.token.clone().or(opts.token);
    prepare_work_dir(&config.work_dir)?;
    // Slots reuse fixed directories and outbox files: two workers on one
    // work_dir would run jobs in each other's directories.
    let _work_dir_lock = lock_work_dir(&config.work_dir)?;
    let instance = identity(&config.work_dir)?;
    // Nothing an earlier run of this worker started runs beside new work.
    orphans::kill_left_behind(&config.work_dir);
    orphans::become_subreaper();
    let client = match opts.ca_file.as_ref().or(config.ca_file.as_ref()) {
        Some(ca) => Client::with_ca_file(&server, token, ca)?,
        None => Client::new(&server, token),
    }
    // Claims are tagged, results fenced by attempt, logs placed by offset:
    // any of them may be sent to the next server after one went silent.
    .resending_posts();
    let shared = Arc::new(Shared {
        client,
        config,
        running: Mutex::new(HashMap::new()),
        phase: AtomicU8::new(Phase::Run as u8),
        phase_changed: (Mutex::new(()), Condvar::new()),
        poke: (Mutex::new(false), Condvar::new()),
        reachable: AtomicBool::new(true),
        stopped: AtomicBool::new(false),
        problem: Mutex::new(None),
        outbox_jobs: Mutex::new(Vec::new()),
        claim_results: AtomicBool::new(false),
        log_cap: AtomicU64::new(0),
        artifact_max_file: AtomicU64::new(0),
        artifact_max_job: AtomicU64::new(0),
        uploads: (Mutex::new(false), Condvar::new()),
        embedded: !opts.handle_signals,
        instance,
    });
    let left_over = report::left_over(&shared);
    if opts.handle_signals {
        handle_signals(shared.clone())?;
    }
    if let Some(stopper) = &opts.stopper {
        stopper.attach(&shared);
    }
    let reg = match shared.register() {
        Ok(r) => r,
        // Told to stop before the server ever answered: nothing to finish.
        Err(_) if shared.phase() != Phase::Run => return Ok(0),
        Err(e) => return Err(e),
    };
    tracing::info!(
        worker = %shared.config.name,
        server = %server,
        lease_ms = reg.lease_ms,
        jobtypes = ?shared.config.jobtypes.keys().collect::<Vec<_>>(),
        "registered"
    );
    // Heartbeats from registration on: they renew the leases of the jobs
    // whose results the outbox still holds while those are delivered.
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || heartbeat::run(&shared))?;
    }
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("info-watch".into())
            .spawn(move || heartbeat::watch_info(&shared))?;
    }
    // Results a previous run could not deliver go before any new claim,
    // and so do its artifacts.
    report::deliver_outbox(&shared, left_over);
    artifacts::deliver_left_over(&shared);
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("artifacts".into())
            .spawn(move || artifacts::run(&shared))?;
    }
    let slots: Vec<_> = (0..shared.config.slots)
        .map(|i| {
            let shared = shared.clone();
            let once = opts.once;
            std::thread::Builder::new()
                .name(format!("slot-{i}"))
                .spawn(move || claim_loop::run(&shared, i as usize, once))
        })
        .collect::<Result<_, _>>()?;
    let mut all_passed = true;
    for s in slots {
        all_passed &= s.join().unwrap_or(false);
    }
    // Artifacts still on their way go before the worker does (those the
    // server cannot take now wait in the outbox for the next start).
    artifacts::deliver_left_over(&shared);
    // The heartbeat thread may be inside a held heartbeat; rather than wait
    // for it, say goodbye from here and let the process end it.
    shared.stopped.store(true, Ordering::SeqCst);
    heartbeat::send(&shared, 0.0);
    Ok(if opts.once && !all_passed { 1 } else { 0 })
}

/// Creates the work_dir (mode 700) and its outbox, and refuses one that
/// another user owns: whoever owns it could read the jobs' files or plant
/// links in it.
fn prepare_work_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("outbox"))
        .with_context(|| format!("cannot create the work_dir {}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the work_dir {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        anyhow::bail!(
            "the work_dir {} belongs to user {}, not to this worker's user {me}; \
             give the worker a directory of its own (work_dir = ...)",
            dir.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// The most of a job's `$TESTBOT_INFO_FILE` sent with a heartbeat.
pub const INFO_MAX: u64 = 64 << 10;

/// What a job's command last wrote to `$TESTBOT_INFO_FILE`: a JSON object
/// from a regular file of at most [`INFO_MAX`] bytes; otherwise a note
/// saying why it was not sent, so one job's info never gets a heartbeat
/// refused.
fn read_info(path: &std::path::Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let note = |why: String| Some(serde_json::json!({ "info_error": why }));
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return note(format!("cannot read TESTBOT_INFO_FILE: {e}")),
    };
    if !meta.is_file() {
        return note("TESTBOT_INFO_FILE is not a regular file; not sent".into());
    }
    if meta.len() > INFO_MAX {
        return note(format!(
            "TESTBOT_INFO_FILE holds {} bytes, over the {} KiB sent with heartbeats; not sent",
            meta.len(),
            INFO_MAX >> 10
        ));
    }
    // Non-blocking and no symlinks followed: the command may swap the file
    // for a FIFO between the look and the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    let mut bytes = Vec::new();
    match file.and_then(|f| f.take(INFO_MAX + 1).read_to_end(&mut bytes)) {
        Ok(_) if bytes.len() as u64 > INFO_MAX => note(format!(
            "TESTBOT_INFO_FILE grew over the {} KiB sent with heartbeats; not sent",
            INFO_MAX >> 10
        )),
        Ok(_) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) if v.is_object() => {
                let deep = crate::server::checks::json_depth(&v)
                    > crate::server::checks::limits::JSON_DEPTH;
                if deep {
                    note("TESTBOT_INFO_FILE nests too deep; not sent".into())
                } else {
                    Some(v)
                }
            }
            // Half-written, or not an object: keep what was last sent.
            _ => None,
        },
        Err(e) => note(format!("cannot read TESTBOT_INFO_FILE: {e}")),
    }
}

/// The worker's stable identity: made on its first start and kept in
/// `work_dir/identity`, so a restart on the same work_dir is the same worker
/// while another machine that takes the same name is not.
fn identity(work_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = work_dir.join("identity");
    match std::fs::read_to_string(&path) {
        Ok(text) if is_identity(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => tracing::warn!("{} is damaged; making a new identity", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot read /dev/urandom for the worker's identity")?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    files::overwrite(&path, id.as_bytes())
        .with_context(|| format!("cannot write the worker's identity to {}", path.display()))?;
    Ok(id)
}

fn is_identity(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Holds an exclusive lock on `work_dir/lock` for as long as the returned
/// file is open (the kernel releases it when the process ends, however).
fn lock_work_dir(work_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = work_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "work_dir {} is in use by another testbot worker; give each worker its own work_dir",
            work_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Free bytes for unprivileged users on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Installs SIGINT/SIGTERM handling for a standalone worker: the first
/// signal drains, the second aborts the running jobs.
pub fn handle_signals(shared: Arc<Shared>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                shared.on_signal();
            }
        })?;
    Ok(())
}

impl Shared {
    /// A shutdown signal: the first drains (no new claims, running jobs
    /// finish and are reported), the next aborts the running jobs (their
    /// groups are killed and they are reported for retry elsewhere).
    pub fn on_signal(&self) {
        if self.phase() == Phase::Run {
            tracing::info!(
                worker = %self.config.name,
                "draining: finishing running jobs, claiming no new ones (signal again to abort them)"
            );
            self.set_phase(Phase::Drain);
            // Tell the server now, so open claims end at once.
            heartbeat::send(self, 0.0);
        } else {
            tracing::warn!(
                worker = %self.config.name,
                "aborting running jobs; they will be retried elsewhere"
            );
            self.set_phase(Phase::Abort);
            for r in self.running.lock().unwrap().values() {
                let _ = r.control.send(Control::Abort);
            }
        }
    }
}
