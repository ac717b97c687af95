//! Streams a running command's output to the server.
//!
//! A pump thread appends everything the command writes to a spool file in
//! the worker's outbox; a sender thread uploads from that file what has
//! gathered, at least every 200 ms (sooner when 64 KiB are waiting), each
//! upload tagged with its offset so a retry after a lost answer is never
//! stored twice. The command is never slowed by the network, the worker's
//! memory stays bounded whatever it prints, and output the server has not
//! taken survives a server outage and a worker restart on disk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::ClientError;
use crate::wire::LogReply;

use super::backoff::Backoff;
use super::{Control, Phase, Shared};

/// Upload at once when this much is waiting.
const EAGER_BYTES: u64 = 64 << 10;
/// The most one upload carries.
pub const MAX_CHUNK: u64 = 1 << 20;
/// How long output gathers before an upload.
const GATHER: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Progress {
    /// Bytes in the spool file.
    written: u64,
    /// The command's output ended: send what is left, then stop.
    closed: bool,
}

type SharedProgress = Arc<(Mutex<Progress>, Condvar)>;

pub struct LogStreamer {
    progress: SharedProgress,
    spool: PathBuf,
    sender: JoinHandle<bool>,
}

/// How the upload of a log ended.
pub struct Sent(JoinHandle<bool>);

impl Sent {
    /// Waits for the sender; true when the server has the whole log (or
    /// refused it as stale), false when it gave up with bytes unsent.
    pub fn wait(self) -> bool {
        self.0.join().unwrap_or(false)
    }
}

impl LogStreamer {
    pub fn start(
        shared: Arc<Shared>,
        job_id: i64,
        attempt: u32,
        spool: PathBuf,
        control: Sender<Control>,
    ) -> std::io::Result<LogStreamer> {
        super::files::empty(&spool)?;
        let progress: SharedProgress = Arc::default();
        let sender = {
            let progress = progress.clone();
            let spool = spool.clone();
            std::thread::Builder::new()
                .name(format!("log-{job_id}"))
                .spawn(move || {
                    send_loop(&shared, job_id, attempt, &spool, &progress, Some(&control))
                })?
        };
        Ok(LogStreamer {
            progress,
            spool,
            sender,
        })
    }

    /// Starts a thread that copies `source` into the spool until EOF; the
    /// returned receiver disconnects when the source ends.
    pub fn pump(&self, mut source: impl Read + Send + 'static) -> mpsc::Receiver<()> {
        let progress = self.progress.clone();
        let spool = self.spool.clone();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done_tx;
            let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&spool) else {
                return;
            };
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = match source.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if file.write_all(&chunk[..n]).is_err() {
                    // The disk is full: keep draining the pipe so the
                    // command is not blocked; the log loses this part.
                    continue;
                }
                let (lock, cond) = &*progress;
                let mut p = lock.lock().unwrap();
                if p.closed {
                    continue;
                }
                p.written += n as u64;
                cond.notify_all();
            }
        });
        done_rx
    }

    /// Marks the output complete; the sender goes on until the server has
    /// all of it. Wait on the returned handle for that.
    pub fn close(self) -> Sent {
        let (lock, cond) = &*self.progress;
        lock.lock().unwrap().closed = true;
        cond.notify_all();
        Sent(self.sender)
    }
}

/// Uploads what an earlier run spooled but could not send. True when the
/// server has it all (or refused it as stale).
pub fn resend(shared: &Shared, job_id: i64, attempt: u32, spool: &Path) -> bool {
    let written = std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0);
    let progress: SharedProgress = Arc::new((
        Mutex::new(Progress {
            written,
            closed: true,
        }),
        Condvar::new(),
    ));
    send_loop(shared, job_id, attempt, spool, &progress, None)
}

fn send_loop(
    shared: &Shared,
    job_id: i64,
    attempt: u32,
    spool: &Path,
    progress: &SharedProgress,
    control: Option<&Sender<Control>>,
) -> bool {
    let (lock, cond) = &**progress;
    let Ok(mut file) = File::open(spool) else {
        return true;
    };
    // Where the server's copy ends: 0 for a new attempt; asked for when
    // resending after a restart.
    let mut sent: u64 = if control.is_none() {
        match upload(shared, job_id, attempt, 0, &[], None) {
            Upload::Stored(size) => size,
            Upload::Refused => return true,
            Upload::GaveUp => return false,
        }
    } else {
        0
    };
    let mut buf = Vec::new();
    loop {
        let (written, closed) = {
            let mut p = lock.lock().unwrap();
            p = cond
                .wait_while(p, |p| p.written <= sent && !p.closed)
                .unwrap();
            if !p.closed && p.written - sent < EAGER_BYTES {
                p = cond
                    .wait_timeout_while(p, GATHER, |p| !p.closed && p.written - sent < EAGER_BYTES)
                    .unwrap()
                    .0;
            }
            (p.written, p.closed)
        };
        if written <= sent {
            if closed {
                return true;
            }
            continue;
        }
        let n = (written - sent).min(MAX_CHUNK);
        buf.resize(n as usize, 0);
        if file.seek(SeekFrom::Start(sent)).is_err() || file.read_exact(&mut buf).is_err() {
            tracing::warn!(
                job = job_id,
                attempt,
                "cannot read the log spool; the rest of the log is lost"
            );
            return true;
        }
        match upload(shared, job_id, attempt, sent, &buf, control) {
            Upload::Stored(_) => sent += n,
            Upload::Refused => return true,
            Upload::GaveUp => return false,
        }
    }
}

enum Upload {
    /// Stored; the server now has this many bytes of the attempt's log.
    Stored(u64),
    /// The server does not take this attempt's log any more.
    Refused,
    /// The worker is aborting and the server is away.
    GaveUp,
}

/// Uploads one chunk, retrying while the server is away.
fn upload(
    shared: &Shared,
    job_id: i64,
    attempt: u32,
    offset: u64,
    chunk: &[u8],
    control: Option<&Sender<Control>>,
) -> Upload {
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
                    if let Some(c) = control {
                        let _ = c.send(Control::Cancel);
                    }
                }
                return Upload::Stored(reply.size);
            }
            Err(e @ ClientError::Refused { .. }) => {
                tracing::warn!(job = job_id, attempt, "log refused, dropping the rest: {e}");
                return Upload::Refused;
            }
            Err(e) => {
                shared.note_unreachable(&e);
                if shared.phase() == Phase::Abort {
                    return Upload::GaveUp;
                }
                shared.pause(backoff.next_delay());
            }
        }
    }
}
