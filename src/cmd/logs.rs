//! `testbot logs ID [-f]`: print a job's log; follow it while it runs.

use std::io::{Read, Write};
use std::time::Duration;

use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// The job whose log to print.
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
    let state = resp.header("x-testbot-job-state").unwrap_or("").to_string();
    let mut reader = resp.into_reader();
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    let mut printed = 0usize;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        printed += n;
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
    // Nothing printed and nothing said is a puzzle: say why.
    if printed == 0 && !a.follow {
        let id = a.id;
        match state.as_str() {
            "queued" => eprintln!(
                "job {id} is queued; it has no log yet; `testbot logs -f {id}` waits for it"
            ),
            "running" => eprintln!(
                "job {id} is running and has printed nothing yet; `testbot logs -f {id}` follows it"
            ),
            "" => {}
            s => eprintln!("job {id} {s} without printing anything"),
        }
    }
    Ok(0)
}
