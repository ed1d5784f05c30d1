//! The seam every backend implements: a [`LoadedModel`] (the weights, shared
//! by all workers) hands each worker thread a [`Decoder`] (its own state).
//! The worker drives a decoder through one clip at a time: `prepare`, then
//! optionally `detect_language`, then one or more `decode` attempts.

use tokio_util::sync::CancellationToken;

use super::{EngineError, EngineKind, Segment, Task};
use crate::config::DecodeProfileConfig;

/// A model loaded once and shared by every worker of an engine.
pub(crate) trait LoadedModel: Send + Sync {
    /// Whether the model knows languages other than English.
    fn multilingual(&self) -> bool;
    /// Which backend this is.
    fn kind(&self) -> EngineKind;
    /// A decoder for one worker thread, running `threads` compute threads.
    /// Called on the worker's own thread: some backends keep per-thread
    /// settings.
    fn decoder(&self, threads: usize) -> Result<Box<dyn Decoder>, EngineError>;
}

/// One worker's view of the model; used from one thread only.
pub(crate) trait Decoder {
    /// Takes the clip that the following calls work on (16 kHz mono, at
    /// least one second), for attempts with encoder window `audio_ctx`
    /// (see [`Attempt::audio_ctx`]). CTranslate2 encodes it here, once, for
    /// detection and every attempt with that window; whisper.cpp only keeps
    /// it (its window is a decode parameter).
    fn prepare(
        &mut self,
        audio: &[f32],
        audio_ctx: usize,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError>;

    /// Language codes (`de`) of the prepared clip with their probabilities,
    /// most probable first. Only called on multilingual models.
    fn detect_language(&mut self) -> Result<Vec<(String, f32)>, EngineError>;

    /// Decodes the prepared clip once.
    fn decode(
        &mut self,
        attempt: &Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Hypothesis, EngineError>;
}

/// One decoding attempt of a prepared clip.
#[derive(Debug, Clone)]
pub(crate) struct Attempt<'a> {
    pub profile: &'a DecodeProfileConfig,
    /// Language code to decode in (`en` for English-only models).
    pub language: &'a str,
    pub task: Task,
    /// Sampling temperature (0 = greedy or beam search as the profile says).
    pub temperature: f32,
    /// Encoder window in encoder positions (50 per second), 0 = the full
    /// 30 s. CTranslate2 takes it at `prepare`, which must have been given
    /// the same value.
    pub audio_ctx: usize,
    /// Samples of real audio in the clip (before padding), for segment
    /// times.
    pub samples: usize,
    /// Fill each segment's `words`.
    pub word_timestamps: bool,
    /// Initial prompt text (trimmed, non-empty).
    pub prompt: Option<&'a str>,
}

/// What one attempt produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hypothesis {
    pub segments: Vec<Segment>,
    /// Mean log probability per token, where the backend reports it.
    pub avg_logprob: Option<f32>,
    /// Highest no-speech probability of the clip's segments.
    pub no_speech_probability: f32,
    /// Probability of each text token, where the backend gives them.
    pub token_probabilities: Option<Vec<f32>>,
}

impl Hypothesis {
    /// All segment texts joined, trimmed.
    pub fn text(&self) -> String {
        super::joined_text(&self.segments)
    }
}
