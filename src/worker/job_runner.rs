//! One job from start to outcome: a fresh directory, the command its
//! jobtype names run with `sh -c` in its own process group, its output
//! streamed, its timeout and cancel enforced on the whole group, and its
//! result file read.
//!
//! Params reach the command only as environment variables; nothing that
//! came from the server is ever pasted into the command text.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::time::{now_ms, rfc3339};
use crate::wire::{param_env_name, Extra, Job, JobState, Outcome};

use super::config::DEFAULT_TIMEOUT;
use super::log_streamer::{self, ExitWatch, LogStreamer, Sent};
use super::slot::Slot;
use super::{Control, Running, Shared};

/// The most JSON a result's test report and its data may each take: below
/// the server's limit (4 MiB each), with both together inside its 8 MiB
/// request limit.
const RESULT_MAX: usize = 3 << 20;

/// Environment variables a job never inherits from the worker.
const SECRET_ENV: &[&str] = &["TESTBOT_TOKEN"];

/// A job that has ended, with its log possibly still on its way.
pub struct Finished {
    pub outcome: Outcome,
    /// The log upload under way.
    pub log: Option<Sent>,
}

/// Runs the job and returns how it ended. Never fails: every way a job can
/// go wrong is an outcome with a reason.
pub fn run(shared: &Arc<Shared>, job: Job, slot: &mut Slot) -> Finished {
    let no_log = |mut outcome: Outcome| {
        outcome.infrastructure = true;
        Finished { outcome, log: None }
    };
    let started_ms = now_ms();
    let t0 = Instant::now();
    let ended =
        |state: JobState, exit_code: Option<i32>, reason: Option<String>, data: Extra| Outcome {
            worker: shared.config.name.clone(),
            attempt: job.attempt,
            state,
            exit_code,
            duration_ms: t0.elapsed().as_millis() as u64,
            started_at: rfc3339(started_ms),
            finished_at: rfc3339(now_ms()),
            reason,
            infrastructure: false,
            tests: None,
            data,
        };
    let config = &shared.config;
    let Some(jobtype) = config.jobtypes.get(&job.jobtype) else {
        return no_log(ended(
            JobState::Error,
            None,
            Some(format!(
                "worker {:?} has no jobtype {:?} in its config",
                config.name, job.jobtype
            )),
            Extra::new(),
        ));
    };
    let platform = job
        .platform_index
        .and_then(|i| config.platforms.get(i))
        .unwrap_or(&config.platforms[0]);
    let files = match slot.prepare(&job, config.keep_job_dirs) {
        Ok(f) => f,
        Err(e) => {
            return no_log(ended(
                JobState::Error,
                None,
                Some(format!(
                    "cannot create the job directory below {}: {e}",
                    config.work_dir.display()
                )),
                Extra::new(),
            ))
        }
    };
    let (control_tx, control_rx) = mpsc::channel();
    shared.running.lock().unwrap().insert(
        job.id,
        Running {
            attempt: job.attempt,
            info_file: files.info_file(),
            control: control_tx.clone(),
            canceling: false,
        },
    );
    shared.poke();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("TESTBOT_JOB_ID".into(), job.id.to_string());
    env.insert("TESTBOT_JOBTYPE".into(), job.jobtype.clone());
    env.insert("TESTBOT_ATTEMPT".into(), job.attempt.to_string());
    if let Some(b) = job.build {
        env.insert("TESTBOT_BUILD_ID".into(), b.to_string());
    }
    if let (Some(i), Some(n)) = (job.shard_index, job.shard_total) {
        env.insert("TESTBOT_SHARD_INDEX".into(), i.to_string());
        env.insert("TESTBOT_SHARD_TOTAL".into(), n.to_string());
    }
    let mut had_shard_tests = false;
    if let Some(tests) = &job.shard_tests {
        let mut list = tests.join("\n");
        list.push('\n');
        had_shard_tests = true;
        if std::fs::write(files.shard_tests_file(), list).is_ok() {
            env.insert(
                "TESTBOT_SHARD_TESTS_FILE".into(),
                files.shard_tests_file().to_string_lossy().into_owned(),
            );
        }
    }
    if let Some(known) = &job.shard_known {
        let mut list = known.join("\n");
        list.push('\n');
        if std::fs::write(files.shard_known_file(), list).is_ok() {
            env.insert(
                "TESTBOT_SHARD_KNOWN_FILE".into(),
                files.shard_known_file().to_string_lossy().into_owned(),
            );
        }
    }
    if let Some(token) = &job.job_token {
        env.insert("TESTBOT_JOB_TOKEN".into(), token.clone());
    }
    for (k, v) in &job.params {
        env.insert(param_env_name(k), v.clone());
    }
    let path_env = |p: PathBuf| p.to_string_lossy().into_owned();
    env.insert("TESTBOT_JOB_FILE".into(), path_env(files.job_file()));
    env.insert("TESTBOT_RESULT_FILE".into(), path_env(files.result_file()));
    env.insert("TESTBOT_INFO_FILE".into(), path_env(files.info_file()));
    env.insert("TESTBOT_JUNIT_DIR".into(), path_env(files.junit_dir()));
    env.insert("TESTBOT_SERVER".into(), shared.client.base().to_string());
    env.insert("TESTBOT_WORKER".into(), config.name.clone());
    for (k, v) in &platform.env {
        env.insert(k.clone(), v.clone());
    }

    let timeout = job.timeout.or(jobtype.timeout).unwrap_or(DEFAULT_TIMEOUT);
    let streamer = LogStreamer::new(
        shared.clone(),
        job.id,
        job.attempt,
        slot.spool(),
        control_tx.clone(),
    );
    slot.group.starting(job.id, job.attempt);
    let (child, (reader, notes)) =
        match super::orphans::spawn_leader(|| spawn(&jobtype.command, &files.dir, &env)) {
            Ok(started) => started,
            Err(e) => {
                slot.group.clear();
                slot.finish(&files, true, had_shard_tests);
                // Params that cannot be an environment (a NUL, too large)
                // are the job's fault, not the machine's: no retry
                // elsewhere, no strike against this worker.
                let jobs_fault = e.kind() == std::io::ErrorKind::InvalidInput
                    || e.raw_os_error() == Some(libc::E2BIG);
                let (state, why) = if jobs_fault {
                    (
                        JobState::Failed,
                        " (the job's params do not fit in its environment)",
                    )
                } else {
                    (JobState::Error, "")
                };
                let reason = format!("cannot start the command: {e}{why}");
                let mut outcome = ended(state, None, Some(reason), Extra::new());
                outcome.infrastructure = !jobs_fault;
                return Finished {
                    outcome,
                    log: Some(streamer.close()),
                };
            }
        };
    // The worker writes to the log only about artifacts: without any, its
    // write end goes now, so the output ends when the command's does and
    // the pump can finish before it says the command exited.
    let mut notes = (!jobtype.artifacts.is_empty()).then_some(notes);
    let pgid = child.id() as i32;
    slot.group.set(child.id(), job.id, job.attempt);
    let stop = Arc::new(log_streamer::Stopping {
        since: Default::default(),
        grace: config.kill_grace,
    });
    // One thread reads the output and reaps the command where the kernel
    // gives a pidfd; otherwise a second one waits for the command.
    let pump = match log_streamer::pidfd_open(child.id()) {
        Some(pidfd) => streamer.pump(
            &mut slot.pumper,
            reader,
            Some(ExitWatch {
                pidfd,
                child,
                control: control_tx,
                stop: stop.clone(),
            }),
        ),
        None => {
            let stop = stop.clone();
            std::thread::spawn(move || {
                if let Some(status) = log_streamer::reap(child, &stop) {
                    let _ = control_tx.send(Control::Exited(status));
                }
            });
            streamer.pump(&mut slot.pumper, reader, None)
        }
    };

    let (status, stopped) = supervise(&control_rx, pgid, timeout, &stop);
    // Whatever the command left running goes with it: its group, and what
    // escaped the group and came back to this worker (a subreaper).
    signal_group(pgid, Signal::KILL);
    super::orphans::kill_escaped(job.id);
    slot.group.clear();
    // Whatever the command's state, the files its artifacts patterns name
    // are kept: what is skipped is said in its log.
    let mut collected = (!jobtype.artifacts.is_empty()).then(|| {
        super::artifacts::collect(
            &files.dir,
            &jobtype.artifacts,
            shared.artifact_max_file.load(Ordering::SeqCst),
            shared.artifact_max_job.load(Ordering::SeqCst),
        )
    });
    if let (Some(c), Some(notes)) = (&collected, &mut notes) {
        use std::io::Write;
        for line in &c.notes {
            let _ = writeln!(notes, "testbot: {line}");
        }
    }
    drop(notes);
    // The pump ends at EOF; a process that left the group may still hold
    // the pipe, so do not wait for it forever.
    let _ = pump.recv_timeout(Duration::from_secs(2));
    let sent = streamer.close();

    let mut data = Extra::new();
    let mut had_result = true;
    match super::files::read_left_behind(&files.result_file(), RESULT_MAX as u64) {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v @ serde_json::Value::Object(_))
                if crate::server::checks::json_depth(&v)
                    > crate::server::checks::limits::JSON_DEPTH =>
            {
                data.insert(
                    "result_file_error".into(),
                    format!(
                        "the result file nests deeper than {} levels; not sent",
                        crate::server::checks::limits::JSON_DEPTH
                    )
                    .into(),
                );
            }
            Ok(serde_json::Value::Object(map)) => data = map,
            Ok(_) => {
                data.insert(
                    "result_file_error".into(),
                    "the result file does not hold a JSON object".into(),
                );
            }
            Err(e) => {
                data.insert(
                    "result_file_error".into(),
                    format!("the result file is not valid JSON: {e}").into(),
                );
            }
        },
        Err(super::files::LeftBehind::Missing) => had_result = false,
        Err(super::files::LeftBehind::Unreadable(why)) => {
            data.insert(
                "result_file_error".into(),
                format!("the result file: {why}").into(),
            );
        }
    }
    let (reports, junit_used) =
        super::junit::find_files_and_more(&files.junit_dir(), &files.dir, jobtype.junit.as_deref());
    let report = super::junit::read(&reports);
    // Moved to the outbox before the slot's directory is emptied.
    let mut staged = None;
    if let Some(c) = &mut collected {
        let keep = jobtype
            .keep_artifacts
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        match super::artifacts::stage(&shared.config.work_dir, job.id, job.attempt, keep, c) {
            Ok(m) => staged = m,
            Err(e) => {
                tracing::error!(job = job.id, "cannot keep the job's artifacts: {e}");
                data.insert(
                    "artifacts_error".into(),
                    format!("the worker could not keep the artifacts: {e}").into(),
                );
            }
        }
        if !c.skipped.is_empty() {
            data.insert("artifacts_skipped".into(), c.skipped.clone().into());
        }
    }
    slot.finish(&files, had_result || junit_used, had_shard_tests);
    if let Some(m) = &staged {
        // Declared now, so the job's page shows them coming; sent by the
        // uploader, not before the result.
        super::artifacts::announce(shared, m);
        shared.poke_uploads();
    }

    let exit_code = status.and_then(|s| s.code());
    let mut outcome = match stopped {
        Some((state, reason)) => ended(state, exit_code, Some(reason), data),
        None => {
            let (state, reason) = classify(status);
            ended(state, exit_code, reason, data)
        }
    };
    // Output the worker could not keep is the machine's failure, whatever
    // the command did: the job runs again elsewhere, with its whole log.
    if let Some((lost, why)) = &sent.lost {
        tracing::error!(job = job.id, lost, "output lost: {why}");
        outcome.state = JobState::Error;
        outcome.reason = Some(format!(
            "worker disk full: {lost} bytes of output could not be kept ({why})"
        ));
    }
    // Everything the worker calls an error is the machine's fault, not the
    // test's: the server retries such jobs elsewhere.
    outcome.infrastructure = outcome.state == JobState::Error;
    if let Some(r) = &report {
        if !r.failures.is_empty() && outcome.state != JobState::Passed {
            let names: Vec<&str> = r.failures.iter().take(5).map(|f| f.name.as_str()).collect();
            let more = r.failures.len().saturating_sub(names.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let base = outcome.reason.take().unwrap_or_default();
            outcome.reason = Some(format!(
                "{base}; {} test{} failed: {}{tail}",
                r.failures.len(),
                if r.failures.len() == 1 { "" } else { "s" },
                names.join(", ")
            ));
        }
    }
    outcome.tests = report;
    // The server takes results of a few MiB; a huge JUnit report or result
    // file is trimmed here (and says so) rather than refused there.
    if outcome.trim_to(RESULT_MAX) {
        tracing::warn!(
            job = job.id,
            "the result was trimmed to fit the server's limit"
        );
    }
    Finished {
        outcome,
        log: Some(sent),
    }
}

const SHUT_DOWN: &str = "worker shut down";

/// Passed on exit 0; `error` when the shell could not find or run the
/// command; `failed` otherwise.
fn classify(status: Option<ExitStatus>) -> (JobState, Option<String>) {
    let Some(status) = status else {
        return (JobState::Error, Some("lost track of the command".into()));
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => (JobState::Passed, None),
        (Some(127), _) => (
            JobState::Error,
            Some("command not found (the shell exited 127)".into()),
        ),
        (Some(126), _) => (
            JobState::Error,
            Some("command not executable (the shell exited 126)".into()),
        ),
        (Some(code), _) => (JobState::Failed, Some(format!("exit code {code}"))),
        (None, Some(sig)) => (JobState::Failed, Some(format!("killed by signal {sig}"))),
        (None, None) => (JobState::Failed, None),
    }
}

/// Waits for the command to exit, stopping its group on timeout, cancel or
/// abort: SIGTERM, then SIGKILL after the grace period. Returns the exit
/// status and, when testbot stopped it, the state and reason.
fn supervise(
    rx: &mpsc::Receiver<Control>,
    pgid: i32,
    timeout: Duration,
    stop: &log_streamer::Stopping,
) -> (Option<ExitStatus>, Option<(JobState, String)>) {
    let grace = stop.grace;
    let deadline = Instant::now() + timeout;
    let mut stopped: Option<(JobState, String)> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        let wake = match (kill_at, &stopped) {
            (Some(k), _) => k,
            (None, Some(_)) => Instant::now() + Duration::from_secs(3600),
            (None, None) => deadline,
        };
        let why = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Control::Exited(status)) => return (Some(status), stopped),
            Err(mpsc::RecvTimeoutError::Disconnected) => return (None, stopped),
            Ok(Control::Cancel) => (JobState::Canceled, "canceled".to_string()),
            // An abort overrides a cancel or timeout under way: the job is
            // to be retried elsewhere.
            Ok(Control::Abort) => {
                stopped = None;
                (JobState::Error, SHUT_DOWN.to_string())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if kill_at.take().is_some() {
                    signal_group(pgid, Signal::KILL);
                    continue;
                }
                let limit = crate::wire::format_duration(timeout);
                (JobState::TimedOut, format!("timed out after {limit}"))
            }
        };
        if stopped.is_none() {
            stopped = Some(why);
            // Said before the signal: whoever reaps the shell, which may
            // die of it at once, gives the rest of the group its grace.
            *stop.since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            signal_group(pgid, Signal::TERM);
            kill_at = Some(Instant::now() + grace);
        }
    }
}

/// Signals the process group the job's shell leads (gone already: fine).
pub fn signal_group(pgid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

/// The `sh` on the worker's PATH, found once: with a changed environment
/// the standard library would otherwise try every PATH entry for every job.
fn shell() -> &'static Path {
    static SH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SH.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            // A relative entry would be looked up from the job's directory.
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join("sh"))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .unwrap_or_else(|| PathBuf::from("sh"))
    })
}

/// Starts `sh -c COMMAND` in its own process group with stdout and stderr
/// on one pipe, so the log interleaves them as they were written.
/// Starts the command; returns it, the read end of its output, and a
/// write end the worker keeps (for its own lines after the command, such as
/// artifacts skipped): the log ends when the worker drops it.
fn spawn(
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> std::io::Result<(
    std::process::Child,
    (std::io::PipeReader, std::io::PipeWriter),
)> {
    let (reader, writer) = std::io::pipe()?;
    let notes = writer.try_clone()?;
    let mut cmd = Command::new(shell());
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    for k in SECRET_ENV {
        cmd.env_remove(k);
    }
    cmd.envs(env);
    let child = cmd.spawn()?;
    // `cmd` holds the parent's copies of the pipe's write end: drop them so
    // the reader sees EOF when the command's side closes.
    drop(cmd);
    Ok((child, (reader, notes)))
}
