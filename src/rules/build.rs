//! A build's state, from the states of its jobs.

use crate::wire::{BuildState, JobState};

/// Running while any job runs or some (not all) wait; queued while all
/// wait; passed when all passed, canceled when all were canceled, failed
/// otherwise. A build with no jobs has passed.
pub fn state(counts: &[(JobState, u64)]) -> BuildState {
    // Summed wide, so that no count can wrap into another.
    let n = |s: JobState| {
        counts
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, n)| u128::from(*n))
            .sum::<u128>()
    };
    let total: u128 = counts.iter().map(|(_, n)| u128::from(*n)).sum();
    let (queued, running) = (n(JobState::Queued), n(JobState::Running));
    if running > 0 || (queued > 0 && queued < total) {
        BuildState::Running
    } else if queued > 0 {
        BuildState::Queued
    } else if n(JobState::Passed) == total {
        BuildState::Passed
    } else if n(JobState::Canceled) == total {
        BuildState::Canceled
    } else {
        BuildState::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn a_build_is_as_its_jobs_are() {
        assert_eq!(state(&[(Queued, 3)]), BuildState::Queued);
        assert_eq!(state(&[(Queued, 2), (Passed, 1)]), BuildState::Running);
        assert_eq!(state(&[(Running, 1), (Failed, 4)]), BuildState::Running);
        assert_eq!(state(&[(Passed, 5)]), BuildState::Passed);
        assert_eq!(state(&[(Canceled, 2)]), BuildState::Canceled);
        assert_eq!(state(&[(Canceled, 1), (Passed, 1)]), BuildState::Failed);
        assert_eq!(state(&[(Passed, 1), (TimedOut, 1)]), BuildState::Failed);
        assert_eq!(state(&[(Error, 1)]), BuildState::Failed);
        assert_eq!(state(&[]), BuildState::Passed);
        assert_eq!(
            state(&[(Passed, u64::MAX), (Failed, 1)]),
            BuildState::Failed
        );
    }
}
