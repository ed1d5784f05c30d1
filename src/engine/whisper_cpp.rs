//! whisper.cpp through whisper-rs: ggml files, and the GPU builds
//! (`--features cuda`). One shared `WhisperContext` holds the weights; each
//! worker owns a `WhisperState` (KV caches and compute buffers).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::backend::{Attempt, Decoder, Hypothesis, LoadedModel};
use super::words::{self, Timed};
use super::{EngineConfig, EngineError, EngineKind, Segment, Task};

/// Most prompt tokens kept (the last ones), as whisper.cpp itself keeps.
const MAX_PROMPT_TOKENS: usize = 223;

/// A ggml model loaded into whisper.cpp.
pub struct WhisperModel {
    ctx: Arc<WhisperContext>,
    multilingual: bool,
}

impl WhisperModel {
    pub(super) fn load(cfg: &EngineConfig) -> Result<Self, EngineError> {
        whisper_rs::install_logging_hooks();
        let load_err = |detail: String| EngineError::ModelLoad {
            path: cfg.model.path.clone(),
            detail,
        };
        let path = cfg
            .model
            .path
            .to_str()
            .ok_or_else(|| load_err("path is not valid UTF-8".into()))?;
        let params = WhisperContextParameters {
            use_gpu: cfg.use_gpu,
            flash_attn: cfg.flash_attn,
            ..Default::default()
        };
        let ctx =
            WhisperContext::new_with_params(path, params).map_err(|e| load_err(e.to_string()))?;
        let multilingual = ctx.is_multilingual();
        Ok(Self {
            ctx: Arc::new(ctx),
            multilingual,
        })
    }
}

impl LoadedModel for WhisperModel {
    fn multilingual(&self) -> bool {
        self.multilingual
    }

    fn kind(&self) -> EngineKind {
        EngineKind::WhisperCpp
    }

    fn decoder(&self, threads: usize) -> Result<Box<dyn Decoder>, EngineError> {
        let state = self
            .ctx
            .create_state()
            .map_err(|e| EngineError::Decode(format!("creating a whisper.cpp state: {e}")))?;
        Ok(Box::new(WhisperDecoder {
            state,
            ctx: self.ctx.clone(),
            threads,
            eot: self.ctx.token_eot(),
            audio: Vec::new(),
        }))
    }
}

struct WhisperDecoder {
    state: WhisperState,
    /// For tokenizing prompts.
    ctx: Arc<WhisperContext>,
    threads: usize,
    /// Id of `<|endoftext|>`: text tokens come before it.
    eot: i32,
    /// The prepared clip: whisper.cpp computes its mel and encodes inside
    /// `full`, with the window a decode asks for.
    audio: Vec<f32>,
}

impl Decoder for WhisperDecoder {
    fn prepare(
        &mut self,
        audio: &[f32],
        _audio_ctx: usize,
        _cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        self.audio.clear();
        self.audio.extend_from_slice(audio);
        Ok(())
    }

    fn detect_language(&mut self) -> Result<Vec<(String, f32)>, EngineError> {
        // whisper.cpp's detection encodes with the window the state's last
        // `full` call set (a decode's fitted one), so reset it to the full
        // 30 s window first. Fitted windows are much cheaper but guess
        // worse: on espeak German (de+m3, 140 wpm, 3.6 s) base says en 0.43
        // at 512 frames, de 0.48 at 768, de 0.61 at 1024 and de 0.78 with
        // the full window.
        self.state
            .full(detection_window_params(self.threads), &self.audio)
            .map_err(|e| EngineError::Decode(format!("preparing language detection: {e}")))?;
        let (_, probs) = self
            .state
            .lang_detect(0, self.threads)
            .map_err(|e| EngineError::Decode(format!("language detection: {e}")))?;
        let mut out: Vec<(String, f32)> = probs
            .iter()
            .enumerate()
            .filter_map(|(id, p)| {
                let code = whisper_rs::get_lang_str(i32::try_from(id).ok()?)?;
                Some((code.to_string(), *p))
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }

    fn decode(
        &mut self,
        attempt: &Attempt<'_>,
        cancel: &CancellationToken,
    ) -> Result<Hypothesis, EngineError> {
        let prompt = self.prompt_tokens(attempt)?;
        let mut fp = full_params(attempt, &prompt, self.threads);
        // whisper-rs 0.16's `set_abort_callback_safe` boxes the closure twice
        // but its trampoline casts the pointer back as if boxed once, so the
        // callback reads garbage (we saw it deadlock). Use the raw hook with
        // our own trampoline instead.
        // SAFETY: `cancel` is borrowed for this whole function, so the
        // pointer stays valid for as long as `full` can call the hook.
        unsafe {
            fp.set_abort_callback(Some(abort_if_cancelled));
            fp.set_abort_callback_user_data(
                cancel as *const CancellationToken as *mut std::ffi::c_void,
            );
        }
        let result = self.state.full(fp, &self.audio);
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        result.map_err(|e| EngineError::Decode(e.to_string()))?;

        let duration = attempt.samples as f64 / 16_000.0;
        let mut segments = Vec::new();
        let mut no_speech: f32 = 0.0;
        let mut token_probs = Vec::new();
        let mut logprob_sum = 0.0f64;
        for seg in self.state.as_iter() {
            let text = seg
                .to_str_lossy()
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            let p = seg.no_speech_probability();
            no_speech = no_speech.max(p);
            // Text tokens: bytes, probability, start and end (seconds).
            let mut timed_tokens: Vec<(&[u8], f32, f64, f64)> = Vec::new();
            for i in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(i) else {
                    continue;
                };
                // Special tokens (timestamps, <|endoftext|>) carry no text.
                if tok.token_id() >= self.eot {
                    continue;
                }
                let prob = tok.token_probability();
                token_probs.push(prob);
                logprob_sum += f64::from(prob.max(1e-10)).ln();
                if attempt.word_timestamps {
                    let data = tok.token_data();
                    let bytes = tok.to_bytes().unwrap_or(&[]);
                    timed_tokens.push((
                        bytes,
                        prob,
                        data.t0 as f64 / 100.0,
                        data.t1 as f64 / 100.0,
                    ));
                }
            }
            let words = if attempt.word_timestamps {
                segment_words(&timed_tokens, attempt.language, duration)
            } else {
                Vec::new()
            };
            // Without timestamp tokens whisper.cpp reports meaningless
            // segment times; the text then spans the whole clip. (Word
            // timestamps turn them on.)
            let (start_sec, end_sec) =
                if attempt.profile.without_timestamps && !attempt.word_timestamps {
                    (0.0, duration)
                } else {
                    let t0 = seg.start_timestamp() as f64 / 100.0;
                    let t1 = seg.end_timestamp() as f64 / 100.0;
                    (t0.clamp(0.0, duration), t1.clamp(0.0, duration))
                };
            segments.push(Segment {
                start_sec,
                end_sec,
                text: text.into_owned(),
                no_speech_probability: p,
                words,
            });
        }
        let avg_logprob =
            (!token_probs.is_empty()).then(|| (logprob_sum / token_probs.len() as f64) as f32);
        Ok(Hypothesis {
            segments,
            avg_logprob,
            no_speech_probability: no_speech,
            token_probabilities: Some(token_probs),
        })
    }
}

impl WhisperDecoder {
    /// The prompt's last [`MAX_PROMPT_TOKENS`] tokens (with a leading
    /// space, as the text would follow earlier speech).
    fn prompt_tokens(&self, attempt: &Attempt<'_>) -> Result<Vec<i32>, EngineError> {
        let Some(text) = attempt.prompt else {
            return Ok(Vec::new());
        };
        let text = format!(" {text}");
        // whisper-rs trusts max_tokens to be enough (it is: no token is
        // shorter than a byte).
        let ids = self
            .ctx
            .tokenize(&text, text.len().max(1))
            .map_err(|e| EngineError::Decode(format!("tokenizing the prompt: {e}")))?;
        Ok(ids[ids.len().saturating_sub(MAX_PROMPT_TOKENS)..].to_vec())
    }
}

/// A segment's words from its timed text tokens, in seconds of the clip.
fn segment_words(
    tokens: &[(&[u8], f32, f64, f64)],
    language: &str,
    duration: f64,
) -> Vec<super::Word> {
    let bytes: Vec<&[u8]> = tokens.iter().map(|t| t.0).collect();
    let mut timed: Vec<Timed> = words::split_words(&bytes, language)
        .into_iter()
        .filter_map(|span| {
            let toks = tokens.get(span.tokens.clone())?;
            let (first, last) = (toks.first()?, toks.last()?);
            Some(Timed {
                text: span.text,
                tokens: toks.len(),
                start: first.2,
                end: last.3,
                probability: toks.iter().map(|t| t.1).sum::<f32>() / toks.len() as f32,
            })
        })
        .collect();
    words::tidy(&mut timed);
    words::assign(timed, &[tokens.len()], 0.0, duration)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// whisper-rs params for one attempt.
fn full_params<'a>(a: &'a Attempt<'a>, prompt: &'a [i32], threads: usize) -> FullParams<'a, 'a> {
    let prof = a.profile;
    // Whisper samples instead of searching once the temperature rises.
    let strategy = if prof.beam_size > 1 && a.temperature <= 0.0 {
        SamplingStrategy::BeamSearch {
            beam_size: prof.beam_size as i32,
            patience: prof.patience,
        }
    } else {
        SamplingStrategy::Greedy {
            best_of: prof.best_of.max(1) as i32,
        }
    };
    let mut fp = FullParams::new(strategy);
    fp.set_n_threads(threads as i32);
    fp.set_language(Some(a.language));
    fp.set_translate(a.task == Task::Translate);
    fp.set_no_context(true);
    // Token times need timestamp decoding: without it whisper.cpp spreads
    // them over a 30 s segment.
    fp.set_no_timestamps(prof.without_timestamps && !a.word_timestamps);
    fp.set_token_timestamps(a.word_timestamps);
    if !prompt.is_empty() {
        // After `no_context` clears the state's history, so only this
        // session's prompt conditions the decode.
        fp.set_tokens(prompt);
    }
    fp.set_temperature(a.temperature);
    // Our worker runs the fallback (guards, then one retry), so whisper.cpp
    // must not run its own on top.
    fp.set_temperature_inc(0.0);
    // faster-whisper's length_penalty 1.0 is plain length normalisation,
    // which whisper.cpp spells as a negative value.
    fp.set_length_penalty(if (prof.length_penalty - 1.0).abs() < f32::EPSILON {
        -1.0
    } else {
        prof.length_penalty
    });
    fp.set_entropy_thold(prof.compression_ratio_threshold);
    fp.set_logprob_thold(prof.log_prob_threshold);
    fp.set_no_speech_thold(prof.no_speech_threshold);
    fp.set_suppress_blank(true);
    fp.set_suppress_nst(true);
    fp.set_print_progress(false);
    fp.set_print_realtime(false);
    fp.set_print_special(false);
    fp.set_print_timestamps(false);
    if a.audio_ctx > 0 {
        fp.set_audio_ctx(a.audio_ctx as i32);
    }
    fp
}

/// Params for a `full` call that only prepares a state for language
/// detection: it computes the mel of the audio and resets the state's
/// encoder window to the full 30 s, then stops before encoding.
/// whisper.cpp's `lang_detect` encodes with the window the state's last
/// `full` call set and offers no other way to choose it; `duration_ms` of
/// exactly 100 passes the too-short check and ends the decode loop at once
/// (`whisper_full_with_state`, whisper.cpp 1.8.3). This replaces a second
/// whisper state per worker kept only for detection.
fn detection_window_params<'a>(threads: usize) -> FullParams<'a, 'a> {
    let mut fp = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    fp.set_n_threads(threads as i32);
    fp.set_language(Some("en"));
    fp.set_duration_ms(100);
    fp.set_audio_ctx(0);
    fp.set_print_progress(false);
    fp.set_print_realtime(false);
    fp.set_print_special(false);
    fp.set_print_timestamps(false);
    fp
}

/// whisper.cpp's abort hook: polled between graph computations; returning
/// true stops the decode.
///
/// # Safety
/// `user_data` must point at a live `CancellationToken`.
unsafe extern "C" fn abort_if_cancelled(user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: the caller (`decode`) passes a token that outlives `full`.
    let token = unsafe { &*(user_data as *const CancellationToken) };
    token.is_cancelled()
}
