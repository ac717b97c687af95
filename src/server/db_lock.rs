//! One server per SQLite database file.
//!
//! Two servers on one SQLite file would each keep their own queue index and
//! hand the same jobs out twice. The server holds an exclusive lock on
//! `DB.lock` beside the database for as long as it runs (the kernel drops
//! it when the process ends, however it ends) and writes its address there,
//! so a second server is refused with a message naming the file and the
//! server that has it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::cmd::Exit;

/// Held while the server runs.
pub struct DbLock {
    _file: File,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// Takes the lock of `db` for the server at `url`.
pub fn take(db: &Path, url: &str) -> anyhow::Result<DbLock> {
    let path = lock_path(db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Exit(
                2,
                format!(
                    "cannot create the directory of the database {}: {e}",
                    db.display()
                ),
            )
        })?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Exit(2, format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut other = String::new();
            let _ = file.read_to_string(&mut other);
            let other = other.trim();
            let who = if other.is_empty() {
                "another testbot server".to_string()
            } else {
                format!("the testbot server at {other}")
            };
            return Err(Exit(
                2,
                format!(
                    "the database {} is in use by {who}; two servers cannot share a SQLite \
                     file: stop that one, or use another database",
                    db.display()
                ),
            )
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Exit(2, format!("cannot lock {}: {e}", path.display())).into())
        }
    }
    // Ours now: say who has it.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{url}");
    Ok(DbLock { _file: file })
}
