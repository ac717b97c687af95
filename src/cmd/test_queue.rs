//! `testbot tests`: the test queue from inside a sharded job (`next`,
//! `report`, `finish`), static shards without lost tests (`shard`), and
//! test history and reruns for people (`flaky`, `slow`, `repro`).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::table::Table;
use super::{Exit, Globals};
use crate::client::{Client, ClientError};
use crate::rules::test_queue::hash_shard;
use crate::wire::*;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// In a sharded job: print the next batch of test ids to run, one per
    /// line; print nothing (exit 0) when none is left for this job.
    Next {
        /// The runner's test ids, one per line (the first call of each
        /// shard merges them into the shared queue).
        #[arg(long, value_name = "FILE")]
        list: PathBuf,
        /// The most tests in one batch.
        #[arg(long, value_name = "K")]
        max: Option<u32>,
        /// How to run one test by hand, `{id}` standing for its id (shown by
        /// `testbot tests repro`), e.g. 'go test -run "^{id}$" ./...'.
        #[arg(long, value_name = "COMMAND")]
        repro: Option<String>,
    },
    /// In a sharded job: record outcomes of the tests `next` gave it, as
    /// JSON lines on stdin ({"id", "outcome", "duration_ms", "message"}) or
    /// from JUnit XML files.
    Report {
        /// Read these JUnit XML files instead of stdin; each test case is
        /// matched to a reserved id by its name (see the README).
        #[arg(long, value_name = "FILE", num_args = 1..)]
        junit: Vec<PathBuf>,
    },
    /// In a sharded job: give back tests not reported and print what this
    /// job's tests came to; exit 1 when one it ran failed for good.
    Finish {
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// In a statically sharded job: print the ids of FILE (the runner's
    /// whole list) this shard runs: those its plan names, and the tests no
    /// plan knows that hash to it.
    Shard {
        #[arg(long, value_name = "FILE")]
        list: PathBuf,
    },
    /// Tests that failed and then passed on a rerun, most often first.
    Flaky(StatsArgs),
    /// Tests by their smoothed duration, slowest first.
    Slow(StatsArgs),
    /// The command that reruns one test of a build by hand.
    Repro {
        /// The build.
        build: i64,
        /// The test's id, as `status --build` shows it.
        test: String,
    },
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Only this jobtype's tests.
    #[arg(long)]
    jobtype: Option<String>,
    /// How many to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    match a.command {
        Command::Next { list, max, repro } => next(g, &list, max, repro),
        Command::Report { junit } => report(g, &junit),
        Command::Finish { json } => finish(g, json),
        Command::Shard { list } => shard(&list),
        Command::Flaky(s) => stats(g, "flaky", s),
        Command::Slow(s) => stats(g, "slow", s),
        Command::Repro { build, test } => repro(g, build, &test),
    }
}

/// The job this command runs in, from the environment its worker set.
struct Job {
    id: i64,
    attempt: u32,
    client: Client,
    /// Where the tests reserved for this attempt are noted, for matching
    /// JUnit files to them.
    reserved: PathBuf,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| {
        Exit(
            2,
            format!(
                "{name} is not set: `testbot tests next|report|finish` run inside a job of a \
                 sharded submission (testbot submit JOBTYPE --shards N), whose worker sets it"
            ),
        )
        .into()
    })
}

fn job(g: &Globals) -> anyhow::Result<Job> {
    let token = env("TESTBOT_JOB_TOKEN")?;
    let id: i64 = env("TESTBOT_JOB_ID")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_JOB_ID is not a job id".into()))?;
    let attempt: u32 = env("TESTBOT_ATTEMPT")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_ATTEMPT is not an attempt number".into()))?;
    let with_token = Globals {
        server: g.server.clone(),
        token: Some(token),
        ca_file: g.ca_file.clone(),
    };
    let dir = std::env::var_os("TESTBOT_JOB_FILE")
        .map(PathBuf::from)
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    Ok(Job {
        id,
        attempt,
        client: with_token.client()?,
        reserved: dir.join(format!("tests-reserved-{id}-{attempt}.txt")),
    })
}

/// Calls the server, trying again for up to a minute while it is away or
/// failing (a restart): a job's tests should not fail for that.
fn call<T>(what: &str, f: impl Fn() -> Result<T, ClientError>) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_refusal() && start.elapsed() < Duration::from_secs(60) => {
                eprintln!("testbot tests {what}: {e}; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Exit(
            2,
            format!("cannot read the test list {}: {e}", path.display()),
        )
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn next(g: &Globals, list: &Path, max: Option<u32>, repro: Option<String>) -> anyhow::Result<u8> {
    let job = job(g)?;
    let path = format!("/api/v1/jobs/{}/tests/next", job.id);
    let mut ask = TestsNext {
        max,
        wait: Some(30.0),
        repro,
        ..Default::default()
    };
    loop {
        let batch: TestsBatch = call("next", || job.client.post(&path, &ask))?;
        if batch.need_list {
            ask.tests = Some(read_list(list)?);
            continue;
        }
        ask.tests = None;
        ask.repro = None;
        if !batch.tests.is_empty() {
            note_reserved(&job.reserved, &batch.tests);
            let mut out = std::io::stdout().lock();
            for t in &batch.tests {
                writeln!(out, "{t}")?;
            }
            return Ok(0);
        }
        if batch.done {
            return Ok(0);
        }
    }
}

fn note_reserved(path: &Path, tests: &[String]) {
    let mut text = tests.join("\n");
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "testbot tests next: cannot note the batch in {} ({e}); `report --junit` will not match it",
            path.display()
        );
    }
}

fn report(g: &Globals, junit: &[PathBuf]) -> anyhow::Result<u8> {
    let job = job(g)?;
    let results = if junit.is_empty() {
        from_json_lines(std::io::stdin().lock())?
    } else {
        let reserved = std::fs::read_to_string(&job.reserved).unwrap_or_default();
        let reserved: Vec<&str> = reserved.lines().filter(|l| !l.is_empty()).collect();
        let cases = crate::worker::junit::cases(junit).map_err(|e| Exit(2, e))?;
        let (results, unmatched) = match_cases(&reserved, &cases);
        for c in unmatched {
            eprintln!(
                "testbot tests report: the JUnit test case {:?} matches no test this job was given",
                c
            );
        }
        results
    };
    if results.is_empty() {
        return Ok(0);
    }
    let path = format!("/api/v1/jobs/{}/tests/report", job.id);
    let body = TestsReport { results };
    let out: TestsReported = call("report", || job.client.post(&path, &body))?;
    for i in &out.ignored {
        eprintln!("testbot tests report: {:?} not recorded: {}", i.id, i.why);
    }
    for t in &out.retrying {
        eprintln!("testbot tests report: {t:?} failed; queued again to run on another job");
    }
    Ok(0)
}

fn from_json_lines(input: impl BufRead) -> anyhow::Result<Vec<TestResult>> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: TestResult = serde_json::from_str(&line).map_err(|e| {
            Exit(
                2,
                format!(
                    "stdin line {}: not a test result ({e}); expected \
                     {{\"id\": \"...\", \"outcome\": \"passed|failed|skipped|error\", \
                     \"duration_ms\": N, \"message\": \"...\"}}",
                    i + 1
                ),
            )
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Matches JUnit cases to reserved ids: exactly by one of the case's names
/// (`FILE::NAME`, `CLASSNAME.NAME`, `CLASSNAME::NAME`, `NAME`), else by the
/// normalized forms (`/`, `::` and `.py::` as dots). Returns the results
/// and the names of cases that matched nothing.
fn match_cases(
    reserved: &[&str],
    cases: &[crate::worker::junit::Case],
) -> (Vec<TestResult>, Vec<String>) {
    use crate::worker::junit::normalized;
    let exact: HashSet<&str> = reserved.iter().copied().collect();
    let by_norm: std::collections::HashMap<String, &str> =
        reserved.iter().map(|r| (normalized(r), *r)).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut unmatched = Vec::new();
    for c in cases {
        let names = c.names();
        let id = names
            .iter()
            .find(|n| exact.contains(n.as_str()))
            .map(|n| n.to_string())
            .or_else(|| {
                names
                    .iter()
                    .find_map(|n| by_norm.get(&normalized(n)).map(|r| r.to_string()))
            });
        match id {
            Some(id) if seen.insert(id.clone()) => out.push(TestResult {
                id,
                outcome: c.outcome,
                duration_ms: c.ms,
                message: c.message.clone(),
            }),
            Some(_) => {}
            None => unmatched.push(names.last().cloned().unwrap_or_default()),
        }
    }
    (out, unmatched)
}

fn finish(g: &Globals, json: bool) -> anyhow::Result<u8> {
    let job = job(g)?;
    let path = format!("/api/v1/jobs/{}/tests/finish", job.id);
    let out: JobTests = call("finish", || job.client.post(&path, &serde_json::json!({})))?;
    let _ = std::fs::remove_file(&job.reserved);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!(
            "testbot: job {} (attempt {}) ran {} tests: {} passed, {} failed, {} errors, {} skipped; \
             {} flaky, {} failing for good, {} queued again for other jobs",
            job.id,
            job.attempt,
            out.passed + out.failed + out.error + out.skipped,
            out.passed,
            out.failed,
            out.error,
            out.skipped,
            out.flaky,
            out.failing.len(),
            out.retrying.len()
        );
        for t in &out.failing {
            eprintln!("  failing: {t}");
        }
    }
    Ok(u8::from(!out.failing.is_empty()))
}

fn shard(list: &Path) -> anyhow::Result<u8> {
    let index: u32 = env("TESTBOT_SHARD_INDEX")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_SHARD_INDEX is not a number".into()))?;
    let total: u32 = env("TESTBOT_SHARD_TOTAL")?
        .parse()
        .map_err(|_| Exit(2, "TESTBOT_SHARD_TOTAL is not a number".into()))?;
    let file_set = |var: &str| -> anyhow::Result<HashSet<String>> {
        match std::env::var_os(var) {
            Some(p) => Ok(read_list(Path::new(&p))?.into_iter().collect()),
            None => Ok(HashSet::new()),
        }
    };
    let mine = file_set("TESTBOT_SHARD_TESTS_FILE")?;
    let known = file_set("TESTBOT_SHARD_KNOWN_FILE")?;
    let mut out = std::io::stdout().lock();
    for t in read_list(list)? {
        let runs_here = if known.contains(&t) || mine.contains(&t) {
            mine.contains(&t)
        } else {
            hash_shard(&t, total) == index
        };
        if runs_here {
            writeln!(out, "{t}")?;
        }
    }
    Ok(0)
}

fn stats(g: &Globals, kind: &str, a: StatsArgs) -> anyhow::Result<u8> {
    let client = g.client()?;
    let mut path = format!("/api/v1/tests/{kind}?limit={}", a.limit.max(1));
    if let Some(j) = &a.jobtype {
        path.push_str(&format!("&jobtype={}", query_escape(j)));
    }
    let tests: Vec<TestStat> = client.get(&path)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&tests)?);
        return Ok(0);
    }
    if tests.is_empty() {
        say!(
            "no {} tests{}",
            if kind == "flaky" { "flaky" } else { "timed" },
            a.jobtype
                .as_ref()
                .map(|j| format!(" of jobtype {j}"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    let mut t = Table::new(&[
        "flaky", "runs", "failures", "avg", "recent", "jobtype", "test",
    ]);
    for s in tests {
        t.row(vec![
            s.flaky.to_string(),
            s.runs.to_string(),
            s.failures.to_string(),
            s.avg_ms.map(millis).unwrap_or_else(|| "-".into()),
            s.recent,
            s.jobtype,
            s.id,
        ]);
    }
    t.print();
    Ok(0)
}

fn repro(g: &Globals, build: i64, test: &str) -> anyhow::Result<u8> {
    let client = g.client()?;
    let found: BuildTests = client.get(&format!(
        "/api/v1/builds/{build}/tests?test={}",
        query_escape(test)
    ))?;
    let Some(t) = found.tests.into_iter().next() else {
        return Err(Exit(2, format!("build {build} has no test {test:?}")).into());
    };
    let ran: Vec<String> = t
        .runs
        .iter()
        .map(|r| {
            format!(
                "{} on job {} ({}, attempt {})",
                r.outcome, r.job, r.worker, r.attempt
            )
        })
        .collect();
    say!(
        "# {} (jobtype {}) in build {build}: {}{}",
        t.id,
        t.jobtype,
        t.outcome,
        if ran.is_empty() {
            String::new()
        } else {
            format!("; {}", ran.join(", "))
        }
    );
    match &t.repro {
        Some(cmd) => {
            println!("{cmd}");
            Ok(0)
        }
        None => {
            println!("# its runner gave no command to run one test (`testbot tests next --repro`)");
            println!("{}", shell_quote(&t.id));
            Ok(1)
        }
    }
}

/// A build's tests for people: the totals, then the failing tests (each
/// once, with the jobs and workers that ran it) and the flaky ones, at most
/// `max` of each. Nothing when the build reported no tests.
/// Returns how many of the build's tests were never run.
pub fn print_build_tests(client: &Client, build: i64, max: usize) -> anyhow::Result<u64> {
    let limit = max.clamp(1, 1000);
    let failing: BuildTests = client.get(&format!(
        "/api/v1/builds/{build}/tests?outcome=failing&limit={limit}"
    ))?;
    let t = &failing.totals;
    if t.total == 0 {
        return Ok(0);
    }
    let mut line = format!(
        "build {build}: {} tests: {} passed, {} failed, {} errors, {} skipped",
        t.total, t.passed, t.failed, t.error, t.skipped
    );
    if t.flaky > 0 {
        line.push_str(&format!("; {} flaky", t.flaky));
    }
    if t.pending > 0 {
        line.push_str(&format!("; {} not run yet", t.pending));
    }
    if t.not_run > 0 {
        line.push_str(&format!("; {} never run", t.not_run));
    }
    say!("{line}");
    let ran = |x: &BuildTest| -> String {
        x.runs
            .iter()
            .map(|r| format!("job {} {} {}", r.job, r.worker, r.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for x in &failing.tests {
        let msg = x
            .message
            .as_deref()
            .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("");
        say!("  FAILED {} ({}): {msg}", x.id, ran(x));
    }
    if failing.count > failing.tests.len() as u64 {
        say!(
            "  ... and {} more failing (testbot status --build {build} --json)",
            failing.count - failing.tests.len() as u64
        );
    }
    if t.flaky > 0 {
        let flaky: BuildTests = client.get(&format!(
            "/api/v1/builds/{build}/tests?outcome=flaky&limit={limit}"
        ))?;
        for x in &flaky.tests {
            say!("  FLAKY  {} ({})", x.id, ran(x));
        }
    }
    if t.not_run > 0 {
        let never: BuildTests = client.get(&format!(
            "/api/v1/builds/{build}/tests?outcome=not_run&limit={limit}"
        ))?;
        for x in &never.tests {
            say!("  NOT RUN {} (no job reported it: never handed out, or held by a job that ended without reporting it)", x.id);
        }
    }
    Ok(t.not_run)
}

/// `s` for a URL's query: every byte but the unreserved ones %-encoded.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A duration in milliseconds for people: `350ms`, `1.2s`, `3m05s`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::junit::Case;

    fn case(classname: &str, name: &str, file: Option<&str>) -> Case {
        Case {
            classname: classname.into(),
            name: name.into(),
            file: file.map(str::to_string),
            outcome: TestOutcome::Passed,
            ms: 5,
            message: None,
        }
    }

    #[test]
    fn junit_cases_meet_pytest_go_and_plain_ids() {
        let reserved = [
            "tests/test_a.py::TestC::test_x[1]",
            "tests/test_b.py::test_y",
            "TestParse",
            "pkg.Suite.test_z",
        ];
        let cases = [
            case("tests.test_a.TestC", "test_x[1]", None),
            case("tests.test_b", "test_y", Some("tests/test_b.py")),
            case("example.com/pkg", "TestParse", None),
            case("pkg.Suite", "test_z", None),
            case("other", "test_unknown", None),
        ];
        let (got, unmatched) = match_cases(&reserved, &cases);
        let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, reserved);
        assert_eq!(unmatched, vec!["test_unknown".to_string()]);
    }

    #[test]
    fn json_lines_name_the_bad_line() {
        let input =
            "{\"id\": \"a\", \"outcome\": \"passed\"}\n\n{\"id\": \"b\", \"outcome\": \"maybe\"}\n";
        let err = from_json_lines(input.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("stdin line 3"), "{err}");
        let ok = from_json_lines(
            "{\"id\": \"a\", \"outcome\": \"failed\", \"duration_ms\": 3}".as_bytes(),
        )
        .unwrap();
        assert_eq!(ok[0].outcome, TestOutcome::Failed);
        assert_eq!(ok[0].duration_ms, 3);
    }
}
