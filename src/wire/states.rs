//! The states that are not a job's own: a worker's status, a build's state,
//! an attempt's ending, and what a worker says of itself in a heartbeat.
//! Each is a closed set with one spelling on the wire.

use serde::{Deserialize, Serialize};

macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($s => Some($name::$v),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// How a worker shows: offline beats quarantined beats draining beats
    /// busy (see `rules::worker::status`).
    WorkerStatus {
        Idle = "idle",
        Busy = "busy",
        Draining = "draining",
        Quarantined = "quarantined",
        Offline = "offline",
    }
}

impl BuildState {
    /// Every job of the build has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BuildState::Passed | BuildState::Failed | BuildState::Canceled
        )
    }
}

named! {
    /// A build's state, from its jobs' (see `rules::build::state`).
    BuildState {
        Queued = "queued",
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        Canceled = "canceled",
    }
}

named! {
    /// How an attempt ended: the job state its result gave, or `lost` when
    /// its worker was.
    AttemptState {
        Passed = "passed",
        Failed = "failed",
        TimedOut = "timed_out",
        Canceled = "canceled",
        Error = "error",
        Lost = "lost",
    }
}

named! {
    /// What a worker says of itself in a heartbeat.
    Reported {
        Idle = "idle",
        Busy = "busy",
        /// Finishing its jobs, claiming none.
        Draining = "draining",
        /// Gone for good: shown offline at once, its name free.
        Stopped = "stopped",
    }
}

impl AttemptState {
    /// The attempt's ending for a result in `state` (a final job state).
    pub fn of(state: super::JobState) -> AttemptState {
        use super::JobState as J;
        match state {
            J::Passed => AttemptState::Passed,
            J::Failed => AttemptState::Failed,
            J::TimedOut => AttemptState::TimedOut,
            J::Canceled => AttemptState::Canceled,
            J::Error | J::Queued | J::Running => AttemptState::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_reads_back_and_is_the_wire_spelling() {
        for s in WorkerStatus::ALL {
            assert_eq!(WorkerStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in BuildState::ALL {
            assert_eq!(BuildState::parse(s.as_str()), Some(*s));
        }
        for s in AttemptState::ALL {
            let back: AttemptState = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(back, *s);
        }
        assert_eq!(Reported::parse("gone"), None);
    }
}
