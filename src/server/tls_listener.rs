//! TLS connections: TCP accepts on one task, each admitted by the
//! connection tracker before its handshake, each handshake on a task of its
//! own (so a slow or broken client never holds up the others), finished
//! streams through a channel.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::connections::{self, Incoming, Ticket, Tracker};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Ticket)>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        tracker: Arc<Tracker>,
    ) -> TlsListener {
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let tcp = connections::accept(&listener).await;
                let Some(ticket) = tracker.admit() else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => h,
                        // Evicted for room while still shaking hands.
                        _ = ticket.closing(HANDSHAKE_TIMEOUT) => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, ticket)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready }
    }
}

impl Incoming for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn next(&mut self) -> (Self::Io, Ticket) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }
}
