//! `GET /health`: 200 when gRPC is serving, the default model is loaded and
//! recent decodes are healthy by the `health.*` ratios; otherwise 500 with
//! the list of reasons.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn health(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut reasons = Vec::new();
    if !s.serving.load(Ordering::Acquire) {
        reasons.push("gRPC is not serving (starting or shutting down)".to_string());
    }
    let model = s.models.default_engine();
    if model.is_none() {
        reasons.push("the default Whisper model is not loaded".to_string());
    }
    if let Err(why) = s.decode_health.verdict() {
        reasons.push(why);
    }
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
