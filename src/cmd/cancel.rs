//! `testbot cancel ID...`: cancel jobs; queued ones end at once, running
//! ones are stopped by their worker.

use super::Globals;
use crate::wire::Job;

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
        let what = if job.state.is_final() {
            job.state.to_string()
        } else {
            "canceling (its worker stops it)".to_string()
        };
        println!("{id} {what}");
    }
    Ok(0)
}
