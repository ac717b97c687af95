//! `testbot logs ID [-f]`: print a job's log; follow it while it runs.

use std::io::{Read, Write};
use std::time::Duration;

use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_name = "JOB_ID")]
    id: i64,
    /// Keep printing as the job writes, until it ends.
    #[arg(short, long)]
    follow: bool,
    /// An earlier attempt's log (default: the latest).
    #[arg(long)]
    attempt: Option<u32>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    let mut path = format!("/api/v1/jobs/{}/log?follow={}", a.id, a.follow);
    if let Some(n) = a.attempt {
        path.push_str(&format!("&attempt={n}"));
    }
    // A followed log may stay open as long as the job runs.
    let timeout = if a.follow {
        Duration::from_secs(7 * 24 * 3600)
    } else {
        Duration::from_secs(60)
    };
    let resp = client.get_raw(&path, timeout)?;
    let mut reader = resp.into_reader();
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
    Ok(0)
}
