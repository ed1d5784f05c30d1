//! Server-wide counters that every component updates and the control plane
//! reads: sessions and why they ended, per-decode latency histograms (by
//! stage and kind) and real-time factor, decode timing totals, errors by
//! code.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::error::ErrorCode;
use crate::server::service::Transport;
use crate::server::session::timing::DecodePhases;
use crate::server::session::{DecodeTimings, SessionReport};

/// Latency buckets (seconds): 5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Real-time-factor buckets (inference time / audio time).
const RTF_BUCKETS: [f64; 11] = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0];

/// Partial or final of a live stream, or a piece of an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeKind {
    Partial,
    Final,
    Batch,
}

impl DecodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partial => "partial",
            Self::Final => "final",
            Self::Batch => "batch",
        }
    }
}

/// Labels of the decode latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
    pub kind: &'static str,
}

/// What a caller waits for, measured on the server from when the audio
/// concerned arrived to when the result was handed to the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamLatency {
    /// The utterance's last sample (the VAD's end, padding included) →
    /// its final.
    EndOfUtteranceToFinal,
    /// The client's flush (is_final chunk or closed stream) → the final
    /// of the utterance it closed.
    FlushToFinal,
    /// The utterance's first sample → its first partial.
    FirstPartial,
}

impl StreamLatency {
    pub const ALL: [Self; 3] = [
        Self::EndOfUtteranceToFinal,
        Self::FlushToFinal,
        Self::FirstPartial,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndOfUtteranceToFinal => "end_of_utterance_to_final",
            Self::FlushToFinal => "flush_to_final",
            Self::FirstPartial => "first_partial",
        }
    }
}

/// Labels of the stream latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MeasureLabels {
    pub measure: &'static str,
}

/// Percentiles of recent values of one measure, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Percentiles {
    pub count: usize,
    pub p50_sec: f64,
    pub p95_sec: f64,
    pub p99_sec: f64,
    pub max_sec: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (any order).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let q = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            count: n,
            p50_sec: q(0.5),
            p95_sec: q(0.95),
            p99_sec: q(0.99),
            max_sec: v[n - 1],
        }
    }
}

/// Labels of the real-time-factor histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn rtf_histogram() -> Histogram {
    Histogram::new(RTF_BUCKETS)
}

/// Shared counters (cheap atomics; short locks for the maps).
#[derive(Debug)]
pub struct ServerMetrics {
    pub sessions_started: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub sessions_client_gone: AtomicU64,
    /// Started sessions by transport (`grpc`, `websocket`, `rest`).
    started_by_transport: Mutex<BTreeMap<&'static str, u64>>,
    /// Ended sessions by reason: `completed`, `client_gone` or an error code.
    ended_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// Errors by code, since start.
    errors: Mutex<HashMap<ErrorCode, u64>>,
    /// Decode timing totals over every ended session.
    timings: Mutex<DecodeTimings>,
    /// Per-decode latency by stage and kind.
    pub decode_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// Per-decode real-time factor by kind.
    pub decode_rtf: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// The last [`RECENT_DECODES`] decodes, for live quantiles in
    /// `/metrics.json` (the dashboard) and the `--log-metrics` line.
    recent: Mutex<VecDeque<RecentDecode>>,
    /// What callers wait for, by measure.
    pub stream_latency: Family<MeasureLabels, Histogram, fn() -> Histogram>,
    /// The last [`RECENT_DECODES`] values of each measure.
    recent_latency: Mutex<HashMap<StreamLatency, VecDeque<f64>>>,
    /// The serving certificate's notAfter, Unix seconds (0 = no TLS).
    pub tls_not_after: AtomicI64,
    /// Certificates loaded again after a change or SIGHUP.
    pub tls_reloads: AtomicU64,
    /// Reloads that failed (the previous certificate stayed in service).
    pub tls_reload_failures: AtomicU64,
    /// Connections closed during the TLS handshake (plaintext clients,
    /// untrusted client certificates, timeouts).
    pub tls_handshake_failures: AtomicU64,
}

/// How many decodes the live quantiles look back over.
pub const RECENT_DECODES: usize = 512;

/// One decode as the live view remembers it.
#[derive(Debug, Clone, Copy)]
pub struct RecentDecode {
    pub kind: DecodeKind,
    pub total_sec: f64,
    pub inference_sec: f64,
    pub queue_wait_sec: f64,
    pub rtf: Option<f64>,
}

/// Quantiles over recent decodes of one kind (the dashboard reads them
/// back from `/metrics.json`, hence `Deserialize` with defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RecentStats {
    pub count: usize,
    pub total_p50_sec: f64,
    pub total_p95_sec: f64,
    pub total_max_sec: f64,
    pub inference_mean_sec: f64,
    pub queue_wait_mean_sec: f64,
    pub rtf_mean: Option<f64>,
    pub queue_wait_p95_sec: f64,
    pub inference_p50_sec: f64,
    pub inference_p95_sec: f64,
}

impl RecentStats {
    /// Summarises `decodes` (any order).
    pub fn of(decodes: &[RecentDecode]) -> Self {
        if decodes.is_empty() {
            return Self::default();
        }
        let n = decodes.len();
        let totals = Percentiles::of(decodes.iter().map(|d| d.total_sec));
        let inference = Percentiles::of(decodes.iter().map(|d| d.inference_sec));
        let mean = |f: fn(&RecentDecode) -> f64| decodes.iter().map(f).sum::<f64>() / n as f64;
        let rtfs: Vec<f64> = decodes.iter().filter_map(|d| d.rtf).collect();
        Self {
            count: n,
            total_p50_sec: totals.p50_sec,
            total_p95_sec: totals.p95_sec,
            total_max_sec: totals.max_sec,
            inference_mean_sec: mean(|d| d.inference_sec),
            queue_wait_mean_sec: mean(|d| d.queue_wait_sec),
            rtf_mean: (!rtfs.is_empty()).then(|| rtfs.iter().sum::<f64>() / rtfs.len() as f64),
            queue_wait_p95_sec: Percentiles::of(decodes.iter().map(|d| d.queue_wait_sec)).p95_sec,
            inference_p50_sec: inference.p50_sec,
            inference_p95_sec: inference.p95_sec,
        }
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            sessions_started: AtomicU64::new(0),
            started_by_transport: Mutex::default(),
            sessions_ended: AtomicU64::new(0),
            sessions_client_gone: AtomicU64::new(0),
            ended_by_reason: Mutex::default(),
            errors: Mutex::default(),
            timings: Mutex::default(),
            decode_seconds: Family::new_with_constructor(latency_histogram),
            decode_rtf: Family::new_with_constructor(rtf_histogram),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_DECODES)),
            stream_latency: Family::new_with_constructor(latency_histogram),
            recent_latency: Mutex::default(),
            tls_not_after: AtomicI64::new(0),
            tls_reloads: AtomicU64::new(0),
            tls_reload_failures: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
        }
    }
}

impl ServerMetrics {
    pub fn session_started(&self, transport: Transport) {
        self.sessions_started.fetch_add(1, Ordering::Relaxed);
        *self
            .started_by_transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(transport.as_str())
            .or_insert(0) += 1;
    }

    /// Sessions started since start, by transport (every transport listed).
    pub fn started_by_transport(&self) -> BTreeMap<String, u64> {
        let counts = self
            .started_by_transport
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Transport::ALL
            .iter()
            .map(|t| {
                let n = counts.get(t.as_str()).copied().unwrap_or(0);
                (t.as_str().to_string(), n)
            })
            .collect()
    }

    /// One decode whose result came back: its phases and the seconds of
    /// audio it covered.
    pub fn record_decode(&self, kind: DecodeKind, phases: &DecodePhases, audio_sec: f64) {
        let k = kind.as_str();
        for (stage, d) in [
            ("buffer_wait", phases.buffer_wait),
            ("queue_wait", phases.queue_wait),
            ("inference", phases.inference),
            ("emit", phases.emit),
            ("total", phases.total()),
        ] {
            self.decode_seconds
                .get_or_create(&StageLabels { stage, kind: k })
                .observe(d.as_secs_f64());
        }
        let rtf = (audio_sec > 0.0).then(|| phases.inference.as_secs_f64() / audio_sec);
        if let Some(rtf) = rtf {
            self.decode_rtf
                .get_or_create(&KindLabels { kind: k })
                .observe(rtf);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_DECODES {
            recent.pop_front();
        }
        recent.push_back(RecentDecode {
            kind,
            total_sec: phases.total().as_secs_f64(),
            inference_sec: phases.inference.as_secs_f64(),
            queue_wait_sec: phases.queue_wait.as_secs_f64(),
            rtf,
        });
    }

    /// One wait a caller saw (see [`StreamLatency`]).
    pub fn record_latency(&self, which: StreamLatency, waited: Duration) {
        let secs = waited.as_secs_f64();
        self.stream_latency
            .get_or_create(&MeasureLabels {
                measure: which.as_str(),
            })
            .observe(secs);
        let mut recent = self
            .recent_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let values = recent.entry(which).or_default();
        if values.len() == RECENT_DECODES {
            values.pop_front();
        }
        values.push_back(secs);
    }

    /// Percentiles over the recent values of `which`.
    pub fn latency(&self, which: StreamLatency) -> Percentiles {
        let recent = self
            .recent_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Percentiles::of(recent.get(&which).into_iter().flatten().copied())
    }

    /// Quantiles over the recent decodes of `kind`.
    pub fn recent(&self, kind: DecodeKind) -> RecentStats {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let of_kind: Vec<RecentDecode> =
            recent.iter().filter(|d| d.kind == kind).copied().collect();
        drop(recent);
        RecentStats::of(&of_kind)
    }

    pub fn session_ended(&self, report: &SessionReport) {
        self.sessions_ended.fetch_add(1, Ordering::Relaxed);
        if report.client_gone {
            self.sessions_client_gone.fetch_add(1, Ordering::Relaxed);
        }
        let reason = match &report.outcome {
            Ok(()) if report.client_gone => "client_gone",
            Ok(()) => "completed",
            Err(e) => e.code.as_str(),
        };
        *self
            .ended_by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_insert(0) += 1;
        if let Err(e) = &report.outcome {
            self.count_error(e.code);
        }
        let mut t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        t.buffer_wait += report.timings.buffer_wait;
        t.queue_wait += report.timings.queue_wait;
        t.inference += report.timings.inference;
        t.emit += report.timings.emit;
        t.count += report.timings.count;
    }

    pub fn count_error(&self, code: ErrorCode) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_insert(0) += 1;
    }

    /// Sessions streaming now.
    pub fn sessions_streaming(&self) -> u64 {
        self.sessions_started
            .load(Ordering::Relaxed)
            .saturating_sub(self.sessions_ended.load(Ordering::Relaxed))
    }

    /// Errors by code, sorted by code.
    pub fn errors(&self) -> Vec<(ErrorCode, u64)> {
        let map = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.iter().map(|(c, n)| (*c, *n)).collect();
        v.sort_by_key(|(c, _)| c.as_str());
        v
    }

    /// Ended sessions by reason (`completed`, `client_gone`, `ERRxxxx`).
    pub fn ended_by_reason(&self) -> Vec<(&'static str, u64)> {
        let map = self
            .ended_by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(r, n)| (*r, *n)).collect()
    }

    /// Decode timing totals of ended sessions.
    pub fn timings(&self) -> DecodeTimings {
        *self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mean inference time per decode so far.
    pub fn mean_inference(&self) -> Option<Duration> {
        let t = self.timings();
        (t.count > 0).then(|| t.inference / t.count as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(kind: DecodeKind, total: f64) -> RecentDecode {
        RecentDecode {
            kind,
            total_sec: total,
            inference_sec: total / 2.0,
            queue_wait_sec: 0.0,
            rtf: Some(0.1),
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let d: Vec<_> = (1..=20)
            .map(|i| decode(DecodeKind::Final, f64::from(i)))
            .collect();
        let s = RecentStats::of(&d);
        assert_eq!(s.count, 20);
        assert_eq!(s.total_p50_sec, 10.0);
        assert_eq!(s.total_p95_sec, 19.0);
        assert_eq!(s.total_max_sec, 20.0);
        assert_eq!(s.inference_mean_sec, 5.25);
        assert_eq!(RecentStats::of(&[]), RecentStats::default());
    }

    #[test]
    fn stream_latencies_keep_recent_percentiles() {
        let m = ServerMetrics::default();
        for ms in 1..=100 {
            m.record_latency(
                StreamLatency::EndOfUtteranceToFinal,
                Duration::from_millis(ms * 10),
            );
        }
        let p = m.latency(StreamLatency::EndOfUtteranceToFinal);
        assert_eq!(p.count, 100);
        assert!((p.p50_sec - 0.5).abs() < 1e-9 && (p.p95_sec - 0.95).abs() < 1e-9);
        assert_eq!(
            m.latency(StreamLatency::FirstPartial),
            Percentiles::default()
        );
    }

    #[test]
    fn recording_feeds_histograms_and_the_live_view() {
        let m = ServerMetrics::default();
        let p = DecodePhases {
            inference: Duration::from_millis(500),
            ..Default::default()
        };
        m.record_decode(DecodeKind::Final, &p, 2.0);
        m.record_decode(DecodeKind::Partial, &p, 0.0);
        let f = m.recent(DecodeKind::Final);
        assert_eq!(f.count, 1);
        assert_eq!(f.rtf_mean, Some(0.25));
        assert_eq!(m.recent(DecodeKind::Partial).rtf_mean, None);
        for _ in 0..RECENT_DECODES + 5 {
            m.record_decode(DecodeKind::Partial, &p, 1.0);
        }
        assert_eq!(
            m.recent(DecodeKind::Partial).count + m.recent(DecodeKind::Final).count,
            RECENT_DECODES
        );
    }
}
