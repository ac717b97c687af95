//! `testbot submit`: queue jobs (or a build of them), optionally wait for
//! them and exit by their outcome.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{key_value, Exit, Globals};
use crate::client::{Client, ClientError};
use crate::wire::{parse_duration, Build, BuildSpec, Job, JobSpec, Props, Worker};

#[derive(clap::Args)]
pub struct Args {
    /// The jobtypes to run, one job each.
    #[arg(required = true, value_name = "JOBTYPE")]
    jobtypes: Vec<String>,
    /// A platform requirement: KEY=PATTERN (`*` matches any run of
    /// characters, A|B one of), KEY>=V, KEY>V, KEY<=V, KEY<V (versions and
    /// numbers compare as such), KEY!=V, KEY (present) or KEY! (absent).
    #[arg(short = 'p', long = "platform", value_name = "EXPR", value_parser = requirement)]
    platform: Vec<(String, String)>,
    /// A param, given to the command as $TESTBOT_PARAM_KEY.
    #[arg(short = 'P', long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
    params: Vec<(String, String)>,
    /// Put the jobs in a new build with this name.
    #[arg(long, value_name = "NAME")]
    build: Option<String>,
    /// Build metadata (revision, branch, URL...); with --build.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value, requires = "build")]
    meta: Vec<(String, String)>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Kill the job after this long (e.g. 90s, 10m, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    timeout: Option<Duration>,
    /// Runs allowed when workers are lost under the job (default 3).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// One job per distinct platform among the workers with the jobtype.
    #[arg(long)]
    each_platform: bool,
    /// With --each-platform: the properties that make platforms distinct
    /// (default: all but hostname).
    #[arg(
        long,
        value_name = "KEY,...",
        value_delimiter = ',',
        requires = "each_platform"
    )]
    platform_keys: Vec<String>,
    /// One job per combination: `--matrix python.version=3.11,3.12
    /// --matrix os.family=linux,macos` makes four, each requiring its values.
    #[arg(long, value_name = "KEY=V1,V2,...", value_parser = key_value)]
    matrix: Vec<(String, String)>,
    /// Split each jobtype into N jobs with TESTBOT_SHARD_INDEX/TOTAL, and a
    /// TESTBOT_SHARD_TESTS_FILE balanced by earlier runs' test durations.
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
    /// Rerun a failed job up to N times; passing on a rerun marks it flaky.
    #[arg(long, value_name = "N")]
    retry_failed: Option<u32>,
    /// Wait until every job ends; exit 0 only if all passed.
    #[arg(long)]
    wait: bool,
    /// Wait and stream the jobs' logs.
    #[arg(long)]
    follow: bool,
    /// Print the jobs as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    let specs = make_specs(&client, &a)?;
    // Sharded jobs go in a build, so their tests are counted together.
    let build = a.build.clone().or_else(|| {
        a.shards
            .map(|n| format!("{} ({n} shards)", a.jobtypes.join(" ")))
    });
    let jobs: Vec<Job> = match &build {
        Some(name) => {
            let spec = BuildSpec {
                name: name.clone(),
                meta: a
                    .meta
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                jobs: specs,
                extra: Default::default(),
            };
            let build: Build = client.submit("/api/v1/builds", &spec)?;
            if !a.json {
                eprintln!(
                    "build {} ({}) queued",
                    build.id,
                    super::visible(&build.name)
                );
            }
            build.jobs
        }
        None => client.submit("/api/v1/jobs", &specs)?,
    };
    for j in &jobs {
        if let Some(w) = &j.warning {
            eprintln!("warning: job {} ({}): {w}", j.id, j.jobtype);
        }
    }
    if !(a.wait || a.follow) {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&jobs)?);
        } else {
            for j in &jobs {
                println!("{}", j.id);
            }
        }
        return Ok(0);
    }
    // The ids at once, so that an interrupted wait leaves them known
    // (stderr: stdout holds the final lines or the JSON).
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    eprintln!("queued: {}", ids.join(" "));
    let followers = if a.follow {
        // With --json the logs go to stderr: stdout holds only the JSON.
        follow_logs(&client, &jobs, a.json)
    } else {
        Vec::new()
    };
    // A live progress line only on a terminal, and not under --follow's
    // log lines; plain lines otherwise.
    let progress = !a.json && !a.follow && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let done = super::wait::wait_for(&client, &jobs, !a.json, progress)?;
    for f in followers {
        let _ = f.join();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    let never_run = super::wait::test_summaries(&client, &done, !a.json);
    Ok(super::wait::exit_code(&done, never_run))
}

/// A timeout: a duration of at least a second.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("a timeout must be at least 1s, not {s:?}"));
    }
    Ok(d)
}

fn requirement(s: &str) -> Result<(String, String), String> {
    crate::matching::parse_expression(s).map_err(|e| e.to_string())
}

fn make_specs(client: &Client, a: &Args) -> anyhow::Result<Vec<JobSpec>> {
    // One condition per property: a second would silently replace the
    // first (`-p os.family=linux -p os.family=windows`).
    for (i, (k, _)) in a.platform.iter().enumerate() {
        if a.platform[..i].iter().any(|(seen, _)| seen == k) {
            return Err(Exit(
                2,
                format!("-p: two conditions on {k:?}; give one (KEY=A|B matches either value)"),
            )
            .into());
        }
    }
    for (i, (k, _)) in a.params.iter().enumerate() {
        if a.params[..i].iter().any(|(seen, _)| seen == k) {
            return Err(Exit(2, format!("-P: the param {k:?} is given twice")).into());
        }
    }
    let requirements: Props = a.platform.iter().cloned().collect();
    let params: Props = a.params.iter().cloned().collect();
    if a.shards == Some(0) {
        return Err(Exit(2, "--shards must be at least 1".into()).into());
    }
    let workers: Vec<Worker> = if a.each_platform {
        client.get("/api/v1/workers")?
    } else {
        Vec::new()
    };
    let mut specs = Vec::new();
    for jobtype in &a.jobtypes {
        let bases: Vec<Props> = if a.each_platform {
            let found = distinct_platforms(&workers, jobtype, &requirements, &a.platform_keys);
            if found.is_empty() {
                return Err(Exit(
                    2,
                    format!("--each-platform: no registered worker has the jobtype {jobtype:?} with a fitting platform"),
                )
                .into());
            }
            found
        } else {
            vec![requirements.clone()]
        };
        let platforms = matrix(&bases, &a.matrix);
        for platform in platforms {
            let shards = a.shards.unwrap_or(1);
            for i in 0..shards {
                specs.push(JobSpec {
                    jobtype: jobtype.clone(),
                    platform: platform.clone(),
                    params: params.clone(),
                    priority: a.priority,
                    timeout: a.timeout,
                    max_attempts: a.max_attempts,
                    shard_index: a.shards.map(|_| i),
                    shard_total: a.shards,
                    retry_failed: a.retry_failed,
                    ..Default::default()
                });
            }
        }
    }
    Ok(specs)
}

/// The cross product of `bases` with every `--matrix` key's values.
fn matrix(bases: &[Props], axes: &[(String, String)]) -> Vec<Props> {
    let mut out = bases.to_vec();
    for (key, values) in axes {
        let values: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        out = out
            .iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.insert(key.clone(), v.to_string());
                    p
                })
            })
            .collect();
    }
    out
}

/// The distinct platforms, by the properties that count, of the workers
/// that have `jobtype` and fit `requirements`; each returned as exact
/// requirements.
fn distinct_platforms(
    workers: &[Worker],
    jobtype: &str,
    requirements: &Props,
    keys: &[String],
) -> Vec<Props> {
    let mut seen = BTreeSet::new();
    for w in workers
        .iter()
        .filter(|w| w.jobtypes.iter().any(|t| t == jobtype))
    {
        for p in &w.platforms {
            if !crate::matching::platform_matches(requirements, p) {
                continue;
            }
            let distinct: Props = p
                .iter()
                .filter(|(k, _)| {
                    if keys.is_empty() {
                        k.as_str() != "hostname"
                    } else {
                        keys.contains(k)
                    }
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            seen.insert(distinct);
        }
    }
    // A platform that lacks a property another has requires it absent:
    // else the job for the smaller platform could run on the larger one
    // (its properties are a subset), and the smaller one go untested.
    let keys: BTreeSet<String> = seen.iter().flat_map(|p| p.keys().cloned()).collect();
    seen.into_iter()
        .map(|mut p| {
            for k in &keys {
                if !p.contains_key(k) && !requirements.contains_key(k) {
                    p.insert(k.clone(), "!".into());
                }
            }
            for (k, v) in requirements {
                p.entry(k.clone()).or_insert_with(|| v.clone());
            }
            p
        })
        .collect()
}

/// One thread per job streaming its log to stdout (stderr with
/// `to_stderr`), each line prefixed by the job when there are several.
fn follow_logs(client: &Client, jobs: &[Job], to_stderr: bool) -> Vec<std::thread::JoinHandle<()>> {
    let prefix = jobs.len() > 1;
    let out = Arc::new(std::sync::Mutex::new(()));
    jobs.iter()
        .map(|j| {
            let client = client.clone();
            let id = j.id;
            let out = out.clone();
            std::thread::spawn(move || follow_one(&client, id, prefix, to_stderr, &out))
        })
        .collect()
}

fn follow_one(client: &Client, id: i64, prefix: bool, to_stderr: bool, out: &std::sync::Mutex<()>) {
    // Wait for the job to start (or end without starting): held by the
    // server, answered when it does, not asked again and again.
    let attempt = loop {
        let started: crate::client::Result<Vec<Job>> = client.post(
            "/api/v1/jobs/wait",
            &serde_json::json!({"ids": [id], "until": "started", "wait": 30}),
        );
        match started.map(|jobs| jobs.into_iter().next()) {
            Ok(Some(j)) if j.attempt > 0 => break j.attempt,
            Ok(Some(j)) if j.state.is_final() => return,
            Ok(_) => {}
            Err(ClientError::Refused { .. }) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let path = format!("/api/v1/jobs/{id}/log?follow=true&attempt={attempt}");
    let reader: Box<dyn std::io::Read> =
        match client.get_raw(&path, Duration::from_secs(7 * 24 * 3600)) {
            Ok(resp) => Box::new(resp.into_reader()),
            Err(e) if e.is_lasting_refusal() => return,
            // Not there now: the follower tries again (from byte 0).
            Err(_) => Box::new(std::io::empty()),
        };
    let mut pending: Vec<u8> = Vec::new();
    let emit = |line: &[u8]| {
        let _guard = out.lock().unwrap();
        let mut sink: Box<dyn Write> = if to_stderr {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        };
        if prefix {
            let _ = write!(sink, "[{id}] ");
        }
        let _ = sink.write_all(line);
        let _ = sink.flush();
    };
    let mut lines = |bytes: &[u8]| -> std::io::Result<()> {
        pending.extend_from_slice(bytes);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            emit(&line);
        }
        Ok(())
    };
    // A server that goes away mid-log: the follower goes on from the next
    // one, or this one when it is back, from the byte it stopped at.
    if let Err(super::logs::Followed::Lost(why)) =
        super::logs::follow(client, id, attempt, reader, &mut lines)
    {
        eprintln!("testbot: {why}");
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        emit(&pending);
    }
}
