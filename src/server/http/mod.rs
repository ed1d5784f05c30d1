//! The HTTP control plane (axum) on its own listener: `GET /health`,
//! `GET /metrics` (Prometheus text), `GET /metrics.json` and `GET /system`. Handlers only read shared state, so they answer
//! promptly even while every decode worker is busy.

mod health;
mod metrics;
mod prometheus;
mod system;

pub use system::SystemProbe;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::server::engine::Engine;
use crate::server::metrics::ServerMetrics;
use crate::server::scheduler::DecodeHealth;
use crate::server::session::{Registry, SessionDeps};

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<ServerMetrics>,
    pub registry: Registry,
    pub deps: Arc<SessionDeps>,
    pub engine: Engine,
    pub decode_health: Arc<DecodeHealth>,
    /// True while gRPC admits sessions (false before start and once
    /// shutdown begins).
    pub serving: Arc<AtomicBool>,
    /// `metrics.expose_api_key_sessions`.
    pub expose_api_keys: bool,
    /// Host/process probe for `/system` (keeps CPU-usage baselines).
    pub system: Arc<SystemProbe>,
}

/// The control-plane routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(prometheus::metrics_text))
        .route("/metrics.json", get(metrics::metrics_json))
        .route("/system", get(system::system))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
