//! Watching tests run: log streaming, `logs -f`, `submit --follow`, the
//! log cap, the web pages, and a real headless browser on a live page.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn a_jobs_first_line_is_readable_while_it_runs() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "streamer",
        "[jobtypes.slow]\ncommand = \"echo first-line; sleep 30\"\n",
    );
    wait_online(&server, "streamer");
    let ids = server.submit(&["slow"]);
    let t = Instant::now();
    let ok = wait_until(10 * SEC, || server.log_of(ids[0]).contains("first-line"));
    assert!(ok, "the first line never arrived");
    assert_eq!(server.job(ids[0])["state"], "running");
    eprintln!("first line readable {:?} after submit", t.elapsed());
    server.cli(&["cancel", &ids[0].to_string()]);
    server.wait_final(ids[0], 20 * SEC);
}

#[test]
fn a_300000_line_log_arrives_whole_and_in_order() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "counter",
        "[jobtypes.count]\ncommand = \"seq 1 300000; echo err-line >&2\"\n",
    );
    wait_online(&server, "counter");
    let ids = server.submit(&["count"]);
    let job = server.wait_final(ids[0], 60 * SEC);
    assert_eq!(job["state"], "passed");
    let log = server.log_of(ids[0]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 300_001);
    for (i, l) in lines[..300_000].iter().enumerate() {
        assert_eq!(*l, (i + 1).to_string(), "line {i}");
    }
    assert_eq!(lines[300_000], "err-line");
    // `testbot logs` prints the same bytes.
    let out = server.cli(&["logs", &ids[0].to_string()]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), log);
}

#[test]
fn a_log_over_the_cap_keeps_its_start_and_end() {
    let dir = tempdir();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--log-cap", "1MiB"]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "chatty",
        "[jobtypes.flood]\ncommand = \"echo FIRST; seq 1 1000000; echo LAST\"\n",
    );
    wait_online(&server, "chatty");
    let ids = server.submit(&["flood"]);
    let job = server.wait_final(ids[0], 60 * SEC);
    assert_eq!(job["state"], "passed");
    let log = server.log_of(ids[0]);
    assert!(log.starts_with("FIRST\n1\n2\n3\n"), "{}", &log[..50]);
    assert!(log.ends_with("999999\n1000000\nLAST\n"));
    assert!(log.contains("bytes of this log were cut"), "no cut note");
    // About 6.9 MB went in; at most the cap plus one upload is kept.
    assert!(log.len() < 3 << 20, "kept {} bytes", log.len());
    // The worker cut it before sending: no more than the cap the server
    // announced crossed the wire.
    let full = server.job(ids[0]);
    let sent = full["attempts"][0]["log_bytes"].as_u64().unwrap();
    assert!(sent <= (1 << 20) + 4096, "the worker sent {sent} bytes");
}

#[test]
fn logs_follow_streams_live_and_ends_with_the_job() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "ticker",
        "[jobtypes.tick]\ncommand = \"echo tick-1; sleep 2; echo tick-2\"\n",
    );
    wait_online(&server, "ticker");
    let ids = server.submit(&["tick"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    let mut child = Command::new(BIN)
        .args(["logs", "-f", &ids[0].to_string()])
        .env("TESTBOT_SERVER", &server.url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "tick-1\n");
    assert_eq!(server.job(ids[0])["state"], "running", "not live");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "tick-2\n");
    let ok = wait_until(10 * SEC, || matches!(child.try_wait(), Ok(Some(_))));
    assert!(ok, "logs -f did not end with the job");
    assert_eq!(server.job(ids[0])["state"], "passed");
}

#[test]
fn submit_follow_prefixes_each_jobs_lines() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "pair",
        "slots = 2\n[jobtypes.a]\ncommand = \"echo from-a\"\n[jobtypes.b]\ncommand = \"echo from-b; exit 1\"\n",
    );
    wait_online(&server, "pair");
    let out = server.cli(&["submit", "--follow", "a", "b"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let text = stdout(&out);
    let a = text
        .lines()
        .find(|l| l.contains("from-a"))
        .expect("a's log");
    let b = text
        .lines()
        .find(|l| l.contains("from-b"))
        .expect("b's log");
    assert!(a.starts_with('[') && a.contains("] from-a"), "{a}");
    assert!(b.starts_with('[') && b.contains("] from-b"), "{b}");
    assert!(text.contains("passed") && text.contains("failed"), "{text}");
}

#[test]
fn pages_show_jobs_workers_and_builds() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "pager",
        "[info]\nrack = \"R2\"\n[jobtypes.ok]\ncommand = \"echo page-ok\"\n[jobtypes.bad]\ncommand = \"echo page-bad; exit 2\"\n",
    );
    wait_online(&server, "pager");
    let out = server.cli(&["submit", "--build", "web", "--wait", "ok", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let page = |path: &str| {
        let r = http_get(&format!("{}{path}", server.url));
        assert_eq!(r.status, 200, "{path}");
        r.body
    };
    let index = page("/");
    assert!(index.contains("href=\"/workers/pager\""), "{index}");
    assert!(index.contains("href=\"/builds/1\""));
    assert!(index.contains("ago"), "no relative times");
    let jobs: serde_json::Value = server.get("/api/v1/jobs?state=failed");
    let bad = jobs[0]["id"].as_i64().unwrap();
    let job = page(&format!("/jobs/{bad}"));
    assert!(job.contains("class=\"st failed\""), "failed job not marked");
    assert!(job.contains("page-bad"));
    assert!(job.contains("exit code 2"));
    assert!(job.contains("href=\"/workers/pager\""));
    assert!(job.contains("href=\"/builds/1\""));
    let worker = page("/workers/pager");
    assert!(worker.contains("R2"));
    assert!(worker.contains(&format!("href=\"/jobs/{bad}\"")));
    let builds = page("/builds");
    assert!(builds.contains("web") && builds.contains("failed"));
    let build = page("/builds/1");
    assert!(build.contains(&format!("href=\"/jobs/{bad}\"")));
    let missing = http_get(&format!("{}/jobs/99999", server.url));
    assert_eq!(missing.status, 404);
}

/// The page's DOM once it has loaded, as a browser built it.
fn dump_dom(chrome: &mut browser::Browser, url: &str) -> String {
    let mut tab = chrome.open(url, 1000, 800);
    tab.eval("document.documentElement.outerHTML")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_browser_sees_a_running_jobs_output_and_no_injected_script() {
    let Some(browser) = browser::chromium() else {
        if std::env::var_os("TESTBOT_SKIP_BROWSER").is_some() {
            eprintln!("no chromium and TESTBOT_SKIP_BROWSER is set: skipped");
            return;
        }
        panic!("chromium is not installed (`apt-get install chromium`, as .ci/run does)");
    };
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "browsed",
        "[jobtypes.live]\ncommand = \"echo live-line-42; sleep 60\"\n",
    );
    wait_online(&server, "browsed");
    let evil =
        "x=<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    let ids = server.submit(&["live", "-P", evil]);
    assert!(wait_until(20 * SEC, || server
        .log_of(ids[0])
        .contains("live-line-42")));

    let mut chrome = browser::Browser::start(&browser, &dir.path().join("profile"));
    let dom = dump_dom(&mut chrome, &format!("{}/jobs/{}", server.url, ids[0]));
    assert!(
        dom.contains("live-line-42"),
        "running job's output not shown:\n{dom}"
    );
    assert!(dom.contains("running"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the param is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<title>pwned"),
        "the injected script ran:\n{dom}"
    );
    assert!(
        !dom.contains("<img src=\"x\""),
        "the injected tag was parsed:\n{dom}"
    );

    let index = dump_dom(&mut chrome, &format!("{}/", server.url));
    assert!(index.contains("browsed"), "{index}");
    server.cli(&["cancel", &ids[0].to_string()]);
    server.wait_final(ids[0], 20 * SEC);
}

#[test]
fn a_job_page_streams_output_printed_after_it_loaded() {
    let Some(binary) = browser::chromium_or_skip() else {
        return;
    };
    let dir = tempdir();
    let server = Server::start(dir.path());
    let ids = server.submit(&["later"]);
    // Opened while the job is still queued: the page waits for it to start
    // (without fetching a log), then follows its output as it comes.
    let mut chrome = browser::Browser::start(&binary, &dir.path().join("profile"));
    let mut tab = chrome.open(&format!("{}/jobs/{}", server.url, ids[0]), 1000, 800);
    assert_eq!(tab.eval("document.querySelector('.queued') !== null"), true);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "late",
        "[jobtypes.later]\ncommand = \"sleep 1; echo printed-after-load-77; sleep 1; echo and-then-78; sleep 30\"\n",
    );
    assert!(
        tab.wait_for(
            "(document.getElementById('log')||{}).textContent.includes('and-then-78')",
            20 * SEC
        ),
        "output printed after the page loaded is not shown: {}",
        tab.eval("document.body.innerText")
    );
    let shown = tab.eval("document.getElementById('log').textContent");
    assert_eq!(
        shown
            .as_str()
            .unwrap()
            .matches("printed-after-load-77")
            .count(),
        1,
        "{shown}"
    );
    server.cli(&["cancel", &ids[0].to_string()]);
    // The page reloads itself once the job ends.
    assert!(
        tab.wait_for("document.body.innerText.includes('canceled')", 20 * SEC),
        "{}",
        tab.eval("document.body.innerText")
    );
}

#[test]
fn logs_follow_waits_for_a_queued_job_to_start() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let ids = server.submit(&["later"]);
    let mut child = Command::new(BIN)
        .args(["logs", "-f", &ids[0].to_string()])
        .env("TESTBOT_SERVER", &server.url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(SEC);
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "logs -f gave up on a queued job"
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "late",
        "[jobtypes.later]\ncommand = \"echo finally\"\n",
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "finally\n");
    let ok = wait_until(10 * SEC, || matches!(child.try_wait(), Ok(Some(_))));
    assert!(ok);
}

#[test]
fn what_a_job_writes_to_its_info_file_shows_within_about_a_second() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // A 60 s heartbeat: the info must not wait for it.
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "reporter",
        "heartbeat_interval = \"60s\"\n[jobtypes.progress]\n\
         command = \"sleep 2; echo '{\\\"progress\\\": 2}' > $TESTBOT_INFO_FILE; sleep 30\"\n",
    );
    wait_online(&server, "reporter");
    let ids = server.submit(&["progress"]);
    server.wait_state(ids[0], "running", 20 * SEC);
    let t = std::time::Instant::now();
    let shown = wait_until(10 * SEC, || server.job(ids[0])["info"]["progress"] == 2);
    assert!(shown, "{}", server.job(ids[0]));
    // Written about 2 s after the start; shown within about a second of it.
    assert!(
        t.elapsed() < Duration::from_millis(3800),
        "took {:?}",
        t.elapsed()
    );
    let w = server.get("/api/v1/workers/reporter");
    assert_eq!(w["jobs"][0]["info"]["progress"], 2, "{w}");
    server.cli(&["cancel", &ids[0].to_string()]);
    server.wait_final(ids[0], 20 * SEC);
}
