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
    /// Says a file was not taken: in the log and in the result, the first
    /// [`SKIPPED_NAMED`] by name; `count` counts them all.
    fn skip(&mut self, path: &str, why: String, count: &mut usize) {
        *count += 1;
        if *count > SKIPPED_NAMED {
            return;
        }
        let shown = crate::cmd::visible(path);
        self.notes.push(format!("artifact {shown} skipped: {why}"));
        self.skipped
            .push(serde_json::json!({"path": path, "why": why}));
    }
}

/// The most files one job's artifacts may hold (the server's limit on a
/// declaration).
pub const FILES_MAX: usize = 10_000;
/// Directory entries one pattern may look at: a job directory of millions
/// of files is not walked to its end.
const WALK_MAX: usize = 200_000;
/// Skipped files named one by one in the result; the rest are counted.
const SKIPPED_NAMED: usize = 100;

/// Whether a path part holds glob syntax.
fn is_glob(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// The files `patterns` match in `job_dir`, within the caps (0: none).
///
/// The job directory is walked without following links to directories
/// (inside or out of it: a link may lead out, or round in a loop); a link
/// to a file is taken when the file is inside the job directory.
pub fn collect(job_dir: &Path, patterns: &[String], max_file: u64, max_job: u64) -> Collected {
    let mut out = Collected::default();
    let Ok(root) = job_dir.canonicalize() else {
        return out;
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut skipped = 0usize;
    for pattern in patterns {
        let p = Path::new(pattern);
        if pattern.is_empty()
            || p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            out.notes.push(format!(
                "artifacts pattern {pattern:?} ignored: patterns are relative to the job directory, without '..'"
            ));
            continue;
        }
        // `dir/**` means everything below dir, as users write it.
        let pattern_files = if pattern.ends_with("**") {
            format!("{pattern}/*")
        } else {
            pattern.clone()
        };
        let Ok(matcher) = glob::Pattern::new(&pattern_files) else {
            out.notes.push(format!(
                "artifacts pattern {pattern:?} ignored: not a valid pattern"
            ));
            continue;
        };
        // Walk from the pattern's literal directories only.
        let parts: Vec<&str> = pattern_files
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let literal = parts.iter().take_while(|c| !is_glob(c)).count();
        let base: Vec<&str> = parts[..literal.min(parts.len().saturating_sub(1))].to_vec();
        let mut found = Vec::new();
        let mut budget = WALK_MAX;
        let mut linked_dirs = Vec::new();
        // How deep below the base the pattern reaches (`**`: all the way).
        let depth = if parts.contains(&"**") {
            usize::MAX
        } else {
            parts.len() - base.len()
        };
        walk(
            &root,
            &base.join("/"),
            depth,
            &mut found,
            &mut linked_dirs,
            &mut budget,
        );
        if budget == 0 {
            out.notes.push(format!(
                "artifacts pattern {pattern:?}: stopped after looking at {WALK_MAX} entries"
            ));
        }
        for name in linked_dirs {
            let leads_on = matcher.matches_with(&format!("{name}/x"), options)
                || pattern_files.starts_with(&format!("{name}/"));
            if leads_on && seen.insert(name.clone()) {
                out.skip(
                    &name,
                    "a link to a directory (not followed)".into(),
                    &mut skipped,
                );
            }
        }
        for name in found {
            if !matcher.matches_with(&name, options) || !seen.insert(name.clone()) {
                continue;
            }
            let path = root.join(&name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A link is taken only when what it names is a file inside the
            // job directory: never a way out of it.
            let source = if meta.file_type().is_symlink() {
                match path.canonicalize() {
                    Ok(target) if target.starts_with(&root) && target.is_file() => target,
                    Ok(target) if target.is_dir() => {
                        out.skip(
                            &name,
                            "a link to a directory (not followed)".into(),
                            &mut skipped,
                        );
                        continue;
                    }
                    _ => {
                        out.skip(
                            &name,
                            "a symbolic link to outside the job directory".into(),
                            &mut skipped,
                        );
                        continue;
                    }
                }
            } else if meta.is_file() {
                path
            } else {
                continue; // a FIFO, a socket, a device
            };
            if let Err(why) = check_artifact_path(&name) {
                out.skip(&name, why, &mut skipped);
                continue;
            }
            if out.files.len() >= FILES_MAX {
                out.skip(
                    &name,
                    format!("the job has {FILES_MAX} artifacts already, the most it may keep"),
                    &mut skipped,
                );
                continue;
            }
            let size = std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
            if max_file > 0 && size > max_file {
                out.skip(
                    &name,
                    format!("{size} bytes is over the server's limit of {max_file} bytes per file"),
                    &mut skipped,
                );
                continue;
            }
            if max_job > 0 && total.saturating_add(size) > max_job {
                out.skip(
                    &name,
                    format!("the job's artifacts would pass the server's limit of {max_job} bytes"),
                    &mut skipped,
                );
                continue;
            }
            total += size;
            out.files.push((name, source, size));
        }
    }
    if skipped > SKIPPED_NAMED {
        let more = skipped - SKIPPED_NAMED;
        out.notes.push(format!("and {more} more artifacts skipped"));
        out.skipped
            .push(serde_json::json!({"path": "", "why": format!("and {more} more skipped")}));
    }
    out
}

/// The files and links below `root/base`, `depth` levels down (every
/// directory walked without following links; names relative to `root`,
/// sorted per directory), and the links to directories met on the way; at
/// most `budget` entries.
fn walk(
    root: &Path,
    base: &str,
    depth: usize,
    found: &mut Vec<String>,
    linked_dirs: &mut Vec<String>,
    budget: &mut usize,
) {
    // The base's own parts must be real directories, not links.
    let mut at = root.to_path_buf();
    let mut name = String::new();
    for part in base.split('/').filter(|p| !p.is_empty()) {
        at.push(part);
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                if at.is_dir() {
                    linked_dirs.push(name);
                }
                return;
            }
            _ => return,
        }
    }
    walk_dir(&at, &name, 1, depth, found, linked_dirs, budget);
}

/// [`walk`] below one directory, entries in name order, each directory's
/// contents where it comes (the order `glob` gives).
fn walk_dir(
    dir: &Path,
    prefix: &str,
    level: usize,
    depth: usize,
    found: &mut Vec<String>,
    linked_dirs: &mut Vec<String>,
    budget: &mut usize,
) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(String, std::fs::FileType)> = Vec::new();
    for e in read.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if let Ok(t) = e.file_type() {
            entries.push((e.file_name().to_string_lossy().into_owned(), t));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (file, t) in entries {
        let rel = if prefix.is_empty() {
            file.clone()
        } else {
            format!("{prefix}/{file}")
        };
        if t.is_dir() {
            if level < depth {
                walk_dir(
                    &dir.join(&file),
                    &rel,
                    level + 1,
                    depth,
                    found,
                    linked_dirs,
                    budget,
                );
            }
        } else if t.is_symlink() && dir.join(&file).is_dir() {
            linked_dirs.push(rel);
        } else {
            found.push(rel);
        }
    }
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
/// a folder without one is a staging that did not finish. A file that
/// cannot be staged (gone, unreadable) is skipped, saying why; the rest
/// are kept.
pub fn stage(
    work_dir: &Path,
    job: i64,
    attempt: u32,
    keep_ms: Option<u64>,
    collected: &mut Collected,
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
    let linked: std::collections::HashSet<PathBuf> = collected
        .files
        .iter()
        .filter(|(name, source, _)| !source.ends_with(name))
        .map(|(_, source, _)| source.clone())
        .collect();
    let mut order: Vec<(String, PathBuf)> = collected
        .files
        .iter()
        .map(|(name, source, _)| (name.clone(), source.clone()))
        .collect();
    order.sort_by_key(|(name, source)| source.ends_with(name));
    let mut failed: Vec<(String, String)> = Vec::new();
    for (name, source) in &order {
        let dest = files_dir.join(name);
        let put = || -> std::io::Result<()> {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let copy = !source.ends_with(name) || linked.contains(source);
            if copy || std::fs::rename(source, &dest).is_err() {
                std::fs::copy(source, &dest)?;
            }
            Ok(())
        };
        if let Err(e) = put() {
            failed.push((name.clone(), format!("cannot keep it: {e}")));
        }
    }
    for (name, _, _) in &collected.files {
        if failed.iter().any(|(f, _)| f == name) {
            continue;
        }
        let dest = files_dir.join(name);
        let hashed = std::fs::metadata(&dest).and_then(|m| Ok((m.len(), sha256_file(&dest)?)));
        match hashed {
            Ok((size, sha256)) => manifest.files.push(ArtifactFile {
                path: name.clone(),
                size,
                sha256,
            }),
            Err(e) => failed.push((name.clone(), format!("cannot read it: {e}"))),
        }
    }
    let mut count = collected.skipped.len();
    for (name, why) in failed {
        collected.files.retain(|(n, _, _)| *n != name);
        collected.skip(&name, why, &mut count);
    }
    if manifest.files.is_empty() {
        std::fs::remove_dir_all(&dir)?;
        return Ok(None);
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
    fn links_to_directories_are_never_followed_and_nothing_outside_is_touched() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(job.join("r/deep")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("keep.txt"), "precious").unwrap();
        std::fs::write(job.join("r/ok"), "ok").unwrap();
        std::fs::write(job.join("r/deep/ok"), "deep").unwrap();
        symlink(&secret, job.join("r/out")).unwrap(); // out of the job
        symlink("deep", job.join("r/dl")).unwrap(); // inside it
        symlink("../r", job.join("r/self")).unwrap(); // a loop
        symlink(&secret, job.join("linked")).unwrap(); // a pattern's own base
        let mut got = collect(&job, &["r/**".into(), "linked/*".into()], 0, 0);
        let names: Vec<&str> = got.files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["r/deep/ok", "r/ok"]);
        let notes = got.notes.join("\n");
        for link in ["r/out", "r/dl", "r/self", "linked"] {
            assert!(
                notes.contains(&format!("artifact {link} skipped: a link to a directory")),
                "{link}: {notes}"
            );
        }
        let m = stage(dir.path(), 1, 1, None, &mut got).unwrap().unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(
            std::fs::read_to_string(secret.join("keep.txt")).unwrap(),
            "precious"
        );
    }

    #[test]
    fn a_file_that_cannot_be_staged_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("a.txt"), "a").unwrap();
        std::fs::write(job.join("b.txt"), "b").unwrap();
        let mut got = collect(&job, &["*.txt".into()], 0, 0);
        std::fs::remove_file(job.join("a.txt")).unwrap();
        let m = stage(dir.path(), 2, 1, None, &mut got).unwrap().unwrap();
        let kept: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(kept, ["b.txt"]);
        assert_eq!(got.skipped.len(), 1, "{:?}", got.skipped);
        assert_eq!(got.skipped[0]["path"], "a.txt");
    }

    #[test]
    fn past_the_file_limit_files_are_skipped_and_counted_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(job.join("m")).unwrap();
        for i in 0..FILES_MAX + 150 {
            std::fs::write(job.join(format!("m/{i:05}")), "").unwrap();
        }
        let got = collect(&job, &["m/**".into()], 0, 0);
        assert_eq!(got.files.len(), FILES_MAX);
        assert_eq!(got.skipped.len(), SKIPPED_NAMED + 1);
        assert!(
            got.notes.last().unwrap().contains("and 50 more"),
            "{:?}",
            got.notes.last()
        );
    }

    #[test]
    fn staging_moves_files_and_hashes_them() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job");
        std::fs::create_dir_all(job.join("out")).unwrap();
        std::fs::write(job.join("out/r.txt"), "hello world").unwrap();
        let got = collect(&job, &["out/*".into()], 0, 0);
        let mut got = got;
        let m = stage(dir.path(), 7, 2, Some(1000), &mut got)
            .unwrap()
            .unwrap();
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
