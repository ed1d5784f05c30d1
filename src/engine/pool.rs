//! The worker pool: start-up (load the model once, one decoder per worker),
//! the two job queues, submission and shutdown. Backend-neutral: the model
//! kind picks the [`LoadedModel`] and everything else is shared.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio_util::sync::CancellationToken;

use super::backend::LoadedModel;
use super::gate::CpuGate;
use super::guard::GuardCounts;
use super::worker::Worker;
use super::{DecodeJob, DecodeParams, EngineError, EngineKind, ModelSource, Transcript};

/// How to start an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The model and the backend that reads it.
    pub model: ModelSource,
    /// Worker threads, each with its own decoder state (whisper.cpp: a
    /// WhisperState, ~125 MB for tiny.en; CTranslate2: a replica sharing
    /// the weights).
    pub workers: usize,
    /// Compute threads per worker. Keep workers × threads ≤ cores: ggml and
    /// OpenMP threads spin-wait, and oversubscription collapses throughput.
    pub threads: usize,
    /// faster-whisper's compute type (`model.compute_type`); CTranslate2
    /// quantises the weights to it at load (`default` = int8 on CPU, the
    /// fastest measured). whisper.cpp uses the ggml file's own precision.
    pub compute_type: String,
    /// Capacity of each job queue (finals, partials).
    pub queue_capacity: usize,
    /// Use the GPU backend when built with one.
    pub use_gpu: bool,
    /// whisper.cpp flash attention (slower on the CPUs we measured).
    pub flash_attn: bool,
    /// Shared bound on decodes running at once across engines; `None`
    /// gives this engine its own with `workers` slots.
    pub gate: Option<CpuGate>,
    /// Guard counters shared across engines (a server counts all its
    /// models together); `None` gives this engine its own.
    pub guards: Option<GuardCounts>,
}

impl EngineConfig {
    /// Defaults for `model`: one worker using every core.
    pub fn new(model: ModelSource) -> Self {
        Self {
            model,
            workers: 1,
            threads: default_threads(1),
            compute_type: "default".into(),
            queue_capacity: 64,
            use_gpu: cfg!(feature = "cuda"),
            flash_attn: false,
            gate: None,
            guards: None,
        }
    }
}

/// Threads per worker so that `workers` workers fill the cores exactly once.
pub fn default_threads(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / workers.max(1)).max(1)
}

/// Which queue a job goes to. Workers always take finals first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Final,
    Partial,
}

/// Handle to a running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    model: ModelSource,
    multilingual: bool,
    workers: usize,
    threads: usize,
    queue_capacity: usize,
    /// The two bounded queues (finals, partials); `None` once shut down, which
    /// disconnects the workers so they exit.
    queues: RwLock<Option<(Sender<DecodeJob>, Sender<DecodeJob>)>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Jobs being decoded right now.
    busy: Arc<AtomicUsize>,
    gate: CpuGate,
    guards: GuardCounts,
}

impl Engine {
    /// Loads the model and starts the workers. Blocking (seconds for large
    /// models): call from a blocking context.
    pub fn start(cfg: EngineConfig) -> Result<Self, EngineError> {
        cfg.model.check()?;
        let model: Arc<dyn LoadedModel> = match cfg.model.kind {
            EngineKind::WhisperCpp => Arc::new(super::whisper_cpp::WhisperModel::load(&cfg)?),
            #[cfg(feature = "ctranslate2")]
            EngineKind::CTranslate2 => Arc::new(super::ctranslate2::Ct2Model::load(&cfg)?),
            #[cfg(not(feature = "ctranslate2"))]
            EngineKind::CTranslate2 => unreachable!("ModelSource::check refuses it"),
        };
        let multilingual = model.multilingual();
        let load_err = |detail: String| EngineError::ModelLoad {
            path: cfg.model.path.clone(),
            detail,
        };

        let workers = cfg.workers.max(1);
        let threads = cfg.threads.max(1);
        let (final_tx, final_rx) = bounded(cfg.queue_capacity.max(1));
        let (partial_tx, partial_rx) = bounded(cfg.queue_capacity.max(1));
        let busy = Arc::new(AtomicUsize::new(0));
        let gate = cfg.gate.clone().unwrap_or_else(|| CpuGate::new(workers));
        let guards = cfg.guards.clone().unwrap_or_default();
        let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
        for i in 0..workers {
            // Each decoder is made on its worker's own thread (CTranslate2
            // keeps its thread count per thread); the worker says when it
            // is ready or why it could not start.
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let (f, p) = (final_rx.clone(), partial_rx.clone());
            let (model, busy, gate, guards) =
                (model.clone(), busy.clone(), gate.clone(), guards.clone());
            let handle = std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || {
                    let decoder = match model.decoder(threads) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let worker = Worker {
                        decoder,
                        kind: model.kind(),
                        multilingual,
                        busy,
                        gate,
                        guards,
                    };
                    worker.run(f, p);
                })
                .map_err(|e| load_err(format!("spawning worker {i}: {e}")))?;
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(load_err(format!("worker {i} stopped while starting"))));
            if let Err(e) = ready {
                // Let the started workers see closed queues and exit.
                drop((final_tx, partial_tx));
                for h in handles {
                    let _ = h.join();
                }
                let _ = handle.join();
                return Err(e);
            }
            handles.push(handle);
        }
        tracing::info!(
            model = %cfg.model.path.display(),
            engine = cfg.model.kind.as_str(),
            workers,
            threads,
            multilingual,
            "decode engine ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                model: cfg.model,
                multilingual,
                workers,
                threads,
                queue_capacity: cfg.queue_capacity.max(1),
                queues: RwLock::new(Some((final_tx, partial_tx))),
                handles: Mutex::new(handles),
                busy,
                gate,
                guards,
            }),
        })
    }

    /// The model file or directory this engine runs.
    pub fn model_path(&self) -> &Path {
        &self.inner.model.path
    }

    /// The model and its backend.
    pub fn model(&self) -> &ModelSource {
        &self.inner.model
    }

    /// Guard rejections so far.
    pub fn guards(&self) -> &GuardCounts {
        &self.inner.guards
    }

    /// Whether the model knows languages other than English.
    pub fn multilingual(&self) -> bool {
        self.inner.multilingual
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Compute threads per worker.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// The gate this engine's workers pass to decode; hand it to engines
    /// for other models so they share the CPU instead of fighting over it.
    pub fn gate(&self) -> CpuGate {
        self.inner.gate.clone()
    }

    /// Jobs being decoded right now.
    pub fn busy(&self) -> usize {
        self.inner.busy.load(Ordering::Relaxed)
    }

    /// Jobs waiting in the queues.
    pub fn queued(&self) -> usize {
        match &*self.read_queues() {
            Some((f, p)) => f.len() + p.len(),
            None => 0,
        }
    }

    fn read_queues(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, Option<(Sender<DecodeJob>, Sender<DecodeJob>)>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // senders inside are still fine to use.
        self.inner.queues.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job without waiting: a full queue is an error (the caller
    /// decides whether to drop a partial or wait for a final).
    pub fn try_submit(&self, job: DecodeJob, priority: Priority) -> Result<(), EngineError> {
        let guard = self.read_queues();
        let Some((finals, partials)) = guard.as_ref() else {
            return Err(EngineError::Stopped);
        };
        let tx = match priority {
            Priority::Final => finals,
            Priority::Partial => partials,
        };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::QueueFull {
                capacity: self.inner.queue_capacity,
            },
            TrySendError::Disconnected(_) => EngineError::Stopped,
        })
    }

    /// Queues a job, waiting up to `timeout` for room.
    pub fn submit_timeout(
        &self,
        job: DecodeJob,
        priority: Priority,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        let tx = {
            let guard = self.read_queues();
            let Some((finals, partials)) = guard.as_ref() else {
                return Err(EngineError::Stopped);
            };
            match priority {
                Priority::Final => finals.clone(),
                Priority::Partial => partials.clone(),
            }
        };
        tx.send_timeout(job, timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => EngineError::QueueFull {
                capacity: self.inner.queue_capacity,
            },
            crossbeam_channel::SendTimeoutError::Disconnected(_) => EngineError::Stopped,
        })
    }

    /// Decodes `audio` as a final and waits for the result (async callers).
    pub async fn decode(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> Result<Transcript, EngineError> {
        let (job, rx) = DecodeJob::new(audio, params, cancel);
        self.try_submit(job, Priority::Final)?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Decodes `audio` and blocks until the result (CLI and benches).
    pub fn decode_blocking(
        &self,
        audio: Arc<[f32]>,
        params: DecodeParams,
    ) -> Result<Transcript, EngineError> {
        let (job, rx) = DecodeJob::new(audio, params, CancellationToken::new());
        self.submit_timeout(job, Priority::Final, Duration::from_secs(3600))?;
        rx.blocking_recv().unwrap_or(Err(EngineError::Stopped))
    }

    /// Stops accepting jobs, lets queued ones finish and joins the workers.
    pub fn shutdown(&self) {
        let taken = self
            .inner
            .queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(taken);
        let handles: Vec<_> = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a decode worker panicked");
            }
        }
    }
}
