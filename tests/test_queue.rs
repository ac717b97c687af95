//! The test queue end to end: real servers (SQLite and PostgreSQL), real
//! workers, and a synthetic suite driven by the documented CLI loop
//! (`testbot tests next | ... | testbot tests report`, `tests finish`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

/// A suite in `sh`: each test's id says what it does. `pass_*` passes,
/// `fail_*` always fails, `flaky_*` fails the first time it runs anywhere
/// and passes after, `slow_*` takes a tenth of a second, `hang_*` hangs. Every run is
/// appended to `runs.log` as "ID JOB ATTEMPT".
fn write_suite(dir: &Path, tests: &[String]) {
    std::fs::write(dir.join("all.txt"), tests.join("\n") + "\n").unwrap();
    let script = r#"set -e
cd "$SUITE"
while batch=$(testbot tests next --list all.txt --repro 'suite-run {id}') && [ -n "$batch" ]; do
  for t in $batch; do
    echo "$t $TESTBOT_JOB_ID $TESTBOT_ATTEMPT" >> runs.log
    case $t in
      slow_*) sleep 0.1; o=passed ;;
      hang_*) sleep 120; o=passed ;;
      fail_*) o=failed ;;
      flaky_*) if mkdir "flaked-$t" 2>/dev/null; then o=failed; else o=passed; fi ;;
      *) o=passed ;;
    esac
    printf '{"id":"%s","outcome":"%s","duration_ms":7,"message":"%s says %s"}\n' "$t" "$o" "$t" "$o"
  done | testbot tests report
done
testbot tests finish
"#;
    std::fs::write(dir.join("suite.sh"), script).unwrap();
}

fn suite_worker(dir: &Path, server: &str, name: &str, slots: u32) -> Worker {
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    Worker::start(
        dir,
        server,
        name,
        &format!(
            "slots = {slots}\n[jobtypes.suite]\ncommand = \"PATH={bin_dir}:$PATH SUITE={} sh {}/suite.sh\"\n",
            dir.display(),
            dir.display()
        ),
    )
}

fn build_tests(server: &Server, build: i64) -> Value {
    server.get(&format!("/api/v1/builds/{build}/tests?limit=10000"))
}

/// The build id of a `submit --build`, from its jobs.
fn build_of(server: &Server, job: i64) -> i64 {
    server.job(job)["build"].as_i64().expect("a build")
}

/// Runs per test id, from the suite's log.
fn runs(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
    {
        let id = line.split_whitespace().next().unwrap_or_default();
        *out.entry(id.to_string()).or_default() += 1;
    }
    out
}

/// SQLite (`None`: a file in the test's directory), then PostgreSQL when
/// there is a cluster.
fn databases() -> Vec<Option<String>> {
    let mut dbs = vec![None];
    dbs.extend(postgres_db().map(Some));
    dbs
}

#[test]
fn the_cli_loop_runs_every_test_once_and_retries_a_failure_on_another_job() {
    for (n, db) in databases().into_iter().enumerate() {
        let dir = tempdir();
        let db = db.unwrap_or_else(|| dir.path().join("testbot.db").display().to_string());
        let server = Server::start_db(dir.path(), &db, &[]);
        let mut tests: Vec<String> = (0..40).map(|i| format!("pass_{i:02}")).collect();
        tests.extend(["fail_always".into(), "flaky_once".into()]);
        tests.extend((0..6).map(|i| format!("slow_{i}")));
        write_suite(dir.path(), &tests);
        let _w1 = suite_worker(dir.path(), &server.url, "w1", 1);
        let _w2 = suite_worker(dir.path(), &server.url, "w2", 1);
        wait_online(&server, "w1");
        wait_online(&server, "w2");
        let out = server.cli(&[
            "submit",
            "suite",
            "--shards",
            "3",
            "--retry-failed",
            "1",
            "--build",
            "one",
            "--wait",
        ]);
        assert_eq!(out.status.code(), Some(1), "db {n}: {}", text(&out));
        assert!(
            stdout(&out).contains("fail_always"),
            "the failing test is named: {}",
            text(&out)
        );
        // On a line of its own, not after an escaped line break.
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.trim_start().starts_with("FAILED ")),
            "{}",
            text(&out)
        );
        assert!(!stdout(&out).contains("\\n"), "{}", text(&out));
        let ids: Vec<i64> = server
            .get("/api/v1/jobs?limit=10")
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect();
        let build = build_of(&server, ids[0]);
        let t = build_tests(&server, build);
        let totals = &t["totals"];
        assert_eq!(totals["total"], 48, "db {n}: {t}");
        assert_eq!(totals["passed"], 47, "db {n}: {totals}");
        assert_eq!(totals["failed"], 1);
        assert_eq!(totals["flaky"], 1);
        assert_eq!(totals["pending"], 0);
        // Each test once, but the failing ones a second time, elsewhere.
        let ran = runs(dir.path());
        for id in &tests {
            let want = if id.starts_with("fail_") || id.starts_with("flaky_") {
                2
            } else {
                1
            };
            assert_eq!(ran.get(id), Some(&want), "db {n}: runs of {id}: {ran:?}");
        }
        let failing = &t["tests"][0];
        assert_eq!(failing["id"], "fail_always", "failing first: {t}");
        let jobs: Vec<&Value> = failing["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["job"])
            .collect();
        assert_eq!(jobs.len(), 2);
        assert_ne!(jobs[0], jobs[1], "a retry runs on another job: {failing}");
        assert_eq!(failing["repro"], "suite-run fail_always");
        let flaky = t["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "flaky_once")
            .unwrap();
        assert_eq!(flaky["flaky"], true, "{flaky}");
        assert_eq!(flaky["outcome"], "passed");
        // Only the job that ran the failing test last failed.
        let states: Vec<String> = ids
            .iter()
            .map(|id| server.job(*id)["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            states.iter().filter(|s| *s == "failed").count(),
            1,
            "db {n}: {states:?}"
        );
        // The results keep counts, not per-test durations.
        for id in &ids {
            let result = &server.job(*id)["result"];
            assert!(result["tests"]["durations"].is_null(), "{result}");
        }
        let repro = server.cli(&["tests", "repro", &build.to_string(), "fail_always"]);
        assert!(
            stdout(&repro).contains("suite-run fail_always"),
            "{}",
            text(&repro)
        );
        // The build page lists the failing test once, with both its runs.
        let page = http_get(&format!("{}/builds/{build}", server.url)).body;
        assert_eq!(page.matches(">fail_always<").count(), 1, "{page}");
        assert!(page.contains("48 tests: 47 passed, 1 failed"), "{page}");
        assert!(
            page.contains("Flaky tests") && page.contains("flaky_once"),
            "{page}"
        );
        let status = stdout(&server.cli(&["status", "--build", &build.to_string()]));
        assert!(status.contains("FAILED fail_always"), "{status}");
        assert!(status.contains("FLAKY  flaky_once"), "{status}");
        let flaky = server.cli(&["tests", "flaky", "--json"]);
        let flaky: Value = serde_json::from_str(&stdout(&flaky)).unwrap();
        assert_eq!(flaky[0]["id"], "flaky_once", "{flaky}");

        // A test added since: it runs, and its failure fails the build.
        std::fs::remove_file(dir.path().join("runs.log")).unwrap();
        let mut more: Vec<String> = tests
            .iter()
            .filter(|t| !t.starts_with("fail_"))
            .cloned()
            .collect();
        more.push("fail_new_test".into());
        write_suite(dir.path(), &more);
        let out = server.cli(&[
            "submit", "suite", "--shards", "2", "--build", "two", "--wait",
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "db {n}: the new failing test fails the build: {}",
            text(&out)
        );
        assert_eq!(runs(dir.path()).get("fail_new_test"), Some(&1));
        // And without failures the build passes.
        more.pop();
        write_suite(dir.path(), &more);
        let out = server.cli(&[
            "submit", "suite", "--shards", "2", "--build", "three", "--wait",
        ]);
        assert_eq!(out.status.code(), Some(0), "db {n}: {}", text(&out));
    }
}

#[test]
fn a_worker_killed_mid_build_loses_no_test_and_records_none_twice() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tests: Vec<String> = (0..40).map(|i| format!("slow_{i:02}")).collect();
    write_suite(dir.path(), &tests);
    let mut w1 = suite_worker(dir.path(), &server.url, "w1", 1);
    let _w2 = suite_worker(dir.path(), &server.url, "w2", 1);
    wait_online(&server, "w1");
    wait_online(&server, "w2");
    let ids = server.submit(&["suite", "--shards", "2", "--build", "chaos"]);
    let build = build_of(&server, ids[0]);
    // Once both shards have reported some tests, w1 dies.
    let started = wait_until(30 * SEC, || {
        let t = build_tests(&server, build);
        let reported: std::collections::BTreeSet<i64> = t["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|x| {
                x["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["job"].as_i64().unwrap())
            })
            .collect();
        reported.len() == 2
    });
    assert!(
        started,
        "both shards report: {}",
        build_tests(&server, build)
    );
    w1.kill9();
    for id in &ids {
        let job = server.wait_final(*id, 60 * SEC);
        assert_eq!(job["state"], "passed", "{job}");
    }
    let t = build_tests(&server, build);
    assert_eq!(t["totals"]["total"], 40, "{t}");
    assert_eq!(t["totals"]["passed"], 40, "{t}");
    for test in t["tests"].as_array().unwrap() {
        assert_eq!(
            test["runs"].as_array().unwrap().len(),
            1,
            "recorded once: {test}"
        );
    }
}

#[test]
fn job_tokens_are_for_their_own_job_and_attempt_only() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let out = dir.path().join("tokens");
    std::fs::create_dir(&out).unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "slots = 2\n[jobtypes.tok]\ncommand = \"echo $TESTBOT_JOB_TOKEN > {}/$TESTBOT_JOB_ID; sleep 30\"\n",
            out.display()
        ),
    );
    wait_online(&server, "w");
    let ids = server.submit(&["tok", "--shards", "2"]);
    assert!(wait_until(20 * SEC, || ids
        .iter()
        .all(|id| out.join(id.to_string()).exists())));
    let token = |id: i64| {
        std::fs::read_to_string(out.join(id.to_string()))
            .unwrap()
            .trim()
            .to_string()
    };
    let (a, b) = (ids[0], ids[1]);
    let next = |job: i64, token: &str| {
        http(
            "POST",
            &format!("{}/api/v1/jobs/{job}/tests/next", server.url),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            Some(br#"{"tests": ["x"], "wait": 0}"#),
        )
    };
    let ok = next(a, &token(a));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["tests"][0], "x");
    let other = next(b, &token(a));
    assert_eq!(other.status, 403, "another job's token: {}", other.body);
    assert!(
        other.body.contains(&format!("for job {a}, not job {b}")),
        "{}",
        other.body
    );
    let forged = next(a, &token(a).replace(".1.", ".2."));
    assert_eq!(forged.status, 401, "{}", forged.body);
    let none = http(
        "POST",
        &format!("{}/api/v1/jobs/{a}/tests/next", server.url),
        &[],
        Some(b"{}"),
    );
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.body.contains("TESTBOT_JOB_TOKEN"), "{}", none.body);
    // Once the attempt is over, its token is worth nothing.
    server.cli(&["cancel", &a.to_string()]);
    server.wait_final(a, 20 * SEC);
    let late = next(a, &token(a));
    assert_eq!(late.status, 409, "{}", late.body);
    // A job that is not sharded has no queue.
    server.cli(&["cancel", &b.to_string()]);
}

#[test]
fn static_shards_run_tests_no_plan_knows_on_the_shard_their_id_hashes_to() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    // Build 1 reports JUnit for a..f; build 2's list adds g and h.
    std::fs::write(
        dir.path().join("junit.sh"),
        r#"set -e
cd "$SUITE"
if [ -n "$TESTBOT_SHARD_TESTS_FILE" ]; then
  testbot tests shard --list all.txt > "picked-$TESTBOT_SHARD_INDEX.txt"
fi
{
  echo '<testsuite name="s">'
  for t in a b c d e f; do echo "<testcase classname=\"s\" name=\"$t\" time=\"0.$TESTBOT_SHARD_INDEX\"/>"; done
  echo '</testsuite>'
} > "$TESTBOT_JUNIT_DIR/r.xml"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("all.txt"),
        "s.a\ns.b\ns.c\ns.d\ns.e\ns.f\ns.g\ns.h\n",
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.junit]\ncommand = \"PATH={bin_dir}:$PATH SUITE={} sh {}/junit.sh\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    );
    wait_online(&server, "w");
    for id in server.submit(&["junit", "--shards", "3", "--build", "first"]) {
        server.wait_final(id, 20 * SEC);
    }
    // Each test once in the build, however many shards reported it.
    let ids = server.submit(&["junit", "--shards", "3", "--build", "second"]);
    for id in &ids {
        let job = server.wait_final(*id, 20 * SEC);
        assert_eq!(job["state"], "passed", "{job}");
    }
    let mut picked: Vec<String> = (0..3)
        .flat_map(|i| {
            std::fs::read_to_string(dir.path().join(format!("picked-{i}.txt")))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    picked.sort();
    assert_eq!(
        picked,
        ["s.a", "s.b", "s.c", "s.d", "s.e", "s.f", "s.g", "s.h"],
        "every test on exactly one shard, the new ones too"
    );
    let t = build_tests(&server, build_of(&server, ids[0]));
    assert_eq!(t["totals"]["total"], 6, "{t}");
}

#[test]
fn a_build_whose_jobs_pass_without_running_every_test_does_not_pass() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tests: Vec<String> = (0..6).map(|i| format!("pass_{i}")).collect();
    std::fs::write(dir.path().join("all.txt"), tests.join("\n") + "\n").unwrap();
    // A runner that takes one test, reports it and stops asking.
    std::fs::write(
        dir.path().join("quitter.sh"),
        "set -e\ncd \"$SUITE\"\nt=$(testbot tests next --list all.txt --max 1)\n\
         printf '{\"id\":\"%s\",\"outcome\":\"passed\"}\\n' \"$t\" | testbot tests report\n\
         testbot tests finish\n",
    )
    .unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "quits",
        &format!(
            "[jobtypes.quitter]\ncommand = \"PATH={bin_dir}:$PATH SUITE={} sh {}/quitter.sh\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    );
    wait_online(&server, "quits");
    let out = server.cli(&[
        "submit", "quitter", "--shards", "1", "--build", "q", "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("never ran"), "{}", text(&out));
    assert!(
        stdout(&out).contains("passed"),
        "the job itself passed: {}",
        text(&out)
    );
    let out = server.cli(&["wait", "b1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = server.cli(&["wait", "--json", "b1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_hanging_test_times_out_its_own_shard_only() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let mut tests: Vec<String> = (0..8).map(|i| format!("pass_{i}")).collect();
    tests.push("hang_forever".into());
    write_suite(dir.path(), &tests);
    let _w1 = suite_worker(dir.path(), &server.url, "w1", 1);
    let _w2 = suite_worker(dir.path(), &server.url, "w2", 1);
    wait_online(&server, "w1");
    wait_online(&server, "w2");
    let started = std::time::Instant::now();
    let out = server.cli(&[
        "submit",
        "suite",
        "--shards",
        "2",
        "--timeout",
        "30s",
        "--build",
        "hang",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let jobs: Vec<Value> = server
        .get("/api/v1/jobs?limit=10")
        .as_array()
        .unwrap()
        .clone();
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    // The shard running the hanging test times out; the other stops
    // waiting for it once it is held far past its estimate, and passes.
    assert!(states.contains(&"timed_out"), "{states:?}");
    assert!(states.contains(&"passed"), "{states:?}: {}", text(&out));
    let passed = jobs.iter().find(|j| j["state"] == "passed").unwrap();
    let finished = passed["finished_at"].as_str().unwrap();
    let timed_out = jobs.iter().find(|j| j["state"] == "timed_out").unwrap();
    assert!(
        finished < timed_out["finished_at"].as_str().unwrap(),
        "the other shard ended first: {passed}\n{timed_out}"
    );
    let t = build_tests(&server, build_of(&server, jobs[0]["id"].as_i64().unwrap()));
    assert_eq!(t["totals"]["passed"], 8, "{t}");
    assert_eq!(t["totals"]["not_run"], 1, "{t}");
    assert!(started.elapsed() < 60 * SEC);
}
