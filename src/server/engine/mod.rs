//! The decode engine: one shared `WhisperContext` (the weights) and a pool of
//! worker OS threads, each owning one `WhisperState`. Callers hand it 16 kHz
//! mono f32 plus [`DecodeParams`] and get a [`Transcript`] back through a
//! oneshot. It knows nothing of sessions, gRPC or HTTP.

mod gate;
mod params;
mod pool;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use gate::CpuGate;
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
    /// Time the worker spent in whisper.cpp (detection included).
    pub inference: Duration,
}

impl Transcript {
    /// All segment texts joined, trimmed.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            let t = s.text.trim();
            if t.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(t);
        }
        out
    }
}

/// One whisper segment; times are seconds from the start of the decoded audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_sec: f64,
    pub end_sec: f64,
    pub text: String,
    pub no_speech_probability: f32,
}

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file {} not found", path.display())]
    ModelMissing { path: PathBuf },
    #[error("cannot load model {}: {detail}", path.display())]
    ModelLoad { path: PathBuf, detail: String },
    #[error("decode queue is full ({capacity} jobs waiting)")]
    QueueFull { capacity: usize },
    #[error("decode was cancelled")]
    Cancelled,
    #[error("language {language:?} cannot be used with this model: {reason}")]
    Language { language: String, reason: String },
    #[error("whisper decode failed: {0}")]
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
    /// polled by whisper.cpp's abort callback.
    pub cancel: CancellationToken,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
    /// When the job was queued, for queue-wait accounting.
    pub enqueued: Instant,
}

impl DecodeJob {
    /// A job and the receiver of its result.
    pub fn new(
        audio: Arc<[f32]>,
        params: DecodeParams,
        cancel: CancellationToken,
    ) -> (Self, oneshot::Receiver<Result<Transcript, EngineError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Self {
                audio,
                params,
                cancel,
                reply,
                enqueued: Instant::now(),
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
