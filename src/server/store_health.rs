//! Whether the database can be written, and why not.
//!
//! A full disk, a read-only or vanished database file are not bugs: the
//! server answers 503 with the cause (so clients and workers back off and
//! retry), `/api/v1/health` says so, and it recovers by itself when the
//! cause goes away. A database file that was deleted or replaced under the
//! running server never recovers: writing on would go into a file nobody
//! will read again, so writes stay refused until the server is restarted.
//! At start the database is checked (`PRAGMA quick_check`, bounded in time)
//! and a damaged one is refused with what to do.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::ErrorCode;

/// The cause, in words a client can act on, of a database error that is a
/// storage failure rather than a bug; `None` for anything else.
pub fn storage_cause(e: &rusqlite::Error) -> Option<&'static str> {
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    Some(match f.code {
        ErrorCode::DiskFull => "the database disk is full",
        ErrorCode::ReadOnly => "the database is read-only",
        ErrorCode::SystemIoFailure => "the database cannot be read or written (I/O error)",
        ErrorCode::CannotOpen => "the database file cannot be opened",
        ErrorCode::DatabaseCorrupt => "the database is damaged",
        ErrorCode::NotADatabase => "the database file is not a testbot database",
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "the database is busy (another process holds it)"
        }
        _ => return None,
    })
}

/// What is wrong with the storage now, if anything.
pub struct Health {
    path: PathBuf,
    /// The database file as opened: device and inode.
    identity: (u64, u64),
    problem: Mutex<Option<Problem>>,
    /// When a write last went through.
    last_write: Mutex<Option<std::time::Instant>>,
}

struct Problem {
    cause: String,
    /// The file was deleted or replaced: no write will ever work again.
    lasting: bool,
}

impl Health {
    pub fn new(path: &Path) -> anyhow::Result<Health> {
        let meta = std::fs::metadata(path)?;
        Ok(Health {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            problem: Mutex::new(None),
            last_write: Mutex::new(None),
        })
    }

    /// Why the database cannot be written, or `None` when it can.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.cause.clone())
    }

    /// A write failed for this storage cause.
    pub fn failed(&self, cause: &str) {
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_ref().is_some_and(|p| p.lasting) {
            return;
        }
        if p.is_none() {
            tracing::error!(db = %self.path.display(), "{cause}; answering 503 until it can be written again");
        }
        *p = Some(Problem {
            cause: cause.to_string(),
            lasting: false,
        });
    }

    /// A write went through: whatever kept writes from working is over.
    /// Returns whether there was an outage.
    pub fn succeeded(&self) -> bool {
        *self.last_write.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        match p.as_ref() {
            Some(x) if !x.lasting => {
                tracing::info!(db = %self.path.display(), "the database can be written again");
                *p = None;
                true
            }
            _ => false,
        }
    }

    /// Whether a write went through in the last `d`.
    pub fn wrote_within(&self, d: Duration) -> bool {
        self.last_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < d)
    }

    /// The refusal writes get while the file is gone.
    pub fn lasting(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|p| p.lasting)
            .map(|p| p.cause.clone())
    }

    /// Notices a database file deleted or replaced under the server.
    pub fn check_file(&self) {
        let now = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        let what = match now {
            Ok(id) if id == self.identity => return,
            Ok(_) => "replaced",
            Err(_) => "deleted",
        };
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_ref().is_some_and(|p| p.lasting) {
            return;
        }
        let cause = format!(
            "the database file was {what} while the server ran; it takes no more writes: \
             restart the server"
        );
        tracing::error!(db = %self.path.display(), "{cause}");
        *p = Some(Problem {
            cause,
            lasting: true,
        });
    }
}

/// How long the start-up check may take before it is skipped (a big
/// database on a slow disk).
const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Checks the database's structure at start; refuses a damaged one with
/// what to do.
pub fn quick_check(conn: &rusqlite::Connection, path: &Path) -> anyhow::Result<()> {
    // Interrupted from a timer thread once over its budget.
    let interrupt = conn.get_interrupt_handle();
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let timer = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stop.recv_timeout(QUICK_CHECK_BUDGET)
        {
            interrupt.interrupt();
        }
    });
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA quick_check(20)")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect());
    drop(done);
    let _ = timer.join();
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        Ok(rows) => anyhow::bail!(
            "the database {} is damaged ({}); restore it from a backup (`testbot backup` \
             makes one), or move it away to start with an empty one",
            path.display(),
            rows.join("; ")
        ),
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::OperationInterrupted => {
            tracing::warn!(db = %path.display(), "the start-up check of the database took over {QUICK_CHECK_BUDGET:?}; skipped");
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "the database {} cannot be checked: {}; restore it from a backup, or move it \
             away to start with an empty one",
            path.display(),
            storage_cause(&e).map_or_else(|| e.to_string(), str::to_string)
        ),
    }
}
