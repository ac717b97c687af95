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
}
