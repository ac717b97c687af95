//! Delivering results so that none is lost while the server is away.
//!
//! Each slot keeps two files in `work_dir/outbox/`: `slot-N.log`, the spool
//! of its current job's log, and `slot-N.results`, a journal its outcomes
//! are appended to before they are sent and marked delivered in once the
//! server has taken them (or refused them as stale); see [`super::slot`].
//! Sending retries with backoff; a worker that is restarted delivers what
//! its previous run left in the outbox, log first, then result.

use std::path::PathBuf;

use crate::client::ClientError;
use crate::wire::Job;

use super::job_runner::Finished;
use super::slot::{self, Pending, Slot};
use super::{files, log_streamer};
use super::{Phase, Shared, Unsent};

pub fn outbox(shared: &Shared) -> PathBuf {
    shared.config.work_dir.join("outbox")
}

/// An ended job's outcome, kept in its slot's journal, its log with the
/// server: ready to be sent, with the next claim or alone.
pub struct Ready {
    pub pending: Pending,
    /// The slot's spool holds the log: empty it once delivered.
    touched: bool,
}

/// Keeps the outcome on disk and waits for the log to reach the server.
/// None when the worker aborts with the log unsent: the outcome stays in
/// the journal for the next run to deliver.
pub fn ready(slot: &mut Slot, job: i64, finished: Finished) -> Option<Ready> {
    let attempt = finished.outcome.attempt;
    if let Err(e) = slot.journal.record(job, &finished.outcome) {
        tracing::warn!(
            job,
            attempt,
            "cannot keep the result on disk ({e}); sending it anyway"
        );
    }
    let (log_done, touched) = match finished.log {
        Some(sent) => {
            let touched = sent.touched;
            (sent.wait(), touched)
        }
        None => (true, false),
    };
    log_done.then_some(Ready {
        pending: Pending {
            job,
            outcome: finished.outcome,
        },
        touched,
    })
}

/// The server has answered for the outcome (taken or refused).
pub fn delivered(slot: &mut Slot, r: Ready) {
    slot.journal.delivered(r.pending.job);
    if r.touched {
        let _ = files::empty(&slot.spool());
    }
}

/// Sends the outcome on its own, retrying while the server is away; it
/// stays in the journal if the worker aborts first.
pub fn send_alone(shared: &Shared, slot: &mut Slot, r: Ready) {
    if send(shared, &r.pending) {
        delivered(slot, r);
    }
}

/// An outcome an earlier run of this worker left undelivered, with the file
/// that holds it.
pub struct LeftOver(PathBuf, Pending);

/// The outcomes an earlier run of this worker left undelivered; each is
/// noted as a job this worker still holds, so that the registration names
/// it and the server keeps it for the delivery that follows instead of
/// running it again.
pub fn left_over(shared: &Shared) -> Vec<LeftOver> {
    let Ok(entries) = std::fs::read_dir(outbox(shared)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        // `.json`: one outcome per file, as versions before the journal
        // kept them.
        let pending = match path.extension().and_then(|e| e.to_str()) {
            Some("results") => slot::pending_in(&path),
            Some("json") => {
                let p = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Pending>(&b).ok());
                if p.is_none() {
                    tracing::warn!("dropping an unreadable outbox entry {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
                p
            }
            _ => None,
        };
        if let Some(p) = pending.filter(|p| p.outcome.worker == shared.config.name) {
            shared.outbox_add(p.job, p.outcome.attempt);
            out.push(LeftOver(path, p));
        }
    }
    out
}

/// Sends what an earlier run of this worker could not, and drops log
/// spools of attempts that never got as far as an outcome.
pub fn deliver_outbox(shared: &Shared, left: Vec<LeftOver>) {
    for LeftOver(path, p) in left {
        let attempt = p.outcome.attempt;
        tracing::info!(
            job = p.job,
            attempt,
            "delivering a result left from an earlier run"
        );
        let spool = path.with_extension("log");
        let log_done = !spool.exists() || log_streamer::resend(shared, p.job, attempt, &spool);
        if log_done && send(shared, &p) {
            if path.extension().and_then(|e| e.to_str()) == Some("results") {
                slot::mark_delivered(&path, p.job);
                let _ = files::empty(&spool);
            } else {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&spool);
            }
        }
        shared.outbox_done(p.job);
    }
    // A spool of an older version without an outcome belongs to a run that
    // died mid-job; the server requeues that job, and this attempt's log
    // stays as it got. (A slot empties its own spool before its first job.)
    if let Ok(entries) = std::fs::read_dir(outbox(shared)) {
        for e in entries.flatten() {
            let path = e.path();
            let is_slot = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("slot-"));
            if !is_slot
                && path.extension().and_then(|e| e.to_str()) == Some("log")
                && !path.with_extension("json").exists()
            {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Returns true once the server has answered for the result (taken or
/// refused for good: stale, unknown, invalid, when the server ends the job
/// itself); false if the worker is aborting before it could. Failures of
/// the server and refusals that may pass (a token being rotated) are
/// retried with backoff, the result kept on disk meanwhile.
fn send(shared: &Shared, p: &Pending) -> bool {
    let path = format!("/api/v1/jobs/{}/result", p.job);
    match shared.until_answered(Phase::Abort, ClientError::is_lasting_refusal, || {
        shared.client.post::<_, Job>(&path, &p.outcome)
    }) {
        Ok(_) => true,
        Err(Unsent::Refused(e)) => {
            tracing::warn!(
                job = p.job,
                attempt = p.outcome.attempt,
                "result refused: {e}"
            );
            true
        }
        Err(Unsent::GaveUp(_)) => false,
    }
}
