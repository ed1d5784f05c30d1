//! The worker pool: start-up (load the model once, one decoder per worker),
//! the two job queues, submission and shutdown. Backend-neutral: the model
//! kind picks the [`LoadedModel`] and everything else is shared.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backend::LoadedModel;
use super::gate::CpuGate;
use super::guard::GuardCounts;
use super::queue::JobQueue;
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
    /// Capacity of each class of the job queue (finals, partials).
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

/// A job's class. Workers always take finals first, and a final arriving
/// while every worker is busy preempts a running partial.
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
    queue: Arc<JobQueue>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Jobs being decoded right now.
    busy: Arc<AtomicUsize>,
    /// What each worker runs now, so a final can preempt a partial.
    running: Running,
    partials_preempted: AtomicU64,
    gate: CpuGate,
    guards: GuardCounts,
}

/// The running partial a new final should cancel: none while a worker is
/// free (the final will get it), else the first partial not already
/// cancelled.
fn preemptee(running: &[Option<(Priority, CancellationToken)>]) -> Option<&CancellationToken> {
    if running.iter().any(Option::is_none) {
        return None;
    }
    running
        .iter()
        .flatten()
        .find(|(p, cancel)| *p == Priority::Partial && !cancel.is_cancelled())
        .map(|(_, cancel)| cancel)
}

/// Per worker: the class and cancel token of the job it decodes, if any.
pub(super) type Running = Arc<Mutex<Vec<Option<(Priority, CancellationToken)>>>>;

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
        let queue = Arc::new(JobQueue::new(cfg.queue_capacity));
        let running: Running = Arc::new(Mutex::new(vec![None; workers]));
        let busy = Arc::new(AtomicUsize::new(0));
        let gate = cfg.gate.clone().unwrap_or_else(|| CpuGate::new(workers));
        let guards = cfg.guards.clone().unwrap_or_default();
        let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
        for i in 0..workers {
            // Each decoder is made on its worker's own thread (CTranslate2
            // keeps its thread count per thread); the worker says when it
            // is ready or why it could not start.
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let (jobs, running) = (queue.clone(), running.clone());
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
                        index: i,
                        decoder,
                        kind: model.kind(),
                        multilingual,
                        busy,
                        running,
                        gate,
                        guards,
                    };
                    worker.run(&jobs);
                })
                .map_err(|e| load_err(format!("spawning worker {i}: {e}")))?;
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(load_err(format!("worker {i} stopped while starting"))));
            if let Err(e) = ready {
                // Let the started workers see the closed queue and exit.
                queue.close();
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
                queue,
                handles: Mutex::new(handles),
                busy,
                running,
                partials_preempted: AtomicU64::new(0),
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

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        let (finals, partials) = self.inner.queue.len();
        finals + partials
    }

    /// Partials cancelled so that a final could run.
    pub fn partials_preempted(&self) -> u64 {
        self.inner.partials_preempted.load(Ordering::Relaxed)
    }

    /// Queues a job without waiting: a full queue is an error (the caller
    /// decides whether to drop a partial or wait for a final). A final
    /// that finds every worker busy preempts a running partial, so no
    /// partial ever holds up a final for longer than its backend takes to
    /// notice the cancellation.
    pub fn try_submit(&self, job: DecodeJob, priority: Priority) -> Result<(), EngineError> {
        self.inner.queue.push(job, priority).map_err(|r| r.1)?;
        if priority == Priority::Final {
            self.preempt_partial();
        }
        Ok(())
    }

    /// Queues a job, waiting up to `timeout` for room.
    pub fn submit_timeout(
        &self,
        job: DecodeJob,
        priority: Priority,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        self.inner.queue.push_timeout(job, priority, timeout)?;
        if priority == Priority::Final {
            self.preempt_partial();
        }
        Ok(())
    }

    /// Cancels one running partial when no worker is free for a final.
    fn preempt_partial(&self) {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cancel) = preemptee(&running) {
            cancel.cancel();
            self.inner
                .partials_preempted
                .fetch_add(1, Ordering::Relaxed);
        }
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
        self.inner.queue.close();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_preempts_a_running_partial_only_when_no_worker_is_free() {
        let p = CancellationToken::new();
        let f = CancellationToken::new();
        let idle = vec![Some((Priority::Partial, p.clone())), None];
        assert!(preemptee(&idle).is_none(), "a free worker takes the final");
        let full = vec![
            Some((Priority::Final, f.clone())),
            Some((Priority::Partial, p.clone())),
        ];
        let chosen = preemptee(&full).expect("the partial");
        chosen.cancel();
        assert!(p.is_cancelled() && !f.is_cancelled());
        // Already cancelled: a second final finds nothing more to take.
        assert!(preemptee(&full).is_none());
        let finals_only = vec![Some((Priority::Final, f))];
        assert!(
            preemptee(&finals_only).is_none(),
            "finals are never preempted"
        );
    }
}
