//! The HTTP control plane (axum) on its own listener: `GET /health`,
//! `GET /metrics` (Prometheus text), `GET /metrics.json`, `GET /system` and
//! the admin API under `/admin/`. Handlers only read shared state (model
//! loading runs on its own thread), so they answer promptly even while
//! every decode worker is busy.

mod admin;
mod error;
pub use error::ApiError;
pub mod health;
mod metrics;
mod prometheus;
mod system;

pub use system::SystemProbe;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::server::tls::Incoming;
use axum::routing::{get, post};
use axum::Router;

use crate::server::metrics::ServerMetrics;
use crate::server::model_registry::ModelRegistry;
use crate::server::scheduler::DecodeHealth;
use crate::server::session::{Registry, SessionDeps};
use crate::server::settings::AdminSettings;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<ServerMetrics>,
    pub registry: Registry,
    pub deps: Arc<SessionDeps>,
    pub models: ModelRegistry,
    /// Whether and how the admin API may be used.
    pub admin: AdminSettings,
    pub decode_health: Arc<DecodeHealth>,
    /// True while gRPC admits sessions (false before start and once
    /// shutdown begins).
    pub serving: Arc<AtomicBool>,
    /// `metrics.expose_api_key_sessions`.
    pub expose_api_keys: bool,
    /// Host/process probe for `/system` (keeps CPU-usage baselines).
    pub system: Arc<SystemProbe>,
}

impl AppState {
    /// What a [`crate::server::snapshot::MetricsSnapshot`] reads.
    pub fn sources(&self) -> crate::server::snapshot::Sources<'_> {
        crate::server::snapshot::Sources {
            metrics: &self.metrics,
            registry: &self.registry,
            deps: &self.deps,
            models: &self.models,
            expose_api_keys: self.expose_api_keys,
        }
    }
}

/// The control-plane routes.
pub fn router(state: AppState) -> Router {
    // Each group's guard runs once, as a layer, before any of its handlers.
    let observability = Router::new()
        .route("/metrics", get(prometheus::metrics_text))
        .route("/metrics.json", get(metrics::metrics_json))
        .route("/system", get(system::system))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error::guard_observability,
        ));
    let admin = Router::new()
        .route("/admin/load_model", post(admin::load_model))
        .route("/admin/unload_model", post(admin::unload_model))
        .route("/admin/list_models", get(admin::list_models))
        .route("/admin/load_model_status", get(admin::load_model_status))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::guard,
        ));
    Router::new()
        .route("/health", get(health::health))
        .merge(observability)
        .merge(admin)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error::count_errors,
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves, behind the plane's access guard.
pub async fn serve(
    listener: Incoming,
    access: std::sync::Arc<crate::server::access::HttpAccess>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::server::http_serve::serve(listener, router(state), access, shutdown).await
}
