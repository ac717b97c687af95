//! The server's state, and the only file that writes SQL.
//!
//! [`Store`] is the narrow interface the handlers use: each method is one
//! whole operation (submit, claim, finish...) carried out in one
//! transaction, so a second backend (PostgreSQL) can be added beside
//! [`SqliteStore`] without touching a handler. Its methods block: callers on
//! the async runtime go through `spawn_blocking`.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller so
//! that lease logic is testable and one operation sees one clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::explain::{self, WorkerView};
use super::metrics::Gauges;
use super::queue::{Claimant, QueueIndex, Queued};
use crate::rules::{build as build_rules, job as job_rules, worker as worker_rules};
use crate::time::rfc3339;
use crate::wire::*;

/// Jobs retried after a lost worker at most this often, unless the job says.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The shortest lease, whatever the worker's heartbeat interval.
pub const MIN_LEASE_MS: u64 = 5_000;

/// How long a claimed job stays leased without a heartbeat: three missed
/// heartbeats, and never less than [`MIN_LEASE_MS`]. A worker is shown
/// offline after the same time without a word from it.
pub fn lease_ms(heartbeat_interval_ms: u64) -> u64 {
    heartbeat_interval_ms.saturating_mul(3).max(MIN_LEASE_MS)
}

/// What a list of jobs is filtered by.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub ids: Vec<i64>,
    pub build: Option<i64>,
    pub worker: Option<String>,
    pub limit: usize,
}

/// A slice of one attempt's log.
#[derive(Debug, Clone)]
pub struct LogSlice {
    pub attempt: u32,
    pub data: Vec<u8>,
    /// The attempt's whole size.
    pub size: u64,
    /// The offset just past `data`, where a follower goes on reading (a
    /// cut part of the log shows as a short note, not its bytes).
    pub end: u64,
    pub state: JobState,
    /// Whether the attempt still runs, i.e. more may come.
    pub live: bool,
}

/// What a claim got.
#[derive(Debug)]
pub enum Claim {
    Job(Box<Job>),
    /// Nothing the worker can run is queued.
    Nothing,
    /// The worker drains itself (it is shutting down): it gets nothing and
    /// should stop asking.
    Draining,
    /// Drained from the server or quarantined: nothing until that ends.
    Held,
}

/// A worker slot's claim: the slot and the claim's number in it.
pub type ClaimTag = (u32, u64);

/// What registration did.
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub lease_ms: u64,
    /// Jobs the server had running there that the worker no longer runs.
    pub requeued: usize,
}

pub trait Store: Send + Sync + 'static {
    /// Queues jobs, in a new build when `build` is given, in one transaction.
    fn submit(
        &self,
        build: Option<(String, Extra, Extra)>,
        jobs: Vec<JobSpec>,
        now: i64,
    ) -> ApiResult<(Option<i64>, Vec<Job>)>;
    fn job(&self, id: i64) -> ApiResult<Job>;
    fn jobs(&self, filter: &JobFilter) -> ApiResult<Vec<Job>>;
    /// Cancels a queued job at once; marks a running one for its worker.
    fn cancel(&self, id: i64, now: i64) -> ApiResult<Job>;
    /// Registers (or reconnects) a worker and binds its name to the hash of
    /// the token it registered with. Refused (403) when the name is bound to
    /// another token that `revoked` does not say is gone, and (409) when
    /// another live worker (a different `instance`) holds the name.
    fn register(
        &self,
        reg: &Registration,
        token_hash: Option<&str>,
        revoked: &dyn Fn(&str) -> bool,
        now: i64,
    ) -> ApiResult<RegisterOutcome>;
    /// The hash of the token a worker name is bound to: `None` for an
    /// unknown name; a name registered without a token is bound here to
    /// `token_hash` (the first worker token to use it), guarded so two
    /// callers cannot both win.
    fn worker_binding(&self, name: &str, token_hash: &str) -> ApiResult<Option<String>>;
    fn heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> ApiResult<HeartbeatReply>;
    /// Gives the worker the best job it can run, if any: highest priority,
    /// then oldest, matched to its first fitting platform.
    ///
    /// A claim tagged with its slot and number (`tag`) is idempotent: the
    /// same tag again (the answer was lost) gets the same job again.
    fn claim(&self, name: &str, tag: Option<ClaimTag>, now: i64) -> ApiResult<Claim>;
    /// The worker's running jobs that were canceled.
    fn pending_cancels(&self, name: &str) -> ApiResult<Vec<i64>>;
    /// A cheap, in-memory look: could a claim by this worker get anything
    /// (or an answer other than "nothing") right now? False only when
    /// surely not, so idle long-polls need not touch the database.
    fn may_claim(&self, name: &str) -> bool;
    /// Writes the `last_seen` of heartbeats that were only noted in memory
    /// (idle workers whose info and status did not change).
    fn flush_heartbeats(&self) -> ApiResult<()>;
    fn append_log(&self, id: i64, q: &LogQuery, bytes: &[u8], now: i64) -> ApiResult<LogReply>;
    fn read_log(&self, id: i64, attempt: Option<u32>, from: u64) -> ApiResult<LogSlice>;
    /// Every attempt of a job, oldest first.
    fn attempts(&self, id: i64) -> ApiResult<Vec<Attempt>>;
    /// Records how an attempt ended; refuses an attempt that is not current.
    fn finish(&self, id: i64, outcome: &Outcome, now: i64) -> ApiResult<Job>;
    /// Records the outcome of the job a worker's slot just ran and claims
    /// its next job, in one transaction. The outcome's refusal (stale
    /// attempt, bad input) is returned beside the claim, which happens all
    /// the same.
    fn finish_and_claim(
        &self,
        id: i64,
        outcome: &Outcome,
        name: &str,
        tag: Option<ClaimTag>,
        now: i64,
    ) -> ApiResult<(ApiResult<Job>, Claim)>;
    /// Puts jobs whose lease ran out back in the queue (or ends them);
    /// returns how many leases ran out.
    fn expire_leases(&self, now: i64) -> ApiResult<usize>;
    /// Gives every running job a fresh lease: after a server restart, so
    /// workers that kept running have time to reconnect.
    fn renew_all_leases(&self, now: i64) -> ApiResult<()>;
    fn workers(&self, now: i64) -> ApiResult<Vec<Worker>>;
    fn worker(&self, name: &str, now: i64) -> ApiResult<Worker>;
    fn summary(&self, now: i64) -> ApiResult<Summary>;
    fn builds(&self, limit: usize) -> ApiResult<Vec<Build>>;
    fn build(&self, id: i64) -> ApiResult<Build>;
    /// Why a job is (not) running.
    fn explain(&self, id: i64, now: i64) -> ApiResult<Explanation>;
    /// What `/metrics` reads at scrape time.
    fn gauges(&self, now: i64) -> ApiResult<Gauges>;
    /// Deletes up to `batch` jobs that ended before `before`, with their
    /// attempts and logs, and builds left empty; returns how many jobs.
    fn purge_finished(&self, before: i64, batch: usize) -> ApiResult<usize>;
    /// Writes a consistent copy of the database to `path` with SQLite's
    /// online backup, without holding up the API.
    fn backup_to(&self, path: &Path) -> ApiResult<()>;
    /// Drains a worker from the server (no new jobs), or undrains it, which
    /// also ends a quarantine.
    fn set_drained(&self, name: &str, drained: bool, now: i64) -> ApiResult<Worker>;
    /// The most log bytes kept per attempt (`serve --log-cap`), announced
    /// to workers so they keep no more than that either.
    fn log_cap(&self) -> u64;
    /// Why the database cannot be written now, if it cannot (tried with a
    /// small write when none went through in the last second).
    fn storage_problem(&self, now: i64) -> Option<String>;
    /// Looks whether the database file is still the one opened (called
    /// once a second).
    fn check_storage(&self);
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The queued jobs in dispatch order. Lock order: `queue` before
    /// `conn` when both are held; otherwise `conn` is released first.
    queue: Mutex<QueueIndex>,
    /// What idle workers last said, so that an unchanged idle heartbeat is
    /// only noted in memory and written with others once a second.
    seen: Mutex<std::collections::HashMap<String, Seen>>,
    /// Worker name -> (jobtypes, drains itself), for [`Store::may_claim`].
    claimants: Mutex<std::collections::HashMap<String, (Vec<String>, bool)>>,
    path: std::path::PathBuf,
    /// The most log bytes kept per attempt; past it the start and the end
    /// are kept and the middle is cut.
    log_cap: u64,
    /// What the checkpointer thread waits on.
    wal: Arc<(Mutex<WalState>, Condvar)>,
    /// Whether the database can be written, and why not.
    health: super::store_health::Health,
    /// Workers whose heartbeats came while the database could not be
    /// written: their leases are renewed before any expires once it can.
    outage_heartbeats: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct WalState {
    /// Something was committed since the last checkpoint began.
    dirty: bool,
    /// Commits since a checkpoint last caught up with the whole WAL.
    commits: u32,
}

/// After this many commits without a complete checkpoint, the writer
/// checkpoints itself (see [`SqliteStore::note_commit`]).
const WRITER_CHECKPOINT_COMMITS: u32 = 1000;

/// A PASSIVE checkpoint; when it copied the whole WAL, the next write
/// starts the WAL over, and the count of commits since starts again.
fn checkpoint(conn: &Connection, wal: &(Mutex<WalState>, Condvar)) {
    match conn.row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, log, copied)) if log == copied => {
            wal.0.lock().unwrap_or_else(|e| e.into_inner()).commits = 0;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("WAL checkpoint: {e}"),
    }
}

/// Statements through the connection's statement cache: SQLite parses and
/// plans each distinct statement once, not on every request.
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// The default of `serve --log-cap`.
pub const DEFAULT_LOG_CAP: u64 = 32 << 20;

/// Schema versions, applied in order; `PRAGMA user_version` says how many
/// have run. Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE workers (
    name          TEXT PRIMARY KEY,
    jobtypes      TEXT NOT NULL,
    platforms     TEXT NOT NULL,
    info          TEXT NOT NULL DEFAULT '{}',
    extra         TEXT NOT NULL DEFAULT '{}',
    slots         INTEGER NOT NULL,
    heartbeat_ms  INTEGER NOT NULL,
    lease_ms      INTEGER NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'idle',
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
CREATE TABLE builds (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    meta       TEXT NOT NULL,
    extra      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    jobtype          TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    platform         TEXT NOT NULL,
    params           TEXT NOT NULL,
    timeout_ms       INTEGER,
    max_attempts     INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    platform_index   INTEGER,
    matched_platform TEXT,
    build_id         INTEGER REFERENCES builds(id),
    shard_index      INTEGER,
    shard_total      INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_expires    INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    reason           TEXT,
    result           TEXT,
    info             TEXT,
    extra            TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_queue ON jobs(state, jobtype, priority DESC, id);
CREATE INDEX jobs_build ON jobs(build_id);
CREATE INDEX jobs_worker ON jobs(worker, state);
CREATE TABLE attempts (
    job_id         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    worker         TEXT NOT NULL,
    platform_index INTEGER,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    state          TEXT,
    reason         TEXT,
    log_size       INTEGER NOT NULL DEFAULT 0,
    log_stored     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE log_chunks (
    job_id  INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    pos     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, pos)
);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN retry_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN reruns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN failed_before TEXT;
ALTER TABLE jobs ADD COLUMN flaky_tests TEXT;
ALTER TABLE jobs ADD COLUMN shard_tests TEXT;
CREATE TABLE test_durations (
    jobtype     TEXT NOT NULL,
    test        TEXT NOT NULL,
    duration_ms INTEGER,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (jobtype, test)
);
"#,
    r#"
ALTER TABLE workers ADD COLUMN accept TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workers ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN infra_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantines INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantined_until INTEGER;
ALTER TABLE jobs ADD COLUMN avoid_worker TEXT;
ALTER TABLE jobs ADD COLUMN avoid_until INTEGER;
"#,
    r#"
ALTER TABLE workers ADD COLUMN token_hash TEXT;
ALTER TABLE workers ADD COLUMN instance TEXT;
ALTER TABLE workers ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN last_strike_at INTEGER;
ALTER TABLE jobs ADD COLUMN claim_slot INTEGER;
ALTER TABLE jobs ADD COLUMN claim_seq INTEGER;
CREATE TABLE health_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
"#,
];

const JOB_COLS: &str = "id, jobtype, state, priority, platform, params, timeout_ms, max_attempts, \
     attempt, worker, platform_index, matched_platform, build_id, shard_index, shard_total, \
     created_at, started_at, finished_at, cancel_requested, reason, result, info, extra, \
     retry_failed, reruns, flaky_tests, shard_tests";

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        // WAL with synchronous=NORMAL: a transaction that returned survives a
        // crash of this process; readers never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| {
                let cause = super::store_health::storage_cause(&e)
                    .map_or_else(|| e.to_string(), str::to_string);
                anyhow::anyhow!(
                    "cannot use the database {}: {cause}; is it a testbot database? Move it \
                     away to start with an empty one",
                    path.display()
                )
            })?;
        super::store_health::quick_check(&conn, path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (copying the WAL into the database, with fsyncs) run
        // on a thread of their own, not inside whichever request's commit
        // crossed the threshold while every other request waited on it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(256);
        // New databases give freed pages back, so retention keeps the file
        // bounded; this must be set before the first table exists.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            queue: Mutex::default(),
            claimants: Mutex::default(),
            seen: Mutex::default(),
            path: path.to_path_buf(),
            log_cap: DEFAULT_LOG_CAP,
            wal: Arc::default(),
            health: super::store_health::Health::new(path)
                .with_context(|| format!("cannot read the database {}", path.display()))?,
            outage_heartbeats: Mutex::default(),
        };
        store.migrate().with_context(|| {
            format!(
                "cannot update the schema of the database {}",
                path.display()
            )
        })?;
        store.load_queue()?;
        store.start_checkpointer()?;
        Ok(store)
    }

    /// Checkpoints the WAL in the background: after a commit, waits a
    /// little for more, then copies what the WAL holds into the database.
    /// PASSIVE never blocks the writer.
    fn start_checkpointer(&self) -> anyhow::Result<()> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let wal = self.wal.clone();
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                let (lock, cond) = &*wal;
                loop {
                    {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while !st.dirty {
                            st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    lock.lock().unwrap_or_else(|e| e.into_inner()).dirty = false;
                    checkpoint(&conn, &wal);
                }
            })?;
        Ok(())
    }

    /// After a commit, with the connection still held: wakes the
    /// checkpointer, and checkpoints here when it has not caught up for
    /// long. Under a steady stream of writes a background checkpoint never
    /// copies the frames written while it ran, so the WAL would never
    /// start over and would grow without end; a checkpoint that no write
    /// can overtake lets it start over, and costs little, as the
    /// background has copied most of it already.
    fn note_commit(&self, conn: &Connection) {
        let (lock, cond) = &*self.wal;
        let starving = {
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            st.commits += 1;
            if !st.dirty {
                st.dirty = true;
                cond.notify_one();
            }
            st.commits >= WRITER_CHECKPOINT_COMMITS
        };
        if starving {
            checkpoint(conn, &self.wal);
        }
    }

    /// After a result committed: only a job queued again changes the queue.
    fn after_finish(&self, job: &Job) -> ApiResult<()> {
        if job.state == JobState::Queued {
            self.resync(&[job.id])?;
        }
        Ok(())
    }

    /// Fills the in-memory queue from the database at start.
    fn load_queue(&self) -> anyhow::Result<()> {
        let mut q = self.queue.lock().unwrap();
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn.prepare(&format!(
            "SELECT {QUEUED_COLS} FROM jobs WHERE state = 'queued' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], queued_from_row)?;
        for row in rows {
            q.insert(row?);
        }
        Ok(())
    }

    /// Brings the in-memory queue up to date for jobs whose state may have
    /// changed in a transaction that committed.
    fn resync(&self, ids: &[i64]) -> ApiResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let list = serde_json::to_string(ids)?;
        let queued: Vec<Queued> = self.with_conn(|c| {
            // By id only (the primary key); the state is checked here, so
            // the planner never walks the queue index.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {QUEUED_COLS}, state FROM jobs WHERE id IN (SELECT value FROM json_each(?1))"
            ))?;
            let mut rows = stmt.query([&list])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                if row.get_ref(6)?.as_str().map_err(rusqlite::Error::from)? == "queued" {
                    out.push(queued_from_row(row)?);
                }
            }
            Ok(out)
        })?;
        for id in ids {
            q.remove(*id);
        }
        for job in queued {
            q.insert(job);
        }
        Ok(())
    }

    pub fn with_log_cap(mut self, cap: u64) -> SqliteStore {
        self.log_cap = cap.max(64 << 10);
        self
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "the database has schema version {version}, newer than this testbot knows ({}); \
                 use a newer testbot",
                MIGRATIONS.len()
            );
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)
                .with_context(|| format!("schema migration {}", i + 1))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
        tx.commit()?;
        Ok(())
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Transaction) -> ApiResult<T>) -> ApiResult<T> {
        if let Some(cause) = self.health.lasting() {
            return Err(ApiError::Unavailable(cause));
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let out = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        match &out {
            Ok(_) => {
                self.note_commit(&conn);
                self.health.succeeded();
            }
            Err(ApiError::Unavailable(cause)) => self.health.failed(cause),
            Err(_) => {}
        }
        out
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let before = conn.total_changes();
        let out = f(&conn);
        // It may have written outside a transaction.
        if conn.total_changes() != before {
            self.note_commit(&conn);
        }
        if let Err(ApiError::Unavailable(cause)) = &out {
            self.health.failed(cause);
        }
        out
    }
}

/// An idle worker's last heartbeat as written to the database, and a newer
/// time it was seen that is not written yet.
struct Seen {
    info: String,
    status: &'static str,
    pending: Option<i64>,
}

const QUEUED_COLS: &str = "id, jobtype, priority, platform, avoid_worker, avoid_until";

fn queued_from_row(r: &Row) -> rusqlite::Result<Queued> {
    let avoid = match (r.get::<_, Option<String>>(4)?, r.get::<_, Option<i64>>(5)?) {
        (Some(w), Some(until)) => Some((w, until)),
        _ => None,
    };
    Ok(Queued {
        id: r.get(0)?,
        jobtype: r.get(1)?,
        priority: r.get(2)?,
        platform_json: r.get(3)?,
        avoid,
    })
}

fn json_or<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn job_from_row(row: &Row) -> rusqlite::Result<Job> {
    let state: String = row.get(2)?;
    Ok(Job {
        id: row.get(0)?,
        jobtype: row.get(1)?,
        state: JobState::parse(&state).unwrap_or(JobState::Error),
        priority: row.get(3)?,
        platform: Props::new(),
        requirements: json_or(row.get(4)?),
        params: json_or(row.get(5)?),
        timeout: row
            .get::<_, Option<i64>>(6)?
            .map(|ms| Duration::from_millis(ms as u64)),
        max_attempts: row.get(7)?,
        attempt: row.get(8)?,
        worker: row.get(9)?,
        platform_index: row.get::<_, Option<i64>>(10)?.map(|i| i as usize),
        matched_platform: row
            .get::<_, Option<String>>(11)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        build: row.get(12)?,
        shard_index: row.get(13)?,
        shard_total: row.get(14)?,
        created_at: rfc3339(row.get(15)?),
        started_at: row.get::<_, Option<i64>>(16)?.map(rfc3339),
        finished_at: row.get::<_, Option<i64>>(17)?.map(rfc3339),
        cancel_requested: row.get::<_, i64>(18)? != 0,
        reason: row.get(19)?,
        result: row
            .get::<_, Option<String>>(20)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        info: row
            .get::<_, Option<String>>(21)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        warning: None,
        attempts: Vec::new(),
        extra: json_or(row.get(22)?),
        retry_failed: row.get(23)?,
        reruns: row.get(24)?,
        flaky: state == "passed" && row.get::<_, u32>(24)? > 0,
        flaky_tests: json_or(row.get(25)?),
        shard_tests: row
            .get::<_, Option<String>>(26)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
    .map(|mut job: Job| {
        job.platform = job
            .matched_platform
            .clone()
            .unwrap_or_else(|| job.requirements.clone());
        job
    })
}

fn load_job(conn: &Connection, id: i64) -> ApiResult<Job> {
    conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// A registered worker as claims and explanations need it.
struct WorkerRow {
    view: WorkerView,
    lease_ms: u64,
    presence: worker_rules::Presence,
}

/// What the status rule needs, from a row's columns.
fn presence(
    last_seen: i64,
    lease_ms: i64,
    reported: &str,
    drained: bool,
    quarantined_until: Option<i64>,
    running: u32,
) -> worker_rules::Presence {
    worker_rules::Presence {
        last_seen,
        lease_ms,
        // A status no rule knows (never written by this server) reads as idle.
        reported: Reported::parse(reported).unwrap_or(Reported::Idle),
        drained,
        quarantined_until,
        running,
    }
}

fn parse_accept(rules: &[String]) -> Vec<(String, String)> {
    rules
        .iter()
        .filter_map(|r| r.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_workers(conn: &Connection, now: i64, name: Option<&str>) -> ApiResult<Vec<WorkerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, jobtypes, platforms, lease_ms, last_seen, status, drained, \
         quarantined_until, accept, slots, \
         (SELECT count(*) FROM jobs WHERE jobs.worker = workers.name AND jobs.state = 'running') \
         FROM workers WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([name], |r| {
        let lease_ms: i64 = r.get(3)?;
        let reported: String = r.get(5)?;
        let drained = r.get::<_, i64>(6)? != 0;
        let quarantined_until: Option<i64> = r.get(7)?;
        let running: u32 = r.get(10)?;
        let presence = presence(
            r.get(4)?,
            lease_ms,
            &reported,
            drained,
            quarantined_until,
            running,
        );
        let status = worker_rules::status(&presence, now);
        Ok(WorkerRow {
            view: WorkerView {
                name: r.get(0)?,
                jobtypes: json_or(r.get(1)?),
                platforms: json_or(r.get(2)?),
                accept: parse_accept(&json_or::<Vec<String>>(r.get(8)?)),
                status,
                slots: r.get(9)?,
                running,
            },
            lease_ms: lease_ms as u64,
            presence,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn views(rows: Vec<WorkerRow>) -> Vec<WorkerView> {
    rows.into_iter().map(|r| r.view).collect()
}

/// Counts an infrastructure failure of attempt `attempt` of job `job`
/// against a worker, by the strike rules.
fn note_infra_failure(
    tx: &Transaction,
    worker: &str,
    job: i64,
    attempt: u32,
    now: i64,
) -> ApiResult<()> {
    let Some(before) = tx
        .row(
            "SELECT infra_streak, quarantines, last_strike_at, quarantined_until \
             FROM workers WHERE name = ?1",
            [worker],
            |r| {
                Ok(worker_rules::Strikes {
                    streak: r.get(0)?,
                    quarantines: r.get(1)?,
                    last_strike_at: r.get(2)?,
                    quarantined_until: r.get(3)?,
                })
            },
        )
        .optional()?
    else {
        return Ok(());
    };
    let started: Option<i64> = tx
        .row(
            "SELECT started_at FROM attempts WHERE job_id = ?1 AND attempt = ?2",
            params![job, attempt],
            |r| r.get(0),
        )
        .optional()?;
    let Some(after) = worker_rules::after_strike(&before, started, now) else {
        return Ok(());
    };
    tx.exec(
        "UPDATE workers SET infra_streak = ?2, quarantines = ?3, last_strike_at = ?4, \
         quarantined_until = ?5 WHERE name = ?1",
        params![
            worker,
            after.streak,
            after.quarantines,
            after.last_strike_at,
            after.quarantined_until
        ],
    )?;
    if after.quarantined_until != before.quarantined_until {
        tracing::warn!(
            worker,
            period_s = worker_rules::quarantine_ms(before.quarantines) / 1000,
            "worker quarantined after {} infrastructure failures in a row",
            worker_rules::QUARANTINE_AFTER
        );
    }
    Ok(())
}

/// Gives `name` the best queued job it can run, in `tx`; `claimed` is set
/// to the job taken, for the caller to drop from the index after commit.
fn claim_in(
    tx: &Transaction,
    queue: &mut QueueIndex,
    name: &str,
    tag: Option<ClaimTag>,
    now: i64,
    claimed: &mut Option<i64>,
) -> ApiResult<Claim> {
    if let Some((slot, seq)) = tag {
        // Asked again: the answer to the first ask was lost.
        let again: Option<i64> = tx
            .row(
                "SELECT id FROM jobs WHERE worker = ?1 AND state = 'running' \
                 AND claim_slot = ?2 AND claim_seq = ?3",
                params![name, slot, seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = again {
            return load_job(tx, id).map(|j| Claim::Job(Box::new(j)));
        }
    }
    tx.exec(
        // At most once a second: a page written per claim otherwise.
        "UPDATE workers SET last_seen = ?2 WHERE name = ?1 AND last_seen < ?2 - 1000",
        params![name, now],
    )?;
    let Some(row) = load_workers(tx, now, Some(name))?.into_iter().next() else {
        return Err(ApiError::not_found(format!(
            "unknown worker {name:?}; register first"
        )));
    };
    match worker_rules::gate(&row.presence, now) {
        worker_rules::Gate::Open => {}
        worker_rules::Gate::Draining => return Ok(Claim::Draining),
        worker_rules::Gate::Held => return Ok(Claim::Held),
    }
    let w = row.view;
    let me = Claimant {
        name,
        jobtypes: &w.jobtypes,
        platforms: &w.platforms,
        accept: &w.accept,
    };
    // The index may hold a job another transaction just took or
    // canceled: the guarded update tells, and we look further.
    while let Some((id, index)) = queue.best_for(&me, now) {
        let matched = serde_json::to_string(&w.platforms[index])?;
        let taken = tx.exec(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = ?2, \
             platform_index = ?3, matched_platform = ?4, started_at = ?5, \
             lease_expires = ?6, info = NULL, claim_slot = ?7, claim_seq = ?8 \
             WHERE id = ?1 AND state = 'queued'",
            params![
                id,
                name,
                index as i64,
                matched,
                now,
                now + row.lease_ms as i64,
                tag.map(|t| t.0),
                tag.map(|t| t.1 as i64),
            ],
        )?;
        if taken == 0 {
            queue.remove(id);
            continue;
        }
        tx.exec(
            "INSERT OR REPLACE INTO attempts (job_id, attempt, worker, platform_index, started_at) \
             SELECT id, attempt, worker, platform_index, started_at FROM jobs WHERE id = ?1",
            [id],
        )?;
        *claimed = Some(id);
        return load_job(tx, id).map(|j| Claim::Job(Box::new(j)));
    }
    Ok(Claim::Nothing)
}

/// Records a job's outcome in `tx`: ends it, or queues it again.
fn finish_in(tx: &Transaction, id: i64, o: &Outcome, now: i64) -> ApiResult<Job> {
    if !o.state.is_final() {
        return Err(ApiError::bad(format!(
            "a result's state must be final, not {}",
            o.state
        )));
    }
    let job = check_current(tx, id, &o.worker, o.attempt)?;
    // Fill in what a hand-written result may leave out.
    let mut filled = o.clone();
    if filled.worker.is_empty() {
        filled.worker = job.worker.clone().unwrap_or_default();
    }
    if filled.finished_at.is_empty() {
        filled.finished_at = rfc3339(now);
    }
    if filled.started_at.is_empty() {
        filled.started_at = job
            .started_at
            .clone()
            .unwrap_or_else(|| filled.finished_at.clone());
    }
    let o = &filled;
    let mut result = o.data.clone();
    let core = serde_json::json!({
        "passed": o.state == JobState::Passed,
        "state": o.state,
        "exit_code": o.exit_code,
        "duration_ms": o.duration_ms,
        "started_at": o.started_at,
        "finished_at": o.finished_at,
        "worker": o.worker,
        "attempt": o.attempt,
        "reason": o.reason,
    });
    if let Value::Object(core) = core {
        result.extend(core);
    }
    let reason = o.reason.as_deref().unwrap_or("");
    tx.exec(
        "UPDATE attempts SET finished_at = ?3, state = ?4, reason = ?5 \
         WHERE job_id = ?1 AND attempt = ?2",
        params![id, o.attempt, now, o.state.as_str(), o.reason],
    )?;
    if let Some(report) = &o.tests {
        record_durations(tx, &job.jobtype, report, now)?;
        result.insert("tests".into(), serde_json::to_value(report)?);
    }
    let facts = facts_of(&job);
    let said = job_rules::Result {
        state: o.state,
        infrastructure: o.infrastructure,
        attempt: o.attempt,
        reason,
    };
    match job_rules::health(&said) {
        job_rules::Health::Strike => note_infra_failure(tx, &o.worker, id, o.attempt, now)?,
        job_rules::Health::Healthy => note_healthy(tx, &o.worker)?,
        job_rules::Health::Unknown => {}
    }
    match job_rules::after_result(&facts, &said) {
        job_rules::AfterResult::Requeue { reason } => {
            requeue(tx, id, o.attempt, &reason)?;
            avoid_worker(tx, id, &o.worker, now)?;
        }
        job_rules::AfterResult::Rerun { reason } => {
            let before: Vec<String> =
                tx.row("SELECT failed_before FROM jobs WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<String>>(0).map(json_or)
                })?;
            let failing = o.tests.iter().flat_map(|t| &t.failures);
            let before = job_rules::failed_before(before, failing.map(|f| f.name.as_str()));
            tx.exec(
                "UPDATE jobs SET reruns = reruns + 1, failed_before = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(&before)?],
            )?;
            requeue(tx, id, o.attempt, &reason)?;
        }
        job_rules::AfterResult::End { state, flaky } => {
            // Passing after failing: the tests that failed before and now
            // passed are flaky.
            let flaky_tests = if flaky {
                let before: Vec<String> =
                    tx.row("SELECT failed_before FROM jobs WHERE id = ?1", [id], |r| {
                        r.get::<_, Option<String>>(0).map(json_or)
                    })?;
                Some(serde_json::to_string(&before)?)
            } else {
                None
            };
            let ended = tx.exec(
                "UPDATE jobs SET state = ?2, finished_at = ?3, lease_expires = NULL, \
                 reason = ?4, result = ?5, flaky_tests = ?6 \
                 WHERE id = ?1 AND state = 'running' AND attempt = ?7",
                params![
                    id,
                    state.as_str(),
                    now,
                    o.reason,
                    Value::Object(result).to_string(),
                    flaky_tests,
                    o.attempt
                ],
            )?;
            if ended == 0 {
                return Err(ApiError::conflict(format!(
                    "attempt {} of job {id} ended while its result was recorded",
                    o.attempt
                )));
            }
        }
    }
    load_job(tx, id)
}

/// A job ran to a real outcome there: its strikes are forgiven, as
/// [`worker_rules::after_healthy`] says (a quarantine in force stays).
fn note_healthy(tx: &Transaction, worker: &str) -> ApiResult<()> {
    tx.exec(
        "UPDATE workers SET infra_streak = 0, quarantines = 0 WHERE name = ?1 AND (infra_streak > 0 OR quarantines > 0)",
        [worker],
    )?;
    Ok(())
}

/// After an infrastructure failure on `worker`, makes the job avoid it for
/// a while when another available worker could run it.
fn avoid_worker(tx: &Transaction, id: i64, worker: &str, now: i64) -> ApiResult<()> {
    let (jobtype, reqs): (String, Props) = tx.row(
        "SELECT jobtype, platform FROM jobs WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, json_or(r.get(1)?))),
    )?;
    let others = load_workers(tx, now, None)?.into_iter().any(|w| {
        w.view.name != worker
            && w.view.available()
            && w.view.has_jobtype(&jobtype)
            && w.view.fits(&reqs)
    });
    if others {
        tx.exec(
            "UPDATE jobs SET avoid_worker = ?2, avoid_until = ?3 WHERE id = ?1",
            params![id, worker, now + worker_rules::AVOID_MS],
        )?;
    }
    Ok(())
}

/// A job's place in the queue of the workers that could run it (1 =
/// next): the queued jobs of its jobtype ahead of it (by priority, then
/// age) that one of those workers could run too.
fn queue_position(conn: &Connection, job: &Job, workers: &[WorkerView]) -> ApiResult<u64> {
    let fitting: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.has_jobtype(&job.jobtype) && w.fits(&job.requirements))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT platform FROM jobs WHERE state = 'queued' AND jobtype = ?1 \
         AND (priority > ?2 OR (priority = ?2 AND id < ?3))",
    )?;
    let mut rows = stmt.query(params![job.jobtype, job.priority, job.id])?;
    let mut ahead = 0;
    while let Some(row) = rows.next()? {
        let reqs: Props = json_or(row.get(0)?);
        if fitting.iter().any(|w| w.fits(&reqs)) {
            ahead += 1;
        }
    }
    Ok(ahead + 1)
}

/// Puts a job running attempt `attempt` back in the queue for its next
/// one; a conflict when that attempt no longer runs.
fn requeue(tx: &Transaction, id: i64, attempt: u32, reason: &str) -> ApiResult<()> {
    let n = tx.exec(
        "UPDATE jobs SET state = 'queued', worker = NULL, platform_index = NULL, \
         matched_platform = NULL, lease_expires = NULL, info = NULL, reason = ?2 \
         WHERE id = ?1 AND state = 'running' AND attempt = ?3",
        params![id, reason, attempt],
    )?;
    if n == 0 {
        return Err(ApiError::conflict(format!(
            "attempt {attempt} of job {id} no longer runs"
        )));
    }
    Ok(())
}

/// What the job rules need of a job.
fn facts_of(job: &Job) -> job_rules::Facts {
    job_rules::Facts {
        state: job.state,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        reruns: job.reruns,
        retry_failed: job.retry_failed,
        cancel_requested: job.cancel_requested,
    }
}

/// Remembers each test's latest duration, for splitting later shards.
fn record_durations(
    tx: &Transaction,
    jobtype: &str,
    report: &TestReport,
    now: i64,
) -> ApiResult<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO test_durations (jobtype, test, duration_ms, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(jobtype, test) DO UPDATE SET duration_ms = ?3, updated_at = ?4",
    )?;
    for (test, ms) in &report.durations {
        stmt.execute(params![jobtype, test, *ms as i64, now])?;
    }
    Ok(())
}

/// A jobtype's tests seen in earlier results, with their last durations.
fn known_tests(conn: &Connection, jobtype: &str) -> ApiResult<Vec<(String, Option<u64>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT test, duration_ms FROM test_durations WHERE jobtype = ?1 ORDER BY test",
    )?;
    let rows = stmt.query_map([jobtype], |r| {
        Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|d| d as u64)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ends or requeues a running job whose worker is gone: true when it was
/// queued again (false when it ended, or no longer ran).
fn lose_job(tx: &Transaction, id: i64, why: &str, now: i64) -> ApiResult<bool> {
    let job = load_job(tx, id)?;
    if job.state != JobState::Running {
        return Ok(false);
    }
    let attempt = job.attempt;
    if let Some(w) = &job.worker {
        note_infra_failure(tx, w, id, attempt, now)?;
    }
    tx.exec(
        "UPDATE attempts SET finished_at = ?3, state = ?5, reason = ?4 \
         WHERE job_id = ?1 AND attempt = ?2",
        params![id, attempt, now, why, AttemptState::Lost.as_str()],
    )?;
    match job_rules::after_loss(&facts_of(&job), why) {
        job_rules::AfterLoss::Requeue { reason } => {
            requeue(tx, id, attempt, &reason)?;
            if let Some(w) = &job.worker {
                avoid_worker(tx, id, w, now)?;
            }
            Ok(true)
        }
        job_rules::AfterLoss::End { state, reason } => {
            tx.exec(
                "UPDATE jobs SET state = ?2, finished_at = ?3, lease_expires = NULL, reason = ?4 \
                 WHERE id = ?1 AND state = 'running' AND attempt = ?5",
                params![id, state.as_str(), now, reason, attempt],
            )?;
            Ok(false)
        }
    }
}

fn build_state(counts: &BTreeMap<String, u64>) -> BuildState {
    let by_state: Vec<(JobState, u64)> = counts
        .iter()
        .filter_map(|(s, n)| JobState::parse(s).map(|s| (s, *n)))
        .collect();
    build_rules::state(&by_state)
}

fn load_build(conn: &Connection, id: i64, with_jobs: bool) -> ApiResult<Build> {
    let (name, meta, extra, created): (String, String, String, i64) = conn
        .row(
            "SELECT name, meta, extra, created_at FROM builds WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
    let mut counts = BTreeMap::new();
    let mut stmt =
        conn.prepare_cached("SELECT state, count(*) FROM jobs WHERE build_id = ?1 GROUP BY state")?;
    for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
        let (state, n) = row?;
        counts.insert(state, n);
    }
    let flaky: u64 = conn.row(
        "SELECT count(*) FROM jobs WHERE build_id = ?1 AND state = 'passed' AND reruns > 0",
        [id],
        |r| r.get(0),
    )?;
    let jobs = if with_jobs {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE build_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([id], job_from_row)?;
        rows.collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(Build {
        id,
        name,
        meta: serde_json::from_str(&meta)?,
        state: build_state(&counts),
        created_at: rfc3339(created),
        counts,
        flaky,
        jobs,
        extra: serde_json::from_str(&extra)?,
    })
}

fn cancels_of(conn: &Connection, worker: &str) -> ApiResult<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM jobs WHERE worker = ?1 AND state = 'running' AND cancel_requested = 1",
    )?;
    let ids = stmt
        .query_map([worker], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

fn worker_from_row(conn: &Connection, row: &Row, now: i64) -> ApiResult<Worker> {
    let name: String = row.get(0)?;
    let last_seen: i64 = row.get(9)?;
    let lease: i64 = row.get(6)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, attempt, info FROM jobs WHERE worker = ?1 AND state = 'running' ORDER BY id",
    )?;
    let jobs: Vec<RunningJob> = stmt
        .query_map([&name], |r| {
            Ok(RunningJob {
                id: r.get(0)?,
                attempt: r.get(1)?,
                info: r
                    .get::<_, Option<String>>(2)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                canceling: false,
            })
        })?
        .collect::<Result<_, _>>()?;
    let reported: String = row.get(11)?;
    let drained = row.get::<_, i64>(12)? != 0;
    let quarantined_until: Option<i64> = row.get(14)?;
    let running = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
    let presence = presence(
        last_seen,
        lease,
        &reported,
        drained,
        quarantined_until,
        running,
    );
    Ok(Worker {
        name,
        status: worker_rules::status(&presence, now),
        accept: json_or(row.get(13)?),
        drained,
        quarantined_until: quarantined_until.filter(|t| *t > now).map(rfc3339),
        infra_failures: row.get(15)?,
        jobtypes: json_or(row.get(1)?),
        platforms: json_or(row.get(2)?),
        info: json_or(row.get(3)?),
        slots: row.get(4)?,
        heartbeat_interval_ms: row.get::<_, i64>(5)? as u64,
        version: row.get(7)?,
        registered_at: rfc3339(row.get(8)?),
        last_seen: rfc3339(last_seen),
        jobs,
        extra: json_or(row.get(10)?),
    })
}

const WORKER_COLS: &str = "name, jobtypes, platforms, info, slots, heartbeat_ms, lease_ms, \
     version, registered_at, last_seen, extra, status, drained, accept, quarantined_until, \
     infra_streak";

/// Who holds a worker name now, as registration needs to know.
fn holder_of(tx: &Transaction, name: &str) -> ApiResult<Option<worker_rules::Holder>> {
    Ok(tx
        .row(
            "SELECT token_hash, instance, host, last_seen, lease_ms, platforms, status \
             FROM workers WHERE name = ?1",
            [name],
            |r| {
                let mut host: String = r.get(2)?;
                if host.is_empty() {
                    // Registered before hosts were sent: the detected one.
                    let platforms: Vec<Props> = json_or(r.get(5)?);
                    host = platforms
                        .first()
                        .and_then(|p| p.get("hostname").cloned())
                        .unwrap_or_default();
                }
                Ok(worker_rules::Holder {
                    token_hash: r.get(0)?,
                    instance: r.get(1)?,
                    host,
                    last_seen: r.get(3)?,
                    lease_ms: r.get(4)?,
                    stopped: r.get::<_, String>(6)? == "stopped",
                })
            },
        )
        .optional()?)
}

/// Whether `reg` may take the name `held` has (see
/// [`worker_rules::may_take_name`]).
fn check_may_take(
    held: &worker_rules::Holder,
    reg: &Registration,
    token_hash: Option<&str>,
    revoked: &dyn Fn(&str) -> bool,
    seen_at: Option<i64>,
    now: i64,
) -> ApiResult<()> {
    worker_rules::may_take_name(
        held,
        &reg.name,
        token_hash,
        reg.instance.as_deref(),
        revoked,
        seen_at,
        now,
    )
    .map_err(|refusal| match refusal {
        worker_rules::NameRefusal::OtherToken(m) => ApiError::Forbidden(m),
        worker_rules::NameRefusal::InUse(m) => ApiError::Conflict(m),
    })
}

fn check_current(tx: &Transaction, id: i64, worker: &str, attempt: u32) -> ApiResult<Job> {
    let job = load_job(tx, id)?;
    // An empty worker name means "whoever holds the attempt".
    job_rules::check_current(id, &facts_of(&job), job.worker.as_deref(), worker, attempt)
        .map_err(ApiError::Conflict)?;
    Ok(job)
}

impl SqliteStore {
    fn heartbeat_to_db(
        &self,
        name: &str,
        hb: &Heartbeat,
        status: &str,
        info: &str,
        now: i64,
    ) -> ApiResult<HeartbeatReply> {
        if let Some(c) = self
            .claimants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
        {
            c.1 = hb.status == "draining";
        }
        self.with_tx(|tx| {
            let lease: Option<i64> = tx
                .row(
                    "SELECT lease_ms FROM workers WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(lease) = lease else {
                return Err(ApiError::not_found(format!(
                    "unknown worker {name:?}; register first"
                )));
            };
            tx.exec(
                "UPDATE workers SET last_seen = ?2, info = ?3, status = ?4 WHERE name = ?1",
                params![name, now, info, status],
            )?;
            let mut renew = tx.prepare_cached(
                "UPDATE jobs SET lease_expires = ?4, info = coalesce(?5, info) \
                 WHERE id = ?1 AND attempt = ?2 AND worker = ?3 AND state = 'running'",
            )?;
            for j in &hb.jobs {
                let info = j.info.as_ref().map(|v| v.to_string());
                renew.execute(params![j.id, j.attempt, name, now + lease, info])?;
            }
            Ok(HeartbeatReply {
                cancel: cancels_of(tx, name)?,
            })
        })
    }
}

/// The largest log upload the server takes in one request.
pub const LOG_CHUNK_MAX: usize = 4 << 20;

impl SqliteStore {
    /// Deletes the oldest chunks after the log's head until the attempt
    /// keeps at most `log_cap` bytes: the first half of the cap stays, and
    /// the newest output.
    fn cut_log_middle(
        &self,
        tx: &Transaction,
        id: i64,
        attempt: u32,
        mut stored: u64,
        newest: u64,
    ) -> ApiResult<()> {
        let head = (self.log_cap / 2) as i64;
        let victims: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT pos, length(data) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 \
                 AND pos >= ?3 AND pos < ?4 ORDER BY pos",
            )?;
            let rows = stmt.query_map(params![id, attempt, head, newest as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut del = tx.prepare_cached(
            "DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND pos = ?3",
        )?;
        for (pos, len) in victims {
            if stored <= self.log_cap {
                break;
            }
            del.execute(params![id, attempt, pos])?;
            stored -= len as u64;
        }
        tx.exec(
            "UPDATE attempts SET log_stored = ?3 WHERE job_id = ?1 AND attempt = ?2",
            params![id, attempt, stored as i64],
        )?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn submit(
        &self,
        build: Option<(String, Extra, Extra)>,
        jobs: Vec<JobSpec>,
        now: i64,
    ) -> ApiResult<(Option<i64>, Vec<Job>)> {
        let out = self.with_tx(|tx| {
            let build_id = match build {
                Some((name, meta, extra)) => {
                    tx.exec(
                        "INSERT INTO builds (name, meta, extra, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            name,
                            serde_json::to_string(&meta)?,
                            serde_json::to_string(&extra)?,
                            now
                        ],
                    )?;
                    Some(tx.last_insert_rowid())
                }
                None => None,
            };
            let workers = views(load_workers(tx, now, None)?);
            let created_at = rfc3339(now);
            let mut warnings: std::collections::HashMap<(String, Props), Option<String>> =
                std::collections::HashMap::new();
            let mut out = Vec::with_capacity(jobs.len());
            let mut plans: BTreeMap<(String, u32), Vec<Vec<String>>> = BTreeMap::new();
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (jobtype, state, priority, platform, params, timeout_ms, \
                 max_attempts, build_id, shard_index, shard_total, created_at, extra, \
                 retry_failed, shard_tests) \
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for spec in jobs {
                let job_build = match (&spec.build, build_id) {
                    (_, Some(b)) => Some(b),
                    (Some(BuildRef::Id(b)), None) => {
                        load_build(tx, *b, false)?;
                        Some(*b)
                    }
                    (Some(BuildRef::Name(name)), None) => {
                        tx.exec(
                            "INSERT INTO builds (name, meta, extra, created_at) VALUES (?1, '{}', '{}', ?2)",
                            params![name, now],
                        )?;
                        Some(tx.last_insert_rowid())
                    }
                    (None, None) => None,
                };
                let shard_tests = match (spec.shard_index, spec.shard_total) {
                    (Some(i), Some(n)) => {
                        let key = (spec.jobtype.clone(), n);
                        if !plans.contains_key(&key) {
                            let known = known_tests(tx, &spec.jobtype)?;
                            plans.insert(key.clone(), crate::shards::plan(&known, n));
                        }
                        let plan = &plans[&key];
                        (!plan.iter().all(Vec::is_empty))
                            .then(|| serde_json::to_string(&plan[i as usize]))
                            .transpose()?
                    }
                    _ => None,
                };
                insert.execute(params![
                    spec.jobtype,
                    spec.priority,
                    serde_json::to_string(&spec.platform)?,
                    serde_json::to_string(&spec.params)?,
                    spec.timeout.map(|d| d.as_millis() as i64),
                    spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
                    job_build,
                    spec.shard_index,
                    spec.shard_total,
                    now,
                    serde_json::to_string(&spec.extra)?,
                    spec.retry_failed.unwrap_or(0),
                    shard_tests,
                ])?;
                // The job as stored, built here rather than read back.
                let warning = warnings
                    .entry((spec.jobtype.clone(), spec.platform.clone()))
                    .or_insert_with(|| {
                        explain::never_runnable(&spec.jobtype, &spec.platform, &workers)
                    })
                    .clone();
                out.push(Job {
                    id: tx.last_insert_rowid(),
                    state: JobState::Queued,
                    max_attempts: spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
                    attempt: 0,
                    worker: None,
                    platform_index: None,
                    matched_platform: None,
                    build: job_build,
                    shard_tests: shard_tests
                        .as_deref()
                        .and_then(|s| serde_json::from_str(s).ok()),
                    retry_failed: spec.retry_failed.unwrap_or(0),
                    reruns: 0,
                    flaky: false,
                    flaky_tests: Vec::new(),
                    created_at: created_at.clone(),
                    started_at: None,
                    finished_at: None,
                    cancel_requested: false,
                    reason: None,
                    result: None,
                    info: None,
                    warning,
                    attempts: Vec::new(),
                    jobtype: spec.jobtype,
                    platform: spec.platform.clone(),
                    requirements: spec.platform,
                    params: spec.params,
                    priority: spec.priority,
                    timeout: spec.timeout,
                    shard_index: spec.shard_index,
                    shard_total: spec.shard_total,
                    extra: spec.extra,
                });
            }
            Ok((build_id, out))
        })?;
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for j in &out.1 {
                q.insert(Queued {
                    id: j.id,
                    jobtype: j.jobtype.clone(),
                    priority: j.priority,
                    platform_json: serde_json::to_string(&j.requirements)?,
                    avoid: None,
                });
            }
        }
        Ok(out)
    }

    fn job(&self, id: i64) -> ApiResult<Job> {
        self.with_conn(|c| load_job(c, id))
    }

    fn jobs(&self, f: &JobFilter) -> ApiResult<Vec<Job>> {
        self.with_conn(|c| {
            if !f.ids.is_empty() {
                // Looked up by primary key, then filtered here.
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {JOB_COLS} FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) \
                     ORDER BY id DESC"
                ))?;
                let rows = stmt.query_map([serde_json::to_string(&f.ids)?], job_from_row)?;
                let mut out = Vec::new();
                for j in rows {
                    let j = j?;
                    if f.state.is_none_or(|s| s == j.state)
                        && f.build.is_none_or(|b| Some(b) == j.build)
                        && f.worker
                            .as_ref()
                            .is_none_or(|w| Some(w) == j.worker.as_ref())
                    {
                        out.push(j);
                    }
                }
                out.truncate(f.limit);
                return Ok(out);
            }
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLS} FROM jobs \
                 WHERE (?1 IS NULL OR state = ?1) \
                   AND (?2 IS NULL OR build_id = ?2) \
                   AND (?3 IS NULL OR worker = ?3) \
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![
                    f.state.map(|s| s.as_str()),
                    f.build,
                    f.worker,
                    f.limit as i64
                ],
                job_from_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn cancel(&self, id: i64, now: i64) -> ApiResult<Job> {
        let out = self.with_tx(|tx| {
            let job = load_job(tx, id)?;
            match job_rules::after_cancel(job.state) {
                job_rules::AfterCancel::EndNow => {
                    tx.exec(
                        "UPDATE jobs SET state = 'canceled', cancel_requested = 1, finished_at = ?2, \
                         reason = 'canceled before it ran' WHERE id = ?1 AND state = 'queued'",
                        params![id, now],
                    )?;
                }
                job_rules::AfterCancel::Ask => {
                    tx.exec(
                        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                        [id],
                    )?;
                }
                job_rules::AfterCancel::Nothing => {}
            }
            load_job(tx, id)
        })?;
        self.resync(&[id])?;
        Ok(out)
    }

    fn worker_binding(&self, name: &str, token_hash: &str) -> ApiResult<Option<String>> {
        self.with_tx(|tx| {
            tx.exec(
                "UPDATE workers SET token_hash = ?2 WHERE name = ?1 AND token_hash IS NULL",
                params![name, token_hash],
            )?;
            Ok(tx
                .row(
                    "SELECT token_hash FROM workers WHERE name = ?1",
                    [name],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()?
                .flatten())
        })
    }

    fn register(
        &self,
        reg: &Registration,
        token_hash: Option<&str>,
        revoked: &dyn Fn(&str) -> bool,
        now: i64,
    ) -> ApiResult<RegisterOutcome> {
        let lease = lease_ms(reg.heartbeat_interval_ms);
        let seen_at = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&reg.name)
            .and_then(|s| s.pending);
        let mut lost = Vec::new();
        let out = self.with_tx(|tx| {
            if let Some(held) = holder_of(tx, &reg.name)? {
                check_may_take(&held, reg, token_hash, revoked, seen_at, now)?;
            }
            tx.exec(
                "INSERT INTO workers (name, jobtypes, platforms, info, extra, slots, heartbeat_ms, \
                 lease_ms, version, registered_at, last_seen, accept, token_hash, instance, host) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT(name) DO UPDATE SET jobtypes = ?2, platforms = ?3, info = ?4, \
                 extra = ?5, slots = ?6, heartbeat_ms = ?7, lease_ms = ?8, version = ?9, \
                 registered_at = ?10, last_seen = ?10, status = 'idle', accept = ?11, \
                 token_hash = ?12, instance = ?13, host = ?14",
                params![
                    reg.name,
                    serde_json::to_string(&reg.jobtypes)?,
                    serde_json::to_string(&reg.platforms)?,
                    serde_json::to_string(&reg.info)?,
                    serde_json::to_string(&reg.extra)?,
                    reg.slots,
                    reg.heartbeat_interval_ms as i64,
                    lease as i64,
                    reg.version,
                    now,
                    serde_json::to_string(&reg.accept)?,
                    token_hash,
                    reg.instance,
                    reg.host,
                ],
            )?;
            // Jobs the server believes run there but the worker does not
            // list were lost with its previous process.
            let running: Vec<(i64, u32)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, attempt FROM jobs WHERE worker = ?1 AND state = 'running'",
                )?;
                let rows = stmt.query_map([&reg.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut requeued = 0;
            for (id, attempt) in running {
                if reg
                    .running
                    .iter()
                    .any(|j| j.id == id && j.attempt == attempt)
                {
                    tx.exec(
                        "UPDATE jobs SET lease_expires = ?2 WHERE id = ?1",
                        params![id, now + lease as i64],
                    )?;
                } else {
                    lost.push(id);
                    if lose_job(tx, id, "worker restarted", now)? {
                        requeued += 1;
                    }
                }
            }
            Ok(RegisterOutcome {
                lease_ms: lease,
                requeued,
            })
        })?;
        self.claimants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reg.name.clone(), (reg.jobtypes.clone(), false));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reg.name);
        self.resync(&lost)?;
        Ok(out)
    }

    fn heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> ApiResult<HeartbeatReply> {
        // A worker that stopped said goodbye: it is offline at once.
        let status: &'static str = match hb.status.as_str() {
            "draining" => "draining",
            "stopped" => "stopped",
            _ => "idle",
        };
        let info = serde_json::to_string(&hb.info)?;
        if hb.jobs.is_empty() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = seen.get_mut(name) {
                if s.info == info && s.status == status {
                    s.pending = Some(now);
                    return Ok(HeartbeatReply::default());
                }
            }
        }
        let reply = match self.heartbeat_to_db(name, hb, status, &info, now) {
            Err(ApiError::Unavailable(cause)) => {
                // The worker is alive; the storage is not its fault.
                if !hb.jobs.is_empty() {
                    self.outage_heartbeats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_string());
                }
                return Err(ApiError::Unavailable(cause));
            }
            other => other?,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if hb.jobs.is_empty() {
            seen.insert(
                name.to_string(),
                Seen {
                    info,
                    status,
                    pending: None,
                },
            );
        } else {
            seen.remove(name);
        }
        Ok(reply)
    }

    fn pending_cancels(&self, name: &str) -> ApiResult<Vec<i64>> {
        self.with_conn(|c| cancels_of(c, name))
    }

    fn flush_heartbeats(&self) -> ApiResult<()> {
        let pending: Vec<(String, i64)> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.iter_mut()
                .filter_map(|(n, s)| s.pending.take().map(|t| (n.clone(), t)))
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE workers SET last_seen = max(last_seen, ?2) WHERE name = ?1",
            )?;
            for (name, t) in &pending {
                stmt.execute(params![name, t])?;
            }
            Ok(())
        })
    }

    fn may_claim(&self, name: &str) -> bool {
        let claimants = self.claimants.lock().unwrap_or_else(|e| e.into_inner());
        let Some((jobtypes, draining)) = claimants.get(name) else {
            // Unknown here: let the store answer (perhaps 404).
            return true;
        };
        if *draining {
            return true;
        }
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        jobtypes.iter().any(|t| queue.has_jobtype(t))
    }

    fn claim(&self, name: &str, tag: Option<ClaimTag>, now: i64) -> ApiResult<Claim> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = None;
        let out = self.with_tx(|tx| claim_in(tx, &mut queue, name, tag, now, &mut claimed))?;
        if let Some(id) = claimed {
            queue.remove(id);
        }
        Ok(out)
    }

    fn finish_and_claim(
        &self,
        id: i64,
        o: &Outcome,
        name: &str,
        tag: Option<ClaimTag>,
        now: i64,
    ) -> ApiResult<(ApiResult<Job>, Claim)> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = None;
        let (finished, claim) = self.with_tx(|tx| {
            // The result's refusal is the result's alone: undo what it
            // did and claim all the same. Failures of the database fail
            // both.
            tx.exec("SAVEPOINT result", [])?;
            let finished = match finish_in(tx, id, o, now) {
                Ok(job) => {
                    tx.exec("RELEASE result", [])?;
                    Ok(job)
                }
                // The database failing fails the whole request.
                Err(e @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => return Err(e),
                Err(refused) => {
                    tx.exec("ROLLBACK TO result", [])?;
                    tx.exec("RELEASE result", [])?;
                    Err(refused)
                }
            };
            let claim = claim_in(tx, &mut queue, name, tag, now, &mut claimed)?;
            Ok((finished, claim))
        })?;
        if let Some(id) = claimed {
            queue.remove(id);
        }
        drop(queue);
        if let Ok(job) = &finished {
            self.after_finish(job)?;
        }
        Ok((finished, claim))
    }

    fn append_log(&self, id: i64, q: &LogQuery, bytes: &[u8], _now: i64) -> ApiResult<LogReply> {
        self.with_tx(|tx| {
            let job = check_current(tx, id, &q.worker, q.attempt)?;
            let size: u64 = tx.row(
                "SELECT log_size FROM attempts WHERE job_id = ?1 AND attempt = ?2",
                params![id, q.attempt],
                |r| r.get::<_, i64>(0).map(|n| n as u64),
            )?;
            let offset = q.offset.unwrap_or(size);
            if offset > size {
                return Err(ApiError::bad(format!(
                    "log offset {offset} is past the {size} bytes stored for attempt {}",
                    q.attempt
                )));
            }
            let skip = (size - offset) as usize;
            if skip < bytes.len() {
                let new = &bytes[skip..];
                tx.exec(
                    "INSERT INTO log_chunks (job_id, attempt, pos, data) VALUES (?1, ?2, ?3, ?4)",
                    params![id, q.attempt, size as i64, new],
                )?;
                let stored: i64 = tx.row(
                    "UPDATE attempts SET log_size = log_size + ?3, log_stored = log_stored + ?3 \
                     WHERE job_id = ?1 AND attempt = ?2 RETURNING log_stored",
                    params![id, q.attempt, new.len() as i64],
                    |r| r.get(0),
                )?;
                if stored as u64 > self.log_cap {
                    self.cut_log_middle(tx, id, q.attempt, stored as u64, size)?;
                }
            }
            Ok(LogReply {
                size: size.max(offset + bytes.len() as u64),
                cancel: job.cancel_requested,
            })
        })
    }

    fn read_log(&self, id: i64, attempt: Option<u32>, from: u64) -> ApiResult<LogSlice> {
        self.with_conn(|c| {
            let job = load_job(c, id)?;
            let attempt = attempt.unwrap_or(job.attempt);
            let size: u64 = c
                .row(
                    "SELECT log_size FROM attempts WHERE job_id = ?1 AND attempt = ?2",
                    params![id, attempt],
                    |r| r.get::<_, i64>(0).map(|n| n as u64),
                )
                .optional()?
                .unwrap_or(0);
            let mut data = Vec::new();
            let mut stmt = c.prepare_cached(
                "SELECT pos, data FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 \
                 AND pos + length(data) > ?3 ORDER BY pos",
            )?;
            let mut rows = stmt.query(params![id, attempt, from as i64])?;
            let mut expected = from;
            while let Some(row) = rows.next()? {
                let pos = row.get::<_, i64>(0)? as u64;
                let chunk = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                if pos > expected {
                    data.extend_from_slice(
                        format!(
                            "\n[testbot: {} bytes of this log were cut to keep it under the server's cap]\n",
                            pos - expected
                        )
                        .as_bytes(),
                    );
                }
                let skip = expected.saturating_sub(pos) as usize;
                data.extend_from_slice(&chunk[skip.min(chunk.len())..]);
                expected = pos + chunk.len() as u64;
            }
            Ok(LogSlice {
                attempt,
                data,
                size,
                end: expected,
                state: job.state,
                // More may come while the job has not ended and this is its
                // current attempt (or it has not started yet).
                live: !job.state.is_final() && job.attempt == attempt,
            })
        })
    }

    fn attempts(&self, id: i64) -> ApiResult<Vec<Attempt>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT attempt, worker, started_at, finished_at, state, reason, log_size \
                 FROM attempts WHERE job_id = ?1 ORDER BY attempt",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    worker: r.get(1)?,
                    started_at: rfc3339(r.get(2)?),
                    finished_at: r.get::<_, Option<i64>>(3)?.map(rfc3339),
                    state: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|s| AttemptState::parse(&s)),
                    reason: r.get(5)?,
                    log_bytes: r.get::<_, i64>(6)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn finish(&self, id: i64, o: &Outcome, now: i64) -> ApiResult<Job> {
        let out = self.with_tx(|tx| finish_in(tx, id, o, now))?;
        self.after_finish(&out)?;
        Ok(out)
    }

    fn expire_leases(&self, now: i64) -> ApiResult<usize> {
        let alive: Vec<String> = self
            .outage_heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let out = self.with_tx(|tx| {
            // Workers that kept heartbeating while the database could not be
            // written get their leases renewed before any runs out, as after
            // a restart: the outage was the server's, not theirs.
            for name in &alive {
                tx.exec(
                    "UPDATE jobs SET lease_expires = ?2 + \
                       (SELECT lease_ms FROM workers WHERE name = ?1) \
                     WHERE worker = ?1 AND state = 'running'",
                    params![name, now],
                )?;
            }
            let expired: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < ?1",
                )?;
                let rows = stmt.query_map([now], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for &id in &expired {
                lose_job(tx, id, "worker lost", now)?;
            }
            Ok(expired)
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // Still down: the renewal waits for the next try.
                self.outage_heartbeats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(alive);
                return Err(e);
            }
        };
        self.resync(&out)?;
        Ok(out.len())
    }

    fn renew_all_leases(&self, now: i64) -> ApiResult<()> {
        self.with_tx(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_expires = max(coalesce(lease_expires, 0), ?1 + \
                 coalesce((SELECT lease_ms FROM workers WHERE workers.name = jobs.worker), ?2)) \
                 WHERE state = 'running'",
                params![now, MIN_LEASE_MS as i64],
            )?;
            Ok(())
        })
    }

    fn workers(&self, now: i64) -> ApiResult<Vec<Worker>> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {WORKER_COLS} FROM workers ORDER BY name"))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(worker_from_row(c, row, now)?);
            }
            Ok(out)
        })
    }

    fn worker(&self, name: &str, now: i64) -> ApiResult<Worker> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {WORKER_COLS} FROM workers WHERE name = ?1"
            ))?;
            let mut rows = stmt.query([name])?;
            match rows.next()? {
                Some(row) => worker_from_row(c, row, now),
                None => Err(ApiError::not_found(format!("no worker {name:?}"))),
            }
        })
    }

    fn summary(&self, now: i64) -> ApiResult<Summary> {
        // Counting needs only each worker's status: one query, not a full
        // record (with its running jobs) per worker.
        let workers = self.with_conn(|c| load_workers(c, now, None))?;
        let mut counts = WorkerCounts::default();
        for w in &workers {
            match w.view.status.as_str() {
                "offline" => counts.offline += 1,
                "draining" => {
                    counts.online += 1;
                    counts.draining += 1
                }
                "quarantined" => {
                    counts.online += 1;
                    counts.quarantined += 1
                }
                "busy" => {
                    counts.online += 1;
                    counts.busy += 1
                }
                _ => {
                    counts.online += 1;
                    counts.idle += 1
                }
            }
        }
        let jobs = self.with_conn(|c| {
            let mut jobs: BTreeMap<String, u64> = JobState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
            let mut stmt = c.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
                let (s, n) = row?;
                jobs.insert(s, n);
            }
            Ok(jobs)
        })?;
        Ok(Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: counts,
            jobs,
            builds: self.builds(5)?,
        })
    }

    fn builds(&self, limit: usize) -> ApiResult<Vec<Build>> {
        self.with_conn(|c| {
            let ids: Vec<i64> = {
                let mut stmt =
                    c.prepare_cached("SELECT id FROM builds ORDER BY id DESC LIMIT ?1")?;
                let rows = stmt.query_map([limit as i64], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            ids.into_iter().map(|id| load_build(c, id, false)).collect()
        })
    }

    fn build(&self, id: i64) -> ApiResult<Build> {
        self.with_conn(|c| load_build(c, id, true))
    }

    fn gauges(&self, now: i64) -> ApiResult<Gauges> {
        let summary = self.summary(now)?;
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT jobtype, state, count(*) FROM jobs GROUP BY jobtype, state ORDER BY 1, 2",
            )?;
            let jobs = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare_cached(
                "SELECT jobtype, min(created_at) FROM jobs WHERE state = 'queued' GROUP BY jobtype ORDER BY 1",
            )?;
            let oldest_queued = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, (now - r.get::<_, i64>(1)?).max(0) as f64 / 1000.0))
                })?
                .collect::<Result<_, _>>()?;
            let log_bytes: i64 =
                c.row("SELECT coalesce(sum(log_stored), 0) FROM attempts", [], |r| r.get(0))?;
            Ok(Gauges {
                summary,
                jobs,
                oldest_queued,
                log_bytes: log_bytes as u64,
            })
        })
    }

    fn purge_finished(&self, before: i64, batch: usize) -> ApiResult<usize> {
        let n = self.with_tx(|tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') \
                     AND finished_at < ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![before, batch as i64], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            if ids.is_empty() {
                return Ok(0);
            }
            let list = serde_json::to_string(&ids)?;
            for table in ["log_chunks", "attempts"] {
                tx.exec(
                    &format!(
                        "DELETE FROM {table} WHERE job_id IN (SELECT value FROM json_each(?1))"
                    ),
                    [&list],
                )?;
            }
            tx.exec(
                "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
                [&list],
            )?;
            tx.exec(
                "DELETE FROM builds WHERE created_at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.build_id = builds.id)",
                [before],
            )?;
            Ok(ids.len())
        })?;
        if n > 0 {
            self.with_conn(|c| {
                c.execute_batch("PRAGMA incremental_vacuum(2000)")?;
                Ok(())
            })?;
        }
        Ok(n)
    }

    fn backup_to(&self, path: &Path) -> ApiResult<()> {
        // A connection of its own: in WAL mode its read does not block the
        // API's writes, and copying every page in one step cannot be
        // restarted by them.
        let src = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut dst = Connection::open(path)?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(())
    }

    fn explain(&self, id: i64, now: i64) -> ApiResult<Explanation> {
        self.with_conn(|c| {
            let job = load_job(c, id)?;
            let workers = views(load_workers(c, now, None)?);
            let position = if job.state == JobState::Queued {
                Some(queue_position(c, &job, &workers)?)
            } else {
                None
            };
            Ok(explain::explain(&job, &workers, position))
        })
    }

    fn storage_problem(&self, now: i64) -> Option<String> {
        if self.health.wrote_within(Duration::from_secs(1)) {
            return self.health.problem();
        }
        let _ = self.with_tx(|tx| {
            tx.exec(
                "INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, ?1)",
                [now],
            )?;
            Ok(())
        });
        self.health.problem()
    }

    fn check_storage(&self) {
        self.health.check_file();
    }

    fn log_cap(&self) -> u64 {
        self.log_cap
    }

    fn set_drained(&self, name: &str, drained: bool, now: i64) -> ApiResult<Worker> {
        self.with_tx(|tx| {
            let changed = tx.exec(
                "UPDATE workers SET drained = ?2, \
                 quarantined_until = CASE WHEN ?2 THEN quarantined_until ELSE NULL END, \
                 infra_streak = CASE WHEN ?2 THEN infra_streak ELSE 0 END, \
                 quarantines = CASE WHEN ?2 THEN quarantines ELSE 0 END WHERE name = ?1",
                params![name, drained],
            )?;
            if changed == 0 {
                return Err(ApiError::not_found(format!("no worker {name:?}")));
            }
            Ok(())
        })?;
        self.worker(name, now)
    }
}
