//! A thin layer over the `postgres` client that reads like the SQLite
//! store's: `exec`, `row` (with `optional`), `rows`, arguments of the
//! few kinds testbot stores (integers, text, bytes) and typed column
//! reads. Every integer column is BIGINT, every flag a 0/1 BIGINT, every
//! JSON value TEXT, as in the SQLite schema, so the two stores' SQL stays
//! alike.

use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use std::collections::HashMap;

use ::postgres::Statement;

use super::super::{StoreError, StoreResult};

/// A query argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Vec<u8>),
    TextArray(Vec<String>),
    IntArray(Option<Vec<i64>>),
}

impl ToSql for Arg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            // PostgreSQL may infer a narrower type for a parameter (`$2 -
            // 1000` is an integer): the value must fit it.
            Arg::Int(Some(v)) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Arg::Int(Some(v)) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Arg::Int(v) => v.to_sql(ty, out),
            Arg::Text(v) => v.to_sql(ty, out),
            Arg::Bytes(v) => v.to_sql(ty, out),
            Arg::TextArray(v) => v.to_sql(ty, out),
            Arg::IntArray(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <i16 as ToSql>::accepts(ty)
            || <String as ToSql>::accepts(ty)
            || <Vec<u8> as ToSql>::accepts(ty)
            || <Vec<String> as ToSql>::accepts(ty)
            || <Vec<i64> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Arg {
                // Every value testbot stores fits; a larger one is kept at
                // the largest rather than wrapped.
                Arg::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        impl From<Option<$t>> for Arg {
            fn from(v: Option<$t>) -> Arg {
                Arg::Int(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        impl From<&$t> for Arg {
            fn from(v: &$t) -> Arg {
                Arg::from(*v)
            }
        }
    )*};
}
int_arg!(i64, i32, u32, u64, usize, u128);

impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Arg {
        Arg::Text(v.clone())
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Arg {
        Arg::Bytes(v.to_vec())
    }
}

/// Query arguments: `args![a, b]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        (&[$($crate::server::store::postgres::sql::Arg::from($v)),*]
            as &[$crate::server::store::postgres::sql::Arg])
    };
}
pub(crate) use args;

/// A row's columns, read as the types testbot stores.
pub(crate) struct PgRow<'a>(pub(crate) &'a ::postgres::Row);

pub(crate) trait FromCol: Sized {
    fn read(row: &::postgres::Row, i: usize) -> Result<Self, ::postgres::Error>;
}

macro_rules! int_col {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn read(row: &::postgres::Row, i: usize) -> Result<$t, ::postgres::Error> {
                let v: i64 = row.try_get(i)?;
                Ok(<$t>::try_from(v.max(0)).unwrap_or(<$t>::MAX))
            }
        }
        impl FromCol for Option<$t> {
            fn read(row: &::postgres::Row, i: usize) -> Result<Option<$t>, ::postgres::Error> {
                let v: Option<i64> = row.try_get(i)?;
                Ok(v.map(|v| <$t>::try_from(v.max(0)).unwrap_or(<$t>::MAX)))
            }
        }
    )*};
}
int_col!(u32, u64, usize);

impl FromCol for i64 {
    fn read(row: &::postgres::Row, i: usize) -> Result<i64, ::postgres::Error> {
        row.try_get(i)
    }
}
impl FromCol for Option<i64> {
    fn read(row: &::postgres::Row, i: usize) -> Result<Option<i64>, ::postgres::Error> {
        row.try_get(i)
    }
}
impl FromCol for String {
    fn read(row: &::postgres::Row, i: usize) -> Result<String, ::postgres::Error> {
        row.try_get(i)
    }
}
impl FromCol for Option<String> {
    fn read(row: &::postgres::Row, i: usize) -> Result<Option<String>, ::postgres::Error> {
        row.try_get(i)
    }
}
impl FromCol for Vec<u8> {
    fn read(row: &::postgres::Row, i: usize) -> Result<Vec<u8>, ::postgres::Error> {
        row.try_get(i)
    }
}

impl PgRow<'_> {
    pub(crate) fn get<T: FromCol>(&self, i: usize) -> Result<T, ::postgres::Error> {
        T::read(self.0, i)
    }
}

/// The `exec`/`row`/`rows` of the SQLite store, for any PostgreSQL client
/// or transaction.
pub(crate) trait Pg {
    fn exec(&mut self, sql: &str, args: &[Arg]) -> StoreResult<u64>;
    /// The first row, if any.
    fn row<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        f: impl FnOnce(&PgRow) -> Result<T, ::postgres::Error>,
    ) -> StoreResult<Option<T>>;
    fn rows<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        f: impl FnMut(&PgRow) -> Result<T, ::postgres::Error>,
    ) -> StoreResult<Vec<T>>;
    /// The one row the query must return.
    fn one<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        f: impl FnOnce(&PgRow) -> Result<T, ::postgres::Error>,
    ) -> StoreResult<T> {
        self.row(sql, args, f)?
            .ok_or_else(|| StoreError::Broken(anyhow::anyhow!("no row from: {sql}")))
    }
}

impl Arg {
    /// The parameter's type, given when the statement is prepared: no type
    /// for PostgreSQL to guess (`$2 - 1000` would make `$2` an integer).
    fn pg_type(&self) -> Type {
        match self {
            Arg::Int(_) => Type::INT8,
            Arg::Text(_) => Type::TEXT,
            Arg::Bytes(_) => Type::BYTEA,
            Arg::TextArray(_) => Type::TEXT_ARRAY,
            Arg::IntArray(_) => Type::INT8_ARRAY,
        }
    }
}

/// A pooled connection and the statements prepared on it, by their SQL.
pub(crate) struct Conn {
    pub(crate) client: ::postgres::Client,
    pub(crate) cache: HashMap<String, Statement>,
}

/// Makes the pool's connections.
pub(crate) struct Manager(pub(crate) ::postgres::Config);

impl r2d2_postgres::r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ::postgres::Error;

    fn connect(&self) -> Result<Conn, ::postgres::Error> {
        Ok(Conn {
            client: self.0.connect(::postgres::NoTls)?,
            cache: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ::postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// A transaction, with its connection's prepared statements: each query is
/// parsed and planned once per connection, not once per use.
pub(crate) struct Cx<'a> {
    pub(crate) tx: ::postgres::Transaction<'a>,
    pub(crate) cache: &'a mut HashMap<String, Statement>,
}

impl Cx<'_> {
    fn statement(&mut self, sql: &str, args: &[Arg]) -> Result<Statement, ::postgres::Error> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = args.iter().map(Arg::pg_type).collect();
        let s = self.tx.prepare_typed(sql, &types)?;
        self.cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Pg for Cx<'_> {
    fn exec(&mut self, sql: &str, args: &[Arg]) -> StoreResult<u64> {
        let stmt = self.statement(sql, args)?;
        Ok(self.tx.execute(&stmt, &refs(args))?)
    }

    fn row<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        f: impl FnOnce(&PgRow) -> Result<T, ::postgres::Error>,
    ) -> StoreResult<Option<T>> {
        let stmt = self.statement(sql, args)?;
        match self.tx.query_opt(&stmt, &refs(args))? {
            Some(r) => Ok(Some(f(&PgRow(&r))?)),
            None => Ok(None),
        }
    }

    fn rows<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        mut f: impl FnMut(&PgRow) -> Result<T, ::postgres::Error>,
    ) -> StoreResult<Vec<T>> {
        let stmt = self.statement(sql, args)?;
        let rows = self.tx.query(&stmt, &refs(args))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(f(&PgRow(r))?);
        }
        Ok(out)
    }
}

/// Whether the error is the connection's: closed, or failing to read or
/// write.
fn lost_connection(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error with its causes ("db error" alone says little).
pub(crate) fn said(e: &::postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        if e.as_db_error().is_none() && lost_connection(&e) {
            // The connection is gone or was never made: the database is
            // unreachable, not broken.
            return StoreError::Unavailable(format!(
                "the PostgreSQL database cannot be reached: {}",
                said(&e)
            ));
        }
        match e.code().map(|c| c.code()) {
            // Disk full, out of memory, too many connections, shutting down,
            // read-only transaction.
            Some(c) if c.starts_with("53") || c.starts_with("57") || c == "25006" => {
                StoreError::Unavailable(format!(
                    "the PostgreSQL database cannot be written: {}",
                    said(&e)
                ))
            }
            _ => StoreError::Broken(anyhow::Error::new(e).context("PostgreSQL")),
        }
    }
}

/// Whether `e` is PostgreSQL ending a transaction that may succeed when
/// run again: a deadlock (40P01) or a serialization failure (40001).
pub(crate) fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<::postgres::Error>())
        .filter_map(|p| p.code())
        .any(|c| matches!(c.code(), "40P01" | "40001"))
}

impl From<r2d2_postgres::r2d2::Error> for StoreError {
    fn from(e: r2d2_postgres::r2d2::Error) -> StoreError {
        StoreError::Unavailable(format!("no connection to the PostgreSQL database: {e}"))
    }
}

#[cfg(test)]
mod tests {
    /// A real deadlock between two transactions is what the store runs
    /// again; other errors are not.
    #[test]
    fn a_deadlock_is_transient() {
        let Some(url) = crate::server::store::conformance::fresh_postgres_url() else {
            return;
        };
        let connect = || ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut setup = connect();
        setup
            .batch_execute(
                "CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 0), (2, 0)",
            )
            .unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let run = |first: i32, second: i32| {
            let barrier = barrier.clone();
            let mut c = connect();
            std::thread::spawn(move || -> Result<(), ::postgres::Error> {
                let mut tx = c.transaction()?;
                tx.execute("UPDATE t SET n = n + 1 WHERE id = $1", &[&first])?;
                barrier.wait();
                tx.execute("UPDATE t SET n = n + 1 WHERE id = $1", &[&second])?;
                tx.commit()
            })
        };
        let (a, b) = (run(1, 2), run(2, 1));
        let results = [a.join().unwrap(), b.join().unwrap()];
        let failed: Vec<anyhow::Error> = results
            .into_iter()
            .filter_map(Result::err)
            .map(anyhow::Error::new)
            .collect();
        assert_eq!(failed.len(), 1, "one of the two is ended: {failed:?}");
        assert!(super::is_transient(&failed[0]), "{:#}", failed[0]);
        let other = setup
            .execute("SELECT * FROM missing_table", &[])
            .unwrap_err();
        assert!(!super::is_transient(&anyhow::Error::new(other)));
    }
}
