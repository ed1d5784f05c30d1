//! Silero VAD v6 through `ort`. The ONNX Runtime library is loaded
//! dynamically, once per process, from an explicit path; without that `ort`
//! would panic at first use, so every entry point checks the file first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use super::VadError;

/// New samples per VAD call: 32 ms at 16 kHz.
pub const FRAME: usize = 512;
/// Samples of the previous frame prepended to each call (Silero v6 needs them;
/// fed 512 bare samples it scores ~0 everywhere).
const CONTEXT: usize = 64;
/// Rate the model runs at.
pub const SAMPLE_RATE: i64 = 16_000;
/// Recurrent state: [2, 1, 128].
const STATE: usize = 2 * 128;

/// The process-wide ONNX Runtime environment, or why it could not be made.
/// ONNX Runtime allows one environment per process.
static RUNTIME: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> =
    OnceLock::new();

/// Loads ONNX Runtime from `lib` (first call wins for the process).
pub(super) fn runtime(lib: &Path) -> Result<&'static ort::environment::Environment, VadError> {
    if RUNTIME.get().is_none() && !lib.is_file() {
        return Err(VadError::RuntimeMissing {
            path: lib.to_path_buf(),
        });
    }
    let entry = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("stt-vad")
            .build()
            .map_err(|e| e.to_string())?;
        Ok((env, lib.to_path_buf()))
    });
    match entry {
        Ok((env, _)) => Ok(env),
        Err(detail) => Err(VadError::RuntimeLoad {
            path: lib.to_path_buf(),
            detail: detail.clone(),
        }),
    }
}

/// One ONNX session of the Silero model. `run` needs `&mut`, so each stream
/// borrows one from the pool for its lifetime.
pub(super) struct SileroModel {
    session: Session,
}

impl SileroModel {
    pub(super) fn load(
        env: &ort::environment::Environment,
        model: &Path,
    ) -> Result<Self, VadError> {
        if !model.is_file() {
            return Err(VadError::ModelMissing {
                path: model.to_path_buf(),
            });
        }
        let load_err = |e: &dyn std::fmt::Display| VadError::ModelLoad {
            path: model.to_path_buf(),
            detail: e.to_string(),
        };
        // One thread each: a 32 ms frame costs ~0.2 ms, and more threads
        // would only fight the whisper workers for cores.
        let session = Session::builder(env)
            .map_err(|e| load_err(&e))?
            .with_intra_threads(1)
            .map_err(|e| load_err(&e))?
            .with_inter_threads(1)
            .map_err(|e| load_err(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_err(&e))?
            .commit_from_file(model)
            .map_err(|e| load_err(&e))?;
        Ok(Self { session })
    }

    /// Speech probability of one 512-sample frame, advancing `state`.
    pub(super) fn predict(
        &mut self,
        state: &mut StreamState,
        frame: &[f32],
    ) -> Result<f32, VadError> {
        debug_assert_eq!(frame.len(), FRAME);
        let err = |e: ort::Error| VadError::Inference(e.to_string());
        state.input[..CONTEXT].copy_from_slice(&state.context);
        state.input[CONTEXT..].copy_from_slice(frame);
        let input = TensorRef::from_array_view(([1usize, CONTEXT + FRAME], &state.input[..]))
            .map_err(err)?;
        let rnn = TensorRef::from_array_view(([2usize, 1, 128], &state.rnn[..])).map_err(err)?;
        let sr =
            TensorRef::from_array_view(((), std::slice::from_ref(&SAMPLE_RATE))).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => rnn, "sr" => sr])
            .map_err(err)?;
        let (_, prob) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let prob = prob.first().copied().unwrap_or(0.0);
        let (_, next) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        if next.len() == STATE {
            state.rnn.copy_from_slice(next);
        }
        state.context.copy_from_slice(&frame[FRAME - CONTEXT..]);
        Ok(prob)
    }
}

/// Per-stream recurrent state and context; reset for every session.
pub(super) struct StreamState {
    rnn: [f32; STATE],
    context: [f32; CONTEXT],
    input: [f32; CONTEXT + FRAME],
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            rnn: [0.0; STATE],
            context: [0.0; CONTEXT],
            input: [0.0; CONTEXT + FRAME],
        }
    }
}
