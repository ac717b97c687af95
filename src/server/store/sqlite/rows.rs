//! Rows to values: the column lists and the loaders every operation shares.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row};

use super::*;

pub(crate) fn queued_from_row(r: &Row) -> rusqlite::Result<Queued> {
    let avoid = match (r.get::<_, Option<String>>(4)?, r.get::<_, Option<i64>>(5)?) {
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

pub(crate) fn job_from_row(row: &Row) -> rusqlite::Result<Job> {
    let state: String = row.get(2)?;
    Ok(Job {
        id: row.get(0)?,
        jobtype: row.get(1)?,
        state: JobState::parse(&state).unwrap_or(JobState::Error),
        priority: row.get(3)?,
        platform: Props::new(),
        requirements: json_or(row.get(4)?),
        params: json_or(row.get(5)?),
        timeout: row
            .get::<_, Option<i64>>(6)?
            .map(|ms| Duration::from_millis(ms as u64)),
        max_attempts: row.get(7)?,
        attempt: row.get(8)?,
        worker: row.get(9)?,
        platform_index: row.get::<_, Option<i64>>(10)?.map(|i| i as usize),
        matched_platform: row
            .get::<_, Option<String>>(11)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        build: row.get(12)?,
        shard_index: row.get(13)?,
        shard_total: row.get(14)?,
        created_at: rfc3339(row.get(15)?),
        started_at: row.get::<_, Option<i64>>(16)?.map(rfc3339),
        finished_at: row.get::<_, Option<i64>>(17)?.map(rfc3339),
        cancel_requested: row.get::<_, i64>(18)? != 0,
        reason: row.get(19)?,
        result: row
            .get::<_, Option<String>>(20)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        info: row
            .get::<_, Option<String>>(21)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        warning: None,
        attempts: Vec::new(),
        extra: json_or(row.get(22)?),
        retry_failed: row.get(23)?,
        reruns: row.get(24)?,
        flaky: state == "passed" && row.get::<_, u32>(24)? > 0,
        flaky_tests: json_or(row.get(25)?),
        shard_tests: row
            .get::<_, Option<String>>(26)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        test_queue: row.get(27)?,
        job_token: None,
        shard_known: None,
    })
    .map(|mut job: Job| {
        job.platform = job
            .matched_platform
            .clone()
            .unwrap_or_else(|| job.requirements.clone());
        job
    })
}

pub(crate) fn load_job(conn: &Connection, id: i64) -> StoreResult<Job> {
    conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("no job {id}")))
}

pub(crate) fn load_workers(
    conn: &Connection,
    now: i64,
    name: Option<&str>,
) -> StoreResult<Vec<WorkerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, jobtypes, platforms, lease_ms, last_seen, status, drained, \
         quarantined_until, accept, slots, \
         (SELECT count(*) FROM jobs WHERE jobs.worker = workers.name AND jobs.state = 'running') \
         FROM workers WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([name], |r| {
        let lease_ms: i64 = r.get(3)?;
        let reported: String = r.get(5)?;
        let drained = r.get::<_, i64>(6)? != 0;
        let quarantined_until: Option<i64> = r.get(7)?;
        let running: u32 = r.get(10)?;
        let presence = presence(
            r.get(4)?,
            lease_ms,
            &reported,
            drained,
            quarantined_until,
            running,
        );
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
            lease_ms: lease_ms as u64,
            presence,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn load_build(conn: &Connection, id: i64, with_jobs: bool) -> StoreResult<Build> {
    let (name, meta, extra, created): (String, String, String, i64) = conn
        .row(
            "SELECT name, meta, extra, created_at FROM builds WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("no build {id}")))?;
    let mut counts = BTreeMap::new();
    let mut stmt =
        conn.prepare_cached("SELECT state, count(*) FROM jobs WHERE build_id = ?1 GROUP BY state")?;
    for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
        let (state, n) = row?;
        counts.insert(state, n);
    }
    let (flaky, last_end): (u64, Option<i64>) = conn.row(
        "SELECT count(*) FILTER (WHERE state = 'passed' AND reruns > 0), max(finished_at) \
         FROM jobs WHERE build_id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let jobs = if with_jobs {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE build_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([id], job_from_row)?;
        rows.collect::<Result<_, _>>()?
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

pub(crate) fn cancels_of(conn: &Connection, worker: &str) -> StoreResult<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM jobs WHERE worker = ?1 AND state = 'running' AND cancel_requested = 1",
    )?;
    let ids = stmt
        .query_map([worker], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

pub(crate) fn worker_from_row(conn: &Connection, row: &Row, now: i64) -> StoreResult<Worker> {
    let name: String = row.get(0)?;
    let last_seen: i64 = row.get(9)?;
    let lease: i64 = row.get(6)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, attempt, info FROM jobs WHERE worker = ?1 AND state = 'running' ORDER BY id",
    )?;
    let jobs: Vec<RunningJob> = stmt
        .query_map([&name], |r| {
            Ok(RunningJob {
                id: r.get(0)?,
                attempt: r.get(1)?,
                info: r
                    .get::<_, Option<String>>(2)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                canceling: false,
            })
        })?
        .collect::<Result<_, _>>()?;
    let reported: String = row.get(11)?;
    let drained = row.get::<_, i64>(12)? != 0;
    let quarantined_until: Option<i64> = row.get(14)?;
    let running = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
    let presence = presence(
        last_seen,
        lease,
        &reported,
        drained,
        quarantined_until,
        running,
    );
    Ok(Worker {
        name,
        status: worker_rules::status(&presence, now),
        accept: json_or(row.get(13)?),
        drained,
        drained_at: row
            .get::<_, Option<i64>>(16)?
            .filter(|_| drained)
            .map(rfc3339),
        quarantined_until: quarantined_until.filter(|t| *t > now).map(rfc3339),
        infra_failures: row.get(15)?,
        jobtypes: json_or(row.get(1)?),
        platforms: json_or(row.get(2)?),
        info: json_or(row.get(3)?),
        slots: row.get(4)?,
        heartbeat_interval_ms: row.get::<_, i64>(5)? as u64,
        version: row.get(7)?,
        registered_at: rfc3339(row.get(8)?),
        last_seen: rfc3339(last_seen),
        jobs,
        extra: json_or(row.get(10)?),
    })
}
