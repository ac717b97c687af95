//! The test queue on PostgreSQL: the shared SQL (`store::test_queue`) run
//! on this backend's transactions.

use ::postgres::types::Type;

use super::sql::{Arg, Cx};
use super::*;
use crate::server::store::portable::{Sql, V};
use crate::server::store::test_queue as tq;
use crate::server::store::test_results as tr;

fn arg(v: &V) -> Arg {
    match v {
        V::Int(i) => Arg::Int(*i),
        V::Text(t) => Arg::Text(t.clone()),
    }
}

impl Sql for Cx<'_> {
    fn exec(&mut self, sql: &str, args: &[V]) -> StoreResult<u64> {
        let args: Vec<Arg> = args.iter().map(arg).collect();
        Pg::exec(self, sql, &args)
    }

    fn rows_upto(&mut self, sql: &str, args: &[V], max: usize) -> StoreResult<Vec<Vec<V>>> {
        let mut all = args.to_vec();
        all.push(V::from(max.min(i64::MAX as usize) as i64));
        let sql = format!("{sql} LIMIT ${}", all.len());
        Sql::rows(self, &sql, &all)
    }

    fn rows(&mut self, sql: &str, args: &[V]) -> StoreResult<Vec<Vec<V>>> {
        let args: Vec<Arg> = args.iter().map(arg).collect();
        Pg::rows(self, sql, &args, |r| {
            let row = r.0;
            let mut out = Vec::with_capacity(row.len());
            for (i, col) in row.columns().iter().enumerate() {
                let t = col.type_();
                out.push(if *t == Type::INT8 {
                    V::Int(row.try_get::<_, Option<i64>>(i)?)
                } else if *t == Type::INT4 {
                    V::Int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
                } else if *t == Type::INT2 {
                    V::Int(row.try_get::<_, Option<i16>>(i)?.map(i64::from))
                } else {
                    V::Text(row.try_get::<_, Option<String>>(i)?)
                });
            }
            Ok(out)
        })
    }
}

impl TestQueue for PgStore {
    fn tests_next(
        &self,
        job: i64,
        attempt: u32,
        req: &TestsNext,
        _now: i64,
    ) -> StoreResult<tq::Step> {
        self.with_tx(|tx, now| tq::next(tx, job, attempt, req, now))
    }

    fn tests_report(
        &self,
        job: i64,
        attempt: u32,
        results: &[TestResult],
        _now: i64,
    ) -> StoreResult<TestsReported> {
        self.with_tx(|tx, now| tq::report(tx, job, attempt, results, now))
    }

    fn tests_finish(&self, job: i64, attempt: u32) -> StoreResult<JobTests> {
        self.with_tx(|tx, _| tq::finish(tx, job, attempt))
    }

    fn build_tests(&self, build: i64, q: &tr::BuildTestsQuery) -> StoreResult<BuildTests> {
        self.with_conn(|tx, _| tr::build_tests(tx, build, q))
    }

    fn test_stats(
        &self,
        kind: tr::StatsKind,
        jobtype: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<TestStat>> {
        self.with_conn(|tx, _| tr::stats(tx, kind, jobtype, limit))
    }

    fn shard_known(&self, job: i64) -> StoreResult<Vec<String>> {
        self.with_conn(|tx, _| tq::shard_known(tx, job))
    }

    fn job_token_key(&self, fresh: &str) -> StoreResult<String> {
        self.with_tx(|tx, _| tq::token_key(tx, fresh))
    }

    #[cfg(test)]
    fn check_test_queue(&self, queue: i64) -> StoreResult<()> {
        self.with_conn(|tx, _| tq::check_counts(tx, queue))
    }
}
