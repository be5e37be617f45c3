//! The accept loop: hyper's HTTP/1.1 connection driver under a cap on open connections, with
//! its timer on so a client that dawdles over its request headers, or sits idle on a
//! keep-alive connection, is dropped after the request timeout. A flood of idle connections
//! therefore costs a bounded number of small tasks and clears by itself.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use crate::server::Stats;

/// Serves `app` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
    stats: Arc<Stats>,
    stop: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        // Beyond the cap, connections wait in the kernel's backlog until one closes.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = &mut stop => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to free up.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stats = Arc::clone(&stats);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended");
            }
            stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
