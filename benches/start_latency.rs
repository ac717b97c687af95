//! From `submit` to the command starting on an idle worker: a real server,
//! a real worker with one slot, 50 jobs one after another; the command
//! writes the time it started (`date +%s%N`) into its result. Prints the
//! median and the 90th percentile. `cargo bench --bench start_latency`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn main() {
    let dir = tempdir();
    let (_server, url) = serve(dir.path(), &[]);
    let _w = worker(
        dir.path(),
        &url,
        "idle",
        "[jobtypes.stamp]\ncommand = 'echo \"{\\\"started_ns\\\": $(date +%s%N)}\" > \"$TESTBOT_RESULT_FILE\"'\n",
    );
    wait_online(&url, "idle");
    std::thread::sleep(Duration::from_millis(500));
    let mut ms = Vec::new();
    for _ in 0..50 {
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as f64;
        let job = submit(&url, serde_json::json!({"jobtype": "stamp"}));
        let done = wait_final(&url, job["id"].as_i64().unwrap());
        assert_eq!(done["state"], "passed", "{done}");
        let started = done["result"]["started_ns"].as_f64().expect("started_ns");
        ms.push((started - sent) / 1e6);
        // Let the worker settle back into its long-poll.
        std::thread::sleep(Duration::from_millis(20));
    }
    let p50 = median(&mut ms.clone());
    let p90 = percentile(&mut ms, 0.9);
    println!(
        "submit -> command started: median {p50:.2} ms, p90 {p90:.2} ms (50 jobs, idle worker)"
    );
    println!(
        "{}",
        serde_json::json!({"submit_to_start_p50_ms": (p50 * 100.0).round() / 100.0, "submit_to_start_p90_ms": (p90 * 100.0).round() / 100.0})
    );
}
