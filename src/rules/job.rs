//! What happens to a job: after a result, after its worker is lost, on a
//! cancel, and whether a result is for the attempt that is current.

use crate::wire::JobState;

/// What the rules need to know of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub state: JobState,
    /// The attempt now running or last run (0 before the first).
    pub attempt: u32,
    /// Attempts allowed when workers are lost or fail (infrastructure).
    pub max_attempts: u32,
    /// Reruns after test failures so far (they use up no attempt).
    pub reruns: u32,
    /// Reruns allowed after test failures.
    pub retry_failed: u32,
    pub cancel_requested: bool,
}

impl Facts {
    /// Attempts spent on infrastructure: all but the reruns.
    fn infra_attempts(&self) -> u32 {
        self.attempt.saturating_sub(self.reruns)
    }
}

/// A result as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Result<'a> {
    /// A final state.
    pub state: JobState,
    /// The worker, not the job, failed.
    pub infrastructure: bool,
    pub attempt: u32,
    pub reason: &'a str,
}

/// What a result does to its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterResult {
    /// An infrastructure failure with attempts left: queued again, for
    /// another worker if one fits (the store decides who is available).
    Requeue { reason: String },
    /// A test failure with reruns left: queued again; the failing tests
    /// are remembered, to name the flaky ones if a rerun passes.
    Rerun { reason: String },
    /// The job ends in `state`; `flaky` when it passed on a rerun.
    End { state: JobState, flaky: bool },
}

/// What the worker's health makes of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The worker failed: one strike (see `worker::after_strike`).
    Strike,
    /// The command ran to a real outcome: the worker's strikes are forgiven.
    Healthy,
    /// Says nothing of the worker (a cancel, an error that is the job's).
    Unknown,
}

pub fn health(r: &Result) -> Health {
    if r.infrastructure {
        Health::Strike
    } else if matches!(
        r.state,
        JobState::Passed | JobState::Failed | JobState::TimedOut
    ) {
        Health::Healthy
    } else {
        Health::Unknown
    }
}

/// The rule for a result that is current (see [`check_current`]).
pub fn after_result(job: &Facts, r: &Result) -> AfterResult {
    let failed_test = matches!(r.state, JobState::Failed | JobState::TimedOut);
    if r.infrastructure && !job.cancel_requested && job.infra_attempts() < job.max_attempts {
        AfterResult::Requeue {
            reason: format!("{} (attempt {}); queued again", r.reason, r.attempt),
        }
    } else if failed_test && !job.cancel_requested && job.reruns < job.retry_failed {
        AfterResult::Rerun {
            reason: format!(
                "{} (attempt {}); rerun {} of {}",
                r.reason,
                r.attempt,
                job.reruns.saturating_add(1),
                job.retry_failed
            ),
        }
    } else {
        let state = if job.cancel_requested && r.state != JobState::Passed {
            JobState::Canceled
        } else {
            r.state
        };
        AfterResult::End {
            state,
            flaky: state == JobState::Passed && job.reruns > 0,
        }
    }
}

/// What losing its worker does to a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterLoss {
    Requeue { reason: String },
    End { state: JobState, reason: String },
}

pub fn after_loss(job: &Facts, why: &str) -> AfterLoss {
    let attempt = job.attempt;
    if !job.cancel_requested && job.infra_attempts() < job.max_attempts {
        AfterLoss::Requeue {
            reason: format!("{why} (attempt {attempt}); queued again"),
        }
    } else if job.cancel_requested {
        AfterLoss::End {
            state: JobState::Canceled,
            reason: format!("canceled; {why}"),
        }
    } else if attempt > 1 {
        AfterLoss::End {
            state: JobState::Error,
            reason: format!("{why} (after {attempt} attempts)"),
        }
    } else {
        AfterLoss::End {
            state: JobState::Error,
            reason: why.to_string(),
        }
    }
}

/// What a cancel does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCancel {
    /// It never ran: canceled at once.
    EndNow,
    /// It runs: its worker is told, and its result ends it as canceled.
    Ask,
    /// It already ended.
    Nothing,
}

pub fn after_cancel(state: JobState) -> AfterCancel {
    match state {
        JobState::Queued => AfterCancel::EndNow,
        JobState::Running => AfterCancel::Ask,
        _ => AfterCancel::Nothing,
    }
}

/// A result or log for attempt `attempt` of job `id` from `worker` (empty:
/// whoever holds it) is current only while that attempt runs there; the
/// message says what is current instead.
pub fn check_current(
    id: i64,
    job: &Facts,
    holder: Option<&str>,
    worker: &str,
    attempt: u32,
) -> std::result::Result<(), String> {
    if job.state == JobState::Running
        && job.attempt == attempt
        && (worker.is_empty() || holder == Some(worker))
    {
        return Ok(());
    }
    Err(format!(
        "attempt {attempt} of job {id} on worker {worker:?} is not current \
         (the job is {} at attempt {}{})",
        job.state,
        job.attempt,
        holder.map(|w| format!(" on {w:?}")).unwrap_or_default()
    ))
}

/// The tests that failed before a rerun, with this attempt's failures
/// added once each.
pub fn failed_before<'a>(
    mut before: Vec<String>,
    now: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    for name in now {
        if !before.iter().any(|b| b == name) {
            before.push(name.to_string());
        }
    }
    before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(attempt: u32) -> Facts {
        Facts {
            state: JobState::Running,
            attempt,
            max_attempts: 3,
            reruns: 0,
            retry_failed: 0,
            cancel_requested: false,
        }
    }

    fn result(state: JobState, infrastructure: bool, attempt: u32) -> Result<'static> {
        Result {
            state,
            infrastructure,
            attempt,
            reason: "it broke",
        }
    }

    #[test]
    fn infrastructure_failures_requeue_until_the_attempts_are_spent() {
        let r = result(JobState::Error, true, 1);
        assert_eq!(
            after_result(&running(1), &r),
            AfterResult::Requeue {
                reason: "it broke (attempt 1); queued again".into()
            }
        );
        let last = result(JobState::Error, true, 3);
        assert_eq!(
            after_result(&running(3), &last),
            AfterResult::End {
                state: JobState::Error,
                flaky: false
            }
        );
        // Reruns after test failures do not use up attempts.
        let job = Facts {
            reruns: 2,
            ..running(4)
        };
        assert!(matches!(
            after_result(&job, &result(JobState::Error, true, 4)),
            AfterResult::Requeue { .. }
        ));
    }

    #[test]
    fn test_failures_rerun_and_a_pass_after_one_is_flaky() {
        let job = Facts {
            retry_failed: 2,
            ..running(1)
        };
        assert_eq!(
            after_result(&job, &result(JobState::Failed, false, 1)),
            AfterResult::Rerun {
                reason: "it broke (attempt 1); rerun 1 of 2".into()
            }
        );
        let spent = Facts { reruns: 2, ..job };
        assert_eq!(
            after_result(&spent, &result(JobState::TimedOut, false, 3)),
            AfterResult::End {
                state: JobState::TimedOut,
                flaky: false
            }
        );
        let rerun = Facts { reruns: 1, ..job };
        assert_eq!(
            after_result(&rerun, &result(JobState::Passed, false, 2)),
            AfterResult::End {
                state: JobState::Passed,
                flaky: true
            }
        );
        // An error of the job itself is not rerun.
        assert!(matches!(
            after_result(&job, &result(JobState::Error, false, 1)),
            AfterResult::End { .. }
        ));
    }

    #[test]
    fn a_cancel_wins_over_retries_but_not_over_a_pass() {
        let job = Facts {
            cancel_requested: true,
            retry_failed: 3,
            ..running(1)
        };
        for (state, infra) in [(JobState::Failed, false), (JobState::Error, true)] {
            assert_eq!(
                after_result(&job, &result(state, infra, 1)),
                AfterResult::End {
                    state: JobState::Canceled,
                    flaky: false
                }
            );
        }
        assert_eq!(
            after_result(&job, &result(JobState::Passed, false, 1)),
            AfterResult::End {
                state: JobState::Passed,
                flaky: false
            }
        );
        assert_eq!(
            after_loss(&job, "worker lost"),
            AfterLoss::End {
                state: JobState::Canceled,
                reason: "canceled; worker lost".into()
            }
        );
    }

    #[test]
    fn a_lost_job_runs_again_until_its_attempts_are_spent() {
        assert_eq!(
            after_loss(&running(2), "worker lost"),
            AfterLoss::Requeue {
                reason: "worker lost (attempt 2); queued again".into()
            }
        );
        assert_eq!(
            after_loss(&running(3), "worker lost"),
            AfterLoss::End {
                state: JobState::Error,
                reason: "worker lost (after 3 attempts)".into()
            }
        );
        let once = Facts {
            max_attempts: 1,
            ..running(1)
        };
        assert_eq!(
            after_loss(&once, "worker lost"),
            AfterLoss::End {
                state: JobState::Error,
                reason: "worker lost".into()
            }
        );
    }

    #[test]
    fn health_counts_strikes_and_forgives_real_outcomes() {
        assert_eq!(health(&result(JobState::Error, true, 1)), Health::Strike);
        assert_eq!(health(&result(JobState::Failed, false, 1)), Health::Healthy);
        assert_eq!(
            health(&result(JobState::Canceled, false, 1)),
            Health::Unknown
        );
        assert_eq!(health(&result(JobState::Error, false, 1)), Health::Unknown);
    }

    #[test]
    fn only_the_running_attempt_on_its_worker_is_current() {
        let job = running(2);
        assert!(check_current(7, &job, Some("a"), "a", 2).is_ok());
        assert!(check_current(7, &job, Some("a"), "", 2).is_ok());
        let e = check_current(7, &job, Some("a"), "b", 2).unwrap_err();
        assert!(
            e.contains("attempt 2 of job 7 on worker \"b\" is not current"),
            "{e}"
        );
        assert!(e.contains("running at attempt 2 on \"a\""), "{e}");
        assert!(check_current(7, &job, Some("a"), "a", 1).is_err());
        let ended = Facts {
            state: JobState::Passed,
            ..job
        };
        assert!(check_current(7, &ended, Some("a"), "a", 2).is_err());
    }

    #[test]
    fn cancels_end_queued_jobs_and_ask_running_ones() {
        assert_eq!(after_cancel(JobState::Queued), AfterCancel::EndNow);
        assert_eq!(after_cancel(JobState::Running), AfterCancel::Ask);
        assert_eq!(after_cancel(JobState::Passed), AfterCancel::Nothing);
    }

    #[test]
    fn failed_tests_are_remembered_once() {
        let before = failed_before(vec!["a".into()], ["b", "a", "b"]);
        assert_eq!(before, ["a", "b"]);
    }
}
