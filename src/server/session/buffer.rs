//! A session's audio at 16 kHz, addressed by session sample position (sample
//! 0 is the first sample the client sent), so results carry session-audio
//! times rather than wall-clock ones. Outside speech it keeps only a short
//! pre-roll; during an utterance it keeps the utterance. Its bytes count
//! against the server-wide budget (`server.max_total_buffer_bytes`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Server-wide byte budget for buffered audio, shared by every session.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    used: Arc<AtomicU64>,
    limit: u64,
}

impl BufferBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// Bytes in use across all sessions.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + bytes <= self.limit).then_some(u + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The server-wide budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("server audio buffers are full ({limit} bytes across all sessions, server.max_total_buffer_bytes)")]
pub struct BudgetExceeded {
    pub limit: u64,
}

/// One session's buffered audio.
#[derive(Debug)]
pub struct AudioBuffer {
    samples: VecDeque<f32>,
    /// Session position of `samples[0]`.
    base: u64,
    /// Wall-clock arrival of each pushed block, by its end position; used to
    /// tell how long audio waited before a decode was scheduled.
    arrivals: VecDeque<(u64, Instant)>,
    budget: BufferBudget,
    /// Bytes this buffer holds against the budget (released on drop).
    reserved: u64,
}

const BYTES: u64 = std::mem::size_of::<f32>() as u64;

impl AudioBuffer {
    pub fn new(budget: BufferBudget) -> Self {
        Self {
            samples: VecDeque::new(),
            base: 0,
            arrivals: VecDeque::new(),
            budget,
            reserved: 0,
        }
    }

    /// Appends samples that arrived at `at`.
    pub fn push(&mut self, s: &[f32], at: Instant) -> Result<(), BudgetExceeded> {
        if s.is_empty() {
            return Ok(());
        }
        let bytes = s.len() as u64 * BYTES;
        if !self.budget.reserve(bytes) {
            return Err(BudgetExceeded {
                limit: self.budget.limit,
            });
        }
        self.reserved += bytes;
        self.samples.extend(s);
        self.arrivals.push_back((self.end(), at));
        Ok(())
    }

    /// Session position one past the last sample.
    pub fn end(&self) -> u64 {
        self.base + self.samples.len() as u64
    }

    /// Session position of the oldest sample kept.
    pub fn start(&self) -> u64 {
        self.base
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Copies `[from, to)`, clamped to what is held.
    pub fn slice(&self, from: u64, to: u64) -> Arc<[f32]> {
        let from = from.clamp(self.base, self.end());
        let to = to.clamp(from, self.end());
        let (a, b) = ((from - self.base) as usize, (to - self.base) as usize);
        self.samples.range(a..b).copied().collect()
    }

    /// Drops everything before `pos`.
    pub fn discard_before(&mut self, pos: u64) {
        let pos = pos.min(self.end());
        if pos <= self.base {
            return;
        }
        let n = (pos - self.base) as usize;
        self.samples.drain(..n);
        self.base = pos;
        let bytes = n as u64 * BYTES;
        self.budget.release(bytes);
        self.reserved -= bytes;
        while self.arrivals.len() > 1 && self.arrivals[0].0 <= pos {
            self.arrivals.pop_front();
        }
    }

    /// When the sample at `pos` arrived (the latest arrival if unknown).
    pub fn arrival_of(&self, pos: u64) -> Option<Instant> {
        self.arrivals
            .iter()
            .find(|(end, _)| *end > pos)
            .or(self.arrivals.back())
            .map(|(_, at)| *at)
    }
}

impl Drop for AudioBuffer {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(from: usize, n: usize) -> Vec<f32> {
        (from..from + n).map(|i| i as f32).collect()
    }

    #[test]
    fn positions_survive_trimming() {
        let budget = BufferBudget::new(1 << 20);
        let mut b = AudioBuffer::new(budget.clone());
        let now = Instant::now();
        b.push(&ramp(0, 100), now).unwrap();
        b.push(&ramp(100, 100), now).unwrap();
        assert_eq!(b.end(), 200);
        b.discard_before(150);
        assert_eq!(b.start(), 150);
        assert_eq!(b.len(), 50);
        // Slices are in session positions and clamp to what is held.
        assert_eq!(&*b.slice(160, 163), &[160.0, 161.0, 162.0]);
        assert_eq!(b.slice(0, 152).len(), 2);
        assert_eq!(b.slice(190, 999).len(), 10);
        assert_eq!(budget.used(), 50 * 4);
    }

    #[test]
    fn budget_is_shared_and_released_on_drop() {
        let budget = BufferBudget::new(400);
        let mut a = AudioBuffer::new(budget.clone());
        let mut b = AudioBuffer::new(budget.clone());
        let now = Instant::now();
        a.push(&[0.0; 60], now).unwrap();
        assert!(b.push(&[0.0; 50], now).is_err());
        b.push(&[0.0; 40], now).unwrap();
        assert_eq!(budget.used(), 400);
        drop(a);
        assert_eq!(budget.used(), 160);
        b.discard_before(40);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn arrival_of_finds_the_block() {
        let mut b = AudioBuffer::new(BufferBudget::new(1 << 20));
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(100);
        b.push(&[0.0; 10], t0).unwrap();
        b.push(&[0.0; 10], t1).unwrap();
        assert_eq!(b.arrival_of(5), Some(t0));
        assert_eq!(b.arrival_of(15), Some(t1));
        assert_eq!(b.arrival_of(50), Some(t1));
    }
}
