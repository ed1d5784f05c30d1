//! The worker pool: start-up (load the model once, one state per worker),
//! the two job queues, submission and shutdown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio_util::sync::CancellationToken;
use whisper_rs::{WhisperContext, WhisperContextParameters};

use super::gate::CpuGate;
use super::worker::Worker;
use super::{DecodeJob, DecodeParams, EngineError, Transcript};

/// How to start an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// ggml model file.
    pub model_path: PathBuf,
    /// Worker threads, each with its own WhisperState (~125 MB for tiny.en).
    pub workers: usize,
    /// ggml threads per worker. Keep workers × threads ≤ cores: ggml threads
    /// spin-wait and oversubscription collapses throughput.
    pub threads: usize,
    /// Capacity of each job queue (finals, partials).
    pub queue_capacity: usize,
    /// Use the GPU backend when built with one.
    pub use_gpu: bool,
    /// whisper.cpp flash attention (slower on the CPUs we measured).
    pub flash_attn: bool,
    /// Shared bound on decodes running at once across engines; `None`
    /// gives this engine its own with `workers` slots.
    pub gate: Option<CpuGate>,
}

impl EngineConfig {
    /// Defaults for `model_path`: one worker using every core.
    pub fn new(model_path: PathBuf) -> Self {
        Self {
            model_path,
            workers: 1,
            threads: default_threads(1),
            queue_capacity: 64,
            use_gpu: cfg!(feature = "cuda"),
            flash_attn: false,
            gate: None,
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
    model_path: PathBuf,
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
}

impl Engine {
    /// Loads the model and starts the workers. Blocking (seconds for large
    /// models): call from a blocking context.
    pub fn start(cfg: EngineConfig) -> Result<Self, EngineError> {
        whisper_rs::install_logging_hooks();
        if !cfg.model_path.is_file() {
            return Err(EngineError::ModelMissing {
                path: cfg.model_path.clone(),
            });
        }
        let load_err = |detail: String| EngineError::ModelLoad {
            path: cfg.model_path.clone(),
            detail,
        };
        let path = cfg
            .model_path
            .to_str()
            .ok_or_else(|| load_err("path is not valid UTF-8".into()))?;
        let params = WhisperContextParameters {
            use_gpu: cfg.use_gpu,
            flash_attn: cfg.flash_attn,
            ..Default::default()
        };
        let ctx =
            WhisperContext::new_with_params(path, params).map_err(|e| load_err(e.to_string()))?;
        let ctx = Arc::new(ctx);
        let multilingual = ctx.is_multilingual();

        let workers = cfg.workers.max(1);
        let threads = cfg.threads.max(1);
        let (final_tx, final_rx) = bounded(cfg.queue_capacity.max(1));
        let (partial_tx, partial_rx) = bounded(cfg.queue_capacity.max(1));
        let busy = Arc::new(AtomicUsize::new(0));
        let gate = cfg.gate.clone().unwrap_or_else(|| CpuGate::new(workers));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let state = ctx
                .create_state()
                .map_err(|e| load_err(format!("creating decode state {i}: {e}")))?;
            let worker = Worker::new(state, multilingual, threads, busy.clone(), gate.clone());
            let (f, p) = (final_rx.clone(), partial_rx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || worker.run(f, p))
                .map_err(|e| load_err(format!("spawning worker {i}: {e}")))?;
            handles.push(handle);
        }
        tracing::info!(
            model = %cfg.model_path.display(),
            workers,
            threads,
            multilingual,
            "decode engine ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                model_path: cfg.model_path,
                multilingual,
                workers,
                threads,
                queue_capacity: cfg.queue_capacity.max(1),
                queues: RwLock::new(Some((final_tx, partial_tx))),
                handles: Mutex::new(handles),
                busy,
                gate,
            }),
        })
    }

    /// The model file this engine runs.
    pub fn model_path(&self) -> &std::path::Path {
        &self.inner.model_path
    }

    /// Whether the model knows languages other than English.
    pub fn multilingual(&self) -> bool {
        self.inner.multilingual
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// ggml threads per worker.
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
                tracing::error!("a whisper worker panicked");
            }
        }
    }
}
