//! `GET /metrics`: Prometheus text exposition produced by `prometheus-client`
//! from the same in-process state `/metrics.json` reads — a collector that
//! snapshots the counters at scrape time, so nothing is counted twice.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use super::AppState;

/// Reads the server's counters on every scrape.
#[derive(Clone)]
pub struct Snapshot(pub AppState);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn counter_f(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let m = &s.metrics;
        let t = m.timings();
        let stats = &s.deps.stats;
        let e = &mut enc;
        gauge(
            e,
            "stt_active_sessions",
            "Sessions registered now",
            s.registry.active() as i64,
        )?;
        counter(
            e,
            "stt_sessions_started",
            "Streams started",
            m.sessions_started.load(Ordering::Relaxed),
        )?;
        {
            let mut family = e.encode_descriptor(
                "stt_sessions_ended",
                "Streams ended, by reason: completed, client_gone or the error code",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in m.ended_by_reason() {
                ConstCounter::new(n).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(
            e,
            "stt_client_disconnects",
            "Streams whose client vanished",
            m.sessions_client_gone.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "stt_decodes",
            "Decodes completed (ended sessions)",
            t.count,
        )?;
        counter_f(
            e,
            "stt_decode_buffer_wait_seconds",
            "Audio wait before decodes were scheduled",
            t.buffer_wait.as_secs_f64(),
        )?;
        counter_f(
            e,
            "stt_decode_queue_wait_seconds",
            "Wait for a decode worker",
            t.queue_wait.as_secs_f64(),
        )?;
        counter_f(
            e,
            "stt_decode_inference_seconds",
            "Time in whisper.cpp",
            t.inference.as_secs_f64(),
        )?;
        counter_f(
            e,
            "stt_decode_response_emit_seconds",
            "Time handing results to clients",
            t.emit.as_secs_f64(),
        )?;
        counter_f(
            e,
            "stt_audio_seconds",
            "Session audio received",
            stats.audio_samples.load(Ordering::Relaxed) as f64 / 16_000.0,
        )?;
        gauge(
            e,
            "stt_decodes_pending",
            "Decodes queued or running",
            s.deps.scheduler.pending() as i64,
        )?;
        gauge(
            e,
            "stt_workers_busy",
            "Whisper workers decoding now",
            s.models.busy() as i64,
        )?;
        gauge(
            e,
            "stt_decode_slots",
            "Decodes that may run at once across all models (the shared CPU gate)",
            s.models.decode_slots() as i64,
        )?;
        if let Some(guards) = s.models.guards() {
            let mut family = e.encode_descriptor(
                "stt_decode_guard",
                "Decode hypotheses rejected by a loop or hallucination guard, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in guards.by_reason() {
                ConstCounter::new(n)
                    .encode(family.encode_family(&[("reason", reason.as_str())])?)?;
            }
            counter(
                e,
                "stt_decode_guard_dropped",
                "Decodes whose retry failed a guard too, so their text was dropped",
                guards.dropped(),
            )?;
        }
        counter(
            e,
            "stt_partials_dropped",
            "Partial decodes dropped for lack of a slot",
            s.deps.scheduler.partials_dropped(),
        )?;
        counter(
            e,
            "stt_finals_queue_timeouts",
            "Finals that found no decode slot in time",
            s.deps.scheduler.finals_timed_out(),
        )?;
        counter(
            e,
            "stt_vad_utterances",
            "Utterances detected",
            stats.utterances.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "stt_vad_active_utterances",
            "Utterances in progress",
            stats.active_utterances.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            e,
            "stt_partials_sent",
            "Partial results sent",
            stats.partials_sent.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "stt_finals_sent",
            "Final results sent",
            stats.finals_sent.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "stt_buffer_bytes",
            "Audio buffered across sessions",
            s.deps.budget.used() as i64,
        )?;
        let errors = m.errors();
        if !errors.is_empty() {
            let mut family = e.encode_descriptor(
                "stt_errors",
                "Errors returned to clients, by code, gRPC status and HTTP status",
                None,
                MetricType::Counter,
            )?;
            for (code, n) in errors {
                let grpc = format!("{:?}", code.grpc_code());
                let http = code.http_status().to_string();
                let labels = [
                    ("code", code.as_str()),
                    ("status", grpc.as_str()),
                    ("http_status", http.as_str()),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        m.decode_seconds.encode(e.encode_descriptor(
            "stt_decode_duration",
            "Per-decode latency by stage (buffer_wait, queue_wait, inference, emit, total) and kind (partial, final)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        m.decode_rtf.encode(e.encode_descriptor(
            "stt_decode_rtf",
            "Per-decode real-time factor (inference time / audio time) by kind",
            None,
            MetricType::Histogram,
        )?)?;
        let models = s.models.list();
        gauge(
            e,
            "stt_models_loaded",
            "Whisper models ready to serve sessions",
            models.iter().filter(|m| m.status == "ready").count() as i64,
        )?;
        if let Some(c) = &s.deps.capture {
            counter(
                e,
                "stt_audio_capture_dropped_chunks",
                "Captured audio chunks dropped because a capture queue was full",
                c.dropped_chunks(),
            )?;
            counter(
                e,
                "stt_audio_capture_files",
                "Capture files completed",
                c.files_written(),
            )?;
            let b = ConstCounter::new(c.bytes_written());
            b.encode(e.encode_descriptor(
                "stt_audio_capture",
                "Audio bytes written to capture files",
                Some(&Unit::Bytes),
                b.metric_type(),
            )?)?;
            counter(
                e,
                "stt_audio_capture_write_errors",
                "Capture files that could not be written completely",
                c.write_errors(),
            )?;
            counter(
                e,
                "stt_audio_capture_retention_removed_files",
                "Capture files removed by retention",
                c.files_removed(),
            )?;
        }
        if s.expose_api_keys {
            let keys = s.registry.by_api_key();
            if !keys.is_empty() {
                let mut family = e.encode_descriptor(
                    "stt_active_sessions_by_api",
                    "Sessions registered now, by API key",
                    None,
                    MetricType::Gauge,
                )?;
                for (key, n) in keys {
                    let labels = [("api_key", key.as_str())];
                    ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

pub async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(s)));
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => {
            let mut msg = String::new();
            let _ = write!(
                msg,
                "{{\"code\":\"ERR3002\",\"message\":\"metrics encoding failed\"}}"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                msg,
            )
        }
    }
}
