//! Artifacts: a 1 GB file a job leaves, uploaded by a real worker to a
//! real server on loopback and downloaded back with `testbot artifacts
//! --download`, against a plain `cp` of the same file in the same run;
//! and the worker's peak memory while it uploads. `cargo bench --bench
//! artifacts` (ARTIFACT_MB=N for another size).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn main() {
    let mb: u64 = std::env::var("ARTIFACT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let size = mb * 1_000_000;
    let dir = tempdir();
    let src = dir.path().join("source.bin");
    // Random bytes: nothing to deduplicate or compress.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {size} /dev/urandom > {}", src.display()))
        .status()
        .unwrap();
    assert!(status.success());

    // The floor: cp of the same file, twice (the first warms the cache).
    let mut cp = f64::MAX;
    for _ in 0..2 {
        let to = dir.path().join("cp-copy.bin");
        let t = Instant::now();
        let s = std::process::Command::new("cp")
            .arg(&src)
            .arg(&to)
            .status()
            .unwrap();
        assert!(s.success());
        cp = cp.min(t.elapsed().as_secs_f64());
        std::fs::remove_file(&to).unwrap();
    }

    let (_server, url) = serve(dir.path(), &[]);
    let w = worker(
        dir.path(),
        &url,
        "uploader",
        &format!(
            "[jobtypes.big]\ncommand = \"cp {} big.bin\"\nartifacts = [\"big.bin\"]\n",
            src.display()
        ),
    );
    wait_online(&url, "uploader");
    let job = submit(&url, json!({"jobtype": "big"}));
    let id = job["id"].as_i64().unwrap();
    let done = wait_final(&url, id);
    assert_eq!(done["state"], "passed", "{done}");
    // From the job's end to the artifact stored: the worker hashes it and
    // streams it, the server writes it and checks its hash.
    let ended = Instant::now();
    let artifacts_url = format!("{url}/api/v1/jobs/{id}/artifacts");
    let mut arrived = false;
    while ended.elapsed() < Duration::from_secs(600) {
        let list: Value = ureq::get(&artifacts_url)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        if list[0]["state"] == "complete" {
            arrived = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(arrived, "the artifact never arrived");
    let upload = ended.elapsed().as_secs_f64();
    let worker_peak = peak_rss_mb(w.0.id());

    let out = dir.path().join("download");
    let t = Instant::now();
    let got = std::process::Command::new(BIN)
        .args(["--server", &url, "artifacts", &id.to_string(), "--download"])
        .arg(&out)
        .output()
        .unwrap();
    let download = t.elapsed().as_secs_f64();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::metadata(out.join("big.bin")).unwrap().len(), size);

    println!("{mb} MB, loopback, in one run:");
    println!(
        "  cp of the file:                        {:.2} s, {:.0} MB/s",
        cp,
        mb_per_s(size, cp)
    );
    println!(
        "  upload (job end -> stored and checked): {:.2} s, {:.0} MB/s, {:.2} x cp's time",
        upload,
        mb_per_s(size, upload),
        upload / cp
    );
    println!(
        "  download (testbot artifacts --download, hash checked): {:.2} s, {:.0} MB/s, {:.2} x cp's time",
        download,
        mb_per_s(size, download),
        download / cp
    );
    println!("  worker peak memory (VmHWM): {worker_peak:.1} MB");
    println!(
        "{}",
        json!({
            "artifact_mb": mb,
            "cp_s": (cp * 1000.0).round() / 1000.0,
            "upload_s": (upload * 1000.0).round() / 1000.0,
            "download_s": (download * 1000.0).round() / 1000.0,
            "upload_mb_per_s": mb_per_s(size, upload).round(),
            "download_mb_per_s": mb_per_s(size, download).round(),
            "cp_mb_per_s": mb_per_s(size, cp).round(),
            "worker_peak_rss_mb": (worker_peak * 10.0).round() / 10.0,
        })
    );
}
