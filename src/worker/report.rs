//! Delivering results so that none is lost while the server is away.
//!
//! Each slot has two files in `work_dir/outbox/`: `slot-N.log`, the spool
//! of its current job's log, and `slot-N.json`, the outcome of its last job
//! until the server has it. When a job ends its outcome is written there;
//! once the server has taken it (or refused it as stale) both files are
//! emptied, not removed, so that a job costs the file system no new inodes.
//! Sending retries with backoff; a worker that is restarted delivers what
//! its previous run left in the outbox, log first, then result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::wire::{Job, Outcome};

use super::backoff::Backoff;
use super::job_runner::Finished;
use super::{files, log_streamer};
use super::{Phase, Shared};

#[derive(Serialize, Deserialize)]
struct Pending {
    job: i64,
    outcome: Outcome,
}

pub fn outbox(shared: &Shared) -> PathBuf {
    shared.config.work_dir.join("outbox")
}

/// Where a slot spools its job's log while it is sent.
pub fn spool_path(shared: &Shared, slot: usize) -> PathBuf {
    outbox(shared).join(format!("slot-{slot}.log"))
}

fn pending_path(shared: &Shared, slot: usize) -> PathBuf {
    outbox(shared).join(format!("slot-{slot}.json"))
}

/// Delivers one ended job: keeps the outcome on disk, waits for the log to
/// reach the server, then sends the result.
pub fn deliver(shared: &Shared, job: i64, slot: usize, finished: Finished) {
    let attempt = finished.outcome.attempt;
    let file = pending_path(shared, slot);
    let pending = Pending {
        job,
        outcome: finished.outcome,
    };
    if let Err(e) = files::overwrite(&file, &serde_json::to_vec(&pending).unwrap_or_default()) {
        tracing::warn!(
            job,
            attempt,
            "cannot keep the result on disk ({e}); sending it anyway"
        );
    }
    let log_done = finished.log.is_none_or(|sent| sent.wait());
    if log_done && send(shared, &pending) {
        done(&file);
    }
}

/// The server has an outbox entry: a slot's files are emptied for its next
/// job; an entry of any other name (from an older version) is removed.
fn done(pending: &Path) {
    let spool = pending.with_extension("log");
    let is_slot = pending
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("slot-"));
    if is_slot {
        // Not cut to zero: see `files`.
        let _ = files::overwrite(pending, b"\n");
        let _ = files::empty(&spool);
    } else {
        let _ = std::fs::remove_file(pending);
        let _ = std::fs::remove_file(spool);
    }
}

/// Sends what an earlier run of this worker could not, and drops log
/// spools of attempts that never got as far as an outcome.
pub fn deliver_outbox(shared: &Shared) {
    let Ok(entries) = std::fs::read_dir(outbox(shared)) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.trim_ascii().is_empty() {
            // A slot's outcome the server already has.
            continue;
        }
        let pending = serde_json::from_slice::<Pending>(&bytes).ok();
        let Some(p) = pending else {
            tracing::warn!("dropping an unreadable outbox entry {}", path.display());
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if p.outcome.worker != shared.config.name {
            continue;
        }
        let attempt = p.outcome.attempt;
        tracing::info!(
            job = p.job,
            attempt,
            "delivering a result left from an earlier run"
        );
        let spool = path.with_extension("log");
        let log_done = !spool.exists() || log_streamer::resend(shared, p.job, attempt, &spool);
        if log_done && send(shared, &p) {
            done(&path);
        }
    }
    // A spool without an outcome belongs to a run that died mid-job; the
    // server requeues that job, and this attempt's log stays as it got.
    if let Ok(entries) = std::fs::read_dir(outbox(shared)) {
        for e in entries.flatten() {
            let path = e.path();
            let pending = path.with_extension("json");
            if path.extension().and_then(|e| e.to_str()) == Some("log")
                && std::fs::read(&pending).map_or(true, |b| b.trim_ascii().is_empty())
            {
                done(&pending);
            }
        }
    }
}

/// Returns true once the server has answered for the result (taken or
/// refused); false if the worker is aborting before it could.
fn send(shared: &Shared, p: &Pending) -> bool {
    let path = format!("/api/v1/jobs/{}/result", p.job);
    let mut backoff = Backoff::new();
    loop {
        match shared.client.post::<_, Job>(&path, &p.outcome) {
            Ok(_) => {
                shared.note_reachable();
                return true;
            }
            Err(e @ ClientError::Refused { .. }) => {
                tracing::warn!(
                    job = p.job,
                    attempt = p.outcome.attempt,
                    "result refused: {e}"
                );
                return true;
            }
            Err(e) => {
                shared.note_unreachable(&e);
                if shared.phase() == Phase::Abort {
                    return false;
                }
                shared.pause(backoff.next_delay());
            }
        }
    }
}
