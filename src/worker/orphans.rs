//! A job's processes never outlive it, even when the worker dies.
//!
//! - Each slot records its running job's process group (with the leader's
//!   start time, so a reused id is never mistaken for it) in
//!   `outbox/slot-N.pgid`, and empties the record once the group is gone.
//!   Before the job's shell is started the record names the job alone: a
//!   worker killed in between is followed by one that finds the job's
//!   processes by their environment (`TESTBOT_JOB_ID`, and a
//!   `TESTBOT_JOB_FILE` in this work_dir).
//!   A worker that starts kills whatever an earlier run of it (killed with
//!   SIGKILL, or by the OOM killer) left in those groups before it takes new
//!   work, and logs what it killed.
//! - The worker is a child subreaper (Linux): processes that escape a job's
//!   group (`setsid`, double forks) are re-parented to it rather than to
//!   init, so it can end them with their job (they carry the job's
//!   `TESTBOT_JOB_ID` in their environment) and reap them.
//! - Job leaders are spawned under the [`LEADERS`] lock and reaped only by
//!   their job's own thread; the reaper of adopted processes never touches
//!   them.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// The pids of running jobs' leaders, which their own threads reap.
static LEADERS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Spawns a job's leader with the leaders lock held, so the reaper of
/// adopted processes cannot reap it before it is known.
pub fn spawn_leader<T>(
    spawn: impl FnOnce() -> std::io::Result<(std::process::Child, T)>,
) -> std::io::Result<(std::process::Child, T)> {
    let mut leaders = LEADERS.lock().unwrap();
    let (child, t) = spawn()?;
    leaders
        .get_or_insert_with(HashSet::new)
        .insert(child.id() as i32);
    Ok((child, t))
}

/// The leader has been reaped.
pub fn forget_leader(pid: u32) {
    if let Some(set) = LEADERS.lock().unwrap().as_mut() {
        set.remove(&(pid as i32));
    }
}

/// Makes this process the reaper of its orphaned descendants and starts
/// the thread that reaps those that are not job leaders.
pub fn become_subreaper() {
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::debug!("cannot become a child subreaper: {e}");
        return;
    }
    let _ = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            reap_adopted();
            std::thread::sleep(Duration::from_secs(1));
        });
}

/// Reaps adopted children that have exited.
fn reap_adopted() {
    for pid in children() {
        let leaders = LEADERS.lock().unwrap();
        if leaders.as_ref().is_some_and(|l| l.contains(&pid)) {
            continue;
        }
        if stat(pid).is_some_and(|s| s.state == 'Z') {
            if let Some(p) = Pid::from_raw(pid) {
                let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
            }
        }
    }
}

/// Whether this process has any child, running or not yet reaped: one
/// system call, where listing them reads a file for each thread.
fn has_children() -> bool {
    use rustix::process::{WaitId, WaitIdOptions};
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    !matches!(
        rustix::process::waitid(WaitId::All, opts),
        Err(rustix::io::Errno::CHILD)
    )
}

/// This process's children (all threads').
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Kills the adopted processes (escaped from a job's group) that belong to
/// job `id`, with their own groups.
pub fn kill_escaped(id: i64) {
    if !has_children() {
        // Nothing was adopted (and no other job runs): no need to read
        // every thread's list of children.
        return;
    }
    let want = format!("TESTBOT_JOB_ID={id}");
    for pid in children() {
        if LEADERS
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|l| l.contains(&pid))
        {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            if let Some(p) = Pid::from_raw(pid) {
                tracing::info!(
                    job = id,
                    pid,
                    "killing a process that escaped the job's group"
                );
                let _ = rustix::process::kill_process_group(p, Signal::KILL);
                let _ = kill_process(p, Signal::KILL);
            }
        }
    }
}

/// What `/proc/PID/stat` says that matters here.
struct Stat {
    state: char,
    pgrp: i32,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    // One read takes the whole line (a few hundred bytes, ending in a
    // newline) where `read_to_string` would probe with six growing reads
    // and a stat: this runs for every job.
    use std::io::Read;
    let mut file = File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // The command name may hold spaces, parentheses and bytes that are not
    // UTF-8: the fields follow the last ')'.
    let line = &buf[..len];
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&line[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Where slot `slot` records its running job's process group.
pub fn record_path(work_dir: &Path, slot: usize) -> PathBuf {
    work_dir.join("outbox").join(format!("slot-{slot}.pgid"))
}

/// The length of a record: `pgid start job attempt` at their widest
/// (10 + 20 + 20 + 10 digits and three spaces) fits, padded with spaces.
const RECORD_LEN: usize = 80;

/// A slot's record of its running job's process group. The file is kept
/// open and written over in place, one fixed-width line, blank between
/// jobs: two writes a job, no open, no truncation.
pub struct GroupRecord {
    path: PathBuf,
    file: Option<File>,
}

impl GroupRecord {
    pub fn new(path: PathBuf) -> GroupRecord {
        GroupRecord { path, file: None }
    }

    /// Notes that job `id` (attempt `attempt`) runs in the group `pgid`.
    pub fn set(&mut self, pgid: u32, id: i64, attempt: u32) {
        let start = stat(pgid as i32).map_or(0, |s| s.start);
        if let Err(e) = self.write(&format!("{pgid} {start} {id} {attempt}")) {
            tracing::warn!(
                "cannot record job {id}'s process group in {}: {e}",
                self.path.display()
            );
        }
    }

    /// Notes that job `id` (attempt `attempt`) is about to be started, its
    /// group not known yet: a worker killed between the start and
    /// [`GroupRecord::set`] leaves this, and its next run finds the job's
    /// processes by their environment instead.
    pub fn starting(&mut self, id: i64, attempt: u32) {
        if let Err(e) = self.write(&format!("0 0 {id} {attempt}")) {
            tracing::warn!(
                "cannot record that job {id} starts in {}: {e}",
                self.path.display()
            );
        }
    }

    /// The group is gone: nothing to kill after a crash.
    pub fn clear(&mut self) {
        let _ = self.write("");
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut line = [b' '; RECORD_LEN];
        line[RECORD_LEN - 1] = b'\n';
        let n = text.len().min(RECORD_LEN - 1);
        line[..n].copy_from_slice(&text.as_bytes()[..n]);
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)?;
                if f.metadata()?.len() != RECORD_LEN as u64 {
                    f.set_len(RECORD_LEN as u64)?;
                }
                self.file.insert(f)
            }
        };
        let written = file.write_all_at(&line, 0);
        if written.is_err() {
            // Opened afresh next time (the outbox may have been replaced).
            self.file = None;
        }
        written
    }
}

/// Kills what the jobs of an earlier run of this worker left running, as
/// recorded in `outbox/slot-*.pgid`. Returns how many processes.
pub fn kill_left_behind(work_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir.join("outbox")) else {
        return 0;
    };
    let me = std::process::id() as i32;
    let mut killed = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("pgid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [pgid, start, job, attempt] = f[..] {
            // The group, and what escaped it (setsid, double forks: no
            // longer this worker's children once it died) by the job's
            // environment.
            let mut pids = started_by_job(work_dir, job, me);
            if pgid != 0 {
                pids.extend(members(pgid as i32, start, me));
                pids.sort_unstable();
                pids.dedup();
            }
            for &pid in &pids {
                if let Some(p) = Pid::from_raw(pid) {
                    let _ = kill_process(p, Signal::KILL);
                }
            }
            if !pids.is_empty() {
                tracing::warn!(
                    job,
                    attempt,
                    pgid,
                    processes = pids.len(),
                    "killed what an earlier run of this worker left running"
                );
            }
            killed += pids.len();
        }
        let _ = super::files::empty(&path);
    }
    killed
}

/// The live processes of job `job` run from `work_dir` (its
/// `TESTBOT_JOB_ID`, and a `TESTBOT_JOB_FILE` below `work_dir`, which one
/// worker at a time holds), with everything in their groups: what a worker
/// killed while starting the job, before it knew the group, left.
fn started_by_job(work_dir: &Path, job: u64, me: i32) -> Vec<i32> {
    let want_id = format!("TESTBOT_JOB_ID={job}");
    let mut want_file = format!("TESTBOT_JOB_FILE={}", work_dir.display()).into_bytes();
    if !want_file.ends_with(b"/") {
        want_file.push(b'/');
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let leaders: Vec<i32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                let mut vars = env.split(|&b| b == 0);
                let (mut id, mut file) = (false, false);
                for v in &mut vars {
                    id |= v == want_id.as_bytes();
                    file |= v.starts_with(&want_file);
                }
                id && file
            })
        })
        .collect();
    let mut pids: Vec<i32> = leaders.clone();
    for pid in leaders {
        if let Some(s) = stat(pid) {
            if s.pgrp != me && s.pgrp > 1 {
                pids.extend(members(s.pgrp, 0, me));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The live processes of group `pgid` that started no earlier than its
/// recorded leader (`start`). When a process with that id lives and leads
/// the group, its start time must be the recorded one: otherwise the id
/// was reused and the group is not ours.
fn members(pgid: i32, start: u64, me: i32) -> Vec<i32> {
    if let Some(leader) = stat(pgid) {
        if leader.pgrp == pgid && leader.start != start {
            // The id now leads another group: not ours.
            return Vec::new();
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && s.start >= start && s.state != 'Z')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;

    fn fields(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_record_is_written_in_place_and_blank_between_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot-0.pgid");
        // A record left longer by an earlier version is written over whole.
        std::fs::write(
            &path,
            "1 2 3 4 and more than eighty bytes of something else ".repeat(3),
        )
        .unwrap();
        let mut record = GroupRecord::new(path.clone());
        let me = std::process::id();
        record.set(me, 9_007_199_254_740_993, u32::MAX);
        let f = fields(&path);
        assert_eq!(f.len(), 4, "{f:?}");
        assert_eq!(f[0], u64::from(me));
        assert_eq!(
            f[1],
            stat(me as i32).unwrap().start,
            "the leader's start time"
        );
        assert_eq!(f[2..], [9_007_199_254_740_993, u64::from(u32::MAX)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_LEN as u64);
        record.clear();
        assert!(fields(&path).is_empty());
        record.set(7, 1, 1);
        assert_eq!(fields(&path)[2..], [1, 1]);
        // The widest record still fits its line.
        record.set(u32::MAX, i64::MAX, u32::MAX);
        let f = fields(&path);
        assert_eq!(f[2..], [i64::MAX as u64, u64::from(u32::MAX)]);
    }

    /// The fields after the name are read whatever the name holds.
    #[test]
    fn a_process_stat_is_read_whatever_its_name() {
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.state.is_ascii_alphabetic(), "{}", me.state);
        assert!(me.start > 0);
        let dir = tempfile::tempdir().unwrap();
        // A name with spaces, parentheses and a byte that is not UTF-8.
        let name = std::ffi::OsStr::from_bytes(b"a) b (\xff");
        let path = dir.path().join(name);
        std::fs::copy("/bin/sleep", &path).unwrap();
        let mut child = std::process::Command::new(&path)
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        let s = stat(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        let s = s.expect("read");
        assert_eq!(s.pgrp, child.id() as i32);
        assert!(s.start >= me.start);
    }

    /// A worker killed after starting a job's shell but before recording
    /// its group left only "starting job J": its next run finds the job's
    /// processes by their environment.
    #[test]
    fn a_job_started_but_not_recorded_is_found_by_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("outbox")).unwrap();
        let job_file = work.join("slot-0.testbot/job.json");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("TESTBOT_JOB_ID", "424242")
            .env("TESTBOT_JOB_FILE", &job_file)
            .process_group(0)
            .spawn()
            .unwrap();
        // Another worker's job of the same id is not touched.
        let other = dir.path().join("other/slot-0.testbot/job.json");
        let mut bystander = std::process::Command::new("sleep")
            .arg("30")
            .env("TESTBOT_JOB_ID", "424242")
            .env("TESTBOT_JOB_FILE", &other)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut record = GroupRecord::new(record_path(&work, 0));
        record.starting(424242, 1);
        assert_eq!(kill_left_behind(&work), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the other job's process lives"
        );
        bystander.kill().unwrap();
        bystander.wait().unwrap();
        assert!(
            fields(&record_path(&work, 0)).is_empty(),
            "the record is emptied"
        );
    }

    #[test]
    fn a_child_not_yet_reaped_counts_as_a_child() {
        // Tests run threads of one process: other tests may have children
        // of their own, so only the positive answer is certain here.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(has_children(), "an exited, unreaped child");
        child.wait().unwrap();
    }
}
