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
    let attempt = resp
        .header("x-testbot-attempt")
        .and_then(|a| a.parse::<u32>().ok());
    let mut reader: Box<dyn Read> = Box::new(resp.into_reader());
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    let mut printed = 0usize;
    // A followed log whose server went away goes on from the next server
    // (the client's failover), from the byte it stopped at, for a minute.
    let mut broken_since: Option<std::time::Instant> = None;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let (true, Some(attempt)) = (a.follow, attempt) else {
                    return Err(super::Exit(
                        3,
                        format!("the log of job {} stopped coming: {e}", a.id),
                    )
                    .into());
                };
                let since = *broken_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(super::Exit(
                        3,
                        format!("the log of job {} stopped coming for a minute: {e}", a.id),
                    )
                    .into());
                }
                eprintln!("testbot: the log stream broke ({e}); going on from byte {printed}");
                std::thread::sleep(Duration::from_millis(500));
                let again = format!(
                    "/api/v1/jobs/{}/log?follow=true&attempt={attempt}&offset={printed}",
                    a.id
                );
                match client.get_raw(&again, timeout) {
                    Ok(resp) => reader = Box::new(resp.into_reader()),
                    Err(e) => eprintln!("testbot: {e}; trying again"),
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        broken_since = None;
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
