//! `testbot serve`: flags, then the server role.

use std::path::PathBuf;

use super::Globals;
use crate::server::{self, ServeOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Where the state is kept: a SQLite file (PATH or sqlite:PATH; created
    /// if missing), or a PostgreSQL database (postgres://USER@HOST:PORT/DB)
    /// that several servers may share.
    #[arg(
        long,
        env = "TESTBOT_DB",
        default_value = "testbot.db",
        value_name = "PATH_OR_URL"
    )]
    db: String,
    /// Also run a worker with this config inside the server process.
    #[arg(long = "worker", value_name = "CONFIG")]
    workers: Vec<PathBuf>,
    /// Worker tokens, one per line (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    worker_tokens: Option<PathBuf>,
    /// Client tokens, one per line (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    client_tokens: Option<PathBuf>,
    /// Reads (status, pages, metrics) need a token too.
    #[arg(long)]
    private: bool,
    /// Listen beyond loopback without token files.
    #[arg(long)]
    insecure: bool,
    /// Delete finished jobs, with their logs, after this many days (above
    /// 0, at most 36500; fractions allowed).
    #[arg(long, default_value = "30", value_name = "DAYS", value_parser = keep_days)]
    keep_days: std::time::Duration,
    /// How often retention runs (for tests; default 10m).
    #[arg(long, default_value = "10m", value_parser = crate::wire::parse_duration, hide = true)]
    retention_interval: std::time::Duration,
    /// Serve https with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log kept per attempt (e.g. 32MiB, 500KB); past it the start and the
    /// end are kept and the middle is cut.
    #[arg(long, default_value = "32MiB", value_name = "SIZE", value_parser = crate::wire::parse_size)]
    log_cap: u64,
    /// Where artifacts are kept [default: beside the SQLite database, as
    /// NAME-artifacts; with PostgreSQL, ./testbot-artifacts: give every
    /// server on the database the same (shared) directory].
    #[arg(long, value_name = "DIR")]
    artifacts_dir: Option<PathBuf>,
    /// The largest artifact file kept (larger ones are skipped, and the
    /// job's log says so).
    #[arg(long, default_value = "2GiB", value_name = "SIZE", value_parser = crate::wire::parse_size)]
    artifact_max_file: u64,
    /// The most artifact bytes kept per job attempt.
    #[arg(long, default_value = "10GiB", value_name = "SIZE", value_parser = crate::wire::parse_size)]
    artifact_max_job: u64,
    /// The worker token the --worker workers use when their configs name
    /// none and --worker-tokens is not given.
    #[arg(
        long,
        env = "TESTBOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    #[command(flatten)]
    _no_server: super::NoServer,
}

/// The longest `--keep-days`: a hundred years.
const KEEP_DAYS_MAX: f64 = 36_500.0;

/// `--keep-days`: a number of days above 0 and at most [`KEEP_DAYS_MAX`].
/// Zero, negative or not-a-number values would delete every finished job
/// at start, so they are refused rather than read as "keep nothing".
fn keep_days(s: &str) -> Result<std::time::Duration, String> {
    let days: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of days"))?;
    if !(days > 0.0 && days <= KEEP_DAYS_MAX) {
        return Err(format!(
            "{s:?}: finished jobs are kept for more than 0 and at most {KEEP_DAYS_MAX} days"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(days * 86_400.0))
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    server::serve(ServeOptions {
        listen: a.listen,
        db: a.db,
        workers: a.workers,
        token: a.token.or_else(|| g.token.clone()),
        log_cap: a.log_cap,
        worker_tokens: a.worker_tokens,
        client_tokens: a.client_tokens,
        private: a.private,
        insecure: a.insecure,
        keep: a.keep_days,
        retention_interval: a.retention_interval,
        tls: a.tls_cert.zip(a.tls_key),
        artifacts_dir: a.artifacts_dir,
        artifact_max_file: a.artifact_max_file,
        artifact_max_job: a.artifact_max_job,
    })?;
    Ok(0)
}
