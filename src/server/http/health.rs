//! `GET /health`: 200 when gRPC is serving, the default model is loaded and
//! recent decodes are healthy by the `health.*` ratios; otherwise 500 with
//! the list of reasons.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::server::model_registry::ModelRegistry;
use crate::server::scheduler::DecodeHealth;

/// Why the server is unhealthy; empty when it is healthy. The gRPC health
/// service follows the same verdict (see `background::spawn_health_watcher`).
pub fn reasons(serving: bool, models: &ModelRegistry, decode_health: &DecodeHealth) -> Vec<String> {
    let mut reasons = Vec::new();
    if !serving {
        reasons.push("gRPC is not serving (shutting down)".to_string());
    }
    if models.default_engine().is_none() {
        reasons.push("the default Whisper model is not loaded".to_string());
    }
    if let Err(why) = decode_health.verdict() {
        reasons.push(why);
    }
    reasons
}

pub async fn health(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, Json<Value>) {
    let reasons = reasons(
        s.serving.load(Ordering::Acquire),
        &s.models,
        &s.decode_health,
    );
    if super::error::observer(&s, &headers) == super::error::Observer::Denied {
        // Probes keep a bare status when the operator allows it; the
        // details (model path, reasons) need the observability token.
        if !s.admin.public_health_minimal {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "code": "ERR4004",
                    "message": "/health needs `Authorization: Bearer <STT_OBSERVABILITY_TOKEN>` (or STT_PUBLIC_HEALTH=minimal)",
                })),
            );
        }
        let (status, word) = if reasons.is_empty() {
            (StatusCode::OK, "ok")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy")
        };
        return (status, Json(json!({"status": word})));
    }
    let model = s.models.default_engine();
    if reasons.is_empty() {
        (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "model": s.models.default_id(),
                "model_path": model.map(|m| m.model_path().display().to_string()),
            })),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "unhealthy", "reasons": reasons})),
        )
    }
}
