//! The decode scheduler: a global bound on decodes that are queued or
//! running (`server.max_pending_decodes_global`) in front of the engine's
//! worker pool. Partials take a slot only if one is free, otherwise they are
//! dropped and counted; finals wait up to `decode_queue_timeout_sec` for a
//! slot (then ERR2001). A slot is held until the result is taken, so the
//! bound covers queued and running work alike.
//!
//! Every decode carries a deadline: a final, when its utterance ended (the
//! engine decodes finals earliest first); a partial, when the next one would
//! be due (a partial still queued then is dropped as stale). The
//! [`Cadence`] it owns widens every session's partial interval when finals
//! start to wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::cadence::Cadence;
use crate::engine::{DecodeJob, DecodeParams, Engine, EngineError, Priority, Transcript};

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Decodes queued or running across the server.
    pub max_pending_global: usize,
    /// How long a final waits for a slot.
    pub queue_timeout: Duration,
    /// How long anyone waits for a scheduled decode; `None` = forever.
    pub decode_timeout: Option<Duration>,
}

/// How far behind a live final that ends now a file piece queues: live
/// finals come first unless the piece has waited this long.
pub const BATCH_DEFERRAL: Duration = Duration::from_secs(2);

/// Cheap-to-clone handle.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SchedulerConfig,
    /// Permits = free global slots.
    slots: Arc<Semaphore>,
    partials_dropped: AtomicU64,
    finals_timed_out: AtomicU64,
    health: Arc<DecodeHealth>,
    cadence: Arc<Cadence>,
}

/// Why a decode produced no transcript.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("no decode slot freed within {0:?} ({1} decodes pending server-wide)")]
    QueueTimeout(Duration, usize),
    #[error("decode did not finish within {0:?}")]
    DecodeTimeout(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A scheduled decode; await [`Ticket::wait`] for its transcript.
pub struct Ticket {
    rx: oneshot::Receiver<Result<Transcript, EngineError>>,
    cancel: CancellationToken,
    decode_timeout: Option<Duration>,
    /// When the job entered the engine queue.
    pub scheduled: Instant,
    priority: Priority,
    /// A file piece: its waits say nothing about live streams' cadence.
    batch: bool,
    health: Arc<DecodeHealth>,
    cadence: Arc<Cadence>,
    /// Held until the result is taken: the global bound covers running work.
    _slot: OwnedSemaphorePermit,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, health: Arc<DecodeHealth>) -> Self {
        Self {
            inner: Arc::new(Inner {
                health,
                slots: Arc::new(Semaphore::new(cfg.max_pending_global.max(1))),
                cfg,
                partials_dropped: AtomicU64::new(0),
                finals_timed_out: AtomicU64::new(0),
                cadence: Arc::default(),
            }),
        }
    }

    /// The partial cadence every session follows.
    pub fn cadence(&self) -> &Cadence {
        &self.inner.cadence
    }

    /// Decodes queued or running now.
    pub fn pending(&self) -> usize {
        self.inner.cfg.max_pending_global.max(1) - self.inner.slots.available_permits()
    }

    pub fn partials_dropped(&self) -> u64 {
        self.inner.partials_dropped.load(Ordering::Relaxed)
    }

    pub fn finals_timed_out(&self) -> u64 {
        self.inner.finals_timed_out.load(Ordering::Relaxed)
    }

    /// Counts a partial the session chose not to schedule (its own cap).
    pub fn count_dropped_partial(&self) {
        self.inner.partials_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Schedules a partial if a slot is free; `None` means dropped (counted).
    /// `deadline`: when the next partial would be due.
    pub fn try_partial(
        &self,
        engine: &Engine,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
        deadline: Instant,
    ) -> Option<Ticket> {
        let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
            self.count_dropped_partial();
            return None;
        };
        match self.submit(
            engine,
            (audio, params, cancel, deadline),
            slot,
            Priority::Partial,
        ) {
            Ok(t) => Some(t),
            Err(_) => {
                self.count_dropped_partial();
                None
            }
        }
    }

    /// Schedules a final only if a slot is free now (speculative finals,
    /// which must never make the session wait). `deadline`: when its
    /// utterance ended.
    pub fn try_final(
        &self,
        engine: &Engine,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
        deadline: Instant,
    ) -> Option<Ticket> {
        let slot = self.inner.slots.clone().try_acquire_owned().ok()?;
        self.submit(
            engine,
            (audio, params, cancel, deadline),
            slot,
            Priority::Final,
        )
        .ok()
    }

    /// Schedules a final, waiting up to the queue timeout for a slot, or
    /// until `cancel` (a shutdown's abort must not wait out the queue).
    /// `deadline`: when its utterance ended.
    pub async fn schedule_final(
        &self,
        engine: &Engine,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
        deadline: Instant,
    ) -> Result<Ticket, ScheduleError> {
        let wait = self.inner.cfg.queue_timeout;
        let slot = match tokio::time::timeout(wait, self.slot(&cancel)).await {
            Ok(slot) => slot?,
            Err(_) => {
                self.inner.finals_timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(ScheduleError::QueueTimeout(wait, self.pending()));
            }
        };
        self.submit(
            engine,
            (audio, params, cancel, deadline),
            slot,
            Priority::Final,
        )
        .map_err(Into::into)
    }

    /// Schedules a piece of an uploaded file: it waits for a slot as long
    /// as it must (or until `cancel`), and queues with the finals but
    /// [`BATCH_DEFERRAL`] behind any live final that ends now, so a batch
    /// shares the workers without holding live streams back.
    pub async fn schedule_batch(
        &self,
        engine: &Engine,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> Result<Ticket, ScheduleError> {
        let slot = self.slot(&cancel).await?;
        let deadline = Instant::now() + BATCH_DEFERRAL;
        let mut ticket = self.submit(
            engine,
            (audio, params, cancel, deadline),
            slot,
            Priority::Final,
        )?;
        ticket.batch = true;
        Ok(ticket)
    }

    /// Waits for a decode slot until `cancel`: a session aborted or a
    /// client gone gives up its place in the queue at once.
    async fn slot(&self, cancel: &CancellationToken) -> Result<OwnedSemaphorePermit, EngineError> {
        tokio::select! {
            slot = self.inner.slots.clone().acquire_owned() => {
                slot.map_err(|_| EngineError::Stopped)
            }
            () = cancel.cancelled() => Err(EngineError::Cancelled),
        }
    }

    fn submit(
        &self,
        engine: &Engine,
        (audio, params, cancel, deadline): (Arc<[f32]>, DecodeParams, CancellationToken, Instant),
        slot: OwnedSemaphorePermit,
        priority: Priority,
    ) -> Result<Ticket, EngineError> {
        let (mut job, rx) = DecodeJob::new(audio, params, cancel.clone());
        job.deadline = deadline;
        // The engine's queues hold at least max_pending_global jobs, so with
        // a slot in hand this only fails when the engine has stopped.
        engine.try_submit(job, priority)?;
        Ok(Ticket {
            rx,
            cancel,
            decode_timeout: self.inner.cfg.decode_timeout,
            health: self.inner.health.clone(),
            cadence: self.inner.cadence.clone(),
            scheduled: Instant::now(),
            priority,
            batch: false,
            _slot: slot,
        })
    }
}

impl Ticket {
    /// The transcript, or why there is none. On a decode timeout the job is
    /// cancelled so its worker moves on.
    pub async fn wait(self) -> Result<Transcript, ScheduleError> {
        let result = match self.decode_timeout {
            Some(limit) => match tokio::time::timeout(limit, self.rx).await {
                Ok(r) => r,
                Err(_) => {
                    self.cancel.cancel();
                    self.health.record(Outcome::Timeout);
                    return Err(ScheduleError::DecodeTimeout(limit));
                }
            },
            None => self.rx.await,
        };
        let result = result.unwrap_or(Err(EngineError::Stopped));
        match &result {
            Ok(t) => {
                self.health.record(Outcome::Success);
                if self.priority == Priority::Final && !self.batch {
                    self.cadence.final_waited(t.queue_wait);
                }
            }
            // Cancelling is the caller's (or a preempting final's) choice,
            // and a stale partial the queue's; neither is ill health.
            Err(EngineError::Cancelled | EngineError::Late) => {}
            Err(_) => self.health.record(Outcome::Failure),
        }
        Ok(result?)
    }
}

/// How one decode ended, for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Timeout,
    Failure,
}

/// Recent decode outcomes judged by the `health.*` ratios of server.yaml.
#[derive(Debug)]
pub struct DecodeHealth {
    window: Duration,
    min_events: usize,
    max_timeout_ratio: f64,
    min_success_ratio: f64,
    /// Outcomes within the window (older ones are pruned on access).
    events: Mutex<VecDeque<(Instant, Outcome)>>,
}

impl DecodeHealth {
    pub fn new(
        window: Duration,
        min_events: usize,
        max_timeout_ratio: f64,
        min_success_ratio: f64,
    ) -> Self {
        Self {
            window,
            min_events,
            max_timeout_ratio,
            min_success_ratio,
            events: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, outcome: Outcome) {
        self.record_at(Instant::now(), outcome);
    }

    fn record_at(&self, at: Instant, outcome: Outcome) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.push_back((at, outcome));
        Self::prune(&mut ev, at, self.window);
    }

    fn prune(ev: &mut VecDeque<(Instant, Outcome)>, now: Instant, window: Duration) {
        while ev
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            ev.pop_front();
        }
    }

    /// `Ok` when healthy, else why not. Too few events count as healthy.
    pub fn verdict(&self) -> Result<(), String> {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        Self::prune(&mut ev, Instant::now(), self.window);
        let n = ev.len();
        if n < self.min_events.max(1) {
            return Ok(());
        }
        let count = |o| ev.iter().filter(|(_, x)| *x == o).count() as f64;
        let timeouts = count(Outcome::Timeout) / n as f64;
        let successes = count(Outcome::Success) / n as f64;
        if timeouts > self.max_timeout_ratio {
            return Err(format!(
                "decode timeouts {:.0}% of the last {n} decodes exceed health.max_timeout_ratio {:.0}%",
                timeouts * 100.0,
                self.max_timeout_ratio * 100.0
            ));
        }
        if successes < self.min_success_ratio {
            return Err(format!(
                "decode successes {:.0}% of the last {n} decodes are below health.min_success_ratio {:.0}%",
                successes * 100.0,
                self.min_success_ratio * 100.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_ratios_over_the_window() {
        let h = DecodeHealth::new(Duration::from_secs(60), 5, 0.5, 0.5);
        for _ in 0..4 {
            h.record(Outcome::Timeout);
        }
        // Below min_events: not judged.
        assert!(h.verdict().is_ok());
        h.record(Outcome::Success);
        let why = h.verdict().unwrap_err();
        assert!(why.contains("timeouts"), "{why}");
        for _ in 0..6 {
            h.record(Outcome::Success);
        }
        assert!(h.verdict().is_ok());
        for _ in 0..8 {
            h.record(Outcome::Failure);
        }
        assert!(h.verdict().unwrap_err().contains("successes"));
    }

    #[test]
    fn old_events_leave_the_window() {
        let h = DecodeHealth::new(Duration::from_millis(10), 1, 0.5, 0.5);
        h.record_at(Instant::now() - Duration::from_secs(1), Outcome::Failure);
        assert!(h.verdict().is_ok());
    }

    // === the global bound, with the real tiny.en engine (setup.sh provisions it) ===

    use crate::engine::{DecodeParams, EngineChoice, EngineConfig, ModelSource};

    /// One tiny.en worker behind a scheduler of `slots`.
    fn scheduler(
        slots: usize,
        queue_timeout: Duration,
        decode_timeout: Option<Duration>,
    ) -> (Engine, Scheduler, Arc<DecodeHealth>) {
        let model = ModelSource::resolve("tiny.en", EngineChoice::Auto);
        let engine = Engine::start(EngineConfig {
            threads: 1,
            queue_capacity: slots.max(1),
            ..EngineConfig::new(model)
        })
        .unwrap_or_else(|e| panic!("{e} (hint: run scripts/setup.sh)"));
        let health = Arc::new(DecodeHealth::new(Duration::from_secs(60), 1, 0.5, 0.0));
        let cfg = SchedulerConfig {
            max_pending_global: slots,
            queue_timeout,
            decode_timeout,
        };
        (engine, Scheduler::new(cfg, health.clone()), health)
    }

    fn clip(seconds: usize) -> Arc<[f32]> {
        vec![0.0; seconds * 16_000].into()
    }

    fn params() -> DecodeParams {
        DecodeParams::from_profile(crate::config::DecodeProfileConfig::realtime())
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    const LONG: Duration = Duration::from_secs(30);

    /// A one-second partial, if a slot is free.
    fn partial(engine: &Engine, s: &Scheduler) -> Option<Ticket> {
        s.try_partial(engine, clip(1), params(), CancellationToken::new(), later())
    }

    /// Takes the only slot of a one-slot scheduler; it frees on drop.
    fn hold_slot(engine: &Engine, s: &Scheduler) -> Ticket {
        partial(engine, s).expect("the only slot")
    }

    /// A one-second final, waiting for a slot up to the queue timeout.
    async fn final_(engine: &Engine, s: &Scheduler) -> Result<Ticket, ScheduleError> {
        s.schedule_final(engine, clip(1), params(), CancellationToken::new(), later())
            .await
    }

    /// Spawns `wait` (a schedule call that needs the held slot), checks it
    /// is still waiting after 100 ms (`why`), cancels it, and returns how it
    /// ended, which it must within `within`.
    async fn cancel_while_waiting<F>(
        wait: impl FnOnce(CancellationToken) -> F,
        why: &str,
        within: Duration,
    ) -> Result<(), ScheduleError>
    where
        F: std::future::Future<Output = Result<Ticket, ScheduleError>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let waiting = wait(cancel.clone());
        let mut task = tokio::spawn(async move { waiting.await.map(|_| ()) });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut task)
                .await
                .is_err(),
            "{why}"
        );
        cancel.cancel();
        tokio::time::timeout(within, task)
            .await
            .expect("the cancelled wait ended")
            .expect("task")
    }

    #[tokio::test]
    async fn partials_past_the_global_bound_are_dropped_and_counted() {
        let (engine, s, _) = scheduler(2, LONG, None);
        let a = partial(&engine, &s).expect("first slot");
        let _b = partial(&engine, &s).expect("second slot");
        assert_eq!(s.pending(), 2);
        assert!(partial(&engine, &s).is_none(), "no third slot");
        assert_eq!(s.partials_dropped(), 1);
        let speculative = s.try_final(
            &engine,
            clip(1),
            params(),
            CancellationToken::new(),
            later(),
        );
        assert!(speculative.is_none(), "a speculative final never waits");
        // The slot is held until the result is taken, then freed.
        a.wait().await.expect("transcript");
        assert_eq!(s.pending(), 1);
        assert!(partial(&engine, &s).is_some());
        assert_eq!(s.partials_dropped(), 1);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_final_waits_for_a_slot_up_to_the_queue_timeout() {
        let (engine, s, _) = scheduler(1, Duration::from_millis(200), None);
        let held = hold_slot(&engine, &s);
        let refused = final_(&engine, &s).await;
        match refused {
            Err(ScheduleError::QueueTimeout(wait, pending)) => {
                assert_eq!((wait, pending), (Duration::from_millis(200), 1));
            }
            other => panic!("expected a queue timeout, got {:?}", other.map(|_| ())),
        }
        assert_eq!(s.finals_timed_out(), 1);
        drop(held);
        let ticket = final_(&engine, &s).await.expect("a slot is free again");
        ticket.wait().await.expect("transcript");
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_waiting_final_takes_the_slot_the_moment_it_frees() {
        let (engine, s, _) = scheduler(1, LONG, None);
        let held = hold_slot(&engine, &s);
        let mut waiting = {
            let (engine, s) = (engine.clone(), s.clone());
            tokio::spawn(async move { final_(&engine, &s).await?.wait().await })
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut waiting)
                .await
                .is_err(),
            "no slot: the final must wait"
        );
        drop(held);
        let result = tokio::time::timeout(LONG, waiting)
            .await
            .expect("the final got the freed slot before its queue timeout")
            .expect("task");
        result.expect("transcript");
        assert_eq!(s.finals_timed_out(), 0);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_waiting_final_gives_up_at_once_when_cancelled() {
        let (engine, s, _) = scheduler(1, LONG, None);
        let _held = hold_slot(&engine, &s);
        let (e, sc) = (engine.clone(), s.clone());
        let result = cancel_while_waiting(
            move |cancel| async move {
                sc.schedule_final(&e, clip(1), params(), cancel, later())
                    .await
            },
            "no slot: the final must wait",
            // Well inside the 30 s queue timeout it would otherwise wait out.
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(result, Err(ScheduleError::Engine(EngineError::Cancelled))),
            "{result:?}"
        );
        assert_eq!(s.finals_timed_out(), 0);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_batch_piece_waits_for_a_slot_until_cancelled() {
        let (engine, s, _) = scheduler(1, Duration::from_millis(10), None);
        let _held = hold_slot(&engine, &s);
        let (e, sc) = (engine.clone(), s.clone());
        let result = cancel_while_waiting(
            move |cancel| async move { sc.schedule_batch(&e, clip(1), params(), cancel).await },
            "pieces are not bound by the 10 ms queue timeout",
            LONG,
        )
        .await;
        assert!(
            matches!(result, Err(ScheduleError::Engine(EngineError::Cancelled))),
            "{result:?}"
        );
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_decode_past_its_timeout_is_cancelled_and_judged_unhealthy() {
        let (engine, s, health) = scheduler(1, LONG, Some(Duration::from_millis(1)));
        let ticket = s
            .schedule_final(
                &engine,
                clip(20),
                params(),
                CancellationToken::new(),
                later(),
            )
            .await
            .expect("slot");
        let result = ticket.wait().await;
        assert!(
            matches!(result, Err(ScheduleError::DecodeTimeout(d)) if d == Duration::from_millis(1)),
            "{:?}",
            result.map(|_| ())
        );
        assert_eq!(s.pending(), 0, "the slot is given back with the ticket");
        let why = health.verdict().expect_err("one timeout in one decode");
        assert!(why.contains("timeouts"), "{why}");
        engine.shutdown();
    }
}
