//! `/metrics` in Prometheus text format. Counters and histograms the
//! server keeps in memory since its start (dispatch latency, job duration,
//! HTTP requests), plus gauges read from the store at scrape time (jobs by
//! state and jobtype, oldest queued job, workers, log bytes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::wire::Summary;

/// Bucket bounds in seconds.
const DISPATCH_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];
const DURATION_BUCKETS: &[f64] = &[0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    dispatch: Option<Histogram>,
    /// By jobtype.
    durations: BTreeMap<String, Histogram>,
    /// (route, method, status) -> count.
    requests: BTreeMap<(String, String, u16), u64>,
}

/// The in-memory part of the metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
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

impl Metrics {
    /// A job waited this long between being queued and being claimed.
    pub fn observe_dispatch(&self, seconds: f64) {
        let mut i = self.inner.lock().unwrap();
        i.dispatch
            .get_or_insert_with(|| Histogram::new(DISPATCH_BUCKETS))
            .observe(seconds.max(0.0));
    }

    /// A job's command ran this long.
    pub fn observe_duration(&self, jobtype: &str, seconds: f64) {
        let mut i = self.inner.lock().unwrap();
        i.durations
            .entry(jobtype.to_string())
            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
            .observe(seconds.max(0.0));
    }

    fn count_request(&self, route: String, method: String, status: u16) {
        *self
            .inner
            .lock()
            .unwrap()
            .requests
            .entry((route, method, status))
            .or_default() += 1;
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "testbot_jobs",
            "gauge",
            "Jobs by jobtype and state.",
        );
        for (jobtype, state, n) in &g.jobs {
            let _ = writeln!(
                out,
                "testbot_jobs{{jobtype=\"{}\",state=\"{state}\"}} {n}",
                label(jobtype)
            );
        }
        head(
            &mut out,
            "testbot_jobs_total_by_state",
            "gauge",
            "Jobs by state, over all jobtypes.",
        );
        for (state, n) in &g.summary.jobs {
            let _ = writeln!(out, "testbot_jobs_total_by_state{{state=\"{state}\"}} {n}");
        }
        head(
            &mut out,
            "testbot_oldest_queued_job_age_seconds",
            "gauge",
            "How long the oldest queued job of each jobtype has waited.",
        );
        for (jobtype, age) in &g.oldest_queued {
            let _ = writeln!(
                out,
                "testbot_oldest_queued_job_age_seconds{{jobtype=\"{}\"}} {age:.3}",
                label(jobtype)
            );
        }
        head(&mut out, "testbot_workers", "gauge", "Workers by status.");
        let w = &g.summary.workers;
        for (status, n) in [
            ("idle", w.idle),
            ("busy", w.busy),
            ("draining", w.draining),
            ("quarantined", w.quarantined),
            ("offline", w.offline),
        ] {
            let _ = writeln!(out, "testbot_workers{{status=\"{status}\"}} {n}");
        }
        head(
            &mut out,
            "testbot_workers_online",
            "gauge",
            "Workers heard from within their lease.",
        );
        let _ = writeln!(out, "testbot_workers_online {}", w.online);
        head(
            &mut out,
            "testbot_log_bytes_stored",
            "gauge",
            "Log bytes kept in the database.",
        );
        let _ = writeln!(out, "testbot_log_bytes_stored {}", g.log_bytes);

        let i = self.inner.lock().unwrap();
        head(
            &mut out,
            "testbot_dispatch_latency_seconds",
            "histogram",
            "Time from a job being queued to a worker claiming it (since the server started).",
        );
        i.dispatch
            .as_ref()
            .unwrap_or(&Histogram::new(DISPATCH_BUCKETS))
            .render(&mut out, "testbot_dispatch_latency_seconds", "");
        head(
            &mut out,
            "testbot_job_duration_seconds",
            "histogram",
            "How long jobs' commands ran, by jobtype (since the server started).",
        );
        for (jobtype, h) in &i.durations {
            h.render(
                &mut out,
                "testbot_job_duration_seconds",
                &format!("jobtype=\"{}\"", label(jobtype)),
            );
        }
        head(
            &mut out,
            "testbot_http_requests_total",
            "counter",
            "HTTP requests by route, method and status (since the server started).",
        );
        for ((route, method, status), n) in &i.requests {
            let _ = writeln!(
                out,
                "testbot_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
        out
    }
}

/// Escapes a label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware counting every request by its route template (never the raw
/// path, so ids do not make new series).
pub async fn count_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    st.metrics
        .count_request(route, method, resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn histograms_are_cumulative() {
        let mut h = super::Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 1"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"));
        assert!(out.contains("x_count{a=\"b\"} 3"));
    }
}
