//! `testbot cancel ID...`: cancel jobs; queued ones end at once, running
//! ones are stopped by their worker.

use super::Globals;
use crate::client::ClientError;
use crate::wire::{Job, JobState};

#[derive(clap::Args)]
pub struct Args {
    /// The jobs to cancel.
    #[arg(required = true, value_name = "JOB_ID")]
    ids: Vec<i64>,
}

/// Every id is tried: one the server refuses (no such job, a bad id) is
/// said and the others are still canceled; the exit code is then 2. A
/// server that cannot be reached stops the command (exit 3).
pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    let mut code = 0;
    for id in a.ids {
        let job: Job =
            match client.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({})) {
                Ok(job) => job,
                Err(ClientError::Refused { message, .. }) => {
                    eprintln!("testbot: job {id}: {message}");
                    code = 2;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
        match job.state {
            JobState::Canceled => println!("{id} canceled"),
            s if s.is_final() => {
                println!("{id} {s}");
                eprintln!("job {id} already {s}; nothing to cancel");
            }
            _ => println!("{id} canceling (its worker stops it)"),
        }
    }
    Ok(code)
}
