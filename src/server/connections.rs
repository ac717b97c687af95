//! Serving connections with hyper directly rather than `axum::serve`, so
//! the HTTP/1 read buffer can be sized: a worker holds a request open most
//! of the time (a claim or a heartbeat), and hyper keeps a buffer per
//! request in flight. With 10,000 workers that buffer is most of the
//! server's memory.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// The smallest buffer hyper allows; requests here are small.
const READ_BUFFER: usize = 8192;

/// Accepts connections from `listener` and serves `app` on each until
/// `shutdown` resolves; then lets requests in flight finish for up to
/// `grace`.
pub async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            conn = listener.accept() => conn,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {grace:?}; stopping anyway");
    }
}
