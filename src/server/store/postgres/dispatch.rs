//! Claims, results and leases on PostgreSQL: the job rules
//! (`crate::rules`) applied in transactions, every read that a write
//! depends on locked, every write guarded by the state and attempt it
//! expects.

use serde_json::Value;

use super::*;

/// Queued jobs a claim looks at, best first: first a few it locks, then
/// more when none of those fits.
const LOCKED_CANDIDATES: i64 = 4;
const CANDIDATES: i64 = 256;

/// Gives `name` the best queued job it can run, in `tx`.
/// `contended` is set when a job that fitted was skipped because another
/// claim in flight held it: "nothing" is then no answer to wait on, as
/// that claim may take one job and leave the rest queued, with no news.
pub(crate) fn claim_in(
    tx: &mut Tx,
    name: &str,
    tag: Option<ClaimTag>,
    now: i64,
    jobtypes: &mut Vec<String>,
    contended: &mut bool,
) -> StoreResult<Claim> {
    if let Some((slot, seq)) = tag {
        // Asked again: the answer to the first ask was lost.
        let again: Option<i64> = tx.row(
            "SELECT id FROM jobs WHERE worker = $1 AND state = 'running' \
                 AND claim_slot = $2 AND claim_seq = $3",
            args![name, slot, seq as i64],
            |r| r.get(0),
        )?;
        if let Some(id) = again {
            return load_job(tx, id).map(|j| Claim::Job(Box::new(j)));
        }
    }
    tx.exec(
        // At most once a second: a page written per claim otherwise.
        "UPDATE workers SET last_seen = $2 WHERE name = $1 AND last_seen < $2::BIGINT - 1000",
        args![name, now],
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
    jobtypes.clone_from(&w.jobtypes);
    let me = Claimant {
        name,
        jobtypes: &w.jobtypes,
        platforms: &w.platforms,
        accept: &w.accept,
    };
    // First the few best queued jobs no other claim holds, locked: claims in
    // flight each get their own and do not queue behind one another. When
    // none of those fits the worker, the best 256 are read without locks,
    // and the best that fits is locked alone. Both are ranked by the same
    // index the SQLite store keeps.
    let jobtypes_arg = sql::Arg::TextArray(w.jobtypes.clone());
    let mut picked = None;
    for (limit, lock) in [
        (LOCKED_CANDIDATES, "FOR UPDATE SKIP LOCKED"),
        (CANDIDATES, ""),
    ] {
        let mut queue = QueueIndex::default();
        for q in tx.rows(
            &format!(
                "SELECT {QUEUED_COLS} FROM jobs WHERE state = 'queued' AND jobtype = ANY($1) \
                 ORDER BY priority DESC, id LIMIT $2 {lock}"
            ),
            &[jobtypes_arg.clone(), sql::Arg::from(limit)],
            queued_from_row,
        )? {
            queue.insert(q);
        }
        while let Some((id, index)) = queue.best_for(&me, now) {
            queue.remove(id);
            let held_elsewhere = lock.is_empty()
                && tx
                    .row(
                        "SELECT id FROM jobs WHERE id = $1 AND state = 'queued' \
                         FOR UPDATE SKIP LOCKED",
                        args![id],
                        |r| r.get::<i64>(0),
                    )?
                    .is_none();
            if !held_elsewhere {
                picked = Some((id, index));
                break;
            }
            *contended = true;
        }
        if picked.is_some() {
            break;
        }
    }
    if let Some((id, index)) = picked {
        let matched = serde_json::to_string(&w.platforms[index])?;
        let taken = tx.row(
            &format!(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker = $2, \
                 platform_index = $3, matched_platform = $4, started_at = $5, \
                 lease_expires = $6, info = NULL, claim_slot = $7, claim_seq = $8 \
                 WHERE id = $1 AND state = 'queued' RETURNING {JOB_COLS}"
            ),
            args![
                id,
                name,
                index as i64,
                matched,
                now,
                now + row.lease_ms as i64,
                tag.map(|t| t.0),
                tag.map(|t| t.1 as i64),
            ],
            job_from_row,
        )?;
        let Some(job) = taken else {
            // Locked by this transaction and queued: cannot happen.
            return Err(StoreError::Broken(anyhow::anyhow!(
                "job {id} could not be taken though it was locked"
            )));
        };
        tx.exec(
            "INSERT INTO attempts (job_id, attempt, worker, platform_index, started_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (job_id, attempt) DO UPDATE SET worker = excluded.worker, \
             platform_index = excluded.platform_index, started_at = excluded.started_at, \
             finished_at = NULL, state = NULL, reason = NULL, log_size = 0, log_stored = 0",
            args![id, job.attempt, name, index as i64, now],
        )?;
        return Ok(Claim::Job(Box::new(job)));
    }
    Ok(Claim::Nothing)
}

/// Records a job's outcome in `tx`: ends it, or queues it again.
pub(crate) fn finish_in(tx: &mut Tx, id: i64, o: &Outcome, now: i64) -> StoreResult<Job> {
    check_final(o)?;
    let job = check_current(tx, id, &o.worker, o.attempt)?;
    let (filled, mut result) = completed(o, &job, now);
    let o = &filled;
    let reason = o.reason.as_deref().unwrap_or("");
    tx.exec(
        "UPDATE attempts SET finished_at = $3, state = $4, reason = $5 \
         WHERE job_id = $1 AND attempt = $2",
        args![id, o.attempt, now, o.state.as_str(), &o.reason],
    )?;
    let (tests, used_queue) = crate::server::store::test_queue::attempt_tests(
        tx,
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
            let before: Vec<String> = tx.one(
                "SELECT failed_before FROM jobs WHERE id = $1",
                args![id],
                |r| r.get::<Option<String>>(0).map(json_or),
            )?;
            let failing = o.tests.iter().flat_map(|t| &t.failures);
            let before = job_rules::failed_before(before, failing.map(|f| f.name.as_str()));
            tx.exec(
                "UPDATE jobs SET reruns = reruns + 1, failed_before = $2 WHERE id = $1",
                args![id, serde_json::to_string(&before)?],
            )?;
            requeue(tx, id, o.attempt, &reason)?;
        }
        job_rules::AfterResult::End { state, flaky } => {
            // Passing after failing: the tests that failed before and now
            // passed are flaky.
            let flaky_tests = if flaky {
                let before: Vec<String> = tx.one(
                    "SELECT failed_before FROM jobs WHERE id = $1",
                    args![id],
                    |r| r.get::<Option<String>>(0).map(json_or),
                )?;
                Some(serde_json::to_string(&before)?)
            } else {
                None
            };
            let ended = tx.exec(
                "UPDATE jobs SET state = $2, finished_at = $3, lease_expires = NULL, \
                 reason = $4, result = $5, flaky_tests = $6 \
                 WHERE id = $1 AND state = 'running' AND attempt = $7",
                args![
                    id,
                    state.as_str(),
                    now,
                    &o.reason,
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
            notify(tx, Change::Ended)?;
        }
    }
    load_job(tx, id)
}

/// Ends or requeues a running job whose worker is gone: true when it was
/// queued again (false when it ended, or no longer ran).
pub(crate) fn lose_job(tx: &mut Tx, id: i64, why: &str, now: i64) -> StoreResult<bool> {
    let job = lock_job(tx, id)?;
    if job.state != JobState::Running {
        return Ok(false);
    }
    let attempt = job.attempt;
    if let Some(w) = &job.worker {
        note_infra_failure(tx, w, id, attempt, now)?;
    }
    tx.exec(
        "UPDATE attempts SET finished_at = $3, state = $5, reason = $4 \
         WHERE job_id = $1 AND attempt = $2",
        args![id, attempt, now, why, AttemptState::Lost.as_str()],
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
                "UPDATE jobs SET state = $2, finished_at = $3, lease_expires = NULL, reason = $4 \
                 WHERE id = $1 AND state = 'running' AND attempt = $5",
                args![id, state.as_str(), now, reason, attempt],
            )?;
            Ok(false)
        }
    }
}

/// Puts a job running attempt `attempt` back in the queue for its next
/// one; a conflict when that attempt no longer runs.
pub(crate) fn requeue(tx: &mut Tx, id: i64, attempt: u32, reason: &str) -> StoreResult<()> {
    let jobtype: Option<String> = tx.row(
        "UPDATE jobs SET state = 'queued', worker = NULL, platform_index = NULL, \
         matched_platform = NULL, lease_expires = NULL, info = NULL, reason = $2 \
         WHERE id = $1 AND state = 'running' AND attempt = $3 RETURNING jobtype",
        args![id, reason, attempt],
        |r| r.get(0),
    )?;
    let Some(jobtype) = jobtype else {
        return Err(StoreError::conflict(format!(
            "attempt {attempt} of job {id} no longer runs"
        )));
    };
    notify(tx, Change::Queued(&jobtype))
}

pub(crate) fn check_current(tx: &mut Tx, id: i64, worker: &str, attempt: u32) -> StoreResult<Job> {
    let job = lock_job(tx, id)?;
    // An empty worker name means "whoever holds the attempt".
    job_rules::check_current(id, &facts_of(&job), job.worker.as_deref(), worker, attempt)
        .map_err(StoreError::Conflict)?;
    Ok(job)
}

/// Counts an infrastructure failure of attempt `attempt` of job `job`
/// against a worker, by the strike rules.
pub(crate) fn note_infra_failure(
    tx: &mut Tx,
    worker: &str,
    job: i64,
    attempt: u32,
    now: i64,
) -> StoreResult<()> {
    let Some(before) = tx.row(
        "SELECT infra_streak, quarantines, last_strike_at, quarantined_until \
             FROM workers WHERE name = $1 FOR UPDATE",
        args![worker],
        |r| {
            Ok(worker_rules::Strikes {
                streak: r.get(0)?,
                quarantines: r.get(1)?,
                last_strike_at: r.get(2)?,
                quarantined_until: r.get(3)?,
            })
        },
    )?
    else {
        return Ok(());
    };
    let started: Option<i64> = tx.row(
        "SELECT started_at FROM attempts WHERE job_id = $1 AND attempt = $2",
        args![job, attempt],
        |r| r.get(0),
    )?;
    let Some(after) = worker_rules::after_strike(&before, started, now) else {
        return Ok(());
    };
    tx.exec(
        "UPDATE workers SET infra_streak = $2, quarantines = $3, last_strike_at = $4, \
         quarantined_until = $5 WHERE name = $1",
        args![
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
pub(crate) fn note_healthy(tx: &mut Tx, worker: &str) -> StoreResult<()> {
    tx.exec(
        "UPDATE workers SET infra_streak = 0, quarantines = 0 WHERE name = $1 AND (infra_streak > 0 OR quarantines > 0)",
        args![worker],
    )?;
    Ok(())
}

/// After an infrastructure failure on `worker`, makes the job avoid it for
/// a while when another available worker could run it.
pub(crate) fn avoid_worker(tx: &mut Tx, id: i64, worker: &str, now: i64) -> StoreResult<()> {
    let (jobtype, reqs): (String, Props) = tx.one(
        "SELECT jobtype, platform FROM jobs WHERE id = $1",
        args![id],
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
            "UPDATE jobs SET avoid_worker = $2, avoid_until = $3 WHERE id = $1",
            args![id, worker, now + worker_rules::AVOID_MS],
        )?;
    }
    Ok(())
}

impl PgStore {
    /// A claim that found nothing because other claims in flight held the
    /// jobs that fitted: the held claims on this server look again in a
    /// moment, when those have committed (they announce nothing about the
    /// jobs they left queued).
    fn look_again_if(&self, contended: bool, claim: &Claim) {
        if !contended || !matches!(claim, Claim::Nothing) {
            return;
        }
        static SCHEDULED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if SCHEDULED.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Some(wake) = self.wake.get().cloned() else {
            SCHEDULED.store(false, std::sync::atomic::Ordering::Release);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("claim-again".into())
            .spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(5));
                SCHEDULED.store(false, std::sync::atomic::Ordering::Release);
                wake(crate::server::store::Woken::Anything);
            });
        if spawned.is_err() {
            SCHEDULED.store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// Remembers what a claim found, for [`Workers::may_claim`]: after
    /// "nothing", the stamp taken before the claim (news that came during
    /// it makes the next look go to the database).
    fn after_claim(&self, name: &str, jobtypes: Vec<String>, stamp: Option<u64>, claim: &Claim) {
        // A worker not known before had no stamp: its next claim asks.
        let found_nothing = stamp.filter(|_| matches!(claim, Claim::Nothing));
        self.gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .claimed(name, jobtypes, found_nothing);
    }
}

impl Dispatch for PgStore {
    fn claim(&self, name: &str, tag: Option<ClaimTag>, _now: i64) -> StoreResult<Claim> {
        let stamp = self
            .gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stamp_of(name);
        let mut jobtypes = Vec::new();
        let mut contended = false;
        let claim = self.with_tx(|tx, now| {
            contended = false;
            claim_in(tx, name, tag, now, &mut jobtypes, &mut contended)
        })?;
        self.after_claim(name, jobtypes, stamp.filter(|_| !contended), &claim);
        self.look_again_if(contended, &claim);
        Ok(claim)
    }

    fn finish_and_claim(
        &self,
        id: i64,
        o: &Outcome,
        name: &str,
        tag: Option<ClaimTag>,
        _now: i64,
    ) -> StoreResult<(StoreResult<Job>, Claim)> {
        let stamp = self
            .gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stamp_of(name);
        let mut jobtypes = Vec::new();
        let mut contended = false;
        let out = self.with_tx(|tx, now| {
            // The result's refusal is the result's alone: undo what it
            // did and claim all the same. Failures of the database fail
            // both.
            tx.exec("SAVEPOINT result", args![])?;
            let finished = match finish_in(tx, id, o, now) {
                Ok(job) => {
                    tx.exec("RELEASE SAVEPOINT result", args![])?;
                    Ok(job)
                }
                Err(e @ (StoreError::Broken(_) | StoreError::Unavailable(_))) => return Err(e),
                Err(refused) => {
                    tx.exec("ROLLBACK TO SAVEPOINT result", args![])?;
                    tx.exec("RELEASE SAVEPOINT result", args![])?;
                    Err(refused)
                }
            };
            contended = false;
            let claim = claim_in(tx, name, tag, now, &mut jobtypes, &mut contended)?;
            Ok((finished, claim))
        })?;
        self.after_claim(name, jobtypes, stamp.filter(|_| !contended), &out.1);
        self.look_again_if(contended, &out.1);
        Ok(out)
    }

    fn finish(&self, id: i64, o: &Outcome, _now: i64) -> StoreResult<Job> {
        self.with_tx(|tx, now| finish_in(tx, id, o, now))
    }

    fn expire_leases(&self, _now: i64) -> StoreResult<usize> {
        self.with_tx(|tx, now| {
            // One server reaps at a time; the others find nothing to do.
            if !first_of_servers(tx, REAPER_LOCK)? {
                return Ok(0);
            }
            // Locked, and those another replica is ending now skipped: each
            // lost lease is handled once.
            let expired: Vec<i64> = tx.rows(
                "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < $1 \
                 ORDER BY id FOR UPDATE SKIP LOCKED",
                args![now],
                |r| r.get(0),
            )?;
            for &id in &expired {
                lose_job(tx, id, "worker lost", now)?;
            }
            Ok(expired.len())
        })
    }

    fn renew_all_leases(&self, _now: i64) -> StoreResult<()> {
        // Only leases that ran out while no replica was reaping them: with
        // another replica up there are none, so a replica that starts
        // leaves the fleet's leases alone; after a full outage the workers
        // get time to come back.
        self.with_tx(|tx, now| {
            tx.exec(
                "UPDATE jobs SET lease_expires = $1::BIGINT + \
                 coalesce((SELECT lease_ms FROM workers WHERE workers.name = jobs.worker), $2) \
                 WHERE state = 'running' AND lease_expires < $1",
                args![now, MIN_LEASE_MS],
            )?;
            Ok(())
        })
    }
}
