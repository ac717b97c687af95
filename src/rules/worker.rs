//! What a worker is: its status, whether it may claim, its strikes and
//! quarantine, which job should avoid it, and who may take its name.

use crate::time::rfc3339;
use crate::wire::{Reported, WorkerStatus};

/// Infrastructure failures in a row that quarantine a worker.
pub const QUARANTINE_AFTER: i64 = 3;
/// The first quarantine lasts a minute, doubling each time after, up to an
/// hour.
pub const QUARANTINE_FIRST_MS: i64 = 60_000;
pub const QUARANTINE_MAX_MS: i64 = 3_600_000;
/// How long a job avoids the worker it just failed on for infrastructure
/// reasons, while another worker could take it.
pub const AVOID_MS: i64 = 60_000;

/// What the status rule needs to know of a worker.
#[derive(Debug, Clone, Copy)]
pub struct Presence {
    pub last_seen: i64,
    pub lease_ms: i64,
    pub reported: Reported,
    /// Drained from the server (`testbot worker drain`).
    pub drained: bool,
    pub quarantined_until: Option<i64>,
    /// Jobs it runs now.
    pub running: u32,
}

/// Offline (silent for a lease, or stopped) beats quarantined beats
/// draining beats busy.
pub fn status(p: &Presence, now: i64) -> WorkerStatus {
    if now.saturating_sub(p.last_seen) > p.lease_ms || p.reported == Reported::Stopped {
        WorkerStatus::Offline
    } else if p.quarantined_until.is_some_and(|t| t > now) {
        WorkerStatus::Quarantined
    } else if p.drained || p.reported == Reported::Draining {
        WorkerStatus::Draining
    } else if p.running > 0 {
        WorkerStatus::Busy
    } else {
        WorkerStatus::Idle
    }
}

/// Whether a worker's claim may be given a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// It is draining itself: told so, it stops claiming.
    Draining,
    /// Drained or quarantined by the server: the claim waits.
    Held,
}

pub fn gate(p: &Presence, now: i64) -> Gate {
    if p.reported == Reported::Draining {
        Gate::Draining
    } else if p.drained || p.quarantined_until.is_some_and(|t| t > now) {
        Gate::Held
    } else {
        Gate::Open
    }
}

/// A worker's strike record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strikes {
    /// Infrastructure failures in a row.
    pub streak: i64,
    /// Quarantines since it last ran a job to a real outcome.
    pub quarantines: i64,
    /// When the last strike was counted.
    pub last_strike_at: Option<i64>,
    pub quarantined_until: Option<i64>,
}

/// One event is one strike: the jobs that a restart, a lost lease or an
/// abort takes down together all started before the first of them was
/// counted, and count no more.
pub fn is_new_strike(s: &Strikes, attempt_started_at: Option<i64>) -> bool {
    match (s.last_strike_at, attempt_started_at) {
        (None, _) => true,
        (Some(last), Some(started)) => last < started,
        (Some(_), None) => false,
    }
}

/// The record after a failure of an attempt that started at
/// `attempt_started_at`; `None` when it is part of an event already
/// counted.
pub fn after_strike(s: &Strikes, attempt_started_at: Option<i64>, now: i64) -> Option<Strikes> {
    if !is_new_strike(s, attempt_started_at) {
        return None;
    }
    let streak = s.streak.saturating_add(1);
    if streak >= QUARANTINE_AFTER {
        Some(Strikes {
            streak: 0,
            quarantines: s.quarantines.saturating_add(1),
            last_strike_at: Some(now),
            quarantined_until: Some(now.saturating_add(quarantine_ms(s.quarantines))),
        })
    } else {
        Some(Strikes {
            streak,
            last_strike_at: Some(now),
            ..*s
        })
    }
}

/// How long the quarantine after `earlier` ones lasts.
pub fn quarantine_ms(earlier: i64) -> i64 {
    (QUARANTINE_FIRST_MS << earlier.clamp(0, 10)).min(QUARANTINE_MAX_MS)
}

/// A real outcome forgives the strikes (the quarantine in force stays).
pub fn after_healthy(s: &Strikes) -> Strikes {
    Strikes {
        streak: 0,
        quarantines: 0,
        ..*s
    }
}

/// Who holds a worker name, as the name rule sees it.
#[derive(Debug, Clone)]
pub struct Holder {
    pub token_hash: Option<String>,
    /// The holder's `work_dir` identity.
    pub instance: Option<String>,
    pub host: String,
    pub last_seen: i64,
    pub lease_ms: i64,
    /// It said goodbye: the name is free.
    pub stopped: bool,
}

/// Why a registration may not take a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRefusal {
    /// Registered with another worker token that is still valid (403).
    OtherToken(String),
    /// A different live worker holds it (409).
    InUse(String),
}

/// Whether a registration of `name` with `token_hash` from `instance` may
/// take it from `held`: the same token (or the old one was revoked), and
/// the same worker unless the holder has been silent for a whole lease.
/// `seen_at` is a heartbeat newer than the stored one, if any.
pub fn may_take_name(
    held: &Holder,
    name: &str,
    token_hash: Option<&str>,
    instance: Option<&str>,
    revoked: &dyn Fn(&str) -> bool,
    seen_at: Option<i64>,
    now: i64,
) -> Result<(), NameRefusal> {
    if let (Some(old), Some(new)) = (held.token_hash.as_deref(), token_hash) {
        if old != new && !revoked(old) {
            return Err(NameRefusal::OtherToken(format!(
                "worker {name:?} is registered with another worker token; a worker acts only \
                 for itself"
            )));
        }
    }
    let last = held.last_seen.max(seen_at.unwrap_or(0));
    let alive = !held.stopped && last.saturating_add(held.lease_ms) > now;
    let other = held
        .instance
        .as_deref()
        .is_some_and(|i| instance != Some(i));
    if alive && other {
        let ago = now.saturating_sub(last).max(0) / 1000;
        let host = if held.host.is_empty() {
            "an unknown host".to_string()
        } else {
            format!("host {:?}", held.host)
        };
        return Err(NameRefusal::InUse(format!(
            "the worker name {name:?} is in use by another worker on {host} (last heartbeat \
             {ago}s ago, at {}); two workers cannot share a name: give this one another (set \
             name = \"...\" in its config or pass --name; a Python client takes name=...)",
            rfc3339(last)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn seen(reported: Reported) -> Presence {
        Presence {
            last_seen: NOW - 1_000,
            lease_ms: 30_000,
            reported,
            drained: false,
            quarantined_until: None,
            running: 0,
        }
    }

    #[test]
    fn status_order_offline_quarantined_draining_busy_idle() {
        let idle = seen(Reported::Idle);
        assert_eq!(status(&idle, NOW), WorkerStatus::Idle);
        let busy = Presence { running: 1, ..idle };
        assert_eq!(status(&busy, NOW), WorkerStatus::Busy);
        let drained = Presence {
            drained: true,
            ..busy
        };
        assert_eq!(status(&drained, NOW), WorkerStatus::Draining);
        assert_eq!(
            status(&seen(Reported::Draining), NOW),
            WorkerStatus::Draining
        );
        let q = Presence {
            quarantined_until: Some(NOW + 1),
            ..drained
        };
        assert_eq!(status(&q, NOW), WorkerStatus::Quarantined);
        let over = Presence {
            quarantined_until: Some(NOW),
            ..idle
        };
        assert_eq!(status(&over, NOW), WorkerStatus::Idle);
        let silent = Presence {
            last_seen: NOW - 30_001,
            ..q
        };
        assert_eq!(status(&silent, NOW), WorkerStatus::Offline);
        assert_eq!(status(&seen(Reported::Stopped), NOW), WorkerStatus::Offline);
        let far_past = Presence {
            last_seen: i64::MIN,
            ..idle
        };
        assert_eq!(status(&far_past, NOW), WorkerStatus::Offline);
    }

    #[test]
    fn claims_wait_while_held_and_stop_while_draining() {
        assert_eq!(gate(&seen(Reported::Idle), NOW), Gate::Open);
        assert_eq!(gate(&seen(Reported::Draining), NOW), Gate::Draining);
        let drained = Presence {
            drained: true,
            ..seen(Reported::Busy)
        };
        assert_eq!(gate(&drained, NOW), Gate::Held);
        let q = Presence {
            quarantined_until: Some(NOW + 5),
            ..seen(Reported::Idle)
        };
        assert_eq!(gate(&q, NOW), Gate::Held);
        assert_eq!(gate(&q, NOW + 5), Gate::Open);
    }

    #[test]
    fn three_strikes_quarantine_for_a_minute_doubling_to_an_hour() {
        let mut s = Strikes::default();
        for i in 0..2 {
            s = after_strike(&s, Some(NOW + i), NOW + i).unwrap();
            assert_eq!(s.quarantined_until, None);
        }
        s = after_strike(&s, Some(NOW + 5), NOW + 5).unwrap();
        assert_eq!(s.streak, 0);
        assert_eq!(s.quarantines, 1);
        assert_eq!(s.quarantined_until, Some(NOW + 5 + 60_000));
        assert_eq!(quarantine_ms(1), 120_000);
        assert_eq!(quarantine_ms(6), 3_600_000);
        assert_eq!(quarantine_ms(i64::MAX), 3_600_000);
        let forgiven = after_healthy(&s);
        assert_eq!((forgiven.streak, forgiven.quarantines), (0, 0));
        assert_eq!(forgiven.quarantined_until, s.quarantined_until);
    }

    #[test]
    fn jobs_taken_down_together_are_one_strike() {
        let s = after_strike(&Strikes::default(), Some(NOW - 10), NOW).unwrap();
        // Another job of the same restart started before the strike.
        assert_eq!(after_strike(&s, Some(NOW - 5), NOW + 1), None);
        // A job that started after it counts again.
        assert!(after_strike(&s, Some(NOW + 1), NOW + 2).is_some());
    }

    #[test]
    fn a_name_goes_to_its_own_token_and_its_own_worker() {
        let held = Holder {
            token_hash: Some("t1".into()),
            instance: Some("i1".into()),
            host: "vm".into(),
            last_seen: NOW - 1_000,
            lease_ms: 30_000,
            stopped: false,
        };
        let never = |_: &str| false;
        assert_eq!(
            may_take_name(&held, "box", Some("t1"), Some("i1"), &never, None, NOW),
            Ok(())
        );
        assert!(matches!(
            may_take_name(&held, "box", Some("t2"), Some("i1"), &never, None, NOW),
            Err(NameRefusal::OtherToken(_))
        ));
        assert_eq!(
            may_take_name(
                &held,
                "box",
                Some("t2"),
                Some("i1"),
                &|t| t == "t1",
                None,
                NOW
            ),
            Ok(())
        );
        let e = may_take_name(&held, "box", Some("t1"), Some("i2"), &never, None, NOW);
        match e {
            Err(NameRefusal::InUse(m)) => {
                assert!(m.contains("in use by another worker on host \"vm\""), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Silent for a lease, or stopped: the name is free.
        assert_eq!(
            may_take_name(
                &held,
                "box",
                Some("t1"),
                Some("i2"),
                &never,
                None,
                NOW + 30_000
            ),
            Ok(())
        );
        let stopped = Holder {
            stopped: true,
            ..held.clone()
        };
        assert_eq!(
            may_take_name(&stopped, "box", Some("t1"), Some("i2"), &never, None, NOW),
            Ok(())
        );
        // A heartbeat newer than the stored one keeps it alive.
        assert!(may_take_name(
            &held,
            "box",
            Some("t1"),
            Some("i2"),
            &never,
            Some(NOW + 20_000),
            NOW + 30_000
        )
        .is_err());
    }
}
