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
    /// Log kept per attempt (e.g. 32MiB, 500KB); past it the start and the
    /// end are kept and the middle is cut.
    #[arg(long, default_value = "32MiB", value_name = "SIZE", value_parser = parse_size)]
    log_cap: u64,
}

/// Parses a size: bytes, or a number with K, M or G (powers of 1024, with
/// or without `iB`/`B`).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write it like 32MiB or 500KB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}; use K, M or G")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    server::serve(ServeOptions {
        listen: a.listen,
        db: a.db,
        workers: a.workers,
        token: g.token.clone(),
        log_cap: a.log_cap,
        worker_tokens: a.worker_tokens,
        client_tokens: a.client_tokens,
        private: a.private,
        insecure: a.insecure,
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(super::parse_size("500KB"), Ok(500 << 10));
        assert_eq!(super::parse_size("1024"), Ok(1024));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("5 parsecs").is_err());
    }
}
