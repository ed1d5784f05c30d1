//! Adaptive partial cadence: when the decode workers fall behind, every
//! session's partials come less often (1× → 2× the configured interval →
//! finals only) before any final has to wait, and come back step by step
//! when the load falls. Finals carry the transcript; partials are what a
//! busy server gives up first.
//!
//! The controller is fed every [`TICK`] with how busy the workers are and
//! told whenever a final had to queue. It widens one step at a time, at
//! most once per [`WIDEN_DWELL`], and narrows only after [`NARROW_DWELL`]
//! of calm, so it settles instead of flapping.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the server feeds the controller.
pub const TICK: Duration = Duration::from_millis(100);
/// Time constant of the busy-fraction average.
const BUSY_TAU: Duration = Duration::from_secs(2);
/// Widen when the averaged busy fraction is above this...
const BUSY_HIGH: f64 = 0.95;
/// ...or a final waited longer than this for a worker.
const FINAL_WAIT_HIGH: Duration = Duration::from_millis(300);
/// Below this average the workers count as idle.
const BUSY_IDLE: f64 = 0.25;
/// Narrow only when the average is below this.
const BUSY_LOW: f64 = 0.6;
const WIDEN_DWELL: Duration = Duration::from_secs(1);
const NARROW_DWELL: Duration = Duration::from_secs(3);
/// Interval multipliers of the steps; past the last, finals only.
const FACTORS: [u64; 2] = [1, 2];

/// Shared by every session; cheap to read on each chunk.
#[derive(Debug)]
pub struct Cadence {
    /// Index into [`FACTORS`]; `FACTORS.len()` = finals only.
    step: AtomicUsize,
    state: Mutex<State>,
    widenings: AtomicU64,
    /// Sessions whose last partial decision used a widened cadence.
    widened_sessions: AtomicI64,
}

#[derive(Debug)]
struct State {
    busy: f64,
    last_tick: Option<Instant>,
    last_change: Instant,
    /// A final queued longer than FINAL_WAIT_HIGH since the last tick.
    final_waited: bool,
}

impl Default for Cadence {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Cadence {
    fn new(now: Instant) -> Self {
        Self {
            step: AtomicUsize::new(0),
            state: Mutex::new(State {
                busy: 0.0,
                last_tick: None,
                // The first sign of overload may act at once.
                last_change: now.checked_sub(WIDEN_DWELL).unwrap_or(now),
                final_waited: false,
            }),
            widenings: AtomicU64::new(0),
            widened_sessions: AtomicI64::new(0),
        }
    }

    /// A final waited `wait` in the queue.
    pub fn final_waited(&self, wait: Duration) {
        if wait > FINAL_WAIT_HIGH {
            self.lock().final_waited = true;
        }
    }

    /// Feeds the busy fraction of the workers (0–1) at `now`.
    pub fn tick(&self, now: Instant, busy: f64) {
        let mut s = self.lock();
        let dt = s
            .last_tick
            .map_or(TICK, |t| now.saturating_duration_since(t));
        s.last_tick = Some(now);
        let alpha = 1.0 - (-dt.as_secs_f64() / BUSY_TAU.as_secs_f64()).exp();
        s.busy += alpha * (busy.clamp(0.0, 1.0) - s.busy);
        let waited = s.final_waited;
        let since = now.saturating_duration_since(s.last_change);
        let step = self.step.load(Ordering::Relaxed);
        if (waited || s.busy > BUSY_HIGH) && step < FACTORS.len() {
            // A wait seen during the dwell still counts when it ends.
            if since >= WIDEN_DWELL {
                self.step.store(step + 1, Ordering::Relaxed);
                self.widenings.fetch_add(1, Ordering::Relaxed);
                s.last_change = now;
                s.final_waited = false;
                tracing::debug!(
                    step = step + 1,
                    busy = s.busy,
                    waited,
                    "partial cadence widened"
                );
            }
        } else {
            s.final_waited = false;
            if !waited && s.busy < BUSY_LOW && step > 0 && since >= NARROW_DWELL {
                self.step.store(step - 1, Ordering::Relaxed);
                s.last_change = now;
                tracing::debug!(step = step - 1, busy = s.busy, "partial cadence narrowed");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partial interval to use now for a configured `base`; `None`
    /// means finals only.
    pub fn interval<T: Into<u64>>(&self, base: T) -> Option<u64> {
        let factor = FACTORS.get(self.step.load(Ordering::Relaxed))?;
        Some(base.into() * factor)
    }

    /// The workers have had little to do lately (an early first partial
    /// costs nobody anything).
    pub fn is_idle(&self) -> bool {
        self.is_normal() && self.lock().busy < BUSY_IDLE
    }

    /// Whether partials run at their configured cadence.
    pub fn is_normal(&self) -> bool {
        self.step.load(Ordering::Relaxed) == 0
    }

    /// The multiplier in force (0 = finals only), for metrics.
    pub fn factor(&self) -> u64 {
        FACTORS
            .get(self.step.load(Ordering::Relaxed))
            .copied()
            .unwrap_or(0)
    }

    /// Times the cadence widened since start.
    pub fn widenings(&self) -> u64 {
        self.widenings.load(Ordering::Relaxed)
    }

    /// Sessions on a widened cadence now.
    pub fn widened_sessions(&self) -> u64 {
        self.widened_sessions.load(Ordering::Relaxed).max(0) as u64
    }

    /// A session's cadence changed between configured and widened.
    pub fn session_widened(&self, widened: bool) {
        let d = if widened { 1 } else { -1 };
        self.widened_sessions.fetch_add(d, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the controller for `secs` at `busy`, one tick per TICK.
    fn run(c: &Cadence, t: &mut Instant, secs: f64, busy: f64) {
        let ticks = (secs / TICK.as_secs_f64()).round() as usize;
        for _ in 0..ticks {
            *t += TICK;
            c.tick(*t, busy);
        }
    }

    #[test]
    fn widens_step_by_step_under_load_and_recovers_when_it_falls() {
        let mut t = Instant::now();
        let c = Cadence::new(t);
        assert_eq!(c.interval(1_000u64), Some(1_000));
        // A simulated engine busy all the time: the average passes 0.95
        // after ~6 s, then one step per second.
        run(&c, &mut t, 6.5, 1.0);
        assert_eq!(c.interval(1_000u64), Some(2_000));
        run(&c, &mut t, 1.0, 1.0);
        assert_eq!(c.interval(1_000u64), None, "finals only");
        run(&c, &mut t, 5.0, 1.0);
        assert_eq!(c.interval(1_000u64), None, "no step past finals only");
        // Load falls: the average decays below 0.6, then one step per 3 s.
        run(&c, &mut t, 1.5, 0.0);
        assert_eq!(c.interval(1_000u64), Some(2_000));
        run(&c, &mut t, 3.0, 0.0);
        assert_eq!(c.interval(1_000u64), Some(1_000));
        assert_eq!(c.widenings(), 2);
    }

    #[test]
    fn a_final_that_waited_widens_at_once() {
        let mut t = Instant::now();
        let c = Cadence::new(t);
        run(&c, &mut t, 1.0, 0.3);
        assert!(c.is_normal());
        c.final_waited(Duration::from_millis(50));
        run(&c, &mut t, 0.1, 0.3);
        assert!(c.is_normal(), "a short wait is normal queueing");
        c.final_waited(Duration::from_millis(400));
        run(&c, &mut t, 0.1, 0.3);
        assert_eq!(c.factor(), 2);
    }

    #[test]
    fn moderate_load_holds_the_current_step() {
        let mut t = Instant::now();
        let c = Cadence::new(t);
        run(&c, &mut t, 10.0, 0.7);
        assert!(c.is_normal(), "70 % busy is no reason to widen");
        c.final_waited(Duration::from_secs(1));
        run(&c, &mut t, 0.1, 0.7);
        assert_eq!(c.factor(), 2);
        // Between the thresholds: neither widen nor narrow.
        run(&c, &mut t, 20.0, 0.7);
        assert_eq!(c.factor(), 2);
    }

    #[test]
    fn widened_sessions_are_counted() {
        let c = Cadence::default();
        c.session_widened(true);
        c.session_widened(true);
        c.session_widened(false);
        assert_eq!(c.widened_sessions(), 1);
    }
}
