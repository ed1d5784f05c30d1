//! [`DecodeParams`] (what a caller asks for) → whisper-rs `FullParams`.

use std::sync::{Arc, OnceLock};

use whisper_rs::{FullParams, SamplingStrategy};

use crate::config::DecodeProfileConfig;

/// Transcribe in the spoken language, or translate to English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

impl Task {
    /// Parses `transcribe` / `translate`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "transcribe" => Some(Self::Transcribe),
            "translate" => Some(Self::Translate),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transcribe => "transcribe",
            Self::Translate => "translate",
        }
    }
}

/// Everything a decode needs besides the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeParams {
    pub profile: DecodeProfileConfig,
    /// `None` = detect (multilingual models); English-only models use `en`.
    pub language: Option<String>,
    /// `model.languages`: when detecting, choose among these codes only,
    /// each weighted by how often it was listed. `None` = any language.
    pub candidates: Option<Arc<[(String, u32)]>>,
    pub task: Task,
    /// Encoder window in mel frames; `None` = the profile's (0 = full 30 s).
    pub audio_ctx: Option<usize>,
    /// When detecting: the language already detected for this stretch of
    /// speech, shared by its decodes (see [`Detection`]).
    pub detection: Option<Detection>,
}

/// A language detected once and shared by several decodes (a streaming
/// utterance's partials and final). Detection is a full-window encoder pass
/// (about 3 s for base on two cores), so once it is settled the later
/// decodes reuse it, and a decode cancelled after detecting still leaves
/// its result for the next one.
#[derive(Debug, Clone, Default)]
pub struct Detection(Arc<OnceLock<(String, f32)>>);

impl Detection {
    /// A detection at least this sure settles the language.
    pub const CONFIDENT: f32 = 0.5;
    /// Audio at least this long (samples) settles it whatever the
    /// probability: more speech rarely changes whisper's mind after that.
    pub const ENOUGH_AUDIO: usize = 4 * 16_000;

    /// Streaming partials wait for this much of an utterance (samples)
    /// before detecting: on less, detection is often unsure or wrong (1.5 s
    /// espeak clips in seven languages: 5 right, against 6 at 2.5 s), and
    /// an unsure guess does not settle, so its encoder pass is wasted.
    pub const WORTH_DETECTING: usize = 2 * 16_000;

    /// The settled language code and its probability, once known.
    pub fn get(&self) -> Option<&(String, f32)> {
        self.0.get()
    }

    /// Offers a detection made on `samples` of audio. It settles the
    /// language when it is confident or heard enough; otherwise the next
    /// decode, with more of the utterance, detects again. (On espeak German,
    /// 1.5 s gave `de` at 0.42 and 3 s gave 0.71.) The first settled
    /// detection wins.
    pub fn offer(&self, language: &str, probability: f32, samples: usize) {
        if probability >= Self::CONFIDENT || samples >= Self::ENOUGH_AUDIO {
            let _ = self.0.set((language.to_string(), probability));
        }
    }
}

/// Two handles are equal when they share the same slot.
impl PartialEq for Detection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl DecodeParams {
    /// Params for a profile with the model's defaults.
    pub fn from_profile(profile: DecodeProfileConfig) -> Self {
        Self {
            profile,
            language: None,
            candidates: None,
            task: Task::Transcribe,
            audio_ctx: None,
            detection: None,
        }
    }
}

/// Smallest encoder window that safely covers `samples` of 16 kHz audio:
/// 50 mel frames per second plus a margin, rounded up to a multiple of 64
/// (whisper.cpp with too small a window drops the tail and loops). Returns 0
/// (full window) when the audio is long enough that shrinking saves little.
pub fn fit_audio_ctx(samples: usize) -> usize {
    let frames = samples.div_ceil(320) + 128;
    let rounded = frames.div_ceil(64) * 64;
    if rounded >= 1300 {
        0
    } else {
        rounded.max(256)
    }
}

/// Builds whisper-rs params. `language` must outlive the params.
pub(crate) fn full_params<'a>(
    p: &DecodeParams,
    language: &'a str,
    threads: usize,
    samples: usize,
) -> FullParams<'a, 'a> {
    let prof = &p.profile;
    let strategy = if prof.beam_size > 1 {
        SamplingStrategy::BeamSearch {
            beam_size: prof.beam_size as i32,
            patience: prof.patience,
        }
    } else {
        SamplingStrategy::Greedy {
            best_of: prof.best_of as i32,
        }
    };
    let mut fp = FullParams::new(strategy);
    fp.set_n_threads(threads as i32);
    fp.set_language(Some(language));
    fp.set_translate(p.task == Task::Translate);
    fp.set_no_context(true);
    fp.set_no_timestamps(prof.without_timestamps);
    fp.set_temperature(prof.temperature);
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
    let ctx = match p.audio_ctx {
        Some(n) => n,
        // A positive profile value means "fit the window to the audio, but
        // never below this"; long audio always gets the full window.
        None if prof.audio_ctx > 0 => match fit_audio_ctx(samples) {
            0 => 0,
            fit => prof.audio_ctx.max(fit),
        },
        None => 0,
    };
    if ctx > 0 {
        fp.set_audio_ctx(ctx as i32);
    }
    fp
}

/// The one language a `model.languages` list allows, however often it is
/// listed: it is simply forced, with no detection.
pub fn only_language(candidates: &[(String, u32)]) -> Option<&str> {
    let first = &candidates.first()?.0;
    candidates
        .iter()
        .all(|(l, _)| l == first)
        .then_some(first.as_str())
}

/// Params for a `full` call that only prepares a state for language
/// detection: it computes the mel of the audio and resets the state's
/// encoder window to the full 30 s, then stops before encoding.
/// whisper.cpp's `lang_detect` encodes with the window the state's last
/// `full` call set and offers no other way to choose it; `duration_ms` of
/// exactly 100 passes the too-short check and ends the decode loop at once
/// (`whisper_full_with_state`, whisper.cpp 1.8.3). This replaces a second
/// whisper state per worker kept only for detection.
pub fn detection_window_params<'a>(threads: usize) -> FullParams<'a, 'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_covers_the_audio() {
        // 4 s → 200 frames + margin → 384
        assert_eq!(fit_audio_ctx(4 * 16_000), 384);
        // tiny clips still get a sane minimum
        assert_eq!(fit_audio_ctx(1_600), 256);
        // 11 s → 550 + 128 = 678 → 704 (≥ 50/s with margin)
        let c = fit_audio_ctx(11 * 16_000);
        assert!(c >= 11 * 50 + 64 && c % 64 == 0, "{c}");
        // 28 s is close enough to 30 s to use the full window
        assert_eq!(fit_audio_ctx(28 * 16_000), 0);
    }

    #[test]
    fn an_unsure_detection_on_little_audio_does_not_settle() {
        let d = Detection::default();
        let shared = d.clone();
        d.offer("de", 0.42, 24_000);
        assert_eq!(shared.get(), None);
        // Sure enough: settled, and every clone sees it.
        d.offer("de", 0.71, 48_000);
        assert_eq!(shared.get(), Some(&("de".to_string(), 0.71)));
        // The first settled detection wins.
        d.offer("en", 0.99, 96_000);
        assert_eq!(shared.get(), Some(&("de".to_string(), 0.71)));
        assert_eq!(d, shared);
        assert_ne!(d, Detection::default());
    }

    #[test]
    fn enough_audio_settles_even_an_unsure_detection() {
        let d = Detection::default();
        d.offer("pt", 0.3, Detection::ENOUGH_AUDIO);
        assert_eq!(d.get(), Some(&("pt".to_string(), 0.3)));
    }

    #[test]
    fn task_parses() {
        assert_eq!(Task::parse("Translate"), Some(Task::Translate));
        assert_eq!(Task::parse("x"), None);
    }
}
