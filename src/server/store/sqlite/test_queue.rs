//! The test queue on SQLite: the shared SQL (`store::test_queue`) run on
//! this backend's transactions.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::*;
use crate::server::store::portable::{Sql, V};
use crate::server::store::test_queue as tq;
use crate::server::store::test_results as tr;

impl rusqlite::ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            V::Int(Some(i)) => ToSqlOutput::from(*i),
            V::Text(Some(t)) => ToSqlOutput::from(t.as_str()),
            V::Int(None) | V::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

/// A connection (in a transaction) speaking the shared SQL. SQLite reads
/// `$1` as a named parameter and numbers parameters by first appearance,
/// so the shared SQL first uses `$1`, then `$2`, and so on (checked in
/// debug builds): the text goes to SQLite as it is.
pub(crate) struct Lite<'a>(pub(crate) &'a Connection);

/// Whether the `$N` parameters of `sql` first appear in the order 1, 2, 3...
fn in_order(sql: &str) -> bool {
    let mut seen = 0u32;
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = digits.parse::<u32>() else {
            continue;
        };
        if n > seen + 1 {
            return false;
        }
        seen = seen.max(n);
    }
    true
}

impl Sql for Lite<'_> {
    fn exec(&mut self, sql: &str, args: &[V]) -> StoreResult<u64> {
        debug_assert!(in_order(sql), "parameters out of order: {sql}");
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn rows(&mut self, sql: &str, args: &[V]) -> StoreResult<Vec<Vec<V>>> {
        self.rows_upto(sql, args, usize::MAX)
    }

    fn rows_upto(&mut self, sql: &str, args: &[V], max: usize) -> StoreResult<Vec<Vec<V>>> {
        debug_assert!(in_order(sql), "parameters out of order: {sql}");
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(r) = rows.next()? else {
                break;
            };
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

    fn build_tests(&self, build: i64, q: &tr::BuildTestsQuery) -> StoreResult<BuildTests> {
        self.with_conn(|c| tr::build_tests(&mut Lite(c), build, q))
    }

    fn test_stats(
        &self,
        kind: tr::StatsKind,
        jobtype: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<TestStat>> {
        self.with_conn(|c| tr::stats(&mut Lite(c), kind, jobtype, limit))
    }

    fn shard_known(&self, job: i64) -> StoreResult<Vec<String>> {
        self.with_conn(|c| tq::shard_known(&mut Lite(c), job))
    }

    fn job_token_key(&self, fresh: &str) -> StoreResult<String> {
        self.with_tx(|tx| tq::token_key(&mut Lite(tx), fresh))
    }

    #[cfg(test)]
    fn check_test_queue(&self, queue: i64) -> StoreResult<()> {
        self.with_conn(|c| tq::check_counts(&mut Lite(c), queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_must_first_appear_in_order() {
        assert!(in_order("SELECT $1, $2, $1, $3"));
        assert!(!in_order("SELECT $2, $1"));
        assert!(!in_order("VALUES ($1, CASE WHEN $3 = 1 THEN $2 END)"));
        // Numbered as SQLite numbers them: by first appearance.
        let c = Connection::open_in_memory().unwrap();
        let got = Lite(&c)
            .rows("SELECT $1 - $2, $1", &[V::from(10i64), V::from(3i64)])
            .unwrap();
        assert_eq!(got, vec![vec![V::Int(Some(7)), V::Int(Some(10))]]);
    }
}
