//! One worker = one OS thread = one backend [`Decoder`]. It takes finals
//! before partials, skips jobs already cancelled, resolves the language,
//! and runs the guards on every hypothesis: a rejected one is retried once
//! (the full encoder window if a fitted one was used, else the next
//! temperature), and what still fails is dropped. The same code drives
//! every backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::backend::{Attempt, Decoder, Hypothesis};
use super::gate::CpuGate;
use super::guard::{self, GuardCounts, GuardInput};
use super::params::only_language;
use super::pool::Running;
use super::queue::JobQueue;
use super::{
    fit_audio_ctx, normalize_language, DecodeJob, DecodeParams, EngineError, EngineKind, Priority,
    Task, Transcript,
};

/// Whisper returns no text for input shorter than 1 s, so shorter audio is
/// padded with silence up to this many samples.
const MIN_SAMPLES: usize = 16_000 + 1_600;
/// The temperature step of Whisper's fallback.
const TEMPERATURE_STEP: f32 = 0.2;

pub(super) struct Worker {
    /// This worker's slot in `running`.
    pub(super) index: usize,
    pub(super) decoder: Box<dyn Decoder>,
    pub(super) kind: EngineKind,
    pub(super) multilingual: bool,
    pub(super) busy: Arc<AtomicUsize>,
    pub(super) running: Running,
    /// Shared with every engine in the process: decodes running at once.
    pub(super) gate: CpuGate,
    pub(super) guards: GuardCounts,
}

impl Worker {
    /// Runs until the queue is closed and drained.
    pub(super) fn run(mut self, queue: &JobQueue) {
        while let Some((job, priority)) = queue.pop() {
            // The wait for a CPU slot counts as queue wait.
            let Some(_pass) = self
                .gate
                .enter(priority, &job.cancel)
                .filter(|_| !job.cancel.is_cancelled())
            else {
                let _ = job.reply.send(Err(EngineError::Cancelled));
                continue;
            };
            let queue_wait = job.enqueued.elapsed();
            self.busy.fetch_add(1, Ordering::Relaxed);
            self.set_running(Some((priority, job.cancel.clone())));
            let started = Instant::now();
            let result = self.decode(&job, priority).map(|mut t| {
                t.queue_wait = queue_wait;
                t.inference = started.elapsed();
                t
            });
            self.set_running(None);
            self.busy.fetch_sub(1, Ordering::Relaxed);
            // The caller may have gone away; that is its business.
            let _ = job.reply.send(result);
        }
    }

    fn set_running(&self, now: Option<(Priority, tokio_util::sync::CancellationToken)>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = running.get_mut(self.index) {
            *slot = now;
        }
    }

    fn decode(&mut self, job: &DecodeJob, priority: Priority) -> Result<Transcript, EngineError> {
        if crate::fault::armed(crate::fault::Fault::Decode) {
            return Err(EngineError::Decode(crate::fault::INJECTED.into()));
        }
        if job.audio.is_empty() {
            return Err(EngineError::NoAudio);
        }
        let p = &job.params;
        let (language, probability) = self.check_language(p)?;
        let padded;
        let audio: &[f32] = if job.audio.len() < MIN_SAMPLES {
            let mut v = job.audio.to_vec();
            v.resize(MIN_SAMPLES, 0.0);
            padded = v;
            &padded
        } else {
            &job.audio
        };
        let audio_ctx = self.window(p, priority, job.audio.len());
        self.decoder.prepare(audio, audio_ctx, &job.cancel)?;
        if job.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let (language, probability) = match language {
            Some(l) => (l, probability),
            None => self.detect(p, priority, job.audio.len())?,
        };
        if job.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }

        let mut attempt = Attempt {
            profile: &p.profile,
            language: &language,
            task: p.task,
            temperature: p.profile.temperature,
            audio_ctx,
            samples: job.audio.len(),
            word_timestamps: p.word_timestamps,
            prompt: p.prompt.as_deref().map(str::trim).filter(|t| !t.is_empty()),
        };
        let mut reasons = Vec::new();
        let mut hypothesis = self.decoder.decode(&attempt, &job.cancel)?;
        let mut dropped = false;
        if let Some(reason) = self.judge(&hypothesis, p, job.audio.len()) {
            self.guards.record(reason);
            reasons.push(reason);
            tracing::debug!(
                reason = reason.as_str(),
                audio_ctx = attempt.audio_ctx,
                temperature = attempt.temperature,
                // Its length only: transcripts never go to the main log.
                chars = hypothesis.text().chars().count(),
                "a guard rejected a decode; retrying once"
            );
            // One retry, the way Whisper recovers from a loop: the full
            // window when a shorter one was used, else a warmer sample.
            if job.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if attempt.audio_ctx > 0 {
                attempt.audio_ctx = 0;
                self.decoder.prepare(audio, 0, &job.cancel)?;
            } else {
                attempt.temperature = (attempt.temperature + TEMPERATURE_STEP).min(1.0);
            }
            hypothesis = self.decoder.decode(&attempt, &job.cancel)?;
            if let Some(reason) = self.judge(&hypothesis, p, job.audio.len()) {
                self.guards.record(reason);
                self.guards.record_dropped();
                reasons.push(reason);
                dropped = true;
                tracing::debug!(
                    reasons = ?reasons,
                    chars = hypothesis.text().chars().count(),
                    "dropped a decode that failed the guards twice"
                );
                hypothesis.segments.clear();
                hypothesis.token_probabilities = None;
            }
        }
        Ok(Transcript {
            segments: hypothesis.segments,
            language,
            language_probability: probability,
            no_speech_probability: hypothesis.no_speech_probability,
            avg_logprob: hypothesis.avg_logprob,
            token_probabilities: hypothesis.token_probabilities,
            guards: reasons,
            dropped,
            engine: Some(self.kind),
            ..Transcript::default()
        })
    }

    /// The encoder window of a clip (encoder positions, 0 = 30 s): asked
    /// for explicitly (benches, `--audio-ctx`), else CTranslate2 encodes
    /// the profile's window stretched to the clip, and whisper.cpp fits
    /// partials only. Its finals decode with the full window: fitted
    /// windows made tiny.en repeat sentences on recorded speech (512
    /// positions on a 7.6 s phone prompt).
    fn window(&self, p: &DecodeParams, priority: Priority, samples: usize) -> usize {
        match (p.audio_ctx, self.kind, priority) {
            (Some(n), _, _) => n,
            (None, EngineKind::CTranslate2, _) => {
                stretched_window(p.profile.encoder_window_sec, samples)
            }
            (None, EngineKind::WhisperCpp, Priority::Final) => 0,
            (None, EngineKind::WhisperCpp, Priority::Partial) => partial_window(p, samples),
        }
    }

    fn judge(
        &self,
        h: &Hypothesis,
        p: &DecodeParams,
        samples: usize,
    ) -> Option<guard::GuardReason> {
        let text = h.text();
        guard::check(&GuardInput {
            text: &text,
            audio_sec: samples as f64 / 16_000.0,
            speech_sec: p.speech_sec,
            avg_logprob: h.avg_logprob,
            no_speech_probability: h.no_speech_probability,
            compression_ratio_threshold: p.profile.compression_ratio_threshold,
            no_speech_threshold: p.profile.no_speech_threshold,
            log_prob_threshold: p.profile.log_prob_threshold,
        })
    }

    /// The language rules that need no audio: English-only models refuse
    /// other languages and translation; a forced language (the session's,
    /// or a one-language `model.languages`) is used as is. `None` means
    /// detect.
    fn check_language(&self, p: &DecodeParams) -> Result<(Option<String>, f32), EngineError> {
        if !self.multilingual {
            let lang = p.language.clone().unwrap_or_else(|| "en".into());
            if lang != "en" {
                return Err(EngineError::Language {
                    language: lang,
                    reason: "the model is English-only; use a multilingual model such as base"
                        .into(),
                });
            }
            if p.task == Task::Translate {
                return Err(EngineError::Language {
                    language: lang,
                    reason: "an English-only model cannot translate; use a multilingual model such as base".into(),
                });
            }
            return Ok((Some(lang), 1.0));
        }
        let forced = p
            .language
            .clone()
            .or_else(|| only_language(p.candidates.as_deref()?).map(str::to_string));
        if let Some(lang) = forced {
            if normalize_language(&lang) != Some(lang.as_str()) {
                return Err(EngineError::Language {
                    language: lang,
                    reason: "not a language code Whisper knows".into(),
                });
            }
            return Ok((Some(lang), 1.0));
        }
        Ok((None, 0.0))
    }

    /// Detects the prepared clip's language. On CTranslate2 detection is one
    /// decoder step on the encoder output the decode needs anyway, so every
    /// decode detects on all the audio it has. On whisper.cpp it is an
    /// encoder pass of its own (about 3 s for base on two cores), so the
    /// decodes of an utterance share what one of them settled — a final
    /// only when that detection heard most of the utterance, so a guess
    /// made on a partial's first seconds never decides it.
    fn detect(
        &mut self,
        p: &DecodeParams,
        priority: Priority,
        samples: usize,
    ) -> Result<(String, f32), EngineError> {
        let reuse = self.kind == EngineKind::WhisperCpp;
        if reuse {
            let known = p.detection.as_ref().and_then(|d| match priority {
                Priority::Partial => d.get(),
                Priority::Final => d.for_final(samples),
            });
            if let Some(known) = known {
                return Ok(known.clone());
            }
        }
        let probs = self.decoder.detect_language()?;
        let best = probs
            .first()
            .cloned()
            .ok_or_else(|| EngineError::Decode("language detection returned nothing".into()))?;
        let chosen = match &p.candidates {
            Some(c) if !c.is_empty() => choose_candidate(c, &probs).unwrap_or(best),
            _ => best,
        };
        match (&p.detection, reuse) {
            (Some(d), true) => {
                d.offer(&chosen.0, chosen.1, samples);
                // Another decode of the utterance (a cancelled partial still
                // detecting on another worker) may have settled it first;
                // its partials keep one language.
                Ok(d.get().cloned().unwrap_or(chosen))
            }
            _ => Ok(chosen),
        }
    }
}

/// The encoder window of a partial: the profile's `audio_ctx` (> 0) asks
/// for a window fitted to the clip, never below it; 0 is the full window.
fn partial_window(p: &DecodeParams, samples: usize) -> usize {
    if p.profile.audio_ctx == 0 {
        return 0;
    }
    match fit_audio_ctx(samples) {
        0 => 0,
        fit => p.profile.audio_ctx.max(fit),
    }
}

/// Encoder positions of a window of `window_sec`, or of the clip plus a
/// 2 s margin when that is longer; 0 (the full window) when either
/// reaches 30 s.
fn stretched_window(window_sec: f32, samples: usize) -> usize {
    const FULL: usize = 1500;
    let wanted = (f64::from(window_sec) * 50.0).ceil() as usize;
    let fit = samples.div_ceil(320) + 100;
    match wanted.max(fit) {
        n if n >= FULL => 0,
        n => n,
    }
}

/// `model.languages`: the allowed language whose detection probability,
/// times its weight, is highest; its probability is reported relative to
/// the allowed languages only. `None` when no candidate was scored.
fn choose_candidate(
    candidates: &[(String, u32)],
    probs: &[(String, f32)],
) -> Option<(String, f32)> {
    let scored: Vec<(&str, f32, f32)> = candidates
        .iter()
        .filter_map(|(code, weight)| {
            let p = probs.iter().find(|(c, _)| c == code)?.1;
            Some((code.as_str(), p, p * *weight as f32))
        })
        .collect();
    let best = scored.iter().max_by(|a, b| a.2.total_cmp(&b.2))?;
    let mass: f32 = scored.iter().map(|s| s.1).sum();
    let prob = if mass > 0.0 { best.1 / mass } else { 0.0 };
    Some((best.0.to_string(), prob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_weighted_and_renormalised() {
        let probs = vec![
            ("en".to_string(), 0.5),
            ("de".to_string(), 0.3),
            ("fr".to_string(), 0.2),
        ];
        let c = vec![("de".to_string(), 2), ("fr".to_string(), 1)];
        let (code, p) = choose_candidate(&c, &probs).expect("scored");
        assert_eq!(code, "de");
        assert!((p - 0.6).abs() < 1e-6, "{p}");
        assert_eq!(choose_candidate(&[("xx".into(), 1)], &probs), None);
    }

    #[test]
    fn ctranslate2_windows_stretch_to_the_clip() {
        assert_eq!(stretched_window(20.0, 4 * 16_000), 1000);
        // 19 s of audio + 2 s margin = 21 s.
        assert_eq!(stretched_window(20.0, 19 * 16_000), 1050);
        assert_eq!(stretched_window(20.0, 29 * 16_000), 0);
        assert_eq!(stretched_window(30.0, 4 * 16_000), 0);
    }

    #[test]
    fn partial_windows_fit_the_clip_finals_do_not_use_this() {
        let mut p = DecodeParams::from_profile(crate::config::DecodeProfileConfig::realtime());
        p.profile.audio_ctx = 768;
        assert_eq!(partial_window(&p, 4 * 16_000), 768);
        assert_eq!(partial_window(&p, 20 * 16_000), 1152);
        assert_eq!(partial_window(&p, 29 * 16_000), 0);
        p.profile.audio_ctx = 0;
        assert_eq!(partial_window(&p, 4 * 16_000), 0);
    }
}
