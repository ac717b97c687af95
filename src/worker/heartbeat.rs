//! The heartbeat thread: every `heartbeat_interval`, and at once when a job
//! starts or ends, it tells the server the worker's status, its `[info]`
//! and what each running job last wrote to `$TESTBOT_INFO_FILE`. The answer
//! renews the running jobs' leases and names the ones to cancel.

use crate::client::ClientError;
use crate::wire::{Heartbeat, HeartbeatReply};

use super::{Control, Shared};

pub fn run(shared: &Shared) {
    let path = format!("/api/v1/workers/{}/heartbeat", shared.config.name);
    loop {
        let jobs = shared.running_jobs();
        let hb = Heartbeat {
            status: if jobs.is_empty() { "idle" } else { "busy" }.to_string(),
            info: shared.config.info.clone(),
            jobs,
        };
        match shared.client.post::<_, HeartbeatReply>(&path, &hb) {
            Ok(reply) => {
                shared.note_reachable();
                let running = shared.running.lock().unwrap();
                for id in reply.cancel {
                    if let Some(r) = running.get(&id) {
                        tracing::info!(
                            job = id,
                            attempt = r.attempt,
                            "canceled on the server; stopping it"
                        );
                        let _ = r.control.send(Control::Cancel);
                    }
                }
            }
            // The server forgot us (a new database): introduce ourselves again.
            Err(ClientError::Refused { status: 404, .. }) => {
                if let Err(e) = shared.register() {
                    tracing::error!("re-registering: {e:#}");
                }
            }
            Err(e @ ClientError::Refused { .. }) => tracing::error!("heartbeat refused: {e}"),
            Err(e) => shared.note_unreachable(&e),
        }
        if shared.is_stopped() {
            return;
        }
        shared.wait_poke(shared.config.heartbeat_interval);
        if shared.is_stopped() {
            // One last heartbeat says the worker is idle now.
            let hb = Heartbeat {
                status: "idle".into(),
                info: shared.config.info.clone(),
                jobs: Vec::new(),
            };
            let _ = shared.client.post::<_, HeartbeatReply>(&path, &hb);
            return;
        }
    }
}
