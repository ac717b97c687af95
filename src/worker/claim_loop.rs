//! One thread per slot: ask the server for a job (a long-poll that answers
//! the moment a fitting job is queued), run it, report it, repeat.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{ClientError, Maybe};
use crate::wire::{ClaimRequest, Job, JobState};

use super::backoff::Backoff;
use super::slot::Slot;
use super::{job_runner, report, Phase, Shared};

/// How long one claim waits on the server. Short enough that a draining
/// worker is not held up long by a claim in flight.
const CLAIM_WAIT: Duration = Duration::from_secs(15);

/// Returns whether every job this slot ran passed (for `--once`).
pub fn run(shared: &Arc<Shared>, slot: usize, once: bool) -> bool {
    let path = format!("/api/v1/workers/{}/claim", shared.config.name);
    let req = ClaimRequest {
        wait: CLAIM_WAIT.as_secs_f64(),
    };
    let mut backoff = Backoff::new();
    let mut all_passed = true;
    let mut slot = Slot::new(&shared.config.work_dir, slot);
    while shared.phase() == Phase::Run {
        if !shared.disk_ok() {
            shared.poke();
            shared.pause(Duration::from_secs(5));
            continue;
        }
        match shared
            .client
            .post_maybe::<_, Job>(&path, &req, CLAIM_WAIT + Duration::from_secs(10))
        {
            Ok(Maybe::Some(job)) => {
                shared.note_reachable();
                backoff = Backoff::new();
                let (id, attempt) = (job.id, job.attempt);
                tracing::info!(job = id, attempt, jobtype = %job.jobtype, "job claimed");
                let finished = job_runner::run(shared, job, &mut slot);
                let state = finished.outcome.state;
                tracing::info!(job = id, attempt, %state, "job ended");
                all_passed &= state == JobState::Passed;
                report::deliver(shared, &mut slot, id, finished);
                shared.running.lock().unwrap().remove(&id);
                shared.poke();
                if once {
                    break;
                }
            }
            Ok(Maybe::NoContent) => shared.note_reachable(),
            Err(ClientError::Refused { status: 404, .. }) => {
                if let Err(e) = shared.register() {
                    tracing::error!("re-registering: {e:#}");
                    shared.pause(backoff.next_delay());
                }
            }
            Err(e @ ClientError::Refused { .. }) => {
                tracing::error!("claim refused: {e}");
                shared.pause(backoff.next_delay());
            }
            Err(e) => {
                shared.note_unreachable(&e);
                shared.pause(backoff.next_delay());
            }
        }
    }
    all_passed
}
