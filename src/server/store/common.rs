//! What both backends share: the column lists (the two schemas have the
//! same tables and columns), values read from columns, and the counts and
//! states derived from loaded rows.

use std::collections::BTreeMap;

use crate::rules::{build as build_rules, worker as worker_rules};
use crate::server::explain::WorkerView;
use crate::wire::*;

pub(crate) const JOB_COLS: &str =
    "id, jobtype, state, priority, platform, params, timeout_ms, max_attempts, \
     attempt, worker, platform_index, matched_platform, build_id, shard_index, shard_total, \
     created_at, started_at, finished_at, cancel_requested, reason, result, info, extra, \
     retry_failed, reruns, flaky_tests, shard_tests";

pub(crate) const QUEUED_COLS: &str = "id, jobtype, priority, platform, avoid_worker, avoid_until";

pub(crate) const WORKER_COLS: &str =
    "name, jobtypes, platforms, info, slots, heartbeat_ms, lease_ms, \
     version, registered_at, last_seen, extra, status, drained, accept, quarantined_until, \
     infra_streak";

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

pub(crate) fn parse_accept(rules: &[String]) -> Vec<(String, String)> {
    rules
        .iter()
        .filter_map(|r| r.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
