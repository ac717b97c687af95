//! The server's state: what every storage backend offers, as traits split
//! by concern ([`Jobs`], [`Workers`], [`Dispatch`], [`Logs`], [`Admin`]),
//! and the backends, one folder each (`sqlite/`).
//!
//! Each method is one whole operation (submit, claim, finish...) carried
//! out in one transaction. The scheduling decisions themselves are in
//! `crate::rules`; a backend loads the facts, asks the rule and saves the
//! answer. Methods block: callers on the async runtime go through
//! `spawn_blocking`.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller so
//! that lease logic is testable and one operation sees one clock.

use std::path::Path;

use super::metrics::Gauges;
use crate::wire::*;

pub(crate) mod artifacts;
mod common;
#[cfg(test)]
mod conformance;
pub mod copy;
pub(crate) mod portable;
pub(crate) mod postgres;
pub(crate) mod sqlite;
pub(crate) mod submit_keys;
pub(crate) mod test_queue;
pub(crate) mod test_results;
pub use artifacts::{Caps as ArtifactCaps, Uploader};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use test_queue::Step as TestsStep;
pub use test_results::{BuildTestsQuery, StatsKind, OUTCOME_FILTERS};

/// What a storage operation fails with: a rule's refusal, or the storage's
/// own failure. The HTTP layer gives each its status (`server/error.rs`);
/// nothing here knows of HTTP.
#[derive(Debug)]
pub enum StoreError {
    /// Input that breaks a rule the store checks.
    Invalid(String),
    /// No such job, worker or build.
    NotFound(String),
    /// A worker acting for another (its name is bound to another token).
    Forbidden(String),
    /// About a state that is gone: a stale attempt, a name in use.
    Conflict(String),
    /// The storage cannot be written now: disk full, read-only, gone. The
    /// message says which.
    Unavailable(String),
    /// A bug, or stored data that cannot be read.
    Broken(anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub use submit_keys::SubmitKey;

/// What a submission made: its build, its jobs, and whether an earlier
/// submission with the same key made them (`repeated`).
#[derive(Debug)]
pub struct Submitted {
    pub build: Option<i64>,
    pub jobs: Vec<Job>,
    pub repeated: bool,
}

impl StoreError {
    pub fn invalid(msg: impl Into<String>) -> StoreError {
        StoreError::Invalid(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> StoreError {
        StoreError::NotFound(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> StoreError {
        StoreError::Conflict(msg.into())
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(m)
            | StoreError::NotFound(m)
            | StoreError::Forbidden(m)
            | StoreError::Conflict(m)
            | StoreError::Unavailable(m) => f.write_str(m),
            StoreError::Broken(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match super::store_health::storage_cause(&e) {
            Some(cause) => StoreError::Unavailable(cause.to_string()),
            None => StoreError::Broken(anyhow::Error::new(e).context("database")),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError::Broken(anyhow::Error::new(e).context("stored JSON"))
    }
}

impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> StoreError {
        StoreError::Broken(e)
    }
}

/// The largest log upload the server takes in one request.
pub const LOG_CHUNK_MAX: usize = 4 << 20;

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
    /// Only jobs that have got this far.
    pub reached: Option<Reached>,
    /// Only jobs of this jobtype.
    pub jobtype: Option<String>,
    /// Only jobs whose params hold this text (any case).
    pub text: Option<String>,
    /// Only jobs older than this one (ids below it): the next page.
    pub before: Option<i64>,
    pub limit: usize,
}

/// Which builds a list holds, newest first.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only builds whose name holds this text (any case).
    pub name: Option<String>,
    /// Only builds older than this one: the next page.
    pub before: Option<i64>,
    pub limit: usize,
}

/// How far a job has got, for [`JobFilter::reached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Started or ended: no longer queued.
    Started,
    /// Ended: passed, failed, timed out, canceled or error.
    Ended,
}

impl Reached {
    pub fn as_str(self) -> &'static str {
        match self {
            Reached::Started => "started",
            Reached::Ended => "ended",
        }
    }
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

/// What another server's change may concern, for [`Store::watch_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Anything: queued jobs, cancels, workers, logs.
    Anything,
    /// Only that a job ended: what waits on jobs, not claims or heartbeats.
    JobEnded,
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

/// Everything a backend offers; what the server holds (`Arc<dyn Store>`).
pub trait Store:
    Jobs + Workers + Dispatch + Logs + Admin + TestQueue + Artifacts + Send + Sync + 'static
{
}

impl<
        T: Jobs + Workers + Dispatch + Logs + Admin + TestQueue + Artifacts + Send + Sync + 'static,
    > Store for T
{
}

/// Jobs and builds: submitting, reading, canceling, explaining.
pub trait Jobs {
    /// Queues jobs, in a new build when `build` is given, in one
    /// transaction; with a `key` an earlier submission made, its jobs
    /// instead (see [`submit_keys`]).
    fn submit(
        &self,
        build: Option<(String, Extra, Extra)>,
        jobs: Vec<JobSpec>,
        now: i64,
        key: Option<SubmitKey>,
    ) -> StoreResult<Submitted>;
    fn job(&self, id: i64) -> StoreResult<Job>;
    fn jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    /// Cancels a queued job at once; marks a running one for its worker.
    fn cancel(&self, id: i64, now: i64) -> StoreResult<Job>;
    /// Every attempt of a job, oldest first.
    fn attempts(&self, id: i64) -> StoreResult<Vec<Attempt>>;
    /// A worker's latest attempts, newest first, with their jobs' ids.
    fn worker_attempts(&self, name: &str, limit: usize) -> StoreResult<Vec<(i64, Attempt)>>;
    fn builds(&self, filter: &BuildFilter) -> StoreResult<Vec<Build>>;
    fn build(&self, id: i64) -> StoreResult<Build>;
    /// A build without its jobs: name, meta, counts, state.
    fn build_head(&self, id: i64) -> StoreResult<Build>;
    /// Why a job is (not) running.
    fn explain(&self, id: i64, now: i64) -> StoreResult<Explanation>;
}

/// Workers: registration and the name binding, heartbeats, status, drain.
pub trait Workers {
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
    ) -> StoreResult<RegisterOutcome>;
    /// The hash of the token a worker name is bound to: `None` for an
    /// unknown name; a name registered without a token is bound here to
    /// `token_hash` (the first worker token to use it), guarded so two
    /// callers cannot both win.
    fn worker_binding(&self, name: &str, token_hash: &str) -> StoreResult<Option<String>>;
    fn heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> StoreResult<HeartbeatReply>;
    /// An idle heartbeat that says what the worker said last time is only
    /// noted in memory (written with the others by `flush_heartbeats`):
    /// its reply, or None when it must go to [`Workers::heartbeat`]. Never
    /// blocks, so the server calls it on its async threads.
    fn note_idle_heartbeat(&self, name: &str, hb: &Heartbeat, now: i64) -> Option<HeartbeatReply>;
    /// The worker's running jobs that were canceled.
    fn pending_cancels(&self, name: &str) -> StoreResult<Vec<i64>>;
    /// A cheap, in-memory look: could a claim by this worker get anything
    /// (or an answer other than "nothing") right now? False only when
    /// surely not, so idle long-polls need not touch the database.
    fn may_claim(&self, name: &str) -> bool;
    /// Writes the `last_seen` of heartbeats that were only noted in memory
    /// (idle workers whose info and status did not change).
    fn flush_heartbeats(&self) -> StoreResult<()>;
    fn workers(&self, now: i64) -> StoreResult<Vec<Worker>>;
    fn worker(&self, name: &str, now: i64) -> StoreResult<Worker>;
    /// Drains a worker from the server (no new jobs), or undrains it, which
    /// also ends a quarantine.
    fn set_drained(&self, name: &str, drained: bool, now: i64) -> StoreResult<Worker>;
}

/// Handing out jobs and taking their results; leases.
pub trait Dispatch {
    /// Gives the worker the best job it can run, if any: highest priority,
    /// then oldest, matched to its first fitting platform.
    ///
    /// A claim tagged with its slot and number (`tag`) is idempotent: the
    /// same tag again (the answer was lost) gets the same job again.
    fn claim(&self, name: &str, tag: Option<ClaimTag>, now: i64) -> StoreResult<Claim>;
    /// Records how an attempt ended; refuses an attempt that is not current.
    fn finish(&self, id: i64, outcome: &Outcome, now: i64) -> StoreResult<Job>;
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
    ) -> StoreResult<(StoreResult<Job>, Claim)>;
    /// Puts jobs whose lease ran out back in the queue (or ends them);
    /// returns how many leases ran out.
    fn expire_leases(&self, now: i64) -> StoreResult<usize>;
    /// Gives every running job a fresh lease: after a server restart, so
    /// workers that kept running have time to reconnect.
    fn renew_all_leases(&self, now: i64) -> StoreResult<()>;
}

/// The test queue the shards of one submission share, and build-level
/// test results and history (`store::test_queue`). Calls about a job are
/// refused (409) unless `attempt` is the one it runs now.
pub trait TestQueue {
    /// Merges the job's list when given, then reserves its next batch, or
    /// says it is done, needs its list, or should ask again.
    fn tests_next(
        &self,
        job: i64,
        attempt: u32,
        req: &TestsNext,
        now: i64,
    ) -> StoreResult<test_queue::Step>;
    /// Records outcomes of tests reserved for this attempt.
    fn tests_report(
        &self,
        job: i64,
        attempt: u32,
        results: &[TestResult],
        now: i64,
    ) -> StoreResult<TestsReported>;
    /// Gives back the attempt's unreported tests; the job's tests so far.
    fn tests_finish(&self, job: i64, attempt: u32) -> StoreResult<JobTests>;
    fn build_tests(&self, build: i64, q: &BuildTestsQuery) -> StoreResult<BuildTests>;
    fn test_stats(
        &self,
        kind: StatsKind,
        jobtype: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<TestStat>>;
    /// Every test the static plan of the job's queue gave some shard.
    fn shard_known(&self, job: i64) -> StoreResult<Vec<String>>;
    /// The key job tokens are signed with: `fresh` becomes it if the
    /// database has none yet.
    fn job_token_key(&self, fresh: &str) -> StoreResult<String>;
    /// For tests: the queue's kept counts agree with its tests.
    #[cfg(test)]
    fn check_test_queue(&self, queue: i64) -> StoreResult<()>;
}

/// Artifact metadata (`store::artifacts`); the bytes are the blob store's.
pub trait Artifacts {
    /// Declares an attempt's files (see `artifacts::declare`).
    #[allow(clippy::too_many_arguments)]
    fn declare_artifacts(
        &self,
        job: i64,
        attempt: u32,
        who: Uploader,
        files: &[ArtifactFile],
        keep_ms: Option<u64>,
        caps: ArtifactCaps,
        stored: &dyn Fn(&str, u64) -> bool,
        now: i64,
    ) -> StoreResult<Vec<Artifact>>;
    /// Whether `who` may upload to the attempt now.
    fn check_uploader(&self, job: i64, attempt: u32, who: Uploader) -> StoreResult<()>;
    fn artifact(&self, job: i64, attempt: u32, path: &str) -> StoreResult<Option<Artifact>>;
    fn artifact_progress(
        &self,
        job: i64,
        attempt: u32,
        path: &str,
        received: u64,
        complete: bool,
    ) -> StoreResult<()>;
    /// Of `attempt`, or of the latest attempt that has any.
    fn artifacts(&self, job: i64, attempt: Option<u32>) -> StoreResult<Vec<Artifact>>;
    /// Deletes the artifacts past their `keep_artifacts`; how many.
    fn expire_artifacts(&self, now: i64) -> StoreResult<u64>;
    /// Partial uploads and blobs nothing names any more: (`partial` or
    /// `blob`, name), to delete from the blob store.
    fn artifact_garbage(&self) -> StoreResult<Vec<(String, String)>>;
}

/// Job logs, appended with offsets, kept within the cap.
pub trait Logs {
    fn append_log(&self, id: i64, q: &LogQuery, bytes: &[u8], now: i64) -> StoreResult<LogReply>;
    fn read_log(&self, id: i64, attempt: Option<u32>, from: u64) -> StoreResult<LogSlice>;
    /// The most log bytes kept per attempt (`serve --log-cap`), announced
    /// to workers so they keep no more than that either.
    fn log_cap(&self) -> u64;
}

/// What operators read and do: summary, metrics, retention, backup, storage health.
pub trait Admin {
    fn summary(&self, now: i64) -> StoreResult<Summary>;
    /// What `/metrics` reads at scrape time.
    fn gauges(&self, now: i64) -> StoreResult<Gauges>;
    /// Deletes up to `batch` jobs that ended before `before`, with their
    /// attempts and logs, and builds left empty; returns how many jobs.
    fn purge_finished(&self, before: i64, batch: usize) -> StoreResult<usize>;
    /// Writes a consistent copy of the database to `path` with SQLite's
    /// online backup, without holding up the API.
    fn backup_to(&self, path: &Path) -> StoreResult<()>;
    /// Why the database cannot be written now, if it cannot (tried with a
    /// small write when none went through in the last second).
    fn storage_problem(&self, now: i64) -> Option<String>;
    /// Looks whether the database file is still the one opened (called
    /// once a second).
    fn check_storage(&self);
    /// Calls `wake` whenever another server on the same database may have
    /// changed what this one waits on (a job queued, canceled or ended, a
    /// log grown). One server alone needs none of it.
    fn watch_changes(&self, wake: std::sync::Arc<dyn Fn(Woken) + Send + Sync>) {
        let _ = wake;
    }
    /// The database is a file this process reads and writes itself, so a
    /// short call (a claim, a result, a heartbeat) takes a fraction of a
    /// millisecond and never waits on the network: the server may make it
    /// on its async thread instead of handing it to the blocking pool.
    fn in_process(&self) -> bool {
        false
    }
}
