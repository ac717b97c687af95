//! Artifacts end to end: real servers and workers, files a job leaves,
//! uploads that survive either side being killed, caps, paths that try to
//! leave the job, retention, and what the API and pages serve.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

/// The smallest valid PNG: one transparent pixel.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

fn artifacts(server: &Server, job: i64) -> Vec<Value> {
    server
        .get(&format!("/api/v1/jobs/{job}/artifacts"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the job's artifacts are all complete (or skipped), `n` of them.
fn wait_artifacts(server: &Server, job: i64, n: usize, timeout: Duration) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = artifacts(server, job);
        last.len() == n && last.iter().all(|a| a["state"] != "uploading")
    });
    assert!(
        ok,
        "job {job}'s artifacts never all arrived: {last:?}\n{}",
        server.log_of(job)
    );
    last
}

/// A jobtype's command that writes the files the tests look for, keeping a
/// copy of each under `$KEEP/JOB/` to compare downloads with.
fn maker(keep: &Path) -> String {
    format!(
        "mkdir -p reports/deep shots && echo \"report of $TESTBOT_JOB_ID\" > reports/r.txt \
         && echo nested > reports/deep/n.txt && cp {keep}/pixel.png shots/pixel.png \
         && head -c ${{TESTBOT_PARAM_MB}}000000 /dev/urandom > big.bin \
         && mkdir -p {keep}/$TESTBOT_JOB_ID && cp -r reports shots big.bin {keep}/$TESTBOT_JOB_ID/ \
         && exit $TESTBOT_PARAM_CODE",
        keep = keep.display()
    )
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn a_passing_and_a_failing_job_get_their_files_back_byte_identical() {
    let dir = tempdir();
    let keep = dir.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("pixel.png"), PNG).unwrap();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.make]\ncommand = '''{}'''\nartifacts = [\"reports/**\", \"shots/*.png\", \"big.bin\"]\n",
            maker(&keep)
        ),
    );
    wait_online(&server, "w");
    let passed = server.submit(&["make", "-P", "code=0", "-P", "mb=100"])[0];
    let failed = server.submit(&["make", "-P", "code=3", "-P", "mb=5"])[0];
    assert_eq!(server.wait_final(passed, 60 * SEC)["state"], "passed");
    assert_eq!(server.wait_final(failed, 60 * SEC)["state"], "failed");
    for job in [passed, failed] {
        let list = wait_artifacts(&server, job, 4, 60 * SEC);
        let paths: Vec<&str> = list.iter().map(|a| a["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "big.bin",
                "reports/deep/n.txt",
                "reports/r.txt",
                "shots/pixel.png"
            ]
        );
        assert!(list.iter().all(|a| a["state"] == "complete"), "{list:?}");
        let out = dir.path().join(format!("dl-{job}"));
        let got = server.cli(&[
            "artifacts",
            &job.to_string(),
            "--download",
            out.to_str().unwrap(),
        ]);
        assert!(got.status.success(), "{}", text(&got));
        for p in &paths {
            same_file(&out.join(p), &keep.join(job.to_string()).join(p));
        }
    }
    // A pattern picks what to download.
    let only = dir.path().join("only-png");
    let got = server.cli(&[
        "artifacts",
        &passed.to_string(),
        "--download",
        only.to_str().unwrap(),
        "*.png",
    ]);
    assert!(got.status.success(), "{}", text(&got));
    assert!(only.join("shots/pixel.png").is_file() && !only.join("big.bin").exists());
    // The list as JSON and as a table.
    let json: Value = serde_json::from_str(&stdout(&server.cli(&[
        "artifacts",
        &passed.to_string(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json[0]["size"], 100_000_000);
    assert_eq!(json[0]["sha256"].as_str().unwrap().len(), 64);
    // Served: images inline, the rest as downloads, never as a page; ranges.
    let png = http_get(&format!(
        "{}/api/v1/jobs/{passed}/artifacts/shots/pixel.png",
        server.url
    ));
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert!(png
        .header("content-disposition")
        .unwrap()
        .starts_with("inline"));
    let report = http(
        "GET",
        &format!(
            "{}/api/v1/jobs/{passed}/artifacts/reports/r.txt",
            server.url
        ),
        &[("Range", "bytes=0-5")],
        None,
    );
    assert_eq!(report.status, 206);
    assert_eq!(report.body, "report");
    let whole = format!("report of {passed}\n").len();
    assert_eq!(
        report.header("content-range"),
        Some(format!("bytes 0-5/{whole}").as_str())
    );
    assert!(report
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(report.header("x-content-type-options"), Some("nosniff"));
    let past = http(
        "GET",
        &format!(
            "{}/api/v1/jobs/{passed}/artifacts/reports/r.txt",
            server.url
        ),
        &[("Range", "bytes=1000-")],
        None,
    );
    assert_eq!(past.status, 416);
    // The job page lists them, with the image as a thumbnail; the build-less
    // job has no build page, so the link is the job's.
    let page = http_get(&format!("{}/jobs/{passed}", server.url)).body;
    assert!(
        page.contains("Artifacts") && page.contains("reports/deep/n.txt"),
        "{page}"
    );
    assert!(page.contains("<img src=\"/api/v1/jobs/"), "{page}");
    // Stored once each: the same bytes in two jobs are one file.
    let blobs = files_under(&dir.path().join("testbot-artifacts/sha256"));
    assert_eq!(
        blobs.len(),
        6,
        "pixel.png and n.txt once, the rest per job: {blobs:?}"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn over_the_cap_a_file_is_skipped_with_a_log_line_and_the_job_keeps_its_outcome() {
    let dir = tempdir();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--artifact-max-file", "1KiB"]);
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not the job's").unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("key.txt"), "precious").unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.cap]\ncommand = '''head -c 2048 /dev/zero > large.bin && echo small > small.txt \
             && ln -s /etc/passwd passwd && ln -s {} escape.txt && mkdir -p d && ln -s ../small.txt d/inside.txt \
             && ln -s {} d/secrets && ln -s .. d/up && exit 1'''\n\
             artifacts = [\"*.bin\", \"*.txt\", \"passwd\", \"d/**\"]\n",
            outside.display(),
            secrets.display()
        ),
    );
    // Patterns that would leave the job directory are the config's error.
    for bad in ["../*", "/etc/passwd"] {
        let cfg = worker_config(
            dir.path(),
            &server.url,
            "bad",
            &format!("[jobtypes.x]\ncommand = \"true\"\nartifacts = [\"{bad}\"]\n"),
        );
        let out = std::process::Command::new(BIN)
            .args(["worker", "--check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains("jobtypes.x.artifacts"),
            "{}",
            text(&out)
        );
    }
    wait_online(&server, "w");
    let id = server.submit(&["cap"])[0];
    let job = server.wait_final(id, 30 * SEC);
    assert_eq!(
        job["state"], "failed",
        "the outcome is the command's: {job}"
    );
    let list = wait_artifacts(&server, id, 2, 30 * SEC);
    let names: Vec<&str> = list.iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["d/inside.txt", "small.txt"],
        "{list:?} {}",
        server.log_of(id)
    );
    let log = server.log_of(id);
    assert!(
        log.contains("artifact large.bin skipped: 2048 bytes is over"),
        "{log}"
    );
    assert!(
        log.contains("artifact passwd skipped: a symbolic link to outside"),
        "{log}"
    );
    assert!(log.contains("artifact escape.txt skipped"), "{log}");
    // Links to directories are not followed, out of the job or round into
    // it, and what they lead to is left where it is.
    for link in ["d/secrets", "d/up"] {
        assert!(
            log.contains(&format!("artifact {link} skipped: a link to a directory")),
            "{log}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(secrets.join("key.txt")).unwrap(),
        "precious"
    );
    let skipped = job["result"]["artifacts_skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["path"] == "large.bin"), "{job}");
    // Nothing but the two small files was stored.
    let stored = files_under(&dir.path().join("testbot-artifacts/sha256"));
    assert_eq!(
        stored.len(),
        1,
        "small.txt and d/inside.txt hold the same bytes: {stored:?}"
    );
    // The API refuses paths that leave the job.
    let r = http_get(&format!(
        "{}/api/v1/jobs/{id}/artifacts/..%2F..%2Fetc%2Fpasswd",
        server.url
    ));
    assert!(matches!(r.status, 400 | 404), "{} {}", r.status, r.body);
}

#[test]
fn an_upload_cut_by_a_killed_server_resumes_where_it_stopped() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let token_file = dir.path().join("token");
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.hold]\ncommand = \"echo $TESTBOT_JOB_TOKEN > {}; sleep 60\"\n",
            token_file.display()
        ),
    );
    wait_online(&server, "w");
    let id = server.submit(&["hold"])[0];
    assert!(wait_until(20 * SEC, || std::fs::read_to_string(
        &token_file
    )
    .is_ok_and(|t| !t.trim().is_empty())));
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let auth = format!("Bearer {token}");
    // 4 MB, declared by the job itself.
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = sha256_hex(&data);
    let declare = format!(
        r#"{{"attempt": 1, "files": [{{"path": "out/data.bin", "size": {}, "sha256": "{sha}"}}]}}"#,
        data.len()
    );
    let post = |url: &str| {
        http(
            "POST",
            &format!("{url}/api/v1/jobs/{id}/artifacts"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(declare.as_bytes()),
        )
    };
    let d = post(&server.url);
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.json()["files"][0]["received"], 0);
    let put = |url: &str, offset: usize, part: &[u8]| {
        http(
            "PUT",
            &format!("{url}/api/v1/jobs/{id}/artifacts/out/data.bin?attempt=1&offset={offset}"),
            &[("Authorization", &auth)],
            Some(part),
        )
    };
    let first = put(&server.url, 0, &data[..1_500_000]);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["state"], "uploading");
    // Killed mid-upload and started again on the same database and port.
    let addr = server.addr.clone();
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let d = post(&server.url);
    assert_eq!(d.json()["files"][0]["received"], 1_500_000, "{}", d.body);
    // A wrong offset is refused, saying what the server holds.
    let wrong = put(&server.url, 0, &data[..10]);
    assert_eq!(wrong.status, 409, "{}", wrong.body);
    assert!(wrong.body.contains("1500000"), "{}", wrong.body);
    let rest = put(&server.url, 1_500_000, &data[1_500_000..]);
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(rest.json()["state"], "complete");
    let back = http_bytes(&format!(
        "{}/api/v1/jobs/{id}/artifacts/out/data.bin",
        server.url
    ));
    assert!(back == data, "the bytes came back changed");
    // Bytes that do not match the declared hash are refused and start over.
    let other: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    let bad_decl = declare
        .replace("out/data.bin", "bad.bin")
        .replace(&sha, &sha256_hex(&other));
    let d = http(
        "POST",
        &format!("{}/api/v1/jobs/{id}/artifacts", server.url),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(bad_decl.as_bytes()),
    );
    assert_eq!(d.status, 200, "{}", d.body);
    let mut tampered = data.clone();
    tampered[5] ^= 1;
    let r = http(
        "PUT",
        &format!(
            "{}/api/v1/jobs/{id}/artifacts/bad.bin?attempt=1&offset=0",
            server.url
        ),
        &[("Authorization", &auth)],
        Some(&tampered),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("SHA-256"), "{}", r.body);
    // The job's token is for its own attempt only.
    let r = http(
        "PUT",
        &format!(
            "{}/api/v1/jobs/{id}/artifacts/bad.bin?attempt=2&offset=0",
            server.url
        ),
        &[("Authorization", &auth)],
        Some(b"x"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not attempt 2"), "{}", r.body);
    server.cli(&["cancel", &id.to_string()]);
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn http_bytes(url: &str) -> Vec<u8> {
    let agent = agent(Duration::from_secs(60));
    let mut resp = agent.get(url).call().expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap()
}

#[test]
fn a_worker_killed_before_its_uploads_delivers_them_when_it_starts_again() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let addr = server.addr.clone();
    let flag = dir.path().join("started");
    let body = format!(
        "[jobtypes.late]\ncommand = \"touch {}; sleep 2; head -c 3000000 /dev/urandom > late.bin; cp late.bin {}/late-copy.bin\"\nartifacts = [\"late.bin\"]\n",
        flag.display(),
        dir.path().display()
    );
    let config = worker_config(dir.path(), &server.url, "w", &body);
    let mut w = Worker::start_config(dir.path(), "w", &config, &[]);
    wait_online(&server, "w");
    let id = server.submit(&["late"])[0];
    assert!(wait_until(20 * SEC, || flag.exists()));
    // The server goes away while the job runs: its result and artifacts
    // wait in the worker's outbox, and then the worker is killed.
    server.kill9();
    assert!(wait_until(20 * SEC, || dir
        .path()
        .join("late-copy.bin")
        .exists()));
    let outbox = dir.path().join("work-w/outbox/artifacts");
    assert!(wait_until(20 * SEC, || files_under(&outbox)
        .iter()
        .any(|p| p.ends_with("manifest.json"))));
    w.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let _w = Worker::start_config(dir.path(), "w", &config, &[]);
    let job = server.wait_final(id, 60 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    let list = wait_artifacts(&server, id, 1, 60 * SEC);
    assert_eq!(list[0]["state"], "complete");
    let back = http_bytes(&format!(
        "{}/api/v1/jobs/{id}/artifacts/late.bin",
        server.url
    ));
    assert!(back == std::fs::read(dir.path().join("late-copy.bin")).unwrap());
    assert!(
        wait_until(10 * SEC, || files_under(&outbox).is_empty()),
        "the outbox empties"
    );
}

#[test]
fn retention_removes_artifacts_and_their_bytes() {
    let dir = tempdir();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--retention-interval", "1s"]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.short]\ncommand = \"echo short-lived > s.txt\"\nartifacts = [\"s.txt\"]\nkeep_artifacts = \"2s\"\n\
         [jobtypes.long]\ncommand = \"echo long-lived > l.txt\"\nartifacts = [\"l.txt\"]\n",
    );
    wait_online(&server, "w");
    let short = server.submit(&["short"])[0];
    let long = server.submit(&["long"])[0];
    server.wait_final(short, 20 * SEC);
    server.wait_final(long, 20 * SEC);
    let list = wait_artifacts(&server, short, 1, 20 * SEC);
    assert!(list[0]["expires_at"].is_string(), "{list:?}");
    wait_artifacts(&server, long, 1, 20 * SEC);
    let blobs = dir.path().join("testbot-artifacts/sha256");
    assert_eq!(files_under(&blobs).len(), 2);
    // keep_artifacts passes: the short-lived file and its bytes go, the job stays.
    assert!(wait_until(20 * SEC, || artifacts(&server, short).is_empty()));
    assert!(wait_until(10 * SEC, || files_under(&blobs).len() == 1));
    assert_eq!(server.job(short)["state"], "passed");
    assert_eq!(artifacts(&server, long).len(), 1);
}

#[test]
fn purged_jobs_take_their_artifacts_with_them() {
    let dir = tempdir();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--retention-interval", "1s", "--keep-days", "0.00002"],
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.a]\ncommand = \"echo gone soon > g.txt\"\nartifacts = [\"g.txt\"]\n",
    );
    wait_online(&server, "w");
    let id = server.submit(&["a"])[0];
    server.wait_final(id, 20 * SEC);
    let blobs = dir.path().join("testbot-artifacts");
    // Purged after about two seconds, with its files.
    assert!(wait_until(30 * SEC, || http_get(&format!(
        "{}/api/v1/jobs/{id}",
        server.url
    ))
    .status
        == 404));
    assert!(wait_until(10 * SEC, || files_under(&blobs.join("sha256")).is_empty()));
}

#[test]
fn a_worker_upload_cut_by_a_killed_server_completes_after_the_restart() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let addr = server.addr.clone();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.big]\ncommand = \"head -c 100000000 /dev/urandom > big.bin && cp big.bin {}/big-copy.bin\"\nartifacts = [\"big.bin\"]\n",
            dir.path().display()
        ),
    );
    wait_online(&server, "w");
    let id = server.submit(&["big"])[0];
    // Killed once the upload has begun (when the poll catches it between
    // its first and last byte; else after it, which must do no harm either).
    let partial = dir.path().join("testbot-artifacts/partial");
    let caught = wait_until(60 * SEC, || {
        files_under(&partial)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            || !artifacts(&server, id).is_empty()
                && artifacts(&server, id)
                    .iter()
                    .all(|a| a["state"] == "complete")
    });
    assert!(caught);
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let job = server.wait_final(id, 60 * SEC);
    assert_eq!(job["state"], "passed", "{job}");
    let list = wait_artifacts(&server, id, 1, 90 * SEC);
    assert_eq!(list[0]["state"], "complete", "{list:?}");
    let back = http_bytes(&format!(
        "{}/api/v1/jobs/{id}/artifacts/big.bin",
        server.url
    ));
    assert!(
        back == std::fs::read(dir.path().join("big-copy.bin")).unwrap(),
        "the bytes differ"
    );
}

#[test]
fn with_tokens_only_the_worker_that_ran_it_or_the_job_may_upload() {
    let dir = tempdir();
    std::fs::write(dir.path().join("workers"), "wtok\n").unwrap();
    std::fs::write(dir.path().join("clients"), "ctok\n").unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--worker-tokens",
            dir.path().join("workers").to_str().unwrap(),
            "--client-tokens",
            dir.path().join("clients").to_str().unwrap(),
        ],
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "token = \"wtok\"\n[jobtypes.a]\ncommand = \"echo x > a.txt\"\nartifacts = [\"a.txt\"]\n",
    );
    wait_online(&server, "w");
    let out = server.cli(&["--token", "ctok", "submit", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    let id: i64 = stdout(&out).trim().parse().unwrap();
    let done = wait_until(30 * SEC, || {
        let r = http_get(&format!("{}/api/v1/jobs/{id}/artifacts", server.url));
        r.status == 200 && r.json()[0]["state"] == "complete"
    });
    assert!(done, "the worker, with its token, uploaded");
    let decl = |worker: &str| {
        format!(
            r#"{{"attempt": 1, "worker": "{worker}", "files": [{{"path": "b.txt", "size": 1, "sha256": "{}"}}]}}"#,
            "0".repeat(64)
        )
    };
    let post = |token: Option<&str>, body: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        http(
            "POST",
            &format!("{}/api/v1/jobs/{id}/artifacts", server.url),
            &headers,
            Some(body.as_bytes()),
        )
    };
    for (token, status) in [(None, 401), (Some("ctok"), 403), (Some("wrong"), 401)] {
        let r = post(token, &decl("w"));
        assert_eq!(r.status, status, "{token:?}: {}", r.body);
    }
    // The worker token, naming another worker than the one that ran it.
    let r = post(Some("wtok"), &decl("other"));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(Some("wtok"), &decl("w"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn on_postgresql_artifacts_go_to_the_shared_directory_given() {
    let Some(db) = postgres_db() else {
        return;
    };
    let dir = tempdir();
    let shared = dir.path().join("shared-artifacts");
    let server = Server::start_db(
        dir.path(),
        &db,
        &["--artifacts-dir", shared.to_str().unwrap()],
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        &format!(
            "[jobtypes.pg]\ncommand = \"head -c 300000 /dev/urandom > out.bin && cp out.bin {}/copy.bin\"\nartifacts = [\"out.bin\"]\n",
            dir.path().display()
        ),
    );
    wait_online(&server, "w");
    let id = server.submit(&["pg"])[0];
    server.wait_final(id, 30 * SEC);
    wait_artifacts(&server, id, 1, 30 * SEC);
    let out = dir.path().join("dl");
    let got = server.cli(&[
        "artifacts",
        &id.to_string(),
        "--download",
        out.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", text(&got));
    same_file(&out.join("out.bin"), &dir.path().join("copy.bin"));
    assert_eq!(files_under(&shared.join("sha256")).len(), 1);
}

#[test]
fn a_backup_and_a_database_copy_take_the_artifact_files_along() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.make]\ncommand = \"echo kept-bytes > k.txt\"\nartifacts = [\"k.txt\"]\n",
    );
    wait_online(&server, "w");
    let id = server.submit(&["make"])[0];
    server.wait_final(id, 20 * SEC);
    wait_artifacts(&server, id, 1, 20 * SEC);
    // A file of the user's beside the backup's name is left alone.
    let safe = tempdir();
    let out = safe.path().join("b.db");
    std::fs::write(safe.path().join("b.partial"), "mine").unwrap();
    let backup = server.cli(&["backup", out.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", text(&backup));
    assert!(
        stdout(&backup).contains("1 artifact files"),
        "{}",
        text(&backup)
    );
    assert_eq!(
        std::fs::read_to_string(safe.path().join("b.partial")).unwrap(),
        "mine"
    );
    let download = |server: &Server| {
        let url = format!("{}/api/v1/jobs/{id}/artifacts/k.txt", server.url);
        let got = http_get(&url);
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.body, "kept-bytes\n");
    };
    {
        let restored = Server::start_db(safe.path(), out.to_str().unwrap(), &[]);
        download(&restored);
    }
    // And `db copy` of that backup into a new file brings them too.
    let copy = safe.path().join("c.db");
    let out = std::process::Command::new(BIN)
        .args(["db", "copy", "--from"])
        .arg(&out)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("copied 1 artifact files"),
        "{}",
        text(&out)
    );
    let copied = Server::start_db(safe.path(), copy.to_str().unwrap(), &[]);
    download(&copied);
}

#[test]
fn uploads_of_one_file_at_once_conflict_rather_than_fail() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.a]\ncommand = \"true\"\n",
    );
    wait_online(&server, "w");
    let id = server.submit(&["a"])[0];
    server.wait_final(id, 20 * SEC);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let decl = format!(
        r#"{{"attempt": 1, "worker": "w", "files": [{{"path": "d0", "size": {}, "sha256": "{}"}}]}}"#,
        data.len(),
        sha256_hex(&data)
    );
    let r = http(
        "POST",
        &format!("{}/api/v1/jobs/{id}/artifacts", server.url),
        &[("Content-Type", "application/json")],
        Some(decl.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let url = format!(
        "{}/api/v1/jobs/{id}/artifacts/d0?attempt=1&worker=w",
        server.url
    );
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let r = http("PUT", &url, &[], Some(&data));
                    (r.status, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &statuses {
        assert!(*status == 200 || *status == 409, "{status}: {body}");
    }
    let list = wait_artifacts(&server, id, 1, 20 * SEC);
    assert_eq!(list[0]["state"], "complete", "{list:?}");
    let got = http_bytes(&format!("{}/api/v1/jobs/{id}/artifacts/d0", server.url));
    assert!(got == data, "the stored bytes differ");
}

#[test]
fn a_job_uploads_files_itself_named_as_it_gives_them() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("far.txt"), "from afar\n").unwrap();
    // A file below the job's directory, a link (named as the link, holding
    // its target's bytes), a file elsewhere (named by its file name); a
    // directory is refused with exit 2 and uploads nothing.
    let command = format!(
        "mkdir -p sub && echo one > sub/one.txt && echo target > real.txt \
         && ln -s real.txt link.txt \
         && {bin} artifacts upload sub/one.txt link.txt {far} \
         && {{ {bin} artifacts upload sub; test $? -eq 2; }}",
        bin = BIN,
        far = outside.join("far.txt").display()
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "up",
        &format!("[jobtypes.up]\ncommand = '''{command}'''\n"),
    );
    wait_online(&server, "up");
    let job = server.submit(&["up"])[0];
    let done = server.wait_final(job, 60 * SEC);
    assert_eq!(done["state"], "passed", "{done}\n{}", server.log_of(job));
    let log = server.log_of(job);
    for stored in ["sub/one.txt stored", "link.txt stored", "far.txt stored"] {
        assert!(log.contains(stored), "{log}");
    }
    let list = wait_artifacts(&server, job, 3, 30 * SEC);
    let paths: Vec<&str> = list.iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["far.txt", "link.txt", "sub/one.txt"], "{list:?}");
    let out = dir.path().join("dl");
    let got = server.cli(&[
        "artifacts",
        &job.to_string(),
        "--download",
        out.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", text(&got));
    for (path, bytes) in [
        ("far.txt", "from afar\n"),
        ("link.txt", "target\n"),
        ("sub/one.txt", "one\n"),
    ] {
        assert_eq!(std::fs::read_to_string(out.join(path)).unwrap(), bytes);
    }
}

#[test]
fn a_jobs_own_upload_waits_out_a_server_restart() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let ready = dir.path().join("ready");
    let go = dir.path().join("go");
    let command = format!(
        "echo kept > f.txt && touch {ready} && while [ ! -e {go} ]; do sleep 0.05; done \
         && {bin} artifacts upload f.txt",
        ready = ready.display(),
        go = go.display(),
        bin = BIN
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "up",
        &format!("[jobtypes.up]\ncommand = '''{command}'''\n"),
    );
    wait_online(&server, "up");
    let job = server.submit(&["up"])[0];
    assert!(wait_until(30 * SEC, || ready.exists()));
    // The server goes away just as the job uploads, and is back 2 s later.
    let addr = server.addr.clone();
    server.kill9();
    std::fs::write(&go, "").unwrap();
    std::thread::sleep(2 * SEC);
    let server = Server::start_with(dir.path(), &addr, &[]);
    let done = server.wait_final(job, 60 * SEC);
    let log = server.log_of(job);
    assert_eq!(done["state"], "passed", "{done}\n{log}");
    assert!(
        log.contains("trying again") && log.contains("f.txt stored"),
        "{log}"
    );
    let list = wait_artifacts(&server, job, 1, 30 * SEC);
    assert_eq!(list[0]["path"], "f.txt");
    assert_eq!(list[0]["state"], "complete");
}

/// A proxy to `target` that passes everything until a request naming
/// `needle` goes through, then passes `keep` bytes of what comes back and
/// cuts the connection. Returns its URL.
fn cutting_proxy(target: &str, needle: &'static str, keep: usize) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().take(20) {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&target) else {
                return;
            };
            let cut = Arc::new(AtomicBool::new(false));
            let (mut c2, mut s2, flag) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                cut.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = c2.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                        flag.store(true, Ordering::SeqCst);
                    }
                    if s2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                let mut passed = 0;
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = if cut.load(Ordering::SeqCst) {
                        let n = n.min(keep.saturating_sub(passed));
                        passed += n;
                        n
                    } else {
                        n
                    };
                    if client.write_all(&buf[..n]).is_err()
                        || (cut.load(Ordering::SeqCst) && passed >= keep)
                    {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_download_cut_by_the_network_is_exit_3_and_leaves_no_half_file() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "w",
        "[jobtypes.big]\ncommand = \"head -c 3000000 /dev/urandom > big.bin\"\nartifacts = [\"big.bin\"]\n",
    );
    wait_online(&server, "w");
    let job = server.submit(&["big"])[0];
    assert_eq!(server.wait_final(job, 60 * SEC)["state"], "passed");
    wait_artifacts(&server, job, 1, 60 * SEC);
    let proxy = cutting_proxy(&server.url, "/artifacts/big.bin", 100_000);
    let out_dir = dir.path().join("dl");
    let out = std::process::Command::new(BIN)
        .args(["artifacts", &job.to_string(), "--download"])
        .arg(&out_dir)
        .env("TESTBOT_SERVER", &proxy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
