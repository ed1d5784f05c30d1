//! The decode scheduler: a global bound on decodes that are queued or
//! running (`server.max_pending_decodes_global`) in front of the engine's
//! worker pool. Partials take a slot only if one is free, otherwise they are
//! dropped and counted; finals wait up to `decode_queue_timeout_sec` for a
//! slot (then ERR2001). A slot is held until the result is taken, so the
//! bound covers queued and running work alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::engine::{DecodeJob, DecodeParams, Engine, EngineError, Priority, Transcript};

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

/// Cheap-to-clone handle.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    cfg: SchedulerConfig,
    /// Permits = free global slots.
    slots: Arc<Semaphore>,
    partials_dropped: AtomicU64,
    finals_timed_out: AtomicU64,
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
    /// Held until the result is taken: the global bound covers running work.
    _slot: OwnedSemaphorePermit,
}

impl Scheduler {
    pub fn new(engine: Engine, cfg: SchedulerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(cfg.max_pending_global.max(1))),
                engine,
                cfg,
                partials_dropped: AtomicU64::new(0),
                finals_timed_out: AtomicU64::new(0),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
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
    pub fn try_partial(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> Option<Ticket> {
        let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
            self.count_dropped_partial();
            return None;
        };
        match self.submit(audio, params, cancel, slot, Priority::Partial) {
            Ok(t) => Some(t),
            Err(_) => {
                self.count_dropped_partial();
                None
            }
        }
    }

    /// Schedules a final only if a slot is free now (speculative finals,
    /// which must never make the session wait).
    pub fn try_final(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> Option<Ticket> {
        let slot = self.inner.slots.clone().try_acquire_owned().ok()?;
        self.submit(audio, params, cancel, slot, Priority::Final)
            .ok()
    }

    /// Schedules a final, waiting up to the queue timeout for a slot.
    pub async fn schedule_final(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> Result<Ticket, ScheduleError> {
        let wait = self.inner.cfg.queue_timeout;
        let slot = match tokio::time::timeout(wait, self.inner.slots.clone().acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(EngineError::Stopped.into()),
            Err(_) => {
                self.inner.finals_timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(ScheduleError::QueueTimeout(wait, self.pending()));
            }
        };
        self.submit(audio, params, cancel, slot, Priority::Final)
            .map_err(Into::into)
    }

    fn submit(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
        slot: OwnedSemaphorePermit,
        priority: Priority,
    ) -> Result<Ticket, EngineError> {
        let (job, rx) = DecodeJob::new(audio, params, cancel.clone());
        // The engine's queues hold at least max_pending_global jobs, so with
        // a slot in hand this only fails when the engine has stopped.
        self.inner.engine.try_submit(job, priority)?;
        Ok(Ticket {
            rx,
            cancel,
            decode_timeout: self.inner.cfg.decode_timeout,
            scheduled: Instant::now(),
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
                    return Err(ScheduleError::DecodeTimeout(limit));
                }
            },
            None => self.rx.await,
        };
        Ok(result.unwrap_or(Err(EngineError::Stopped))?)
    }
}
