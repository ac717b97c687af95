//! What the tests of builds came to, read back: each test once per build
//! (`GET /api/v1/builds/{id}/tests`), tests by history (flaky, slow), and
//! retention of runs, queues and history. Written once for both backends
//! over `portable::Sql`; the queue itself is `test_queue`.

use std::collections::HashMap;

use super::portable::{count, one, vals, Sql};
use super::{StoreError, StoreResult};
use crate::time::rfc3339;
use crate::wire::*;

/// What `GET /api/v1/builds/{id}/tests` asks.
#[derive(Debug, Clone, Default)]
pub struct BuildTestsQuery {
    /// `failed`, `error`, `passed`, `skipped`, `flaky`, `pending`,
    /// `not_run` or `failing` (failed or error).
    pub outcome: Option<String>,
    /// One test by id.
    pub test: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// The outcomes a query may filter by.
pub const OUTCOME_FILTERS: &[&str] = &[
    "passed", "failed", "skipped", "error", "flaky", "pending", "not_run", "failing",
];

/// `GET /api/v1/builds/{id}/tests`.
pub(crate) fn build_tests(
    s: &mut dyn Sql,
    build: i64,
    q: &BuildTestsQuery,
) -> StoreResult<BuildTests> {
    if one(s, "SELECT id FROM builds WHERE id = $1", vals![build])?.is_none() {
        return Err(StoreError::not_found(format!("no build {build}")));
    }
    // Queues whose jobs all ended: what they still hold was never run.
    let mut queues: HashMap<i64, (String, Option<String>, bool)> = HashMap::new();
    for r in s.rows(
        "SELECT q.id, q.jobtype, q.repro, (SELECT COUNT(*) FROM jobs j WHERE \
         (j.queue_id = q.id OR j.id = q.id) AND j.state IN ('queued', 'running')) \
         FROM test_queues q WHERE q.build_id = $1",
        vals![build],
    )? {
        queues.insert(r[0].i(), (r[1].s(), r[2].text(), r[3].i() == 0));
    }
    let mut out = BuildTests {
        build,
        offset: q.offset,
        limit: q.limit,
        ..Default::default()
    };
    let mut ids: Vec<i64> = queues.keys().copied().collect();
    ids.sort_unstable();
    // Each queue is read in pages of its own; with few queues per build
    // (one per sharded jobtype and platform) this stays small.
    let mut matching: Vec<(u8, String, i64)> = Vec::new();
    for &queue in &ids {
        let ended = queues[&queue].2;
        for r in s.rows(
            "SELECT test, state, outcome, flaky FROM queue_tests WHERE queue_id = $1",
            vals![queue],
        )? {
            let (test, state, outcome, flaky) = (r[0].s(), r[1].s(), r[2].s(), r[3].i() == 1);
            let shown = shown_outcome(&state, &outcome, ended);
            let t = &mut out.totals;
            t.total += 1;
            match shown {
                "passed" => t.passed += 1,
                "failed" => t.failed += 1,
                "skipped" => t.skipped += 1,
                "error" => t.error += 1,
                "not_run" => t.not_run += 1,
                _ => t.pending += 1,
            }
            if flaky {
                t.flaky += 1;
            }
            let wanted = match q.outcome.as_deref() {
                None => true,
                Some("flaky") => flaky,
                Some("failing") => matches!(shown, "failed" | "error"),
                Some(o) => o == shown,
            } && q.test.as_ref().is_none_or(|id| *id == test);
            if wanted {
                let rank = match shown {
                    "failed" | "error" => 0,
                    _ if flaky => 1,
                    "pending" | "not_run" => 2,
                    _ => 3,
                };
                matching.push((rank, test, queue));
            }
        }
    }
    matching.sort();
    out.count = matching.len() as u64;
    let page = matching
        .into_iter()
        .skip(q.offset.min(usize::MAX as u64) as usize)
        .take(q.limit.min(usize::MAX as u64) as usize);
    for (_, test, queue) in page {
        let (jobtype, repro, ended) = &queues[&queue];
        let r = one(
            s,
            "SELECT state, outcome, flaky, duration_ms, message FROM queue_tests \
             WHERE queue_id = $1 AND test = $2",
            vals![queue, &test],
        )?
        .ok_or_else(|| StoreError::Broken(anyhow::anyhow!("test {test:?} vanished")))?;
        let runs = s
            .rows(
                "SELECT job_id, attempt, worker, outcome, duration_ms, message FROM test_runs \
                 WHERE queue_id = $1 AND test = $2 ORDER BY run",
                vals![queue, &test],
            )?
            .into_iter()
            .map(|r| TestRun {
                job: r[0].i(),
                attempt: r[1].u().min(u64::from(u32::MAX)) as u32,
                worker: r[2].s(),
                outcome: TestOutcome::parse(&r[3].s()).unwrap_or(TestOutcome::Error),
                duration_ms: r[4].u(),
                message: r[5].text(),
            })
            .collect();
        let (state, outcome) = (r[0].s(), r[1].s());
        let shown = shown_outcome(&state, &outcome, *ended);
        out.tests.push(BuildTest {
            repro: repro.as_deref().map(|t| repro_command(t, &test)),
            id: test,
            jobtype: jobtype.clone(),
            outcome: shown.to_string(),
            flaky: r[2].i() == 1,
            duration_ms: r[3].int().map(|m| m.max(0) as u64),
            message: r[4].text().filter(|_| shown != "passed"),
            runs,
        });
    }
    Ok(out)
}

fn shown_outcome<'a>(state: &str, outcome: &'a str, ended: bool) -> &'a str {
    match state {
        "done" => outcome,
        _ if ended => "not_run",
        _ => "pending",
    }
}

/// Which tests `GET /api/v1/tests/...` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsKind {
    Flaky,
    Slow,
}

pub(crate) fn stats(
    s: &mut dyn Sql,
    kind: StatsKind,
    jobtype: Option<&str>,
    limit: u64,
) -> StoreResult<Vec<TestStat>> {
    let sql = match kind {
        StatsKind::Flaky => {
            "SELECT jobtype, test, avg_ms, runs, failures, flaky, recent, last_seen FROM test_history \
             WHERE ($1 IS NULL OR jobtype = $1) AND flaky > 0 \
             ORDER BY flaky DESC, failures DESC, jobtype, test LIMIT $2"
        }
        StatsKind::Slow => {
            "SELECT jobtype, test, avg_ms, runs, failures, flaky, recent, last_seen FROM test_history \
             WHERE ($1 IS NULL OR jobtype = $1) AND avg_ms IS NOT NULL \
             ORDER BY avg_ms DESC, jobtype, test LIMIT $2"
        }
    };
    Ok(s.rows(sql, vals![jobtype, limit])?
        .into_iter()
        .map(|r| TestStat {
            jobtype: r[0].s(),
            id: r[1].s(),
            avg_ms: r[2].int().map(|m| m.max(0) as u64),
            runs: r[3].u(),
            failures: r[4].u(),
            flaky: r[5].u(),
            recent: r[6].s(),
            last_seen: rfc3339(r[7].i()),
        })
        .collect())
}

/// Before jobs are purged: drops their runs; returns the queues they were
/// in, for [`purge_queues`] once the jobs are gone.
pub(crate) fn purge_runs(s: &mut dyn Sql, jobs: &[i64]) -> StoreResult<Vec<i64>> {
    let mut queues = Vec::new();
    for &id in jobs {
        if let Some(r) = one(
            s,
            "SELECT COALESCE(queue_id, id) FROM jobs WHERE id = $1",
            vals![id],
        )? {
            queues.push(r[0].i());
        }
        s.exec("DELETE FROM test_runs WHERE job_id = $1", vals![id])?;
    }
    queues.sort_unstable();
    queues.dedup();
    Ok(queues)
}

/// Drops the queues none of whose jobs are left.
pub(crate) fn purge_queues(s: &mut dyn Sql, queues: &[i64]) -> StoreResult<()> {
    for &q in queues {
        if count(
            s,
            "SELECT COUNT(*) FROM jobs WHERE queue_id = $1 OR id = $1",
            vals![q],
        )? == 0
        {
            s.exec("DELETE FROM test_runs WHERE queue_id = $1", vals![q])?;
            s.exec("DELETE FROM queue_tests WHERE queue_id = $1", vals![q])?;
            s.exec("DELETE FROM test_queues WHERE id = $1", vals![q])?;
        }
    }
    Ok(())
}

/// Forgets the tests not seen since `before`.
pub(crate) fn prune_history(s: &mut dyn Sql, before: i64) -> StoreResult<u64> {
    s.exec(
        "DELETE FROM test_history WHERE last_seen < $1",
        vals![before],
    )
}
