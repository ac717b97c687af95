//! The test queue, written once for both backends: the SQL here is plain
//! enough for SQLite and PostgreSQL alike (`$N` parameters, each first used
//! in order; integers and text only), run through [`Sql`], which each
//! backend implements for its transaction. The decisions are in
//! `crate::rules::test_queue`.
//!
//! Tables: `test_queues` (one per sharded submission, its id the first
//! shard's job id; one per job for the tests of an unsharded job's JUnit
//! files), `queue_tests` (each test of a queue once: pending, reserved by
//! an attempt, or done with its final outcome), `test_runs` (every run of a
//! test: job, attempt, worker, outcome) and `test_history` (per jobtype and
//! test: smoothed duration, recent outcomes, flakiness).

use std::collections::{BTreeMap, HashMap};

use super::portable::{count, one, vals, Sql, V};
use super::{StoreError, StoreResult};
use crate::rules::test_queue as rules;
use crate::wire::*;

/// The key that signs job tokens, made on first use and kept in the
/// database, so every server on it checks the same tokens.
pub(crate) fn token_key(s: &mut dyn Sql, fresh: &str) -> StoreResult<String> {
    s.exec(
        "INSERT INTO settings (name, value) VALUES ('job_token_key', $1) \
         ON CONFLICT (name) DO NOTHING",
        vals![fresh],
    )?;
    Ok(one(
        s,
        "SELECT value FROM settings WHERE name = 'job_token_key'",
        &[],
    )?
    .map(|r| r[0].s())
    .unwrap_or_default())
}

/// Gives the sharded jobs of one submission their queues: jobs of the same
/// jobtype, shard count, requirements and params, `shard_total` at a time,
/// share one (its id the first one's). Sets `test_queue` on them.
pub(crate) fn assign(s: &mut dyn Sql, jobs: &mut [Job], now: i64) -> StoreResult<()> {
    // Key -> (queue id, jobs in it so far).
    let mut open: HashMap<String, (i64, u32)> = HashMap::new();
    for job in jobs.iter_mut() {
        let Some(total) = job.shard_total else {
            continue;
        };
        let key = serde_json::to_string(&(
            &job.jobtype,
            total,
            &job.requirements,
            &job.params,
            job.build,
        ))?;
        let entry = open.entry(key).or_insert((job.id, 0));
        if entry.1 >= total {
            *entry = (job.id, 0);
        }
        entry.1 += 1;
        let queue = entry.0;
        if queue == job.id {
            s.exec(
                "INSERT INTO test_queues (id, jobtype, build_id, shards, retry_failed, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vals![
                    job.id,
                    &job.jobtype,
                    job.build,
                    total,
                    job.retry_failed,
                    now
                ],
            )?;
        }
        s.exec(
            "UPDATE jobs SET queue_id = $1 WHERE id = $2",
            vals![queue, job.id],
        )?;
        job.test_queue = Some(queue);
    }
    Ok(())
}

/// What `next` decided.
pub enum Step {
    Batch(TestsBatch),
    /// Nothing now: ask again (the HTTP layer waits, then does).
    Wait,
}

/// The job, checked to run `attempt` now, with its queue.
struct Current {
    queue: i64,
    jobtype: String,
    worker: String,
}

fn current(s: &mut dyn Sql, job: i64, attempt: u32) -> StoreResult<Current> {
    let Some(r) = one(
        s,
        "SELECT state, attempt, queue_id, jobtype, worker FROM jobs WHERE id = $1",
        vals![job],
    )?
    else {
        return Err(StoreError::not_found(format!("no job {job}")));
    };
    let (state, at) = (r[0].s(), r[1].u());
    if state != "running" || at != u64::from(attempt) {
        return Err(StoreError::conflict(format!(
            "attempt {attempt} of job {job} is not current (the job is {state} at attempt {at})"
        )));
    }
    let Some(queue) = r[2].int() else {
        return Err(StoreError::invalid(format!(
            "job {job} has no test queue: only the jobs of a sharded submission (--shards N) share one"
        )));
    };
    Ok(Current {
        queue,
        jobtype: r[3].s(),
        worker: r[4].s(),
    })
}

/// Moves the queue's count of pending tests and their estimated time (kept
/// in `test_queues`, so no call sums the pending tests).
fn add_pending(s: &mut dyn Sql, queue: i64, n: i64, ms: i64) -> StoreResult<()> {
    if n == 0 && ms == 0 {
        return Ok(());
    }
    s.exec(
        "UPDATE test_queues SET pending_n = pending_n + $1, pending_ms = pending_ms + $2 \
         WHERE id = $3",
        vals![n, ms, queue],
    )?;
    Ok(())
}

/// Puts back in the queue the reservations `condition` picks (an SQL
/// condition on `queue_tests` over `$1` = the queue and further
/// arguments), returning how many.
fn release(s: &mut dyn Sql, queue: i64, condition: &str, args: &[V]) -> StoreResult<u64> {
    let mut all = vec![V::from(queue)];
    all.extend_from_slice(args);
    let back = s.rows(
        &format!(
            "UPDATE queue_tests SET state = 'pending', attempt = NULL \
             WHERE queue_id = $1 AND state = 'reserved' AND {condition} RETURNING est_ms"
        ),
        &all,
    )?;
    let ms: i64 = back.iter().map(|r| r[0].i()).sum();
    add_pending(s, queue, back.len() as i64, ms)?;
    Ok(back.len() as u64)
}

/// Gives reservations back whose attempt no longer runs (its job ended, its
/// worker was lost): they are the other shards' to take.
fn release_lapsed(s: &mut dyn Sql, queue: i64) -> StoreResult<u64> {
    release(
        s,
        queue,
        "NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = queue_tests.job_id \
         AND j.state = 'running' AND j.attempt = queue_tests.attempt)",
        &[],
    )
}

/// A list's fingerprint: shards that collect the same tests send the same
/// list, merged once.
fn digest(tests: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in tests {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Merges a shard's list into its queue: tests not there yet are added,
/// estimated by their history (unknown ones at the jobtype's mean). A list
/// merged before (the same tests in the same order) is not read again.
fn merge(s: &mut dyn Sql, c: &Current, tests: &[String]) -> StoreResult<()> {
    let digest = digest(tests);
    let lists = one(
        s,
        "SELECT lists FROM test_queues WHERE id = $1",
        vals![c.queue],
    )?
    .map(|r| r[0].s())
    .unwrap_or_default();
    if lists.split(' ').any(|d| d == digest) {
        return Ok(());
    }
    let mean = one(
        s,
        "SELECT CAST(AVG(avg_ms) AS BIGINT) FROM test_history WHERE jobtype = $1 AND avg_ms IS NOT NULL",
        vals![&c.jobtype],
    )?
    .and_then(|r| r[0].int())
    .map(|m| m.max(1) as u64)
    .unwrap_or(rules::UNKNOWN_MS);
    let base = count(
        s,
        "SELECT COALESCE(MAX(seq), 0) FROM queue_tests WHERE queue_id = $1",
        vals![c.queue],
    )?;
    let (mut added, mut added_ms) = (0i64, 0i64);
    for (i, test) in tests.iter().enumerate() {
        let inserted = s.rows(
            "INSERT INTO queue_tests (queue_id, test, seq, est_ms, est_known, state) \
             VALUES ($1, $2, $3, \
             COALESCE((SELECT avg_ms FROM test_history WHERE jobtype = $4 AND test = $2), $5), \
             (SELECT COUNT(*) FROM test_history WHERE jobtype = $4 AND test = $2 \
              AND avg_ms IS NOT NULL), 'pending') \
             ON CONFLICT (queue_id, test) DO NOTHING RETURNING est_ms",
            vals![c.queue, test, base + i as u64 + 1, &c.jobtype, mean],
        )?;
        for r in inserted {
            added += 1;
            added_ms += r[0].i();
        }
    }
    add_pending(s, c.queue, added, added_ms)?;
    s.exec(
        "UPDATE test_queues SET lists = lists || ' ' || $1 WHERE id = $2",
        vals![&digest, c.queue],
    )?;
    Ok(())
}

/// `POST /api/v1/jobs/{id}/tests/next`, in one transaction.
pub(crate) fn next(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    req: &TestsNext,
    now: i64,
) -> StoreResult<Step> {
    let c = current(s, job, attempt)?;
    if let Some(tests) = &req.tests {
        merge(s, &c, tests)?;
        s.exec(
            "UPDATE attempts SET tests_listed = 1 WHERE job_id = $1 AND attempt = $2",
            vals![job, attempt],
        )?;
    }
    if let Some(repro) = &req.repro {
        s.exec(
            "UPDATE test_queues SET repro = $1 WHERE id = $2",
            vals![repro, c.queue],
        )?;
    }
    release_lapsed(s, c.queue)?;
    let (listed, done_here) = one(
        s,
        "SELECT tests_listed, tests_done FROM attempts WHERE job_id = $1 AND attempt = $2",
        vals![job, attempt],
    )?
    .map(|r| (r[0].i() > 0, r[1].u()))
    .unwrap_or((false, 0));
    let Some(q) = one(
        s,
        "SELECT pending_n, pending_ms, shards FROM test_queues WHERE id = $1",
        vals![c.queue],
    )?
    else {
        return Err(StoreError::Broken(anyhow::anyhow!(
            "the test queue {} of job {job} is missing",
            c.queue
        )));
    };
    let (pending, remaining, shards) = (q[0].u(), q[1].u(), q[2].u());
    // The queue's jobs, read once: how many others run or wait, and which
    // count as this one for a failed test's rerun (this job; and every job
    // that ran on this worker while one of the queue's jobs runs on
    // another, so that the rerun goes there). A shard count's rows.
    let (mut others_running, mut others_queued, mut elsewhere) = (0u64, 0u64, false);
    let mut here = Vec::new();
    for r in s.rows(
        "SELECT id, state, worker FROM jobs WHERE queue_id = $1",
        vals![c.queue],
    )? {
        let (id, state, worker) = (r[0].i(), r[1].s(), r[2].text());
        let on_this_worker = worker.as_deref() == Some(c.worker.as_str());
        if on_this_worker {
            here.push(id);
        }
        match state.as_str() {
            "running" if id != job => {
                others_running += 1;
                elsewhere |= !on_this_worker;
            }
            "queued" => others_queued += 1,
            _ => {}
        }
    }
    let mine: Vec<i64> = if elsewhere { here } else { vec![job] };
    // Pending tests set aside for another job than these.
    let set_aside: u64 = s
        .rows(
            "SELECT avoid_job, COUNT(*) FROM queue_tests WHERE queue_id = $1 \
             AND state = 'pending' AND avoid_job IS NOT NULL GROUP BY avoid_job",
            vals![c.queue],
        )?
        .iter()
        .filter(|r| r[0].int().is_some_and(|a| mine.contains(&a)))
        .map(|r| r[1].u())
        .sum();
    // What the others hold: how many, since when, and for how long
    // together (a test reserved before reserved_at existed counts as
    // just now).
    let held = one(
        s,
        "SELECT COUNT(*), MIN(COALESCE(reserved_at, $1)), \
         CAST(COALESCE(SUM(est_ms), 0) AS BIGINT) FROM queue_tests \
         WHERE queue_id = $2 AND state = 'reserved' AND (job_id <> $3 OR attempt <> $4)",
        vals![now, c.queue, job, attempt],
    )?;
    let held_by_others = held.as_ref().map_or(0, |r| r[0].u());
    let held_overdue = held_by_others > 0
        && held.is_some_and(|r| {
            let since = r[1].int().unwrap_or(now);
            rules::held_too_long(now.saturating_sub(since).max(0) as u64, r[2].u())
        });
    let f = rules::Facts {
        listed,
        for_me: pending.saturating_sub(set_aside),
        set_aside,
        held_by_others,
        held_overdue,
        others_running,
        others_queued,
    };
    // The job whose set-aside tests the batch leaves out: this one, or
    // none (0, no job's id) when it may take them too.
    let avoid = match rules::next(&f) {
        rules::Next::NeedList => {
            return Ok(Step::Batch(TestsBatch {
                need_list: true,
                ..Default::default()
            }))
        }
        rules::Next::Done => {
            return Ok(Step::Batch(TestsBatch {
                done: true,
                ..Default::default()
            }))
        }
        rules::Next::Wait => return Ok(Step::Wait),
        rules::Next::Take => job,
        rules::Next::TakeAny => 0,
    };
    let sizing = rules::Sizing {
        remaining_ms: remaining,
        pending,
        shards: shards.min(u64::from(u32::MAX)) as u32,
        done_here,
        max: req
            .max
            .unwrap_or(rules::MAX_BATCH)
            .clamp(1, rules::MAX_BATCH),
    };
    // No batch is longer than this: the longest tests come first, so a
    // batch of the target time holds no more than its share of them.
    let look = rules::candidates_needed(&sizing);
    // The set-aside tests are skipped here, not in SQL: a condition on this
    // job's id would have SQLite plan the statement anew for each job.
    let skip = if avoid == 0 { 0 } else { set_aside };
    let candidates: Vec<(String, rules::Candidate)> = s
        .rows_upto(
            "SELECT test, est_ms, est_known, avoid_job FROM queue_tests WHERE queue_id = $1 \
             AND state = 'pending' ORDER BY est_ms DESC, seq",
            vals![c.queue],
            look.saturating_add(skip).min(usize::MAX as u64) as usize,
        )?
        .into_iter()
        .filter(|r| avoid == 0 || !r[3].int().is_some_and(|a| mine.contains(&a)))
        .map(|r| {
            let c = rules::Candidate {
                est_ms: r[1].u(),
                known: r[2].i() == 1,
            };
            (r[0].s(), c)
        })
        .collect();
    let offered: Vec<rules::Candidate> = candidates.iter().map(|c| c.1).collect();
    let n = rules::batch_len(&offered, &sizing);
    // Each by its key, and only if still pending (on PostgreSQL another
    // server may have taken it meanwhile).
    let mut batch = Vec::with_capacity(n);
    let mut batch_ms = 0i64;
    for (test, cand) in candidates.into_iter().take(n) {
        let took = s.exec(
            "UPDATE queue_tests SET state = 'reserved', job_id = $1, attempt = $2, \
             reserved_at = $3 WHERE queue_id = $4 AND test = $5 AND state = 'pending'",
            vals![job, attempt, now, c.queue, &test],
        )?;
        if took == 1 {
            batch_ms += cand.est_ms as i64;
            batch.push(test);
        }
    }
    add_pending(s, c.queue, -(batch.len() as i64), -batch_ms)?;
    if batch.is_empty() {
        // Taken by another shard in the meantime: look again.
        return Ok(Step::Wait);
    }
    Ok(Step::Batch(TestsBatch {
        tests: batch,
        ..Default::default()
    }))
}

/// One run recorded: the run, the test's state, its history.
struct Run<'a> {
    queue: i64,
    jobtype: &'a str,
    test: &'a str,
    job: i64,
    attempt: u32,
    worker: &'a str,
    outcome: TestOutcome,
    ms: u64,
    message: Option<String>,
    /// Reruns allowed after failures (0 for JUnit reports: the job reruns).
    retry_failed: u32,
}

/// A run into its test's history, in one statement: the duration smoothed
/// as `rules::smoothed` does (a skip leaves it), the outcome's letter added
/// to the last `rules::RECENT`.
static HISTORY_UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let keep = 1.0 - rules::SMOOTHING;
    let new = rules::SMOOTHING;
    let recent = rules::RECENT;
    format!(
        "INSERT INTO test_history (jobtype, test, avg_ms, runs, failures, flaky, recent, last_seen) \
         VALUES ($1, $2, CASE WHEN $3 = 1 THEN NULL ELSE $4 END, 1, $5, $6, $7, $8) \
         ON CONFLICT (jobtype, test) DO UPDATE SET \
         avg_ms = CASE WHEN $3 = 1 THEN test_history.avg_ms \
           WHEN test_history.avg_ms IS NULL THEN $4 \
           ELSE CAST(ROUND(test_history.avg_ms * {keep} + $4 * {new}) AS BIGINT) END, \
         runs = test_history.runs + 1, failures = test_history.failures + $5, \
         flaky = test_history.flaky + $6, \
         recent = CASE WHEN LENGTH(test_history.recent) >= {recent} \
           THEN SUBSTR(test_history.recent, 2) ELSE test_history.recent END || $7, \
         last_seen = $8"
    )
});

/// A run into `test_runs` (run number `run`) and into its test's history.
fn note_run(
    s: &mut dyn Sql,
    r: &Run,
    run: u64,
    flaky: bool,
    message: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    s.exec(
        "INSERT INTO test_runs (queue_id, test, run, job_id, attempt, worker, outcome, \
         duration_ms, message, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vals![
            r.queue,
            r.test,
            run,
            r.job,
            r.attempt,
            r.worker,
            r.outcome.as_str(),
            r.ms,
            message,
            now
        ],
    )?;
    s.exec(
        &HISTORY_UPSERT,
        vals![
            r.jobtype,
            r.test,
            i64::from(r.outcome == TestOutcome::Skipped),
            r.ms,
            i64::from(r.outcome.is_failure()),
            i64::from(flaky),
            r.outcome.letter().to_string().as_str(),
            now
        ],
    )?;
    Ok(())
}

/// Records a run of a test whatever its state (a JUnit report's):
/// `runs` and `failures` are the test's before it. Returns whether the
/// test goes back to the queue for a rerun.
fn record_run(s: &mut dyn Sql, r: &Run, runs: u64, failures: u64, now: i64) -> StoreResult<bool> {
    let failures = failures + u64::from(r.outcome.is_failure());
    let runs = runs + 1;
    let after = rules::after_run(
        r.outcome,
        failures.min(u64::from(u32::MAX)) as u32,
        r.retry_failed,
    );
    let message = r.message.as_deref().map(rules::cap_message);
    match after {
        rules::AfterRun::Retry => s.exec(
            "UPDATE queue_tests SET state = 'pending', avoid_job = $1, job_id = $1, attempt = NULL, \
             runs = $2, failures = $3, outcome = $4, duration_ms = $5, message = $6 \
             WHERE queue_id = $7 AND test = $8",
            vals![
                r.job,
                runs,
                failures,
                r.outcome.as_str(),
                r.ms,
                message.as_deref(),
                r.queue,
                r.test
            ],
        )?,
        rules::AfterRun::Final { flaky } => s.exec(
            "UPDATE queue_tests SET state = 'done', job_id = $1, attempt = $2, \
             runs = $3, failures = $4, outcome = $5, duration_ms = $6, message = $7, flaky = $8 \
             WHERE queue_id = $9 AND test = $10",
            vals![
                r.job,
                r.attempt,
                runs,
                failures,
                r.outcome.as_str(),
                r.ms,
                message.as_deref(),
                i64::from(flaky),
                r.queue,
                r.test
            ],
        )?,
    };
    note_run(
        s,
        r,
        runs,
        matches!(after, rules::AfterRun::Final { flaky: true }),
        message.as_deref(),
        now,
    )?;
    Ok(matches!(after, rules::AfterRun::Retry))
}

/// `POST /api/v1/jobs/{id}/tests/report`.
pub(crate) fn report(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
    results: &[TestResult],
    now: i64,
) -> StoreResult<TestsReported> {
    let c = current(s, job, attempt)?;
    let retry_failed = count(
        s,
        "SELECT retry_failed FROM test_queues WHERE id = $1",
        vals![c.queue],
    )?
    .min(u64::from(u32::MAX)) as u32;
    let mut out = TestsReported::default();
    for res in results {
        let failed = i64::from(res.outcome.is_failure());
        let message = res.message.as_deref().map(rules::cap_message);
        // Taken as the final outcome at once (most runs are); a failure
        // with retries left is put back just below.
        let taken = one(
            s,
            "UPDATE queue_tests SET state = 'done', runs = runs + 1, failures = failures + $1, \
             outcome = $2, duration_ms = $3, message = $4, \
             flaky = CASE WHEN $1 = 0 AND failures > 0 THEN 1 ELSE 0 END \
             WHERE queue_id = $5 AND test = $6 AND state = 'reserved' AND job_id = $7 \
             AND attempt = $8 RETURNING runs, failures, est_ms",
            vals![
                failed,
                res.outcome.as_str(),
                res.duration_ms,
                message.as_deref(),
                c.queue,
                &res.id,
                job,
                attempt
            ],
        )?;
        let Some(row) = taken else {
            let why = match one(
                s,
                "SELECT state FROM queue_tests WHERE queue_id = $1 AND test = $2",
                vals![c.queue, &res.id],
            )? {
                None => "not in this job's test queue".to_string(),
                Some(r) if r[0].s() == "done" => "already reported".to_string(),
                Some(_) => format!("not reserved for attempt {attempt} of job {job}"),
            };
            out.ignored.push(Ignored {
                id: res.id.clone(),
                why,
            });
            continue;
        };
        let (runs, failures) = (row[0].u(), row[1].u());
        let after = rules::after_run(
            res.outcome,
            failures.min(u64::from(u32::MAX)) as u32,
            retry_failed,
        );
        if after == rules::AfterRun::Retry {
            s.exec(
                "UPDATE queue_tests SET state = 'pending', avoid_job = $1, job_id = $1, \
                 attempt = NULL, flaky = 0 WHERE queue_id = $2 AND test = $3",
                vals![job, c.queue, &res.id],
            )?;
            add_pending(s, c.queue, 1, row[2].i())?;
            out.retrying.push(res.id.clone());
        }
        let run = Run {
            queue: c.queue,
            jobtype: &c.jobtype,
            test: &res.id,
            job,
            attempt,
            worker: &c.worker,
            outcome: res.outcome,
            ms: res.duration_ms,
            message: None,
            retry_failed,
        };
        let flaky = after == (rules::AfterRun::Final { flaky: true });
        note_run(s, &run, runs, flaky, message.as_deref(), now)?;
        out.recorded += 1;
    }
    s.exec(
        "UPDATE attempts SET tests_done = tests_done + $1 WHERE job_id = $2 AND attempt = $3",
        vals![out.recorded, job, attempt],
    )?;
    Ok(out)
}

/// `POST /api/v1/jobs/{id}/tests/finish`: gives back what this attempt
/// holds and says what its job's tests came to.
pub(crate) fn finish(s: &mut dyn Sql, job: i64, attempt: u32) -> StoreResult<JobTests> {
    let c = current(s, job, attempt)?;
    let released = release(
        s,
        c.queue,
        "job_id = $2 AND attempt = $3",
        vals![job, attempt],
    )?;
    job_tests(s, c.queue, job, released)
}

fn job_tests(s: &mut dyn Sql, queue: i64, job: i64, released: u64) -> StoreResult<JobTests> {
    let mut out = JobTests {
        released,
        ..Default::default()
    };
    for r in s.rows(
        "SELECT outcome, COUNT(*) FROM test_runs WHERE queue_id = $1 AND job_id = $2 GROUP BY outcome",
        vals![queue, job],
    )? {
        let n = r[1].u();
        match TestOutcome::parse(&r[0].s()) {
            Some(TestOutcome::Passed) => out.passed = n,
            Some(TestOutcome::Failed) => out.failed = n,
            Some(TestOutcome::Skipped) => out.skipped = n,
            Some(TestOutcome::Error) => out.error = n,
            None => {}
        }
    }
    for r in s.rows(
        "SELECT test, state, outcome, flaky FROM queue_tests WHERE queue_id = $1 \
         AND ((state = 'done' AND job_id = $2 AND (flaky = 1 OR outcome IN ('failed', 'error'))) \
              OR (state <> 'done' AND avoid_job = $2)) ORDER BY test",
        vals![queue, job],
    )? {
        if r[1].s() != "done" {
            out.retrying.push(r[0].s());
        } else if r[3].i() == 1 {
            out.flaky += 1;
        } else {
            out.failing.push(r[0].s());
        }
    }
    Ok(out)
}

/// The test report of an attempt that reported through the queue, for its
/// result: counts and the failures that are final here (a failure queued
/// again for another job is `retried`, not failed); no per-test durations.
pub(crate) fn attempt_report(
    s: &mut dyn Sql,
    job: i64,
    attempt: u32,
) -> StoreResult<Option<TestReport>> {
    let rows = s.rows(
        "SELECT r.test, r.outcome, r.message, q.state, q.job_id, q.attempt, q.outcome \
         FROM test_runs r JOIN queue_tests q ON q.queue_id = r.queue_id AND q.test = r.test \
         WHERE r.job_id = $1 AND r.attempt = $2 ORDER BY r.test, r.run",
        vals![job, attempt],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut t = TestReport::default();
    for (i, r) in rows.iter().enumerate() {
        t.total += 1;
        let outcome = TestOutcome::parse(&r[1].s());
        // Final here: the test is done, last run by this attempt, so (a
        // test rerun in the same attempt counts by its last run).
        let last_run = rows.get(i + 1).is_none_or(|n| n[0] != r[0]);
        let final_here = last_run
            && r[3].s() == "done"
            && r[4].i() == job
            && r[5].u() == u64::from(attempt)
            && TestOutcome::parse(&r[6].s()) == outcome;
        match outcome {
            Some(TestOutcome::Passed) => t.passed += 1,
            Some(TestOutcome::Skipped) => t.skipped += 1,
            Some(o) if final_here => {
                if o == TestOutcome::Failed {
                    t.failed += 1;
                } else {
                    t.errors += 1;
                }
                t.failures.push(TestFailure {
                    name: r[0].s(),
                    kind: if o == TestOutcome::Failed {
                        "failure"
                    } else {
                        "error"
                    }
                    .into(),
                    message: rules::cap(&r[2].s(), 4096),
                });
            }
            Some(_) => t.retried.push(r[0].s()),
            None => {}
        }
    }
    Ok(Some(t))
}

/// Records the tests of a JUnit report (a job not using the queue, or a
/// static shard) as runs, so build results and history count them too.
/// Skipped when the attempt reported through the queue.
pub(crate) fn record_junit(
    s: &mut dyn Sql,
    job: &Job,
    attempt: u32,
    worker: &str,
    report: &TestReport,
    now: i64,
) -> StoreResult<()> {
    if count(
        s,
        "SELECT COUNT(*) FROM test_runs WHERE job_id = $1 AND attempt = $2",
        vals![job.id, attempt],
    )? > 0
    {
        return Ok(());
    }
    let queue = match job.test_queue {
        Some(q) => q,
        None => {
            s.exec(
                "INSERT INTO test_queues (id, jobtype, build_id, shards, retry_failed, created_at) \
                 VALUES ($1, $2, $3, 1, 0, $4) ON CONFLICT (id) DO NOTHING",
                vals![job.id, &job.jobtype, job.build, now],
            )?;
            job.id
        }
    };
    let mut tests: BTreeMap<&str, (TestOutcome, u64, Option<String>)> = BTreeMap::new();
    for (name, ms) in &report.durations {
        tests.insert(name, (TestOutcome::Passed, *ms, None));
    }
    for name in &report.skipped_tests {
        tests
            .entry(name)
            .or_insert((TestOutcome::Passed, 0, None))
            .0 = TestOutcome::Skipped;
    }
    for f in &report.failures {
        let e = tests
            .entry(&f.name)
            .or_insert((TestOutcome::Failed, 0, None));
        e.0 = if f.kind == "error" {
            TestOutcome::Error
        } else {
            TestOutcome::Failed
        };
        e.2 = Some(f.message.clone());
    }
    let base = count(
        s,
        "SELECT COALESCE(MAX(seq), 0) FROM queue_tests WHERE queue_id = $1",
        vals![queue],
    )?;
    for (i, (test, (outcome, ms, message))) in tests.into_iter().enumerate() {
        // Inserted as held: it is recorded at once, never handed out.
        s.exec(
            "INSERT INTO queue_tests (queue_id, test, seq, est_ms, est_known, state) \
             VALUES ($1, $2, $3, $4, 1, 'reserved') ON CONFLICT (queue_id, test) DO NOTHING",
            vals![queue, test, base + i as u64 + 1, ms],
        )?;
        let before = one(
            s,
            "SELECT runs, failures, state, est_ms FROM queue_tests WHERE queue_id = $1 AND test = $2",
            vals![queue, test],
        )?
        .map(|r| (r[0].u(), r[1].u(), r[2].s(), r[3].i()))
        .unwrap_or((0, 0, String::new(), 0));
        if before.2 == "pending" {
            // A queued test the job ran by its own list: no longer pending.
            add_pending(s, queue, -1, -before.3)?;
        }
        let run = Run {
            queue,
            jobtype: &job.jobtype,
            test,
            job: job.id,
            attempt,
            worker,
            outcome,
            ms,
            message,
            retry_failed: 0,
        };
        record_run(s, &run, before.0, before.1, now)?;
    }
    Ok(())
}

/// A jobtype's tests with their smoothed durations, for static shards.
pub(crate) fn known_tests(
    s: &mut dyn Sql,
    jobtype: &str,
) -> StoreResult<Vec<(String, Option<u64>)>> {
    Ok(s.rows(
        "SELECT test, avg_ms FROM test_history WHERE jobtype = $1 ORDER BY test",
        vals![jobtype],
    )?
    .into_iter()
    .map(|r| (r[0].s(), r[1].int().map(|m| m.max(0) as u64)))
    .collect())
}

/// The tests of an attempt that ended, as its result keeps them (counts
/// and failures, no per-test durations): from its queue's runs when it
/// reported there (`true`: its failed tests were retried one by one, so
/// the job is not rerun for them); else from its JUnit report, whose tests
/// are recorded as runs (for build results and history) here.
pub(crate) fn attempt_tests(
    s: &mut dyn Sql,
    job: &Job,
    attempt: u32,
    worker: &str,
    junit: Option<&TestReport>,
    now: i64,
) -> StoreResult<(Option<TestReport>, bool)> {
    if job.test_queue.is_some() {
        if let Some(t) = attempt_report(s, job.id, attempt)? {
            return Ok((Some(t), true));
        }
    }
    let Some(report) = junit else {
        return Ok((None, false));
    };
    record_junit(s, job, attempt, worker, report, now)?;
    let mut kept = report.clone();
    kept.durations.clear();
    kept.skipped_tests.clear();
    Ok((Some(kept), false))
}

/// Every test the static plan of a job's queue gave some shard.
pub(crate) fn shard_known(s: &mut dyn Sql, job: i64) -> StoreResult<Vec<String>> {
    let mut all = std::collections::BTreeSet::new();
    for r in s.rows(
        "SELECT shard_tests FROM jobs WHERE queue_id = (SELECT queue_id FROM jobs WHERE id = $1) \
         AND shard_tests IS NOT NULL",
        vals![job],
    )? {
        let list: Vec<String> = serde_json::from_str(&r[0].s()).unwrap_or_default();
        all.extend(list);
    }
    Ok(all.into_iter().collect())
}

/// For tests: the queue's kept counts of pending tests and time agree with
/// its tests.
#[cfg(test)]
pub(crate) fn check_counts(s: &mut dyn Sql, queue: i64) -> StoreResult<()> {
    let kept = one(
        s,
        "SELECT pending_n, pending_ms FROM test_queues WHERE id = $1",
        vals![queue],
    )?
    .map(|r| (r[0].i(), r[1].i()));
    let real = one(
        s,
        "SELECT COUNT(*), CAST(COALESCE(SUM(est_ms), 0) AS BIGINT) FROM queue_tests \
         WHERE queue_id = $1 AND state = 'pending'",
        vals![queue],
    )?
    .map(|r| (r[0].i(), r[1].i()));
    if kept != real {
        return Err(StoreError::Broken(anyhow::anyhow!(
            "queue {queue}: kept (pending, ms) {kept:?}, but the tests say {real:?}"
        )));
    }
    Ok(())
}
