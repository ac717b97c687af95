//! The SQLite backend: one file, one writer connection, WAL checkpointed in
//! batches on a thread of its own (commits seldom wait on fsync), and the
//! in-memory queue index kept beside it. Split by concern like the traits it
//! implements; the decisions are `crate::rules`'.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, Row, Transaction};

use super::*;
use crate::rules::{job as job_rules, worker as worker_rules};
use crate::server::explain::{self, WorkerView};
use crate::server::metrics::Gauges;
use crate::server::queue::{Claimant, QueueIndex, Queued};
use crate::time::rfc3339;

mod admin;
mod artifacts;
mod dispatch;
mod jobs;
mod logs;
mod rows;
mod schema;
mod test_queue;
mod workers;

use super::common::*;
use dispatch::*;
use rows::*;
use schema::MIGRATIONS;

pub struct SqliteStore {
    pub(crate) conn: Mutex<Connection>,
    /// The queued jobs in dispatch order. Lock order: `queue` before
    /// `conn` when both are held; otherwise `conn` is released first.
    pub(crate) queue: Mutex<QueueIndex>,
    /// What idle workers last said, so that an unchanged idle heartbeat is
    /// only noted in memory and written with others once a second.
    pub(crate) seen: Mutex<std::collections::HashMap<String, Seen>>,
    /// Worker name -> (jobtypes, drains itself), for [`Store::may_claim`].
    pub(crate) claimants: Mutex<std::collections::HashMap<String, (Vec<String>, bool)>>,
    pub(crate) path: std::path::PathBuf,
    /// The most log bytes kept per attempt; past it the start and the end
    /// are kept and the middle is cut.
    pub(crate) log_cap: u64,
    /// What the checkpointer thread waits on.
    pub(crate) wal: Arc<(Mutex<WalState>, Condvar)>,
    /// Whether the database can be written, and why not.
    pub(crate) health: crate::server::store_health::Health,
    /// Workers whose heartbeats came while the database could not be
    /// written: their leases are renewed before any expires once it can.
    pub(crate) outage_heartbeats: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
pub(crate) struct WalState {
    /// Commits since the last checkpoint began.
    pub(crate) pending: u32,
    /// Commits since a checkpoint last caught up with the whole WAL.
    pub(crate) commits: u32,
}

/// The background checkpoint runs once this many commits have gathered,
/// or once writes pause for [`CHECKPOINT_QUIET`]. Not after every burst:
/// a checkpoint that copies the whole WAL makes the next commit start the
/// WAL over, and that commit then waits for an fsync of the WAL's header
/// (0.6 ms on the development machine's disk, far more on slow ones), so
/// a submit after every short pause paid one.
pub(crate) const CHECKPOINT_COMMITS: u32 = 200;
pub(crate) const CHECKPOINT_QUIET: Duration = Duration::from_secs(10);

/// After this many commits without a complete checkpoint, the writer
/// checkpoints itself (see [`SqliteStore::note_commit`]).
pub(crate) const WRITER_CHECKPOINT_COMMITS: u32 = 1000;

/// A PASSIVE checkpoint; when it copied the whole WAL, the next write
/// starts the WAL over, and the count of commits since starts again.
pub(crate) fn checkpoint(conn: &Connection, wal: &(Mutex<WalState>, Condvar)) {
    match conn.row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, log, copied)) if log == copied => {
            wal.0.lock().unwrap_or_else(|e| e.into_inner()).commits = 0;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("WAL checkpoint: {e}"),
    }
}

/// Statements through the connection's statement cache: SQLite parses and
/// plans each distinct statement once, not on every request.
pub(crate) trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// The default of `serve --log-cap`.
pub const DEFAULT_LOG_CAP: u64 = 32 << 20;

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        // WAL with synchronous=NORMAL: a transaction that returned survives a
        // crash of this process; readers never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| {
                let cause = crate::server::store_health::storage_cause(&e)
                    .map_or_else(|| e.to_string(), str::to_string);
                let code = e.sqlite_error_code();
                let corrupt = code == Some(rusqlite::ErrorCode::DatabaseCorrupt);
                if code == Some(rusqlite::ErrorCode::NotADatabase) {
                    anyhow::anyhow!(
                        "cannot use {}: the file is not a testbot database (not an SQLite \
                         database at all); name another file (a new one starts empty)",
                        path.display()
                    )
                } else if corrupt {
                    anyhow::anyhow!(
                        "cannot use the database {}: {cause}; restore it from a backup \
                         (`testbot backup` makes one), or move it away to start with an empty one",
                        path.display()
                    )
                } else {
                    anyhow::anyhow!(
                        "cannot use the database {}: {cause}; is it a testbot database? Move it \
                         away to start with an empty one",
                        path.display()
                    )
                }
            })?;
        crate::server::store_health::quick_check(&conn, path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (copying the WAL into the database, with fsyncs) run
        // on a thread of their own, not inside whichever request's commit
        // crossed the threshold while every other request waited on it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(256);
        // New databases give freed pages back, so retention keeps the file
        // bounded; this must be set before the first table exists.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            queue: Mutex::default(),
            claimants: Mutex::default(),
            seen: Mutex::default(),
            path: path.to_path_buf(),
            log_cap: DEFAULT_LOG_CAP,
            wal: Arc::default(),
            health: crate::server::store_health::Health::new(path)
                .with_context(|| format!("cannot read the database {}", path.display()))?,
            outage_heartbeats: Mutex::default(),
        };
        store.migrate().with_context(|| {
            format!(
                "cannot update the schema of the database {}",
                path.display()
            )
        })?;
        store.load_queue()?;
        store.start_checkpointer()?;
        Ok(store)
    }

    /// Checkpoints the WAL in the background: once [`CHECKPOINT_COMMITS`]
    /// commits have gathered or writes paused for [`CHECKPOINT_QUIET`],
    /// copies what the WAL holds into the database. PASSIVE never blocks
    /// the writer.
    fn start_checkpointer(&self) -> anyhow::Result<()> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let wal = self.wal.clone();
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                let (lock, cond) = &*wal;
                loop {
                    {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while st.pending == 0 {
                            st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        while st.pending < CHECKPOINT_COMMITS {
                            let seen = st.pending;
                            let (next, waited) = cond
                                .wait_timeout(st, CHECKPOINT_QUIET)
                                .unwrap_or_else(|e| e.into_inner());
                            st = next;
                            if waited.timed_out() && st.pending == seen {
                                break;
                            }
                        }
                        st.pending = 0;
                    }
                    checkpoint(&conn, &wal);
                }
            })?;
        Ok(())
    }

    /// After a commit, with the connection still held: wakes the
    /// checkpointer, and checkpoints here when it has not caught up for
    /// long. Under a steady stream of writes a background checkpoint never
    /// copies the frames written while it ran, so the WAL would never
    /// start over and would grow without end; a checkpoint that no write
    /// can overtake lets it start over, and costs little, as the
    /// background has copied most of it already.
    fn note_commit(&self, conn: &Connection) {
        let (lock, cond) = &*self.wal;
        let starving = {
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            st.commits += 1;
            st.pending += 1;
            if st.pending == 1 || st.pending == CHECKPOINT_COMMITS {
                cond.notify_one();
            }
            st.commits >= WRITER_CHECKPOINT_COMMITS
        };
        if starving {
            checkpoint(conn, &self.wal);
        }
    }

    /// After a result committed: only a job queued again changes the queue.
    fn after_finish(&self, job: &Job) -> StoreResult<()> {
        if job.state == JobState::Queued {
            self.resync(&[job.id])?;
        }
        Ok(())
    }

    /// Fills the in-memory queue from the database at start.
    fn load_queue(&self) -> anyhow::Result<()> {
        let mut q = self.queue.lock().unwrap();
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn.prepare(&format!(
            "SELECT {QUEUED_COLS} FROM jobs WHERE state = 'queued' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], queued_from_row)?;
        for row in rows {
            q.insert(row?);
        }
        Ok(())
    }

    /// Brings the in-memory queue up to date for jobs whose state may have
    /// changed in a transaction that committed.
    fn resync(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let list = serde_json::to_string(ids)?;
        let queued: Vec<Queued> = self.with_conn(|c| {
            // By id only (the primary key); the state is checked here, so
            // the planner never walks the queue index.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {QUEUED_COLS}, state FROM jobs WHERE id IN (SELECT value FROM json_each(?1))"
            ))?;
            let mut rows = stmt.query([&list])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                if row.get_ref(6)?.as_str().map_err(rusqlite::Error::from)? == "queued" {
                    out.push(queued_from_row(row)?);
                }
            }
            Ok(out)
        })?;
        for id in ids {
            q.remove(*id);
        }
        for job in queued {
            q.insert(job);
        }
        Ok(())
    }

    pub fn with_log_cap(mut self, cap: u64) -> SqliteStore {
        self.log_cap = cap.max(64 << 10);
        self
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "the database has schema version {version}, newer than this testbot knows ({}); \
                 use a newer testbot",
                MIGRATIONS.len()
            );
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)
                .with_context(|| format!("schema migration {}", i + 1))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
        tx.commit()?;
        Ok(())
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Transaction) -> StoreResult<T>) -> StoreResult<T> {
        if let Some(cause) = self.health.lasting() {
            return Err(StoreError::Unavailable(cause));
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let out = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        match &out {
            Ok(_) => {
                self.note_commit(&conn);
                self.health.succeeded();
            }
            Err(StoreError::Unavailable(cause)) => self.health.failed(cause),
            Err(_) => {}
        }
        out
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let before = conn.total_changes();
        let out = f(&conn);
        // It may have written outside a transaction.
        if conn.total_changes() != before {
            self.note_commit(&conn);
        }
        if let Err(StoreError::Unavailable(cause)) = &out {
            self.health.failed(cause);
        }
        out
    }
}

/// An idle worker's last heartbeat as written to the database, and a newer
/// time it was seen that is not written yet.
pub(crate) struct Seen {
    pub(crate) info: String,
    pub(crate) status: &'static str,
    pub(crate) pending: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_background_checkpoint_waits_for_a_batch_of_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let commit = || {
            store
                .with_tx(|tx| Ok(tx.execute("UPDATE jobs SET priority = 0 WHERE id < 0", [])?))
                .unwrap()
        };
        let pending = || store.wal.0.lock().unwrap().pending;
        for _ in 0..5 {
            commit();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(pending(), 5, "no checkpoint after a short pause");
        for _ in 5..CHECKPOINT_COMMITS {
            commit();
        }
        // A full batch starts one at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pending() != 0 {
            assert!(Instant::now() < deadline, "no checkpoint: {}", pending());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
