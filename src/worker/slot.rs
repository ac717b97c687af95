//! What one slot keeps from job to job: its directories, its job file and
//! its outbox (the journal of outcomes and the log spool).
//!
//! A slot reuses one pair of directories (`slot-N` for the command,
//! `slot-N.testbot` for testbot's files), left empty after every job, and
//! keeps its job file and journal open. A job that prints nothing and
//! leaves nothing behind thus costs the file system a handful of system
//! calls: no inode is created or deleted, no file is cut to zero (which on
//! ext4 forces block allocation at close, and with `discard` waits for the
//! disk when the blocks are freed). With `keep_job_dirs` each job gets its
//! own `job-ID-ATTEMPT` pair instead, left in place afterwards.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wire::{Job, Outcome};

pub struct Slot {
    pub index: usize,
    work_dir: PathBuf,
    /// The slot's directories are known to be as a new job needs them.
    clean: bool,
    /// The job file, open, with its inode and length.
    job_file: Option<(File, u64, u64)>,
    pub journal: Journal,
    /// The thread that reads the slot's jobs' output.
    pub pumper: super::log_streamer::Pumper,
    /// The record of its running job's process group.
    pub group: super::orphans::GroupRecord,
}

/// The paths one job's command is given.
pub struct JobFiles {
    pub dir: PathBuf,
    pub meta: PathBuf,
    keep: bool,
}

impl JobFiles {
    pub fn job_file(&self) -> PathBuf {
        self.meta.join("job.json")
    }
    pub fn result_file(&self) -> PathBuf {
        self.meta.join("result.json")
    }
    pub fn info_file(&self) -> PathBuf {
        self.meta.join("info.json")
    }
    pub fn junit_dir(&self) -> PathBuf {
        self.meta.join("junit")
    }
    pub fn shard_tests_file(&self) -> PathBuf {
        self.meta.join("shard-tests.txt")
    }
    pub fn shard_known_file(&self) -> PathBuf {
        self.meta.join("shard-known.txt")
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.meta);
    }
}

impl Slot {
    pub fn new(work_dir: &Path, index: usize) -> Slot {
        Slot {
            index,
            work_dir: work_dir.to_path_buf(),
            clean: false,
            job_file: None,
            journal: Journal::new(journal_path(work_dir, index)),
            pumper: Default::default(),
            group: super::orphans::GroupRecord::new(super::orphans::record_path(work_dir, index)),
        }
    }

    /// Where this slot spools its job's log while it is sent; empty
    /// between jobs.
    pub fn spool(&self) -> PathBuf {
        spool_path(&self.work_dir, self.index)
    }

    /// Makes the directories and the job file for `job`.
    pub fn prepare(&mut self, job: &Job, keep: bool) -> std::io::Result<JobFiles> {
        let stem = if keep {
            format!("job-{}-{}", job.id, job.attempt)
        } else {
            format!("slot-{}", self.index)
        };
        let files = JobFiles {
            dir: self.work_dir.join(&stem),
            meta: self.work_dir.join(format!("{stem}.testbot")),
            keep,
        };
        let json = serde_json::to_vec_pretty(job).unwrap_or_default();
        if keep {
            files.remove();
            make_dir(&files.dir)?;
            make_dir(&files.meta)?;
            make_dir(&files.junit_dir())?;
            return super::files::overwrite(&files.job_file(), &json).map(|_| files);
        }
        if !self.clean {
            empty_dir(&files.dir)?;
            if !files.meta.is_dir() {
                remove_entry(&files.meta);
                make_dir(&files.meta)?;
            }
            clear_meta(&files.meta);
            empty_dir(&files.junit_dir())?;
            super::files::empty(&self.spool())?;
            self.job_file = None;
        }
        // The job dirties them; `finish` clears them again.
        self.clean = false;
        self.write_job_file(&files.job_file(), &json)?;
        Ok(files)
    }

    /// After the job: a slot's directories are emptied for the next one
    /// and the job file is written over with `{}`; a kept job's stay as
    /// they are.
    /// `left_files`: the job may have left files in testbot's directory
    /// (a result file, JUnit files); `had_shard_tests`: testbot wrote the
    /// list of tests there.
    pub fn finish(&mut self, files: &JobFiles, left_files: bool, had_shard_tests: bool) {
        if files.keep {
            return;
        }
        let mut ok = empty_dir(&files.dir).is_ok();
        if left_files {
            ok &= empty_dir(&files.junit_dir()).is_ok();
        }
        for (had, path) in [
            (left_files, files.result_file()),
            (true, files.info_file()),
            (had_shard_tests, files.shard_tests_file()),
            (had_shard_tests, files.shard_known_file()),
        ] {
            if had {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => ok = false,
                    _ => {}
                }
            }
        }
        // The job's params stay no longer than the job.
        ok &= self.write_job_file(&files.job_file(), b"{}").is_ok();
        self.clean = ok;
    }

    /// Writes the job file through the open handle when the path still
    /// names it: over the old content, padded with blanks (still JSON) or
    /// cut when much shorter.
    fn write_job_file(&mut self, path: &Path, json: &[u8]) -> std::io::Result<()> {
        let ino = std::fs::metadata(path).map(|m| m.ino()).ok();
        let reuse = matches!((&self.job_file, ino), (Some((_, i, _)), Some(now)) if *i == now);
        if !reuse {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let meta = f.metadata()?;
            self.job_file = Some((f, meta.ino(), meta.len()));
        }
        let Some((f, _, len)) = self.job_file.as_mut() else {
            unreachable!("the job file was just opened");
        };
        let new = json.len() as u64;
        if new >= *len || *len - new > 4096 {
            f.write_all_at(json, 0)?;
            if new < *len {
                f.set_len(new)?;
            }
            *len = new;
        } else {
            let mut padded = json.to_vec();
            padded.resize(*len as usize, b' ');
            if let Some(last) = padded.last_mut() {
                *last = b'\n';
            }
            f.write_all_at(&padded, 0)?;
        }
        Ok(())
    }
}

pub fn spool_path(work_dir: &Path, slot: usize) -> PathBuf {
    work_dir.join("outbox").join(format!("slot-{slot}.log"))
}

fn journal_path(work_dir: &Path, slot: usize) -> PathBuf {
    work_dir.join("outbox").join(format!("slot-{slot}.results"))
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Makes `dir` an empty directory only its owner may enter, touching the
/// file system only where it is not one already.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(());
            }
            drop(entries);
            std::fs::remove_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Not a directory, or not ours to read: start over.
        Err(_) => remove_entry(dir),
    }
    make_dir(dir)
}

/// Removes everything from a meta directory but the junit directory and
/// the job file.
fn clear_meta(meta: &Path) {
    let Ok(entries) = std::fs::read_dir(meta) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if (name == "junit" && is_dir) || (name == "job.json" && !is_dir) {
            continue;
        }
        remove_entry(&e.path());
    }
}

fn remove_entry(path: &Path) {
    if std::fs::remove_file(path).is_err() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// An outcome waiting for the server, as the journal keeps it.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub job: i64,
    pub outcome: Outcome,
}

/// One line of a journal: an outcome to deliver, or (without `outcome`)
/// word that the server has the job's.
#[derive(Serialize, Deserialize)]
struct Line {
    job: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

/// A slot's outcomes, appended as JSON lines before they are sent and
/// marked delivered after; started over once it has grown past 1 MiB with
/// nothing waiting. The last line says whether an outcome waits.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
}

const JOURNAL_RESTART: u64 = 1 << 20;

impl Journal {
    fn new(path: PathBuf) -> Journal {
        Journal { path, file: None }
    }

    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&self.path)?,
            );
        }
        let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let f = self.file.as_mut().expect("opened above");
        let r = f.write_all(&bytes);
        if r.is_err() {
            self.file = None;
        }
        r
    }

    /// Keeps `outcome` until [`Journal::delivered`].
    pub fn record(&mut self, job: i64, outcome: &Outcome) -> std::io::Result<()> {
        self.append(&Line {
            job,
            outcome: Some(outcome.clone()),
        })
    }

    /// The server has the job's outcome.
    pub fn delivered(&mut self, job: i64) {
        let _ = self.append(&Line { job, outcome: None });
        if let Some(f) = &self.file {
            if f.metadata().is_ok_and(|m| m.len() > JOURNAL_RESTART) {
                let _ = f.set_len(0);
            }
        }
    }
}

/// The outcome a journal file still holds for delivery, if any: its last
/// complete line, when that is an outcome.
pub fn pending_in(path: &Path) -> Option<Pending> {
    let bytes = std::fs::read(path).ok()?;
    let last = bytes
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.trim_ascii().is_empty())?;
    let line: Line = serde_json::from_slice(last).ok()?;
    Some(Pending {
        job: line.job,
        outcome: line.outcome?,
    })
}

/// Marks a journal file's outcome delivered (for deliveries at start).
pub fn mark_delivered(path: &Path, job: i64) {
    let mut j = Journal::new(path.to_path_buf());
    j.delivered(job);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::JobState;

    fn outcome(attempt: u32) -> Outcome {
        Outcome {
            worker: "w".into(),
            attempt,
            state: JobState::Passed,
            exit_code: Some(0),
            duration_ms: 1,
            started_at: String::new(),
            finished_at: String::new(),
            reason: None,
            infrastructure: false,
            tests: None,
            data: Default::default(),
        }
    }

    #[test]
    fn the_journal_tells_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot-0.results");
        assert!(pending_in(&path).is_none());
        let mut j = Journal::new(path.clone());
        j.record(7, &outcome(1)).unwrap();
        let p = pending_in(&path).expect("pending");
        assert_eq!((p.job, p.outcome.attempt), (7, 1));
        j.delivered(7);
        assert!(pending_in(&path).is_none());
        j.record(8, &outcome(2)).unwrap();
        assert_eq!(pending_in(&path).map(|p| p.job), Some(8));
        // A line cut short by a crash is no outcome.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"job\":9,\"outc")
            .unwrap();
        assert!(pending_in(&path).is_none());
        mark_delivered(&path, 9);
        assert!(pending_in(&path).is_none());
    }

    #[test]
    fn the_job_file_is_rewritten_in_place_and_stays_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut slot = Slot::new(dir.path(), 0);
        std::fs::create_dir_all(dir.path().join("outbox")).unwrap();
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": 1, "jobtype": "t", "state": "running", "attempt": 1,
            "platform": {}, "requirements": {}, "params": {"long": "x".repeat(300)},
            "priority": 0, "max_attempts": 3, "worker": "w", "platform_index": 0,
            "matched_platform": null, "build": null, "retry_failed": 0, "reruns": 0,
            "flaky": false, "created_at": "", "started_at": null, "finished_at": null,
            "cancel_requested": false, "reason": null, "result": null
        }))
        .unwrap();
        let files = slot.prepare(&job, false).unwrap();
        let ino = std::fs::metadata(files.job_file()).unwrap().ino();
        slot.finish(&files, false, false);
        // The params stay no longer than the job.
        let between = std::fs::read_to_string(files.job_file()).unwrap();
        assert_eq!(between.trim(), "{}");
        job.id = 2;
        job.params.clear();
        let files = slot.prepare(&job, false).unwrap();
        assert_eq!(std::fs::metadata(files.job_file()).unwrap().ino(), ino);
        let back: Job = serde_json::from_slice(&std::fs::read(files.job_file()).unwrap()).unwrap();
        assert_eq!(back.id, 2);
        assert!(back.params.is_empty());
        // A command that removes the job file gets a new one next time.
        std::fs::remove_file(files.job_file()).unwrap();
        std::fs::write(files.dir.join("left"), "x").unwrap();
        slot.finish(&files, false, false);
        assert_eq!(std::fs::read_dir(&files.dir).unwrap().count(), 0);
        job.id = 3;
        let files = slot.prepare(&job, false).unwrap();
        let back: Job = serde_json::from_slice(&std::fs::read(files.job_file()).unwrap()).unwrap();
        assert_eq!(back.id, 3);
    }
}
