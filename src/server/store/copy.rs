//! `testbot db copy`: a whole testbot database from SQLite to PostgreSQL or
//! back (or SQLite to SQLite, PostgreSQL to PostgreSQL), into an empty
//! target. Both schemas have the same tables and columns, so rows move as
//! they are: integers, text and bytes.

use anyhow::{bail, Context};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::postgres::sql::Arg;
use super::{PgStore, SqliteStore};
use crate::server::Database;

/// Every table of a testbot database and its columns, parents first.
const TABLES: &[(&str, &str)] = &[
    (
        "workers",
        "name, jobtypes, platforms, info, extra, slots, heartbeat_ms, lease_ms, version, \
         status, registered_at, last_seen, accept, drained, infra_streak, quarantines, \
         quarantined_until, token_hash, instance, host, last_strike_at",
    ),
    ("builds", "id, name, meta, extra, created_at"),
    (
        "jobs",
        "id, jobtype, state, priority, platform, params, timeout_ms, max_attempts, attempt, \
         worker, platform_index, matched_platform, build_id, shard_index, shard_total, \
         created_at, started_at, finished_at, lease_expires, cancel_requested, reason, result, \
         info, extra, retry_failed, reruns, failed_before, flaky_tests, shard_tests, \
         avoid_worker, avoid_until, claim_slot, claim_seq, queue_id",
    ),
    (
        "attempts",
        "job_id, attempt, worker, platform_index, started_at, finished_at, state, reason, \
         log_size, log_stored, tests_listed, tests_done",
    ),
    ("log_chunks", "job_id, attempt, pos, data"),
    ("settings", "name, value"),
    (
        "test_queues",
        "id, jobtype, build_id, shards, retry_failed, repro, created_at, pending_n, pending_ms, lists",
    ),
    (
        "queue_tests",
        "queue_id, test, seq, est_ms, est_known, state, job_id, attempt, avoid_job, runs, failures, \
         outcome, duration_ms, message, flaky, reserved_at",
    ),
    (
        "test_runs",
        "queue_id, test, run, job_id, attempt, worker, outcome, duration_ms, message, at",
    ),
    (
        "test_history",
        "jobtype, test, avg_ms, runs, failures, flaky, recent, last_seen",
    ),
    (
        "artifacts",
        "job_id, attempt, path, size, sha256, state, received, note, expires_at, created_at",
    ),
    ("artifact_garbage", "kind, name"),
    ("submit_keys", "key, digest, created_at, build_id, job_ids"),
];

/// Rows written in one transaction of the target.
const BATCH: usize = 500;

#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Val::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl Val {
    fn arg(&self) -> Arg {
        match self {
            Val::Null => Arg::Int(None),
            Val::Int(i) => Arg::Int(Some(*i)),
            Val::Text(t) => Arg::Text(Some(t.clone())),
            Val::Bytes(b) => Arg::Bytes(b.clone()),
        }
    }

    fn from_sqlite(v: ValueRef) -> anyhow::Result<Val> {
        Ok(match v {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(i) => Val::Int(i),
            ValueRef::Text(t) => Val::Text(String::from_utf8(t.to_vec())?),
            ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
            ValueRef::Real(r) => bail!("a real number ({r}) where testbot stores none"),
        })
    }

    fn from_pg(row: &::postgres::Row, i: usize) -> anyhow::Result<Val> {
        use ::postgres::types::Type;
        let ty = row.columns()[i].type_();
        Ok(if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?
                .map_or(Val::Null, Val::Int)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?
                .map_or(Val::Null, Val::Bytes)
        } else {
            row.try_get::<_, Option<String>>(i)?
                .map_or(Val::Null, Val::Text)
        })
    }
}

/// One end of a copy, its schema made current.
enum End {
    Sqlite(
        rusqlite::Connection,
        #[allow(dead_code)] crate::server::db_lock::DbLock,
    ),
    Pg(::postgres::Client),
}

impl End {
    fn open(db: &str, role: &str) -> anyhow::Result<End> {
        Ok(match Database::parse(db) {
            Database::Sqlite(path) => {
                if role == "from" && !path.exists() {
                    bail!("{}: no such file", path.display());
                }
                // No server may use the file meanwhile.
                let lock = crate::server::db_lock::take(&path, "(testbot db copy)")?;
                drop(SqliteStore::open(&path)?);
                let conn = rusqlite::Connection::open(&path)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                End::Sqlite(conn, lock)
            }
            Database::Postgres(url) => {
                drop(PgStore::open(&url)?);
                End::Pg(
                    ::postgres::Client::connect(&url, ::postgres::NoTls).with_context(|| {
                        format!("cannot connect to {}", super::postgres::redact(&url))
                    })?,
                )
            }
        })
    }

    fn count(&mut self, table: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT count(*) FROM {table}");
        Ok(match self {
            End::Sqlite(c, _) => c.query_row(&sql, [], |r| r.get(0))?,
            End::Pg(c) => c.query_one(&sql, &[])?.get(0),
        })
    }

    /// Calls `each` with every row of `table`, in primary-key order.
    fn read(
        &mut self,
        table: &str,
        cols: &str,
        mut each: impl FnMut(Vec<Val>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let n = cols.split(',').count();
        let sql = format!("SELECT {cols} FROM {table} ORDER BY 1, 2");
        match self {
            End::Sqlite(c, _) => {
                let mut stmt = c.prepare(&sql)?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let vals = (0..n)
                        .map(|i| Val::from_sqlite(r.get_ref(i)?))
                        .collect::<anyhow::Result<_>>()?;
                    each(vals)?;
                }
            }
            End::Pg(c) => {
                use ::postgres::fallible_iterator::FallibleIterator;
                let mut rows = c.query_raw(&sql, std::iter::empty::<i64>())?;
                while let Some(r) = rows.next()? {
                    let vals = (0..n)
                        .map(|i| Val::from_pg(&r, i))
                        .collect::<anyhow::Result<_>>()?;
                    each(vals)?;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, table: &str, cols: &str, rows: &[Vec<Val>]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = cols.split(',').count();
        match self {
            End::Sqlite(c, _) => {
                let marks = (1..=n)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let tx = c.transaction()?;
                {
                    let mut stmt =
                        tx.prepare(&format!("INSERT INTO {table} ({cols}) VALUES ({marks})"))?;
                    for r in rows {
                        stmt.execute(rusqlite::params_from_iter(r.iter()))?;
                    }
                }
                tx.commit()?;
            }
            End::Pg(c) => {
                let marks = (1..=n)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut tx = c.transaction()?;
                let stmt = tx.prepare(&format!("INSERT INTO {table} ({cols}) VALUES ({marks})"))?;
                for r in rows {
                    let args: Vec<Arg> = r.iter().map(Val::arg).collect();
                    let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> = args
                        .iter()
                        .map(|a| a as &(dyn ::postgres::types::ToSql + Sync))
                        .collect();
                    tx.execute(&stmt, &refs)?;
                }
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// After ids were written as they were: new rows must get new ones.
    fn after_copy(&mut self) -> anyhow::Result<()> {
        if let End::Pg(c) = self {
            for table in ["jobs", "builds"] {
                c.batch_execute(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                ))?;
            }
        }
        Ok(())
    }
}

/// What a copy moved, table by table.
pub struct Copied(pub Vec<(&'static str, u64)>);

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(t, n)| format!("{n} {t}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Copies the whole database `from` into the empty database `to`.
pub fn copy(from: &str, to: &str) -> anyhow::Result<Copied> {
    if Database::shown(from) == Database::shown(to) {
        bail!("--from and --to are the same database");
    }
    let mut src = End::open(from, "from").context("--from")?;
    let mut dst = End::open(to, "to").context("--to")?;
    for (table, _) in TABLES {
        let n = dst.count(table)?;
        if n > 0 {
            bail!(
                "--to {} is not empty ({n} rows in {table}); copy into a new database",
                Database::shown(to)
            );
        }
    }
    let mut copied = Vec::new();
    for (table, cols) in TABLES {
        let mut batch = Vec::with_capacity(BATCH);
        let mut n = 0u64;
        src.read(table, cols, |row| {
            batch.push(row);
            n += 1;
            if batch.len() == BATCH {
                dst.write(table, cols, &batch)?;
                batch.clear();
            }
            Ok(())
        })
        .with_context(|| format!("copying {table}"))?;
        dst.write(table, cols, &batch)
            .with_context(|| format!("copying {table}"))?;
        copied.push((table.replace('_', " ").leak() as &'static str, n));
    }
    dst.after_copy()?;
    Ok(Copied(copied))
}
