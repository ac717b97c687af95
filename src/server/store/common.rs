//! What both backends share: the column lists (the two schemas have the
//! same tables and columns), values read from columns, and the counts and
//! states derived from loaded rows.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{LogSlice, Registration, StoreError, StoreResult, DEFAULT_MAX_ATTEMPTS};
use crate::rules::{build as build_rules, job as job_rules, worker as worker_rules};
use crate::server::explain::WorkerView;
use crate::time::rfc3339;
use crate::wire::*;

pub(crate) const JOB_COLS: &str =
    "id, jobtype, state, priority, platform, params, timeout_ms, max_attempts, \
     attempt, worker, platform_index, matched_platform, build_id, shard_index, shard_total, \
     created_at, started_at, finished_at, cancel_requested, reason, result, info, extra, \
     retry_failed, reruns, flaky_tests, shard_tests, queue_id";

pub(crate) const QUEUED_COLS: &str = "id, jobtype, priority, platform, avoid_worker, avoid_until";

pub(crate) const WORKER_COLS: &str =
    "name, jobtypes, platforms, info, slots, heartbeat_ms, lease_ms, \
     version, registered_at, last_seen, extra, status, drained, accept, quarantined_until, \
     infra_streak, drained_at";

/// The status a heartbeat writes: a worker that stopped said goodbye and
/// is offline at once.
pub(crate) fn heartbeat_status(hb: &Heartbeat) -> &'static str {
    match hb.status.as_str() {
        "draining" => "draining",
        "stopped" => "stopped",
        _ => "idle",
    }
}

pub(crate) fn json_or<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// A registered worker as claims and explanations need it.
pub(crate) struct WorkerRow {
    pub(crate) view: WorkerView,
    pub(crate) lease_ms: u64,
    pub(crate) presence: worker_rules::Presence,
}

/// What the status rule needs, from a row's columns.
pub(crate) fn presence(
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

pub(crate) use crate::server::explain::parse_accept;

pub(crate) fn views(rows: Vec<WorkerRow>) -> Vec<WorkerView> {
    rows.into_iter().map(|r| r.view).collect()
}

pub(crate) fn build_state(counts: &BTreeMap<String, u64>) -> BuildState {
    let by_state: Vec<(JobState, u64)> = counts
        .iter()
        .filter_map(|(s, n)| JobState::parse(s).map(|s| (s, *n)))
        .collect();
    build_rules::state(&by_state)
}

/// Workers by status, as the summary counts them.
pub(crate) fn count_workers(workers: &[WorkerRow]) -> WorkerCounts {
    let mut counts = WorkerCounts::default();
    for w in workers {
        let n = match w.view.status {
            WorkerStatus::Offline => &mut counts.offline,
            WorkerStatus::Draining => &mut counts.draining,
            WorkerStatus::Quarantined => &mut counts.quarantined,
            WorkerStatus::Busy => &mut counts.busy,
            WorkerStatus::Idle => &mut counts.idle,
        };
        *n += 1;
        if w.view.status != WorkerStatus::Offline {
            counts.online += 1;
        }
    }
    counts
}

/// What the job rules need of a job.
pub(crate) fn facts_of(job: &Job) -> job_rules::Facts {
    job_rules::Facts {
        state: job.state,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        reruns: job.reruns,
        retry_failed: job.retry_failed,
        cancel_requested: job.cancel_requested,
    }
}

/// Whether `reg` may take the name `held` has (see
/// [`worker_rules::may_take_name`]).
pub(crate) fn check_may_take(
    held: &worker_rules::Holder,
    reg: &Registration,
    token_hash: Option<&str>,
    revoked: &dyn Fn(&str) -> bool,
    seen_at: Option<i64>,
    now: i64,
) -> StoreResult<()> {
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
        worker_rules::NameRefusal::OtherToken(m) => StoreError::Forbidden(m),
        worker_rules::NameRefusal::InUse(m) => StoreError::Conflict(m),
    })
}

/// A job just queued, as stored, built here rather than read back.
pub(crate) fn queued_job(
    id: i64,
    spec: JobSpec,
    build: Option<i64>,
    shard_tests: Option<Vec<String>>,
    created_at: &str,
    warning: Option<String>,
) -> Job {
    Job {
        id,
        state: JobState::Queued,
        max_attempts: spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        attempt: 0,
        worker: None,
        platform_index: None,
        matched_platform: None,
        build,
        shard_tests,
        test_queue: None,
        job_token: None,
        shard_known: None,
        retry_failed: spec.retry_failed.unwrap_or(0),
        reruns: 0,
        flaky: false,
        flaky_tests: Vec::new(),
        created_at: created_at.to_string(),
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
    }
}

/// A result's state must be final.
pub(crate) fn check_final(o: &Outcome) -> StoreResult<()> {
    if o.state.is_final() {
        return Ok(());
    }
    Err(StoreError::invalid(format!(
        "a result's state must be final, not {}",
        o.state
    )))
}

/// The outcome with what a hand-written result may leave out filled in
/// from the job it ends, and the result as stored: the outcome's own data
/// with the core fields over it.
pub(crate) fn completed(o: &Outcome, job: &Job, now: i64) -> (Outcome, Extra) {
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
    (filled, result)
}

/// An attempt's log put back together from its stored chunks, in order of
/// position, from byte `from`; a gap (the middle cut past the cap) says
/// how much is missing.
pub(crate) struct LogJoin {
    data: Vec<u8>,
    end: u64,
}

impl LogJoin {
    pub(crate) fn from(from: u64) -> LogJoin {
        LogJoin {
            data: Vec::new(),
            end: from,
        }
    }

    pub(crate) fn push(&mut self, pos: u64, chunk: &[u8]) {
        if pos > self.end {
            self.data.extend_from_slice(
                format!(
                    "\n[testbot: {} bytes of this log were cut to keep it under the server's cap]\n",
                    pos - self.end
                )
                .as_bytes(),
            );
        }
        let skip = self.end.saturating_sub(pos) as usize;
        self.data.extend_from_slice(&chunk[skip.min(chunk.len())..]);
        self.end = pos + chunk.len() as u64;
    }

    pub(crate) fn slice(self, job: &Job, attempt: u32, size: u64) -> LogSlice {
        LogSlice {
            attempt,
            data: self.data,
            size,
            end: self.end,
            state: job.state,
            // More may come while the job has not ended and this is its
            // current attempt (or it has not started yet).
            live: !job.state.is_final() && job.attempt == attempt,
        }
    }
}
