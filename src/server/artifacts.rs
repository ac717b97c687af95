//! Where artifact bytes live: a directory (`serve --artifacts-dir`), next to
//! the database by default, shared by every server on a PostgreSQL
//! database when they mount the same one. The metadata (which attempt has
//! which file, how much of it came) is in the database
//! (`store::artifacts`); this module keeps only bytes.
//!
//! Layout:
//!
//! ```text
//! DIR/sha256/ab/abcdef...   a complete file, named by its SHA-256: stored once
//!                           however many jobs leave the same bytes
//! DIR/partial/KEY           an upload under way: the bytes received so far;
//!                           KEY is the SHA-256 of "job/attempt/path"
//! ```
//!
//! An upload appends to its partial file at the offset the client says,
//! which must be the partial file's length (so a retried or resumed upload
//! never stores a byte twice, and a server restarted mid-upload resumes
//! where the file ends); once the declared size is there, the file's
//! SHA-256 is checked and it is renamed into place. The interface
//! (`Blobs`) is what an S3-compatible store would implement instead: a
//! multipart upload per partial, objects named by their hash.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The bytes of artifacts, by hash.
pub trait Blobs: Send + Sync {
    /// Bytes received so far of the upload `key`.
    fn received(&self, key: &str) -> std::io::Result<u64>;
    /// Appends `data` to the upload `key` at `offset`, which must be the
    /// bytes it holds; returns the new length.
    fn append(&self, key: &str, offset: u64, data: &[u8]) -> std::io::Result<u64>;
    /// Checks the upload is `sha256` (hashing it, unless `hashed` says
    /// what the bytes hashed to as they came) and makes it the blob of that
    /// hash.
    fn seal(
        &self,
        key: &str,
        sha256: &str,
        hashed: Option<&str>,
    ) -> std::io::Result<Result<(), String>>;
    /// Whether a complete blob of this hash and size is stored: a
    /// declaration that names a stored hash with another size is not
    /// taken as those bytes.
    fn has(&self, sha256: &str, size: u64) -> bool;
    /// A complete blob, to read.
    fn open(&self, sha256: &str) -> std::io::Result<std::fs::File>;
    fn remove(&self, sha256: &str) -> std::io::Result<()>;
    fn remove_partial(&self, key: &str) -> std::io::Result<()>;
}

/// The name of an upload under way.
pub fn upload_key(job: i64, attempt: u32, path: &str) -> String {
    crate::server::auth::hex(&Sha256::digest(format!("{job}/{attempt}/{path}")).into())
}

/// Blobs in a directory.
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    pub fn open(root: &Path) -> anyhow::Result<DirBlobs> {
        for sub in ["sha256", "partial"] {
            std::fs::create_dir_all(root.join(sub)).map_err(|e| {
                anyhow::anyhow!(
                    "cannot make the artifacts directory {}: {e}",
                    root.join(sub).display()
                )
            })?;
        }
        Ok(DirBlobs {
            root: root.to_path_buf(),
        })
    }

    fn partial(&self, key: &str) -> PathBuf {
        self.root.join("partial").join(key)
    }

    fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }
}

impl Blobs for DirBlobs {
    fn received(&self, key: &str) -> std::io::Result<u64> {
        match std::fs::metadata(self.partial(key)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn append(&self, key: &str, offset: u64, data: &[u8]) -> std::io::Result<u64> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.partial(key))?;
        let len = f.metadata()?.len();
        if len != offset {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the upload holds {len} bytes, not {offset}"),
            ));
        }
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)?;
        Ok(offset + data.len() as u64)
    }

    fn seal(
        &self,
        key: &str,
        sha256: &str,
        hashed: Option<&str>,
    ) -> std::io::Result<Result<(), String>> {
        let partial = self.partial(key);
        let got = match hashed {
            Some(h) => h.to_string(),
            None => crate::worker::artifacts::sha256_file(&partial)?,
        };
        if got != sha256 {
            std::fs::remove_file(&partial)?;
            return Ok(Err(format!(
                "the bytes received have SHA-256 {got}, not the {sha256} declared; the upload starts over"
            )));
        }
        // As durable as the database (SQLite's WAL with synchronous=NORMAL
        // survives a crash of the process, not of the machine): no fsync.
        let blob = self.blob(sha256);
        std::fs::create_dir_all(blob.parent().expect("a blob has a parent"))?;
        if blob.exists() {
            std::fs::remove_file(&partial)?;
        } else {
            std::fs::rename(&partial, &blob)?;
        }
        Ok(Ok(()))
    }

    fn has(&self, sha256: &str, size: u64) -> bool {
        std::fs::metadata(self.blob(sha256)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    fn open(&self, sha256: &str) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.blob(sha256))
    }

    fn remove(&self, sha256: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.blob(sha256)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn remove_partial(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.partial(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The server's artifact settings and store.
pub struct ArtifactStore {
    pub blobs: Box<dyn Blobs>,
    pub max_file: u64,
    pub max_job: u64,
    pub dir: PathBuf,
}

/// How many complete blobs a directory holds (partial uploads aside).
pub fn count_blobs(root: &Path) -> u64 {
    let Ok(subs) = std::fs::read_dir(root.join("sha256")) else {
        return 0;
    };
    subs.flatten()
        .filter_map(|sub| std::fs::read_dir(sub.path()).ok())
        .map(|files| files.flatten().filter(|f| f.path().is_file()).count() as u64)
        .sum()
}

/// Copies the complete blobs of the directory `from` into `to` (partial
/// uploads are not copied: they start over): a hard link where both are on
/// one file system (blobs never change once complete), a copy otherwise.
/// Blobs `to` has already are kept. Returns the files and bytes copied.
pub fn copy_blobs(from: &Path, to: &Path) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let subs = match std::fs::read_dir(from.join("sha256")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for sub in subs {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        let into = to.join("sha256").join(sub.file_name());
        for file in std::fs::read_dir(sub.path())? {
            let file = file?;
            if !file.file_type()?.is_file() {
                continue;
            }
            let target = into.join(file.file_name());
            if target.exists() {
                continue;
            }
            std::fs::create_dir_all(&into)?;
            let len = file.metadata()?.len();
            if std::fs::hard_link(file.path(), &target).is_err() {
                // Written aside and renamed: a copy cut short never looks
                // like a complete blob.
                let part = into.join(format!(".{}.copying", file.file_name().to_string_lossy()));
                std::fs::copy(file.path(), &part)?;
                std::fs::rename(&part, &target)?;
            }
            files += 1;
            bytes += len;
        }
    }
    std::fs::create_dir_all(to.join("partial"))?;
    Ok((files, bytes))
}

/// Where artifacts go when `--artifacts-dir` does not say: beside a SQLite
/// database (`testbot.db` → `testbot-artifacts`), else in the working
/// directory.
pub fn default_dir(db_path: Option<&Path>) -> PathBuf {
    match db_path {
        Some(p) => {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "testbot".into());
            p.with_file_name(format!("{stem}-artifacts"))
        }
        None => PathBuf::from("testbot-artifacts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_resume_at_their_end_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBlobs::open(dir.path()).unwrap();
        let key = upload_key(1, 1, "a.txt");
        assert_eq!(b.received(&key).unwrap(), 0);
        assert_eq!(b.append(&key, 0, b"hello ").unwrap(), 6);
        // Not where the file ends: refused, nothing written.
        assert!(b.append(&key, 3, b"xx").is_err());
        assert!(b.append(&key, 7, b"xx").is_err());
        assert_eq!(b.append(&key, 6, b"world").unwrap(), 11);
        let sha = crate::server::auth::hex(&Sha256::digest(b"hello world").into());
        assert!(b.seal(&key, &"0".repeat(64), None).unwrap().is_err());
        // A failed check starts over.
        assert_eq!(b.received(&key).unwrap(), 0);
        b.append(&key, 0, b"hello world").unwrap();
        assert!(b.seal(&key, &sha, None).unwrap().is_ok());
        assert!(b.has(&sha, 11));
        assert!(!b.has(&sha, 1000), "another size is not these bytes");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut b.open(&sha).unwrap(), &mut text).unwrap();
        assert_eq!(text, "hello world");
        // The same bytes again are stored once.
        let again = upload_key(2, 1, "b.txt");
        b.append(&again, 0, b"hello world").unwrap();
        assert!(b.seal(&again, &sha, Some(&sha)).unwrap().is_ok());
        assert_eq!(b.received(&again).unwrap(), 0);
        b.remove(&sha).unwrap();
        assert!(!b.has(&sha, 11));
    }

    #[test]
    fn blobs_are_copied_whole_and_partial_uploads_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let from = DirBlobs::open(&a).unwrap();
        for (i, text) in ["one", "two"].iter().enumerate() {
            let key = upload_key(1, 1, &format!("f{i}"));
            from.append(&key, 0, text.as_bytes()).unwrap();
            let sha = crate::server::auth::hex(&Sha256::digest(text.as_bytes()).into());
            assert!(from.seal(&key, &sha, None).unwrap().is_ok());
        }
        from.append(&upload_key(2, 1, "half"), 0, b"ha").unwrap();
        assert_eq!(count_blobs(&a), 2);
        assert_eq!(copy_blobs(&a, &b).unwrap(), (2, 6));
        assert_eq!(count_blobs(&b), 2);
        let to = DirBlobs::open(&b).unwrap();
        let sha = crate::server::auth::hex(&Sha256::digest(b"two").into());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut to.open(&sha).unwrap(), &mut text).unwrap();
        assert_eq!(text, "two");
        assert_eq!(to.received(&upload_key(2, 1, "half")).unwrap(), 0);
        // Again: nothing new to copy.
        assert_eq!(copy_blobs(&a, &b).unwrap(), (0, 0));
        assert_eq!(copy_blobs(&dir.path().join("none"), &b).unwrap(), (0, 0));
    }

    #[test]
    fn the_default_directory_is_beside_the_database() {
        assert_eq!(
            default_dir(Some(Path::new("/var/lib/testbot/testbot.db"))),
            Path::new("/var/lib/testbot/testbot-artifacts")
        );
        assert_eq!(default_dir(None), Path::new("testbot-artifacts"));
    }
}
