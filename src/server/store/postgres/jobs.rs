//! Submitting, reading and canceling jobs and builds on PostgreSQL.

use super::sql::Arg;
use super::*;

/// A job's place in the queue of the workers that could run it (1 =
/// next): the queued jobs of its jobtype ahead of it (by priority, then
/// age) that one of those workers could run too; with no such worker, all
/// of them.
pub(crate) fn queue_position(
    c: &mut impl Pg,
    job: &Job,
    workers: &[WorkerView],
) -> StoreResult<u64> {
    let fitting: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.has_jobtype(&job.jobtype) && w.fits(&job.requirements))
        .collect();
    let ahead: Vec<Props> = c.rows(
        "SELECT platform FROM jobs WHERE state = 'queued' AND jobtype = $1 \
         AND (priority > $2 OR (priority = $2 AND id < $3))",
        args![&job.jobtype, job.priority, job.id],
        |r| Ok(json_or(r.get(0)?)),
    )?;
    let ahead = ahead
        .iter()
        .filter(|reqs| fitting.is_empty() || fitting.iter().any(|w| w.fits(reqs)))
        .count() as u64;
    Ok(ahead + 1)
}

/// The build a job of a submit goes to: the submit's own, or the one the
/// job names (by id, which must exist, or by name, made here).
fn build_of(
    tx: &mut Tx,
    spec: &JobSpec,
    submitted: Option<i64>,
    now: i64,
) -> StoreResult<Option<i64>> {
    Ok(match (&spec.build, submitted) {
        (_, Some(b)) => Some(b),
        (Some(BuildRef::Id(b)), None) => {
            load_build(tx, *b, false)?;
            Some(*b)
        }
        (Some(BuildRef::Name(name)), None) => Some(tx.one(
            "INSERT INTO builds (name, meta, extra, created_at) VALUES ($1, '{}', '{}', $2) \
             RETURNING id",
            args![name, now],
            |r| r.get(0),
        )?),
        (None, None) => None,
    })
}

impl Jobs for PgStore {
    fn submit(
        &self,
        build: Option<(String, Extra, Extra)>,
        jobs: Vec<JobSpec>,
        _now: i64,
        key: Option<SubmitKey>,
    ) -> StoreResult<Submitted> {
        use crate::server::store::submit_keys::{self, Seen};
        let out = self.with_tx(|tx, now| {
            if let Some(k) = &key {
                if let Seen::Before { build, ids } = submit_keys::take(tx, k, now)? {
                    let jobs = ids
                        .iter()
                        .map(|id| load_job(tx, *id))
                        .collect::<StoreResult<Vec<Job>>>()?;
                    return Ok(Submitted {
                        build,
                        jobs,
                        repeated: true,
                    });
                }
            }
            let build_id: Option<i64> = match &build {
                Some((name, meta, extra)) => Some(tx.one(
                    "INSERT INTO builds (name, meta, extra, created_at) VALUES ($1, $2, $3, $4) \
                     RETURNING id",
                    args![
                        name,
                        serde_json::to_string(&meta)?,
                        serde_json::to_string(&extra)?,
                        now
                    ],
                    |r| r.get(0),
                )?),
                None => None,
            };
            let workers = views(load_workers(tx, now, None)?);
            let created_at = rfc3339(now);
            let mut warnings: std::collections::HashMap<(String, Props), Option<String>> =
                std::collections::HashMap::new();
            let mut out = Vec::with_capacity(jobs.len());
            let mut plans: BTreeMap<(String, u32), Vec<Vec<String>>> = BTreeMap::new();
            let insert = tx.tx.prepare(
                "INSERT INTO jobs (jobtype, state, priority, platform, params, timeout_ms, \
                 max_attempts, build_id, shard_index, shard_total, created_at, extra, \
                 retry_failed, shard_tests) \
                 VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 RETURNING id",
            )?;
            for spec in jobs.iter() {
                let job_build = build_of(tx, spec, build_id, now)?;
                let shard_tests = match (spec.shard_index, spec.shard_total) {
                    (Some(i), Some(n)) => {
                        let key = (spec.jobtype.clone(), n);
                        if !plans.contains_key(&key) {
                            let known =
                                crate::server::store::test_queue::known_tests(tx, &spec.jobtype)?;
                            plans.insert(key.clone(), crate::shards::plan(&known, n));
                        }
                        let plan = &plans[&key];
                        (!plan.iter().all(Vec::is_empty))
                            .then(|| serde_json::to_string(&plan[i as usize]))
                            .transpose()?
                    }
                    _ => None,
                };
                let values = [
                    Arg::from(spec.jobtype.as_str()),
                    Arg::from(spec.priority),
                    Arg::from(serde_json::to_string(&spec.platform)?),
                    Arg::from(serde_json::to_string(&spec.params)?),
                    Arg::from(spec.timeout.map(|d| d.as_millis())),
                    Arg::from(spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)),
                    Arg::from(job_build),
                    Arg::from(spec.shard_index),
                    Arg::from(spec.shard_total),
                    Arg::from(now),
                    Arg::from(serde_json::to_string(&spec.extra)?),
                    Arg::from(spec.retry_failed.unwrap_or(0)),
                    Arg::from(shard_tests.clone()),
                ];
                let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|a| a as &(dyn ::postgres::types::ToSql + Sync))
                    .collect();
                let id: i64 = tx.tx.query_one(&insert, &refs)?.try_get(0)?;
                let warning = warnings
                    .entry((spec.jobtype.clone(), spec.platform.clone()))
                    .or_insert_with(|| {
                        explain::never_runnable(&spec.jobtype, &spec.platform, &workers)
                    })
                    .clone();
                let shard_tests = shard_tests
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok());
                out.push(queued_job(
                    id,
                    spec.clone(),
                    job_build,
                    shard_tests,
                    &created_at,
                    warning,
                ));
            }
            crate::server::store::test_queue::assign(tx, &mut out, now)?;
            let jobtypes: std::collections::BTreeSet<&str> =
                out.iter().map(|j| j.jobtype.as_str()).collect();
            for jobtype in jobtypes {
                notify(tx, Change::Queued(jobtype))?;
            }
            if let Some(k) = &key {
                let ids: Vec<i64> = out.iter().map(|j| j.id).collect();
                submit_keys::record(tx, k, build_id, &ids)?;
            }
            Ok(Submitted {
                build: build_id,
                jobs: out,
                repeated: false,
            })
        })?;
        if out.repeated {
            return Ok(out);
        }
        // Heard here at once, before the notification comes back: this
        // server's held claims look as soon as the handler wakes them.
        let mut gens = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        for j in &out.jobs {
            gens.heard(&format!("q:{}", j.jobtype));
        }
        drop(gens);
        Ok(out)
    }

    fn job(&self, id: i64) -> StoreResult<Job> {
        self.with_conn(|c, _| load_job(c, id))
    }

    fn jobs(&self, f: &JobFilter) -> StoreResult<Vec<Job>> {
        self.with_conn(|c, _| {
            let ids = (!f.ids.is_empty()).then(|| f.ids.clone());
            c.rows(
                &format!(
                    "SELECT {JOB_COLS} FROM jobs \
                     WHERE ($1::BIGINT[] IS NULL OR id = ANY($1)) \
                       AND ($2::TEXT IS NULL OR state = $2) \
                       AND ($3::BIGINT IS NULL OR build_id = $3) \
                       AND ($4::TEXT IS NULL OR worker = $4) \
                       AND ($5::TEXT IS NULL \
                            OR ($5 = 'started' AND state <> 'queued') \
                            OR ($5 = 'ended' AND state NOT IN ('queued', 'running'))) \
                       AND ($7::TEXT IS NULL OR jobtype = $7) \
                       AND ($8::TEXT IS NULL OR EXISTS (SELECT 1 FROM json_each_text(params::json) AS p(k, v) \
                            WHERE strpos(lower(p.k || '=' || p.v), lower($8)) > 0)) \
                       AND ($9::BIGINT IS NULL OR id < $9) \
                     ORDER BY id DESC LIMIT $6"
                ),
                &[
                    Arg::IntArray(ids),
                    Arg::from(f.state.map(|s| s.as_str())),
                    Arg::from(f.build),
                    Arg::from(&f.worker),
                    Arg::from(f.reached.map(|r| r.as_str())),
                    Arg::from(f.limit),
                    Arg::from(&f.jobtype),
                    Arg::from(&f.text),
                    Arg::from(f.before),
                ],
                job_from_row,
            )
        })
    }

    fn cancel(&self, id: i64, _now: i64) -> StoreResult<Job> {
        self.with_tx(|tx, now| {
            let job = lock_job(tx, id)?;
            match job_rules::after_cancel(job.state) {
                job_rules::AfterCancel::EndNow => {
                    tx.exec(
                        "UPDATE jobs SET state = 'canceled', cancel_requested = 1, \
                         finished_at = $2, reason = 'canceled before it ran' \
                         WHERE id = $1 AND state = 'queued'",
                        args![id, now],
                    )?;
                }
                job_rules::AfterCancel::Ask => {
                    tx.exec(
                        "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'",
                        args![id],
                    )?;
                }
                job_rules::AfterCancel::Nothing => {}
            }
            notify(tx, Change::Events)?;
            load_job(tx, id)
        })
    }

    fn attempts(&self, id: i64) -> StoreResult<Vec<Attempt>> {
        self.with_conn(|c, _| {
            c.rows(
                "SELECT attempt, worker, started_at, finished_at, state, reason, log_size \
                 FROM attempts WHERE job_id = $1 ORDER BY attempt",
                args![id],
                |r| {
                    Ok(Attempt {
                        attempt: r.get(0)?,
                        worker: r.get(1)?,
                        started_at: rfc3339(r.get(2)?),
                        finished_at: r.get::<Option<i64>>(3)?.map(rfc3339),
                        state: r
                            .get::<Option<String>>(4)?
                            .and_then(|s| AttemptState::parse(&s)),
                        reason: r.get(5)?,
                        log_bytes: r.get(6)?,
                    })
                },
            )
        })
    }

    fn worker_attempts(&self, name: &str, limit: usize) -> StoreResult<Vec<(i64, Attempt)>> {
        self.with_conn(|c, _| {
            c.rows(
                "SELECT job_id, attempt, worker, started_at, finished_at, state, reason, log_size \
                 FROM attempts WHERE worker = $1 ORDER BY started_at DESC, job_id DESC LIMIT $2",
                args![name, limit],
                |r| {
                    Ok((
                        r.get(0)?,
                        Attempt {
                            attempt: r.get(1)?,
                            worker: r.get(2)?,
                            started_at: rfc3339(r.get(3)?),
                            finished_at: r.get::<Option<i64>>(4)?.map(rfc3339),
                            state: r
                                .get::<Option<String>>(5)?
                                .and_then(|s| AttemptState::parse(&s)),
                            reason: r.get(6)?,
                            log_bytes: r.get(7)?,
                        },
                    ))
                },
            )
        })
    }

    fn builds(&self, f: &BuildFilter) -> StoreResult<Vec<Build>> {
        self.with_conn(|c, _| {
            let ids: Vec<i64> = c.rows(
                "SELECT id FROM builds \
                 WHERE ($2::TEXT IS NULL OR strpos(lower(name), lower($2)) > 0) \
                   AND ($3::BIGINT IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $1",
                args![f.limit, &f.name, f.before],
                |r| r.get(0),
            )?;
            ids.into_iter().map(|id| load_build(c, id, false)).collect()
        })
    }

    fn build(&self, id: i64) -> StoreResult<Build> {
        self.with_conn(|c, _| load_build(c, id, true))
    }

    fn build_head(&self, id: i64) -> StoreResult<Build> {
        self.with_conn(|c, _| load_build(c, id, false))
    }

    fn explain(&self, id: i64, _now: i64) -> StoreResult<Explanation> {
        self.with_conn(|c, now| {
            let job = load_job(c, id)?;
            let workers = views(load_workers(c, now, None)?);
            let position = if job.state == JobState::Queued {
                Some(queue_position(c, &job, &workers)?)
            } else {
                None
            };
            Ok(explain::explain(&job, &workers, position))
        })
    }
}
