//! The command line: global options here, one file per subcommand. Each
//! subcommand file parses its own flags and calls into its role; none
//! holds logic another role needs.
//!
//! Exit codes: 0 success; 1 a job did not pass; 2 bad usage, bad config or
//! input refused by the server; 3 server unreachable or failing.

pub mod cancel;
pub mod logs;
pub mod serve;
pub mod status;
pub mod submit;
mod table;
pub mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError, DEFAULT_SERVER};

#[derive(Parser)]
#[command(
    name = "testbot",
    version,
    about = "Spread test jobs over a fleet of machines and collect their results"
)]
pub struct Cli {
    /// The testbot server's URL.
    #[arg(long, global = true, env = "TESTBOT_SERVER", value_name = "URL")]
    server: Option<String>,
    /// A client token, sent as `Authorization: Bearer`.
    #[arg(
        long,
        global = true,
        env = "TESTBOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (and, with --worker, workers inside it).
    Serve(serve::Args),
    /// Run a worker on this machine.
    Worker(worker::Args),
    /// Queue jobs, or a build of jobs.
    Submit(submit::Args),
    /// Show workers, jobs and builds.
    Status(status::Args),
    /// Print a job's log.
    Logs(logs::Args),
    /// Cancel jobs.
    Cancel(cancel::Args),
}

/// Options every subcommand may use.
pub struct Globals {
    pub server: Option<String>,
    pub token: Option<String>,
}

impl Globals {
    pub fn client(&self) -> Client {
        Client::new(
            self.server.as_deref().unwrap_or(DEFAULT_SERVER),
            self.token.clone(),
        )
    }
}

/// An error that carries its own exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return e.0;
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Refused { .. } => 2,
                _ => 3,
            };
        }
    }
    2
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let globals = Globals {
        server: cli.server,
        token: cli.token,
    };
    let result = match cli.command {
        Command::Serve(a) => {
            init_logging("info");
            serve::run(&globals, a)
        }
        Command::Worker(a) => {
            init_logging("info");
            worker::run(&globals, a)
        }
        Command::Submit(a) => {
            init_logging("warn");
            submit::run(&globals, a)
        }
        Command::Status(a) => {
            init_logging("warn");
            status::run(&globals, a)
        }
        Command::Logs(a) => {
            init_logging("warn");
            logs::run(&globals, a)
        }
        Command::Cancel(a) => {
            init_logging("warn");
            cancel::run(&globals, a)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("testbot: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Parses `KEY=VALUE` for flags like `-p`, `-P` and `--meta`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
