//! `GET /metrics`: Prometheus text exposition produced by `prometheus-client`
//! from the same [`MetricsSnapshot`] `/metrics.json` serialises, taken at
//! scrape time, plus the latency histograms.

use std::fmt::Write as _;

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
use crate::error::ErrorCode;
use crate::server::snapshot::MetricsSnapshot;

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
        let state = &self.0;
        let s = MetricsSnapshot::take(&state.sources());
        let d = &s.decode;
        let e = &mut enc;
        gauge(
            e,
            "stt_active_sessions",
            "Sessions registered now",
            s.active_sessions as i64,
        )?;
        counter(
            e,
            "stt_sessions_started",
            "Streams started",
            s.sessions_started_total,
        )?;
        labelled_counters(
            e,
            "stt_sessions_by_transport",
            "Streams started, by transport: grpc, websocket or rest",
            "transport",
            &s.sessions_started_by_transport,
        )?;
        labelled_counters(
            e,
            "stt_sessions_ended",
            "Streams ended, by reason: completed, client_gone or the error code",
            "reason",
            &s.sessions_ended_by_reason,
        )?;
        counter(
            e,
            "stt_client_disconnects",
            "Streams whose client vanished",
            s.client_disconnects_total,
        )?;
        counter(
            e,
            "stt_decodes",
            "Decodes completed (ended sessions)",
            d.count,
        )?;
        counter_f(
            e,
            "stt_decode_buffer_wait_seconds",
            "Audio wait before decodes were scheduled",
            d.buffer_wait_sec_total,
        )?;
        counter_f(
            e,
            "stt_decode_queue_wait_seconds",
            "Wait for a decode worker",
            d.queue_wait_sec_total,
        )?;
        counter_f(
            e,
            "stt_decode_inference_seconds",
            "Time in the decode engine",
            d.inference_sec_total,
        )?;
        counter_f(
            e,
            "stt_decode_response_emit_seconds",
            "Time handing results to clients",
            d.response_emit_sec_total,
        )?;
        counter_f(
            e,
            "stt_audio_seconds",
            "Session audio received",
            s.audio_sec_total,
        )?;
        gauge(
            e,
            "stt_decodes_pending",
            "Decodes queued or running",
            d.pending as i64,
        )?;
        gauge(
            e,
            "stt_workers_busy",
            "Decode workers decoding now",
            d.workers_busy as i64,
        )?;
        gauge(
            e,
            "stt_decode_slots",
            "Decodes that may run at once across all models (the shared CPU gate)",
            d.slots as i64,
        )?;
        if let Some(guards) = &d.guards {
            labelled_counters(
                e,
                "stt_decode_guard",
                "Decode hypotheses rejected by a loop or hallucination guard, by reason",
                "reason",
                &guards.rejected_total,
            )?;
            counter(
                e,
                "stt_decode_guard_dropped",
                "Decodes whose retry failed a guard too, so their text was dropped",
                guards.dropped_total,
            )?;
        }
        counter(
            e,
            "stt_partials_dropped",
            "Partial decodes dropped: no slot, or stale in the queue",
            d.partials_dropped_total,
        )?;
        counter(
            e,
            "stt_partials_preempted",
            "Running partials cancelled so that a final could run",
            d.partials_preempted_total,
        )?;
        counter(
            e,
            "stt_finals_queue_timeouts",
            "Finals that found no decode slot in time",
            d.finals_queue_timeouts_total,
        )?;
        let cadence = &d.partial_cadence;
        gauge(
            e,
            "stt_partial_cadence_factor",
            "Multiplier on partial_decode_interval_sec in force now (0 = finals only)",
            cadence.factor as i64,
        )?;
        gauge(
            e,
            "stt_sessions_widened",
            "Sessions whose partial cadence is widened now",
            cadence.sessions_widened as i64,
        )?;
        counter(
            e,
            "stt_partial_cadence_widenings",
            "Times the partial cadence widened because finals waited",
            cadence.widenings_total,
        )?;
        counter(
            e,
            "stt_vad_utterances",
            "Utterances detected",
            s.vad.utterances_total,
        )?;
        gauge(
            e,
            "stt_vad_active_utterances",
            "Utterances in progress",
            s.vad.active_utterances as i64,
        )?;
        counter(
            e,
            "stt_partials_sent",
            "Partial results sent",
            s.results.partials_total,
        )?;
        counter(
            e,
            "stt_finals_sent",
            "Final results sent",
            s.results.finals_total,
        )?;
        gauge(
            e,
            "stt_buffer_bytes",
            "Audio buffered across sessions",
            s.buffer_bytes as i64,
        )?;
        if !s.errors.is_empty() {
            let mut family = e.encode_descriptor(
                "stt_errors",
                "Errors returned to clients, by code, gRPC status and HTTP status",
                None,
                MetricType::Counter,
            )?;
            for (code, n) in &s.errors {
                let Some(code) = ErrorCode::parse(code) else {
                    continue;
                };
                let grpc = format!("{:?}", code.grpc_code());
                let http = code.http_status().to_string();
                let labels = [
                    ("code", code.as_str()),
                    ("status", grpc.as_str()),
                    ("http_status", http.as_str()),
                ];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        // Distributions, not readings: encoded from the histograms themselves.
        let m = &state.metrics;
        m.decode_seconds.encode(e.encode_descriptor(
            "stt_decode_duration",
            "Per-decode latency by stage (buffer_wait, queue_wait, inference, emit, total) and kind (partial, final)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        m.stream_latency.encode(e.encode_descriptor(
            "stt_stream_latency",
            "What callers wait for, by measure: end_of_utterance_to_final, flush_to_final, first_partial",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        m.decode_rtf.encode(e.encode_descriptor(
            "stt_decode_rtf",
            "Per-decode real-time factor (inference time / audio time) by kind",
            None,
            MetricType::Histogram,
        )?)?;
        gauge(
            e,
            "stt_models_loaded",
            "Whisper models ready to serve sessions",
            s.models.iter().filter(|m| m.status == "ready").count() as i64,
        )?;
        if let Some(c) = &s.capture {
            counter(
                e,
                "stt_audio_capture_dropped_chunks",
                "Captured audio chunks dropped because a capture queue was full",
                c.dropped_chunks_total,
            )?;
            counter(
                e,
                "stt_audio_capture_files",
                "Capture files completed",
                c.files_total,
            )?;
            let b = ConstCounter::new(c.bytes_total);
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
                c.write_errors_total,
            )?;
            counter(
                e,
                "stt_audio_capture_retention_removed_files",
                "Capture files removed by retention",
                c.retention_removed_files_total,
            )?;
        }
        if let Some(keys) = s
            .active_sessions_by_api_key
            .as_ref()
            .filter(|k| !k.is_empty())
        {
            let mut family = e.encode_descriptor(
                "stt_active_sessions_by_api",
                "Sessions registered now, by API key",
                None,
                MetricType::Gauge,
            )?;
            for (key, n) in keys {
                let labels = [("api_key", key.as_str())];
                ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        tls(e, &state.metrics)
    }
}

/// TLS health: seconds left on the certificate (computed at scrape time, so
/// an alert on `< 14 days` needs no arithmetic), reloads and failed
/// handshakes. Absent when TLS is off.
fn tls(e: &mut DescriptorEncoder, m: &crate::server::metrics::ServerMetrics) -> std::fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    let not_after = m.tls_not_after.load(Relaxed);
    if not_after == 0 {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    gauge(
        e,
        "stt_tls_cert_expiry_seconds",
        "Seconds until the serving TLS certificate expires (negative: expired)",
        not_after - now,
    )?;
    counter(
        e,
        "stt_tls_reloads",
        "TLS certificates loaded again after a change or SIGHUP",
        m.tls_reloads.load(Relaxed),
    )?;
    counter(
        e,
        "stt_tls_reload_failures",
        "TLS reloads that failed; the previous certificate stayed in service",
        m.tls_reload_failures.load(Relaxed),
    )?;
    counter(
        e,
        "stt_tls_handshake_failures",
        "Connections closed during the TLS handshake",
        m.tls_handshake_failures.load(Relaxed),
    )
}

/// A counter family with one label, one sample per entry of `values`.
fn labelled_counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &std::collections::BTreeMap<String, u64>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(family.encode_family(&[(label, value.as_str())])?)?;
    }
    Ok(())
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
