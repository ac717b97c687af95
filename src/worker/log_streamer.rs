//! Streams a running command's output to the server.
//!
//! A pump thread appends everything the command writes to the slot's spool
//! file in the worker's outbox (and, where the kernel has pidfds, notices
//! the command's exit, so no other thread waits for it); a sender thread,
//! started by the first output, uploads from that file what has gathered,
//! at least every 200 ms (sooner when 64 KiB are waiting), each upload
//! tagged with its offset so a retry after a lost answer is never stored
//! twice. The command is never slowed by the network, the worker's
//! memory stays bounded whatever it prints, and output the server has not
//! taken survives a server outage and a worker restart on disk.

use std::fs::File;
use std::io::{PipeReader, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::ClientError;
use crate::wire::LogReply;

use super::spool::{Keeper, Kept};
use super::{Control, Phase, Shared, Unsent};

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
    /// The spool was written to: it must be emptied after delivery.
    touched: bool,
    /// The sender thread, started by the first output.
    sender: Option<JoinHandle<bool>>,
    /// Output the spool could not keep (the disk is full), in bytes.
    lost: u64,
    /// Why the spool could not keep it.
    lost_why: Option<String>,
}

type SharedProgress = Arc<(Mutex<Progress>, Condvar)>;

/// What the sender thread needs, kept until there is output to send.
struct SenderArgs {
    shared: Arc<Shared>,
    job_id: i64,
    attempt: u32,
    control: Sender<Control>,
}

pub struct LogStreamer {
    progress: SharedProgress,
    spool: PathBuf,
    args: Arc<SenderArgs>,
}

/// How the upload of a log ended.
pub struct Sent {
    sender: Option<JoinHandle<bool>>,
    /// The spool holds this log: empty it once the server has it.
    pub touched: bool,
    /// Bytes of output the worker could not keep, and why.
    pub lost: Option<(u64, String)>,
}

impl Sent {
    /// Waits for the sender; true when the server has the whole log (or
    /// refused it as stale, or there was none), false when it gave up with
    /// bytes unsent.
    pub fn wait(self) -> bool {
        self.sender.is_none_or(|s| s.join().unwrap_or(false))
    }
}

/// How the pump learns that the command exited: a pidfd it polls beside
/// the pipe, so one thread does both (the command is reaped there).
pub struct ExitWatch {
    pub pidfd: OwnedFd,
    pub child: Child,
    pub control: Sender<Control>,
    pub stop: Arc<Stopping>,
}

/// When testbot began stopping a job (TERM to its group), and how long its
/// processes then have before KILL: set by the job's controller, read by
/// whoever reaps the job's shell.
#[derive(Default)]
pub struct Stopping {
    pub since: Mutex<Option<std::time::Instant>>,
    pub grace: Duration,
}

impl LogStreamer {
    /// Nothing touches the spool (it is empty between jobs) and no thread
    /// starts until the command prints something.
    pub fn new(
        shared: Arc<Shared>,
        job_id: i64,
        attempt: u32,
        spool: PathBuf,
        control: Sender<Control>,
    ) -> LogStreamer {
        LogStreamer {
            progress: Arc::default(),
            spool,
            args: Arc::new(SenderArgs {
                shared,
                job_id,
                attempt,
                control,
            }),
        }
    }

    /// Has the slot's pump thread copy `source` into the spool until EOF
    /// (and, given `exit`, reap the command when it exits and say so); the
    /// returned receiver disconnects when the source ends.
    pub fn pump(
        &self,
        pumper: &mut Pumper,
        source: PipeReader,
        exit: Option<ExitWatch>,
    ) -> mpsc::Receiver<()> {
        let progress = self.progress.clone();
        let spool = self.spool.clone();
        let args = self.args.clone();
        let cap = args.shared.log_cap.load(Ordering::SeqCst);
        pumper.run(Box::new(move || {
            let mut source = source;
            let mut exit = exit;
            let mut keeper = Keeper::new(spool.clone(), cap);
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                if let Some(watch) = &exit {
                    match wait_readable(&source, &watch.pidfd) {
                        Readable::Exited => {
                            if let Some(w) = exit.take() {
                                let status = reap(w.child, &w.stop);
                                // Usually the output has ended too: the
                                // job's controller then learns of both at
                                // once, rather than waking for each.
                                let ended = drain_now(&mut source, &mut chunk, &mut |b| {
                                    keep(&progress, &args, &spool, &mut keeper, b)
                                });
                                if ended {
                                    publish(&progress, &args, &spool, keeper.finish());
                                }
                                if let Some(s) = status {
                                    let _ = w.control.send(Control::Exited(s));
                                }
                                if ended {
                                    return;
                                }
                            }
                            continue;
                        }
                        Readable::Output => {}
                    }
                }
                let n = match source.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                keep(&progress, &args, &spool, &mut keeper, &chunk[..n]);
            }
            publish(&progress, &args, &spool, keeper.finish());
            // The output ended before the command did (it closed it).
            if let Some(w) = exit.take() {
                if let Some(s) = reap(w.child, &w.stop) {
                    let _ = w.control.send(Control::Exited(s));
                }
            }
        }))
    }

    /// Marks the output complete; the sender goes on until the server has
    /// all of it. Wait on the returned handle for that.
    pub fn close(self) -> Sent {
        let (lock, cond) = &*self.progress;
        let mut p = lock.lock().unwrap();
        p.closed = true;
        cond.notify_all();
        Sent {
            sender: p.sender.take(),
            touched: p.touched,
            lost: (p.lost > 0).then(|| (p.lost, p.lost_why.clone().unwrap_or_default())),
        }
    }
}

/// Keeps a piece of output in the spool, unless the job's output was
/// already closed. A full disk does not stop the draining of the pipe (the
/// command would block); what is lost is counted.
fn keep(
    progress: &SharedProgress,
    args: &Arc<SenderArgs>,
    spool: &Path,
    keeper: &mut Keeper,
    bytes: &[u8],
) {
    {
        let mut p = progress.0.lock().unwrap();
        if p.closed {
            return;
        }
        p.touched = true;
    }
    publish(progress, args, spool, keeper.keep(bytes));
}

/// Reads what the pipe holds without waiting, giving it to `keep`: true
/// when the output has ended (EOF, or the pipe cannot be read), false when
/// a writer still holds it open, with nothing more to read now or more than
/// a few reads' worth (a process that left the job's group and goes on
/// writing must not keep the job from ending: the controller kills it).
fn drain_now(source: &mut PipeReader, chunk: &mut [u8], keep: &mut dyn FnMut(&[u8])) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    for _ in 0..16 {
        let mut fds = [PollFd::new(&*source, PollFlags::IN)];
        match poll(
            &mut fds,
            Some(&Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
        match source.read(chunk) {
            Ok(0) => return true,
            Ok(n) => keep(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// Tells the sender what the spool now holds (starting it with the first
/// output) and counts what it could not keep.
fn publish(progress: &SharedProgress, args: &Arc<SenderArgs>, spool: &Path, kept: Kept) {
    let (lock, cond) = &**progress;
    let mut p = lock.lock().unwrap();
    if p.closed {
        return;
    }
    p.lost += kept.lost;
    if let Some(why) = kept.why {
        p.lost_why.get_or_insert(why);
    }
    if kept.len <= p.written {
        return;
    }
    p.written = kept.len;
    if p.sender.is_none() {
        p.sender = start_sender(args, spool, progress);
    }
    cond.notify_all();
}

type PumpJob = Box<dyn FnOnce() + Send>;
/// A pump job and the sender whose drop says it is done.
type PumpWork = (PumpJob, mpsc::Sender<()>);

/// A slot's pump thread, kept from job to job rather than started for
/// each. A pump still busy when the next job starts (a process that left
/// the job's group holds its pipe open) is left to finish on its own, and
/// a new thread takes over.
#[derive(Default)]
pub struct Pumper {
    thread: Option<(mpsc::Sender<PumpWork>, Arc<AtomicBool>)>,
}

impl Pumper {
    fn run(&mut self, job: PumpJob) -> mpsc::Receiver<()> {
        let (done_tx, done_rx) = mpsc::channel();
        let mut work = Some((job, done_tx));
        if let Some((tx, busy)) = &self.thread {
            if !busy.swap(true, Ordering::SeqCst) {
                match tx.send(work.take().expect("not sent yet")) {
                    Ok(()) => return done_rx,
                    Err(mpsc::SendError(w)) => work = Some(w),
                }
            }
        }
        let (tx, rx) = mpsc::channel::<PumpWork>();
        let busy = Arc::new(AtomicBool::new(true));
        let idle = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("pump".into())
            .spawn(move || {
                for (job, done) in rx {
                    job();
                    // Idle before the job's end is told, so the next job
                    // finds this thread free.
                    idle.store(false, Ordering::SeqCst);
                    drop(done);
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(work.take().expect("not sent yet"));
                self.thread = Some((tx, busy));
            }
            Err(e) => {
                // No thread: run it here rather than lose the output (the
                // job then waits on its own pipe).
                tracing::warn!("cannot start a pump thread: {e}");
                if let Some((job, _done)) = work.take() {
                    job();
                }
                self.thread = None;
            }
        }
        done_rx
    }
}

fn start_sender(
    args: &Arc<SenderArgs>,
    spool: &Path,
    progress: &SharedProgress,
) -> Option<JoinHandle<bool>> {
    let job_id = args.job_id;
    let args = args.clone();
    let spool = spool.to_path_buf();
    let progress = progress.clone();
    let r = std::thread::Builder::new()
        .name(format!("log-{job_id}"))
        .spawn(move || {
            send_loop(
                &args.shared,
                args.job_id,
                args.attempt,
                &spool,
                &progress,
                Some(&args.control),
            )
        });
    match r {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(job = job_id, "cannot start the log sender: {e}");
            None
        }
    }
}

enum Readable {
    Output,
    Exited,
}

/// Waits until the pipe has output (or hung up) or the process exited.
fn wait_readable(pipe: &PipeReader, pidfd: &OwnedFd) -> Readable {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [
        PollFd::new(pipe, PollFlags::IN),
        PollFd::new(pidfd, PollFlags::IN),
    ];
    loop {
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() => return Readable::Exited,
            Ok(_) => return Readable::Output,
            Err(rustix::io::Errno::INTR) => continue,
            // Polling failed: fall back to reading, which blocks as before.
            Err(_) => return Readable::Output,
        }
    }
}

/// Waits for the command and returns how it exited. The command's group is
/// killed before the command is reaped: until then its id cannot be
/// reused, so the signal never reaches another group. When testbot is
/// stopping the job, the group first has what is left of its grace period
/// to end by itself (the shell often dies of the TERM at once while what it
/// started cleans up).
pub fn reap(mut child: Child, stop: &Stopping) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        let _ = waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        );
        let since = *stop.since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = since {
            let deadline = since + stop.grace;
            while rustix::process::test_kill_process_group(p).is_ok()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    super::job_runner::signal_group(pid as i32, rustix::process::Signal::KILL);
    let status = child.wait();
    super::orphans::forget_leader(pid);
    status.ok()
}

/// A pidfd for `pid` (Linux 5.3 and later); none where the kernel or a
/// sandbox refuses it.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Uploads what an earlier run spooled but could not send. True when the
/// server has it all (or refused it as stale).
pub fn resend(shared: &Shared, job_id: i64, attempt: u32, spool: &Path) -> bool {
    let written = std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0);
    let progress: SharedProgress = Arc::new((
        Mutex::new(Progress {
            written,
            closed: true,
            ..Default::default()
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
    let sent = shared.until_answered(Phase::Abort, ClientError::is_lasting_refusal, || {
        shared.client.post_bytes::<LogReply>(&path, chunk)
    });
    match sent {
        Ok(reply) => {
            if reply.cancel {
                if let Some(c) = control {
                    let _ = c.send(Control::Cancel);
                }
            }
            Upload::Stored(reply.size)
        }
        Err(Unsent::Refused(e)) => {
            tracing::warn!(job = job_id, attempt, "log refused, dropping the rest: {e}");
            Upload::Refused
        }
        Err(Unsent::GaveUp(_)) => Upload::GaveUp,
    }
}
