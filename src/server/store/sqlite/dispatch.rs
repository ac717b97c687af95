//! Claims, results and leases: the job rules (`crate::rules`) applied in
//! SQLite transactions, every write guarded by the state and attempt it
//! expects.

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use super::*;

/// Gives `name` the best queued job it can run, in `tx`; `claimed` is set
/// to the job taken, for the caller to drop from the index after commit.
pub(crate) fn claim_in(
    tx: &Transaction,
    queue: &mut QueueIndex,
    name: &str,
    tag: Option<ClaimTag>,
    now: i64,
    claimed: &mut Option<i64>,
) -> StoreResult<Claim> {
    if let Some((slot, seq)) = tag {
        // Asked again: the answer to the first ask was lost.
        let again: Option<i64> = tx
            .row(
                "SELECT id FROM jobs WHERE worker = ?1 AND state = 'running' \
                 AND claim_slot = ?2 AND claim_seq = ?3",
                params![name, slot, seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = again {
            return load_job(tx, id).map(|j| Claim::Job(Box::new(j)));
        }
    }
    tx.exec(
        // At most once a second: a page written per claim otherwise.
        "UPDATE workers SET last_seen = ?2 WHERE name = ?1 AND last_seen < ?2 - 1000",
        params![name, now],
    )?;
    let Some(row) = load_workers(tx, now, Some(name))?.into_iter().next() else {
        return Err(StoreError::not_found(format!(
            "unknown worker {name:?}; register first"
        )));
    };
    match worker_rules::gate(&row.presence, now) {
        worker_rules::Gate::Open => {}
        worker_rules::Gate::Draining => return Ok(Claim::Draining),
        worker_rules::Gate::Held => return Ok(Claim::Held),
    }
    let w = row.view;
    let me = Claimant {
        name,
        jobtypes: &w.jobtypes,
        platforms: &w.platforms,
        accept: &w.accept,
    };
    // The index may hold a job another transaction just took or
    // canceled: the guarded update tells, and we look further.
    while let Some((id, index)) = queue.best_for(&me, now) {
        let matched = serde_json::to_string(&w.platforms[index])?;
        let taken = tx.exec(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = ?2, \
             platform_index = ?3, matched_platform = ?4, started_at = ?5, \
             lease_expires = ?6, info = NULL, claim_slot = ?7, claim_seq = ?8 \
             WHERE id = ?1 AND state = 'queued'",
            params![
                id,
                name,
                index as i64,
                matched,
                now,
                now + row.lease_ms as i64,
                tag.map(|t| t.0),
                tag.map(|t| t.1 as i64),
            ],
        )?;
        if taken == 0 {
            queue.remove(id);
            continue;
        }
        tx.exec(
            "INSERT OR REPLACE INTO attempts (job_id, attempt, worker, platform_index, started_at) \
             SELECT id, attempt, worker, platform_index, started_at FROM jobs WHERE id = ?1",
            [id],
        )?;
        *claimed = Some(id);
        return load_job(tx, id).map(|j| Claim::Job(Box::new(j)));
    }
    Ok(Claim::Nothing)
}

/// Records a job's outcome in `tx`: ends it, or queues it again.
pub(crate) fn finish_in(tx: &Transaction, id: i64, o: &Outcome, now: i64) -> StoreResult<Job> {
    check_final(o)?;
    let job = check_current(tx, id, &o.worker, o.attempt)?;
    let (filled, mut result) = completed(o, &job, now);
    let o = &filled;
    let reason = o.reason.as_deref().unwrap_or("");
    tx.exec(
        "UPDATE attempts SET finished_at = ?3, state = ?4, reason = ?5 \
         WHERE job_id = ?1 AND attempt = ?2",
        params![id, o.attempt, now, o.state.as_str(), o.reason],
    )?;
    let (tests, used_queue) = crate::server::store::test_queue::attempt_tests(
        &mut super::test_queue::Lite(tx),
        &job,
        o.attempt,
        &o.worker,
        o.tests.as_ref(),
        now,
    )?;
    if let Some(report) = tests {
        result.insert("tests".into(), serde_json::to_value(report)?);
    }
    let mut facts = facts_of(&job);
    if used_queue {
        // Its failed tests were queued again one by one: no rerun of the
        // whole job for them.
        facts.retry_failed = facts.reruns;
    }
    let said = job_rules::Result {
        state: o.state,
        infrastructure: o.infrastructure,
        attempt: o.attempt,
        reason,
    };
    match job_rules::health(&said) {
        job_rules::Health::Strike => note_infra_failure(tx, &o.worker, id, o.attempt, now)?,
        job_rules::Health::Healthy => note_healthy(tx, &o.worker)?,
        job_rules::Health::Unknown => {}
    }
    match job_rules::after_result(&facts, &said) {
        job_rules::AfterResult::Requeue { reason } => {
            requeue(tx, id, o.attempt, &reason)?;
            avoid_worker(tx, id, &o.worker, now)?;
        }
        job_rules::AfterResult::Rerun { reason } => {
            let before: Vec<String> =
                tx.row("SELECT failed_before FROM jobs WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<String>>(0).map(json_or)
                })?;
            let failing = o.tests.iter().flat_map(|t| &t.failures);
            let before = job_rules::failed_before(before, failing.map(|f| f.name.as_str()));
            tx.exec(
                "UPDATE jobs SET reruns = reruns + 1, failed_before = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(&before)?],
            )?;
            requeue(tx, id, o.attempt, &reason)?;
        }
        job_rules::AfterResult::End { state, flaky } => {
            // Passing after failing: the tests that failed before and now
            // passed are flaky.
            let flaky_tests = if flaky {
                let before: Vec<String> =
                    tx.row("SELECT failed_before FROM jobs WHERE id = ?1", [id], |r| {
                        r.get::<_, Option<String>>(0).map(json_or)
                    })?;
                Some(serde_json::to_string(&before)?)
            } else {
                None
            };
            let ended = tx.exec(
                "UPDATE jobs SET state = ?2, finished_at = ?3, lease_expires = NULL, \
                 reason = ?4, result = ?5, flaky_tests = ?6 \
                 WHERE id = ?1 AND state = 'running' AND attempt = ?7",
                params![
                    id,
                    state.as_str(),
                    now,
                    o.reason,
                    Value::Object(result).to_string(),
                    flaky_tests,
                    o.attempt
                ],
            )?;
            if ended == 0 {
                return Err(StoreError::conflict(format!(
                    "attempt {} of job {id} ended while its result was recorded",
                    o.attempt
                )));
            }
        }
    }
    load_job(tx, id)
}

/// Ends or requeues a running job whose worker is gone: true when it was
/// queued again (false when it ended, or no longer ran).
pub(crate) fn lose_job(tx: &Transaction, id: i64, why: &str, now: i64) -> StoreResult<bool> {
    let job = load_job(tx, id)?;
    if job.state != JobState::Running {
        return Ok(false);
    }
    let attempt = job.attempt;
    if let Some(w) = &job.worker {
        note_infra_failure(tx, w, id, attempt, now)?;
    }
    tx.exec(
        "UPDATE attempts SET finished_at = ?3, state = ?5, reason = ?4 \
         WHERE job_id = ?1 AND attempt = ?2",
        params![id, attempt, now, why, AttemptState::Lost.as_str()],
    )?;
    match job_rules::after_loss(&facts_of(&job), why) {
        job_rules::AfterLoss::Requeue { reason } => {
            requeue(tx, id, attempt, &reason)?;
            if let Some(w) = &job.worker {
                avoid_worker(tx, id, w, now)?;
            }
            Ok(true)
        }
        job_rules::AfterLoss::End { state, reason } => {
            tx.exec(
                "UPDATE jobs SET state = ?2, finished_at = ?3, lease_expires = NULL, reason = ?4 \
                 WHERE id = ?1 AND state = 'running' AND attempt = ?5",
                params![id, state.as_str(), now, reason, attempt],
            )?;
            Ok(false)
        }
    }
}

/// Puts a job running attempt `attempt` back in the queue for its next
/// one; a conflict when that attempt no longer runs.
pub(crate) fn requeue(tx: &Transaction, id: i64, attempt: u32, reason: &str) -> StoreResult<()> {
    let n = tx.exec(
        "UPDATE jobs SET state = 'queued', worker = NULL, platform_index = NULL, \
         matched_platform = NULL, lease_expires = NULL, info = NULL, reason = ?2 \
         WHERE id = ?1 AND state = 'running' AND attempt = ?3",
        params![id, reason, attempt],
    )?;
    if n == 0 {
        return Err(StoreError::conflict(format!(
            "attempt {attempt} of job {id} no longer runs"
        )));
    }
    Ok(())
}

pub(crate) fn check_current(
    tx: &Transaction,
    id: i64,
    worker: &str,
    attempt: u32,
) -> StoreResult<Job> {
    let job = load_job(tx, id)?;
    // An empty worker name means "whoever holds the attempt".
    job_rules::check_current(id, &facts_of(&job), job.worker.as_deref(), worker, attempt)
        .map_err(StoreError::Conflict)?;
    Ok(job)
}

/// Counts an infrastructure failure of attempt `attempt` of job `job`
/// against a worker, by the strike rules.
pub(crate) fn note_infra_failure(
    tx: &Transaction,
    worker: &str,
    job: i64,
    attempt: u32,
    now: i64,
) -> StoreResult<()> {
    let Some(before) = tx
        .row(
            "SELECT infra_streak, quarantines, last_strike_at, quarantined_until \
             FROM workers WHERE name = ?1",
            [worker],
            |r| {
                Ok(worker_rules::Strikes {
                    streak: r.get(0)?,
                    quarantines: r.get(1)?,
                    last_strike_at: r.get(2)?,
                    quarantined_until: r.get(3)?,
                })
            },
        )
        .optional()?
    else {
        return Ok(());
    };
    let started: Option<i64> = tx
        .row(
            "SELECT started_at FROM attempts WHERE job_id = ?1 AND attempt = ?2",
            params![job, attempt],
            |r| r.get(0),
        )
        .optional()?;
    let Some(after) = worker_rules::after_strike(&before, started, now) else {
        return Ok(());
    };
    tx.exec(
        "UPDATE workers SET infra_streak = ?2, quarantines = ?3, last_strike_at = ?4, \
         quarantined_until = ?5 WHERE name = ?1",
        params![
            worker,
            after.streak,
            after.quarantines,
            after.last_strike_at,
            after.quarantined_until
        ],
    )?;
    if after.quarantined_until != before.quarantined_until {
        tracing::warn!(
            worker,
            period_s = worker_rules::quarantine_ms(before.quarantines) / 1000,
            "worker quarantined after {} infrastructure failures in a row",
            worker_rules::QUARANTINE_AFTER
        );
    }
    Ok(())
}

/// A job ran to a real outcome there: its strikes are forgiven, as
/// [`worker_rules::after_healthy`] says (a quarantine in force stays).
pub(crate) fn note_healthy(tx: &Transaction, worker: &str) -> StoreResult<()> {
    tx.exec(
        "UPDATE workers SET infra_streak = 0, quarantines = 0 WHERE name = ?1 AND (infra_streak > 0 OR quarantines > 0)",
        [worker],
    )?;
    Ok(())
}

/// After an infrastructure failure on `worker`, makes the job avoid it for
/// a while when another available worker could run it.
pub(crate) fn avoid_worker(tx: &Transaction, id: i64, worker: &str, now: i64) -> StoreResult<()> {
    let (jobtype, reqs): (String, Props) = tx.row(
        "SELECT jobtype, platform FROM jobs WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, json_or(r.get(1)?))),
    )?;
    let others = load_workers(tx, now, None)?.into_iter().any(|w| {
        w.view.name != worker
            && w.view.available()
            && w.view.has_jobtype(&jobtype)
            && w.view.fits(&reqs)
    });
    if others {
        tx.exec(
            "UPDATE jobs SET avoid_worker = ?2, avoid_until = ?3 WHERE id = ?1",
            params![id, worker, now + worker_rules::AVOID_MS],
        )?;
    }
    Ok(())
}

impl Dispatch for SqliteStore {
    fn claim(&self, name: &str, tag: Option<ClaimTag>, now: i64) -> StoreResult<Claim> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = None;
        let out = self.with_tx(|tx| claim_in(tx, &mut queue, name, tag, now, &mut claimed))?;
        if let Some(id) = claimed {
            queue.remove(id);
        }
        Ok(out)
    }

    fn finish_and_claim(
        &self,
        id: i64,
        o: &Outcome,
        name: &str,
        tag: Option<ClaimTag>,
        now: i64,
    ) -> StoreResult<(StoreResult<Job>, Claim)> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = None;
        let (finished, claim) = self.with_tx(|tx| {
            // The result's refusal is the result's alone: undo what it
            // did and claim all the same. Failures of the database fail
            // both.
            tx.exec("SAVEPOINT result", [])?;
            let finished = match finish_in(tx, id, o, now) {
                Ok(job) => {
                    tx.exec("RELEASE result", [])?;
                    Ok(job)
                }
                // The database failing fails the whole request.
                Err(e @ (StoreError::Broken(_) | StoreError::Unavailable(_))) => return Err(e),
                Err(refused) => {
                    tx.exec("ROLLBACK TO result", [])?;
                    tx.exec("RELEASE result", [])?;
                    Err(refused)
                }
            };
            let claim = claim_in(tx, &mut queue, name, tag, now, &mut claimed)?;
            Ok((finished, claim))
        })?;
        if let Some(id) = claimed {
            queue.remove(id);
        }
        drop(queue);
        if let Ok(job) = &finished {
            self.after_finish(job)?;
        }
        Ok((finished, claim))
    }

    fn finish(&self, id: i64, o: &Outcome, now: i64) -> StoreResult<Job> {
        let out = self.with_tx(|tx| finish_in(tx, id, o, now))?;
        self.after_finish(&out)?;
        Ok(out)
    }

    fn expire_leases(&self, now: i64) -> StoreResult<usize> {
        let alive: Vec<String> = self
            .outage_heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let out = self.with_tx(|tx| {
            // Workers that kept heartbeating while the database could not be
            // written get their leases renewed before any runs out, as after
            // a restart: the outage was the server's, not theirs.
            for name in &alive {
                tx.exec(
                    "UPDATE jobs SET lease_expires = ?2 + \
                       (SELECT lease_ms FROM workers WHERE name = ?1) \
                     WHERE worker = ?1 AND state = 'running'",
                    params![name, now],
                )?;
            }
            let expired: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < ?1",
                )?;
                let rows = stmt.query_map([now], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for &id in &expired {
                lose_job(tx, id, "worker lost", now)?;
            }
            Ok(expired)
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // Still down: the renewal waits for the next try.
                self.outage_heartbeats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(alive);
                return Err(e);
            }
        };
        self.resync(&out)?;
        Ok(out.len())
    }

    fn renew_all_leases(&self, now: i64) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_expires = max(coalesce(lease_expires, 0), ?1 + \
                 coalesce((SELECT lease_ms FROM workers WHERE workers.name = jobs.worker), ?2)) \
                 WHERE state = 'running'",
                params![now, MIN_LEASE_MS as i64],
            )?;
            Ok(())
        })
    }
}
