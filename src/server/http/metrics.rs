//! `GET /metrics.json`: the in-process counters as JSON — sessions, decode
//! timing aggregates, VAD activity, scheduler drops and errors by code.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::server::metrics::DecodeKind;

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

pub async fn metrics_json(State(s): State<AppState>) -> Json<Value> {
    let m = &s.metrics;
    let t = m.timings();
    let stats = &s.deps.stats;
    let audio_sec = stats.audio_samples.load(Ordering::Relaxed) as f64 / 16_000.0;
    let errors: Map<String, Value> = m
        .errors()
        .into_iter()
        .map(|(code, n)| (code.as_str().to_string(), json!(n)))
        .collect();
    let mut out = json!({
        "active_sessions": s.registry.active(),
        "streaming_sessions": m.sessions_streaming(),
        "sessions_started_total": m.sessions_started.load(Ordering::Relaxed),
        "sessions_ended_total": m.sessions_ended.load(Ordering::Relaxed),
        "client_disconnects_total": m.sessions_client_gone.load(Ordering::Relaxed),
        "decode": {
            "count": t.count,
            "buffer_wait_sec_total": round6(t.buffer_wait.as_secs_f64()),
            "queue_wait_sec_total": round6(t.queue_wait.as_secs_f64()),
            "inference_sec_total": round6(t.inference.as_secs_f64()),
            "response_emit_sec_total": round6(t.emit.as_secs_f64()),
            "total_sec_total": round6(t.total().as_secs_f64()),
            "mean_inference_sec": m.mean_inference().map(|d| round6(d.as_secs_f64())),
            "pending": s.deps.scheduler.pending(),
            "workers_busy": s.models.busy(),
            "slots": s.models.decode_slots(),
            "partials_dropped_total": s.deps.scheduler.partials_dropped(),
            "finals_queue_timeouts_total": s.deps.scheduler.finals_timed_out(),
            "guards": s.models.guards().map(|g| {
                let by: Map<String, Value> = g
                    .by_reason()
                    .into_iter()
                    .map(|(r, n)| (r.as_str().to_string(), json!(n)))
                    .collect();
                json!({ "rejected_total": by, "dropped_total": g.dropped() })
            }),
        },
        "rtf": (audio_sec > 0.0).then(|| round6(t.inference.as_secs_f64() / audio_sec)),
        "audio_sec_total": round6(audio_sec),
        "vad": {
            "utterances_total": stats.utterances.load(Ordering::Relaxed),
            "active_utterances": stats.active_utterances.load(Ordering::Relaxed),
            "quiet_utterances_total": stats.quiet_utterances.load(Ordering::Relaxed),
            "pool_in_use": s.deps.vad.in_use(),
        },
        "results": {
            "partials_total": stats.partials_sent.load(Ordering::Relaxed),
            "finals_total": stats.finals_sent.load(Ordering::Relaxed),
        },
        "latency": {
            "window_decodes": crate::server::metrics::RECENT_DECODES,
            "partial": m.recent(DecodeKind::Partial),
            "final": m.recent(DecodeKind::Final),
        },
        "sessions_ended_by_reason": m
            .ended_by_reason()
            .into_iter()
            .map(|(r, n)| (r.to_string(), json!(n)))
            .collect::<Map<String, Value>>(),
        "models": s.models.list(),
        "capture": s.deps.capture.as_ref().map(|c| json!({
            "open_files": c.open_captures(),
            "files_total": c.files_written(),
            "bytes_total": c.bytes_written(),
            "dropped_chunks_total": c.dropped_chunks(),
            "write_errors_total": c.write_errors(),
            "retention_removed_files_total": c.files_removed(),
        })),
        "buffer_bytes": s.deps.budget.used(),
        "errors": errors,
    });
    if s.expose_api_keys {
        out["active_sessions_by_api_key"] = json!(s.registry.by_api_key());
    }
    Json(out)
}
