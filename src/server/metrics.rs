//! Server-wide counters that every component updates and the control plane
//! reads: sessions, decodes and their timing totals, errors by code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::server::session::{DecodeTimings, SessionReport};

/// Shared counters (cheap atomics; one short lock for the per-code map).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub sessions_started: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub sessions_client_gone: AtomicU64,
    /// Errors by code, since start.
    errors: Mutex<HashMap<ErrorCode, u64>>,
    /// Decode timing totals over every ended session.
    timings: Mutex<DecodeTimings>,
}

impl ServerMetrics {
    pub fn session_started(&self) {
        self.sessions_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_ended(&self, report: &SessionReport) {
        self.sessions_ended.fetch_add(1, Ordering::Relaxed);
        if report.client_gone {
            self.sessions_client_gone.fetch_add(1, Ordering::Relaxed);
        }
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
