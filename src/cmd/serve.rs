//! `testbot serve`: flags, then the server role.

use std::path::PathBuf;

use super::Globals;
use crate::server::{self, ServeOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// The SQLite database file; created if missing.
    #[arg(long, default_value = "testbot.db", value_name = "PATH")]
    db: PathBuf,
    /// Also run a worker with this config inside the server process.
    #[arg(long = "worker", value_name = "CONFIG")]
    workers: Vec<PathBuf>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    server::serve(ServeOptions {
        listen: a.listen,
        db: a.db,
        workers: a.workers,
        token: g.token.clone(),
    })?;
    Ok(0)
}
