//! `testbot cancel ID...`: cancel jobs; queued ones end at once, running
//! ones are stopped by their worker.

use super::Globals;
use crate::wire::{Job, JobState};

#[derive(clap::Args)]
pub struct Args {
    /// The jobs to cancel.
    #[arg(required = true, value_name = "JOB_ID")]
    ids: Vec<i64>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<u8> {
    let client = g.client()?;
    for id in a.ids {
        let job: Job = client.post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))?;
        match job.state {
            JobState::Canceled => println!("{id} canceled"),
            s if s.is_final() => {
                println!("{id} {s}");
                eprintln!("job {id} already {s}; nothing to cancel");
            }
            _ => println!("{id} canceling (its worker stops it)"),
        }
    }
    Ok(0)
}
