//! Delivering results so that none is lost while the server is away.
//!
//! When a job ends, its outcome is written to `work_dir/outbox/` beside the
//! spool file of its log; both are removed once the server has taken them
//! (or refused them as stale). Sending retries with backoff; a worker that
//! is restarted delivers what its previous run left in the outbox, log
//! first, then result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::wire::{Job, Outcome};

use super::backoff::Backoff;
use super::job_runner::Finished;
use super::log_streamer;
use super::{Phase, Shared};

#[derive(Serialize, Deserialize)]
struct Pending {
    job: i64,
    outcome: Outcome,
}

pub fn outbox(shared: &Shared) -> PathBuf {
    shared.config.work_dir.join("outbox")
}

/// Where an attempt's log is spooled while it is sent.
pub fn spool_path(shared: &Shared, job: i64, attempt: u32) -> PathBuf {
    outbox(shared).join(format!("{job}-{attempt}.log"))
}

fn pending_path(shared: &Shared, job: i64, attempt: u32) -> PathBuf {
    outbox(shared).join(format!("{job}-{attempt}.json"))
}

/// Delivers one ended job: keeps the outcome on disk, waits for the log to
/// reach the server, then sends the result.
pub fn deliver(shared: &Shared, job: i64, finished: Finished) {
    let attempt = finished.outcome.attempt;
    let file = pending_path(shared, job, attempt);
    let pending = Pending {
        job,
        outcome: finished.outcome,
    };
    if let Err(e) = std::fs::write(&file, serde_json::to_vec(&pending).unwrap_or_default()) {
        tracing::warn!(
            job,
            attempt,
            "cannot keep the result on disk ({e}); sending it anyway"
        );
    }
    let log_done = finished.log.is_none_or(|sent| sent.wait());
    if log_done && send(shared, &pending) {
        remove(shared, job, attempt, &file);
    }
}

fn remove(shared: &Shared, job: i64, attempt: u32, file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(spool_path(shared, job, attempt));
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
        let pending = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok());
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
        let spool = spool_path(shared, p.job, attempt);
        let log_done = !spool.exists() || log_streamer::resend(shared, p.job, attempt, &spool);
        if log_done && send(shared, &p) {
            remove(shared, p.job, attempt, &path);
        }
    }
    // A spool without an outcome belongs to a run that died mid-job; the
    // server requeues that job, and this attempt's log stays as it got.
    if let Ok(entries) = std::fs::read_dir(outbox(shared)) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|e| e.to_str()) == Some("log")
                && !path.with_extension("json").exists()
            {
                let _ = std::fs::remove_file(path);
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
