//! The data plane for browsers and HTTP tools, on its own listener
//! (`server.ws_port`, default 8001; 0 = off): the live-captions page at
//! `/`, the WebSocket stream at `/ws/stream` and the OpenAI audio API under
//! `/v1/`. Each is a thin adapter over [`SessionService`]; health, metrics
//! and admin stay on the operations plane (`server.metrics_port`).

mod openai;
mod page;
pub mod ws;

use std::future::Future;

use crate::server::tls::Incoming;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::error::{ErrorCode, SttError};
use crate::server::service::SessionService;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub service: SessionService,
    /// Largest WebSocket frame read (audio frames beyond the chunk limit
    /// are refused by the session anyway).
    pub max_frame_bytes: usize,
    /// `server.max_upload_bytes`: largest file the REST API takes.
    pub max_upload_bytes: usize,
}

/// The data-plane routes.
pub fn router(state: WebState) -> Router {
    // Room for the multipart framing and the other fields around the file.
    let body_limit = state.max_upload_bytes.saturating_add(64 * 1024);
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app))
        .route("/capture-worklet.js", get(page::worklet))
        .route("/style.css", get(page::style))
        .route("/ws/stream", get(ws::upgrade))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/audio/transcriptions",
            post(openai::transcriptions).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/v1/audio/translations",
            post(openai::translations).layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Serves until `shutdown` resolves, behind the plane's access guard.
pub async fn serve(
    listener: Incoming,
    access: std::sync::Arc<crate::server::access::HttpAccess>,
    state: WebState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::server::http_serve::serve(listener, router(state), access, shutdown).await
}

/// A session id for a transport that has none of its own: `prefix-` and 64
/// random bits in hex.
pub fn new_id(prefix: &str) -> Result<String, SttError> {
    let hex = crate::server::secret::random_hex(8).map_err(|e| {
        SttError::new(ErrorCode::Err3001, "cannot make up a session id").with_source(e)
    })?;
    Ok(format!("{prefix}-{hex}"))
}
