//! One thread per slot: ask the server for a job (a long-poll that answers
//! the moment a fitting job is queued), run it, report it, repeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ClientError, Maybe};
use crate::wire::{ClaimRequest, ClaimResult, Job, JobState, RESULT_HEADER, RESULT_RECORDED};

use super::backoff::Backoff;
use super::report::Ready;
use super::slot::Slot;
use super::{job_runner, report, Phase, Shared};

/// How long one claim waits on the server. Short enough that a draining
/// worker is not held up long by a claim in flight.
const CLAIM_WAIT: Duration = Duration::from_secs(15);

/// Returns whether every job this slot ran passed (for `--once`).
pub fn run(shared: &Arc<Shared>, slot: usize, once: bool) -> bool {
    let path = format!("/api/v1/workers/{}/claim", shared.config.name);
    let mut backoff = Backoff::new();
    let mut all_passed = true;
    let slot_index = slot as u32;
    let mut slot = Slot::new(&shared.config.work_dir, slot);
    // The last job's outcome, sent with the next claim.
    let mut ready: Option<Ready> = None;
    // Each claim's number: a new one once the server has answered, the same
    // when the claim is retried (its answer may be lost after the server
    // gave this slot a job). Started from the clock so that a restarted
    // worker never repeats a number of its earlier run.
    let mut seq = (crate::time::now_ms().max(0) as u64) << 10;
    while shared.phase() == Phase::Run {
        if !shared.disk_ok() {
            flush(shared, &mut slot, &mut ready);
            shared.poke();
            shared.pause(Duration::from_secs(5));
            continue;
        }
        let req = ClaimRequest {
            wait: CLAIM_WAIT.as_secs_f64(),
            result: ready.as_ref().map(|r| ClaimResult {
                job: r.pending.job,
                outcome: r.pending.outcome.clone(),
            }),
            slot: Some(slot_index),
            seq: Some(seq),
        };
        match shared.client.post_maybe_header::<_, Job>(
            &path,
            &req,
            CLAIM_WAIT + Duration::from_secs(10),
            RESULT_HEADER,
        ) {
            Ok((answer, said)) => {
                shared.note_reachable();
                backoff = Backoff::new();
                seq += 1;
                if let Some(r) = ready.take() {
                    let job = r.pending.job;
                    match said.as_deref() {
                        Some(word) => {
                            if word != RESULT_RECORDED {
                                let attempt = r.pending.outcome.attempt;
                                tracing::warn!(job, attempt, "result {word}");
                            }
                            report::delivered(&mut slot, r);
                        }
                        // A server that does not take results with claims
                        // (an older version) ignored it: send it alone.
                        None => report::send_alone(shared, &mut slot, r),
                    }
                    shared.outbox_done(job);
                }
                let Maybe::Some(job) = answer else {
                    continue;
                };
                let (id, attempt) = (job.id, job.attempt);
                tracing::info!(job = id, attempt, jobtype = %job.jobtype, "job claimed");
                let finished = job_runner::run(shared, job, &mut slot);
                let state = finished.outcome.state;
                tracing::info!(job = id, attempt, %state, "job ended");
                all_passed &= state == JobState::Passed;
                ready = report::ready(&mut slot, id, finished);
                if ready.is_some() {
                    shared.outbox_add(id, attempt);
                }
                if !shared.claim_results.load(Ordering::SeqCst) {
                    flush(shared, &mut slot, &mut ready);
                }
                shared.running.lock().unwrap().remove(&id);
                shared.poke();
                if once {
                    break;
                }
            }
            Err(ClientError::Refused { status: 404, .. }) => {
                if let Err(e) = shared.register() {
                    tracing::error!("re-registering: {e:#}");
                    shared.pause(backoff.next_delay());
                }
            }
            Err(e @ ClientError::Refused { .. }) => {
                tracing::error!("claim refused: {e}");
                seq += 1;
                // Whatever the server disliked, the result goes on its own.
                flush(shared, &mut slot, &mut ready);
                shared.pause(backoff.next_delay());
            }
            Err(e) => {
                shared.note_unreachable(&e);
                shared.pause(backoff.next_delay());
            }
        }
    }
    // No claim follows: the last outcome goes alone.
    flush(shared, &mut slot, &mut ready);
    all_passed
}

fn flush(shared: &Shared, slot: &mut Slot, ready: &mut Option<Ready>) {
    if let Some(r) = ready.take() {
        let job = r.pending.job;
        report::send_alone(shared, slot, r);
        shared.outbox_done(job);
    }
}
