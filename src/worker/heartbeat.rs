//! The heartbeat thread: every `heartbeat_interval` it tells the server the
//! worker's status, its `[info]` and what each running job last wrote to
//! `$TESTBOT_INFO_FILE`. That renews the running jobs' leases.
//!
//! While jobs run, each heartbeat is held open by the server for up to the
//! interval (at most [`MAX_HOLD`]) and answered early when one of them is
//! canceled, and the next one follows at once: a busy worker always has a
//! heartbeat waiting on the server, so a cancel reaches it at once whatever
//! the interval.

use std::time::{Duration, Instant};

use crate::client::ClientError;
use crate::wire::{Heartbeat, HeartbeatReply};

use super::{Control, Phase, Shared};

/// The longest the server holds a heartbeat open.
const MAX_HOLD: Duration = Duration::from_secs(30);
/// Status pushes on a job's start or end come at most this often, so a
/// worker running many short jobs does not double its requests.
const MIN_PUSH_GAP: Duration = Duration::from_millis(200);

pub fn run(shared: &Shared) {
    let interval = shared.config.heartbeat_interval;
    loop {
        let busy = !shared.running.lock().unwrap().is_empty();
        let hold = if busy {
            interval.min(MAX_HOLD)
        } else {
            Duration::ZERO
        };
        let started = Instant::now();
        let answered = send(shared, hold.as_secs_f64());
        if shared.is_stopped() {
            return;
        }
        // Beat once per interval whether the server held the answer or not;
        // while jobs run and the server answers, hold the next one open at
        // once (a moment later if it answered at once).
        let still_busy = !shared.running.lock().unwrap().is_empty();
        let left = if busy && still_busy && answered {
            MIN_PUSH_GAP.saturating_sub(started.elapsed())
        } else {
            interval.saturating_sub(started.elapsed())
        };
        if !left.is_zero() && shared.wait_poke(left) {
            let since = started.elapsed();
            if since < MIN_PUSH_GAP {
                std::thread::sleep(MIN_PUSH_GAP - since);
            }
        }
        if shared.is_stopped() {
            return;
        }
    }
}

/// How often the info watcher looks at the running jobs' info files, and
/// the least time between two heartbeats it sends.
const INFO_LOOK: Duration = Duration::from_millis(250);
const INFO_GAP: Duration = Duration::from_secs(1);

/// Watches the running jobs' `$TESTBOT_INFO_FILE`s and sends a heartbeat
/// when one changes (at most one a second), so what a job says about
/// itself shows on the server within about a second, not at the next beat.
pub fn watch_info(shared: &Shared) {
    let mut last: std::collections::HashMap<i64, (std::time::SystemTime, u64)> = Default::default();
    let mut sent = Instant::now() - INFO_GAP;
    let mut pending = false;
    while !shared.is_stopped() {
        std::thread::sleep(INFO_LOOK);
        let files: Vec<(i64, std::path::PathBuf)> = shared
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|(&id, r)| (id, r.info_file.clone()))
            .collect();
        last.retain(|id, _| files.iter().any(|(i, _)| i == id));
        for (id, path) in files {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
            match last.insert(id, stamp) {
                Some(before) if before != stamp => pending = true,
                // First seen: the job's start was reported already; only
                // what it wrote since counts.
                None if stamp.1 > 0 => pending = true,
                _ => {}
            }
        }
        if pending && sent.elapsed() >= INFO_GAP {
            pending = false;
            sent = Instant::now();
            send(shared, 0.0);
        }
    }
}

/// Sends one heartbeat (held up to `wait` seconds) and acts on the answer;
/// says whether the server answered it.
pub fn send(shared: &Shared, wait: f64) -> bool {
    let path = format!("/api/v1/workers/{}/heartbeat", shared.config.name);
    let status = if shared.is_stopped() {
        // The last word of a worker that stops: shown offline at once.
        "stopped"
    } else if shared.phase() >= Phase::Drain {
        "draining"
    } else if shared.running.lock().unwrap().is_empty() {
        "idle"
    } else {
        "busy"
    };
    // Jobs whose results wait for the slot's next claim keep their leases.
    let jobs = shared.held_jobs();
    let hb = Heartbeat {
        status: status.to_string(),
        wait,
        info: shared.info(),
        jobs,
    };
    // Held `wait` seconds, then answered at once: an answer that does not
    // come within one more interval (2 to 30 s) was lost on the way, and
    // the next heartbeat must go while the leases (3 intervals from the
    // last one the server had) still hold.
    let margin = shared
        .config
        .heartbeat_interval
        .clamp(Duration::from_secs(2), MAX_HOLD);
    let timeout = Duration::from_secs_f64(wait) + margin;
    match shared
        .client
        .post_maybe::<_, HeartbeatReply>(&path, &hb, timeout)
    {
        Ok(crate::client::Maybe::Some(reply)) => {
            shared.note_reachable();
            let mut running = shared.running.lock().unwrap();
            for id in reply.cancel {
                if let Some(r) = running.get_mut(&id) {
                    if !r.canceling {
                        tracing::info!(
                            job = id,
                            attempt = r.attempt,
                            "canceled on the server; stopping it"
                        );
                        r.canceling = true;
                        let _ = r.control.send(Control::Cancel);
                    }
                }
            }
            true
        }
        Ok(crate::client::Maybe::NoContent) => {
            shared.note_reachable();
            true
        }
        // The server forgot us (a new database): introduce ourselves again.
        Err(ClientError::Refused { status: 404, .. }) => {
            if let Err(e) = shared.register() {
                tracing::error!("re-registering: {e:#}");
            }
            false
        }
        Err(e @ ClientError::Refused { .. }) => {
            tracing::error!("heartbeat refused: {e}");
            false
        }
        Err(e) => {
            shared.note_unreachable(&e);
            false
        }
    }
}
