//! What a client measures: the server's decode-timing trailers, when each
//! chunk left, and from that the latency of each result. Pure bookkeeping —
//! no I/O, no printing — so it can be tested without a server.

use std::time::Instant;

use serde::Serialize;
use tonic::metadata::MetadataMap;

// The trailer names are the wire contract's; the server writes them from
// the same constants.
pub use crate::server::grpc::metadata::{
    BUFFER_WAIT as TRAILER_BUFFER_WAIT, COUNT as TRAILER_COUNT, EMIT as TRAILER_RESPONSE_EMIT,
    INFERENCE as TRAILER_INFERENCE, QUEUE_WAIT as TRAILER_QUEUE_WAIT, TOTAL as TRAILER_TOTAL,
};

/// The server's decode-timing totals for one stream, from its trailing
/// metadata. A field is `None` when the server did not send it (or sent
/// something that is not a number), so "absent" never reads as "zero".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DecodeTimings {
    pub buffer_wait_sec: Option<f64>,
    pub queue_wait_sec: Option<f64>,
    pub inference_sec: Option<f64>,
    pub response_emit_sec: Option<f64>,
    pub total_sec: Option<f64>,
    pub count: Option<u64>,
}

impl DecodeTimings {
    /// Reads the `stt-decode-*` keys; anything else in `md` is ignored.
    pub fn from_metadata(md: &MetadataMap) -> Self {
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).map(str::trim);
        let secs = |key: &str| {
            text(key)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        Self {
            buffer_wait_sec: secs(TRAILER_BUFFER_WAIT),
            queue_wait_sec: secs(TRAILER_QUEUE_WAIT),
            inference_sec: secs(TRAILER_INFERENCE),
            response_emit_sec: secs(TRAILER_RESPONSE_EMIT),
            total_sec: secs(TRAILER_TOTAL),
            // Python servers may format the count as a float ("3.0").
            count: text(TRAILER_COUNT).and_then(|s| {
                s.parse::<u64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0 && v.fract() == 0.0)
                        .map(|v| v as u64)
                })
            }),
        }
    }

    /// True when the server sent none of the trailers.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// When one result arrived, relative to the first chunk leaving.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResultTiming {
    /// Seconds from the first chunk being sent to this result arriving.
    pub received_sec: f64,
    /// Seconds from sending the chunk that holds the sample at the result's
    /// `end_sec` to receiving the result; `None` before any chunk was sent.
    pub latency_sec: Option<f64>,
}

/// One chunk handed to the transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SentChunk {
    /// Session samples sent so far, this chunk included.
    pub end_sample: u64,
    pub at: Instant,
}

/// Every chunk's send time, in send order (so `end_sample` ascends).
#[derive(Debug, Default)]
pub(crate) struct SendLog {
    sent: Vec<SentChunk>,
}

impl SendLog {
    pub(crate) fn push(&mut self, chunk: SentChunk) {
        self.sent.push(chunk);
    }

    /// Samples sent so far.
    pub(crate) fn sent_samples(&self) -> u64 {
        self.sent.last().map_or(0, |c| c.end_sample)
    }

    /// When the audio up to `sample` had been sent: the first chunk whose end
    /// reaches it. A result can name audio past the last logged chunk when its
    /// send record is still in flight; the last chunk is then the best bound.
    pub(crate) fn sent_at(&self, sample: u64) -> Option<Instant> {
        let i = self.sent.partition_point(|c| c.end_sample < sample);
        self.sent.get(i).or(self.sent.last()).map(|c| c.at)
    }

    /// Timing of a result ending at `end_sec` (session time) received `now`;
    /// `start` is when streaming began.
    pub(crate) fn timing(&self, end_sec: f64, start: Instant, now: Instant) -> ResultTiming {
        let sample = (end_sec.max(0.0) * crate::audio::TARGET_RATE as f64).round() as u64;
        ResultTiming {
            received_sec: now.saturating_duration_since(start).as_secs_f64(),
            latency_sec: self
                .sent_at(sample)
                .map(|at| now.saturating_duration_since(at).as_secs_f64()),
        }
    }
}

/// Count, mean and spread of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_sec: f64,
    pub p50_sec: f64,
    pub p90_sec: f64,
    pub max_sec: f64,
}

impl LatencySummary {
    /// `None` for an empty set. Percentiles are nearest-rank, so every figure
    /// is one that was actually observed.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Self {
            count: v.len(),
            mean_sec: v.iter().sum::<f64>() / v.len() as f64,
            p50_sec: rank(0.5),
            p90_sec: rank(0.9),
            max_sec: v[v.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn trailers_parse() {
        let mut md = MetadataMap::new();
        md.insert(TRAILER_BUFFER_WAIT, "0.25".parse().expect("ascii"));
        md.insert(TRAILER_QUEUE_WAIT, " 0.5 ".parse().expect("ascii"));
        md.insert(TRAILER_INFERENCE, "1.5".parse().expect("ascii"));
        md.insert(TRAILER_RESPONSE_EMIT, "0".parse().expect("ascii"));
        md.insert(TRAILER_TOTAL, "2.25".parse().expect("ascii"));
        md.insert(TRAILER_COUNT, "3".parse().expect("ascii"));
        md.insert("grpc-status", "0".parse().expect("ascii"));
        let t = DecodeTimings::from_metadata(&md);
        assert_eq!(t.buffer_wait_sec, Some(0.25));
        assert_eq!(t.queue_wait_sec, Some(0.5));
        assert_eq!(t.inference_sec, Some(1.5));
        assert_eq!(t.response_emit_sec, Some(0.0));
        assert_eq!(t.total_sec, Some(2.25));
        assert_eq!(t.count, Some(3));
        assert!(!t.is_empty());
    }

    #[test]
    fn missing_or_garbage_trailers_are_none() {
        assert!(DecodeTimings::from_metadata(&MetadataMap::new()).is_empty());
        let mut md = MetadataMap::new();
        md.insert(TRAILER_TOTAL, "soon".parse().expect("ascii"));
        md.insert(TRAILER_INFERENCE, "-1".parse().expect("ascii"));
        md.insert(TRAILER_QUEUE_WAIT, "NaN".parse().expect("ascii"));
        md.insert(TRAILER_COUNT, "2.0".parse().expect("ascii"));
        let t = DecodeTimings::from_metadata(&md);
        assert_eq!(t.total_sec, None);
        assert_eq!(t.inference_sec, None);
        assert_eq!(t.queue_wait_sec, None);
        assert_eq!(t.count, Some(2));
        md.insert(TRAILER_COUNT, "2.5".parse().expect("ascii"));
        assert_eq!(DecodeTimings::from_metadata(&md).count, None);
    }

    fn log_of(start: Instant, chunks: &[(u64, u64)]) -> SendLog {
        let mut log = SendLog::default();
        for &(end_sample, ms) in chunks {
            log.push(SentChunk {
                end_sample,
                at: start + Duration::from_millis(ms),
            });
        }
        log
    }

    #[test]
    fn latency_counts_from_the_chunk_holding_end_sec() {
        let t0 = Instant::now();
        // 100 ms chunks sent at 0, 100, 200 ms.
        let log = log_of(t0, &[(1600, 0), (3200, 100), (4800, 200)]);
        let now = t0 + Duration::from_millis(700);
        // end_sec 0.15 s = sample 2400, inside the second chunk (sent at 100 ms).
        let t = log.timing(0.15, t0, now);
        assert!((t.latency_sec.expect("sent") - 0.6).abs() < 1e-9);
        assert!((t.received_sec - 0.7).abs() < 1e-9);
        // Exactly on a boundary: audio up to 0.1 s is all in the first chunk.
        let t = log.timing(0.1, t0, now);
        assert!((t.latency_sec.expect("sent") - 0.7).abs() < 1e-9);
        // Past what was logged: bounded by the last chunk.
        let t = log.timing(9.0, t0, now);
        assert!((t.latency_sec.expect("sent") - 0.5).abs() < 1e-9);
        assert_eq!(log.sent_samples(), 4800);
    }

    #[test]
    fn no_chunks_means_no_latency() {
        let t0 = Instant::now();
        let t = SendLog::default().timing(1.0, t0, t0);
        assert_eq!(t.latency_sec, None);
        assert_eq!(SendLog::default().sent_samples(), 0);
    }

    #[test]
    fn summary_is_nearest_rank() {
        assert_eq!(LatencySummary::of(&[]), None);
        let s = LatencySummary::of(&[0.4, 0.1, 0.3, 0.2, f64::NAN]).expect("non-empty");
        assert_eq!(s.count, 4);
        assert!((s.mean_sec - 0.25).abs() < 1e-12);
        assert_eq!(s.p50_sec, 0.2);
        assert_eq!(s.p90_sec, 0.4);
        assert_eq!(s.max_sec, 0.4);
        let one = LatencySummary::of(&[0.7]).expect("non-empty");
        assert_eq!((one.p50_sec, one.p90_sec, one.max_sec), (0.7, 0.7, 0.7));
    }
}
