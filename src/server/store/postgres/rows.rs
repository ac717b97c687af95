//! Rows to values for PostgreSQL: the same column lists as the SQLite
//! store, and the loaders every operation shares.

use super::sql::PgRow;
use super::*;

pub(crate) use crate::server::store::common::*;

pub(crate) fn queued_from_row(r: &PgRow) -> Result<Queued, ::postgres::Error> {
    let avoid = match (r.get::<Option<String>>(4)?, r.get::<Option<i64>>(5)?) {
        (Some(w), Some(until)) => Some((w, until)),
        _ => None,
    };
    Ok(Queued {
        id: r.get(0)?,
        jobtype: r.get(1)?,
        priority: r.get(2)?,
        platform_json: r.get(3)?,
        avoid,
    })
}

pub(crate) fn job_from_row(row: &PgRow) -> Result<Job, ::postgres::Error> {
    let state: String = row.get(2)?;
    let reruns: u32 = row.get(24)?;
    let mut job = Job {
        id: row.get(0)?,
        jobtype: row.get(1)?,
        state: JobState::parse(&state).unwrap_or(JobState::Error),
        priority: row.get(3)?,
        platform: Props::new(),
        requirements: json_or(row.get(4)?),
        params: json_or(row.get(5)?),
        timeout: row.get::<Option<u64>>(6)?.map(Duration::from_millis),
        max_attempts: row.get(7)?,
        attempt: row.get(8)?,
        worker: row.get(9)?,
        platform_index: row.get(10)?,
        matched_platform: row
            .get::<Option<String>>(11)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        build: row.get(12)?,
        shard_index: row.get(13)?,
        shard_total: row.get(14)?,
        created_at: rfc3339(row.get(15)?),
        started_at: row.get::<Option<i64>>(16)?.map(rfc3339),
        finished_at: row.get::<Option<i64>>(17)?.map(rfc3339),
        cancel_requested: row.get::<i64>(18)? != 0,
        reason: row.get(19)?,
        result: row
            .get::<Option<String>>(20)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        info: row
            .get::<Option<String>>(21)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        warning: None,
        attempts: Vec::new(),
        extra: json_or(row.get(22)?),
        retry_failed: row.get(23)?,
        reruns,
        flaky: state == "passed" && reruns > 0,
        flaky_tests: json_or(row.get(25)?),
        shard_tests: row
            .get::<Option<String>>(26)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        test_queue: row.get(27)?,
        job_token: None,
        shard_known: None,
    };
    job.platform = job
        .matched_platform
        .clone()
        .unwrap_or_else(|| job.requirements.clone());
    Ok(job)
}

pub(crate) fn load_job(c: &mut impl Pg, id: i64) -> StoreResult<Job> {
    c.row(
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
        args![id],
        job_from_row,
    )?
    .ok_or_else(|| StoreError::not_found(format!("no job {id}")))
}

/// The job, its row locked until the transaction ends.
pub(crate) fn lock_job(tx: &mut Tx, id: i64) -> StoreResult<Job> {
    tx.row(
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1 FOR UPDATE"),
        args![id],
        job_from_row,
    )?
    .ok_or_else(|| StoreError::not_found(format!("no job {id}")))
}

pub(crate) fn load_workers(
    c: &mut impl Pg,
    now: i64,
    name: Option<&str>,
) -> StoreResult<Vec<WorkerRow>> {
    c.rows(
        "SELECT name, jobtypes, platforms, lease_ms, last_seen, status, drained, \
         quarantined_until, accept, slots, \
         (SELECT count(*) FROM jobs WHERE jobs.worker = workers.name AND jobs.state = 'running') \
         FROM workers WHERE $1::TEXT IS NULL OR name = $1 ORDER BY name",
        args![name],
        |r| {
            let lease_ms: i64 = r.get(3)?;
            let reported: String = r.get(5)?;
            let drained = r.get::<i64>(6)? != 0;
            let running: u32 = r.get(10)?;
            let presence = presence(r.get(4)?, lease_ms, &reported, drained, r.get(7)?, running);
            let status = worker_rules::status(&presence, now);
            Ok(WorkerRow {
                view: WorkerView {
                    name: r.get(0)?,
                    jobtypes: json_or(r.get(1)?),
                    platforms: json_or(r.get(2)?),
                    accept: parse_accept(&json_or::<Vec<String>>(r.get(8)?)),
                    status,
                    slots: r.get(9)?,
                    running,
                },
                lease_ms: lease_ms.max(0) as u64,
                presence,
            })
        },
    )
}

pub(crate) fn load_build(c: &mut impl Pg, id: i64, with_jobs: bool) -> StoreResult<Build> {
    let (name, meta, extra, created): (String, String, String, i64) = c
        .row(
            "SELECT name, meta, extra, created_at FROM builds WHERE id = $1",
            args![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?
        .ok_or_else(|| StoreError::not_found(format!("no build {id}")))?;
    let counts: BTreeMap<String, u64> = c
        .rows(
            "SELECT state, count(*) FROM jobs WHERE build_id = $1 GROUP BY state",
            args![id],
            |r| Ok((r.get::<String>(0)?, r.get::<u64>(1)?)),
        )?
        .into_iter()
        .collect();
    let (flaky, last_end): (u64, Option<i64>) = c.one(
        "SELECT count(*) FILTER (WHERE state = 'passed' AND reruns > 0), max(finished_at) \
         FROM jobs WHERE build_id = $1",
        args![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let jobs = if with_jobs {
        c.rows(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE build_id = $1 ORDER BY id"),
            args![id],
            job_from_row,
        )?
    } else {
        Vec::new()
    };
    Ok(Build {
        id,
        name,
        meta: serde_json::from_str(&meta)?,
        state: build_state(&counts),
        created_at: rfc3339(created),
        ended_at: build_state(&counts)
            .is_final()
            .then_some(last_end)
            .flatten()
            .map(rfc3339),
        counts,
        flaky,
        jobs,
        extra: serde_json::from_str(&extra)?,
    })
}

pub(crate) fn cancels_of(c: &mut impl Pg, worker: &str) -> StoreResult<Vec<i64>> {
    c.rows(
        "SELECT id FROM jobs WHERE worker = $1 AND state = 'running' AND cancel_requested = 1 \
         ORDER BY id",
        args![worker],
        |r| r.get(0),
    )
}

/// Workers as the API shows them (`name` for one).
pub(crate) fn load_worker_list(
    c: &mut impl Pg,
    now: i64,
    name: Option<&str>,
) -> StoreResult<Vec<Worker>> {
    let mut running: BTreeMap<String, Vec<RunningJob>> = BTreeMap::new();
    for (worker, job) in c.rows(
        "SELECT worker, id, attempt, info FROM jobs WHERE state = 'running' \
         AND ($1::TEXT IS NULL OR worker = $1) ORDER BY id",
        args![name],
        |r| {
            Ok((
                r.get::<Option<String>>(0)?.unwrap_or_default(),
                RunningJob {
                    id: r.get(1)?,
                    attempt: r.get(2)?,
                    info: r
                        .get::<Option<String>>(3)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                    canceling: false,
                },
            ))
        },
    )? {
        running.entry(worker).or_default().push(job);
    }
    c.rows(
        &format!(
            "SELECT {WORKER_COLS} FROM workers WHERE $1::TEXT IS NULL OR name = $1 ORDER BY name"
        ),
        args![name],
        |row| {
            let name: String = row.get(0)?;
            let last_seen: i64 = row.get(9)?;
            let jobs = running.remove(&name).unwrap_or_default();
            let reported: String = row.get(11)?;
            let drained = row.get::<i64>(12)? != 0;
            let quarantined_until: Option<i64> = row.get(14)?;
            let presence = presence(
                last_seen,
                row.get(6)?,
                &reported,
                drained,
                quarantined_until,
                u32::try_from(jobs.len()).unwrap_or(u32::MAX),
            );
            Ok(Worker {
                name,
                status: worker_rules::status(&presence, now),
                accept: json_or(row.get(13)?),
                drained,
                drained_at: row.get::<Option<i64>>(16)?.filter(|_| drained).map(rfc3339),
                quarantined_until: quarantined_until.filter(|t| *t > now).map(rfc3339),
                infra_failures: row.get(15)?,
                jobtypes: json_or(row.get(1)?),
                platforms: json_or(row.get(2)?),
                info: json_or(row.get(3)?),
                slots: row.get(4)?,
                heartbeat_interval_ms: row.get(5)?,
                version: row.get(7)?,
                registered_at: rfc3339(row.get(8)?),
                last_seen: rfc3339(last_seen),
                jobs,
                extra: json_or(row.get(10)?),
            })
        },
    )
}
