//! A prewarmed pool of Silero sessions. It starts with `prewarm` sessions,
//! lends one to each stream, grows by `growth_factor` when all are in use
//! (up to `max_sessions`), and refuses beyond that — the caller maps the
//! refusal to ERR1008 rather than letting an overload pile up.

use std::sync::{Arc, Mutex};

use super::silero::{runtime, SileroModel, StreamState, FRAME};
use super::{VadConfig, VadError};

/// Cheap-to-clone handle to the pool.
#[derive(Clone)]
pub struct VadPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    cfg: VadConfig,
    env: &'static ort::environment::Environment,
    /// Idle sessions and how many exist / may exist now. Short critical
    /// sections only: loading a session happens outside the lock.
    slots: Mutex<Slots>,
}

struct Slots {
    idle: Vec<SileroModel>,
    /// Sessions created (idle + lent).
    created: usize,
    /// Current capacity; grows up to `cfg.max_sessions`.
    capacity: usize,
    lent: usize,
}

impl VadPool {
    /// Loads ONNX Runtime and prewarms `cfg.prewarm` sessions.
    pub fn new(cfg: VadConfig) -> Result<Self, VadError> {
        let env = runtime(&cfg.runtime_path)?;
        let limit = cfg.max_sessions.max(1);
        let capacity = if cfg.pool_size == 0 {
            limit
        } else {
            cfg.pool_size.min(limit)
        };
        let prewarm = cfg.prewarm.min(capacity).max(1);
        let mut idle = Vec::with_capacity(prewarm);
        for _ in 0..prewarm {
            idle.push(SileroModel::load(env, &cfg.model_path)?);
        }
        tracing::info!(prewarmed = prewarm, capacity, limit, "VAD pool ready");
        Ok(Self {
            inner: Arc::new(PoolInner {
                env,
                slots: Mutex::new(Slots {
                    created: idle.len(),
                    idle,
                    capacity,
                    lent: 0,
                }),
                cfg,
            }),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Borrows a session for one stream, with fresh per-stream state.
    pub fn acquire(&self) -> Result<VadStream, VadError> {
        let limit = self.inner.cfg.max_sessions.max(1);
        let reused = {
            let mut s = self.slots();
            if s.lent >= limit {
                return Err(VadError::Exhausted { limit });
            }
            if let Some(model) = s.idle.pop() {
                s.lent += 1;
                Some(model)
            } else {
                if s.created >= s.capacity {
                    let grown =
                        ((s.capacity as f64) * self.inner.cfg.growth_factor).ceil() as usize;
                    s.capacity = grown.max(s.capacity + 1).min(limit);
                    tracing::info!(capacity = s.capacity, "VAD pool grown");
                }
                // Reserve the slot before loading outside the lock.
                s.created += 1;
                s.lent += 1;
                None
            }
        };
        let model = match reused {
            Some(m) => m,
            None => match SileroModel::load(self.inner.env, &self.inner.cfg.model_path) {
                Ok(m) => m,
                Err(e) => {
                    let mut s = self.slots();
                    s.created -= 1;
                    s.lent -= 1;
                    return Err(e);
                }
            },
        };
        Ok(VadStream {
            model: Some(model),
            pool: self.clone(),
            state: StreamState::default(),
            pending: Vec::with_capacity(FRAME * 2),
            frames: 0,
        })
    }

    /// Sessions lent out right now.
    pub fn in_use(&self) -> usize {
        self.slots().lent
    }

    /// Sessions that exist (idle + lent).
    pub fn created(&self) -> usize {
        self.slots().created
    }

    fn give_back(&self, model: SileroModel) {
        let mut s = self.slots();
        s.lent = s.lent.saturating_sub(1);
        if s.idle.len() + s.lent < s.capacity {
            s.idle.push(model);
        } else {
            s.created = s.created.saturating_sub(1);
        }
    }
}

/// One stream's detector: a pooled model plus that stream's recurrent state
/// and not-yet-framed samples. Returns the model to the pool on drop.
pub struct VadStream {
    model: Option<SileroModel>,
    pool: VadPool,
    state: StreamState,
    pending: Vec<f32>,
    frames: u64,
}

impl VadStream {
    /// Feeds 16 kHz samples; returns the speech probability of every complete
    /// 32 ms frame, in order. Leftover samples wait for the next call.
    pub fn push(&mut self, samples: &[f32], probs: &mut Vec<f32>) -> Result<(), VadError> {
        if crate::fault::armed(crate::fault::Fault::Vad) {
            return Err(VadError::Inference(crate::fault::INJECTED.into()));
        }
        let model = self
            .model
            .as_mut()
            .ok_or_else(|| VadError::Inference("detector already released".into()))?;
        self.pending.extend_from_slice(samples);
        let mut used = 0;
        while self.pending.len() - used >= FRAME {
            let p = model.predict(&mut self.state, &self.pending[used..used + FRAME])?;
            probs.push(p);
            used += FRAME;
            self.frames += 1;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Frames scored so far (frame `i` covers samples `i*512 .. (i+1)*512`).
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

impl Drop for VadStream {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            self.pool.give_back(model);
        }
    }
}
