//! Test runs across a fleet: builds, fan-out over platforms and matrices,
//! JUnit results, shards balanced by recorded durations, flaky jobs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn a_build_of_two_jobtypes_over_two_workers() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _a = Worker::start(
        dir.path(),
        &server.url,
        "unit-box",
        "[jobtypes.unit]\ncommand = \"echo unit ok\"\n",
    );
    let _b = Worker::start(
        dir.path(),
        &server.url,
        "lint-box",
        "[jobtypes.lint]\ncommand = \"test \\\"$TESTBOT_PARAM_STYLE\\\" = good\"\n",
    );
    wait_online(&server, "unit-box");
    wait_online(&server, "lint-box");

    let out = server.cli(&[
        "submit",
        "--build",
        "green",
        "--meta",
        "revision=r1",
        "--meta",
        "branch=main",
        "-P",
        "style=good",
        "--wait",
        "unit",
        "lint",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let builds = json(&server.cli(&["status", "--builds", "--json"]));
    let green = &builds[0];
    assert_eq!(green["state"], "passed");
    assert_eq!(green["meta"]["branch"], "main");
    assert_eq!(green["counts"]["passed"], 2);
    let full = json(&server.cli(&["status", "--build", &green["id"].to_string(), "--json"]));
    let workers: Vec<&str> = full["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["worker"].as_str().unwrap())
        .collect();
    assert!(
        workers.contains(&"unit-box") && workers.contains(&"lint-box"),
        "{workers:?}"
    );

    let out = server.cli(&[
        "submit",
        "--build",
        "red",
        "-P",
        "style=bad",
        "--wait",
        "unit",
        "lint",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let builds = json(&server.cli(&["status", "--builds", "--json"]));
    assert_eq!(builds[0]["name"], "red");
    assert_eq!(builds[0]["state"], "failed");
    assert_eq!(builds[0]["counts"]["failed"], 1);

    // A build still waiting shows as queued, then canceled when canceled.
    let out = server.cli(&["submit", "--build", "stuck", "--json", "nobody-has-this"]);
    let jobs = json(&out);
    let id = jobs[0]["id"].as_i64().unwrap();
    let b = jobs[0]["build"].as_i64().unwrap();
    assert_eq!(
        server.get(&format!("/api/v1/builds/{b}"))["state"],
        "queued"
    );
    server.cli(&["cancel", &id.to_string()]);
    assert_eq!(
        server.get(&format!("/api/v1/builds/{b}"))["state"],
        "canceled"
    );
}

#[test]
fn each_platform_makes_one_job_per_distinct_platform() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let body = |device: &str| {
        format!("[platform]\ndevice = \"{device}\"\n[jobtypes.unit]\ncommand = \"echo ran on $TESTBOT_WORKER\"\n")
    };
    let _w1 = Worker::start(dir.path(), &server.url, "n900-a", &body("N900"));
    let _w2 = Worker::start(dir.path(), &server.url, "n900-b", &body("N900"));
    let _w3 = Worker::start(dir.path(), &server.url, "ipad", &body("iPad"));
    for w in ["n900-a", "n900-b", "ipad"] {
        wait_online(&server, w);
    }
    let out = server.cli(&["submit", "--each-platform", "--json", "--wait", "unit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = json(&out);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let mut devices = Vec::new();
    for j in jobs {
        let wanted = j["requirements"]["device"].as_str().unwrap();
        assert_eq!(j["matched_platform"]["device"], wanted, "{j}");
        // The property that tells machines apart is not a requirement.
        assert!(j["requirements"].get("hostname").is_none(), "{j}");
        devices.push(wanted.to_string());
    }
    devices.sort();
    assert_eq!(devices, ["N900", "iPad"]);

    // A platform with a property more than another: each gets its job,
    // the smaller one's requiring the property absent.
    let _w4 = Worker::start(
        dir.path(),
        &server.url,
        "ipad-pro",
        "[platform]\ndevice = \"iPad\"\npool = \"pro\"\n[jobtypes.unit]\ncommand = \"echo ran on $TESTBOT_WORKER\"\n",
    );
    wait_online(&server, "ipad-pro");
    let out = server.cli(&["submit", "--each-platform", "--json", "--wait", "unit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = json(&out);
    let mut ran: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["worker"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    assert_eq!(ran.len(), 3, "{jobs}");
    assert!(ran.contains(&"ipad".to_string()), "{ran:?}");
    assert!(ran.contains(&"ipad-pro".to_string()), "{ran:?}");

    // Only the properties named count: by os.family alone, one platform.
    let out = server.cli(&[
        "submit",
        "--each-platform",
        "--platform-keys",
        "os.family",
        "unit",
    ]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", text(&out));
}

#[test]
fn matrix_makes_the_cross_product_of_requirements() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let out = server.cli(&[
        "submit",
        "--json",
        "unit",
        "--matrix",
        "python=3.11,3.12",
        "--matrix",
        "db=pg,sqlite,mysql",
        "-p",
        "os.family=linux",
    ]);
    let jobs = json(&out);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 6);
    let mut combos: Vec<String> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j["requirements"]["os.family"], "linux");
            format!(
                "{}/{}",
                j["requirements"]["python"].as_str().unwrap(),
                j["requirements"]["db"].as_str().unwrap()
            )
        })
        .collect();
    combos.sort();
    combos.dedup();
    assert_eq!(combos.len(), 6);
}

const JUNIT_TWO_FAILURES: &str = r#"cat > "$TESTBOT_JUNIT_DIR/report.xml" <<'EOF'
<testsuite name="core" tests="3">
  <testcase classname="core" name="adds" time="0.01"/>
  <testcase classname="core" name="divides" time="0.02"><failure message="expected 2, got 3">x</failure></testcase>
  <testcase classname="core" name="parses" time="0.03"><failure message="unexpected token">y</failure></testcase>
</testsuite>
EOF
exit 1"#;

#[test]
fn junit_failures_are_named_in_status_and_wait_output() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "junit",
        &format!(
            "[jobtypes.tests]\ncommand = '''{JUNIT_TWO_FAILURES}'''\n[jobtypes.glob]\ncommand = '''mkdir -p out && printf '<testsuite><testcase classname=\"g\" name=\"ok\" time=\"1.5\"/></testsuite>' > out/r.xml'''\njunit = \"out/*.xml\"\n"
        ),
    );
    wait_online(&server, "junit");
    let out = server.cli(&["submit", "--wait", "tests"]);
    assert_eq!(out.status.code(), Some(1));
    let waited = stdout(&out);
    assert!(
        waited.contains("core.divides") && waited.contains("core.parses"),
        "{waited}"
    );
    let id: i64 = waited.split_whitespace().next().unwrap().parse().unwrap();

    let job = json(&server.cli(&["status", &id.to_string(), "--json"]));
    let tests = &job["result"]["tests"];
    assert_eq!(tests["total"], 3);
    assert_eq!(tests["passed"], 1);
    assert_eq!(tests["failed"], 2);
    let names: Vec<&str> = tests["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["core.divides", "core.parses"]);
    // The message, then the failure's text.
    assert_eq!(tests["failures"][0]["message"], "expected 2, got 3\nx");
    // Per-test durations go to the test history, not into the result.
    assert!(tests["durations"].is_null(), "{tests}");
    let slow = json(&server.cli(&["tests", "slow", "--jobtype", "tests", "--json"]));
    let parses = slow
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "core.parses")
        .unwrap();
    assert_eq!(parses["avg_ms"], 30, "{slow}");
    assert!(job["reason"].as_str().unwrap().contains("2 tests failed"));

    let human = stdout(&server.cli(&["status", &id.to_string()]));
    assert!(
        human.contains("FAILED core.divides: expected 2, got 3"),
        "{human}"
    );
    let page = http_get(&format!("{}/jobs/{id}", server.url)).body;
    assert!(page.contains("core.parses") && page.contains("unexpected token"));

    // The jobtype's `junit` glob, relative to the job directory.
    let ids = server.submit(&["glob"]);
    let job = server.wait_final(ids[0], 20 * SEC);
    assert_eq!(job["result"]["tests"]["passed"], 1, "{job}");
    let slow = json(&server.cli(&["tests", "slow", "--jobtype", "glob", "--json"]));
    assert_eq!(slow[0]["id"], "g.ok", "{slow}");
    assert_eq!(slow[0]["avg_ms"], 1500);
}

/// A test suite script: runs the tests its shard lists (all when
/// unsharded) and writes JUnit with each test's duration.
fn suite(dir: &Path, tests: &[(String, f64)]) -> String {
    let durations = dir.join("durations.txt");
    let lines: Vec<String> = tests.iter().map(|(n, s)| format!("{n} {s}")).collect();
    std::fs::write(&durations, lines.join("\n") + "\n").unwrap();
    let script = dir.join("suite.sh");
    std::fs::write(
        &script,
        format!(
            r#"out="$TESTBOT_JUNIT_DIR/report.xml"
echo "shard ${{TESTBOT_SHARD_INDEX:-none}} of ${{TESTBOT_SHARD_TOTAL:-none}}"
echo '<testsuite name="suite">' > "$out"
while read name secs; do
  if [ -z "$TESTBOT_SHARD_TESTS_FILE" ] || grep -qx "suite.$name" "$TESTBOT_SHARD_TESTS_FILE"; then
    echo "ran suite.$name"
    echo "<testcase classname=\"suite\" name=\"$name\" time=\"$secs\"/>" >> "$out"
  fi
done < {}
echo '</testsuite>' >> "$out"
"#,
            durations.display()
        ),
    )
    .unwrap();
    format!("[jobtypes.suite]\ncommand = \"sh {}\"\n", script.display())
}

#[test]
fn shards_split_known_tests_by_duration_and_cover_each_once() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let tests: Vec<(String, f64)> = (0..20)
        .map(|i| (format!("t{i:02}"), if i < 3 { 5.0 } else { 0.1 * i as f64 }))
        .collect();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "sharder",
        &format!("slots = 4\n{}", suite(dir.path(), &tests)),
    );
    wait_online(&server, "sharder");

    // Without history: indexes only, no test lists.
    let out = server.cli(&["submit", "--json", "--wait", "suite", "--shards", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = json(&out);
    let mut indexes: Vec<i64> = Vec::new();
    for j in first.as_array().unwrap() {
        assert!(j.get("shard_tests").is_none(), "{j}");
        indexes.push(j["shard_index"].as_i64().unwrap());
        assert_eq!(j["shard_total"], 4);
        let log = server.log_of(j["id"].as_i64().unwrap());
        assert!(
            log.contains(&format!("shard {} of 4", j["shard_index"])),
            "{log}"
        );
    }
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3]);

    // Those runs recorded every test's duration; now each shard gets a list.
    let out = server.cli(&["submit", "--json", "--wait", "suite", "--shards", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let second = json(&out);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut planned: BTreeMap<String, u32> = BTreeMap::new();
    let mut shard_secs = Vec::new();
    for j in second.as_array().unwrap() {
        let list: Vec<String> = serde_json::from_value(j["shard_tests"].clone()).unwrap();
        let heavy = ["suite.t00", "suite.t01", "suite.t02"];
        assert!(
            list.iter().filter(|t| heavy.contains(&t.as_str())).count() <= 1,
            "{list:?}"
        );
        let mut secs = 0.0;
        for t in &list {
            *planned.entry(t.clone()).or_default() += 1;
            secs += tests
                .iter()
                .find(|(n, _)| format!("suite.{n}") == *t)
                .unwrap()
                .1;
        }
        shard_secs.push(secs);
        let log = server.log_of(j["id"].as_i64().unwrap());
        for l in log.lines().filter_map(|l| l.strip_prefix("ran ")) {
            *seen.entry(l.to_string()).or_default() += 1;
        }
    }
    assert_eq!(planned.len(), 20);
    assert!(planned.values().all(|&n| n == 1), "{planned:?}");
    assert_eq!(seen, planned, "what ran is what was planned");
    // Balanced: the shards' planned times differ by less than the longest
    // short test (total 33.7 s, so about 8.4 s each).
    let max = shard_secs.iter().cloned().fold(0.0, f64::max);
    let min = shard_secs.iter().cloned().fold(f64::MAX, f64::min);
    assert!(max - min < 1.9, "{shard_secs:?}");
}

#[test]
fn a_job_passing_on_a_rerun_is_flaky() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let flaky = r#"if [ "$TESTBOT_ATTEMPT" = 1 ]; then
cat > "$TESTBOT_JUNIT_DIR/r.xml" <<'EOF'
<testsuite><testcase classname="net" name="timeout" time="0.1"><failure message="timed out"/></testcase><testcase classname="net" name="ok" time="0.1"/></testsuite>
EOF
exit 1; fi
cat > "$TESTBOT_JUNIT_DIR/r.xml" <<'EOF'
<testsuite><testcase classname="net" name="timeout" time="0.1"/><testcase classname="net" name="ok" time="0.1"/></testsuite>
EOF"#;
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "flaky",
        &format!(
            "[jobtypes.net]\ncommand = '''{flaky}'''\n[jobtypes.broken]\ncommand = \"exit 1\"\n"
        ),
    );
    wait_online(&server, "flaky");
    let out = server.cli(&[
        "submit",
        "--build",
        "nightly",
        "--retry-failed",
        "2",
        "--wait",
        "net",
        "broken",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let waited = stdout(&out);
    assert!(waited.contains("flaky"), "{waited}");
    assert!(waited.contains("FLAKY  net.timeout"), "{waited}");

    let builds = json(&server.cli(&["status", "--builds", "--json"]));
    let b = &builds[0];
    assert_eq!(b["flaky"], 1);
    assert_eq!(b["state"], "failed");
    let full = json(&server.cli(&["status", "--build", &b["id"].to_string(), "--json"]));
    let net = full["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobtype"] == "net")
        .unwrap();
    assert_eq!(net["state"], "passed");
    assert_eq!(net["flaky"], true);
    assert_eq!(net["reruns"], 1);
    assert_eq!(net["flaky_tests"], serde_json::json!(["net.timeout"]));
    let broken = full["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobtype"] == "broken")
        .unwrap();
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["flaky"], false);
    assert_eq!(broken["reruns"], 2, "reran up to the limit");
    assert_eq!(broken["attempt"], 3);

    let human = stdout(&server.cli(&["status", "--build", &b["id"].to_string()]));
    // The build's tests, each once: net.timeout failed, then passed.
    assert!(human.contains("2 tests: 2 passed, 0 failed"), "{human}");
    assert!(human.contains("FLAKY  net.timeout"), "{human}");
    let page = http_get(&format!("{}/builds/{}", server.url, b["id"])).body;
    assert!(
        page.contains("Flaky") && page.contains("net.timeout"),
        "{page}"
    );

    // Without --retry-failed a failure is never rerun.
    let ids = server.submit(&["broken"]);
    let job = server.wait_final(ids[0], 20 * SEC);
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["state"], "failed");
}
