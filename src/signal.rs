//! Waiting for a person (Ctrl-C) or a supervisor (SIGTERM) to ask the
//! process to stop; shared by `stt serve` and the dashboard.

/// Which request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// Resolves on SIGINT or SIGTERM. A signal that cannot be listened for
/// simply never fires.
pub async fn stop_requested() -> StopSignal {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => StopSignal::Interrupt,
        () = term => StopSignal::Terminate,
    }
}
