//! The protocol: every JSON body that crosses the wire between the server,
//! the workers and the CLI, in one place so it can be read on one screen.
//!
//! Both sides (de)serialize these types; nothing else defines a body.
//! Bodies are extensible: fields a client sends that testbot does not know
//! land in `extra` and are stored and returned unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod artifacts;
mod states;
mod test_queue;
mod trim;
pub use artifacts::*;
use serde_json::Value;
pub use states::{AttemptState, BuildState, Reported, WorkerStatus};
pub use test_queue::*;

/// Platform properties (`os.family = linux`) or requirements
/// (`os.family = lin*`): string keys and string values.
pub type Props = BTreeMap<String, String>;
/// Fields testbot does not interpret, kept as the client sent them.
pub type Extra = serde_json::Map<String, Value>;

/// The states of a job. `queued` and `running` are the live ones; the rest
/// are final and never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Passed,
    Failed,
    TimedOut,
    Canceled,
    Error,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Passed,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Canceled,
        JobState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Passed => "passed",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Canceled => "canceled",
            JobState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as a client submits it (`POST /api/v1/jobs`, or each of a build's
/// `jobs`). Only `jobtype` is required.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobSpec {
    pub jobtype: String,
    /// Requirements: property -> pattern (`*` matches any run of characters).
    #[serde(default)]
    pub platform: Props,
    #[serde(default)]
    pub params: Props,
    #[serde(default)]
    pub priority: i64,
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A build id to join, or a name for a new build holding just this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_total: Option<u32>,
    /// Rerun a failed (or timed out) job up to this many times; a job that
    /// passes on a rerun is marked flaky.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_failed: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BuildRef {
    Id(i64),
    Name(String),
}

/// A job as the server returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub jobtype: String,
    pub state: JobState,
    /// The platform the job runs (or ran) on, as SPEC says a job records
    /// which one matched: the worker platform's properties once claimed;
    /// until then the requirements it was submitted with.
    pub platform: Props,
    /// The requirements the job was submitted with, always.
    pub requirements: Props,
    pub params: Props,
    pub priority: i64,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub max_attempts: u32,
    /// Claims so far; the current attempt while running.
    pub attempt: u32,
    pub worker: Option<String>,
    /// Index into the worker's platforms of the one that matched.
    pub platform_index: Option<usize>,
    /// The properties of the platform the job was matched to.
    pub matched_platform: Option<Props>,
    pub build: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_total: Option<u32>,
    /// The tests this shard should run, split by recorded durations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_tests: Option<Vec<String>>,
    /// The test queue the shards of one submission share (the id of its
    /// first shard), for sharded jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_queue: Option<i64>,
    /// In a claim's answer only, for a job with `shard_tests`: every test
    /// the plan gave some shard (a test in none of them is new: it runs on
    /// the shard its id hashes to, see `testbot tests shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_known: Option<Vec<String>>,
    /// In a claim's answer only: the token for this attempt's own calls
    /// (its test queue), which the worker gives the command as
    /// `TESTBOT_JOB_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_token: Option<String>,
    pub retry_failed: u32,
    /// Reruns after test failures so far.
    pub reruns: u32,
    /// Passed on a rerun after failing.
    pub flaky: bool,
    /// Tests that failed on an earlier attempt of a job that then passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flaky_tests: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub cancel_requested: bool,
    /// Why the job ended as it did, when that is not just its exit code.
    pub reason: Option<String>,
    pub result: Option<Value>,
    /// What the command last wrote to `$TESTBOT_INFO_FILE`.
    pub info: Option<Value>,
    /// Present only in a submit answer: why this job may never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Every attempt so far; in `GET /api/v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One run of a job on a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// How it ended (a job state, or `lost`); none while it runs.
    pub state: Option<AttemptState>,
    pub reason: Option<String>,
    /// Log bytes the worker sent for it.
    pub log_bytes: u64,
}

/// The answer of `GET /api/v1/jobs/{id}/explain`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    pub job: i64,
    pub state: JobState,
    /// `no_jobtype`, `no_platform`, `unavailable`, `busy`, `starting`,
    /// `running` or `finished`.
    pub reason: String,
    pub message: String,
    /// Place among the queued jobs of its jobtype (1 = next), when waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The workers that matter for the answer: the nearest misfits, or the
    /// fitting ones and their status.
    pub workers: Vec<WorkerFit>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerFit {
    pub name: String,
    pub status: WorkerStatus,
    pub fits: bool,
    /// What keeps it from fitting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfit: Option<String>,
}

/// `POST /api/v1/builds`: a build and its jobs in one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildSpec {
    pub name: String,
    #[serde(default)]
    pub meta: Extra,
    pub jobs: Vec<JobSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Build {
    pub id: i64,
    pub name: String,
    pub meta: Extra,
    /// Derived from the jobs (see `rules::build::state`).
    pub state: BuildState,
    pub created_at: String,
    /// When its last job ended, once every job has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Jobs per state.
    pub counts: BTreeMap<String, u64>,
    /// Jobs that passed only on a rerun (counted as passed too).
    pub flaky: u64,
    /// The jobs, in `GET /api/v1/builds/{id}`; left out of lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A job a worker is running, as it reports it in heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningJob {
    pub id: i64,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// The worker is already stopping it after a cancel.
    #[serde(default, skip_serializing_if = "is_false")]
    pub canceling: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /api/v1/workers`: register, or reconnect under the same name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    #[serde(default)]
    pub jobtypes: Vec<String>,
    /// Property maps; none given means one platform with no properties.
    #[serde(default)]
    pub platforms: Vec<Props>,
    #[serde(default)]
    pub info: Extra,
    #[serde(default = "one")]
    pub slots: u32,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default)]
    pub version: String,
    /// Jobs this worker process still runs (after a reconnect); any other
    /// job the server thinks runs there is lost and goes back to the queue.
    #[serde(default)]
    pub running: Vec<RunningJob>,
    /// `KEY=VALUE` rules: the worker takes only jobs that ask for these.
    #[serde(default)]
    pub accept: Vec<String>,
    /// A stable identity of the worker itself, kept in its `work_dir`: a
    /// restart of the same worker reconnects at once, while another machine
    /// that registers the same name is refused while this one is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The host the worker runs on, named when another worker asks for its
    /// name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub name: String,
    /// How long a claimed job stays leased without a heartbeat.
    pub lease_ms: u64,
    /// The server records a result sent with the next claim
    /// ([`ClaimRequest::result`]); a worker sends results on their own to a
    /// server that does not say so.
    #[serde(default)]
    pub claim_results: bool,
    /// The most bytes of one attempt's log the server keeps (the start and
    /// the end, the middle cut): a worker keeps no more than that of a
    /// job's output either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cap: Option<u64>,
    /// The largest artifact file the server keeps, and the most bytes of
    /// artifacts per job: a worker skips what is over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_max_file: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_max_job: Option<u64>,
}

/// `POST /api/v1/workers/{name}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `idle`, `busy` or `draining` (finishing its jobs, claiming none).
    #[serde(default = "idle")]
    pub status: String,
    /// Hold the answer up to this many seconds until one of the worker's
    /// jobs is canceled: how a busy worker learns of a cancel at once.
    #[serde(default)]
    pub wait: f64,
    #[serde(default)]
    pub info: Extra,
    #[serde(default)]
    pub jobs: Vec<RunningJob>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Running jobs of this worker that were canceled: kill them.
    pub cancel: Vec<i64>,
}

/// `POST /api/v1/workers/{name}/claim`: wait up to `wait` seconds for a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    #[serde(default = "default_wait")]
    pub wait: f64,
    /// The outcome of the job this slot just ran, recorded before the
    /// claim: one request between two jobs instead of two. Recorded as
    /// `POST /api/v1/jobs/{id}/result` would; the answer's `Testbot-Result`
    /// header says `recorded`, or `refused: WHY` (a stale attempt: the
    /// claim goes on all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ClaimResult>,
    /// The worker's slot asking, and its claim's number there (new for each
    /// claim, the same when a claim is retried): a retried claim whose first
    /// answer was lost gets the same job again instead of leaving it to run
    /// nowhere until its lease ends. Both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A result sent with a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimResult {
    pub job: i64,
    pub outcome: Outcome,
}

/// The header of a claim's answer that says what became of the result sent
/// with it: [`RESULT_RECORDED`] or `refused: WHY`.
pub const RESULT_HEADER: &str = "testbot-result";

/// With a backup (`GET /api/v1/backup`): how many artifact files the
/// server keeps beside its database (their bytes are not in the copy), and
/// the directory they are in on the server's machine.
pub const ARTIFACT_FILES_HEADER: &str = "testbot-artifact-files";
pub const ARTIFACTS_DIR_HEADER: &str = "testbot-artifacts-dir";
pub const RESULT_RECORDED: &str = "recorded";

/// Query of `POST /api/v1/jobs/{id}/log`; the body is the raw bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogQuery {
    /// The worker sending; empty means the job's current worker.
    #[serde(default)]
    pub worker: String,
    pub attempt: u32,
    /// Where in the attempt's log these bytes start; a retried upload of
    /// bytes already stored is skipped, never stored twice. Without it the
    /// bytes are appended.
    #[serde(default)]
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogReply {
    /// Bytes stored for the attempt so far.
    pub size: u64,
    /// The job was canceled: stop it.
    pub cancel: bool,
}

/// `POST /api/v1/jobs/{id}/result`: how an attempt ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The worker reporting; empty means the job's current worker.
    #[serde(default)]
    pub worker: String,
    pub attempt: u32,
    /// How it ended; a client may send `passed` or `exit_code` instead.
    pub state: JobState,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: u64,
    /// RFC 3339; empty means when the server got the result.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// An infrastructure failure, not the test's (the worker shut down
    /// under the job, the command could not start, the job directory could
    /// not be made): the job goes back to the queue, to another worker when
    /// one fits, while attempts remain; the worker's failures in a row are
    /// counted towards a quarantine.
    #[serde(default, alias = "retry")]
    pub infrastructure: bool,
    /// What the JUnit files the command left said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestReport>,
    /// The JSON object the command wrote to `$TESTBOT_RESULT_FILE`.
    #[serde(default)]
    pub data: Extra,
}

/// Test results read from JUnit XML.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestReport {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub skipped: u64,
    /// Failed and errored tests, by name, with their messages.
    pub failures: Vec<TestFailure>,
    /// Each test's duration in milliseconds, by name: sent by the worker,
    /// kept in the test history, left out of the stored result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub durations: BTreeMap<String, u64>,
    /// The skipped tests, by name: sent by the worker, not stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_tests: Vec<String>,
    /// From a test queue: tests that failed here and were queued again to
    /// run on another job (not counted as failed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<String>,
    /// Files that could not be read as JUnit XML.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestFailure {
    pub name: String,
    /// `failure` or `error`.
    pub kind: String,
    pub message: String,
}

impl Job {
    /// The test report in the result, if JUnit files were read (a
    /// command's own `tests` key in its result file is not one).
    pub fn test_report(&self) -> Option<TestReport> {
        self.result
            .as_ref()
            .and_then(|r| r.get("tests"))
            .filter(|t| t.get("total").is_some_and(|n| n.is_u64()))
            .and_then(|t| serde_json::from_value::<TestReport>(t.clone()).ok())
    }

    /// The failing tests the result names, if it has a test report.
    pub fn failed_tests(&self) -> Vec<TestFailure> {
        self.test_report().map(|t| t.failures).unwrap_or_default()
    }
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub version: String,
    pub workers: WorkerCounts,
    pub jobs: BTreeMap<String, u64>,
    pub builds: Vec<Build>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub online: u64,
    pub busy: u64,
    pub idle: u64,
    pub draining: u64,
    pub quarantined: u64,
    pub offline: u64,
}

/// A worker as the server returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    pub name: String,
    pub status: WorkerStatus,
    /// Drained from the server: claims nothing until undrained.
    pub drained: bool,
    /// Since when it is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_at: Option<String>,
    /// Quarantined after infrastructure failures in a row, until then.
    pub quarantined_until: Option<String>,
    /// Infrastructure failures in a row so far.
    pub infra_failures: u32,
    pub accept: Vec<String>,
    pub jobtypes: Vec<String>,
    pub platforms: Vec<Props>,
    pub info: Extra,
    pub slots: u32,
    pub heartbeat_interval_ms: u64,
    pub version: String,
    pub registered_at: String,
    pub last_seen: String,
    /// The jobs it runs now, each with the info its command last wrote.
    pub jobs: Vec<RunningJob>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn one() -> u32 {
    1
}
fn idle() -> String {
    "idle".into()
}
fn default_heartbeat_ms() -> u64 {
    60_000
}
/// A claim's `wait` when it gives none.
pub fn default_wait() -> f64 {
    30.0
}

/// Parses a duration as users write it: `90s`, `10m`, `1h30m`; a bare
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 90s, 10m or 1h30m"))
}

/// Parses a size: bytes, or a number with K, M or G (powers of 1024, with
/// or without `iB`/`B`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write it like 32MiB or 500KB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size unit in {s:?}; use K, M or G")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration as the SPEC writes them (`90s` is `1m30s`, `10m`, `1h30m`,
/// `30d`): whole seconds, at least one, units without spaces, so that
/// what testbot prints reads back as what it was given.
pub fn format_duration(d: Duration) -> String {
    use std::fmt::Write;
    let secs = d.as_secs().max(1);
    let mut out = String::new();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (hours, rest) = (rest / 3_600, rest % 3_600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    for (n, unit) in [(days, 'd'), (hours, 'h'), (minutes, 'm'), (seconds, 's')] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// The longest timeout a job may have: 30 days. Longer ones are refused
/// rather than wrapped when turned into milliseconds.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The largest integer every JSON reader keeps exactly (2^53 - 1): the
/// upper bound of ids, offsets, sizes and durations on the wire.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Timeouts travel as duration strings (`"30m"`) and are read back from a
/// string or a number of seconds.
pub mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        use serde::de::Error;
        let d = match Option::<serde_json::Value>::deserialize(d)? {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(t)) => parse_duration(&t).map_err(Error::custom)?,
            Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(s), _) => Duration::from_secs(s),
                (None, Some(f)) if f > 0.0 && f <= MAX_TIMEOUT.as_secs_f64() => {
                    Duration::from_secs_f64(f)
                }
                (None, Some(f)) if f > 0.0 => Duration::MAX,
                _ => return Err(Error::custom(format!("timeout must be positive, not {n}"))),
            },
            Some(other) => {
                return Err(Error::custom(format!(
                    "timeout must be a duration such as \"90s\" or \"1h30m\", or a number \
                     of seconds, not {other}"
                )))
            }
        };
        if d.is_zero() {
            return Err(serde::de::Error::custom("timeout must be positive"));
        }
        if d > MAX_TIMEOUT {
            return Err(serde::de::Error::custom(format!(
                "timeout must be at most {} ({} s)",
                format_duration(MAX_TIMEOUT),
                MAX_TIMEOUT.as_secs()
            )));
        }
        Ok(Some(d))
    }
}

/// The name of the environment variable that carries param `key`:
/// upper-cased, every non-alphanumeric character as `_`.
pub fn param_env_name(key: &str) -> String {
    let mut name = String::from("TESTBOT_PARAM_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_users_write_them() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("3x").unwrap_err().contains("3x"));
    }

    #[test]
    fn durations_are_written_as_the_spec_writes_them_and_read_back() {
        for (secs, text) in [
            (0, "1s"),
            (90, "1m30s"),
            (600, "10m"),
            (5400, "1h30m"),
            (3601, "1h1s"),
            (30 * 86400, "30d"),
            (86400 + 7200 + 5, "1d2h5s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d.max(Duration::from_secs(1)));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("500KB"), Ok(500 << 10));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn param_names_are_sanitized() {
        assert_eq!(param_env_name("dir"), "TESTBOT_PARAM_DIR");
        assert_eq!(param_env_name("test.name-1"), "TESTBOT_PARAM_TEST_NAME_1");
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let spec: JobSpec =
            serde_json::from_str(r#"{"jobtype":"unit","ticket":"T-1","timeout":"5m"}"#).unwrap();
        assert_eq!(spec.extra["ticket"], "T-1");
        assert_eq!(spec.timeout, Some(Duration::from_secs(300)));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["ticket"], "T-1");
        assert_eq!(back["timeout"], "5m");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                "\\PC{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("jobtype".to_string()),
                            Just("platform".to_string()),
                            Just("params".to_string()),
                            Just("timeout".to_string()),
                            Just("worker".to_string()),
                            Just("attempt".to_string()),
                            Just("state".to_string()),
                            Just("name".to_string()),
                            "[a-z]{1,8}",
                        ],
                        inner,
                        0..6,
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn no_body_makes_a_reader_panic(v in json_value()) {
                let text = v.to_string();
                let _ = serde_json::from_str::<JobSpec>(&text);
                let _ = serde_json::from_str::<BuildSpec>(&text);
                let _ = serde_json::from_str::<Registration>(&text);
                let _ = serde_json::from_str::<Heartbeat>(&text);
                let _ = serde_json::from_str::<ClaimRequest>(&text);
                let _ = serde_json::from_str::<Outcome>(&text);
                let _ = serde_json::from_str::<LogQuery>(&text);
            }

            #[test]
            fn job_specs_round_trip(
                jobtype in "[a-z]{1,10}",
                params in prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,10}", 0..4),
                priority in any::<i64>(),
                secs in prop::option::of(1u64..100_000),
                extra in prop::collection::btree_map("x[a-z]{1,6}", "\\PC{0,10}", 0..3),
            ) {
                let spec = JobSpec {
                    jobtype,
                    params: params.into_iter().collect(),
                    priority,
                    timeout: secs.map(Duration::from_secs),
                    extra: extra.into_iter().map(|(k, v)| (k, serde_json::Value::from(v))).collect(),
                    ..Default::default()
                };
                let back: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
                prop_assert_eq!(&back.jobtype, &spec.jobtype);
                prop_assert_eq!(&back.params, &spec.params);
                prop_assert_eq!(back.priority, spec.priority);
                prop_assert_eq!(&back.extra, &spec.extra);
                // Timeouts travel in whole seconds.
                prop_assert_eq!(back.timeout.map(|d| d.as_secs()), spec.timeout.map(|d| d.as_secs()));
            }
        }
    }
}
