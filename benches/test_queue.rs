//! The test queue: how evenly 4 shards finish, and what each test costs
//! the server. `cargo bench --bench test_queue` (needs python3).
//!
//! Balance: two synthetic suites of 2,000 tests with skewed durations,
//! about 20 s each: "scattered" (Zipf exponent 0.6: the longest 0.4 s, the
//! slow ones spread through the list) and "slowest first" (Zipf exponent
//! 1.0: the longest 2.4 s, half an ideal shard, and the list in order of
//! duration, as when a suite's slow module comes first), as 4 shards on a
//! worker with 4 slots; each shard's command is a small Python runner that takes batches
//! from the queue, sleeps each test's duration and reports. The first run
//! has no history; the second has the first's. Each run's figure is the
//! makespan (first test started to last test ended, over all shards) over
//! the ideal (the tests' measured time / 4). For comparison, the same
//! suite's static split by position (the old first run) and by recorded
//! durations (the old later runs), computed from the durations.
//!
//! Overhead: 20,000 tests that take no time, 4 shards, batches as the
//! server chooses them: the server's CPU seconds (user + system, from
//! /proc) per test reserved and reported, as tests per CPU second.

mod common;

use common::*;
use serde_json::{json, Value};

const RUNNER: &str = r#"
import http.client, json, os, sys, time, urllib.parse
durations = {}
with open(sys.argv[1]) as f:
    for line in f:
        name, secs = line.split()
        durations[name] = float(secs)
names = [l.split()[0] for l in open(sys.argv[1])]
server = os.environ["TESTBOT_SERVER"].split(",")[0]
job = os.environ["TESTBOT_JOB_ID"]
token = os.environ["TESTBOT_JOB_TOKEN"]
# One connection for the whole run, as the pytest plugin keeps one.
url = urllib.parse.urlsplit(server)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
def call(what, body):
    conn.request("POST", "/api/v1/jobs/%s/tests/%s" % (job, what), body=json.dumps(body),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit("%s: %d %s" % (what, r.status, data))
    return json.loads(data)
first = last = None
busy = 0.0
tests = batches = 0
ask = {"tests": names, "wait": 30}
while True:
    b = call("next", ask)
    ask = {"wait": 30}
    if b["need_list"]:
        ask["tests"] = names
        continue
    if b["tests"]:
        batches += 1
        results = []
        for t in b["tests"]:
            start = time.time()
            if first is None:
                first = start
            if durations[t] > 0:
                time.sleep(durations[t])
            end = time.time()
            busy += end - start
            last = end
            tests += 1
            results.append({"id": t, "outcome": "passed", "duration_ms": int(round((end - start) * 1000))})
        call("report", {"results": results})
    elif b["done"]:
        break
call("finish", {})
with open(os.environ["TESTBOT_RESULT_FILE"], "w") as f:
    json.dump({"bench": {"first": first, "last": last, "busy": busy, "tests": tests, "batches": batches}}, f)
"#;

/// Zipf-like durations (`exponent`) summing to about `total_s`, named
/// `PREFIX####` by rank; in rank order, or scattered by a fixed permutation.
fn suite(prefix: &str, n: usize, total_s: f64, exponent: f64, scatter: bool) -> Vec<(String, f64)> {
    let raw: Vec<f64> = (0..n)
        .map(|i| 1.0 / ((i + 1) as f64).powf(exponent))
        .collect();
    let scale = total_s / raw.iter().sum::<f64>();
    let mut out = vec![(String::new(), 0.0); n];
    for (rank, d) in raw.iter().enumerate() {
        // A multiplicative permutation of 0..n (n and 797 are coprime).
        let pos = if scatter { (rank * 797 + 13) % n } else { rank };
        out[pos] = (format!("{prefix}{rank:04}"), d * scale);
    }
    out
}

/// Longest shard / (total / shards) of a split.
fn ratio(shards: &[Vec<f64>]) -> f64 {
    let times: Vec<f64> = shards.iter().map(|s| s.iter().sum()).collect();
    let total: f64 = times.iter().sum();
    times.iter().cloned().fold(0.0, f64::max) / (total / shards.len() as f64)
}

fn static_by_position(tests: &[(String, f64)], n: usize) -> f64 {
    let mut shards = vec![Vec::new(); n];
    for (i, (_, d)) in tests.iter().enumerate() {
        shards[i % n].push(*d);
    }
    ratio(&shards)
}

fn static_by_duration(tests: &[(String, f64)], n: usize) -> f64 {
    let known: Vec<(String, Option<u64>)> = tests
        .iter()
        .map(|(t, d)| (t.clone(), Some((d * 1000.0) as u64)))
        .collect();
    let plan = testbot::shards::plan(&known, n as u32);
    let by_name: std::collections::HashMap<&str, f64> =
        tests.iter().map(|(t, d)| (t.as_str(), *d)).collect();
    let shards: Vec<Vec<f64>> = plan
        .iter()
        .map(|s| s.iter().map(|t| by_name[t.as_str()]).collect())
        .collect();
    ratio(&shards)
}

struct Run {
    makespan: f64,
    busy: f64,
    batches: u64,
    tests: u64,
}

fn run(url: &str, jobtype: &str, shards: u32) -> Run {
    let jobs: Vec<Value> = (0..shards)
        .map(|i| json!({"jobtype": jobtype, "shard_index": i, "shard_total": shards}))
        .collect();
    let submitted = submit(url, json!(jobs));
    let mut first = f64::MAX;
    let mut last = 0f64;
    let mut busy = 0.0;
    let mut batches = 0;
    let mut tests = 0;
    for j in submitted.as_array().unwrap() {
        let done = wait_final(url, j["id"].as_i64().unwrap());
        assert_eq!(done["state"], "passed", "{done}");
        let b = &done["result"]["bench"];
        if let (Some(f), Some(l)) = (b["first"].as_f64(), b["last"].as_f64()) {
            first = first.min(f);
            last = last.max(l);
        }
        busy += b["busy"].as_f64().unwrap_or(0.0);
        batches += b["batches"].as_u64().unwrap_or(0);
        tests += b["tests"].as_u64().unwrap_or(0);
    }
    Run {
        makespan: last - first,
        busy,
        batches,
        tests,
    }
}

/// The store alone (SQLite, in this process): 20,000 instant tests
/// through `tests_next` and `tests_report` for 4 shards, as the HTTP
/// handlers call them; CPU microseconds per test.
fn store_alone(dir: &std::path::Path) -> f64 {
    use testbot::server::store::{Dispatch, Jobs, SqliteStore, TestQueue, TestsStep, Workers};
    use testbot::wire::*;
    let store = SqliteStore::open(&dir.join("alone.db")).unwrap();
    let now = testbot::time::now_ms();
    let reg: Registration = serde_json::from_value(json!({
        "name": "w", "jobtypes": ["instant"], "platforms": [{}], "slots": 4, "heartbeat_interval_ms": 60000
    }))
    .unwrap();
    store.register(&reg, None, &|_| false, now).unwrap();
    let specs: Vec<JobSpec> = (0..4)
        .map(|i| {
            serde_json::from_value(
                json!({"jobtype": "instant", "shard_index": i, "shard_total": 4}),
            )
            .unwrap()
        })
        .collect();
    store.submit(None, specs, now, None).unwrap();
    let jobs: Vec<Job> = (0..4)
        .map(|_| match store.claim("w", None, now).unwrap() {
            testbot::server::store::Claim::Job(j) => *j,
            other => panic!("no job: {other:?}"),
        })
        .collect();
    let list: Vec<String> = (0..20_000).map(|i| format!("i{i:05}")).collect();
    let cpu = cpu_secs(std::process::id());
    let mut tests = 0;
    let t0 = std::time::Instant::now();
    let ask = TestsNext {
        tests: Some(list.clone()),
        max: Some(1),
        ..Default::default()
    };
    if let TestsStep::Batch(b) = store
        .tests_next(jobs[0].id, jobs[0].attempt, &ask, now)
        .unwrap()
    {
        let results: Vec<TestResult> = b
            .tests
            .into_iter()
            .map(|id| TestResult {
                id,
                outcome: TestOutcome::Passed,
                duration_ms: 0,
                message: None,
            })
            .collect();
        tests += results.len();
        store
            .tests_report(jobs[0].id, jobs[0].attempt, &results, now)
            .unwrap();
    }
    println!(
        "store alone: a list of 20,000 tests merged in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let mut left: Vec<&Job> = jobs.iter().collect();
    let mut first = true;
    while !left.is_empty() {
        left.retain(|j| {
            let ask = TestsNext {
                tests: first.then(|| list.clone()),
                ..Default::default()
            };
            match store.tests_next(j.id, j.attempt, &ask, now).unwrap() {
                TestsStep::Batch(b) if b.need_list => true,
                TestsStep::Batch(b) if b.done => false,
                TestsStep::Batch(b) => {
                    let results: Vec<TestResult> = b
                        .tests
                        .into_iter()
                        .map(|id| TestResult {
                            id,
                            outcome: TestOutcome::Passed,
                            duration_ms: 0,
                            message: None,
                        })
                        .collect();
                    tests += results.len();
                    store.tests_report(j.id, j.attempt, &results, now).unwrap();
                    true
                }
                TestsStep::Wait => true,
            }
        });
        first = false;
    }
    assert_eq!(tests, 20_000);
    (cpu_secs(std::process::id()) - cpu) * 1e6 / tests as f64
}

fn main() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempdir();
    let runner = dir.path().join("runner.py");
    std::fs::write(&runner, RUNNER).unwrap();
    let suites = [
        ("scattered", suite("s", 2000, 20.0, 0.6, true)),
        ("slowest_first", suite("z", 2000, 20.0, 1.0, false)),
    ];
    let mut jobtypes = String::new();
    for (name, tests) in &suites {
        let list = dir.path().join(format!("{name}.txt"));
        std::fs::write(
            &list,
            tests
                .iter()
                .map(|(t, d)| format!("{t} {d:.6}\n"))
                .collect::<String>(),
        )
        .unwrap();
        jobtypes.push_str(&format!(
            "[jobtypes.{name}]\ncommand = \"{python} {} {}\"\n",
            runner.display(),
            list.display()
        ));
    }
    let instant: Vec<String> = (0..20_000).map(|i| format!("i{i:05} 0\n")).collect();
    let instant_list = dir.path().join("instant.txt");
    std::fs::write(&instant_list, instant.concat()).unwrap();
    jobtypes.push_str(&format!(
        "[jobtypes.instant]\ncommand = \"{python} {} {}\"\n",
        runner.display(),
        instant_list.display()
    ));

    let alone = store_alone(dir.path());
    println!("store alone (SQLite, in process): {alone:.0} us of CPU per test");
    if std::env::var_os("STORE_ONLY").is_some() {
        return;
    }
    let (server, url) = serve(dir.path(), &[]);
    let _w = worker(
        dir.path(),
        &url,
        "runner",
        &format!("slots = 4\n{jobtypes}"),
    );
    wait_online(&url, "runner");

    let mut figures = serde_json::Map::new();
    for (name, tests) in &suites {
        let longest = tests.iter().map(|t| t.1).fold(0.0, f64::max);
        println!(
            "suite {name}: {} tests, {:.1} s in all, longest {:.2} s; 4 shards on 4 slots",
            tests.len(),
            tests.iter().map(|t| t.1).sum::<f64>(),
            longest
        );
        let position = static_by_position(tests, 4);
        let by_duration = static_by_duration(tests, 4);
        println!("  static split by position (no history):   {position:.3} (computed)");
        println!("  static split by durations (history):     {by_duration:.3} (computed)");
        figures.insert(
            format!("{name}_static_position"),
            json!((position * 1000.0).round() / 1000.0),
        );
        figures.insert(
            format!("{name}_static_duration"),
            json!((by_duration * 1000.0).round() / 1000.0),
        );
        for label in ["first", "history"] {
            let r = run(&url, name, 4);
            assert_eq!(r.tests, 2000, "every test ran once");
            let ideal = r.busy / 4.0;
            let ratio = r.makespan / ideal;
            println!(
                "  queue, {label:<8} makespan {:.2} s / ideal {:.2} s = {ratio:.3}  ({} batches)",
                r.makespan, ideal, r.batches
            );
            figures.insert(
                format!("{name}_queue_{label}"),
                json!((ratio * 1000.0).round() / 1000.0),
            );
            figures.insert(format!("{name}_queue_{label}_batches"), json!(r.batches));
        }
    }

    let cpu_before = cpu_secs(server.0.id());
    let start = std::time::Instant::now();
    let r = run(&url, "instant", 4);
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(server.0.id()) - cpu_before;
    assert_eq!(r.tests, 20_000);
    let per_cpu_s = r.tests as f64 / cpu.max(0.01);
    println!(
        "overhead: {} tests in {} batches, {wall:.2} s wall; server CPU {cpu:.2} s = {:.0} us per test, {per_cpu_s:.0} tests per CPU second",
        r.tests,
        r.batches,
        cpu * 1e6 / r.tests as f64
    );
    figures.insert("store_alone_us_per_test".into(), json!(alone.round()));
    figures.insert("overhead_tests".into(), json!(r.tests));
    figures.insert("overhead_batches".into(), json!(r.batches));
    figures.insert(
        "overhead_server_cpu_s".into(),
        json!((cpu * 1000.0).round() / 1000.0),
    );
    figures.insert("overhead_tests_per_cpu_s".into(), json!(per_cpu_s.round()));
    println!("{}", Value::Object(figures));
}
