//! One reading of every server counter, taken in one place. `/metrics.json`
//! is this type serialised, `/metrics` encodes it (plus the histograms,
//! which are distributions rather than readings), the `--log-metrics` line
//! picks from it, and `stt dashboard` reads `/metrics.json` back into it.
//! A counter added here reaches every exporter; none walks the live state
//! on its own.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::metrics::{
    DecodeKind, Percentiles, RecentStats, ServerMetrics, StreamLatency, RECENT_DECODES,
};
use super::model_registry::ModelRegistry;
use super::session::{Registry, SessionDeps};

/// Everything `take` reads.
pub struct Sources<'a> {
    pub metrics: &'a ServerMetrics,
    pub registry: &'a Registry,
    pub deps: &'a SessionDeps,
    pub models: &'a ModelRegistry,
    /// `metrics.expose_api_key_sessions`.
    pub expose_api_keys: bool,
}

/// `/metrics.json`. Every field but `active_sessions` may be missing when
/// read back (an older or newer server); `active_sessions` is required so
/// that some other JSON at the URL is reported as such, not as zeros.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub active_sessions: u64,
    /// Sessions past their first chunk (absent from older servers).
    #[serde(default)]
    pub streaming_sessions: Option<u64>,
    #[serde(default)]
    pub sessions_started_total: u64,
    /// Started sessions by transport: `grpc`, `websocket`, `rest`.
    #[serde(default)]
    pub sessions_started_by_transport: BTreeMap<String, u64>,
    #[serde(default)]
    pub sessions_ended_total: u64,
    #[serde(default)]
    pub client_disconnects_total: u64,
    #[serde(default)]
    pub decode: Decode,
    /// Inference seconds per audio second, over the server's life.
    #[serde(default)]
    pub rtf: Option<f64>,
    #[serde(default)]
    pub audio_sec_total: f64,
    #[serde(default)]
    pub vad: Vad,
    #[serde(default)]
    pub results: Results,
    #[serde(default)]
    pub latency: Latency,
    #[serde(default)]
    pub sessions_ended_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    pub models: Vec<Model>,
    #[serde(default)]
    pub capture: Option<Capture>,
    #[serde(default)]
    pub buffer_bytes: u64,
    /// Errors returned to clients, by code.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Present only with `metrics.expose_api_key_sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sessions_by_api_key: Option<BTreeMap<String, u64>>,
}

/// `decode`: cumulative phase totals (ended sessions), the live queue and
/// the scheduler's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Decode {
    pub count: u64,
    pub buffer_wait_sec_total: f64,
    pub queue_wait_sec_total: f64,
    pub inference_sec_total: f64,
    pub response_emit_sec_total: f64,
    pub total_sec_total: f64,
    pub mean_inference_sec: Option<f64>,
    pub pending: u64,
    pub workers_busy: u64,
    pub slots: u64,
    pub partials_dropped_total: u64,
    pub partials_preempted_total: u64,
    pub finals_queue_timeouts_total: u64,
    pub partial_cadence: Cadence,
    pub guards: Option<Guards>,
}

/// The adaptive partial cadence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cadence {
    /// Multiplier on the configured interval now; 0 = finals only.
    pub factor: u64,
    pub sessions_widened: u64,
    pub widenings_total: u64,
}

/// Loop and hallucination guards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guards {
    pub rejected_total: BTreeMap<String, u64>,
    pub dropped_total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vad {
    pub utterances_total: u64,
    pub active_utterances: u64,
    pub quiet_utterances_total: u64,
    pub pool_in_use: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    pub partials_total: u64,
    pub finals_total: u64,
}

/// `latency`: quantiles over the server's recent decodes per kind, and
/// percentiles of what callers waited for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub window_decodes: Option<u64>,
    pub partial: RecentStats,
    #[serde(rename = "final")]
    pub final_: RecentStats,
    pub end_of_utterance_to_final: Percentiles,
    pub flush_to_final: Percentiles,
    pub first_partial: Percentiles,
}

/// One loaded (or loading, or failed) model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Model {
    pub id: String,
    pub path: String,
    /// `loading`, `ready`, `unloading` or `failed`.
    pub status: String,
    pub default: bool,
    pub sessions: u64,
    pub multilingual: Option<bool>,
    pub engine: String,
    pub workers: Option<u64>,
    pub threads: Option<u64>,
    pub since_unix: u64,
    pub load_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capture {
    pub open_files: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub dropped_chunks_total: u64,
    pub write_errors_total: u64,
    pub retention_removed_files_total: u64,
}

/// Rounds to microseconds, so the JSON stays readable.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl MetricsSnapshot {
    /// Reads every counter now.
    pub fn take(src: &Sources<'_>) -> Self {
        let m = src.metrics;
        let t = m.timings();
        let stats = &src.deps.stats;
        let scheduler = &src.deps.scheduler;
        let cadence = scheduler.cadence();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let audio_sec = load(&stats.audio_samples) as f64 / 16_000.0;
        Self {
            active_sessions: src.registry.active() as u64,
            streaming_sessions: Some(m.sessions_streaming()),
            sessions_started_total: load(&m.sessions_started),
            sessions_started_by_transport: m.started_by_transport(),
            sessions_ended_total: load(&m.sessions_ended),
            client_disconnects_total: load(&m.sessions_client_gone),
            decode: Decode {
                count: t.count,
                buffer_wait_sec_total: round6(t.buffer_wait.as_secs_f64()),
                queue_wait_sec_total: round6(t.queue_wait.as_secs_f64()),
                inference_sec_total: round6(t.inference.as_secs_f64()),
                response_emit_sec_total: round6(t.emit.as_secs_f64()),
                total_sec_total: round6(t.total().as_secs_f64()),
                mean_inference_sec: m.mean_inference().map(|d| round6(d.as_secs_f64())),
                pending: scheduler.pending() as u64,
                workers_busy: src.models.busy() as u64,
                slots: src.models.decode_slots() as u64,
                partials_dropped_total: scheduler.partials_dropped(),
                partials_preempted_total: src.models.partials_preempted(),
                finals_queue_timeouts_total: scheduler.finals_timed_out(),
                partial_cadence: Cadence {
                    factor: cadence.factor(),
                    sessions_widened: cadence.widened_sessions(),
                    widenings_total: cadence.widenings(),
                },
                guards: src.models.guards().map(|g| Guards {
                    rejected_total: g
                        .by_reason()
                        .into_iter()
                        .map(|(r, n)| (r.as_str().to_string(), n))
                        .collect(),
                    dropped_total: g.dropped(),
                }),
            },
            rtf: (audio_sec > 0.0).then(|| round6(t.inference.as_secs_f64() / audio_sec)),
            audio_sec_total: round6(audio_sec),
            vad: Vad {
                utterances_total: load(&stats.utterances),
                active_utterances: load(&stats.active_utterances),
                quiet_utterances_total: load(&stats.quiet_utterances),
                pool_in_use: src.deps.vad.in_use() as u64,
            },
            results: Results {
                partials_total: load(&stats.partials_sent),
                finals_total: load(&stats.finals_sent),
            },
            latency: Latency {
                window_decodes: Some(RECENT_DECODES as u64),
                partial: m.recent(DecodeKind::Partial),
                final_: m.recent(DecodeKind::Final),
                end_of_utterance_to_final: m.latency(StreamLatency::EndOfUtteranceToFinal),
                flush_to_final: m.latency(StreamLatency::FlushToFinal),
                first_partial: m.latency(StreamLatency::FirstPartial),
            },
            sessions_ended_by_reason: m
                .ended_by_reason()
                .into_iter()
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            models: src
                .models
                .list()
                .into_iter()
                .map(|i| Model {
                    id: i.id,
                    path: i.path,
                    status: i.status.to_string(),
                    default: i.default,
                    sessions: i.sessions as u64,
                    multilingual: i.multilingual,
                    engine: i.engine.to_string(),
                    workers: i.workers.map(|n| n as u64),
                    threads: i.threads.map(|n| n as u64),
                    since_unix: i.since_unix,
                    load_ms: i.load_ms,
                    error: i.error,
                })
                .collect(),
            capture: src.deps.capture.as_ref().map(|c| Capture {
                open_files: c.open_captures() as u64,
                files_total: c.files_written(),
                bytes_total: c.bytes_written(),
                dropped_chunks_total: c.dropped_chunks(),
                write_errors_total: c.write_errors(),
                retention_removed_files_total: c.files_removed(),
            }),
            buffer_bytes: src.deps.budget.used(),
            errors: m
                .errors()
                .into_iter()
                .map(|(code, n)| (code.as_str().to_string(), n))
                .collect(),
            active_sessions_by_api_key: src.expose_api_keys.then(|| {
                src.registry
                    .by_api_key()
                    .into_iter()
                    .map(|(k, n)| (k, n as u64))
                    .collect()
            }),
        }
    }
}
