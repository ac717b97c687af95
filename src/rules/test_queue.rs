//! The test queue's rules: what a shard gets when it asks for tests, how
//! big a batch is, what a reported outcome does to a test, and how a test's
//! history is smoothed. The store loads the facts and saves the answers.

use crate::wire::TestOutcome;

/// A test never seen before is estimated at the mean of its jobtype's known
/// ones; with none known, at this.
pub const UNKNOWN_MS: u64 = 1_000;
/// Batches aim at the remaining work divided by this many per shard: big
/// batches early (few round trips), single tests at the end (shards finish
/// together).
pub const BATCHES_PER_SHARD: u64 = 4;
/// The most tests in one batch unless the job asks for fewer.
pub const MAX_BATCH: u32 = 1_000;
/// Weight of the newest run in a test's smoothed duration.
pub const SMOOTHING: f64 = 0.3;
/// Outcomes kept per test in its recent history.
pub const RECENT: usize = 20;
/// The longest failure text kept per run.
pub const MESSAGE_MAX: usize = 64 << 10;

/// What a shard's `next` sees of its queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// This attempt has merged its list of tests.
    pub listed: bool,
    /// Pending tests this job may take (not set aside for another job).
    pub for_me: u64,
    /// Pending tests that failed on this job and wait for another one.
    pub set_aside: u64,
    /// Tests other attempts hold now.
    pub held_by_others: u64,
    /// Those tests have been held far longer than they were expected to
    /// take (see [`held_too_long`]): their holder is stuck, not busy.
    pub held_overdue: bool,
    /// Other jobs of the queue that are running.
    pub others_running: u64,
    /// Other jobs of the queue still queued (they will ask later).
    pub others_queued: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the list first.
    NeedList,
    /// Take from the tests this job may take.
    Take,
    /// Take from every pending test, the set-aside ones too: no other job
    /// is left to rerun them.
    TakeAny,
    /// Nothing now, but other shards hold tests that may come back (or a
    /// running one may take the set-aside ones): ask again.
    Wait,
    /// Nothing left for this job.
    Done,
}

pub fn next(f: &Facts) -> Next {
    if !f.listed {
        Next::NeedList
    } else if f.for_me > 0 {
        Next::Take
    } else if f.set_aside > 0 {
        if f.others_running > 0 {
            // A running shard takes them, or ends and leaves them to us.
            Next::Wait
        } else if f.others_queued > 0 {
            Next::Done
        } else {
            Next::TakeAny
        }
    } else if f.held_by_others > 0 && !f.held_overdue {
        Next::Wait
    } else {
        // Held far past their estimates (a test that hangs): this shard is
        // done rather than waiting out its own timeout beside the stuck
        // one. If the holder ends without reporting them they go back to
        // the queue, for any shard still running, else they never run and
        // the build says so.
        Next::Done
    }
}

/// How many times their estimate tests may be held before a shard with
/// nothing left stops waiting for them, and the grace added to it.
pub const HELD_PATIENCE: u64 = 3;
pub const HELD_GRACE_MS: u64 = 10_000;

/// Whether tests held by other shards for `held_ms` (since the earliest
/// was handed out), estimated at `est_ms` together, are overdue.
pub fn held_too_long(held_ms: u64, est_ms: u64) -> bool {
    held_ms
        > est_ms
            .saturating_mul(HELD_PATIENCE)
            .saturating_add(HELD_GRACE_MS)
}

/// Batches of tests without a history hold at most the pending tests
/// divided by this many per shard: nothing says how long they take, so
/// they come in small batches that the shards share out as they go.
pub const UNKNOWN_BATCHES_PER_SHARD: u64 = 16;

/// A test offered for a batch: its estimate, and whether a history backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub est_ms: u64,
    pub known: bool,
}

/// What a batch is cut from besides its candidates.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// Estimated milliseconds of all pending tests.
    pub remaining_ms: u64,
    /// Pending tests.
    pub pending: u64,
    pub shards: u32,
    /// Tests this attempt has reported so far.
    pub done_here: u64,
    /// The job's own limit.
    pub max: u32,
}

/// How many of `candidates` (longest first) to take: about
/// `remaining_ms / (shards × BATCHES_PER_SHARD)` worth. Of tests without a
/// history, no more than `pending / (shards × UNKNOWN_BATCHES_PER_SHARD)`,
/// and no more than the attempt has run so far (one at first, then about
/// doubling, as TCP starts slow): a list that begins with its slowest
/// tests then spreads them over the shards instead of handing them to the
/// first one in one batch. At least one, at most `max`.
pub fn batch_len(candidates: &[Candidate], z: &Sizing) -> usize {
    let shards = u64::from(z.shards.max(1));
    let target = z.remaining_ms / (shards * BATCHES_PER_SHARD);
    let unknown_cap = (z.pending / (shards * UNKNOWN_BATCHES_PER_SHARD))
        .min(z.done_here)
        .max(1);
    let max = z.max;
    let mut sum = 0u64;
    let mut unknown = 0u64;
    let mut n = 0usize;
    for c in candidates.iter().take(max.max(1) as usize) {
        if n > 0 && (sum.saturating_add(c.est_ms) > target || (!c.known && unknown >= unknown_cap))
        {
            break;
        }
        sum = sum.saturating_add(c.est_ms);
        unknown += u64::from(!c.known);
        n += 1;
    }
    n
}

/// How many of the longest pending tests a batch may need to look at: a
/// batch of the target time holds at most its share of the tests plus one
/// (the longest come first, so they are at least average), and no more
/// tests without history than their cap.
pub fn candidates_needed(z: &Sizing) -> u64 {
    let shards = u64::from(z.shards.max(1));
    (z.pending / (shards * BATCHES_PER_SHARD) + 1).clamp(1, u64::from(z.max.max(1)))
}

/// What a reported outcome does to its test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRun {
    /// Failed with retries left: queued again, for another job.
    Retry,
    /// Its final outcome; `flaky` when it passed after failing.
    Final { flaky: bool },
}

/// `failures` counts this run's failure too.
pub fn after_run(outcome: TestOutcome, failures: u32, retry_failed: u32) -> AfterRun {
    if outcome.is_failure() && failures <= retry_failed {
        AfterRun::Retry
    } else {
        AfterRun::Final {
            flaky: !outcome.is_failure() && failures > 0,
        }
    }
}

/// A test's smoothed duration after a run of `ms`.
pub fn smoothed(before: Option<u64>, ms: u64) -> u64 {
    match before {
        None => ms,
        Some(b) => (b as f64 * (1.0 - SMOOTHING) + ms as f64 * SMOOTHING).round() as u64,
    }
}

/// The recent outcomes with `o` added, the oldest dropped past [`RECENT`].
pub fn recent(before: &str, o: TestOutcome) -> String {
    let mut s: String = before.chars().chain([o.letter()]).collect();
    let extra = s.chars().count().saturating_sub(RECENT);
    if extra > 0 {
        s = s.chars().skip(extra).collect();
    }
    s
}

/// A failure text cut to [`MESSAGE_MAX`] bytes on a character boundary.
pub fn cap_message(m: &str) -> String {
    cap(m, MESSAGE_MAX)
}

/// `m` cut to `max` bytes on a character boundary, saying how much went.
pub fn cap(m: &str, max: usize) -> String {
    if m.len() <= max {
        return m.to_string();
    }
    let mut end = max;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes cut]", &m[..end], m.len() - end)
}

/// The shard a test no plan named runs on: FNV-1a (64 bits) of its id's
/// UTF-8 bytes, modulo the shard count. Stable across runs, machines and
/// versions: documented, so runners can compute it themselves.
pub fn hash_shard(id: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            listed: true,
            ..Facts::default()
        }
    }

    #[test]
    fn a_shard_lists_its_tests_before_anything_else() {
        let f = Facts {
            listed: false,
            for_me: 5,
            ..Facts::default()
        };
        assert_eq!(next(&f), Next::NeedList);
    }

    #[test]
    fn pending_tests_are_taken_and_held_ones_waited_for() {
        assert_eq!(
            next(&Facts {
                for_me: 1,
                ..facts()
            }),
            Next::Take
        );
        let held = Facts {
            held_by_others: 3,
            ..facts()
        };
        assert_eq!(next(&held), Next::Wait);
        let stuck = Facts {
            held_overdue: true,
            ..held
        };
        assert_eq!(next(&stuck), Next::Done, "a stuck holder is not waited for");
        assert!(
            !held_too_long(12_000, 1_000),
            "3 s of estimate + 10 s grace"
        );
        assert!(held_too_long(13_001, 1_000));
        assert!(!held_too_long(u64::MAX, u64::MAX), "never wraps");
        assert_eq!(next(&facts()), Next::Done);
    }

    #[test]
    fn a_retry_goes_to_another_job_when_one_is_there() {
        let aside = Facts {
            set_aside: 1,
            ..facts()
        };
        assert_eq!(
            next(&Facts {
                others_running: 1,
                ..aside
            }),
            Next::Wait
        );
        // Another shard is still to come: it reruns the test.
        assert_eq!(
            next(&Facts {
                others_queued: 1,
                ..aside
            }),
            Next::Done
        );
        // Alone: rerun it here rather than never.
        assert_eq!(next(&aside), Next::TakeAny);
    }

    fn known(ms: &[u64]) -> Vec<Candidate> {
        ms.iter()
            .map(|&est_ms| Candidate {
                est_ms,
                known: true,
            })
            .collect()
    }

    fn sizing(remaining_ms: u64, pending: u64, done_here: u64, max: u32) -> Sizing {
        Sizing {
            remaining_ms,
            pending,
            shards: 4,
            done_here,
            max,
        }
    }

    #[test]
    fn batches_shrink_toward_the_end() {
        let tests = known(&[100u64; 1000]);
        assert_eq!(batch_len(&tests, &sizing(100_000, 1000, 0, MAX_BATCH)), 62);
        assert_eq!(batch_len(&tests[..20], &sizing(2000, 20, 0, MAX_BATCH)), 1);
        // A test longer than the target is taken alone, never skipped.
        let long = known(&[5000, 10, 10]);
        assert_eq!(batch_len(&long, &sizing(5020, 3, 0, MAX_BATCH)), 1);
        assert_eq!(batch_len(&tests, &sizing(100_000, 1000, 0, 10)), 10);
        assert_eq!(batch_len(&[], &sizing(0, 0, 0, 10)), 0);
    }

    #[test]
    fn tests_without_a_history_start_one_at_a_time_and_stay_small() {
        let unknown = vec![
            Candidate {
                est_ms: 1000,
                known: false
            };
            2000
        ];
        let z = |done_here| sizing(2_000_000, 2000, done_here, MAX_BATCH);
        // The first batch is one test; then as many as ran so far.
        assert_eq!(batch_len(&unknown, &z(0)), 1);
        assert_eq!(batch_len(&unknown, &z(1)), 1);
        assert_eq!(batch_len(&unknown, &z(6)), 6);
        // 2000 pending over 4 shards: 2000 / 64 = 31 at most.
        assert_eq!(batch_len(&unknown, &z(500)), 31);
        assert_eq!(
            batch_len(&unknown[..10], &sizing(10_000, 10, 500, MAX_BATCH)),
            1
        );
        // Known ones around them are not held back by the cap.
        let mut mixed = known(&[10; 40]);
        mixed.extend(&unknown[..40]);
        assert_eq!(
            batch_len(&mixed, &sizing(1_000_000, 80, 100, MAX_BATCH)),
            41
        );
    }

    #[test]
    fn a_failure_is_retried_up_to_the_limit_and_a_later_pass_is_flaky() {
        use TestOutcome::*;
        assert_eq!(after_run(Failed, 1, 1), AfterRun::Retry);
        assert_eq!(after_run(Error, 2, 1), AfterRun::Final { flaky: false });
        assert_eq!(after_run(Passed, 1, 1), AfterRun::Final { flaky: true });
        assert_eq!(after_run(Passed, 0, 1), AfterRun::Final { flaky: false });
        assert_eq!(after_run(Failed, 1, 0), AfterRun::Final { flaky: false });
    }

    #[test]
    fn history_is_smoothed_and_bounded() {
        assert_eq!(smoothed(None, 500), 500);
        assert_eq!(smoothed(Some(1000), 0), 700);
        let mut r = String::new();
        for _ in 0..30 {
            r = recent(&r, TestOutcome::Passed);
        }
        r = recent(&r, TestOutcome::Failed);
        assert_eq!(r.len(), RECENT);
        assert!(r.ends_with("pf"));
        let long = "é".repeat(MESSAGE_MAX);
        let cut = cap_message(&long);
        assert!(cut.len() < MESSAGE_MAX + 64 && cut.contains("more bytes cut"));
    }

    #[test]
    fn the_hash_shard_is_fnv1a() {
        // FNV-1a 64 of "" is the offset basis; of "a" the published value.
        assert_eq!(
            hash_shard("", u32::MAX),
            (0xcbf29ce484222325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            hash_shard("a", 1 << 31),
            (0xaf63dc4c8601ec8cu64 % (1 << 31)) as u32
        );
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| hash_shard(&format!("t{i}"), 4)).collect();
        assert_eq!(spread.len(), 4);
    }
}
