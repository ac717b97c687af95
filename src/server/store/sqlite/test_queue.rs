//! The test queue on SQLite: the shared SQL (`store::test_queue`) run on
//! this backend's transactions.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::*;
use crate::server::store::test_queue::{self as tq, Sql, V};

impl rusqlite::ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            V::Int(Some(i)) => ToSqlOutput::from(*i),
            V::Text(Some(t)) => ToSqlOutput::from(t.as_str()),
            V::Int(None) | V::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

/// A connection (in a transaction) speaking the shared SQL: `$N` is
/// SQLite's `?N`.
pub(crate) struct Lite<'a>(pub(crate) &'a Connection);

impl Sql for Lite<'_> {
    fn exec(&mut self, sql: &str, args: &[V]) -> StoreResult<u64> {
        let mut stmt = self.0.prepare_cached(&sql.replace('$', "?"))?;
        Ok(stmt.execute(rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn rows(&mut self, sql: &str, args: &[V]) -> StoreResult<Vec<Vec<V>>> {
        let mut stmt = self.0.prepare_cached(&sql.replace('$', "?"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Integer(v) => V::Int(Some(v)),
                    ValueRef::Real(v) => V::Int(Some(v as i64)),
                    ValueRef::Text(t) => V::Text(Some(String::from_utf8_lossy(t).into_owned())),
                    ValueRef::Blob(b) => V::Text(Some(String::from_utf8_lossy(b).into_owned())),
                    ValueRef::Null => V::Int(None),
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}

impl TestQueue for SqliteStore {
    fn tests_next(
        &self,
        job: i64,
        attempt: u32,
        req: &TestsNext,
        now: i64,
    ) -> StoreResult<tq::Step> {
        self.with_tx(|tx| tq::next(&mut Lite(tx), job, attempt, req, now))
    }

    fn tests_report(
        &self,
        job: i64,
        attempt: u32,
        results: &[TestResult],
        now: i64,
    ) -> StoreResult<TestsReported> {
        self.with_tx(|tx| tq::report(&mut Lite(tx), job, attempt, results, now))
    }

    fn tests_finish(&self, job: i64, attempt: u32) -> StoreResult<JobTests> {
        self.with_tx(|tx| tq::finish(&mut Lite(tx), job, attempt))
    }

    fn build_tests(&self, build: i64, q: &tq::BuildTestsQuery) -> StoreResult<BuildTests> {
        self.with_conn(|c| tq::build_tests(&mut Lite(c), build, q))
    }

    fn test_stats(
        &self,
        kind: tq::StatsKind,
        jobtype: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<TestStat>> {
        self.with_conn(|c| tq::stats(&mut Lite(c), kind, jobtype, limit))
    }

    fn shard_known(&self, job: i64) -> StoreResult<Vec<String>> {
        self.with_conn(|c| tq::shard_known(&mut Lite(c), job))
    }

    fn job_token_key(&self, fresh: &str) -> StoreResult<String> {
        self.with_tx(|tx| tq::token_key(&mut Lite(tx), fresh))
    }
}
