//! `GET /metrics.json`: one [`MetricsSnapshot`] as JSON — sessions, decode
//! timing aggregates and recent percentiles, what callers waited for, VAD
//! activity, the scheduler's state and errors by code.

use axum::extract::State;
use axum::Json;

use super::AppState;
use crate::server::snapshot::MetricsSnapshot;

pub async fn metrics_json(State(s): State<AppState>) -> Json<MetricsSnapshot> {
    Json(MetricsSnapshot::take(&s.sources()))
}
