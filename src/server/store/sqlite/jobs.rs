//! Submitting, reading and canceling jobs and builds.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::*;

/// A job's place in the queue of the workers that could run it (1 =
/// next): the queued jobs of its jobtype ahead of it (by priority, then
/// age) that one of those workers could run too; with no such worker, all
/// of them.
pub(crate) fn queue_position(
    conn: &Connection,
    job: &Job,
    workers: &[WorkerView],
) -> StoreResult<u64> {
    let fitting: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.has_jobtype(&job.jobtype) && w.fits(&job.requirements))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT platform FROM jobs WHERE state = 'queued' AND jobtype = ?1 \
         AND (priority > ?2 OR (priority = ?2 AND id < ?3))",
    )?;
    let mut rows = stmt.query(params![job.jobtype, job.priority, job.id])?;
    let mut ahead = 0;
    while let Some(row) = rows.next()? {
        let reqs: Props = json_or(row.get(0)?);
        if fitting.is_empty() || fitting.iter().any(|w| w.fits(&reqs)) {
            ahead += 1;
        }
    }
    Ok(ahead + 1)
}

impl Jobs for SqliteStore {
    fn submit(
        &self,
        build: Option<(String, Extra, Extra)>,
        jobs: Vec<JobSpec>,
        now: i64,
        key: Option<SubmitKey>,
    ) -> StoreResult<Submitted> {
        use crate::server::store::submit_keys::{self, Seen};
        let out = self.with_tx(|tx| {
            if let Some(k) = &key {
                if let Seen::Before { build, ids } =
                    submit_keys::take(&mut super::test_queue::Lite(tx), k, now)?
                {
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
            let build_id = match build {
                Some((name, meta, extra)) => {
                    tx.exec(
                        "INSERT INTO builds (name, meta, extra, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            name,
                            serde_json::to_string(&meta)?,
                            serde_json::to_string(&extra)?,
                            now
                        ],
                    )?;
                    Some(tx.last_insert_rowid())
                }
                None => None,
            };
            let workers = views(load_workers(tx, now, None)?);
            let created_at = rfc3339(now);
            let mut warnings: std::collections::HashMap<(String, Props), Option<String>> =
                std::collections::HashMap::new();
            let mut out = Vec::with_capacity(jobs.len());
            let mut plans: BTreeMap<(String, u32), Vec<Vec<String>>> = BTreeMap::new();
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (jobtype, state, priority, platform, params, timeout_ms, \
                 max_attempts, build_id, shard_index, shard_total, created_at, extra, \
                 retry_failed, shard_tests) \
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for spec in jobs {
                let job_build = match (&spec.build, build_id) {
                    (_, Some(b)) => Some(b),
                    (Some(BuildRef::Id(b)), None) => {
                        load_build(tx, *b, false)?;
                        Some(*b)
                    }
                    (Some(BuildRef::Name(name)), None) => {
                        tx.exec(
                            "INSERT INTO builds (name, meta, extra, created_at) VALUES (?1, '{}', '{}', ?2)",
                            params![name, now],
                        )?;
                        Some(tx.last_insert_rowid())
                    }
                    (None, None) => None,
                };
                let shard_tests = match (spec.shard_index, spec.shard_total) {
                    (Some(i), Some(n)) => {
                        let key = (spec.jobtype.clone(), n);
                        if !plans.contains_key(&key) {
                            let known = crate::server::store::test_queue::known_tests(&mut super::test_queue::Lite(tx), &spec.jobtype)?;
                            plans.insert(key.clone(), crate::shards::plan(&known, n));
                        }
                        let plan = &plans[&key];
                        (!plan.iter().all(Vec::is_empty))
                            .then(|| serde_json::to_string(&plan[i as usize]))
                            .transpose()?
                    }
                    _ => None,
                };
                insert.execute(params![
                    spec.jobtype,
                    spec.priority,
                    serde_json::to_string(&spec.platform)?,
                    serde_json::to_string(&spec.params)?,
                    spec.timeout.map(|d| d.as_millis() as i64),
                    spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
                    job_build,
                    spec.shard_index,
                    spec.shard_total,
                    now,
                    serde_json::to_string(&spec.extra)?,
                    spec.retry_failed.unwrap_or(0),
                    shard_tests,
                ])?;
                // The job as stored, built here rather than read back.
                let warning = warnings
                    .entry((spec.jobtype.clone(), spec.platform.clone()))
                    .or_insert_with(|| {
                        explain::never_runnable(&spec.jobtype, &spec.platform, &workers)
                    })
                    .clone();
                let shard_tests = shard_tests
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok());
                let id = tx.last_insert_rowid();
                out.push(queued_job(id, spec, job_build, shard_tests, &created_at, warning));
            }
            crate::server::store::test_queue::assign(&mut super::test_queue::Lite(tx), &mut out, now)?;
            if let Some(k) = &key {
                let ids: Vec<i64> = out.iter().map(|j| j.id).collect();
                submit_keys::record(&mut super::test_queue::Lite(tx), k, build_id, &ids)?;
            }
            Ok(Submitted {
                build: build_id,
                jobs: out,
                repeated: false,
            })
        })?;
        if !out.repeated {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for j in &out.jobs {
                q.insert(Queued {
                    id: j.id,
                    jobtype: j.jobtype.clone(),
                    priority: j.priority,
                    platform_json: serde_json::to_string(&j.requirements)?,
                    avoid: None,
                });
            }
        }
        Ok(out)
    }

    fn job(&self, id: i64) -> StoreResult<Job> {
        self.with_conn(|c| load_job(c, id))
    }

    fn jobs(&self, f: &JobFilter) -> StoreResult<Vec<Job>> {
        self.with_conn(|c| {
            // Only the conditions asked for, so that SQLite can use an
            // index: queued and running jobs are few, found through the
            // queue index; the ended states are most jobs, found soonest by
            // reading newest first (`+state` keeps the index out).
            use rusqlite::types::Value as V;
            let mut conds: Vec<&str> = Vec::new();
            let mut args: Vec<V> = Vec::new();
            let mut add = |cond: &'static str, v: Option<V>| {
                if let Some(v) = v {
                    conds.push(cond);
                    args.push(v);
                }
            };
            match f.state {
                Some(s @ (JobState::Queued | JobState::Running)) => {
                    add("state = ?", Some(V::Text(s.as_str().into())))
                }
                Some(s) => add("+state = ?", Some(V::Text(s.as_str().into()))),
                None => {}
            }
            add(
                "id IN (SELECT value FROM json_each(?))",
                (!f.ids.is_empty())
                    .then(|| serde_json::to_string(&f.ids))
                    .transpose()?
                    .map(V::Text),
            );
            add("build_id = ?", f.build.map(V::Integer));
            add("worker = ?", f.worker.clone().map(V::Text));
            add("jobtype = ?", f.jobtype.clone().map(V::Text));
            add(
                "EXISTS (SELECT 1 FROM json_each(jobs.params) \
                 WHERE instr(lower(key || '=' || value), lower(?)) > 0)",
                f.text.clone().map(V::Text),
            );
            add("id < ?", f.before.map(V::Integer));
            match f.reached {
                Some(Reached::Started) => conds.push("state <> 'queued'"),
                Some(Reached::Ended) => conds.push("state NOT IN ('queued', 'running')"),
                None => {}
            }
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            args.push(V::Integer(f.limit.min(i64::MAX as usize) as i64));
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLS} FROM jobs {filter} ORDER BY id DESC LIMIT ?"
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), job_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn cancel(&self, id: i64, now: i64) -> StoreResult<Job> {
        let out = self.with_tx(|tx| {
            let job = load_job(tx, id)?;
            match job_rules::after_cancel(job.state) {
                job_rules::AfterCancel::EndNow => {
                    tx.exec(
                        "UPDATE jobs SET state = 'canceled', cancel_requested = 1, finished_at = ?2, \
                         reason = 'canceled before it ran' WHERE id = ?1 AND state = 'queued'",
                        params![id, now],
                    )?;
                }
                job_rules::AfterCancel::Ask => {
                    tx.exec(
                        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                        [id],
                    )?;
                }
                job_rules::AfterCancel::Nothing => {}
            }
            load_job(tx, id)
        })?;
        self.resync(&[id])?;
        Ok(out)
    }

    fn attempts(&self, id: i64) -> StoreResult<Vec<Attempt>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT attempt, worker, started_at, finished_at, state, reason, log_size \
                 FROM attempts WHERE job_id = ?1 ORDER BY attempt",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    worker: r.get(1)?,
                    started_at: rfc3339(r.get(2)?),
                    finished_at: r.get::<_, Option<i64>>(3)?.map(rfc3339),
                    state: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|s| AttemptState::parse(&s)),
                    reason: r.get(5)?,
                    log_bytes: r.get::<_, i64>(6)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn worker_attempts(&self, name: &str, limit: usize) -> StoreResult<Vec<(i64, Attempt)>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT job_id, attempt, worker, started_at, finished_at, state, reason, log_size \
                 FROM attempts WHERE worker = ?1 ORDER BY started_at DESC, job_id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![name, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    Attempt {
                        attempt: r.get(1)?,
                        worker: r.get(2)?,
                        started_at: rfc3339(r.get(3)?),
                        finished_at: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                        state: r
                            .get::<_, Option<String>>(5)?
                            .and_then(|s| AttemptState::parse(&s)),
                        reason: r.get(6)?,
                        log_bytes: r.get::<_, i64>(7)? as u64,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn builds(&self, f: &BuildFilter) -> StoreResult<Vec<Build>> {
        self.with_conn(|c| {
            let ids: Vec<i64> = {
                let mut stmt = c.prepare_cached(
                    "SELECT id FROM builds \
                     WHERE (?2 IS NULL OR instr(lower(name), lower(?2)) > 0) \
                       AND (?3 IS NULL OR id < ?3) \
                     ORDER BY id DESC LIMIT ?1",
                )?;
                let rows =
                    stmt.query_map(params![f.limit as i64, f.name, f.before], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            ids.into_iter().map(|id| load_build(c, id, false)).collect()
        })
    }

    fn build(&self, id: i64) -> StoreResult<Build> {
        self.with_conn(|c| load_build(c, id, true))
    }

    fn build_head(&self, id: i64) -> StoreResult<Build> {
        self.with_conn(|c| load_build(c, id, false))
    }

    fn explain(&self, id: i64, now: i64) -> StoreResult<Explanation> {
        self.with_conn(|c| {
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
