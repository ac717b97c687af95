//! testbot: spread test jobs over a fleet of machines and collect their
//! results. One binary in four roles; see ARCHITECTURE.md for the map.

pub mod client;
pub mod cmd;
pub mod matching;
pub mod rules;
pub mod server;
pub mod shards;
pub mod time;
pub mod tls;
pub mod wire;
pub mod worker;
