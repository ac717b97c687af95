//! Rewriting the worker's per-slot files in place.
//!
//! Every job rewrites a few small files (its job file, its slot's outcome
//! and log spool). Creating and deleting files per job costs the file
//! system an inode each time, and truncating a file to zero before writing
//! it again makes ext4 allocate its blocks when it is closed (auto_da_alloc)
//! and, on file systems mounted with `discard`, wait for the disk when they
//! are freed. So these files are written over from the start and cut to
//! their new length, never to zero when they are to hold something.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// Makes `path` hold exactly `bytes`, creating it if needed.
pub fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(bytes)?;
    if f.metadata()?.len() != bytes.len() as u64 {
        f.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

/// Empties `path` if it holds anything, creating it if it does not exist.
pub fn empty(path: &Path) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if f.metadata()?.len() > 0 {
        f.set_len(0)?;
    }
    Ok(())
}

/// Reads a file a job's command left behind, of at most `max` bytes:
/// opened without blocking (a FIFO in its place must not hang the worker),
/// read only when it is a regular file (a link to `/dev/zero` must not
/// fill the worker's memory), and only up to `max`. The error says why,
/// in words for the job's result.
pub fn read_left_behind(path: &Path, max: u64) -> Result<Vec<u8>, LeftBehind> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LeftBehind::Missing),
        Err(e) => return Err(LeftBehind::Unreadable(format!("cannot read it: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| LeftBehind::Unreadable(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(LeftBehind::Unreadable(
            "not a regular file; not read".into(),
        ));
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| LeftBehind::Unreadable(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(LeftBehind::Unreadable(format!(
            "holds over {} bytes, more than is read; not read",
            max
        )));
    }
    Ok(bytes)
}

/// Why [`read_left_behind`] returned no bytes.
#[derive(Debug, PartialEq)]
pub enum LeftBehind {
    Missing,
    Unreadable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_leaves_exactly_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        overwrite(&p, b"a longer first content").unwrap();
        overwrite(&p, b"short").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"short");
        overwrite(&p, b"grown again, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"grown again, longer");
        empty(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        empty(&dir.path().join("new")).unwrap();
        assert!(dir.path().join("new").exists());
    }

    #[test]
    fn files_left_behind_are_read_only_when_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        assert_eq!(read_left_behind(&p, 10), Err(LeftBehind::Missing));
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_left_behind(&p, 10).unwrap(), b"{}");
        std::fs::write(&p, b"0123456789a").unwrap();
        assert!(matches!(
            read_left_behind(&p, 10),
            Err(LeftBehind::Unreadable(_))
        ));
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_left_behind(&fifo, 10),
            Err(LeftBehind::Unreadable(_))
        ));
        // A link to an endless device: refused, nothing read.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_left_behind(&zero, 10),
            Err(LeftBehind::Unreadable(_))
        ));
    }
}
