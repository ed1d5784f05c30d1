//! The model registry: every Whisper model the server holds, by id. The
//! default model is loaded at start and can never be unloaded; others are
//! loaded and unloaded at run time through the admin API.
//!
//! Each model is its own [`Engine`] (weights plus worker threads). A session
//! takes a [`ModelLease`] at `CreateSession` and keeps it to its end, so an
//! unloaded model stays alive — marked `unloading`, closed to new sessions —
//! until the last session using it has finished; then its workers are joined
//! and its memory freed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::engine::{Engine, EngineChoice, EngineConfig, EngineError, ModelSource};
use crate::error::{ErrorCode, SttError};

/// Cheap-to-clone handle.
#[derive(Clone)]
pub struct ModelRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    default_id: String,
    /// Worker and thread counts every loaded model gets (the default's).
    template: EngineConfig,
    /// `model.engine`: how a model id resolves to files.
    choice: EngineChoice,
    models: Mutex<BTreeMap<String, Slot>>,
    /// Distinguishes one load of an id from a later one.
    generation: AtomicUsize,
}

struct Slot {
    path: PathBuf,
    state: State,
    /// Leases alive (sessions using the model).
    in_use: Arc<AtomicUsize>,
    generation: usize,
    /// When the current state began.
    since: SystemTime,
    load_ms: Option<u64>,
}

enum State {
    Loading,
    Ready(Engine),
    /// Unloaded by an operator; waits for its sessions, then goes away.
    Unloading(Engine),
    Failed(String),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready(_) => "ready",
            Self::Unloading(_) => "unloading",
            Self::Failed(_) => "failed",
        }
    }
}

/// A session's hold on a model: the model stays loaded while it lives.
pub struct ModelLease {
    id: String,
    engine: Engine,
    in_use: Arc<AtomicUsize>,
}

impl ModelLease {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for ModelLease {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for ModelLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLease").field("id", &self.id).finish()
    }
}

/// One row of `GET /admin/list_models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub path: String,
    /// `loading`, `ready`, `unloading` or `failed`.
    pub status: &'static str,
    pub default: bool,
    /// Sessions holding the model now.
    pub sessions: usize,
    /// Known once loaded.
    pub multilingual: Option<bool>,
    /// `ctranslate2` or `whisper.cpp` (from the model's kind).
    pub engine: &'static str,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    /// Seconds since the Unix epoch at which the current status began.
    pub since_unix: u64,
    pub load_ms: Option<u64>,
    /// Why loading failed.
    pub error: Option<String>,
}

impl ModelRegistry {
    /// Loads the default model (blocking; seconds for large models).
    pub fn start(
        default_id: String,
        cfg: EngineConfig,
        choice: EngineChoice,
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let engine = Engine::start(cfg.clone())?;
        // Every other model decodes through the default's gate: its workers
        // and threads were sized to the cores once, for all models.
        let template = EngineConfig {
            gate: Some(engine.gate()),
            guards: Some(engine.guards().clone()),
            ..cfg.clone()
        };
        let mut models = BTreeMap::new();
        models.insert(
            default_id.clone(),
            Slot {
                path: cfg.model.path.clone(),
                state: State::Ready(engine),
                in_use: Arc::new(AtomicUsize::new(0)),
                generation: 0,
                since: SystemTime::now(),
                load_ms: Some(started.elapsed().as_millis() as u64),
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                default_id,
                template,
                choice,
                models: Mutex::new(models),
                generation: AtomicUsize::new(1),
            }),
        })
    }

    /// Loads model `id` from `path` now (blocking), with the default's
    /// worker settings: `model.preload` at start.
    pub fn load_now(&self, id: String, path: PathBuf) -> Result<(), EngineError> {
        let started = Instant::now();
        let engine = Engine::start(EngineConfig {
            model: ModelSource::from_path(path.clone()),
            ..self.inner.template.clone()
        })?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Slot {
                path,
                state: State::Ready(engine),
                in_use: Arc::new(AtomicUsize::new(0)),
                generation,
                since: SystemTime::now(),
                load_ms: Some(started.elapsed().as_millis() as u64),
            },
        );
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        // Entries are replaced whole; a panic elsewhere cannot tear one.
        self.inner.models.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where model `id` lives, by `model.engine`'s preference.
    pub fn resolve(&self, id: &str) -> ModelSource {
        ModelSource::resolve(id, self.inner.choice)
    }

    pub fn default_id(&self) -> &str {
        &self.inner.default_id
    }

    /// The default model's engine, if it is still running (always, until
    /// shutdown).
    pub fn default_engine(&self) -> Option<Engine> {
        match &self.lock().get(&self.inner.default_id)?.state {
            State::Ready(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// A hold on model `id` (the default when `None` or empty) for a new
    /// session: ERR1010 when no such model is loaded, ERR2003 while it is
    /// still loading (worth a retry).
    pub fn lease(&self, id: Option<&str>) -> Result<ModelLease, SttError> {
        let id = id
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.inner.default_id);
        let models = self.lock();
        let slot = models.get(id).ok_or_else(|| {
            let known: Vec<&str> = models
                .iter()
                .filter(|(_, s)| matches!(s.state, State::Ready(_)))
                .map(|(k, _)| k.as_str())
                .collect();
            SttError::new(
                ErrorCode::Err1010,
                format!(
                    "model_id {id:?} is not loaded (loaded: {}); an operator can load it with POST /admin/load_model",
                    known.join(", ")
                ),
            )
        })?;
        match &slot.state {
            State::Ready(engine) => {
                slot.in_use.fetch_add(1, Ordering::AcqRel);
                Ok(ModelLease {
                    id: id.to_string(),
                    engine: engine.clone(),
                    in_use: slot.in_use.clone(),
                })
            }
            State::Loading => Err(SttError::new(
                ErrorCode::Err2003,
                format!("model {id:?} is still loading; retry shortly"),
            )),
            State::Unloading(_) => Err(SttError::new(
                ErrorCode::Err1010,
                format!("model {id:?} is being unloaded and takes no new sessions"),
            )),
            State::Failed(why) => Err(SttError::new(
                ErrorCode::Err1010,
                format!("model {id:?} failed to load: {why}"),
            )),
        }
    }

    /// Starts loading `path` as model `id` in the background and returns at
    /// once; the outcome shows in [`list`](Self::list). ERR4002 when the id
    /// is loaded, loading or unloading (a failed load may be retried).
    pub fn load(&self, id: String, path: PathBuf) -> Result<(), SttError> {
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        {
            let mut models = self.lock();
            if let Some(slot) = models.get(&id) {
                if !matches!(slot.state, State::Failed(_)) {
                    return Err(SttError::new(
                        ErrorCode::Err4002,
                        format!("model {id:?} is already {}", slot.state.name()),
                    ));
                }
            }
            models.insert(
                id.clone(),
                Slot {
                    path: path.clone(),
                    state: State::Loading,
                    in_use: Arc::new(AtomicUsize::new(0)),
                    generation,
                    since: SystemTime::now(),
                    load_ms: None,
                },
            );
        }
        tracing::info!(model_id = %id, path = %path.display(), "loading model");
        let cfg = EngineConfig {
            model: ModelSource::from_path(path),
            ..self.inner.template.clone()
        };
        let registry = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("load-{id}"))
            .spawn({
                let id = id.clone();
                move || registry.finish_load(id, generation, cfg)
            });
        if let Err(e) = spawned {
            self.lock().remove(&id);
            return Err(
                SttError::new(ErrorCode::Err3001, "cannot start a model loading thread")
                    .with_source(e),
            );
        }
        Ok(())
    }

    fn finish_load(&self, id: String, generation: usize, cfg: EngineConfig) {
        let started = Instant::now();
        if crate::fault::armed(crate::fault::Fault::SlowModelLoad) {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        let result = Engine::start(cfg);
        let load_ms = started.elapsed().as_millis() as u64;
        let mut models = self.lock();
        let Some(slot) = models
            .get_mut(&id)
            .filter(|s| s.generation == generation && matches!(s.state, State::Loading))
        else {
            // Unloaded (or the server stopped) while loading: discard it.
            drop(models);
            if let Ok(engine) = result {
                engine.shutdown();
            }
            tracing::info!(model_id = %id, "model load finished after it was unloaded; discarded");
            return;
        };
        slot.since = SystemTime::now();
        slot.load_ms = Some(load_ms);
        match result {
            Ok(engine) => {
                tracing::info!(model_id = %id, load_ms, "model loaded");
                slot.state = State::Ready(engine);
            }
            Err(e) => {
                tracing::error!(model_id = %id, error = %e, "model failed to load");
                slot.state = State::Failed(e.to_string());
            }
        }
    }

    /// Unloads model `id`: new sessions can no longer pick it; sessions
    /// using it finish first, then its workers stop. ERR4003 for the
    /// default model or an id that is not loaded.
    pub fn unload(&self, id: &str) -> Result<(), SttError> {
        if id == self.inner.default_id {
            return Err(SttError::new(
                ErrorCode::Err4003,
                format!("model {id:?} is the default model and cannot be unloaded"),
            ));
        }
        let mut models = self.lock();
        let Some(slot) = models.get_mut(id) else {
            return Err(SttError::new(
                ErrorCode::Err4003,
                format!("model {id:?} is not loaded"),
            ));
        };
        let engine = match std::mem::replace(&mut slot.state, State::Loading) {
            State::Ready(engine) => engine,
            State::Unloading(engine) => {
                slot.state = State::Unloading(engine);
                return Err(SttError::new(
                    ErrorCode::Err4003,
                    format!("model {id:?} is already being unloaded"),
                ));
            }
            // Loading or failed: forget it; a loader still running will
            // find its slot gone and discard what it loaded.
            State::Loading | State::Failed(_) => {
                models.remove(id);
                tracing::info!(model_id = %id, "model unloaded");
                return Ok(());
            }
        };
        slot.state = State::Unloading(engine.clone());
        slot.since = SystemTime::now();
        let in_use = slot.in_use.clone();
        let generation = slot.generation;
        drop(models);
        tracing::info!(
            model_id = %id,
            sessions = in_use.load(Ordering::Acquire),
            "unloading model once its sessions end"
        );
        let registry = self.clone();
        let id = id.to_string();
        std::thread::Builder::new()
            .name(format!("unload-{id}"))
            .spawn(move || {
                while in_use.load(Ordering::Acquire) > 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut models = registry.lock();
                if models.get(&id).is_some_and(|s| s.generation == generation) {
                    models.remove(&id);
                }
                drop(models);
                engine.shutdown();
                tracing::info!(model_id = %id, "model unloaded");
            })
            .map(|_| ())
            .map_err(|e| {
                SttError::new(ErrorCode::Err3001, "cannot start a model unloading thread")
                    .with_source(e)
            })
    }

    /// Every model and its status, default first.
    pub fn list(&self) -> Vec<ModelInfo> {
        let models = self.lock();
        let mut out: Vec<ModelInfo> = models
            .iter()
            .map(|(id, slot)| {
                let engine = match &slot.state {
                    State::Ready(e) | State::Unloading(e) => Some(e),
                    _ => None,
                };
                ModelInfo {
                    id: id.clone(),
                    path: slot.path.display().to_string(),
                    status: slot.state.name(),
                    default: *id == self.inner.default_id,
                    sessions: slot.in_use.load(Ordering::Acquire),
                    multilingual: engine.map(Engine::multilingual),
                    engine: ModelSource::from_path(&slot.path).kind.as_str(),
                    workers: engine.map(Engine::workers),
                    threads: engine.map(Engine::threads),
                    since_unix: slot
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    load_ms: slot.load_ms,
                    error: match &slot.state {
                        State::Failed(why) => Some(why.clone()),
                        _ => None,
                    },
                }
            })
            .collect();
        out.sort_by_key(|m| !m.default);
        out
    }

    /// Decodes running now, across models.
    pub fn busy(&self) -> usize {
        self.engines().iter().map(Engine::busy).sum()
    }

    /// Guard rejections across every model (they share one counter).
    pub fn guards(&self) -> Option<crate::engine::GuardCounts> {
        Some(self.default_engine()?.guards().clone())
    }

    /// Partials cancelled so that a final could run, across models.
    pub fn partials_preempted(&self) -> u64 {
        self.engines().iter().map(Engine::partials_preempted).sum()
    }

    /// Fraction of the decode slots busy now (0 with no model ready).
    pub fn busy_fraction(&self) -> f64 {
        match self.decode_slots() {
            0 => 0.0,
            slots => self.busy() as f64 / slots as f64,
        }
    }

    /// Decodes that may run at once across every model (the shared CPU
    /// gate); 0 while the default model is not ready.
    pub fn decode_slots(&self) -> usize {
        self.default_engine().map_or(0, |e| e.gate().slots())
    }

    /// Decode workers across models.
    pub fn workers(&self) -> usize {
        self.engines().iter().map(Engine::workers).sum()
    }

    fn engines(&self) -> Vec<Engine> {
        self.lock()
            .values()
            .filter_map(|s| match &s.state {
                State::Ready(e) | State::Unloading(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// Stops every engine and joins its workers (blocking). Loads still
    /// running are discarded when they finish.
    pub fn shutdown(&self) {
        let engines = {
            let mut models = self.lock();
            let engines = models
                .values()
                .filter_map(|s| match &s.state {
                    State::Ready(e) | State::Unloading(e) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>();
            models.clear();
            engines
        };
        for e in engines {
            e.shutdown();
        }
    }
}
