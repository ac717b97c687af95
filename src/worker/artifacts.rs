//! Artifacts on the worker: after a job's command ends, the files its
//! jobtype's `artifacts` patterns match (relative to the job directory,
//! never a link out of it, within the server's caps) are moved into the
//! outbox with a manifest (path, size, SHA-256) and declared to the
//! server; an uploader thread streams them from there, resuming at what the
//! server holds after a dropped connection or a restart on either side,
//! and deletes each job's folder once the server has every file. A worker
//! started again delivers what its outbox holds before it claims.
//!
//! ```text
//! work_dir/outbox/artifacts/JOB-ATTEMPT/manifest.json
//! work_dir/outbox/artifacts/JOB-ATTEMPT/files/PATH...
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Shared;
use crate::client::ClientError;
use crate::wire::*;

/// What a job left that will be uploaded, and what was not taken.
#[derive(Debug, Default)]
pub struct Collected {
    /// (artifact path, file to read, size).
    pub files: Vec<(String, PathBuf, u64)>,
    /// Lines for the job's log: what was skipped, and why.
    pub notes: Vec<String>,
    /// The same for the result: `{"path": ..., "why": ...}`.
    pub skipped: Vec<serde_json::Value>,
}

impl Collected {
    fn skip(&mut self, path: &str, why: String) {
        self.notes.push(format!("artifact {path} skipped: {why}"));
        self.skipped
            .push(serde_json::json!({"path": path, "why": why}));
    }
}

/// The files `patterns` match in `job_dir`, within the caps (0: none).
pub fn collect(job_dir: &Path, patterns: &[String], max_file: u64, max_job: u64) -> Collected {
    let mut out = Collected::default();
    let Ok(root) = job_dir.canonicalize() else {
        return out;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for pattern in patterns {
        let p = Path::new(pattern);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            out.notes.push(format!(
                "artifacts pattern {pattern:?} ignored: patterns are relative to the job directory, without '..'"
            ));
            continue;
        }
        // `dir/**` means everything below dir, as users write it (the glob
        // crate's `**` alone names directories).
        let pattern_files = if pattern.ends_with("**") {
            format!("{pattern}/*")
        } else {
            pattern.clone()
        };
        let full = root.join(&pattern_files);
        let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
            out.notes.push(format!(
                "artifacts pattern {pattern:?} ignored: not a valid pattern"
            ));
            continue;
        };
        for path in paths.flatten() {
            let Ok(rel) = path.strip_prefix(&root) else {
                continue;
            };
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !seen.insert(name.clone()) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A link is taken only when what it names is a file inside the
            // job directory: never a way out of it.
            let source = if meta.file_type().is_symlink() {
                match path.canonicalize() {
                    Ok(target) if target.starts_with(&root) && target.is_file() => target,
                    _ => {
                        out.skip(&name, "a symbolic link to outside the job directory".into());
                        continue;
                    }
                }
            } else if meta.is_file() {
                path.clone()
            } else {
                continue; // a directory a `**` pattern matched
            };
            if let Err(why) = check_artifact_path(&name) {
                out.skip(&name, why);
                continue;
            }
            let size = std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
            if max_file > 0 && size > max_file {
                out.skip(
                    &name,
                    format!("{size} bytes is over the server's limit of {max_file} bytes per file"),
                );
                continue;
            }
            if max_job > 0 && total.saturating_add(size) > max_job {
                out.skip(
                    &name,
                    format!("the job's artifacts would pass the server's limit of {max_job} bytes"),
                );
                continue;
            }
            total += size;
            out.files.push((name, source, size));
        }
    }
    out
}

/// A job's artifacts in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub job: i64,
    pub attempt: u32,
    #[serde(default)]
    pub keep_ms: Option<u64>,
    pub files: Vec<ArtifactFile>,
}

fn outbox(work_dir: &Path) -> PathBuf {
    work_dir.join("outbox").join("artifacts")
}

/// SHA-256 of a file, read a megabyte at a time.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Moves the collected files into the outbox (copies what cannot be moved:
/// a link's target, another file system) and writes the manifest last, so
/// a folder without one is a staging that did not finish.
pub fn stage(
    work_dir: &Path,
    job: i64,
    attempt: u32,
    keep_ms: Option<u64>,
    collected: &Collected,
) -> std::io::Result<Option<Manifest>> {
    if collected.files.is_empty() {
        return Ok(None);
    }
    let dir = outbox(work_dir).join(format!("{job}-{attempt}"));
    let files_dir = dir.join("files");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&files_dir)?;
    let mut manifest = Manifest {
        job,
        attempt,
        keep_ms,
        files: Vec::new(),
    };
    // Files that a link names are copied, before any file is moved away.
    let linked: std::collections::HashSet<&Path> = collected
        .files
        .iter()
        .filter(|(name, source, _)| !source.ends_with(name))
        .map(|(_, source, _)| source.as_path())
        .collect();
    let mut order: Vec<&(String, PathBuf, u64)> = collected.files.iter().collect();
    order.sort_by_key(|(name, source, _)| source.ends_with(name));
    for (name, source, _) in order {
        let dest = files_dir.join(name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let copy = !source.ends_with(name) || linked.contains(source.as_path());
        if copy || std::fs::rename(source, &dest).is_err() {
            std::fs::copy(source, &dest)?;
        }
    }
    for (name, _, _) in &collected.files {
        let dest = files_dir.join(name);
        let size = std::fs::metadata(&dest)?.len();
        manifest.files.push(ArtifactFile {
            path: name.clone(),
            size,
            sha256: sha256_file(&dest)?,
        });
    }
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&tmp, dir.join("manifest.json"))?;
    Ok(Some(manifest))
}

/// A path for a URL: each part %-encoded, the `/` between them kept.
fn url_path(path: &str) -> String {
    path.split('/')
        .map(crate::cmd::test_queue::query_escape)
        .collect::<Vec<_>>()
        .join("/")
}

/// How delivering one job's artifacts went.
enum Delivery {
    /// The server has all of them (or refused them for good): the folder
    /// goes.
    Done,
    /// The server is away or failing: try again later.
    Later(String),
}

fn declare(shared: &Shared, m: &Manifest) -> Result<ArtifactsDeclared, ClientError> {
    let body = ArtifactDeclaration {
        attempt: m.attempt,
        worker: shared.config.name.clone(),
        files: m.files.clone(),
        keep_ms: m.keep_ms,
    };
    shared
        .client
        .post(&format!("/api/v1/jobs/{}/artifacts", m.job), &body)
}

/// Declares a staged job's artifacts at once, so its page shows them
/// arriving; the uploader sends them.
pub fn announce(shared: &Shared, m: &Manifest) {
    if let Err(e) = declare(shared, m) {
        tracing::debug!(job = m.job, "artifacts not declared yet: {e}");
    }
}

fn deliver(shared: &Shared, dir: &Path) -> Delivery {
    let manifest: Manifest = match std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(m) => m,
        None => {
            // Staging stopped half-way (the worker died): nothing to send.
            tracing::warn!(dir = %dir.display(), "an artifacts folder without its manifest is dropped");
            return Delivery::Done;
        }
    };
    for _round in 0..3 {
        let answer = match declare(shared, &manifest) {
            Ok(a) => a,
            Err(e) if e.is_lasting_refusal() => {
                tracing::warn!(
                    job = manifest.job,
                    attempt = manifest.attempt,
                    "artifacts refused: {e}"
                );
                return Delivery::Done;
            }
            Err(e) => return Delivery::Later(e.to_string()),
        };
        let mut again = false;
        for a in answer.files {
            if a.state != ArtifactState::Uploading {
                if let Some(note) = &a.note {
                    tracing::warn!(job = manifest.job, path = %a.path, "artifact not kept: {note}");
                }
                continue;
            }
            match upload(shared, dir, &manifest, &a) {
                Ok(()) => {}
                Err(e) if e.status() == Some(409) || e.status() == Some(400) => {
                    // The server holds another length, or the bytes did
                    // not check out: ask where it stands and go on.
                    tracing::info!(job = manifest.job, path = %a.path, "artifact upload resumes: {e}");
                    again = true;
                }
                Err(e) if e.is_lasting_refusal() => {
                    tracing::warn!(job = manifest.job, path = %a.path, "artifact refused: {e}");
                }
                Err(e) => return Delivery::Later(e.to_string()),
            }
        }
        if !again {
            return Delivery::Done;
        }
    }
    Delivery::Later("the server keeps asking for another offset".into())
}

fn upload(shared: &Shared, dir: &Path, m: &Manifest, a: &Artifact) -> Result<(), ClientError> {
    let path = dir.join("files").join(&a.path);
    let local = |e: std::io::Error| ClientError::Refused {
        status: 0,
        url: path.display().to_string(),
        message: format!("cannot read the artifact: {e}"),
    };
    let mut f = std::fs::File::open(&path).map_err(local)?;
    f.seek(SeekFrom::Start(a.received)).map_err(local)?;
    let left = a.size.saturating_sub(a.received);
    // Read a megabyte at a time: fewer, larger writes to the socket.
    let mut body = std::io::BufReader::with_capacity(1 << 20, f.take(left));
    let url = format!(
        "/api/v1/jobs/{}/artifacts/{}?attempt={}&offset={}&worker={}",
        m.job,
        url_path(&a.path),
        m.attempt,
        a.received,
        crate::cmd::test_queue::query_escape(&shared.config.name)
    );
    let _: Artifact = shared.client.put_reader(&url, &mut body, left)?;
    Ok(())
}

/// The staged jobs, oldest first.
fn staged(work_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(outbox(work_dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
    dirs
}

/// Delivers everything staged; true when nothing is left.
pub fn deliver_all(shared: &Shared) -> bool {
    let mut all = true;
    for dir in staged(&shared.config.work_dir) {
        match deliver(shared, &dir) {
            Delivery::Done => {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), "cannot remove delivered artifacts: {e}");
                }
            }
            Delivery::Later(why) => {
                tracing::info!(dir = %dir.display(), "artifacts wait for the server: {why}");
                all = false;
            }
        }
    }
    all
}

/// At start: what an earlier run staged goes before any new claim, tried
/// until delivered or the worker is told to stop.
pub fn deliver_left_over(shared: &Shared) {
    let mut pause = Duration::from_millis(200);
    while !staged(&shared.config.work_dir).is_empty() {
        if deliver_all(shared) || shared.phase() != super::Phase::Run {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// The uploader thread: delivers what the slots stage, woken by
/// [`Shared::poke_uploads`], retrying with backoff while the server is away.
pub fn run(shared: &Shared) {
    let mut pause = Duration::from_millis(200);
    loop {
        let ok = deliver_all(shared);
        if shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let wait = if ok {
            pause = Duration::from_millis(200);
            Duration::from_secs(30)
        } else {
            pause = (pause * 2).min(Duration::from_secs(10));
            pause
        };
        shared.wait_uploads(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_stay_in_the_job_directory_and_caps_hold() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(job.join("reports/deep")).unwrap();
        std::fs::write(job.join("reports/a.xml"), "a").unwrap();
        std::fs::write(job.join("reports/deep/b.xml"), "bb").unwrap();
        std::fs::write(job.join("core.1"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", job.join("reports/passwd")).unwrap();
        std::os::unix::fs::symlink(job.join("reports/a.xml"), job.join("link.xml")).unwrap();
        let got = collect(
            &job,
            &[
                "reports/**".into(),
                "core*".into(),
                "../outside.txt".into(),
                "/etc/passwd".into(),
                "link.xml".into(),
            ],
            50,
            1000,
        );
        let names: Vec<&str> = got.files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["reports/a.xml", "reports/deep/b.xml", "link.xml"]);
        let notes = got.notes.join("\n");
        assert!(
            notes.contains("reports/passwd skipped: a symbolic link"),
            "{notes}"
        );
        assert!(
            notes.contains("core.1 skipped: 100 bytes is over"),
            "{notes}"
        );
        assert!(notes.contains("\"../outside.txt\" ignored"), "{notes}");
        assert!(notes.contains("\"/etc/passwd\" ignored"), "{notes}");
        assert_eq!(got.skipped.len(), 2);
        // The job cap counts what came before.
        let capped = collect(&job, &["reports/**".into()], 0, 2);
        assert_eq!(capped.files.len(), 1);
        assert!(capped.notes[0].contains("the job's artifacts would pass"));
    }

    #[test]
    fn staging_moves_files_and_hashes_them() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(job.join("out")).unwrap();
        std::fs::write(job.join("out/r.txt"), "hello world").unwrap();
        let got = collect(&job, &["out/*".into()], 0, 0);
        let m = stage(dir.path(), 7, 2, Some(1000), &got).unwrap().unwrap();
        assert_eq!(m.files[0].path, "out/r.txt");
        assert_eq!(
            m.files[0].sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert!(!job.join("out/r.txt").exists(), "moved, not copied");
        let staged = staged(dir.path());
        assert_eq!(staged.len(), 1);
        assert!(staged[0].join("files/out/r.txt").is_file());
        assert!(staged[0].join("manifest.json").is_file());
    }
}
