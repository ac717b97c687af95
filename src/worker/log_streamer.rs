//! Streams a running command's output to the server.
//!
//! A reader thread moves bytes from the command's pipe into a bounded
//! buffer; a sender thread uploads what has gathered at least every 200 ms
//! (sooner when 64 KiB are waiting), each upload tagged with its offset so
//! a retry after a lost answer is never stored twice. When the buffer is
//! full the reader waits, so the worker's memory stays bounded whatever
//! the command prints.

use std::io::Read;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::ClientError;
use crate::wire::LogReply;

use super::backoff::Backoff;
use super::{Control, Phase, Shared};

/// Upload at once when this much is waiting.
const EAGER_BYTES: usize = 64 << 10;
/// The most one upload carries.
const MAX_CHUNK: usize = 1 << 20;
/// The reader waits while this much is unsent.
const MAX_BUFFER: usize = 8 << 20;
/// How long output gathers before an upload.
const GATHER: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Buffer {
    data: Vec<u8>,
    /// The command's output ended: send what is left, then stop.
    closed: bool,
    /// The server no longer takes this attempt's log: drop everything.
    stale: bool,
}

type SharedBuffer = Arc<(Mutex<Buffer>, Condvar)>;

pub struct LogStreamer {
    buf: SharedBuffer,
    sender: JoinHandle<()>,
}

impl LogStreamer {
    pub fn start(
        shared: Arc<Shared>,
        job_id: i64,
        attempt: u32,
        control: Sender<Control>,
    ) -> LogStreamer {
        let buf: SharedBuffer = Arc::default();
        let sender = {
            let buf = buf.clone();
            std::thread::Builder::new()
                .name(format!("log-{job_id}"))
                .spawn(move || send_loop(&shared, job_id, attempt, &buf, &control))
                .expect("spawning the log sender")
        };
        LogStreamer { buf, sender }
    }

    /// Starts a thread that copies `source` into the stream until EOF; the
    /// returned receiver disconnects when the source ends.
    pub fn pump(&self, mut source: impl Read + Send + 'static) -> mpsc::Receiver<()> {
        let buf = self.buf.clone();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done_tx;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = match source.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let (lock, cond) = &*buf;
                let mut b = lock.lock().unwrap();
                b = cond
                    .wait_while(b, |b| b.data.len() >= MAX_BUFFER && !b.stale && !b.closed)
                    .unwrap();
                if b.stale || b.closed {
                    // Nobody takes it any more; keep draining the pipe so
                    // the command is not blocked writing.
                    continue;
                }
                let was_empty = b.data.is_empty();
                b.data.extend_from_slice(&chunk[..n]);
                if was_empty || b.data.len() >= EAGER_BYTES {
                    cond.notify_all();
                }
            }
        });
        done_rx
    }

    /// Sends what is left and waits until it is delivered (or refused).
    pub fn finish(self) {
        {
            let (lock, cond) = &*self.buf;
            lock.lock().unwrap().closed = true;
            cond.notify_all();
        }
        let _ = self.sender.join();
    }
}

fn send_loop(
    shared: &Shared,
    job_id: i64,
    attempt: u32,
    buf: &SharedBuffer,
    control: &Sender<Control>,
) {
    let (lock, cond) = &**buf;
    let mut offset: u64 = 0;
    loop {
        let chunk = {
            let mut b = lock.lock().unwrap();
            b = cond
                .wait_while(b, |b| b.data.is_empty() && !b.closed)
                .unwrap();
            if !b.closed && b.data.len() < EAGER_BYTES {
                b = cond
                    .wait_timeout_while(b, GATHER, |b| !b.closed && b.data.len() < EAGER_BYTES)
                    .unwrap()
                    .0;
            }
            if b.data.is_empty() && b.closed {
                return;
            }
            let n = b.data.len().min(MAX_CHUNK);
            let chunk: Vec<u8> = b.data.drain(..n).collect();
            cond.notify_all();
            chunk
        };
        if !upload(shared, job_id, attempt, offset, &chunk, control) {
            let mut b = lock.lock().unwrap();
            b.stale = true;
            b.data = Vec::new();
            cond.notify_all();
            return;
        }
        offset += chunk.len() as u64;
    }
}

/// Uploads one chunk, retrying while the server is away. Returns false
/// when the server refuses the attempt's log (it is no longer current).
fn upload(
    shared: &Shared,
    job_id: i64,
    attempt: u32,
    offset: u64,
    chunk: &[u8],
    control: &Sender<Control>,
) -> bool {
    let path = format!(
        "/api/v1/jobs/{job_id}/log?worker={}&attempt={attempt}&offset={offset}",
        shared.config.name
    );
    let mut backoff = Backoff::new();
    loop {
        match shared.client.post_bytes::<LogReply>(&path, chunk) {
            Ok(reply) => {
                shared.note_reachable();
                if reply.cancel {
                    let _ = control.send(Control::Cancel);
                }
                return true;
            }
            Err(e @ ClientError::Refused { .. }) => {
                tracing::warn!(job = job_id, attempt, "log refused, dropping the rest: {e}");
                return false;
            }
            Err(e) => {
                shared.note_unreachable(&e);
                if shared.phase() == Phase::Abort {
                    return false;
                }
                std::thread::sleep(backoff.next_delay());
            }
        }
    }
}
