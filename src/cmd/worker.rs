//! `testbot worker`: run a worker (`--config FILE`), or drain/undrain one
//! from the server.

use std::path::PathBuf;

use super::{Exit, Globals};
use crate::wire::Worker;
use crate::worker::{self, config::Config, WorkerOptions};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// The worker's TOML config.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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

#[derive(clap::Subcommand)]
enum Action {
    /// Let a worker finish what it runs and claim nothing new.
    Drain {
        /// The worker's name, as `testbot status --workers` lists it.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Let a drained or quarantined worker claim jobs again.
    Undrain {
        /// The worker's name, as `testbot status --workers` lists it.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    if let Some(action) = a.action {
        let (name, verb) = match &action {
            Action::Drain { name } => (name, "drain"),
            Action::Undrain { name } => (name, "undrain"),
        };
        let w: Worker = g.client()?.post(
            &format!("/api/v1/workers/{name}/{verb}"),
            &serde_json::json!({}),
        )?;
        println!("{} {}", w.name, w.status);
        return Ok(0);
    }
    let Some(path) = a.config else {
        return Err(Exit(
            2,
            "testbot worker needs --config FILE (or `drain NAME` / `undrain NAME`)".into(),
        )
        .into());
    };
    let mut config = Config::load(&path)?;
    if let Some(name) = &a.name {
        config.name = name.clone();
    }
    let server = match &g.server {
        Some(s) => Some(
            crate::client::server_urls(s)
                .map_err(|e| Exit(2, format!("--server / TESTBOT_SERVER: {e}")))?
                .join(","),
        ),
        None => None,
    };
    if a.check {
        println!(
            "{}",
            serde_json::to_string_pretty(&config.capabilities_json())?
        );
        return Ok(0);
    }
    let code = worker::run(WorkerOptions {
        config,
        server,
        token: g.token.clone(),
        ca_file: g.ca_file.clone(),
        name: None,
        slots: a.slots,
        once: a.once,
        handle_signals: true,
        stopper: None,
    })?;
    Ok(code as u8)
}
