//! `/metrics` in the OpenMetrics text format, rendered by the Prometheus
//! project's Rust client. Counters and histograms the server keeps in
//! memory since its start (dispatch latency, job duration, HTTP requests),
//! plus gauges read from the store at scrape time (jobs by state and
//! jobtype, oldest queued job, workers, log bytes).

use std::sync::atomic::AtomicU64;

use axum::extract::{MatchedPath, Request};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::wire::Summary;

/// The content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds.
const DISPATCH_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];
const DURATION_BUCKETS: [f64; 9] = [0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobtypeLabel {
    jobtype: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    jobtype: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

type DurationFamily = Family<JobtypeLabel, Histogram, fn() -> Histogram>;

/// The in-memory part of the metrics: shared, lock-free to update.
pub struct Metrics {
    dispatch: Histogram,
    durations: DurationFamily,
    requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            dispatch: Histogram::new(DISPATCH_BUCKETS),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            requests: Family::default(),
        }
    }
}

/// What the store reports at scrape time.
pub struct Gauges {
    pub summary: Summary,
    /// (jobtype, state) -> jobs.
    pub jobs: Vec<(String, String, u64)>,
    /// jobtype -> seconds the oldest queued job has waited.
    pub oldest_queued: Vec<(String, f64)>,
    pub log_bytes: u64,
}

/// A count as a gauge's value (counts beyond i64 stay at its maximum).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A job waited this long between being queued and being claimed.
    pub fn observe_dispatch(&self, seconds: f64) {
        self.dispatch.observe(seconds.max(0.0));
    }

    /// A job's command ran this long.
    pub fn observe_duration(&self, jobtype: &str, seconds: f64) {
        let label = JobtypeLabel {
            jobtype: jobtype.to_string(),
        };
        self.durations
            .get_or_create(&label)
            .observe(seconds.max(0.0));
    }

    pub fn count_request(&self, route: String, method: String, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The exposition: this scrape's gauges from `g`, then what was counted
    /// since the server started.
    pub fn render(&self, g: &Gauges) -> String {
        let mut reg = Registry::default();
        let jobs = Family::<JobLabels, Gauge>::default();
        for (jobtype, state, n) in &g.jobs {
            let labels = JobLabels {
                jobtype: jobtype.clone(),
                state: state.clone(),
            };
            jobs.get_or_create(&labels).set(count(*n));
        }
        reg.register("testbot_jobs", "Jobs by jobtype and state.", jobs);
        let by_state = Family::<StateLabel, Gauge>::default();
        for (state, n) in &g.summary.jobs {
            let label = StateLabel {
                state: state.clone(),
            };
            by_state.get_or_create(&label).set(count(*n));
        }
        reg.register(
            "testbot_jobs_by_state",
            "Jobs by state, over all jobtypes.",
            by_state,
        );
        let oldest = Family::<JobtypeLabel, Gauge<f64, AtomicU64>>::default();
        for (jobtype, age) in &g.oldest_queued {
            let label = JobtypeLabel {
                jobtype: jobtype.clone(),
            };
            oldest.get_or_create(&label).set(*age);
        }
        reg.register_with_unit(
            "testbot_oldest_queued_job_age",
            "How long the oldest queued job of each jobtype has waited.",
            Unit::Seconds,
            oldest,
        );
        let workers = Family::<StatusLabel, Gauge>::default();
        let w = &g.summary.workers;
        for (status, n) in [
            ("idle", w.idle),
            ("busy", w.busy),
            ("draining", w.draining),
            ("quarantined", w.quarantined),
            ("offline", w.offline),
        ] {
            let label = StatusLabel {
                status: status.to_string(),
            };
            workers.get_or_create(&label).set(count(n));
        }
        reg.register("testbot_workers", "Workers by status.", workers);
        let online = Gauge::<i64>::default();
        online.set(count(w.online));
        reg.register(
            "testbot_workers_online",
            "Workers heard from within their lease.",
            online,
        );
        let log_bytes = Gauge::<i64>::default();
        log_bytes.set(count(g.log_bytes));
        reg.register(
            "testbot_log_bytes_stored",
            "Log bytes kept in the database.",
            log_bytes,
        );
        reg.register_with_unit(
            "testbot_dispatch_latency",
            "Time from a job being queued to a worker claiming it (since the server started).",
            Unit::Seconds,
            self.dispatch.clone(),
        );
        reg.register_with_unit(
            "testbot_job_duration",
            "How long jobs' commands ran, by jobtype (since the server started).",
            Unit::Seconds,
            self.durations.clone(),
        );
        reg.register(
            "testbot_http_requests",
            "HTTP requests by route, method and status (since the server started).",
            self.requests.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String does not fail");
        out
    }
}

/// What a request is counted by: its route template (never the raw path,
/// so ids do not make new series) and its method.
pub fn request_labels(req: &Request) -> (String, String) {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    (route, req.method().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        for s in [0.5, 5.0, 50.0] {
            m.observe_duration("a\"b", s);
        }
        let g = Gauges {
            summary: Summary {
                version: String::new(),
                workers: Default::default(),
                jobs: Default::default(),
                builds: vec![],
            },
            jobs: vec![("x\ny".into(), "queued".into(), 3)],
            oldest_queued: vec![],
            log_bytes: u64::MAX,
        };
        let out = m.render(&g);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(
            has(r#"testbot_job_duration_seconds_bucket{le="1.0",jobtype="a\"b"} 1"#),
            "{out}"
        );
        assert!(has(
            r#"testbot_job_duration_seconds_bucket{le="15.0",jobtype="a\"b"} 2"#
        ));
        assert!(has(
            r#"testbot_job_duration_seconds_bucket{le="+Inf",jobtype="a\"b"} 3"#
        ));
        assert!(has(
            r#"testbot_job_duration_seconds_count{jobtype="a\"b"} 3"#
        ));
        assert!(has(r#"testbot_jobs{jobtype="x\ny",state="queued"} 3"#));
        assert!(has(&format!("testbot_log_bytes_stored {}", i64::MAX)));
        assert!(has("# UNIT testbot_dispatch_latency_seconds seconds"));
        assert_eq!(out.lines().last(), Some("# EOF"));
    }
}
