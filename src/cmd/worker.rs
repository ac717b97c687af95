//! `testbot worker`: flags, then the worker role.

use std::path::PathBuf;

use super::Globals;
use crate::worker::{self, config::Config, WorkerOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The worker's TOML config.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The worker's name (default: the config's, else the host name).
    #[arg(long)]
    name: Option<String>,
    /// Jobs run at once (default: the config's, else 1).
    #[arg(long)]
    slots: Option<u32>,
    /// Run one job, then exit 0 if it passed, 1 if not.
    #[arg(long)]
    once: bool,
    /// Check the config and print the capabilities it would register.
    #[arg(long)]
    check: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let mut config = Config::load(&a.config)?;
    if let Some(name) = &a.name {
        config.name = name.clone();
    }
    if a.check {
        println!(
            "{}",
            serde_json::to_string_pretty(&config.capabilities_json())?
        );
        return Ok(0);
    }
    let code = worker::run(WorkerOptions {
        config,
        server: g.server.clone(),
        token: g.token.clone(),
        name: None,
        slots: a.slots,
        once: a.once,
        handle_signals: true,
    })?;
    Ok(code as u8)
}
