//! What streaming a loud job's log costs: a job printing 100 MB with its
//! output streamed to the server, against the same command with output to
//! /dev/null (median of 5 each, submit to final state), and the worker's
//! peak RSS meanwhile. `cargo bench --bench log_stream`.

mod common;

use std::time::Instant;

use common::*;

const PRINT: &str = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghi | head -c 100000000";

/// Submit to final state (log delivered), and the command's own run time.
fn run(url: &str, jobtype: &str) -> (f64, f64) {
    let t = Instant::now();
    let job = submit(url, serde_json::json!({"jobtype": jobtype}));
    let done = wait_final(url, job["id"].as_i64().unwrap());
    assert_eq!(done["state"], "passed", "{done}");
    (
        t.elapsed().as_secs_f64() * 1000.0,
        done["result"]["duration_ms"].as_f64().unwrap(),
    )
}

fn main() {
    let dir = tempdir();
    let (_server, url) = serve(dir.path(), &[]);
    let w = worker(
        dir.path(),
        &url,
        "loud",
        &format!(
            "[jobtypes.stream]\ncommand = \"{PRINT}\"\n[jobtypes.null]\ncommand = \"{PRINT} > /dev/null\"\n"
        ),
    );
    wait_online(&url, "loud");
    let (mut streamed, mut silent) = (Vec::new(), Vec::new());
    let (mut streamed_cmd, mut silent_cmd) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (total, cmd) = run(&url, "stream");
        streamed.push(total);
        streamed_cmd.push(cmd);
        let (total, cmd) = run(&url, "null");
        silent.push(total);
        silent_cmd.push(cmd);
    }
    let s = median(&mut streamed);
    let n = median(&mut silent);
    let sc = median(&mut streamed_cmd);
    let nc = median(&mut silent_cmd);
    let rss = peak_rss_mb(w.0.id());
    println!("100 MB job, streamed:        {s:.0} ms (median of 5)");
    println!("100 MB job, to /dev/null:    {n:.0} ms (median of 5)");
    println!("streaming overhead:          {:.2}x", s / n);
    println!("command's own run, streamed: {sc:.0} ms; to /dev/null: {nc:.0} ms");
    println!("worker peak RSS:             {rss:.1} MiB");
    println!(
        "{}",
        serde_json::json!({"stream_100mb_ms": s.round(), "devnull_100mb_ms": n.round(),
            "ratio": (s / n * 100.0).round() / 100.0,
            "command_streamed_ms": sc, "command_devnull_ms": nc, "worker_peak_rss_mb": (rss * 10.0).round() / 10.0})
    );
}
