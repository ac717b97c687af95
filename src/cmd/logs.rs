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
    let reader: Box<dyn Read> = Box::new(resp.into_reader());
    let mut stdout = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut sink = |bytes: &[u8]| -> std::io::Result<()> {
        printed += bytes.len() as u64;
        stdout.write_all(bytes)?;
        stdout.flush()
    };
    match (a.follow, attempt) {
        (true, Some(attempt)) => {
            follow(&client, a.id, attempt, reader, &mut sink).map_err(|e| match e {
                Followed::Lost(why) => super::Exit(3, why).into(),
                Followed::Output(e) => anyhow::Error::from(e),
            })?
        }
        _ => {
            let mut reader = reader;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = reader.read(&mut buf).map_err(|e| {
                    super::Exit(3, format!("the log of job {} stopped coming: {e}", a.id))
                })?;
                if n == 0 {
                    break;
                }
                sink(&buf[..n])?;
            }
        }
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

/// How following a log ended, when not with the log's end.
pub(super) enum Followed {
    /// The server went away, or no server gave the log for a minute.
    Lost(String),
    /// Writing what came failed (a closed pipe, a full disk).
    Output(std::io::Error),
}

/// Follows attempt `attempt` of job `id` from `reader` (its stream from
/// the first byte) until the attempt ends, giving each piece to `sink`.
/// A stream that breaks, or ends while the attempt still runs (a server
/// stopped or restarted), goes on from the byte it stopped at — on the
/// next server of the list, or on the same one when it is back — for as
/// long as some server answers within a minute.
pub(super) fn follow(
    client: &crate::client::Client,
    id: i64,
    attempt: u32,
    mut reader: Box<dyn Read>,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), Followed> {
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    let mut broken_since: Option<std::time::Instant> = None;
    loop {
        let why = match reader.read(&mut buf) {
            Ok(0) => {
                // The server ended the stream: the attempt ended, or the
                // server is stopping while it runs.
                match client.get::<crate::wire::Job>(&format!("/api/v1/jobs/{id}")) {
                    Ok(j) if j.state.is_final() || j.attempt != attempt => return Ok(()),
                    Ok(_) => "the server ended the stream while the job runs".to_string(),
                    Err(e) if e.is_refusal() => return Ok(()),
                    Err(e) => e.to_string(),
                }
            }
            Ok(n) => {
                broken_since = None;
                offset += n as u64;
                sink(&buf[..n]).map_err(Followed::Output)?;
                continue;
            }
            Err(e) => e.to_string(),
        };
        let since = *broken_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > Duration::from_secs(60) {
            return Err(Followed::Lost(format!(
                "the log of job {id} stopped coming for a minute: {why}"
            )));
        }
        eprintln!("testbot: the log stream broke ({why}); going on from byte {offset}");
        std::thread::sleep(Duration::from_millis(500));
        let again = format!("/api/v1/jobs/{id}/log?follow=true&attempt={attempt}&offset={offset}");
        reader = match client.get_raw(&again, Duration::from_secs(7 * 24 * 3600)) {
            Ok(resp) => Box::new(resp.into_reader()),
            Err(e) if e.is_lasting_refusal() => {
                return Err(Followed::Lost(format!("the log of job {id}: {e}")))
            }
            Err(e) => {
                eprintln!("testbot: {e}; trying again");
                Box::new(Broken)
            }
        };
    }
}

/// A stream that is not there: its first read fails, so [`follow`] tries
/// again.
struct Broken;

impl Read for Broken {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("no server answered"))
    }
}
