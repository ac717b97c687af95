//! One suite, run against every backend: the same operations must give the
//! same answers on SQLite and on PostgreSQL. Each test runs once per
//! backend; PostgreSQL needs `TESTBOT_PG_URL` (scripts/test.sh starts a
//! private cluster and sets it), and is skipped only when
//! `TESTBOT_SKIP_POSTGRES=1` says so.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::*;

/// A store under test, with a clock the test moves.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    pg: Option<Arc<PgStore>>,
    now: std::cell::Cell<i64>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn now(&self) -> i64 {
        self.now.get()
    }

    /// Moves the clock on (PostgreSQL's is the database's, shifted).
    fn advance(&self, ms: i64) {
        self.now.set(self.now.get() + ms);
        if let Some(pg) = &self.pg {
            pg.advance_clock(ms);
        }
    }
}

impl std::ops::Deref for Backend {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

/// A fresh, empty database on the cluster `TESTBOT_PG_URL` names.
pub(crate) fn fresh_postgres_url() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let Ok(admin) = std::env::var("TESTBOT_PG_URL") else {
        assert!(
            std::env::var("TESTBOT_SKIP_POSTGRES").as_deref() == Ok("1"),
            "TESTBOT_PG_URL is not set: run the tests with scripts/test.sh, which starts a \
             private PostgreSQL cluster, or set TESTBOT_SKIP_POSTGRES=1 to leave PostgreSQL out"
        );
        eprintln!("TESTBOT_SKIP_POSTGRES=1: this test runs on SQLite only");
        return None;
    };
    let name = format!(
        "tb_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        crate::time::now_ms() % 1_000_000
    );
    let mut c = ::postgres::Client::connect(&admin, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach TESTBOT_PG_URL ({admin}): {e}"));
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let mut out = vec![Backend {
        name: "sqlite",
        store: Arc::new(sqlite),
        pg: None,
        now: std::cell::Cell::new(crate::time::now_ms()),
        _dir: Some(dir),
    }];
    if let Some(url) = fresh_postgres_url() {
        let pg = Arc::new(PgStore::open(&url).unwrap());
        out.push(Backend {
            name: "postgres",
            store: pg.clone(),
            pg: Some(pg),
            now: std::cell::Cell::new(crate::time::now_ms()),
            _dir: None,
        });
    }
    out
}

fn register(b: &Backend, name: &str, jobtypes: &[&str], platforms: serde_json::Value) {
    let reg: Registration = serde_json::from_value(json!({
        "name": name,
        "jobtypes": jobtypes,
        "platforms": platforms,
        "heartbeat_interval_ms": 1000,
    }))
    .unwrap();
    b.register(&reg, Some(&format!("hash-{name}")), &|_| false, b.now())
        .unwrap_or_else(|e| panic!("{}: register {name}: {e}", b.name));
}

fn submit(b: &Backend, specs: serde_json::Value) -> Vec<Job> {
    let specs: Vec<JobSpec> = serde_json::from_value(specs).unwrap();
    b.submit(None, specs, b.now(), None).unwrap().jobs
}

fn claim(b: &Backend, worker: &str) -> Option<Job> {
    match b.claim(worker, None, b.now()).unwrap() {
        Claim::Job(j) => Some(*j),
        _ => None,
    }
}

fn outcome(job: &Job, state: &str, infrastructure: bool) -> Outcome {
    serde_json::from_value(json!({
        "worker": job.worker.clone().unwrap_or_default(),
        "attempt": job.attempt,
        "state": state,
        "duration_ms": 5,
        "started_at": "",
        "finished_at": "",
        "infrastructure": infrastructure,
        "reason": if infrastructure { Some("the worker broke") } else { None },
    }))
    .unwrap()
}

#[test]
fn claims_go_by_priority_then_age_to_the_first_fitting_platform() {
    for b in backends() {
        let jobs = submit(
            &b,
            json!([
                {"jobtype": "unit"},
                {"jobtype": "unit", "priority": 5},
                {"jobtype": "unit", "platform": {"os": "mac"}},
                {"jobtype": "other"},
            ]),
        );
        register(&b, "w", &["unit"], json!([{"os": "linux"}, {"os": "win"}]));
        let first = claim(&b, "w").unwrap();
        assert_eq!(first.id, jobs[1].id, "{}: priority first", b.name);
        assert_eq!(first.state, JobState::Running);
        assert_eq!(first.attempt, 1);
        assert_eq!(first.platform_index, Some(0));
        let second = claim(&b, "w").unwrap();
        assert_eq!(second.id, jobs[0].id, "{}: then the oldest", b.name);
        // The mac job fits no platform; the other jobtype is not its own.
        assert!(claim(&b, "w").is_none(), "{}", b.name);
        assert_eq!(b.job(jobs[2].id).unwrap().state, JobState::Queued);
    }
}

#[test]
fn a_claim_asked_again_with_its_tag_gets_the_same_job() {
    for b in backends() {
        submit(&b, json!([{"jobtype": "unit"}, {"jobtype": "unit"}]));
        register(&b, "w", &["unit"], json!([{}]));
        let Claim::Job(a) = b.claim("w", Some((0, 7)), b.now()).unwrap() else {
            panic!("{}: no job", b.name)
        };
        let Claim::Job(again) = b.claim("w", Some((0, 7)), b.now()).unwrap() else {
            panic!("{}: no job", b.name)
        };
        assert_eq!(a.id, again.id, "{}", b.name);
        assert_eq!(again.attempt, 1, "{}", b.name);
    }
}

#[test]
fn results_for_stale_attempts_are_conflicts() {
    for b in backends() {
        let job = submit(&b, json!([{"jobtype": "unit"}])).remove(0);
        register(&b, "w", &["unit"], json!([{}]));
        register(&b, "v", &["unit"], json!([{}]));
        let running = claim(&b, "w").unwrap();
        let mut stale = outcome(&running, "passed", false);
        stale.attempt = 2;
        assert!(
            matches!(
                b.finish(job.id, &stale, b.now()),
                Err(StoreError::Conflict(_))
            ),
            "{}",
            b.name
        );
        let mut other = outcome(&running, "passed", false);
        other.worker = "v".into();
        assert!(matches!(
            b.finish(job.id, &other, b.now()),
            Err(StoreError::Conflict(_))
        ));
        let done = b
            .finish(job.id, &outcome(&running, "passed", false), b.now())
            .unwrap();
        assert_eq!(done.state, JobState::Passed, "{}", b.name);
        // Once only.
        assert!(matches!(
            b.finish(job.id, &outcome(&running, "failed", false), b.now()),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(b.job(job.id).unwrap().state, JobState::Passed);
    }
}

#[test]
fn a_lost_lease_requeues_until_the_attempts_are_spent() {
    for b in backends() {
        let job = submit(&b, json!([{"jobtype": "unit", "max_attempts": 2}])).remove(0);
        register(&b, "w", &["unit"], json!([{}]));
        for attempt in 1..=2 {
            register(&b, "w", &["unit"], json!([{}]));
            let j = claim(&b, "w").unwrap();
            assert_eq!(j.attempt, attempt, "{}", b.name);
            b.advance(10_000);
            assert_eq!(b.expire_leases(b.now()).unwrap(), 1, "{}", b.name);
        }
        let lost = b.job(job.id).unwrap();
        assert_eq!(lost.state, JobState::Error, "{}: {lost:?}", b.name);
        assert!(lost.reason.unwrap().contains("after 2 attempts"));
        let attempts = b.attempts(job.id).unwrap();
        assert_eq!(attempts.len(), 2);
        assert!(attempts.iter().all(|a| a.state == Some(AttemptState::Lost)));
    }
}

#[test]
fn test_failures_rerun_and_a_pass_after_one_is_flaky() {
    for b in backends() {
        let job = submit(&b, json!([{"jobtype": "unit", "retry_failed": 1}])).remove(0);
        register(&b, "w", &["unit"], json!([{}]));
        let first = claim(&b, "w").unwrap();
        let mut failed = outcome(&first, "failed", false);
        failed.tests = Some(TestReport {
            total: 1,
            failed: 1,
            failures: vec![TestFailure {
                name: "t.flaky".into(),
                kind: "failure".into(),
                message: "boom".into(),
            }],
            ..Default::default()
        });
        assert_eq!(
            b.finish(job.id, &failed, b.now()).unwrap().state,
            JobState::Queued
        );
        let second = claim(&b, "w").unwrap();
        assert_eq!(second.attempt, 2);
        let passed = b
            .finish(job.id, &outcome(&second, "passed", false), b.now())
            .unwrap();
        assert_eq!(passed.state, JobState::Passed, "{}", b.name);
        assert!(passed.flaky, "{}", b.name);
        assert_eq!(passed.flaky_tests, vec!["t.flaky".to_string()]);
    }
}

#[test]
fn three_infrastructure_failures_quarantine_a_worker() {
    for b in backends() {
        submit(
            &b,
            json!(vec![json!({"jobtype": "unit", "max_attempts": 10}); 4]),
        );
        register(&b, "w", &["unit"], json!([{}]));
        for _ in 0..3 {
            let j = claim(&b, "w").unwrap();
            b.advance(1);
            b.finish(j.id, &outcome(&j, "error", true), b.now())
                .unwrap();
            b.advance(1);
        }
        let w = b.worker("w", b.now()).unwrap();
        assert_eq!(w.status, WorkerStatus::Quarantined, "{}: {w:?}", b.name);
        assert!(matches!(b.claim("w", None, b.now()).unwrap(), Claim::Held));
        // Undrain ends the quarantine.
        b.set_drained("w", false, b.now()).unwrap();
        assert!(claim(&b, "w").is_some(), "{}", b.name);
    }
}

#[test]
fn cancel_ends_a_queued_job_and_asks_a_running_one() {
    for b in backends() {
        let jobs = submit(&b, json!([{"jobtype": "unit"}, {"jobtype": "unit"}]));
        register(&b, "w", &["unit"], json!([{}]));
        let running = claim(&b, "w").unwrap();
        let queued = b.cancel(jobs[1].id, b.now()).unwrap();
        assert_eq!(queued.state, JobState::Canceled, "{}", b.name);
        let asked = b.cancel(running.id, b.now()).unwrap();
        assert_eq!(asked.state, JobState::Running);
        assert!(asked.cancel_requested);
        assert_eq!(b.pending_cancels("w").unwrap(), vec![running.id]);
        let ended = b
            .finish(running.id, &outcome(&running, "failed", false), b.now())
            .unwrap();
        assert_eq!(ended.state, JobState::Canceled, "{}", b.name);
    }
}

#[test]
fn a_job_list_can_hold_only_the_jobs_that_started_or_ended() {
    for b in backends() {
        let jobs = submit(
            &b,
            json!([{"jobtype": "unit"}, {"jobtype": "unit"}, {"jobtype": "unit"}]),
        );
        register(&b, "w", &["unit"], json!([{}]));
        let first = claim(&b, "w").unwrap();
        b.finish(first.id, &outcome(&first, "passed", false), b.now())
            .unwrap();
        let second = claim(&b, "w").unwrap();
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let list = |reached: Option<Reached>, by_id: bool| -> Vec<i64> {
            let f = JobFilter {
                ids: if by_id { ids.clone() } else { Vec::new() },
                reached,
                limit: 10,
                ..Default::default()
            };
            b.jobs(&f).unwrap().iter().map(|j| j.id).collect()
        };
        for by_id in [true, false] {
            assert_eq!(
                list(None, by_id),
                vec![ids[2], ids[1], ids[0]],
                "{}",
                b.name
            );
            assert_eq!(
                list(Some(Reached::Started), by_id),
                vec![second.id, first.id],
                "{}",
                b.name
            );
            assert_eq!(
                list(Some(Reached::Ended), by_id),
                vec![first.id],
                "{}",
                b.name
            );
        }
    }
}

#[test]
fn job_and_build_lists_filter_by_jobtype_text_and_name_and_page_by_id() {
    for b in backends() {
        let jobs = submit(
            &b,
            json!([
                {"jobtype": "unit", "params": {"suite": "Alpha"}},
                {"jobtype": "lint", "params": {"suite": "alphabet"}},
                {"jobtype": "unit", "params": {"suite": "beta"}},
                {"jobtype": "unit", "params": {"suite": "ALPHA-2"}},
            ]),
        );
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        for by_id in [false, true] {
            let list = |f: JobFilter| -> Vec<i64> {
                let f = JobFilter {
                    ids: if by_id { ids.clone() } else { Vec::new() },
                    limit: 10,
                    ..f
                };
                b.jobs(&f).unwrap().iter().map(|j| j.id).collect()
            };
            let unit = || Some("unit".to_string());
            assert_eq!(
                list(JobFilter {
                    jobtype: unit(),
                    ..Default::default()
                }),
                vec![ids[3], ids[2], ids[0]],
                "{}",
                b.name
            );
            assert_eq!(
                list(JobFilter {
                    text: Some("alpha".into()),
                    ..Default::default()
                }),
                vec![ids[3], ids[1], ids[0]],
                "{}",
                b.name
            );
            assert_eq!(
                list(JobFilter {
                    jobtype: unit(),
                    text: Some("alpha".into()),
                    before: Some(ids[3]),
                    ..Default::default()
                }),
                vec![ids[0]],
                "{}",
                b.name
            );
            // Keys and values as `key=value`, never the JSON around them.
            assert_eq!(
                list(JobFilter {
                    text: Some("SUITE=beta".into()),
                    ..Default::default()
                }),
                vec![ids[2]],
                "{}",
                b.name
            );
            for json_only in ["{", "\":", "\\"] {
                assert_eq!(
                    list(JobFilter {
                        text: Some(json_only.into()),
                        ..Default::default()
                    }),
                    Vec::<i64>::new(),
                    "{}: {json_only}",
                    b.name
                );
            }
        }
        let mut builds = Vec::new();
        for name in ["nightly main", "pr 12", "Nightly release"] {
            let specs: Vec<JobSpec> = serde_json::from_value(json!([{"jobtype": "unit"}])).unwrap();
            let id = b
                .submit(
                    Some((name.into(), Extra::new(), Extra::new())),
                    specs,
                    b.now(),
                    None,
                )
                .unwrap()
                .build;
            builds.push(id.unwrap());
        }
        let names = |f: BuildFilter| -> Vec<i64> {
            b.builds(&BuildFilter { limit: 10, ..f })
                .unwrap()
                .iter()
                .map(|x| x.id)
                .collect()
        };
        assert_eq!(
            names(BuildFilter {
                name: Some("NIGHTLY".into()),
                ..Default::default()
            }),
            vec![builds[2], builds[0]],
            "{}",
            b.name
        );
        assert_eq!(
            names(BuildFilter {
                before: Some(builds[2]),
                ..Default::default()
            }),
            vec![builds[1], builds[0]],
            "{}",
            b.name
        );
    }
}

#[test]
fn a_drained_worker_says_since_when_and_forgets_it_when_undrained() {
    for b in backends() {
        register(&b, "d", &["unit"], json!([{}]));
        assert_eq!(
            b.worker("d", b.now()).unwrap().drained_at,
            None,
            "{}",
            b.name
        );
        let first = b.set_drained("d", true, b.now()).unwrap();
        let since = first
            .drained_at
            .clone()
            .unwrap_or_else(|| panic!("{}: no drained_at", b.name));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let again = b.set_drained("d", true, b.now()).unwrap();
        assert_eq!(
            again.drained_at.as_deref(),
            Some(since.as_str()),
            "{}: draining again keeps the first time",
            b.name
        );
        let undrained = b.set_drained("d", false, b.now()).unwrap();
        assert_eq!(undrained.drained_at, None, "{}", b.name);
    }
}

#[test]
fn logs_take_offsets_once_and_keep_the_head_and_tail_past_the_cap() {
    for b in backends() {
        let job = submit(&b, json!([{"jobtype": "unit"}])).remove(0);
        register(&b, "w", &["unit"], json!([{}]));
        let j = claim(&b, "w").unwrap();
        let q = |offset| LogQuery {
            worker: "w".into(),
            attempt: j.attempt,
            offset,
        };
        assert_eq!(
            b.append_log(job.id, &q(Some(0)), b"hello ", b.now())
                .unwrap()
                .size,
            6
        );
        // A retried chunk is not stored twice; a gap is refused.
        assert_eq!(
            b.append_log(job.id, &q(Some(0)), b"hello ", b.now())
                .unwrap()
                .size,
            6
        );
        b.append_log(job.id, &q(Some(6)), b"world\n", b.now())
            .unwrap();
        assert!(matches!(
            b.append_log(job.id, &q(Some(100)), b"x", b.now()),
            Err(StoreError::Invalid(_))
        ));
        let log = b.read_log(job.id, None, 0).unwrap();
        assert_eq!(log.data, b"hello world\n", "{}", b.name);
        assert_eq!(b.read_log(job.id, None, 6).unwrap().data, b"world\n");
        // A stale attempt may not write.
        let stale = LogQuery {
            worker: "w".into(),
            attempt: 9,
            offset: None,
        };
        assert!(matches!(
            b.append_log(job.id, &stale, b"x", b.now()),
            Err(StoreError::Conflict(_))
        ));
    }
}

#[test]
fn retention_deletes_ended_jobs_and_keeps_the_rest() {
    for b in backends() {
        let jobs = submit(&b, json!([{"jobtype": "unit"}, {"jobtype": "unit"}]));
        register(&b, "w", &["unit"], json!([{}]));
        let j = claim(&b, "w").unwrap();
        b.finish(j.id, &outcome(&j, "passed", false), b.now())
            .unwrap();
        b.advance(5_000);
        assert_eq!(
            b.purge_finished(b.now() + 1_000_000, 200).unwrap(),
            1,
            "{}",
            b.name
        );
        assert!(matches!(b.job(jobs[0].id), Err(StoreError::NotFound(_))));
        assert_eq!(b.job(jobs[1].id).unwrap().state, JobState::Queued);
    }
}

#[test]
fn a_name_is_bound_to_the_token_it_registered_with() {
    for b in backends() {
        register(&b, "w", &["unit"], json!([{}]));
        assert_eq!(
            b.worker_binding("w", "hash-other").unwrap().as_deref(),
            Some("hash-w")
        );
        let reg: Registration = serde_json::from_value(json!({
            "name": "w", "jobtypes": ["unit"], "platforms": [{}], "heartbeat_interval_ms": 1000,
        }))
        .unwrap();
        assert!(matches!(
            b.register(&reg, Some("hash-other"), &|_| false, b.now()),
            Err(StoreError::Forbidden(_))
        ));
        assert_eq!(b.worker_binding("nobody", "h").unwrap(), None);
    }
}

#[test]
fn concurrent_claims_never_share_a_job() {
    for b in backends() {
        let jobs = submit(&b, json!(vec![json!({"jobtype": "unit"}); 40]));
        for i in 0..4 {
            register(&b, &format!("w{i}"), &["unit"], json!([{}]));
        }
        let now = b.now();
        let taken: Vec<i64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let store = b.store.clone();
                    s.spawn(move || {
                        let mut got = Vec::new();
                        while let Claim::Job(j) = store.claim(&format!("w{i}"), None, now).unwrap()
                        {
                            got.push(j.id);
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut sorted = taken.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            taken.len(),
            "{}: a job was given twice",
            b.name
        );
        assert_eq!(taken.len(), jobs.len(), "{}", b.name);
    }
}

#[test]
fn unchanged_idle_heartbeats_are_written_in_batches_and_keep_a_worker_online() {
    for b in backends() {
        register(&b, "w", &["unit"], json!([{}]));
        let beat = Heartbeat {
            status: "idle".into(),
            ..Default::default()
        };
        b.heartbeat("w", &beat, b.now()).unwrap();
        b.advance(4_000);
        // Unchanged: may be only noted in memory until the flush.
        b.heartbeat("w", &beat, b.now()).unwrap();
        b.flush_heartbeats().unwrap();
        b.advance(4_000);
        let w = b.worker("w", b.now()).unwrap();
        assert_ne!(w.status, WorkerStatus::Offline, "{}: {w:?}", b.name);
        // Silent for a whole lease: offline.
        b.advance(6_000);
        let w = b.worker("w", b.now()).unwrap();
        assert_eq!(w.status, WorkerStatus::Offline, "{}: {w:?}", b.name);
    }
}

// The test queue: the shards of one submission share it.

mod artifacts;
mod test_queue;

#[test]
fn a_submission_sent_again_with_its_key_makes_no_new_jobs() {
    let key = |k: &str, d: &str| {
        Some(SubmitKey {
            key: k.into(),
            digest: d.into(),
        })
    };
    let specs = || -> Vec<JobSpec> {
        serde_json::from_value(json!([{"jobtype": "unit"}, {"jobtype": "unit"}])).unwrap()
    };
    for b in backends() {
        let first = b.submit(None, specs(), b.now(), key("k1", "d1")).unwrap();
        assert!(!first.repeated, "{}", b.name);
        let again = b.submit(None, specs(), b.now(), key("k1", "d1")).unwrap();
        assert!(again.repeated, "{}", b.name);
        let ids = |s: &Submitted| s.jobs.iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&first), "{}", b.name);
        // The key names that request only.
        let other = b.submit(None, specs(), b.now(), key("k1", "d2"));
        assert!(
            matches!(other, Err(StoreError::Conflict(ref m)) if m.contains("k1")),
            "{}: {other:?}",
            b.name
        );
        // Queued once: a worker gets two jobs, not four.
        register(&b, "w", &["unit"], json!([{}]));
        let mut got = Vec::new();
        while let Some(j) = claim(&b, "w") {
            got.push(j.id);
            assert!(got.len() <= 2, "{}: {got:?}", b.name);
        }
        got.sort();
        assert_eq!(got, ids(&first), "{}", b.name);
        // Builds: the same build, as it is now.
        let build = |k| {
            b.submit(
                Some(("nightly".into(), Extra::new(), Extra::new())),
                specs(),
                b.now(),
                key(k, "d"),
            )
            .unwrap()
        };
        let (one, two) = (build("k2"), build("k2"));
        assert!(!one.repeated && two.repeated, "{}", b.name);
        assert_eq!(one.build, two.build, "{}", b.name);
        assert_eq!(ids(&one), ids(&two), "{}", b.name);
        // Sent at once from several clients: one submission.
        let made: Vec<Submitted> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let store = b.store.clone();
                    let now = b.now();
                    s.spawn(move || store.submit(None, specs(), now, key("k3", "d")).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|m| !m.repeated).count(), 1, "{}", b.name);
        assert!(made.iter().all(|m| ids(m) == ids(&made[0])), "{}", b.name);
        // A key is kept a day.
        b.advance(submit_keys::KEEP_MS + 1000);
        let later = b.submit(None, specs(), b.now(), key("k1", "d1")).unwrap();
        assert!(!later.repeated, "{}", b.name);
        assert!(later.jobs[0].id > first.jobs[1].id, "{}", b.name);
    }
}

#[test]
fn a_job_no_worker_can_run_has_its_place_among_its_jobtypes_queued_jobs() {
    for b in backends() {
        let jobs = submit(&b, json!(vec![json!({"jobtype": "nobody-has-it"}); 3]));
        let places: Vec<Option<u64>> = jobs
            .iter()
            .map(|j| b.explain(j.id, b.now()).unwrap().position)
            .collect();
        assert_eq!(places, [Some(1), Some(2), Some(3)], "{}", b.name);
    }
}
