//! Delivering results so that none is lost while the server is away.
//!
//! A result is written to `work_dir/outbox/` before it is sent and removed
//! once the server has taken it (or refused it as stale). Sending retries
//! with backoff; a worker that is restarted delivers what its previous run
//! left in the outbox.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::wire::{Job, Outcome};

use super::backoff::Backoff;
use super::{Phase, Shared};

#[derive(Serialize, Deserialize)]
struct Pending {
    job: i64,
    outcome: Outcome,
}

fn outbox(shared: &Shared) -> PathBuf {
    shared.config.work_dir.join("outbox")
}

/// Delivers one result, keeping it on disk until the server answers.
pub fn deliver(shared: &Shared, job: i64, outcome: &Outcome) {
    let dir = outbox(shared);
    let file = dir.join(format!("{job}-{}.json", outcome.attempt));
    let pending = Pending {
        job,
        outcome: outcome.clone(),
    };
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&file, serde_json::to_vec(&pending).unwrap_or_default()));
    if let Err(e) = saved {
        tracing::warn!(
            job,
            "cannot keep the result on disk ({e}); sending it anyway"
        );
    }
    if send(shared, &pending) {
        let _ = std::fs::remove_file(&file);
    }
}

/// Sends what an earlier run of this worker could not.
pub fn deliver_outbox(shared: &Shared) {
    let Ok(entries) = std::fs::read_dir(outbox(shared)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let pending = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok());
        match pending {
            Some(p) if p.outcome.worker == shared.config.name => {
                tracing::info!(
                    job = p.job,
                    attempt = p.outcome.attempt,
                    "delivering a result left from an earlier run"
                );
                if send(shared, &p) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Some(_) => {}
            None => {
                tracing::warn!("dropping an unreadable outbox entry {}", path.display());
                let _ = std::fs::remove_file(&path);
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
                std::thread::sleep(backoff.next_delay());
            }
        }
    }
}
