//! The command line: global options here, one file per subcommand. Each
//! subcommand file parses its own flags and calls into its role; none
//! holds logic another role needs.
//!
//! Exit codes: 0 success; 1 a job did not pass; 2 bad usage, bad config or
//! input refused by the server; 3 server unreachable or failing.

/// `println!` for human output that shows text users or workers sent:
/// control characters in it are shown escaped, not sent to the terminal.
macro_rules! say {
    () => { println!() };
    ($($t:tt)*) => { println!("{}", $crate::cmd::visible(&format!($($t)*))) };
}

pub mod artifacts;
pub mod backup;
pub mod cancel;
pub mod completions;
pub mod db;
pub mod logs;
pub mod serve;
pub mod status;
pub mod submit;
mod table;
pub mod test_queue;
pub mod wait;
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
    /// The testbot server's URL (HOST:PORT means http://HOST:PORT); give
    /// it again, or comma-separated, for servers sharing one database: the
    /// next is used when one does not answer [default: http://127.0.0.1:8080].
    #[arg(
        long,
        global = true,
        env = "TESTBOT_SERVER",
        hide_env_values = true,
        value_name = "URL",
        value_delimiter = ',',
        action = clap::ArgAction::Append,
        help_heading = "Global options"
    )]
    server: Vec<String>,
    /// The bearer token: for `worker`, its worker token (unless its config
    /// names one); for the other commands, a client token.
    #[arg(
        long,
        global = true,
        env = "TESTBOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Global options"
    )]
    token: Option<String>,
    /// Trust only the CA certificates in this PEM file for https://
    /// [default: the system's roots].
    #[arg(
        long,
        global = true,
        env = "TESTBOT_CA_FILE",
        hide_env_values = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    ca_file: Option<std::path::PathBuf>,
    /// Log lines as `human` text or `json`, one object per line.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human",
          value_parser = ["human", "json"], help_heading = "Global options")]
    log_format: String,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides
    /// [default: info for serve and worker, warn otherwise].
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        value_parser = log_level,
        help_heading = "Global options"
    )]
    log_level: Option<String>,
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
    /// Wait until jobs or builds end; exit 0 when all passed, 1 otherwise.
    Wait(wait::Args),
    /// Cancel jobs.
    Cancel(cancel::Args),
    /// The test queue of sharded jobs, and tests' history: next, report,
    /// finish, shard, flaky, slow, repro.
    Tests(test_queue::Args),
    /// A job's artifacts: list, download (checked), or upload from inside
    /// a job.
    Artifacts(artifacts::Args),
    /// Save a consistent copy of the server's database.
    Backup(backup::Args),
    /// Work on a testbot database itself (`db copy`).
    Db(db::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
}

/// `--server` and `--ca-file`, for the commands that talk to no server
/// (`serve`, `completions`): accepted where they always were, but not
/// shown in their help. A subcommand's own argument with a global one's id
/// keeps clap from copying the global one into it.
#[derive(clap::Args)]
pub struct NoServer {
    #[arg(long = "server", id = "server", hide = true, value_name = "URL")]
    _server: Option<String>,
    #[arg(long = "ca-file", id = "ca_file", hide = true, value_name = "FILE")]
    _ca_file: Option<std::path::PathBuf>,
}

/// Options every subcommand may use.
pub struct Globals {
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

impl Globals {
    pub fn client(&self) -> anyhow::Result<Client> {
        let server = crate::client::server_urls(self.server.as_deref().unwrap_or(DEFAULT_SERVER))
            .map_err(|e| Exit(2, format!("--server / TESTBOT_SERVER: {e}")))?
            .join(",");
        let server = server.as_str();
        match &self.ca_file {
            Some(ca) => Client::with_ca_file(server, self.token.clone(), ca),
            None => Ok(Client::new(server, self.token.clone())),
        }
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

/// A log level, or filter directives (`testbot=debug,warn`) whose levels
/// are levels: `bogus` is not taken as a module name.
fn log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let ok = !s.trim().is_empty()
        && s.split(',').all(|d| {
            let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
            LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a log level: use error, warn, info, debug or trace (or TARGET=LEVEL)"
        ))
    }
}

fn init_logging(default: &str, format: &str, level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::try_new(level.unwrap_or(default))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.with_ansi(color_stderr()).try_init()
    };
}

/// Colour only on a terminal, and never with NO_COLOR set.
/// `s` with its control characters (escape sequences that would retitle
/// or clear a terminal, carriage returns and line feeds that would forge
/// lines of a table) shown as escapes: text from the server is data.
pub fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut shown = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

pub fn color_stdout() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none()
}

fn color_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let globals = Globals {
        server: (!cli.server.is_empty()).then(|| cli.server.join(",")),
        token: cli.token,
        ca_file: cli.ca_file,
    };
    let default_level = match cli.command {
        Command::Serve(_) | Command::Worker(_) => "info",
        _ => "warn",
    };
    init_logging(default_level, &cli.log_format, cli.log_level.as_deref());
    if !matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        quiet_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Serve(a) => serve::run(&globals, a),
        Command::Worker(a) => worker::run(&globals, a),
        Command::Submit(a) => submit::run(&globals, a),
        Command::Status(a) => status::run(&globals, a),
        Command::Logs(a) => logs::run(&globals, a),
        Command::Wait(a) => wait::run(&globals, a),
        Command::Cancel(a) => cancel::run(&globals, a),
        Command::Tests(a) => test_queue::run(&globals, a),
        Command::Artifacts(a) => artifacts::run(&globals, a),
        Command::Backup(a) => backup::run(&globals, a),
        Command::Db(a) => db::run(&globals, a),
        Command::Completions(a) => completions::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("testbot: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A command whose output goes into a pipe that closes early (`testbot
/// status | head -3`) ends quietly, as `git` and `ripgrep` do: killed by
/// SIGPIPE (exit 141), not a panic or an error message. Not for `serve` and
/// `worker`, which must outlive whatever reads their first lines.
fn quiet_on_closed_stdout() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; it only restores
    // the default disposition Rust's runtime changed to "ignore" at start.
    // Sockets are written with MSG_NOSIGNAL, so only pipes are affected.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Standard output that cannot be written (a full disk, /dev/full): one
    // line saying so and exit 2, not a panic's backtrace and 101.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(cause) = message.strip_prefix("failed printing to stdout: ") {
            eprintln!("testbot: cannot write to standard output: {cause}");
            std::process::exit(2);
        }
        default(info);
    }));
}

/// Parses `KEY=VALUE` for flags like `-p`, `-P` and `--meta`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
