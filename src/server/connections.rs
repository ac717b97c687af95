//! Serving connections ourselves rather than with `axum::serve`, so that
//! the server decides how many connections it keeps, for how long, and
//! what each costs.
//!
//! - Each connection is served by [`super::http1`], which holds no buffer
//!   while a request is answered: a worker holds a request open most of
//!   the time (a claim or a heartbeat), and with 10,000 workers hyper's
//!   two buffers per connection were most of the server's memory.
//! - Every connection holds a [`Ticket`] from the [`Tracker`], which knows
//!   whether a request is being answered on it (until its response body is
//!   sent: a followed log streams for hours). A connection with no request
//!   in flight for [`IDLE_TIMEOUT`] is closed, and so is one whose request
//!   head does not arrive within [`HEADER_TIMEOUT`]; so slow or silent
//!   clients cannot hold file descriptors for long.
//! - The number of connections is capped below the open-file limit. At the
//!   cap a new connection makes room by closing the connection that has
//!   been idle longest (slow-header clients are idle too); when every
//!   connection is busy answering, the new one is refused. So a health
//!   probe is served while a thousand slow connections are open.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http1;

/// How long a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay open with no request in flight. Workers
/// heartbeat at least once a minute by default and hold their claims open,
/// so their connections are rarely idle this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// File descriptors kept free of connections: the database, its journal,
/// log files, backups and the embedded workers' files.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one and returns how many
/// connections to allow below it.
pub fn raise_fd_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if soft < hard {
        lim.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
        }
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let cap = max_connections(now);
    tracing::info!(
        open_files = now,
        max_connections = cap,
        "open-file limit (soft {soft}, hard {hard} at start)"
    );
    cap
}

/// Connections allowed under an open-file limit: all but a reserve of an
/// eighth (at least [`RESERVED_FDS`]).
pub fn max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 8).max(RESERVED_FDS);
    usize::try_from(fd_limit.saturating_sub(reserve).clamp(16, 1 << 20)).unwrap_or(1 << 20)
}

/// What the tracker knows of one connection.
struct ConnState {
    /// Requests being answered, their bodies included.
    busy: AtomicUsize,
    /// When it last became idle, in ms since the tracker began.
    idle_since: AtomicU64,
    /// Told when the connection is to close (evicted for room).
    close: Notify,
}

/// The open connections, so the server can cap them and close the idle.
pub struct Tracker {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    max: usize,
    epoch: Instant,
    refused: AtomicU64,
}

impl Tracker {
    pub fn new(max: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            conns: Mutex::default(),
            next: AtomicU64::new(0),
            max,
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Lets a new connection in, closing the longest-idle one at the cap;
    /// `None` when every connection is busy answering a request.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut conns = self.conns.lock().unwrap();
        if conns.len() >= self.max {
            let oldest = conns
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::SeqCst))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    if let Some(c) = conns.remove(&id) {
                        c.close.notify_one();
                    }
                }
                None => {
                    let n = self.refused.fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() {
                        tracing::warn!(
                            connections = conns.len(),
                            refused = n + 1,
                            "at the connection limit with every connection busy; refusing"
                        );
                    }
                    return None;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            close: Notify::new(),
        });
        conns.insert(id, state.clone());
        Some(Ticket {
            id,
            state,
            tracker: self.clone(),
        })
    }

    /// Open connections now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

/// A connection's place in the [`Tracker`]; leaving it frees the place.
pub struct Ticket {
    id: u64,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tracker.conns.lock().unwrap().remove(&self.id);
    }
}

impl Ticket {
    /// Resolves when the connection should close: evicted to make room, or
    /// idle (no request in flight) for `idle` ms.
    pub async fn closing(&self, idle: Duration) {
        loop {
            let wait = if self.state.busy.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                let since = self.state.idle_since.load(Ordering::SeqCst);
                let idle_for = Duration::from_millis(self.tracker.now().saturating_sub(since));
                if idle_for >= idle {
                    return;
                }
                idle - idle_for
            };
            tokio::select! {
                _ = self.state.close.notified() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Marks the connection busy answering a request until the guard goes.
    pub(super) fn begin(&self) -> Busy {
        self.state.busy.fetch_add(1, Ordering::SeqCst);
        Busy {
            state: self.state.clone(),
            tracker: self.tracker.clone(),
        }
    }
}

/// Held while a request is answered, its response body included.
pub(super) struct Busy {
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.state
            .idle_since
            .store(self.tracker.now(), Ordering::SeqCst);
        self.state.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where connections come from: accepted TCP, or finished TLS handshakes.
pub trait Incoming: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn next(&mut self) -> impl Future<Output = (Self::Io, Ticket)> + Send;
}

/// Plain TCP connections, each admitted by the tracker.
pub struct Plain {
    pub listener: tokio::net::TcpListener,
    pub tracker: Arc<Tracker>,
}

impl Incoming for Plain {
    type Io = tokio::net::TcpStream;

    async fn next(&mut self) -> (Self::Io, Ticket) {
        loop {
            let tcp = accept(&self.listener).await;
            match self.tracker.admit() {
                Some(ticket) => return (tcp, ticket),
                None => drop(tcp),
            }
        }
    }
}

/// Accepts the next TCP connection; out of file descriptors and the like,
/// waits a moment and tries again rather than spinning.
pub async fn accept(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            Err(e) => {
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections from `incoming` and serves `app` on each until
/// `shutdown` resolves; then closes idle connections, lets requests in
/// flight finish for up to `grace` and closes theirs after them.
pub async fn serve<I: Incoming>(
    mut incoming: I,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Each connection's task holds a sender; all gone, all are closed.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (io, ticket) = tokio::select! {
            conn = incoming.next() => conn,
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                _ = http1::serve_connection(io, app, &ticket, HEADER_TIMEOUT, stopping) => {}
                // Dropping the connection closes it; it has no request in
                // flight (or it was evicted for room).
                _ = ticket.closing(IDLE_TIMEOUT) => {}
            }
        });
    }
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {grace:?}; stopping anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(max_connections(1024), 896);
        assert_eq!(max_connections(256), 192);
        assert!(max_connections(1 << 20) < 1 << 20);
        assert_eq!(max_connections(u64::MAX), 1 << 20);
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let tracker = Tracker::new(2);
        let a = tracker.admit().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = tracker.admit().unwrap();
        let busy = b.begin();
        // Full: a (idle) is closed for c.
        let c = tracker.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), a.closing(IDLE_TIMEOUT))
            .await
            .expect("the idle connection is told to close");
        assert_eq!(tracker.open(), 2);
        // b busy and c idle: c goes next.
        let _d = tracker.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), c.closing(IDLE_TIMEOUT))
            .await
            .unwrap();
        drop(c);
        // Now b (busy) and d: d is idle, so it goes; with both busy, refused.
        let _busy_d = _d.begin();
        assert!(tracker.admit().is_none(), "every connection is busy");
        drop(busy);
        assert!(tracker.admit().is_some(), "b is idle again");
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_the_idle_timeout() {
        let tracker = Tracker::new(8);
        let t = tracker.admit().unwrap();
        let started = std::time::Instant::now();
        t.closing(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        let busy = t.begin();
        let still = tokio::time::timeout(
            Duration::from_millis(120),
            t.closing(Duration::from_millis(50)),
        )
        .await;
        assert!(still.is_err(), "a busy connection is not idle");
        drop(busy);
    }
}
