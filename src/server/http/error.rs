//! Control-plane errors on the wire: `{"code": "ERR4004", "message": "…"}`
//! with the HTTP status of the error table.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::{ErrorCode, SttError};

/// A coded error as an HTTP response.
pub struct ApiError(pub SttError);

impl From<SttError> for ApiError {
    fn from(e: SttError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            let cause = e.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
            tracing::error!(code = %e.code, cause, "{}", e.message);
        } else {
            tracing::warn!(code = %e.code, "{}", e.message);
        }
        let mut resp = (
            status,
            Json(json!({"code": e.code.as_str(), "message": e.message})),
        )
            .into_response();
        // Read back by `count_errors` so the code lands in the metrics.
        resp.extensions_mut().insert(e.code);
        resp
    }
}

/// Middleware: counts every coded error the control plane answers with.
pub async fn count_errors(
    axum::extract::State(s): axum::extract::State<super::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if let Some(code) = resp.extensions().get::<ErrorCode>() {
        s.metrics.count_error(*code);
    }
    resp
}

/// How much of the observability endpoints a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    /// No token configured, or the right one presented.
    Full,
    /// Wrong or missing token.
    Denied,
}

/// Whether `headers` may read metrics, system and detailed health.
pub fn observer(s: &super::AppState, headers: &axum::http::HeaderMap) -> Observer {
    match &s.admin.observability_token {
        None => Observer::Full,
        Some(expected) => match super::admin::presented_token(headers) {
            Some(t) if crate::server::secret::matches(expected, t) => Observer::Full,
            _ => Observer::Denied,
        },
    }
}

/// Middleware on `/metrics`, `/metrics.json` and `/system`: with
/// `STT_OBSERVABILITY_TOKEN` set, they need `Authorization: Bearer` with it
/// (ERR4004).
pub async fn guard_observability(
    axum::extract::State(s): axum::extract::State<super::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match observer(&s, req.headers()) {
        Observer::Full => next.run(req).await,
        Observer::Denied => ApiError(SttError::new(
            ErrorCode::Err4004,
            "this endpoint needs `Authorization: Bearer <STT_OBSERVABILITY_TOKEN>`",
        ))
        .into_response(),
    }
}

/// Any path the control plane does not serve.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(SttError::new(
        ErrorCode::Err4007,
        format!(
            "no endpoint {}: try /health, /metrics, /metrics.json, /system or /admin/list_models",
            uri.path()
        ),
    ))
}
