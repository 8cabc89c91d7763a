//! The admin server's connections: at most [`MAX_CONNECTIONS`] at once, and
//! none kept waiting for its request headers longer than
//! [`HEADER_TIMEOUT`]. A client that opens connections and sends nothing
//! can neither fill the process's descriptors (past the cap a connection
//! is closed at once, and counted) nor hold one for ever (an idle one is
//! closed at the timeout, between requests too).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a connection may take to send a request's headers, and how
/// long an idle connection is kept waiting for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Connections refused at the cap, since the start (logged, throttled).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Serves `app` on `listener` until `cancel`, then lets requests in
/// progress finish (up to a few seconds).
pub async fn serve(listener: TcpListener, app: Router, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let refused_log = crate::throttle::Throttle::new(Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait a little, never spin.
                    warn!(event = "admin_accept_failed", error = %e, "the admin server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = refused_log.allow() {
                warn!(
                    event = "admin_connections_full",
                    max = MAX_CONNECTIONS,
                    refused,
                    suppressed,
                    "the admin server has its most connections open; closed a new one"
                );
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is not an error of ours.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
