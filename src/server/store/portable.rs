//! SQL that both backends run alike: values of the few kinds testbot
//! stores (`V`), the `Sql` trait each backend implements for its
//! transaction, and small helpers. The test queue and artifact metadata
//! are written once over it. The SQL must read the same on SQLite and
//! PostgreSQL: `$N` parameters first used in order (SQLite numbers them by
//! first appearance), integers and text only.

use super::StoreResult;

/// A query argument or a column's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Int(Option<i64>),
    Text(Option<String>),
}

impl V {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            V::Int(i) => *i,
            V::Text(t) => t.as_deref().and_then(|t| t.parse().ok()),
        }
    }
    pub(crate) fn i(&self) -> i64 {
        self.int().unwrap_or(0)
    }
    pub(crate) fn u(&self) -> u64 {
        self.int().map(|i| i.max(0) as u64).unwrap_or(0)
    }
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            V::Text(t) => t.clone(),
            V::Int(i) => i.map(|i| i.to_string()),
        }
    }
    pub(crate) fn s(&self) -> String {
        self.text().unwrap_or_default()
    }
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::Int(Some(v))
    }
}
impl From<u32> for V {
    fn from(v: u32) -> V {
        V::Int(Some(i64::from(v)))
    }
}
impl From<u64> for V {
    fn from(v: u64) -> V {
        V::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<Option<i64>> for V {
    fn from(v: Option<i64>) -> V {
        V::Int(v)
    }
}
impl From<&str> for V {
    fn from(v: &str) -> V {
        V::Text(Some(v.to_string()))
    }
}
impl From<&String> for V {
    fn from(v: &String) -> V {
        V::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for V {
    fn from(v: Option<&str>) -> V {
        V::Text(v.map(str::to_string))
    }
}

/// Query arguments: `vals![a, b]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::server::store::portable::V::from($v)),*] as &[$crate::server::store::portable::V]
    };
}
pub(crate) use vals;

/// One transaction of either backend.
pub(crate) trait Sql {
    fn exec(&mut self, sql: &str, args: &[V]) -> StoreResult<u64>;
    fn rows(&mut self, sql: &str, args: &[V]) -> StoreResult<Vec<Vec<V>>>;
    /// The first `max` rows only. Not a `LIMIT $N` in the shared SQL:
    /// SQLite plans such a statement anew whenever `N` changes.
    fn rows_upto(&mut self, sql: &str, args: &[V], max: usize) -> StoreResult<Vec<Vec<V>>>;
}

pub(crate) fn one(s: &mut dyn Sql, sql: &str, args: &[V]) -> StoreResult<Option<Vec<V>>> {
    Ok(s.rows(sql, args)?.into_iter().next())
}

pub(crate) fn count(s: &mut dyn Sql, sql: &str, args: &[V]) -> StoreResult<u64> {
    Ok(one(s, sql, args)?.map(|r| r[0].u()).unwrap_or(0))
}
