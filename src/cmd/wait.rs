//! `testbot wait JOB... | bN | --build N`: block until jobs (or a build's
//! jobs) end, one line per job as it ends; exit 0 when all passed, 1
//! otherwise. `submit --wait` waits the same way. Ctrl-C ends the wait (the
//! jobs run on) and says how to go on waiting.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Exit, Globals};
use crate::client::{Client, ClientError};
use crate::wire::{Build, Job, JobState};

/// A build id as `7` or as `b7`, the way it is shown.
pub(super) fn build_id(s: &str) -> Result<i64, String> {
    let n = s.strip_prefix('b').unwrap_or(s);
    match n.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a build id (7 or b7)")),
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Jobs by id, and builds as `bN` (`b7` is build 7).
    #[arg(value_name = "JOB_OR_BUILD")]
    targets: Vec<String>,
    /// A build's jobs: its id, `7` or `b7`.
    #[arg(long = "build", value_name = "BUILD_ID", value_parser = build_id)]
    builds: Vec<i64>,
    /// Print the jobs as JSON once all have ended.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    let mut builds = a.builds.clone();
    let mut ids: Vec<i64> = Vec::new();
    for t in &a.targets {
        let bad = || {
            Exit(
                2,
                format!("{t:?} is neither a job id (12) nor a build (b7)"),
            )
        };
        match t.strip_prefix('b').or_else(|| t.strip_prefix('B')) {
            Some(n) => builds.push(n.parse().map_err(|_| bad())?),
            None => ids.push(t.parse().map_err(|_| bad())?),
        }
    }
    if ids.is_empty() && builds.is_empty() {
        return Err(Exit(
            2,
            "name the jobs to wait for: testbot wait 12 13, or a build: testbot wait b7".into(),
        )
        .into());
    }
    let mut jobs: Vec<Job> = Vec::new();
    for b in builds {
        let build: Build = client
            .get(&format!("/api/v1/builds/{b}"))
            .with_context(|| format!("reading build {b}"))?;
        jobs.extend(build.jobs);
    }
    for id in ids {
        jobs.push(
            client
                .get(&format!("/api/v1/jobs/{id}"))
                .with_context(|| format!("reading job {id}"))?,
        );
    }
    let progress = !a.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let done = wait_for(&client, &jobs, !a.json, progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    let never_run = test_summaries(&client, &done, !a.json);
    Ok(exit_code(&done, never_run))
}

/// 0 only when every job passed and no test of their builds went unrun:
/// a sharded build whose jobs passed without running some of its tests
/// has not passed them.
pub fn exit_code(done: &[Job], never_run: u64) -> u8 {
    if !done.iter().all(|j| j.state == JobState::Passed) {
        return 1;
    }
    if never_run > 0 {
        eprintln!(
            "testbot: {never_run} test{} of the build never ran; that is not a pass",
            if never_run == 1 { "" } else { "s" }
        );
        return 1;
    }
    0
}

/// After a wait: the tests of each build the jobs belong to, counted once
/// per build (sharded jobs share their tests), printed when `print`.
/// Returns how many were never run. A server that cannot say is no reason
/// to fail the wait.
pub fn test_summaries(client: &Client, done: &[Job], print: bool) -> u64 {
    let builds: std::collections::BTreeSet<i64> = done.iter().filter_map(|j| j.build).collect();
    let mut never_run = 0;
    for b in builds {
        let counted = if print {
            super::test_queue::print_build_tests(client, b, 20)
        } else {
            client
                .get::<crate::wire::BuildTests>(&format!(
                    "/api/v1/builds/{b}/tests?outcome=not_run&limit=1"
                ))
                .map(|t| t.totals.not_run)
                .map_err(Into::into)
        };
        match counted {
            Ok(n) => never_run += n,
            Err(e) => eprintln!("testbot: cannot read the tests of build {b}: {e:#}"),
        }
    }
    never_run
}

/// Set by Ctrl-C (SIGINT) once a wait began: the wait ends and says how to
/// go on, rather than the process dying mid-line.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone()) {
        tracing::debug!("cannot watch for Ctrl-C: {e}");
    }
    flag
}

fn sleep_unless(flag: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !flag.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

/// Polls until every job has ended, printing one line per job as it ends.
pub fn wait_for(
    client: &Client,
    jobs: &[Job],
    print: bool,
    progress: bool,
) -> anyhow::Result<Vec<Job>> {
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new(jobs.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} done {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    });
    let mut failures = 0;
    let mut pending: BTreeMap<i64, Job> = jobs.iter().map(|j| (j.id, j.clone())).collect();
    let mut done: BTreeMap<i64, Job> = BTreeMap::new();
    let mut outage: Option<Instant> = None;
    let mut delay = Duration::from_millis(50);
    let mut long_poll = true;
    let interrupted = interrupt_flag();
    while !pending.is_empty() {
        if interrupted.load(Ordering::SeqCst) {
            if let Some(pb) = &bar {
                pb.abandon();
            }
            let left: Vec<String> = pending.keys().map(|i| i.to_string()).collect();
            let what = match left.len() {
                1 => format!("job {} keeps running: follow it", left[0]),
                _ => format!("jobs {} keep running: follow them", left.join(" ")),
            };
            return Err(Exit(
                130,
                format!("interrupted; {what} with `testbot wait {}`", left.join(" ")),
            )
            .into());
        }
        let ids: Vec<i64> = pending.keys().take(500).copied().collect();
        // The server holds the call until one of the jobs ends (briefly,
        // so a Ctrl-C is heard soon); an older server without it is
        // asked again and again instead.
        let answer = if long_poll {
            client.post::<_, Vec<Job>>(
                "/api/v1/jobs/wait",
                &serde_json::json!({"ids": ids, "wait": 2}),
            )
        } else {
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            client.get::<Vec<Job>>(&format!(
                "/api/v1/jobs?ids={}&limit={}",
                ids.join(","),
                ids.len()
            ))
        };
        match answer {
            Err(ClientError::Refused {
                status: 400 | 404 | 405,
                ..
            }) if long_poll => {
                long_poll = false;
                continue;
            }
            Ok(list) => {
                if outage.take().is_some() {
                    eprintln!("testbot: the server answers again");
                }
                for j in list {
                    if j.state.is_final() {
                        pending.remove(&j.id);
                        if j.state != JobState::Passed {
                            failures += 1;
                        }
                        match &bar {
                            Some(pb) => {
                                pb.println(line(&j));
                                pb.inc(1);
                                if failures > 0 {
                                    pb.set_message(format!("({failures} not passed)"));
                                }
                            }
                            None if print => {
                                println!("{}", line(&j));
                                let _ = std::io::stdout().flush();
                            }
                            None => {}
                        }
                        done.insert(j.id, j);
                    }
                }
            }
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Failing { .. })) => {
                let since = *outage.get_or_insert_with(|| {
                    eprintln!("testbot: {e}; still waiting");
                    Instant::now()
                });
                if since.elapsed() > Duration::from_secs(300) {
                    return Err(e).context("gave up waiting after 5 minutes without the server");
                }
            }
            Err(e) => return Err(e.into()),
        }
        if !pending.is_empty() && (!long_poll || outage.is_some()) {
            sleep_unless(&interrupted, delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    Ok(done.into_values().collect())
}

/// `12  unit  passed  worker-1  1.2s`, plus the reason when it did not pass.
pub fn line(j: &Job) -> String {
    let duration = j
        .result
        .as_ref()
        .and_then(|r| r.get("duration_ms"))
        .and_then(|d| d.as_u64())
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    // Each part from the server shown with its control characters escaped;
    // the line breaks between parts are this line's own.
    use super::visible as v;
    let mut s = format!(
        "{}  {}  {}  {}  {}",
        j.id,
        v(&j.jobtype),
        j.state,
        v(j.worker.as_deref().unwrap_or("-")),
        duration
    );
    if j.flaky {
        s.push_str("  (flaky: passed on a rerun)");
    }
    if j.state != JobState::Passed {
        if let Some(r) = &j.reason {
            s.push_str(&format!("  ({})", v(r)));
        }
    }
    for f in j.failed_tests() {
        let msg = f.message.lines().next().unwrap_or("");
        s.push_str(&format!("\n    FAILED {}: {}", v(&f.name), v(msg)));
    }
    for t in &j.flaky_tests {
        s.push_str(&format!("\n    FLAKY  {}", v(t)));
    }
    s
}
