//! What the dashboard knows: the last parsed `/metrics.json` and `/system`
//! snapshots, the outcome of the last poll and a bounded history per series
//! for the sparklines. Pure: no I/O, no clocks — the poller hands in
//! [`Poll`]s and the views read [`State`].

use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;

/// Samples kept per series: wider than any sparkline a terminal shows.
pub const HISTORY: usize = 240;

// === /metrics.json ===

/// `/metrics.json` is the server's own snapshot type, read back: what the
/// server writes and what the dashboard reads cannot drift apart.
pub use crate::server::metrics::RecentStats as Recent;
pub use crate::server::snapshot::{
    Capture, Decode, Latency, MetricsSnapshot as Metrics, Model, Results, Vad,
};

// === /system ===

/// `/system`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct System {
    /// Null when the server could not read its own process.
    pub process: Option<Process>,
    pub host: Host,
    pub gpu: Gpu,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Process {
    pub pid: Option<u32>,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Host {
    pub cpus: u64,
    pub cpu_percent: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub load_average: LoadAverage,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// `gpu`: off unless the server runs with `STT_ENABLE_GPU_METRICS=1`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gpu {
    pub enabled: bool,
    pub available: Option<bool>,
    pub reason: Option<String>,
    pub devices: Vec<GpuDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GpuDevice {
    pub index: u64,
    pub name: Option<String>,
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_c: Option<f64>,
    pub power_watts: Option<f64>,
    pub error: Option<String>,
}

/// Parses a `/metrics.json` body.
pub fn parse_metrics(body: &str) -> Result<Metrics, String> {
    serde_json::from_str(body).map_err(|e| format!("not an stt /metrics.json: {e}"))
}

/// Parses a `/system` body.
pub fn parse_system(body: &str) -> Result<System, String> {
    serde_json::from_str(body).map_err(|e| format!("not an stt /system: {e}"))
}

// === polls and history ===

/// One round of polling: each endpoint answered with a parsed body or says
/// why not (unreachable, HTTP error, unparseable).
#[derive(Debug, Clone)]
pub struct Poll {
    pub metrics: Result<Metrics, String>,
    pub system: Result<System, String>,
}

/// Every series the sparklines draw. Stage means are per poll interval:
/// the growth of a phase total divided by the growth of the decode count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    ActiveSessions,
    FinalP50,
    FinalP95,
    PartialP50,
    PartialP95,
    BufferWait,
    QueueWait,
    Inference,
    Emit,
    Total,
    Rtf,
    /// Partials dropped during the interval.
    PartialsDropped,
    ActiveUtterances,
    ProcessCpu,
    HostCpu,
    RssBytes,
}

/// A bounded ring of samples, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ring(VecDeque<f64>);

impl Ring {
    pub fn push(&mut self, v: f64) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn last(&self) -> Option<f64> {
        self.0.back().copied()
    }

    /// The newest `n` samples, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().skip(self.0.len().saturating_sub(n)).copied()
    }
}

/// Everything the views draw.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// What is being watched (the metrics URL), for the header.
    pub source: String,
    /// The last good `/metrics.json`, kept while the server is unreachable.
    pub metrics: Option<Metrics>,
    /// The last good `/system`.
    pub system: Option<System>,
    /// Why the last `/metrics.json` poll failed; `None` once one succeeds.
    pub metrics_error: Option<String>,
    /// Why the last `/system` poll failed.
    pub system_error: Option<String>,
    /// Failed `/metrics.json` polls in a row.
    pub failures_in_a_row: u64,
    pub polls: u64,
    /// Set by `p`: polls that arrive are ignored, so the screen holds still.
    pub paused: bool,
    pub history: BTreeMap<Series, Ring>,
}

impl State {
    /// Folds one poll in: replaces the snapshots that came back, records the
    /// errors of those that did not and extends the history.
    pub fn apply(&mut self, poll: Poll) {
        if self.paused {
            return;
        }
        self.polls += 1;
        match poll.metrics {
            Ok(m) => {
                self.record_metrics(&m);
                self.metrics = Some(m);
                self.metrics_error = None;
                self.failures_in_a_row = 0;
            }
            Err(e) => {
                self.metrics_error = Some(e);
                self.failures_in_a_row += 1;
            }
        }
        match poll.system {
            Ok(s) => {
                if let Some(p) = &s.process {
                    self.push(Series::ProcessCpu, p.cpu_percent);
                    self.push(Series::RssBytes, p.rss_bytes as f64);
                }
                self.push(Series::HostCpu, s.host.cpu_percent);
                self.system = Some(s);
                self.system_error = None;
            }
            Err(e) => self.system_error = Some(e),
        }
    }

    /// True when the last `/metrics.json` poll failed.
    pub fn unreachable(&self) -> bool {
        self.metrics_error.is_some()
    }

    pub fn series(&self, s: Series) -> Option<&Ring> {
        self.history.get(&s)
    }

    fn push(&mut self, s: Series, v: f64) {
        // A NaN or infinity would poison the sparkline's scale.
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        self.history.entry(s).or_default().push(v);
    }

    fn record_metrics(&mut self, m: &Metrics) {
        self.push(Series::ActiveSessions, m.active_sessions as f64);
        self.push(Series::FinalP50, m.latency.final_.total_p50_sec);
        self.push(Series::FinalP95, m.latency.final_.total_p95_sec);
        self.push(Series::PartialP50, m.latency.partial.total_p50_sec);
        self.push(Series::PartialP95, m.latency.partial.total_p95_sec);
        self.push(Series::ActiveUtterances, m.vad.active_utterances as f64);
        self.push(Series::Rtf, m.rtf.unwrap_or(0.0));
        // Interval figures need the previous snapshot; a counter that went
        // down means the server restarted, so that interval counts as empty.
        let prev = self.metrics.as_ref();
        let dropped = prev.map_or(0, |p| {
            m.decode
                .partials_dropped_total
                .saturating_sub(p.decode.partials_dropped_total)
        });
        let d = &m.decode;
        let means = match prev.map(|p| &p.decode) {
            Some(p) if d.count > p.count => {
                let n = (d.count - p.count) as f64;
                let mean = |now: f64, before: f64| (now - before).max(0.0) / n;
                [
                    mean(d.buffer_wait_sec_total, p.buffer_wait_sec_total),
                    mean(d.queue_wait_sec_total, p.queue_wait_sec_total),
                    mean(d.inference_sec_total, p.inference_sec_total),
                    mean(d.response_emit_sec_total, p.response_emit_sec_total),
                    mean(d.total_sec_total, p.total_sec_total),
                ]
            }
            _ => [0.0; 5],
        };
        self.push(Series::PartialsDropped, dropped as f64);
        for (s, v) in STAGES.iter().zip(means) {
            self.push(s.1, v);
        }
    }
}

/// The decode stages with their labels, in pipeline order.
pub const STAGES: [(&str, Series); 5] = [
    ("buffer wait", Series::BufferWait),
    ("queue wait", Series::QueueWait),
    ("inference", Series::Inference),
    ("emit", Series::Emit),
    ("total", Series::Total),
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `/metrics.json` as a busy server writes it.
    pub const METRICS: &str = r#"{
        "active_sessions": 3, "streaming_sessions": 2,
        "active_sessions_by_api_key": {"team-a": 2, "team-b": 1},
        "sessions_started_total": 10, "sessions_ended_total": 7,
        "client_disconnects_total": 1,
        "decode": {"count": 40, "buffer_wait_sec_total": 4.0, "queue_wait_sec_total": 2.0,
            "inference_sec_total": 8.0, "response_emit_sec_total": 0.4,
            "total_sec_total": 14.4, "mean_inference_sec": 0.2, "pending": 1,
            "workers_busy": 2, "partials_dropped_total": 5,
            "finals_queue_timeouts_total": 0},
        "rtf": 0.125, "audio_sec_total": 64.0,
        "vad": {"utterances_total": 12, "active_utterances": 2,
            "quiet_utterances_total": 1, "pool_in_use": 3},
        "results": {"partials_total": 30, "finals_total": 12},
        "latency": {"window_decodes": 512,
            "partial": {"count": 28, "total_p50_sec": 0.21, "total_p95_sec": 0.4,
                "total_max_sec": 0.5, "inference_mean_sec": 0.18,
                "queue_wait_mean_sec": 0.01, "rtf_mean": 0.1},
            "final": {"count": 12, "total_p50_sec": 0.35, "total_p95_sec": 0.9,
                "total_max_sec": 1.2, "inference_mean_sec": 0.3,
                "queue_wait_mean_sec": 0.05, "rtf_mean": 0.15}},
        "sessions_ended_by_reason": {"completed": 6, "ERR1006": 1},
        "models": [{"id": "tiny.en", "path": "/m/ggml-tiny.en.bin", "status": "ready",
            "default": true, "sessions": 3, "multilingual": false, "workers": 2,
            "threads": 4, "since_unix": 1, "load_ms": 120, "error": null}],
        "capture": null, "buffer_bytes": 65536,
        "errors": {"ERR1006": 1, "ERR1003": 2}
    }"#;

    /// A `/system` with one GPU.
    pub const SYSTEM: &str = r#"{
        "process": {"pid": 42, "cpu_percent": 150.5, "rss_bytes": 524288000,
            "virtual_bytes": 2000000000, "threads": 17},
        "host": {"cpus": 8, "cpu_percent": 40.25, "memory_total_bytes": 17179869184,
            "memory_used_bytes": 8589934592,
            "load_average": {"one": 1.5, "five": 1.0, "fifteen": 0.5}},
        "gpu": {"enabled": true, "available": true, "devices": [{"index": 0,
            "name": "NVIDIA H100", "utilization_percent": 55,
            "memory_utilization_percent": 20, "memory_used_bytes": 2147483648,
            "memory_total_bytes": 85899345920, "temperature_c": 45, "power_watts": 120.5}]}
    }"#;

    pub fn busy_state() -> State {
        let mut st = State::default();
        st.apply(Poll {
            metrics: parse_metrics(METRICS),
            system: parse_system(SYSTEM),
        });
        st
    }

    #[test]
    fn parses_a_full_server_snapshot() {
        let m = parse_metrics(METRICS).expect("parses");
        assert_eq!(m.active_sessions, 3);
        assert_eq!(
            m.active_sessions_by_api_key
                .as_ref()
                .and_then(|k| k.get("team-a")),
            Some(&2)
        );
        assert_eq!(m.decode.partials_dropped_total, 5);
        assert_eq!(m.latency.final_.total_p95_sec, 0.9);
        assert_eq!(m.errors.get("ERR1003"), Some(&2));
        assert_eq!(m.models[0].id, "tiny.en");
        let s = parse_system(SYSTEM).expect("parses");
        assert_eq!(s.process.as_ref().and_then(|p| p.threads), Some(17));
        assert_eq!(s.gpu.devices[0].name.as_deref(), Some("NVIDIA H100"));
    }

    #[test]
    fn tolerates_missing_sections_but_not_foreign_json() {
        let m = parse_metrics(r#"{"active_sessions": 0}"#).expect("minimal");
        assert!(m.active_sessions_by_api_key.is_none());
        assert!(m.rtf.is_none());
        let err = parse_metrics(r#"{"status": "ok"}"#).expect_err("foreign");
        assert!(err.contains("active_sessions"), "{err}");
        assert!(parse_metrics("<html>").is_err());
        let s = parse_system(r#"{"process": null, "gpu": {"enabled": false}}"#).expect("null");
        assert!(s.process.is_none());
        assert!(!s.gpu.enabled);
    }

    #[test]
    fn stage_means_come_from_interval_deltas() {
        let mut st = busy_state();
        // The first poll has no previous one: zero, not the lifetime mean.
        assert_eq!(st.series(Series::Inference).and_then(Ring::last), Some(0.0));
        let mut m = parse_metrics(METRICS).expect("parses");
        m.decode.count += 4;
        m.decode.inference_sec_total += 2.0;
        m.decode.queue_wait_sec_total += 0.4;
        m.decode.partials_dropped_total += 3;
        st.apply(Poll {
            metrics: Ok(m),
            system: parse_system(SYSTEM),
        });
        assert_eq!(st.series(Series::Inference).and_then(Ring::last), Some(0.5));
        let q = st
            .series(Series::QueueWait)
            .and_then(Ring::last)
            .unwrap_or(-1.0);
        assert!((q - 0.1).abs() < 1e-9, "{q}");
        assert_eq!(
            st.series(Series::PartialsDropped).and_then(Ring::last),
            Some(3.0)
        );
        assert_eq!(st.series(Series::ActiveSessions).map(Ring::len), Some(2));
    }

    #[test]
    fn a_server_restart_is_not_a_negative_interval() {
        let mut st = busy_state();
        let mut m = parse_metrics(METRICS).expect("parses");
        m.decode = Decode::default();
        st.apply(Poll {
            metrics: Ok(m),
            system: parse_system(SYSTEM),
        });
        assert_eq!(st.series(Series::Total).and_then(Ring::last), Some(0.0));
        assert_eq!(
            st.series(Series::PartialsDropped).and_then(Ring::last),
            Some(0.0)
        );
    }

    #[test]
    fn unreachable_keeps_the_last_snapshot_and_counts_failures() {
        let mut st = busy_state();
        for _ in 0..2 {
            st.apply(Poll {
                metrics: Err("connection refused".into()),
                system: Err("connection refused".into()),
            });
        }
        assert!(st.unreachable());
        assert_eq!(st.failures_in_a_row, 2);
        assert_eq!(st.metrics.as_ref().map(|m| m.active_sessions), Some(3));
        // History only grows with answers.
        assert_eq!(st.series(Series::ActiveSessions).map(Ring::len), Some(1));
        st.apply(Poll {
            metrics: parse_metrics(METRICS),
            system: parse_system(SYSTEM),
        });
        assert!(!st.unreachable());
        assert_eq!(st.failures_in_a_row, 0);
    }

    #[test]
    fn history_is_bounded_and_paused_state_holds_still() {
        let mut st = State::default();
        for _ in 0..HISTORY + 10 {
            st.apply(Poll {
                metrics: parse_metrics(METRICS),
                system: parse_system(SYSTEM),
            });
        }
        assert_eq!(st.series(Series::HostCpu).map(Ring::len), Some(HISTORY));
        let polls = st.polls;
        st.paused = true;
        st.apply(Poll {
            metrics: Err("down".into()),
            system: Err("down".into()),
        });
        assert_eq!(st.polls, polls);
        assert!(!st.unreachable());
        let ring = st.series(Series::HostCpu).cloned().unwrap_or_default();
        assert_eq!(ring.tail(3).count(), 3);
        assert_eq!(ring.tail(1000).count(), HISTORY);
    }

    #[test]
    fn non_finite_samples_do_not_reach_the_history() {
        let mut ring_state = State::default();
        ring_state.push(Series::Rtf, f64::NAN);
        ring_state.push(Series::Rtf, f64::INFINITY);
        assert_eq!(
            ring_state
                .series(Series::Rtf)
                .map(|r| r.tail(2).collect::<Vec<_>>()),
            Some(vec![0.0, 0.0])
        );
    }
}
