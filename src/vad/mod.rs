//! Voice activity detection: Silero VAD v6 on ONNX Runtime (loaded at run
//! time from a provisioned library), a prewarmed pool of model sessions, a
//! per-stream detector that turns audio into speech probabilities every
//! 32 ms, and the endpointing state machine that turns those into utterances.

pub mod endpoint;
mod pool;
mod silero;

use std::path::PathBuf;

pub use endpoint::{EndpointConfig, Endpointer, SpeechEvent};
pub use pool::{VadPool, VadStream};
pub use silero::{FRAME, SAMPLE_RATE};

/// How to find and pool the Silero model.
#[derive(Debug, Clone)]
pub struct VadConfig {
    /// `silero_vad.onnx`.
    pub model_path: PathBuf,
    /// `libonnxruntime.so`.
    pub runtime_path: PathBuf,
    /// Sessions kept in the pool before it grows.
    pub pool_size: usize,
    /// Sessions created at start-up (first-session latency).
    pub prewarm: usize,
    /// Growth factor when every pooled session is in use.
    pub growth_factor: f64,
    /// Hard cap (server.max_sessions): beyond it acquisition fails.
    pub max_sessions: usize,
}

/// What can go wrong with the VAD.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("ONNX Runtime library not found at {}", path.display())]
    RuntimeMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {}: {detail}", path.display())]
    RuntimeLoad { path: PathBuf, detail: String },
    #[error("Silero VAD model not found at {}", path.display())]
    ModelMissing { path: PathBuf },
    #[error("cannot load Silero VAD model {}: {detail}", path.display())]
    ModelLoad { path: PathBuf, detail: String },
    #[error("VAD capacity exhausted: all {limit} VAD sessions are in use")]
    Exhausted { limit: usize },
    #[error("VAD inference failed: {0}")]
    Inference(String),
}

impl VadError {
    /// The hint a person needs to fix it, when we know one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::RuntimeMissing { .. } | Self::ModelMissing { .. } => Some(
                "run `scripts/setup.sh` to provision it, or point vad.onnxruntime_path / vad.model_path / ORT_DYLIB_PATH at the files",
            ),
            Self::RuntimeLoad { .. } => {
                Some("the file must be ONNX Runtime 1.31 or newer (libonnxruntime.so from the onnxruntime 1.31.1 wheel)")
            }
            _ => None,
        }
    }
}
