//! Summary, metrics, retention and storage health on PostgreSQL. Backups
//! are PostgreSQL's own (`pg_dump`).

use super::sql::Arg;
use super::*;
use crate::server::store::test_results as tr;

impl Admin for PgStore {
    fn summary(&self, _now: i64) -> StoreResult<Summary> {
        let (workers, jobs) = self.with_conn(|c, now| {
            let workers = load_workers(c, now, None)?;
            let mut jobs: BTreeMap<String, u64> = JobState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
            for (s, n) in c.rows(
                "SELECT state, count(*) FROM jobs GROUP BY state",
                args![],
                |r| Ok((r.get::<String>(0)?, r.get::<u64>(1)?)),
            )? {
                jobs.insert(s, n);
            }
            Ok((workers, jobs))
        })?;
        Ok(Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: count_workers(&workers),
            jobs,
            builds: self.builds(&BuildFilter {
                limit: 5,
                ..Default::default()
            })?,
        })
    }

    fn gauges(&self, now: i64) -> StoreResult<Gauges> {
        let summary = self.summary(now)?;
        self.with_conn(|c, now| {
            let jobs = c.rows(
                "SELECT jobtype, state, count(*) FROM jobs GROUP BY jobtype, state ORDER BY 1, 2",
                args![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let oldest_queued = c.rows(
                "SELECT jobtype, min(created_at) FROM jobs WHERE state = 'queued' \
                 GROUP BY jobtype ORDER BY 1",
                args![],
                |r| {
                    Ok((
                        r.get(0)?,
                        now.saturating_sub(r.get::<i64>(1)?).max(0) as f64 / 1000.0,
                    ))
                },
            )?;
            let log_bytes: u64 = c.one(
                "SELECT coalesce(sum(log_stored), 0)::BIGINT FROM attempts",
                args![],
                |r| r.get(0),
            )?;
            Ok(Gauges {
                summary: summary.clone(),
                jobs,
                oldest_queued,
                log_bytes,
            })
        })
    }

    fn purge_finished(&self, before: i64, batch: usize) -> StoreResult<usize> {
        self.with_tx(|tx, _| {
            if !first_of_servers(tx, RETENTION_LOCK)? {
                return Ok(0);
            }
            let ids: Vec<i64> = tx.rows(
                "SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') \
                 AND finished_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                args![before, batch],
                |r| r.get(0),
            )?;
            tr::prune_history(tx, before)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let queues = tr::purge_runs(tx, &ids)?;
            for id in &ids {
                crate::server::store::artifacts::discard_job(tx, *id)?;
            }
            let list = [Arg::IntArray(Some(ids.clone()))];
            for table in ["log_chunks", "attempts"] {
                tx.exec(
                    &format!("DELETE FROM {table} WHERE job_id = ANY($1)"),
                    &list,
                )?;
            }
            tx.exec("DELETE FROM jobs WHERE id = ANY($1)", &list)?;
            tr::purge_queues(tx, &queues)?;
            tx.exec(
                "DELETE FROM builds WHERE created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.build_id = builds.id)",
                args![before],
            )?;
            Ok(ids.len())
        })
    }

    fn backup_to(&self, _path: &Path) -> StoreResult<()> {
        Err(StoreError::Conflict(format!(
            "this server keeps its state in PostgreSQL ({}); back it up with pg_dump \
             (for example `pg_dump --format=custom --file=testbot.dump DBNAME`)",
            self.shown
        )))
    }

    fn storage_problem(&self, _now: i64) -> Option<String> {
        // Answered within two seconds: a health probe must not hang on a
        // database that is gone.
        let probe = self
            .pool
            .get_timeout(std::time::Duration::from_secs(2))
            .map_err(StoreError::from)
            .and_then(|mut c| {
                c.client.simple_query("SELECT 1")?;
                Ok(())
            });
        match probe {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    fn check_storage(&self) {}

    fn watch_changes(&self, wake: std::sync::Arc<dyn Fn(super::super::Woken) + Send + Sync>) {
        self.listen(wake);
    }
}
