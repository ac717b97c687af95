//! How even shards are: a suite of 200 tests with skewed durations (one
//! long tail, Zipf-like, about 20 s in all) run as 4 shards on a worker
//! with 4 slots. The first run has no history, so each shard takes every
//! 4th test by position; it records the durations, and the second run's
//! shards get lists balanced by them. For each run: the longest shard's
//! measured time against the measured total / 4.
//! `cargo bench --bench shards`.

mod common;

use common::*;
use serde_json::{json, Value};

fn run(url: &str) -> (f64, f64) {
    let jobs: Vec<Value> = (0..4)
        .map(|i| json!({"jobtype": "suite", "shard_index": i, "shard_total": 4}))
        .collect();
    let submitted = submit(url, Value::Array(jobs));
    let times: Vec<f64> = submitted
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let done = wait_final(url, j["id"].as_i64().unwrap());
            assert_eq!(done["state"], "passed", "{done}");
            done["result"]["duration_ms"].as_f64().unwrap()
        })
        .collect();
    let longest = times.iter().cloned().fold(0.0, f64::max);
    (longest, times.iter().sum::<f64>() / 4.0)
}

fn main() {
    let dir = tempdir();
    let durations = dir.path().join("durations.txt");
    let tests: Vec<String> = (0..200)
        .map(|i| format!("t{i:03} {:.3}", 3.4 / (i as f64 + 1.0)))
        .collect();
    std::fs::write(&durations, tests.join("\n") + "\n").unwrap();
    let script = dir.path().join("suite.sh");
    std::fs::write(
        &script,
        format!(
            r#"out="$TESTBOT_JUNIT_DIR/report.xml"
echo '<testsuite name="suite">' > "$out"
n=0
while read name secs; do
  if [ -n "$TESTBOT_SHARD_TESTS_FILE" ]; then
    grep -qx "suite.$name" "$TESTBOT_SHARD_TESTS_FILE" || {{ n=$((n+1)); continue; }}
  elif [ $((n % TESTBOT_SHARD_TOTAL)) -ne "$TESTBOT_SHARD_INDEX" ]; then
    n=$((n+1)); continue
  fi
  n=$((n+1))
  sleep "$secs"
  echo "<testcase classname=\"suite\" name=\"$name\" time=\"$secs\"/>" >> "$out"
done < {}
echo '</testsuite>' >> "$out"
"#,
            durations.display()
        ),
    )
    .unwrap();
    let (_server, url) = serve(dir.path(), &[]);
    let _w = worker(
        dir.path(),
        &url,
        "sharder",
        &format!(
            "slots = 4\n[jobtypes.suite]\ncommand = \"sh {}\"\n",
            script.display()
        ),
    );
    wait_online(&url, "sharder");
    let (rr_longest, rr_avg) = run(&url);
    println!("by position (no history): longest shard {rr_longest:.0} ms, total/4 {rr_avg:.0} ms, ratio {:.2}", rr_longest / rr_avg);
    let (longest, avg) = run(&url);
    println!(
        "by recorded durations:    longest shard {longest:.0} ms, total/4 {avg:.0} ms, ratio {:.2}",
        longest / avg
    );
    println!(
        "{}",
        json!({"tests": 200, "shards": 4,
            "position_longest_ms": rr_longest.round(), "position_total_over_4_ms": rr_avg.round(),
            "balanced_longest_ms": longest.round(), "balanced_total_over_4_ms": avg.round(),
            "balanced_ratio": (longest / avg * 1000.0).round() / 1000.0})
    );
}
