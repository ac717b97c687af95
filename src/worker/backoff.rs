//! Capped exponential backoff with jitter, for everything the worker
//! retries while the server is away: so a fleet that lost its server does
//! not come back at it in lockstep.

use std::time::Duration;

pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// Starts at 250 ms and doubles up to 30 s.
    pub fn new() -> Backoff {
        Backoff::with(Duration::from_millis(250), Duration::from_secs(30))
    }

    pub fn with(first: Duration, cap: Duration) -> Backoff {
        Backoff { next: first, cap }
    }

    /// The delay before the next try: the current step, jittered by up to
    /// a quarter either way.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        let quarter = base.as_millis() as u64 / 4;
        let jitter = if quarter == 0 {
            0
        } else {
            entropy() % (2 * quarter + 1)
        };
        Duration::from_millis(base.as_millis() as u64 - quarter + jitter)
    }
}

/// A few bits of entropy for jitter; not for anything secret.
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::with(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        for (d, base) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            assert!(*d >= base - base / 4 && *d <= base + base / 4, "{delays:?}");
        }
    }
}
