//! Summary, metrics, retention, backup and storage health.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::*;
use crate::server::store::test_results as tr;

impl Admin for SqliteStore {
    fn in_process(&self) -> bool {
        true
    }
    fn summary(&self, now: i64) -> StoreResult<Summary> {
        // Counting needs only each worker's status: one query, not a full
        // record (with its running jobs) per worker.
        let workers = self.with_conn(|c| load_workers(c, now, None))?;
        let counts = count_workers(&workers);
        let jobs = self.with_conn(|c| {
            let mut jobs: BTreeMap<String, u64> = JobState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
            let mut stmt = c.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
                let (s, n) = row?;
                jobs.insert(s, n);
            }
            Ok(jobs)
        })?;
        Ok(Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: counts,
            jobs,
            builds: self.builds(&BuildFilter {
                limit: 5,
                ..Default::default()
            })?,
        })
    }

    fn gauges(&self, now: i64) -> StoreResult<Gauges> {
        let summary = self.summary(now)?;
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT jobtype, state, count(*) FROM jobs GROUP BY jobtype, state ORDER BY 1, 2",
            )?;
            let jobs = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare_cached(
                "SELECT jobtype, min(created_at) FROM jobs WHERE state = 'queued' GROUP BY jobtype ORDER BY 1",
            )?;
            let oldest_queued = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, (now - r.get::<_, i64>(1)?).max(0) as f64 / 1000.0))
                })?
                .collect::<Result<_, _>>()?;
            let log_bytes: i64 =
                c.row("SELECT coalesce(sum(log_stored), 0) FROM attempts", [], |r| r.get(0))?;
            Ok(Gauges {
                summary,
                jobs,
                oldest_queued,
                log_bytes: log_bytes as u64,
            })
        })
    }

    fn purge_finished(&self, before: i64, batch: usize) -> StoreResult<usize> {
        let n = self.with_tx(|tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') \
                     AND finished_at < ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![before, batch as i64], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut lite = super::test_queue::Lite(tx);
            tr::prune_history(&mut lite, before)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let queues = tr::purge_runs(&mut lite, &ids)?;
            for id in &ids {
                crate::server::store::artifacts::discard_job(&mut lite, *id)?;
            }
            let list = serde_json::to_string(&ids)?;
            for table in ["log_chunks", "attempts"] {
                tx.exec(
                    &format!(
                        "DELETE FROM {table} WHERE job_id IN (SELECT value FROM json_each(?1))"
                    ),
                    [&list],
                )?;
            }
            tx.exec(
                "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
                [&list],
            )?;
            tr::purge_queues(&mut super::test_queue::Lite(tx), &queues)?;
            tx.exec(
                "DELETE FROM builds WHERE created_at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.build_id = builds.id)",
                [before],
            )?;
            Ok(ids.len())
        })?;
        if n > 0 {
            self.with_conn(|c| {
                c.execute_batch("PRAGMA incremental_vacuum(2000)")?;
                Ok(())
            })?;
        }
        Ok(n)
    }

    fn backup_to(&self, path: &Path) -> StoreResult<()> {
        // A connection of its own: in WAL mode its read does not block the
        // API's writes, and copying every page in one step cannot be
        // restarted by them.
        let src = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut dst = Connection::open(path)?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(())
    }

    fn storage_problem(&self, now: i64) -> Option<String> {
        if self.health.wrote_within(Duration::from_secs(1)) {
            return self.health.problem();
        }
        let _ = self.with_tx(|tx| {
            tx.exec(
                "INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, ?1)",
                [now],
            )?;
            Ok(())
        });
        self.health.problem()
    }

    fn check_storage(&self) {
        self.health.check_file();
    }
}
