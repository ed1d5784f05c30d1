//! Whisper decoding behind one seam. An [`Engine`] is a pool of worker OS
//! threads over one loaded model; each worker owns its backend's per-thread
//! state. Callers hand it 16 kHz mono f32 plus [`DecodeParams`] and get a
//! [`Transcript`] back through a oneshot. Two backends sit behind the
//! [`backend::Decoder`] trait:
//!
//! - [`ctranslate2`] (CTranslate2 directories; the default CPU engine: its
//!   int8 kernels decode 3–4× faster than whisper.cpp's on the CPUs we
//!   measured), built with the `ctranslate2` feature;
//! - [`whisper_cpp`] (ggml files; GPU builds with `--features cuda`).
//!
//! Everything else — finals before partials, the CPU gate, language rules,
//! loop and hallucination guards with their retry — is the same code for
//! both, in [`worker`]. The engine knows nothing of sessions, gRPC or HTTP.

mod backend;
#[cfg(feature = "ctranslate2")]
pub mod ctranslate2;
mod gate;
pub mod guard;
mod model;
mod params;
mod pool;
mod queue;
pub mod whisper_cpp;
mod words;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use gate::CpuGate;
pub use guard::{GuardCounts, GuardReason};
pub use model::{EngineChoice, EngineKind, ModelSource};
pub use params::{fit_audio_ctx, only_language, DecodeParams, Detection, Task};
pub use pool::{default_threads, Engine, EngineConfig, Priority};

/// A decoded piece of audio.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// Language code used for the decode (detected or forced), e.g. `en`.
    pub language: String,
    /// Detection probability; 1.0 when the language was forced or the model
    /// is English-only.
    pub language_probability: f32,
    /// Highest per-segment no-speech probability (0 when there are none).
    pub no_speech_probability: f32,
    /// Time the job waited for a free worker.
    pub queue_wait: Duration,
    /// Time the worker spent in the backend (detection included).
    pub inference: Duration,
    /// Average log probability per token of the kept hypothesis, where the
    /// backend reports it.
    pub avg_logprob: Option<f32>,
    /// Probability of each text token, where the backend gives them
    /// (whisper.cpp does; CTranslate2 only at the cost of full logits).
    pub token_probabilities: Option<Vec<f32>>,
    /// Guards that rejected a hypothesis of this decode (a retry may have
    /// fixed it; when `dropped` the text was thrown away).
    pub guards: Vec<GuardReason>,
    /// Every attempt failed a guard, so the text is empty.
    pub dropped: bool,
    /// Which backend decoded it.
    pub engine: Option<EngineKind>,
}

impl Transcript {
    /// All segment texts joined, trimmed.
    pub fn text(&self) -> String {
        joined_text(&self.segments)
    }
}

/// Segment texts trimmed and joined with single spaces.
pub(crate) fn joined_text(segments: &[Segment]) -> String {
    let parts: Vec<&str> = segments
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect();
    parts.join(" ")
}

/// One whisper segment; times are seconds from the start of the decoded audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_sec: f64,
    pub end_sec: f64,
    pub text: String,
    pub no_speech_probability: f32,
    /// Word timings, when the decode asked for them (empty otherwise).
    pub words: Vec<Word>,
}

/// One word and when it was said, in seconds from the start of the audio
/// the result covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start_sec: f64,
    pub end_sec: f64,
    pub probability: f32,
}

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model {} not found", path.display())]
    ModelMissing { path: PathBuf },
    #[error("cannot load model {}: {detail}", path.display())]
    ModelLoad { path: PathBuf, detail: String },
    #[error("model {} is not usable: {detail}", path.display())]
    ModelInvalid { path: PathBuf, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("decode queue is full ({capacity} jobs waiting)")]
    QueueFull { capacity: usize },
    #[error("decode was cancelled")]
    Cancelled,
    #[error("the partial was still queued when the next one was due")]
    Late,
    #[error("language {language:?} cannot be used with this model: {reason}")]
    Language { language: String, reason: String },
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("no audio to decode")]
    NoAudio,
    #[error("the engine has stopped")]
    Stopped,
}

/// One unit of work for a worker.
pub struct DecodeJob {
    /// 16 kHz mono samples; shared so partial windows need no copy.
    pub audio: Arc<[f32]>,
    pub params: DecodeParams,
    /// Cancelled when the session (or server) no longer wants the result;
    /// polled by whisper.cpp's abort callback, checked between CTranslate2's
    /// encoder and decoder.
    pub cancel: CancellationToken,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
    /// When the job was queued, for queue-wait accounting.
    pub enqueued: Instant,
    /// Finals go earliest deadline first; a partial still queued past its
    /// deadline is dropped as stale. Now, unless set.
    pub deadline: Instant,
}

impl DecodeJob {
    /// A job and the receiver of its result.
    pub fn new(
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> (Self, oneshot::Receiver<Result<Transcript, EngineError>>) {
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        (
            Self {
                audio,
                params,
                cancel,
                reply,
                enqueued: now,
                deadline: now,
            },
            rx,
        )
    }
}

/// Whisper's code for a language a client named: a code (`de`), a BCP-47
/// tag (`de-AT` → `de`) or an English name (`german`). `None` when Whisper
/// does not know it. Safe on any input (whisper-rs panics on NUL bytes, so
/// only plain letters reach it).
pub fn normalize_language(input: &str) -> Option<&'static str> {
    let s = input.trim().to_ascii_lowercase();
    if s.is_empty()
        || s.len() > 24
        || !s
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_' || c == ' ')
    {
        return None;
    }
    let primary = s.split(['-', '_']).next()?;
    let id = whisper_rs::get_lang_id(primary)?;
    whisper_rs::get_lang_str(id)
}

/// Whisper's English name of a language code (`de` → `german`).
pub fn language_name(code: &str) -> Option<&'static str> {
    let code = normalize_language(code)?;
    whisper_rs::get_lang_id(code).and_then(whisper_rs::get_lang_str_full)
}
