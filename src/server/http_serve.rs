//! The connection loop both HTTP planes (operations, browser/REST) run:
//! an axum router over hyper, with the limits `axum::serve` leaves out.
//!
//! - A client has [`HEADER_TIMEOUT`] to send a request's headers, and a
//!   new connection as long to send its first request; one that trickles
//!   them (slowloris) or sends nothing is disconnected instead of holding
//!   a socket and a task for ever.
//! - At most [`MAX_CONNECTIONS`] are open per plane; the next waits in the
//!   kernel's backlog until one closes. (A connection upgraded to a
//!   WebSocket leaves this count; sessions bound those.)
//! - Shutdown stops accepting, lets requests in flight finish and closes
//!   idle keep-alive connections; whatever is still open after
//!   [`LINGER`] is closed, so no client can hold the process up.
//!
//! Each request carries `ConnectInfo<Peer>`, as `axum::serve` gives it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::access::{http_guard, HttpAccess};
use super::shutdown::LINGER;
use super::tls::{Incoming, Peer};

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once on one plane.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `app` behind `access` (allowlist, rate limit) on `listener` until
/// `shutdown` resolves, then waits up to [`LINGER`] for the requests in
/// flight.
pub async fn serve(
    mut listener: Incoming,
    app: Router,
    access: Arc<HttpAccess>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(access, http_guard));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // WebSockets over HTTP/2 need the CONNECT protocol, as axum::serve has.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        // Ended connections leave the set, so it holds the open ones.
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let conn = tokio::select! {
            () = &mut shutdown => break,
            conn = listener.next() => conn,
        };
        let peer = Peer(conn.peer());
        let app = app.clone();
        let requested = Arc::new(AtomicBool::new(false));
        let service = hyper::service::service_fn({
            let requested = requested.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                requested.store(true, Ordering::Relaxed);
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
            }
        });
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let served = graceful.watch(served);
        conns.spawn(async move {
            let mut served = std::pin::pin!(served);
            // hyper times the headers of an HTTP/1 request, not the bytes
            // before it that tell HTTP/1 from HTTP/2: a client that connects
            // and sends nothing, or trickles the HTTP/2 preface, is closed
            // once HEADER_TIMEOUT passes without a first request.
            let ended = tokio::select! {
                ended = &mut served => Some(ended),
                () = tokio::time::sleep(HEADER_TIMEOUT) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None if !requested.load(Ordering::Relaxed) => return,
                None => served.await,
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(LINGER, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            open = conns.len(),
            "shutdown: closing HTTP connections still open"
        );
    }
    conns.shutdown().await;
    Ok(())
}
