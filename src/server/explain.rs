//! "Why is this job waiting": from a job and the fleet as the store sees
//! it, the one reason a queued job is not running, in words and as data.
//! Pure logic: the store gathers the inputs, pages and the API show the
//! answer, and submit uses it to warn about jobs nothing can ever run.

use crate::matching;
use crate::wire::{Explanation, Job, JobState, Props, Worker, WorkerFit, WorkerStatus};

/// A worker's `accept` rules (`key=value`) as pairs.
pub fn parse_accept(rules: &[String]) -> Vec<(String, String)> {
    rules
        .iter()
        .filter_map(|r| r.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A worker as matching and explaining need it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub name: String,
    pub jobtypes: Vec<String>,
    pub platforms: Vec<Props>,
    /// `accept` rules: the worker takes only jobs asking for these.
    pub accept: Vec<(String, String)>,
    pub status: WorkerStatus,
    pub slots: u32,
    pub running: u32,
}

impl From<&Worker> for WorkerView {
    /// From a worker as the API shows it (the pages explain from the
    /// workers they already read).
    fn from(w: &Worker) -> WorkerView {
        WorkerView {
            name: w.name.clone(),
            jobtypes: w.jobtypes.clone(),
            platforms: w.platforms.clone(),
            accept: parse_accept(&w.accept),
            status: w.status,
            slots: w.slots,
            running: u32::try_from(w.jobs.len()).unwrap_or(u32::MAX),
        }
    }
}

impl WorkerView {
    pub fn has_jobtype(&self, jobtype: &str) -> bool {
        self.jobtypes.iter().any(|t| t == jobtype)
    }

    /// Whether the worker could ever run a job with these requirements.
    pub fn fits(&self, requirements: &Props) -> bool {
        matching::job_accepted(requirements, &self.accept)
            && matching::first_match(requirements, &self.platforms).is_some()
    }

    /// Online, and neither draining nor quarantined.
    pub fn available(&self) -> bool {
        matches!(self.status, WorkerStatus::Idle | WorkerStatus::Busy)
    }

    /// Why the worker cannot run the job, when it cannot.
    fn misfit(&self, requirements: &Props) -> Option<String> {
        if !matching::job_accepted(requirements, &self.accept) {
            let rules: Vec<String> = self
                .accept
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            return Some(format!(
                "accepts only jobs that ask for {}",
                rules.join(" and ")
            ));
        }
        if matching::first_match(requirements, &self.platforms).is_some() {
            return None;
        }
        let nearest = self
            .platforms
            .iter()
            .min_by_key(|p| matching::failed_count(requirements, p))?;
        let (key, cond) = matching::first_failed(requirements, nearest)?;
        let wanted = matching::parse_condition(cond)
            .map(|c| c.describe())
            .unwrap_or_else(|_| cond.to_string());
        Some(match nearest.get(key) {
            Some(v) => format!("has {key}={v}, the job needs {key}{wanted}"),
            None => format!("has no {key}, the job needs {key}{wanted}"),
        })
    }
}

/// Why a job that no registered worker could ever run waits; `None` when
/// some worker could.
pub fn never_runnable(
    jobtype: &str,
    requirements: &Props,
    workers: &[WorkerView],
) -> Option<String> {
    let e = explain_queued(0, jobtype, requirements, workers, None);
    matches!(e.reason.as_str(), "no_jobtype" | "no_platform").then_some(e.message)
}

/// Explains any job; `position` is its place in its jobtype's queue.
pub fn explain(job: &Job, workers: &[WorkerView], position: Option<u64>) -> Explanation {
    match job.state {
        JobState::Queued => {
            explain_queued(job.id, &job.jobtype, &job.requirements, workers, position)
        }
        JobState::Running => Explanation {
            job: job.id,
            state: job.state,
            reason: "running".into(),
            message: format!(
                "running attempt {} on {}",
                job.attempt,
                job.worker.as_deref().unwrap_or("?")
            ),
            position: None,
            workers: Vec::new(),
        },
        state => Explanation {
            job: job.id,
            state,
            reason: "finished".into(),
            message: format!(
                "finished: {state}{}",
                job.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            position: None,
            workers: Vec::new(),
        },
    }
}

/// The registered jobtype closest to a mistyped one, when one is close: at
/// most a third of its letters off.
fn nearest_jobtype<'a>(jobtype: &str, workers: &'a [WorkerView]) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for w in workers {
        for t in &w.jobtypes {
            let d = edit_distance(jobtype, t);
            if d <= (jobtype.chars().count().max(3) / 3).max(1) && best.is_none_or(|(_, b)| d < b) {
                best = Some((t.as_str(), d));
            }
        }
    }
    best.map(|(t, _)| t)
}

/// Levenshtein distance, case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn explain_queued(
    id: i64,
    jobtype: &str,
    requirements: &Props,
    workers: &[WorkerView],
    position: Option<u64>,
) -> Explanation {
    let answer = |reason: &str, message: String, workers: Vec<WorkerFit>| Explanation {
        job: id,
        state: JobState::Queued,
        reason: reason.into(),
        message,
        position,
        workers,
    };
    let typed: Vec<&WorkerView> = workers.iter().filter(|w| w.has_jobtype(jobtype)).collect();
    if typed.is_empty() {
        let message = match nearest_jobtype(jobtype, workers) {
            Some(t) => format!(
                "no registered worker has the jobtype {jobtype:?}; did you mean {t:?}? \
                 The job stays queued until a worker has it"
            ),
            None => format!(
                "no registered worker has the jobtype {jobtype:?}; the job stays queued until one does"
            ),
        };
        return answer("no_jobtype", message, Vec::new());
    }
    let fitting: Vec<&WorkerView> = typed
        .iter()
        .copied()
        .filter(|w| w.fits(requirements))
        .collect();
    if fitting.is_empty() {
        let mut nearest: Vec<(&WorkerView, usize)> = typed
            .iter()
            .map(|w| {
                let miss = w
                    .platforms
                    .iter()
                    .map(|p| matching::failed_count(requirements, p))
                    .min()
                    .unwrap_or(usize::MAX);
                (*w, miss)
            })
            .collect();
        nearest.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.name.cmp(&b.0.name)));
        let fits: Vec<WorkerFit> = nearest
            .iter()
            .take(3)
            .map(|(w, _)| WorkerFit {
                name: w.name.clone(),
                status: w.status,
                fits: false,
                misfit: w.misfit(requirements),
            })
            .collect();
        let said: Vec<String> = fits
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f.name,
                    f.misfit.as_deref().unwrap_or("does not fit")
                )
            })
            .collect();
        return answer(
            "no_platform",
            format!(
                "{} worker{} with the jobtype {jobtype:?}, none with a fitting platform: {}",
                typed.len(),
                if typed.len() == 1 { "" } else { "s" },
                said.join("; ")
            ),
            fits,
        );
    }
    let fits: Vec<WorkerFit> = fitting
        .iter()
        .map(|w| WorkerFit {
            name: w.name.clone(),
            status: w.status,
            fits: true,
            misfit: None,
        })
        .collect();
    let available: Vec<&&WorkerView> = fitting.iter().filter(|w| w.available()).collect();
    if available.is_empty() {
        let said: Vec<String> = fitting
            .iter()
            .map(|w| format!("{} is {}", w.name, w.status))
            .collect();
        return answer(
            "unavailable",
            format!(
                "every fitting worker is offline, draining or quarantined: {}",
                said.join(", ")
            ),
            fits,
        );
    }
    if available.iter().all(|w| w.running >= w.slots) {
        let place = position
            .map(|p| format!("; place in queue: {p}"))
            .unwrap_or_default();
        return answer(
            "busy",
            if available.len() == 1 {
                format!(
                    "the one fitting worker, {}, is busy{place}",
                    available[0].name
                )
            } else {
                format!("all {} fitting workers are busy{place}", available.len())
            },
            fits,
        );
    }
    answer(
        "starting",
        "a fitting worker has a free slot; the job should start at once".into(),
        fits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, jobtypes: &[&str], props: &[(&str, &str)], status: &str) -> WorkerView {
        WorkerView {
            name: name.into(),
            jobtypes: jobtypes.iter().map(|s| s.to_string()).collect(),
            platforms: vec![props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()],
            accept: Vec::new(),
            status: WorkerStatus::parse(status).unwrap(),
            slots: 1,
            running: u32::from(status == "busy"),
        }
    }

    fn reqs(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_case() {
        let fleet = vec![
            w("a", &["unit"], &[("os.family", "linux")], "busy"),
            w("b", &["unit"], &[("os.family", "macos")], "offline"),
            w("c", &["lint"], &[("os.family", "linux")], "idle"),
        ];
        let e = explain_queued(1, "docs", &reqs(&[]), &fleet, Some(1));
        assert_eq!(e.reason, "no_jobtype");
        let e = explain_queued(
            1,
            "unit",
            &reqs(&[("os.family", "windows")]),
            &fleet,
            Some(1),
        );
        assert_eq!(e.reason, "no_platform");
        assert!(
            e.message
                .contains("a has os.family=linux, the job needs os.family=windows"),
            "{}",
            e.message
        );
        let e = explain_queued(1, "unit", &reqs(&[("os.family", "macos")]), &fleet, Some(1));
        assert_eq!(e.reason, "unavailable");
        assert!(e.message.contains("b is offline"));
        let e = explain_queued(1, "unit", &reqs(&[("os.family", "linux")]), &fleet, Some(4));
        assert_eq!(e.reason, "busy");
        assert!(e.message.contains("place in queue: 4"));
        let e = explain_queued(1, "lint", &reqs(&[]), &fleet, Some(1));
        assert_eq!(e.reason, "starting");
        assert!(never_runnable("unit", &reqs(&[("os.family", "macos")]), &fleet).is_none());
        assert!(never_runnable("unit", &reqs(&[("gpu", "*")]), &fleet)
            .unwrap()
            .contains("has no gpu"));
    }

    #[test]
    fn accept_rules_are_explained() {
        let mut reserved = w("rel", &["unit"], &[("pool", "release")], "idle");
        reserved.accept = vec![("pool".into(), "release".into())];
        let e = explain_queued(1, "unit", &reqs(&[]), &[reserved], None);
        assert_eq!(e.reason, "no_platform");
        assert!(
            e.message
                .contains("accepts only jobs that ask for pool=release"),
            "{}",
            e.message
        );
    }
}

#[cfg(test)]
mod suggestion_tests {
    use super::edit_distance;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("helo", "hello"), 1);
        assert_eq!(edit_distance("Unit", "unit"), 0);
        assert_eq!(edit_distance("lint", "unit"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
