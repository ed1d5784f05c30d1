//! One worker's CTranslate2 decoder: a replica over the shared weights, the
//! prepared clip's encoder output (encoded once in `prepare`, reused by
//! detection and every attempt), the prompt built from the model's own
//! tokens, and the generated windows turned into segments. Word timing
//! lives in [`align`].

mod align;

use std::ffi::CStr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::bpe::Bpe;
use super::mel::{MelSpectrogram, WINDOW_FRAMES, WINDOW_SAMPLES};
use super::tokens::Tokens;
use super::{ffi, take_error};
use crate::engine::backend::{Attempt, Decoder, Hypothesis};
use crate::engine::words;
use crate::engine::{EngineError, Segment, Task};

/// CTranslate2's limit on generated tokens per window (Whisper's text
/// context).
const MAX_LENGTH: usize = 448;
/// 30 s windows encoded and decoded in one batch. A long clip (a whole
/// file given to `stt transcribe --no-vad`) goes through in groups of this
/// many, so memory stays bounded however long the audio is.
const MAX_BATCH: usize = 4;
/// Most prompt tokens kept (the last ones): generation needs the other
/// half of the 448-token context.
const MAX_PROMPT_TOKENS: usize = 223;

/// A replica, used by one worker thread only.
struct RawReplica(*mut ffi::Replica);

impl Drop for RawReplica {
    fn drop(&mut self) {
        // SAFETY: created by stt_ct2_replica_new, freed once.
        unsafe { ffi::stt_ct2_replica_free(self.0) }
    }
}

/// An encoder output.
struct RawEncoded(*mut ffi::Encoded);

impl Drop for RawEncoded {
    fn drop(&mut self) {
        // SAFETY: created by stt_ct2_encode, freed once.
        unsafe { ffi::stt_ct2_encoded_free(self.0) }
    }
}

pub(super) struct Ct2Decoder {
    replica: RawReplica,
    tokens: Arc<Tokens>,
    bpe: Option<Arc<Bpe>>,
    /// Mel frames per window of the prepared clip.
    frames: usize,
    mel: MelSpectrogram,
    multilingual: bool,
    /// The prepared clip's encoder output: groups of at most `MAX_BATCH`
    /// 30 s windows, one batch row each, with the group's window count.
    encoded: Vec<(RawEncoded, usize)>,
}

impl Ct2Decoder {
    pub(super) fn new(
        replica: *mut ffi::Replica,
        tokens: Arc<Tokens>,
        bpe: Option<Arc<Bpe>>,
        n_mels: usize,
        multilingual: bool,
    ) -> Self {
        Self {
            replica: RawReplica(replica),
            tokens,
            bpe,
            frames: WINDOW_FRAMES,
            mel: MelSpectrogram::new(n_mels),
            multilingual,
            encoded: Vec::new(),
        }
    }

    /// The first window's encoder output (language detection).
    fn first_encoded(&self) -> Result<*mut ffi::Encoded, EngineError> {
        self.encoded
            .first()
            .map(|(e, _)| e.0)
            .ok_or_else(|| EngineError::Decode("decode before prepare".into()))
    }

    /// The prompt text's last [`MAX_PROMPT_TOKENS`] tokens after
    /// `<|startofprev|>`, as faster-whisper lays them out (with a leading
    /// space, as the text would follow earlier speech).
    fn previous_text(&self, attempt: &Attempt<'_>) -> Vec<usize> {
        let (Some(text), Some(bpe), Some(prev)) = (attempt.prompt, &self.bpe, self.tokens.sot_prev)
        else {
            return Vec::new();
        };
        let ids = bpe.encode(&format!(" {text}"));
        let keep = &ids[ids.len().saturating_sub(MAX_PROMPT_TOKENS)..];
        let mut out = Vec::with_capacity(keep.len() + 1);
        out.push(prev);
        out.extend(keep.iter().copied().filter(|&id| id < self.tokens.eot));
        out
    }

    /// The initial prompt's text, if any, then `<|startoftranscript|>`
    /// and, on multilingual models, the language and the task, then
    /// `<|notimestamps|>` unless the profile wants times.
    fn prompt(&self, attempt: &Attempt<'_>) -> Result<Vec<usize>, EngineError> {
        let mut prompt = self.previous_text(attempt);
        prompt.extend(self.start_sequence(attempt)?);
        if attempt.profile.without_timestamps || self.tokens.timestamp_begin.is_none() {
            prompt.push(self.tokens.no_timestamps);
        }
        Ok(prompt)
    }

    /// `<|startoftranscript|>` and, on multilingual models, the language and
    /// the task.
    fn start_sequence(&self, attempt: &Attempt<'_>) -> Result<Vec<usize>, EngineError> {
        let t = &self.tokens;
        let mut prompt = vec![t.sot];
        if self.multilingual {
            let lang = t
                .language(attempt.language)
                .ok_or_else(|| EngineError::Language {
                    language: attempt.language.to_string(),
                    reason: "the model has no token for this language".into(),
                })?;
            prompt.push(lang);
            let task = match attempt.task {
                Task::Transcribe => t.transcribe,
                Task::Translate => t.translate,
            };
            prompt.push(task.ok_or_else(|| {
                EngineError::Decode(format!("the model has no {} token", attempt.task.as_str()))
            })?);
        }
        Ok(prompt)
    }

    /// Segments of one window's tokens, each with its count of text
    /// tokens: timestamp pairs delimit them when the profile asked for
    /// times; otherwise the text spans the window. Whitespace-only segments
    /// are kept (their tokens count when words are placed); the caller
    /// drops them.
    fn segments(
        &self,
        ids: &[usize],
        offset: f64,
        span: f64,
        no_speech: f32,
    ) -> Vec<(Segment, usize)> {
        let t = &self.tokens;
        let mut out = Vec::new();
        let mut start: Option<f64> = None;
        let mut text: Vec<usize> = Vec::new();
        let mut push = |start: f64, end: f64, text: &mut Vec<usize>| {
            if text.is_empty() {
                return;
            }
            let s = t.decode(text);
            let count = text.len();
            text.clear();
            out.push((
                Segment {
                    start_sec: offset + start.clamp(0.0, span),
                    end_sec: offset + end.clamp(0.0, span),
                    text: s,
                    no_speech_probability: no_speech,
                    words: Vec::new(),
                },
                count,
            ));
        };
        for &id in ids {
            if let Some(ts) = t.timestamp(id) {
                match start {
                    Some(s) if !text.is_empty() => {
                        push(s, ts, &mut text);
                        start = None;
                    }
                    _ => start = Some(ts),
                }
            } else if id < t.eot {
                text.push(id);
            }
        }
        push(start.unwrap_or(0.0), span, &mut text);
        out
    }
}

impl Decoder for Ct2Decoder {
    fn prepare(
        &mut self,
        audio: &[f32],
        audio_ctx: usize,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        self.encoded.clear();
        let started = std::time::Instant::now();
        let (windows, mut features) = self.mel.windows(audio);
        let mut frames = WINDOW_FRAMES;
        // Never shorter than the audio: a window only drops padding.
        let wanted = (2 * audio_ctx).max((audio.len() / 160 + 1).next_multiple_of(2));
        if windows == 1 && audio_ctx > 0 && wanted < WINDOW_FRAMES {
            // A shorter window is the full one's first columns: the same
            // zero padding after the audio, only less of it.
            frames = wanted;
            features = shorten_window(&features, self.mel.n_mels(), frames);
        }
        self.frames = frames;
        let mel_done = started.elapsed();
        let per_window = self.mel.n_mels() * frames;
        for (g, group) in features.chunks(MAX_BATCH * per_window).enumerate() {
            if g > 0 && cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let batch = group.len() / per_window;
            let mut out = std::ptr::null_mut();
            let mut err = std::ptr::null_mut();
            // SAFETY: `group` holds batch × n_mels × frames floats; the
            // replica belongs to this thread.
            let rc = unsafe {
                ffi::stt_ct2_encode(
                    self.replica.0,
                    group.as_ptr(),
                    batch,
                    self.mel.n_mels(),
                    frames,
                    &mut out,
                    &mut err,
                )
            };
            if rc != 0 || out.is_null() {
                self.encoded.clear();
                return Err(EngineError::Decode(format!(
                    "encoding: {}",
                    take_error(err)
                )));
            }
            self.encoded.push((RawEncoded(out), batch));
        }
        tracing::debug!(
            mel_ms = mel_done.as_secs_f64() * 1e3,
            encode_ms = (started.elapsed() - mel_done).as_secs_f64() * 1e3,
            windows,
            frames,
            "prepared a clip"
        );
        Ok(())
    }

    fn detect_language(&mut self) -> Result<Vec<(String, f32)>, EngineError> {
        let encoded = self.first_encoded()?;
        let mut langs = vec![
            ffi::Language {
                token: [0; 16],
                probability: 0.0,
            };
            128
        ];
        let mut n = 0usize;
        let mut err = std::ptr::null_mut();
        // SAFETY: `langs` has room for `langs.len()` entries.
        let rc = unsafe {
            ffi::stt_ct2_detect_language(
                self.replica.0,
                encoded,
                langs.as_mut_ptr(),
                langs.len(),
                &mut n,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(EngineError::Decode(format!(
                "language detection: {}",
                take_error(err)
            )));
        }
        Ok(langs[..n.min(langs.len())]
            .iter()
            .map(|l| {
                // SAFETY: the shim NUL-terminates each token.
                let token = unsafe { CStr::from_ptr(l.token.as_ptr()) }.to_string_lossy();
                let code = token.trim_start_matches("<|").trim_end_matches("|>");
                (code.to_string(), l.probability)
            })
            .collect())
    }

    fn decode(
        &mut self,
        attempt: &Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Hypothesis, EngineError> {
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        if self.encoded.is_empty() {
            return Err(EngineError::Decode("decode before prepare".into()));
        }
        let prompt = self.prompt(attempt)?;
        let prof = attempt.profile;
        let sampling = attempt.temperature > 0.0;
        let options = ffi::Options {
            beam_size: if sampling { 1 } else { prof.beam_size.max(1) },
            patience: prof.patience,
            length_penalty: prof.length_penalty,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            max_length: MAX_LENGTH,
            // Greedy takes the best token; sampling draws from them all.
            sampling_topk: if sampling { 0 } else { 1 },
            sampling_temperature: if sampling { attempt.temperature } else { 1.0 },
            max_initial_timestamp_index: 50,
            suppress_blank: 1,
        };
        let started = std::time::Instant::now();
        let mut windows: Vec<Window> = Vec::new();
        for (g, (encoded, batch)) in self.encoded.iter().enumerate() {
            if g > 0 && cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let prompts: Vec<usize> = (0..*batch).flat_map(|_| prompt.clone()).collect();
            let mut results: Vec<ffi::GenResult> =
                (0..*batch).map(|_| ffi::GenResult::default()).collect();
            let mut err = std::ptr::null_mut();
            // SAFETY: `prompts` holds batch × prompt.len() ids and `results`
            // one slot per row of the encoded batch.
            let rc = unsafe {
                ffi::stt_ct2_generate(
                    self.replica.0,
                    encoded.0,
                    prompts.as_ptr(),
                    prompt.len(),
                    &options,
                    results.as_mut_ptr(),
                    &mut err,
                )
            };
            let first = windows.len();
            if rc == 0 {
                windows.extend(results.iter().map(Window::copy_from));
            }
            // SAFETY: every slot was initialised (null or malloc'd ids).
            unsafe { ffi::stt_ct2_results_free(results.as_mut_ptr(), results.len()) };
            if rc != 0 {
                return Err(EngineError::Decode(take_error(err)));
            }
            if attempt.word_timestamps {
                self.align(encoded.0, attempt, first, &mut windows[first..])?;
            }
        }
        tracing::debug!(
            generate_ms = started.elapsed().as_secs_f64() * 1e3,
            "decoded a clip"
        );
        Ok(self.hypothesis(&windows, attempt, prof.length_penalty))
    }
}

/// The first `frames` columns of one `n_mels × WINDOW_FRAMES` window.
fn shorten_window(features: &[f32], n_mels: usize, frames: usize) -> Vec<f32> {
    features
        .chunks(WINDOW_FRAMES)
        .take(n_mels)
        .flat_map(|row| &row[..frames.min(row.len())])
        .copied()
        .collect()
}

/// One window's generated tokens, copied out of the shim's buffers.
struct Window {
    ids: Vec<usize>,
    score: f32,
    no_speech_prob: f32,
    /// With word timestamps: where each text token starts (seconds from
    /// the window's start), then where the last ends.
    starts: Vec<f64>,
    /// With word timestamps: each text token's probability.
    probs: Vec<f32>,
}

impl Window {
    fn copy_from(r: &ffi::GenResult) -> Self {
        let ids = if r.ids.is_null() {
            Vec::new()
        } else {
            // SAFETY: the shim wrote `n_ids` ids at `ids`.
            unsafe { std::slice::from_raw_parts(r.ids, r.n_ids) }.to_vec()
        };
        Self {
            ids,
            score: r.score,
            no_speech_prob: r.no_speech_prob,
            starts: Vec::new(),
            probs: Vec::new(),
        }
    }
}

impl Ct2Decoder {
    fn hypothesis(
        &self,
        results: &[Window],
        attempt: &Attempt<'_>,
        length_penalty: f32,
    ) -> Hypothesis {
        let total = attempt.samples as f64 / 16_000.0;
        let window_sec = WINDOW_SAMPLES as f64 / 16_000.0;
        let mut segments = Vec::new();
        let mut no_speech: f32 = 0.0;
        let (mut logprob, mut tokens) = (0.0f64, 0usize);
        for (w, r) in results.iter().enumerate() {
            let ids = &r.ids;
            let offset = w as f64 * window_sec;
            let span = (total - offset).clamp(0.0, window_sec);
            no_speech = no_speech.max(r.no_speech_prob);
            let mut window = self.segments(ids, offset, span, r.no_speech_prob);
            if attempt.word_timestamps {
                let mut timed = self.words(r, attempt.language);
                words::tidy(&mut timed);
                let counts: Vec<usize> = window.iter().map(|(_, n)| *n).collect();
                // Words in seconds of the clip, inside the real audio.
                let placed = words::assign(timed, &counts, offset, total);
                for ((segment, _), words) in window.iter_mut().zip(placed) {
                    segment.words = words;
                }
            }
            segments.extend(
                window
                    .into_iter()
                    .map(|(segment, _)| segment)
                    .filter(|s| !s.text.trim().is_empty()),
            );
            // CTranslate2 reports the sum of log probabilities divided by
            // length^penalty; undo that as faster-whisper does to get the
            // mean per token (counting the end token).
            let n = ids.len();
            logprob += f64::from(r.score) * (n as f64).powf(f64::from(length_penalty));
            tokens += n + 1;
        }
        Hypothesis {
            segments,
            avg_logprob: (tokens > 0).then(|| (logprob / tokens as f64) as f32),
            no_speech_probability: no_speech,
            token_probabilities: None,
        }
    }
}
