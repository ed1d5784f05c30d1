//! One worker = one OS thread = one `WhisperState`. It takes finals before
//! partials, skips jobs already cancelled, and lets whisper.cpp's abort
//! callback poll the job's cancellation token mid-decode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use tokio_util::sync::CancellationToken;
use whisper_rs::WhisperState;

use super::gate::CpuGate;
use super::params::{detection_window_params, full_params, only_language};
use super::{DecodeJob, DecodeParams, EngineError, Priority, Segment, Task, Transcript};

/// whisper.cpp returns no text for input shorter than 1 s, so shorter audio
/// is padded with silence up to this many samples.
const MIN_SAMPLES: usize = 16_000 + 1_600;

pub(super) struct Worker {
    state: WhisperState,
    multilingual: bool,
    threads: usize,
    busy: Arc<AtomicUsize>,
    /// Shared with every engine in the process: decodes running at once.
    gate: CpuGate,
}

impl Worker {
    pub(super) fn new(
        state: WhisperState,
        multilingual: bool,
        threads: usize,
        busy: Arc<AtomicUsize>,
        gate: CpuGate,
    ) -> Self {
        Self {
            state,
            multilingual,
            threads,
            busy,
            gate,
        }
    }

    /// Runs until both queues are disconnected.
    pub(super) fn run(mut self, finals: Receiver<DecodeJob>, partials: Receiver<DecodeJob>) {
        while let Some((job, priority)) = next_job(&finals, &partials) {
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
            let started = Instant::now();
            let result = self.decode(&job).map(|mut t| {
                t.queue_wait = queue_wait;
                t.inference = started.elapsed();
                t
            });
            self.busy.fetch_sub(1, Ordering::Relaxed);
            // The caller may have gone away; that is its business.
            let _ = job.reply.send(result);
        }
    }

    fn decode(&mut self, job: &DecodeJob) -> Result<Transcript, EngineError> {
        if job.audio.is_empty() {
            return Err(EngineError::NoAudio);
        }
        let padded;
        let audio: &[f32] = if job.audio.len() < MIN_SAMPLES {
            let mut v = job.audio.to_vec();
            v.resize(MIN_SAMPLES, 0.0);
            padded = v;
            &padded
        } else {
            &job.audio
        };
        let (language, probability) = self.resolve_language(&job.params, audio)?;
        // Detection is not covered by the abort hook; check before the
        // (longer) decode.
        if job.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let mut fp = full_params(&job.params, &language, self.threads, job.audio.len());
        // whisper-rs 0.16's `set_abort_callback_safe` boxes the closure twice
        // but its trampoline casts the pointer back as if boxed once, so the
        // callback reads garbage (we saw it deadlock). Use the raw hook with
        // our own trampoline instead.
        // SAFETY: `job.cancel` is borrowed for this whole function, so the
        // pointer stays valid for as long as `full` can call the hook.
        unsafe {
            fp.set_abort_callback(Some(abort_if_cancelled));
            fp.set_abort_callback_user_data(
                &job.cancel as *const CancellationToken as *mut std::ffi::c_void,
            );
        }
        let result = self.state.full(fp, audio);
        if job.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        result.map_err(|e| EngineError::Decode(e.to_string()))?;

        let duration = job.audio.len() as f64 / 16_000.0;
        let mut segments = Vec::new();
        let mut no_speech: f32 = 0.0;
        for seg in self.state.as_iter() {
            let text = seg
                .to_str_lossy()
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            let p = seg.no_speech_probability();
            no_speech = no_speech.max(p);
            // Without timestamp tokens whisper.cpp reports meaningless
            // segment times; the text then spans the whole clip.
            let (start_sec, end_sec) = if job.params.profile.without_timestamps {
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
            });
        }
        Ok(Transcript {
            segments,
            language,
            language_probability: probability,
            no_speech_probability: no_speech,
            ..Transcript::default()
        })
    }

    /// The language to decode in, and how sure we are of it. Detection costs
    /// an extra encoder pass, so it only runs when no language was given and
    /// the job's shared [`Detection`](super::Detection) holds none yet.
    fn resolve_language(
        &mut self,
        p: &DecodeParams,
        audio: &[f32],
    ) -> Result<(String, f32), EngineError> {
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
            return Ok((lang, 1.0));
        }
        let forced = p
            .language
            .clone()
            .or_else(|| only_language(p.candidates.as_deref()?).map(str::to_string));
        if let Some(lang) = &forced {
            if whisper_rs::get_lang_id(lang).is_none() {
                return Err(EngineError::Language {
                    language: lang.clone(),
                    reason: "not a language code Whisper knows".into(),
                });
            }
            return Ok((lang.clone(), 1.0));
        }
        if let Some(known) = p.detection.as_ref().and_then(|d| d.get()) {
            return Ok(known.clone());
        }
        // whisper.cpp's detection encodes with the window the state's last
        // `full` call set (a decode's fitted one), so reset it to the full
        // 30 s window first. Fitted windows are much cheaper but guess
        // worse: on espeak German (de+m3, 140 wpm, 3.6 s) base says en 0.43
        // at 512 frames, de 0.48 at 768, de 0.61 at 1024 and de 0.78 with
        // the full window, which costs about 3 s on two cores. Detection
        // runs once per utterance, so accuracy wins.
        self.state
            .full(detection_window_params(self.threads), audio)
            .map_err(|e| EngineError::Decode(format!("preparing language detection: {e}")))?;
        let (id, probs) = self
            .state
            .lang_detect(0, self.threads)
            .map_err(|e| EngineError::Decode(format!("language detection: {e}")))?;
        let code = whisper_rs::get_lang_str(id)
            .ok_or_else(|| EngineError::Decode(format!("language detection returned id {id}")))?;
        let prob = probs.get(id as usize).copied().unwrap_or(0.0);
        let chosen = match &p.candidates {
            Some(c) if !c.is_empty() => {
                choose_candidate(c, &probs).unwrap_or_else(|| (code.to_string(), prob))
            }
            _ => (code.to_string(), prob),
        };
        match &p.detection {
            Some(d) => {
                d.offer(&chosen.0, chosen.1, audio.len());
                // Another decode of the utterance (a cancelled partial still
                // detecting on another worker) may have settled it first;
                // the utterance keeps one language.
                Ok(d.get().cloned().unwrap_or(chosen))
            }
            None => Ok(chosen),
        }
    }
}

/// `model.languages`: the allowed language whose detection probability,
/// times its weight, is highest; its probability is reported relative to
/// the allowed languages only. `None` when no candidate is a known code.
fn choose_candidate(candidates: &[(String, u32)], probs: &[f32]) -> Option<(String, f32)> {
    let scored: Vec<(&str, f32, f32)> = candidates
        .iter()
        .filter_map(|(code, weight)| {
            let id = whisper_rs::get_lang_id(code)?;
            let p = probs.get(usize::try_from(id).ok()?).copied()?;
            Some((code.as_str(), p, p * *weight as f32))
        })
        .collect();
    let best = scored.iter().max_by(|a, b| a.2.total_cmp(&b.2))?;
    let mass: f32 = scored.iter().map(|s| s.1).sum();
    let prob = if mass > 0.0 { best.1 / mass } else { 0.0 };
    Some((best.0.to_string(), prob))
}

/// Next job and its queue, finals first; `None` when the engine has shut
/// down.
fn next_job(
    finals: &Receiver<DecodeJob>,
    partials: &Receiver<DecodeJob>,
) -> Option<(DecodeJob, Priority)> {
    let last = |job: Option<DecodeJob>, p| job.map(|j| (j, p));
    if let Ok(job) = finals.try_recv() {
        return Some((job, Priority::Final));
    }
    crossbeam_channel::select! {
        recv(finals) -> job => match job {
            Ok(j) => Some((j, Priority::Final)),
            Err(_) => last(partials.recv().ok(), Priority::Partial),
        },
        recv(partials) -> job => match job {
            Ok(j) => Some((j, Priority::Partial)),
            Err(_) => last(finals.recv().ok(), Priority::Final),
        },
    }
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
