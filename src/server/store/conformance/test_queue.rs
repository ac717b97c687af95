//! The suite for the test queue: shards sharing one queue, reruns on
//! other jobs, lost attempts, JUnit counts and history.

use super::*;

fn next(b: &Backend, job: &Job, tests: Option<&[&str]>, max: Option<u32>) -> TestsStep {
    let req = TestsNext {
        tests: tests.map(|t| t.iter().map(|s| s.to_string()).collect()),
        max,
        ..Default::default()
    };
    b.tests_next(job.id, job.attempt, &req, b.now())
        .unwrap_or_else(|e| panic!("{}: next for job {}: {e}", b.name, job.id))
}

/// A build's tests, the first 100, with its counts.
fn tests_of(b: &Backend, build: i64) -> BuildTests {
    let query = BuildTestsQuery {
        limit: 100,
        ..Default::default()
    };
    b.build_tests(build, &query)
        .unwrap_or_else(|e| panic!("{}: tests of build {build}: {e}", b.name))
}

fn batch(step: TestsStep) -> Option<TestsBatch> {
    match step {
        TestsStep::Batch(b) => Some(b),
        TestsStep::Wait => None,
    }
}

/// Asks for batches until `n` tests are this job's (batches shrink as the
/// queue empties, so one ask may give fewer).
fn take(b: &Backend, job: &Job, list: Option<&[&str]>, n: usize) -> Vec<String> {
    let mut got = batch(next(b, job, list, None)).unwrap().tests;
    while got.len() < n {
        let more = batch(next(b, job, None, None)).unwrap();
        assert!(!more.tests.is_empty(), "{}: {more:?} after {got:?}", b.name);
        got.extend(more.tests);
    }
    got.sort();
    got
}

fn run(id: &str, outcome: TestOutcome) -> TestResult {
    TestResult {
        id: id.into(),
        outcome,
        duration_ms: 20,
        message: outcome.is_failure().then(|| format!("{id} broke")),
    }
}

fn sharded_build(b: &Backend, shards: u32, retry_failed: u32) -> (i64, Vec<Job>) {
    let specs: Vec<JobSpec> = (0..shards)
        .map(|i| {
            serde_json::from_value(json!({
                "jobtype": "suite", "shard_index": i, "shard_total": shards,
                "retry_failed": retry_failed,
            }))
            .unwrap()
        })
        .collect();
    let made = b
        .submit(
            Some(("b".into(), Extra::new(), Extra::new())),
            specs,
            b.now(),
            None,
        )
        .unwrap();
    (made.build.unwrap(), made.jobs)
}

#[test]
fn the_shards_share_one_queue_and_every_test_runs_once() {
    for b in backends() {
        let (build, jobs) = sharded_build(&b, 2, 0);
        assert_eq!(jobs[0].test_queue, Some(jobs[0].id), "{}", b.name);
        assert_eq!(jobs[1].test_queue, Some(jobs[0].id), "{}", b.name);
        register(&b, "w1", &["suite"], json!([{}]));
        register(&b, "w2", &["suite"], json!([{}]));
        let a = claim(&b, "w1").unwrap();
        let c = claim(&b, "w2").unwrap();
        // No list yet: asked for.
        assert!(
            batch(next(&b, &a, None, None)).unwrap().need_list,
            "{}",
            b.name
        );
        let list_a: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        let refs_a: Vec<&str> = list_a.iter().map(String::as_str).collect();
        // The other shard's list has a test the first one lacks: merged.
        let mut refs_c = refs_a.clone();
        refs_c.push("t_new");
        let mut seen: Vec<String> = Vec::new();
        let first = batch(next(&b, &a, Some(&refs_a), Some(4))).unwrap();
        assert!(
            !first.tests.is_empty() && first.tests.len() <= 4,
            "{}: {first:?}",
            b.name
        );
        let mut held_a = first.tests;
        let mut held_c = batch(next(&b, &c, Some(&refs_c), None)).unwrap().tests;
        loop {
            for (job, held) in [(&a, &mut held_a), (&c, &mut held_c)] {
                if held.is_empty() {
                    continue;
                }
                let results: Vec<TestResult> =
                    held.iter().map(|t| run(t, TestOutcome::Passed)).collect();
                let r = b
                    .tests_report(job.id, job.attempt, &results, b.now())
                    .unwrap();
                assert_eq!(r.recorded as usize, held.len(), "{}: {r:?}", b.name);
                seen.append(held);
            }
            let na = batch(next(&b, &a, None, None));
            let nc = batch(next(&b, &c, None, None));
            let done = |n: &Option<TestsBatch>| n.as_ref().is_some_and(|n| n.done);
            if done(&na) && done(&nc) {
                break;
            }
            held_a = na.map(|n| n.tests).unwrap_or_default();
            held_c = nc.map(|n| n.tests).unwrap_or_default();
        }
        seen.sort();
        let mut want = list_a.clone();
        want.push("t_new".into());
        want.sort();
        assert_eq!(seen, want, "{}: every test exactly once", b.name);
        // Reported twice: ignored.
        let again = b
            .tests_report(a.id, a.attempt, &[run("t00", TestOutcome::Failed)], b.now())
            .unwrap();
        assert_eq!(again.recorded, 0, "{}", b.name);
        assert_eq!(again.ignored.len(), 1);
        let t = tests_of(&b, build);
        assert_eq!(t.totals.total, 31, "{}: {:?}", b.name, t.totals);
        assert_eq!(t.totals.passed, 31, "{}", b.name);
        // The job's result keeps counts, not durations.
        let done = b
            .finish(a.id, &outcome(&a, "passed", false), b.now())
            .unwrap();
        let report = done.test_report().expect("a test report in the result");
        assert!(
            report.total > 0 && report.durations.is_empty(),
            "{}: {report:?}",
            b.name
        );
    }
}

#[test]
fn a_failed_test_is_rerun_on_another_job_and_a_pass_marks_it_flaky() {
    for b in backends() {
        let (build, jobs) = sharded_build(&b, 2, 1);
        register(&b, "w1", &["suite"], json!([{}]));
        register(&b, "w2", &["suite"], json!([{}]));
        let a = claim(&b, "w1").unwrap();
        let c = claim(&b, "w2").unwrap();
        let list = ["flaky", "broken", "fine"];
        let got = take(&b, &a, Some(&list), 3);
        assert_eq!(got, ["broken", "fine", "flaky"], "{}", b.name);
        assert!(
            batch(next(&b, &c, Some(&list), None)).is_none(),
            "{}: c waits",
            b.name
        );
        let r = b
            .tests_report(
                a.id,
                a.attempt,
                &[
                    run("flaky", TestOutcome::Failed),
                    run("broken", TestOutcome::Error),
                    run("fine", TestOutcome::Passed),
                ],
                b.now(),
            )
            .unwrap();
        let mut retrying = r.retrying.clone();
        retrying.sort();
        assert_eq!(retrying, ["broken", "flaky"], "{}", b.name);
        // Not back to the job they failed on while another runs.
        assert!(batch(next(&b, &a, None, None)).is_none(), "{}", b.name);
        b.check_test_queue(jobs[0].id).unwrap();
        let rerun = take(&b, &c, None, 2);
        assert_eq!(rerun, ["broken", "flaky"], "{}", b.name);
        b.check_test_queue(jobs[0].id).unwrap();
        b.tests_report(
            c.id,
            c.attempt,
            &[
                run("flaky", TestOutcome::Passed),
                run("broken", TestOutcome::Error),
            ],
            b.now(),
        )
        .unwrap();
        assert!(batch(next(&b, &a, None, None)).unwrap().done);
        let mine = b.tests_finish(a.id, a.attempt).unwrap();
        assert!(mine.failing.is_empty(), "{}: {mine:?}", b.name);
        let theirs = b.tests_finish(c.id, c.attempt).unwrap();
        assert_eq!(theirs.failing, ["broken"], "{}", b.name);
        assert_eq!(theirs.flaky, 1, "{}", b.name);
        let t = tests_of(&b, build);
        assert_eq!(
            (
                t.totals.total,
                t.totals.passed,
                t.totals.error,
                t.totals.flaky
            ),
            (3, 2, 1, 1),
            "{}: {:?}",
            b.name,
            t.totals
        );
        // Failing first, with every run and who ran it.
        assert_eq!(t.tests[0].id, "broken");
        assert_eq!(t.tests[0].runs.len(), 2);
        assert_eq!(t.tests[0].runs[1].worker, "w2");
        let flaky = b.test_stats(StatsKind::Flaky, Some("suite"), 10).unwrap();
        assert_eq!(flaky.len(), 1, "{}", b.name);
        assert_eq!(
            (flaky[0].id.as_str(), flaky[0].recent.as_str()),
            ("flaky", "fp")
        );
        // A job failed for good is not rerun as a whole: its failed test was.
        let ended = b
            .finish(c.id, &outcome(&c, "failed", false), b.now())
            .unwrap();
        assert_eq!(ended.state, JobState::Failed, "{}", b.name);
        let _ = jobs;
    }
}

#[test]
fn tests_held_by_a_lost_attempt_go_to_the_other_shards() {
    for b in backends() {
        let (build, _) = sharded_build(&b, 2, 0);
        register(&b, "w1", &["suite"], json!([{}]));
        register(&b, "w2", &["suite"], json!([{}]));
        let a = claim(&b, "w1").unwrap();
        take(&b, &a, Some(&["x", "y"]), 2);
        // w1 dies; only w2 heartbeats on.
        b.advance(6_000);
        register(&b, "w2", &["suite"], json!([{}]));
        assert_eq!(b.expire_leases(b.now()).unwrap(), 1, "{}", b.name);
        // Its attempt is no longer current: refused.
        assert!(matches!(
            b.tests_report(a.id, a.attempt, &[run("x", TestOutcome::Passed)], b.now()),
            Err(StoreError::Conflict(_))
        ));
        let c = claim(&b, "w2").unwrap();
        assert_eq!(take(&b, &c, Some(&["x", "y"]), 2), ["x", "y"], "{}", b.name);
        b.check_test_queue(a.test_queue.unwrap()).unwrap();
        // Given back unreported: pending again, counted again.
        assert_eq!(b.tests_finish(c.id, c.attempt).unwrap().released, 2);
        b.check_test_queue(a.test_queue.unwrap()).unwrap();
        // A job without a queue has none.
        let lone = submit(&b, json!([{"jobtype": "suite"}])).remove(0);
        let lone = loop {
            let j = claim(&b, "w2").unwrap();
            if j.id == lone.id {
                break j;
            }
        };
        assert!(matches!(
            b.tests_next(lone.id, lone.attempt, &TestsNext::default(), b.now()),
            Err(StoreError::Invalid(_))
        ));
        let t = tests_of(&b, build);
        assert_eq!(t.totals.pending, 2, "{}: {:?}", b.name, t.totals);
    }
}

#[test]
fn junit_reports_count_each_test_once_per_build_and_feed_the_history() {
    for b in backends() {
        let (build, _) = sharded_build(&b, 2, 0);
        register(&b, "w1", &["suite"], json!([{}]));
        for (i, name) in ["a", "b"].iter().enumerate() {
            let j = claim(&b, "w1").unwrap();
            let mut o = outcome(&j, "passed", false);
            // A module skipped at import shows up in every shard's report.
            o.tests = Some(TestReport {
                total: 2,
                passed: 1,
                skipped: 1,
                durations: [
                    (name.to_string(), 100 * (i as u64 + 1)),
                    ("mod.skipped".into(), 0),
                ]
                .into_iter()
                .collect(),
                skipped_tests: vec!["mod.skipped".into()],
                ..Default::default()
            });
            let done = b.finish(j.id, &o, b.now()).unwrap();
            let kept = done.test_report().unwrap();
            assert!(kept.durations.is_empty() && kept.skipped_tests.is_empty());
        }
        let t = tests_of(&b, build);
        assert_eq!(
            (t.totals.total, t.totals.passed, t.totals.skipped),
            (3, 2, 1),
            "{}: {:?}",
            b.name,
            t.totals
        );
        let slow = b.test_stats(StatsKind::Slow, None, 10).unwrap();
        assert_eq!(slow[0].id, "b", "{}", b.name);
        assert_eq!(slow[0].avg_ms, Some(200));
        // The next sharded build is planned from that history.
        let (_, next_jobs) = sharded_build(&b, 2, 0);
        let planned: Vec<String> = next_jobs
            .iter()
            .flat_map(|j| j.shard_tests.clone().unwrap_or_default())
            .collect();
        assert_eq!(planned.len(), 3, "{}: {planned:?}", b.name);
        assert_eq!(b.shard_known(next_jobs[1].id).unwrap().len(), 3);
        // A second run is smoothed into the history.
        let j = claim(&b, "w1").unwrap();
        let mut o = outcome(&j, "passed", false);
        o.tests = Some(TestReport {
            total: 1,
            passed: 1,
            durations: [("b".to_string(), 400)].into_iter().collect(),
            ..Default::default()
        });
        b.finish(j.id, &o, b.now()).unwrap();
        let slow = b.test_stats(StatsKind::Slow, Some("suite"), 10).unwrap();
        assert_eq!(
            (slow[0].id.as_str(), slow[0].avg_ms, slow[0].recent.as_str()),
            (
                "b",
                Some(crate::rules::test_queue::smoothed(Some(200), 400)),
                "pp"
            ),
            "{}",
            b.name
        );
        b.check_test_queue(next_jobs[0].id).unwrap();
        // Retention forgets tests not seen since.
        b.advance(1000);
        b.purge_finished(b.now(), 100).unwrap();
        assert!(
            b.test_stats(StatsKind::Slow, None, 10).unwrap().is_empty(),
            "{}",
            b.name
        );
    }
}

// Artifacts: metadata on both backends.

#[test]
fn a_shard_with_nothing_left_stops_waiting_for_tests_held_far_too_long() {
    for b in backends() {
        sharded_build(&b, 2, 0);
        register(&b, "w1", &["suite"], json!([{}]));
        register(&b, "w2", &["suite"], json!([{}]));
        let hung = claim(&b, "w1").unwrap();
        // One test, estimated at the default second: w1 holds it.
        assert_eq!(
            take(&b, &hung, Some(&["stuck"]), 1),
            ["stuck"],
            "{}",
            b.name
        );
        let idle = claim(&b, "w2").unwrap();
        // Busy, as far as anyone can tell: wait for it to come back or end.
        assert!(
            batch(next(&b, &idle, Some(&["stuck"]), None)).is_none(),
            "{}",
            b.name
        );
        b.advance(12_000);
        assert!(batch(next(&b, &idle, None, None)).is_none(), "{}", b.name);
        // Held for over 3 × its estimate + 10 s: the holder is stuck.
        b.advance(2_000);
        let done = batch(next(&b, &idle, None, None)).expect("an answer, not a wait");
        assert!(done.done && done.tests.is_empty(), "{}: {done:?}", b.name);
    }
}

#[test]
fn a_failed_test_is_rerun_on_another_worker_while_one_runs_a_shard() {
    for b in backends() {
        sharded_build(&b, 3, 1);
        register(&b, "w1", &["suite"], json!([{}]));
        register(&b, "w2", &["suite"], json!([{}]));
        // Two shards on w1 (two slots), one on w2.
        let a = claim(&b, "w1").unwrap();
        let a2 = claim(&b, "w1").unwrap();
        let c = claim(&b, "w2").unwrap();
        let list = ["broken", "fine"];
        assert_eq!(
            take(&b, &a, Some(&list), 2),
            ["broken", "fine"],
            "{}",
            b.name
        );
        b.tests_report(
            a.id,
            a.attempt,
            &[
                run("broken", TestOutcome::Failed),
                run("fine", TestOutcome::Passed),
            ],
            b.now(),
        )
        .unwrap();
        // Not to the other shard on the same worker while w2 runs one.
        assert!(
            batch(next(&b, &a2, Some(&list), None)).is_none(),
            "{}: the shard on w1 waits",
            b.name
        );
        assert_eq!(take(&b, &c, Some(&list), 1), ["broken"], "{}", b.name);
    }
}
