//! `testbot status`: workers, queue, jobs and builds, as tables or JSON.

use super::table::Table;
use super::Globals;
use crate::client::Client;
use crate::wire::{Build, Job, JobState, Summary, Worker};

#[derive(clap::Args)]
pub struct Args {
    /// One job: state, attempt, worker, platform, params, result, log tail.
    #[arg(value_name = "JOB_ID")]
    job: Option<i64>,
    /// List the workers.
    #[arg(long)]
    workers: bool,
    /// List jobs, newest first.
    #[arg(long)]
    jobs: bool,
    /// With --jobs: only jobs in this state.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// With --jobs: at most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// List the latest builds.
    #[arg(long)]
    builds: bool,
    /// One build and its jobs: its id, `7` or `b7`.
    #[arg(long, value_name = "ID", value_parser = super::wait::build_id)]
    build: Option<i64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    if let Some(id) = a.job {
        return show_job(&client, id, a.json);
    }
    if let Some(id) = a.build {
        let mut b: Build = client.get(&format!("/api/v1/builds/{id}"))?;
        if a.json {
            let tests: crate::wire::BuildTests =
                client.get(&format!("/api/v1/builds/{id}/tests?limit=1000"))?;
            if tests.totals.total > 0 {
                b.extra.insert("tests".into(), serde_json::to_value(tests)?);
            }
            println!("{}", serde_json::to_string_pretty(&b)?);
        } else {
            say!("build {}  {}  {}  {}", b.id, b.name, b.state, b.created_at);
            for (k, v) in &b.meta {
                say!(
                    "  {k}: {}",
                    v.as_str().map(str::to_string).unwrap_or(v.to_string())
                );
            }
            jobs_table(&b.jobs).print();
            super::test_queue::print_build_tests(&client, id, usize::MAX)?;
        }
        return Ok(0);
    }
    let mut shown = false;
    if a.workers {
        let w: Vec<Worker> = client.get("/api/v1/workers")?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&w)?);
        } else {
            workers_table(&w).print();
            // Why a worker claims nothing (low disk...), as it said.
            for w in &w {
                if let Some(p) = w.info.get("problem").and_then(|v| v.as_str()) {
                    say!("{}: {p}", w.name);
                }
            }
        }
        shown = true;
    }
    if a.jobs || a.state.is_some() {
        if let Some(s) = &a.state {
            if JobState::parse(s).is_none() {
                return Err(super::Exit(
                    2,
                    format!("unknown state {s:?}; states are queued, running, passed, failed, timed_out, canceled, error"),
                )
                .into());
            }
        }
        let path = format!(
            "/api/v1/jobs?limit={}{}",
            a.limit,
            a.state
                .as_deref()
                .map(|s| format!("&state={s}"))
                .unwrap_or_default()
        );
        let jobs: Vec<Job> = client.get(&path)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&jobs)?);
        } else {
            jobs_table(&jobs).print();
        }
        shown = true;
    }
    if a.builds {
        let builds: Vec<Build> = client.get("/api/v1/builds")?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&builds)?);
        } else {
            builds_table(&builds).print();
        }
        shown = true;
    }
    if !shown {
        let s: Summary = client.get("/api/v1/status")?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            say!(
                "workers: {} online ({} busy, {} idle), {} offline",
                s.workers.online,
                s.workers.busy,
                s.workers.idle,
                s.workers.offline
            );
            let counts: Vec<String> = s
                .jobs
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            if counts.is_empty() {
                say!("jobs:    none");
            } else {
                say!("jobs:    {}", counts.join(", "));
            }
            if !s.builds.is_empty() {
                say!();
                builds_table(&s.builds).print();
            }
        }
    }
    Ok(0)
}

fn show_job(client: &Client, id: i64, json: bool) -> anyhow::Result<u8> {
    let job: Job = client.get(&format!("/api/v1/jobs/{id}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(0);
    }
    let props = |p: &crate::wire::Props| {
        p.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    say!("job {}  {}  {}", job.id, job.jobtype, job.state);
    // Attempts are reruns after lost workers and infrastructure failures,
    // not after a test's failure: say so rather than suggest a retry.
    say!(
        "  attempt:   {} (up to {} when workers are lost)",
        job.attempt,
        job.max_attempts
    );
    say!("  worker:    {}", job.worker.as_deref().unwrap_or("-"));
    if !job.requirements.is_empty() {
        let written: Vec<String> = job
            .requirements
            .iter()
            .map(|(k, v)| crate::matching::display_requirement(k, v))
            .collect();
        say!("  requires:  {}", written.join(" "));
    }
    if let Some(p) = &job.matched_platform {
        say!("  platform:  {}", props(p));
    }
    if !job.params.is_empty() {
        say!("  params:    {}", props(&job.params));
    }
    if let Some(b) = job.build {
        say!("  build:     {b}");
    }
    say!("  created:   {}", job.created_at);
    if let Some(t) = &job.started_at {
        say!("  started:   {t}");
    }
    if let Some(t) = &job.finished_at {
        say!("  finished:  {t}");
    }
    if let Some(r) = &job.reason {
        say!("  reason:    {r}");
    }
    if job.state == JobState::Queued {
        let e: crate::wire::Explanation = client.get(&format!("/api/v1/jobs/{id}/explain"))?;
        say!("  waiting:   {}", e.message);
    }
    if job.flaky {
        say!("  flaky:     passed on rerun {} after failing", job.reruns);
    }
    if let Some(t) = job.test_report() {
        say!(
            "  tests:     {} passed, {} failed, {} errors, {} skipped",
            t.passed,
            t.failed,
            t.errors,
            t.skipped
        );
    }
    for f in job.failed_tests() {
        say!(
            "    FAILED {}: {}",
            f.name,
            f.message.lines().next().unwrap_or("")
        );
    }
    for t in &job.flaky_tests {
        say!("    FLAKY  {t}");
    }
    if let Some(r) = &job.result {
        say!("  result:    {r}");
    }
    if job.attempt > 0 {
        if let Ok(resp) = client.get_raw(
            &format!("/api/v1/jobs/{id}/log"),
            std::time::Duration::from_secs(30),
        ) {
            let text = resp.into_string().unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            if !tail.is_empty() {
                say!("  log (last {} lines):", tail.len());
                for l in tail {
                    say!("    {l}");
                }
            }
        }
    }
    Ok(0)
}

fn jobs_table(jobs: &[Job]) -> Table {
    let mut t = Table::new(&["id", "jobtype", "state", "attempt", "worker", "created"]);
    for j in jobs {
        t.row(vec![
            j.id.to_string(),
            j.jobtype.clone(),
            if j.flaky {
                format!("{} (flaky)", j.state)
            } else {
                j.state.to_string()
            },
            j.attempt.to_string(),
            j.worker.clone().unwrap_or_else(|| "-".into()),
            super::table::short_time(&j.created_at),
        ]);
    }
    t
}

fn workers_table(workers: &[Worker]) -> Table {
    let mut t = Table::new(&["name", "status", "jobtypes", "jobs", "last seen"]);
    for w in workers {
        t.row(vec![
            w.name.clone(),
            w.status.to_string(),
            w.jobtypes.join(","),
            w.jobs
                .iter()
                .map(|j| j.id.to_string())
                .collect::<Vec<_>>()
                .join(","),
            super::table::short_time(&w.last_seen),
        ]);
    }
    t
}

fn builds_table(builds: &[Build]) -> Table {
    let mut t = Table::new(&["id", "name", "state", "jobs", "created"]);
    for b in builds {
        t.row(vec![
            b.id.to_string(),
            b.name.clone(),
            b.state.to_string(),
            {
                let mut counts: Vec<String> =
                    b.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                if b.flaky > 0 {
                    counts.push(format!("{} flaky", b.flaky));
                }
                counts.join(", ")
            },
            super::table::short_time(&b.created_at),
        ]);
    }
    t
}
