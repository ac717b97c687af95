//! The PostgreSQL backend, for several `testbot serve` replicas on one
//! database. Same traits and the same rules as the SQLite store; what
//! differs is how it stays right under concurrent writers:
//!
//! - claims pick queued jobs with `FOR UPDATE SKIP LOCKED`, so two
//!   replicas never hand one job to two workers, and take one with an
//!   update guarded by its state;
//! - every read-then-write locks what it read (`FOR UPDATE`), and a
//!   registration holds a per-name advisory lock;
//! - times come from the database's clock, so replicas agree on leases;
//! - the schema is created and migrated under an advisory lock, so replicas
//!   starting together do not race.
//!
//! The driver is `postgres` (the blocking face of `tokio-postgres`, by the
//! same authors) with an `r2d2` pool: the store's methods block and run on
//! tokio's blocking pool, like the SQLite store's.

use std::collections::BTreeMap;
use std::time::Duration;

use ::postgres::NoTls;
use anyhow::Context;
use r2d2_postgres::r2d2;

use super::*;
use crate::rules::{job as job_rules, worker as worker_rules};
use crate::server::explain::{self, WorkerView};
use crate::server::queue::{Claimant, QueueIndex, Queued};
use crate::time::rfc3339;

mod admin;
mod artifacts;
mod dispatch;
mod jobs;
mod logs;
mod rows;
mod schema;
pub(crate) mod sql;
mod test_queue;
mod workers;

use dispatch::*;
use rows::*;
use sql::{args, Pg};

/// Held while the schema is migrated (arbitrary keys of testbot's).
const MIGRATION_LOCK: i64 = 0x7465_7374_626f_7401;
/// Held by the one server that reaps leases, or purges, at a time.
pub(crate) const REAPER_LOCK: i64 = 0x7465_7374_626f_7402;
pub(crate) const RETENTION_LOCK: i64 = 0x7465_7374_626f_7403;

/// Whether this transaction is the one, across servers, to do the
/// background work `key` names now; the lock ends with the transaction.
pub(crate) fn first_of_servers(tx: &mut Tx, key: i64) -> StoreResult<bool> {
    tx.one("SELECT pg_try_advisory_xact_lock($1)", args![key], |r| {
        r.0.try_get::<_, bool>(0)
    })
}

type Pool = r2d2::Pool<sql::Manager>;
/// A transaction with its connection's prepared statements.
pub(crate) type Tx<'a> = sql::Cx<'a>;

pub struct PgStore {
    pub(crate) pool: Pool,
    /// For the connection that listens for other servers' changes.
    pub(crate) config: ::postgres::Config,
    /// The URL without its password, for messages.
    pub(crate) shown: String,
    pub(crate) log_cap: u64,
    /// Added to the database's clock: only tests move it, to let leases
    /// run out without waiting.
    pub(crate) skew: std::sync::atomic::AtomicI64,
    pub(crate) gens: std::sync::Arc<std::sync::Mutex<Gens>>,
    /// Idle workers' last heartbeat as written here: its info, status and
    /// time, and whether one came since that was not written yet.
    pub(crate) idle: std::sync::Mutex<std::collections::HashMap<String, IdleBeat>>,
    /// What wakes this server's held claims and waits (set by `listen`).
    pub(crate) wake: std::sync::OnceLock<std::sync::Arc<dyn Fn(super::Woken) + Send + Sync>>,
}

/// A URL as it may be shown: without a password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    /// Connects, and creates or migrates the schema.
    pub fn open(url: &str) -> anyhow::Result<PgStore> {
        let shown = redact(url);
        let mut config: ::postgres::Config = url
            .parse()
            .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
        // PostgreSQL's notices ("relation ... already exists, skipping"
        // from every server after the first) are not the operator's news.
        let options = config.get_options().unwrap_or("").to_string();
        config.options(format!("{options} -c client_min_messages=warning").trim());
        // One connection first: a wrong address or password is said at
        // once, not after the pool's retries.
        drop(
            config
                .connect(NoTls)
                .with_context(|| format!("cannot connect to the PostgreSQL database {shown}"))?,
        );
        let manager = sql::Manager(config.clone());
        let pool = r2d2::Pool::builder()
            // Failures are reported where a connection is asked for.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .max_size(16)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .with_context(|| format!("cannot connect to the PostgreSQL database {shown}"))?;
        let store = PgStore {
            pool,
            config,
            shown: shown.clone(),
            log_cap: super::sqlite::DEFAULT_LOG_CAP,
            skew: Default::default(),
            gens: Default::default(),
            idle: Default::default(),
            wake: Default::default(),
        };
        store
            .migrate()
            .with_context(|| format!("cannot set up the schema in {shown}"))?;
        Ok(store)
    }

    pub fn with_log_cap(mut self, cap: u64) -> PgStore {
        self.log_cap = cap.max(64 << 10);
        self
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get()?;
        let c = &mut conn.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let out = (|| -> anyhow::Result<()> {
            c.batch_execute("CREATE TABLE IF NOT EXISTS testbot_schema (version BIGINT NOT NULL)")?;
            let version: i64 = match c.query_opt("SELECT version FROM testbot_schema", &[])? {
                Some(r) => r.get(0),
                None => {
                    c.execute("INSERT INTO testbot_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            let known = schema::MIGRATIONS.len() as i64;
            if version > known {
                anyhow::bail!(
                    "the database has schema version {version}, newer than this testbot knows \
                     ({known}); use a newer testbot"
                );
            }
            let mut tx = c.transaction()?;
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(sql)
                    .with_context(|| format!("schema migration {}", i + 1))?;
            }
            tx.execute("UPDATE testbot_schema SET version = $1", &[&known])?;
            tx.commit()?;
            Ok(())
        })();
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        out
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`. `f` is
    /// given the database's clock (epoch milliseconds), the one all
    /// replicas share.
    pub(crate) fn with_tx<T>(
        &self,
        mut f: impl FnMut(&mut Tx, i64) -> StoreResult<T>,
    ) -> StoreResult<T> {
        // A transaction PostgreSQL ended for a deadlock (or a
        // serialization failure) changed nothing: run it again, a few
        // times, rather than fail the request as if the server were broken.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_tx(&mut f) {
                Err(StoreError::Broken(e)) if sql::is_transient(&e) => {
                    if tries >= TX_TRIES {
                        return Err(StoreError::Unavailable(format!(
                            "the PostgreSQL database is busy: {e:#} ({tries} tries); try again"
                        )));
                    }
                    tracing::debug!("transaction retried: {e:#}");
                    std::thread::sleep(Duration::from_millis(2 * tries));
                }
                out => return out,
            }
        }
    }

    fn try_tx<T>(&self, f: &mut impl FnMut(&mut Tx, i64) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.pool.get()?;
        let sql::Conn { client, cache } = &mut *conn;
        let mut tx = sql::Cx {
            tx: client.transaction()?,
            cache,
        };
        let now = self.now(&mut tx)?;
        let out = f(&mut tx, now)?;
        tx.tx.commit()?;
        Ok(out)
    }

    /// Runs reads `f` in one transaction (one snapshot), rolled back.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnMut(&mut Tx, i64) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.with_tx(f)
    }
}

/// An idle worker's heartbeat as this server last wrote it.
pub(crate) struct IdleBeat {
    pub(crate) info: String,
    pub(crate) status: &'static str,
    pub(crate) written: std::time::Instant,
    /// One came since that is not written yet.
    pub(crate) pending: bool,
}

/// How many times a transaction PostgreSQL ended for a deadlock is run.
const TX_TRIES: u64 = 4;

/// How long an unchanged idle heartbeat is only noted in memory: after
/// that it is written again in full, in case the worker spoke to another
/// server meanwhile.
pub(crate) const IDLE_REWRITE: Duration = Duration::from_secs(30);

/// The channel on which a server tells the others that something they may
/// wait on changed.
const CHANNEL: &str = "testbot_changes";

/// What a server tells the others (and itself) when a transaction commits.
pub(crate) enum Change<'a> {
    /// A job of this jobtype was queued (submitted, or queued again).
    Queued(&'a str),
    /// What some worker may claim changed otherwise (undrained).
    Claims,
    /// A job was canceled: held heartbeats look again (its worker may be
    /// held on another server); claims need not. Logs are not announced:
    /// NOTIFY serializes the commits that carry it, and followers on other
    /// servers look again every second anyway.
    Events,
    /// A job ended: waits on it (`submit --wait`, `testbot wait`, pages)
    /// answer at once on every server, not at their next look a second
    /// later; claims and heartbeats are not woken for it.
    Ended,
}

/// The payload of [`Change::Ended`].
const ENDED: &str = "f";

/// Tells every server on the database (this one too), when `tx` commits.
pub(crate) fn notify(tx: &mut Tx, change: Change) -> StoreResult<()> {
    let payload = match change {
        Change::Queued(jobtype) => format!("q:{jobtype}"),
        Change::Claims => "*".to_string(),
        Change::Events => "e".to_string(),
        Change::Ended => ENDED.to_string(),
    };
    tx.exec("SELECT pg_notify($1, $2)", args![CHANNEL, payload])?;
    Ok(())
}

/// Counts of what was queued, by jobtype, as this server has heard of it,
/// so that a held claim asks the database only when something it could
/// take may have come ([`Workers::may_claim`]).
#[derive(Default)]
pub(crate) struct Gens {
    any: u64,
    by_jobtype: std::collections::HashMap<String, u64>,
    /// Worker -> (its jobtypes, the stamp when a claim last found nothing;
    /// `None`: ask the database).
    workers: std::collections::HashMap<String, (Vec<String>, Option<u64>)>,
}

impl Gens {
    pub(crate) fn heard(&mut self, payload: &str) {
        match payload.strip_prefix("q:") {
            Some(jobtype) => *self.by_jobtype.entry(jobtype.to_string()).or_default() += 1,
            None if payload == "*" => self.any += 1,
            None => {}
        }
    }

    /// Grows whenever something any of `jobtypes` could take may have come.
    pub(crate) fn stamp(&self, jobtypes: &[String]) -> u64 {
        jobtypes
            .iter()
            .filter_map(|j| self.by_jobtype.get(j))
            .fold(self.any, |a, n| a.wrapping_add(*n))
    }

    pub(crate) fn stamp_of(&self, worker: &str) -> Option<u64> {
        self.workers.get(worker).map(|(j, _)| self.stamp(j))
    }

    /// After a claim: `found_nothing_at` is the stamp taken before it when
    /// it found nothing, `None` otherwise.
    pub(crate) fn claimed(
        &mut self,
        worker: &str,
        jobtypes: Vec<String>,
        found_nothing_at: Option<u64>,
    ) {
        self.workers
            .insert(worker.to_string(), (jobtypes, found_nothing_at));
    }

    pub(crate) fn may_claim(&self, worker: &str) -> bool {
        match self.workers.get(worker) {
            Some((jobtypes, Some(seen))) => self.stamp(jobtypes) != *seen,
            _ => true,
        }
    }
}

impl PgStore {
    /// Listens on a connection of its own, calling `wake` for each change
    /// another server (or this one) announced; reconnects when it drops,
    /// waking once then, as changes may have been missed.
    pub(crate) fn listen(&self, wake: std::sync::Arc<dyn Fn(super::Woken) + Send + Sync>) {
        use ::postgres::fallible_iterator::FallibleIterator;
        let config = self.config.clone();
        let shown = self.shown.clone();
        let gens = self.gens.clone();
        let _ = self.wake.set(wake.clone());
        let spawned = std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || {
                // An outage is said once, and its end.
                let mut failing = false;
                loop {
                    let listening = config.connect(NoTls).and_then(|mut c| {
                        c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                        Ok(c)
                    });
                    match listening {
                        Ok(mut c) => {
                            if std::mem::take(&mut failing) {
                                tracing::info!(db = %shown, "listening for changes again");
                            }
                            // Changes may have gone unheard meanwhile.
                            gens.lock().unwrap_or_else(|e| e.into_inner()).heard("*");
                            wake(super::Woken::Anything);
                            let mut n = c.notifications();
                            let mut it = n.blocking_iter();
                            while let Ok(Some(n)) = it.next() {
                                if n.payload() == ENDED {
                                    wake(super::Woken::JobEnded);
                                    continue;
                                }
                                gens.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .heard(n.payload());
                                wake(super::Woken::Anything);
                            }
                            tracing::warn!(db = %shown, "lost the connection that listens for changes; reconnecting");
                        }
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(
                                db = %shown,
                                "cannot listen for changes: {}; trying again every second",
                                sql::said(&e)
                            );
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the thread that listens for changes: {e}");
        }
    }
}

impl PgStore {
    /// The database's clock, in epoch milliseconds.
    fn now(&self, c: &mut impl Pg) -> StoreResult<i64> {
        let now: i64 = c.one(
            "SELECT (extract(epoch from clock_timestamp()) * 1000)::BIGINT",
            args![],
            |r| r.get(0),
        )?;
        Ok(now.saturating_add(self.skew.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Moves this store's clock on by `ms` (tests only: leases that run
    /// out without waiting).
    #[doc(hidden)]
    pub fn advance_clock(&self, ms: i64) {
        self.skew
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_claim_that_found_nothing_waits_for_news_of_its_jobtypes() {
        let mut g = super::Gens::default();
        let unit = vec!["unit".to_string()];
        assert!(g.may_claim("w"), "an unknown worker asks the database");
        let before = g.stamp_of("w");
        g.claimed("w", unit.clone(), before.filter(|_| true));
        assert!(
            g.may_claim("w"),
            "no stamp before its first claim: ask again"
        );
        let stamp = g.stamp_of("w");
        g.claimed("w", unit.clone(), stamp);
        assert!(!g.may_claim("w"));
        g.heard("q:lint");
        g.heard("e");
        assert!(
            !g.may_claim("w"),
            "news of other jobtypes and events is not its"
        );
        g.heard("q:unit");
        assert!(g.may_claim("w"));
        let stamp = g.stamp_of("w");
        g.claimed("w", unit, stamp);
        g.heard("*");
        assert!(g.may_claim("w"), "an undrain anywhere makes everyone look");
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            super::redact("postgres://tb:secret@db:5432/tb"),
            "postgres://tb:***@db:5432/tb"
        );
        assert_eq!(super::redact("postgres://tb@db/tb"), "postgres://tb@db/tb");
        assert_eq!(super::redact("host=/tmp dbname=x"), "host=/tmp dbname=x");
    }
}
