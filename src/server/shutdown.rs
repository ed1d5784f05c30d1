//! The steps of a server's shutdown that take time: open streams flush
//! their finals within the grace period, capture writers drain, listeners
//! close. `BoundServer::serve` runs them in order once a stop is asked for.

use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::capture::CaptureStore;
use super::session::{Registry, Stop};

/// How long a closed listener's open connections (idle keep-alives, pages
/// left open, requests in flight) get to go before they are dropped.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// Open streams flush their finals for up to `grace` (zero skips this);
/// whatever is still open then is aborted. Returns once every session
/// task has ended.
pub(super) async fn drain_sessions(
    grace: Duration,
    stop: &Stop,
    tracker: &TaskTracker,
    registry: &Registry,
) {
    tracker.close();
    let drained = if grace.is_zero() {
        false
    } else {
        stop.drain.cancel();
        tokio::time::timeout(grace, tracker.wait()).await.is_ok()
    };
    if !drained {
        tracing::warn!(
            grace_sec = grace.as_secs_f64(),
            open = registry.active(),
            "shutdown: aborting sessions still open"
        );
        stop.abort.cancel();
        tracker.wait().await;
    }
}

/// Capture files are closed as sessions end; their writers get the grace
/// period (at least a second) to write what is queued.
pub(super) async fn settle_capture(capture: Option<CaptureStore>, grace: Duration) {
    let Some(store) = capture else { return };
    let wait = grace.max(Duration::from_secs(1));
    let idle = tokio::task::spawn_blocking(move || store.wait_idle(wait))
        .await
        .unwrap_or(false);
    if !idle {
        tracing::warn!("shutdown: audio capture writers still busy; their files stay valid");
    }
}

/// Stops a listener: `stop` ends its accept loop, then its open
/// connections get [`LINGER`] before the task is aborted — a client that
/// never closes must not hold the process up.
pub(super) async fn close_listener<E>(
    mut task: JoinHandle<Result<(), E>>,
    stop: &CancellationToken,
) -> Result<Result<(), E>, JoinError> {
    stop.cancel();
    match tokio::time::timeout(LINGER, &mut task).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("shutdown: closing connections still open");
            task.abort();
            Ok(Ok(()))
        }
    }
}

/// Resolves on SIGINT or SIGTERM, logging which.
pub async fn signal() {
    match crate::signal::stop_requested().await {
        crate::signal::StopSignal::Interrupt => tracing::info!("received Ctrl-C"),
        crate::signal::StopSignal::Terminate => tracing::info!("received SIGTERM"),
    }
}
