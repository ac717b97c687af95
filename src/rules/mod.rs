//! The scheduling rules: how jobs, workers and builds change state.
//!
//! Plain Rust over plain facts: no SQL, no I/O, no clock of its own (every
//! rule is given `now`). Each storage backend loads the facts a rule needs,
//! asks the rule, and saves what it decided, so the SQLite and PostgreSQL
//! stores cannot drift apart on what a result, a lost worker or a strike
//! means.

pub mod build;
pub mod job;
pub mod test_queue;
pub mod worker;
