//! The end-of-run summary: sessions ok/failed, errors by code, p50/p90/p99
//! of each timing, throughput and RTF — built from the records, shown as a
//! table for people and serialised as JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::SecondsFormat;
use serde::Serialize;

use super::plan::BenchPlan;
use super::record::SessionRecord;
use super::runner::RunOutput;
use super::stats::{round3, throughput, Distribution};
use crate::client::Sending;

/// A per-session timing the summary spreads out: column name, label, value.
type Metric = (
    &'static str,
    &'static str,
    fn(&SessionRecord) -> Option<f64>,
);

/// The timings summarised, in table order (completed sessions only).
const METRICS: &[Metric] = &[
    ("first_partial_seconds", "first partial", |r| {
        r.first_partial_seconds
    }),
    ("final_latency_seconds", "end of audio → final", |r| {
        r.final_latency_seconds
    }),
    ("wall_seconds", "session wall", |r| Some(r.wall_seconds)),
    ("decode_buffer_wait_seconds", "decode buffer wait", |r| {
        r.decode_buffer_wait_seconds
    }),
    ("decode_queue_wait_seconds", "decode queue wait", |r| {
        r.decode_queue_wait_seconds
    }),
    ("decode_inference_seconds", "decode inference", |r| {
        r.decode_inference_seconds
    }),
    ("decode_response_emit_seconds", "decode emit", |r| {
        r.decode_response_emit_seconds
    }),
    ("decode_total_seconds", "decode total", |r| {
        r.decode_total_seconds
    }),
];

/// What `--json-summary` writes and the table shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    pub server: String,
    pub channels: usize,
    pub iterations: usize,
    pub warmup_iterations: usize,
    pub realtime: bool,
    pub chunk_ms: Option<u64>,
    /// Measured sessions (warm-ups excluded).
    pub sessions: usize,
    pub sessions_ok: usize,
    pub sessions_failed: usize,
    pub warmup_sessions: usize,
    pub warmup_failed: usize,
    /// Ctrl-C ended the run early.
    pub interrupted: bool,
    /// Failed measured sessions by `error_code`.
    pub errors_by_code: BTreeMap<String, usize>,
    /// First measured session's start to the last one's end.
    pub measured_seconds: f64,
    /// Audio in the completed measured sessions.
    pub audio_seconds: f64,
    /// `audio_seconds / measured_seconds`: how many real-time streams the
    /// server kept up with.
    pub audio_seconds_per_wall_second: Option<f64>,
    /// Per-session real-time factor (wall / audio sent).
    pub rtf: Option<Distribution>,
    /// Each timing's spread in seconds, keyed by its session-log column.
    pub timings: BTreeMap<String, Distribution>,
}

impl Summary {
    /// Summarises a run of `plan` against `server`.
    pub fn build(plan: &BenchPlan, server: &str, run: &RunOutput) -> Self {
        let ok: Vec<&SessionRecord> = run.records.iter().filter(|r| r.is_ok()).collect();
        let mut errors_by_code = BTreeMap::new();
        for code in run.records.iter().filter_map(|r| r.error_code.as_ref()) {
            *errors_by_code.entry(code.clone()).or_insert(0) += 1;
        }
        let audio_seconds: f64 = ok.iter().map(|r| r.audio_seconds).sum();
        let timings = METRICS
            .iter()
            .filter_map(|(name, _, get)| {
                let d = Distribution::of(ok.iter().filter_map(|r| get(r)))?;
                Some((name.to_string(), d.rounded()))
            })
            .collect();
        let (realtime, chunk_ms) = match plan.sending {
            Sending::Realtime { chunk_ms } => (true, Some(chunk_ms)),
            Sending::Burst { chunk_ms } => (false, Some(chunk_ms)),
            Sending::Whole => (false, None),
        };
        let time =
            |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        Self {
            started: time(&run.started),
            finished: time(&run.finished),
            server: server.to_string(),
            channels: plan.channels,
            iterations: plan.iterations,
            warmup_iterations: plan.warmup_iterations,
            realtime,
            chunk_ms,
            sessions: run.records.len(),
            sessions_ok: ok.len(),
            sessions_failed: run.records.len() - ok.len(),
            warmup_sessions: run.warmup_sessions,
            warmup_failed: run.warmup_failed,
            interrupted: run.interrupted,
            errors_by_code,
            measured_seconds: round3(run.measured_sec),
            audio_seconds: round3(audio_seconds),
            audio_seconds_per_wall_second: throughput(audio_seconds, run.measured_sec).map(round3),
            rtf: Distribution::of(ok.iter().filter_map(|r| r.rtf)).map(Distribution::rounded),
            timings,
        }
    }

    /// `ERR1008 ×2, grpc:Unavailable ×1`, or `none`.
    pub fn errors_text(&self) -> String {
        if self.errors_by_code.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .errors_by_code
            .iter()
            .map(|(code, n)| format!("{code} ×{n}"))
            .collect();
        parts.join(", ")
    }

    /// The table people read at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pacing = match (self.realtime, self.chunk_ms) {
            (true, Some(ms)) => format!("real-time pace, {ms} ms chunks"),
            (false, Some(ms)) => format!("as fast as possible, {ms} ms chunks"),
            (_, None) => "whole clip per chunk".into(),
        };
        let _ = writeln!(
            s,
            "\nstt bench against {}: {} channel(s) × {} iteration(s), {pacing}",
            self.server, self.channels, self.iterations
        );
        if self.interrupted {
            let _ = writeln!(s, "  interrupted: only the sessions that ran are counted");
        }
        let _ = writeln!(
            s,
            "  sessions   {} ok, {} failed (warm-ups: {} run, {} failed, not counted)",
            self.sessions_ok, self.sessions_failed, self.warmup_sessions, self.warmup_failed
        );
        let _ = writeln!(s, "  errors     {}", self.errors_text());
        let _ = writeln!(
            s,
            "  throughput {:.3} s of audio in {:.3} s: {} s of audio per wall second",
            self.audio_seconds,
            self.measured_seconds,
            self.audio_seconds_per_wall_second
                .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
        );
        let _ = writeln!(
            s,
            "\n  {:<24} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "timing (s)", "n", "mean", "p50", "p90", "p99", "max"
        );
        for (name, label, _) in METRICS {
            s += &row(label, self.timings.get(*name));
        }
        s += &row("rtf (wall / audio)", self.rtf.as_ref());
        s
    }
}

fn row(label: &str, d: Option<&Distribution>) -> String {
    match d {
        Some(d) => format!(
            "  {label:<24} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
            d.count, d.mean, d.p50, d.p90, d.p99, d.max
        ),
        None => format!("  {label:<24} {:>5} {:>9}\n", 0, "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::tests::{outcome, slot};
    use crate::client::ClientError;
    use crate::config::ClientFile;
    use clap::Parser;

    fn plan() -> BenchPlan {
        let cli =
            crate::cli::Cli::try_parse_from(["stt", "bench", "--channels", "2"]).expect("valid");
        let crate::cli::Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        BenchPlan::resolve(&args, &ClientFile::default()).expect("valid")
    }

    fn run() -> RunOutput {
        let err = |msg: &str| ClientError::Session(tonic::Status::resource_exhausted(msg));
        let mut fast = SessionRecord::ok(slot(0, 0), &outcome());
        fast.decode_total_seconds = Some(0.2);
        RunOutput {
            records: vec![
                fast,
                SessionRecord::ok(slot(1, 0), &outcome()),
                SessionRecord::failed(slot(0, 1), &err("ERR1008: full")),
                SessionRecord::failed(slot(1, 1), &err("ERR1008: full")),
                SessionRecord::failed(slot(1, 2), &err("no code")),
            ],
            warmup_sessions: 2,
            warmup_failed: 0,
            measured_sec: 3.0,
            started: chrono::DateTime::from_timestamp(0, 0).expect("valid"),
            finished: chrono::DateTime::from_timestamp(3, 0).expect("valid"),
            interrupted: false,
        }
    }

    #[test]
    fn counts_errors_and_spreads() {
        let s = Summary::build(&plan(), "h:1", &run());
        assert_eq!((s.sessions, s.sessions_ok, s.sessions_failed), (5, 2, 3));
        assert_eq!(s.errors_by_code["ERR1008"], 2);
        assert_eq!(s.errors_by_code["grpc:ResourceExhausted"], 1);
        assert_eq!(s.errors_text(), "ERR1008 ×2, grpc:ResourceExhausted ×1");
        // Two completed sessions of 4.5 s each in 3 s.
        assert_eq!(s.audio_seconds, 9.0);
        assert_eq!(s.audio_seconds_per_wall_second, Some(3.0));
        let total = &s.timings["decode_total_seconds"];
        assert_eq!((total.count, total.p50, total.p99), (2, 0.2, 0.545));
        assert_eq!(s.rtf.map(|r| r.p50), Some(0.5));
        // Failed sessions do not dilute the timings.
        assert_eq!(s.timings["first_partial_seconds"].count, 2);
        assert_eq!(s.started, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn table_shows_every_timing() {
        let s = Summary::build(&plan(), "h:1", &run());
        let t = s.table();
        for (_, label, _) in METRICS {
            assert!(t.contains(label), "{label} missing:\n{t}");
        }
        assert!(t.contains("2 ok, 3 failed"), "{t}");
        assert!(t.contains("ERR1008 ×2"), "{t}");
        assert!(t.contains("3.000 s of audio per wall second"), "{t}");
    }

    #[test]
    fn json_has_what_ci_reads() {
        let s = Summary::build(&plan(), "h:1", &run());
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["sessions_ok"], 2);
        assert_eq!(v["errors_by_code"]["ERR1008"], 2);
        assert_eq!(v["timings"]["final_latency_seconds"]["p90"], 0.612);
        assert_eq!(v["realtime"], false);
    }
}
