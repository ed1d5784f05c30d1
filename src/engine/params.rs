//! [`DecodeParams`]: what a caller asks of a decode, whatever the backend.

use std::sync::{Arc, OnceLock};

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
    /// Encoder window in mel frames (whisper.cpp only); `None` = the
    /// policy: finals the full 30 s, partials the profile's fitted window.
    pub audio_ctx: Option<usize>,
    /// Seconds of the clip the VAD called speech, when the caller ran one:
    /// text decoded from a clip with none is a hallucination.
    pub speech_sec: Option<f64>,
    /// When detecting: the language already detected for this stretch of
    /// speech, shared by its decodes (see [`Detection`]).
    pub detection: Option<Detection>,
    /// Time each word (segments' `words`); costs an alignment pass.
    pub word_timestamps: bool,
    /// Text the decoder sees as what was said before: spellings, names,
    /// style (Whisper's initial prompt). Shared, so partials copy nothing.
    pub prompt: Option<Arc<str>>,
}

/// A language detected once and shared by the partials of one streaming
/// utterance. On whisper.cpp detection is a full-window encoder pass (about
/// 3 s for base on two cores), so once it is settled later partials reuse
/// it, and a decode cancelled after detecting still leaves its result for
/// the next one. A final reuses it only when it heard most of the
/// utterance ([`Detection::for_final`]): a guess from a partial's first
/// seconds once turned a 3 s French sentence into Russian.
#[derive(Debug, Clone, Default)]
pub struct Detection(Arc<OnceLock<Settled>>);

/// A settled detection and how much audio it heard.
#[derive(Debug, Clone, PartialEq)]
struct Settled {
    language: (String, f32),
    samples: usize,
}

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
        self.0.get().map(|s| &s.language)
    }

    /// The settled language, if it may stand for a final of `samples`: only
    /// when it heard most of that audio (four fifths) or enough to be sure
    /// whatever follows. A sure guess on a partial's first two seconds
    /// otherwise decided whole utterances (a 3 s French sentence came back
    /// as Russian).
    pub fn for_final(&self, samples: usize) -> Option<&(String, f32)> {
        let s = self.0.get()?;
        (s.samples >= Self::ENOUGH_AUDIO || s.samples * 5 >= samples * 4).then_some(&s.language)
    }

    /// Offers a detection made on `samples` of audio. It settles the
    /// language when it is confident or heard enough; otherwise the next
    /// decode, with more of the utterance, detects again. (On espeak German,
    /// 1.5 s gave `de` at 0.42 and 3 s gave 0.71.) The first settled
    /// detection wins.
    pub fn offer(&self, language: &str, probability: f32, samples: usize) {
        if probability >= Self::CONFIDENT || samples >= Self::ENOUGH_AUDIO {
            let _ = self.0.set(Settled {
                language: (language.to_string(), probability),
                samples,
            });
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
            speech_sec: None,
            detection: None,
            word_timestamps: false,
            prompt: None,
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

/// The one language a `model.languages` list allows, however often it is
/// listed: it is simply forced, with no detection.
pub fn only_language(candidates: &[(String, u32)]) -> Option<&str> {
    let first = &candidates.first()?.0;
    candidates
        .iter()
        .all(|(l, _)| l == first)
        .then_some(first.as_str())
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
    fn a_final_reuses_a_detection_only_if_it_heard_most_of_the_audio() {
        let d = Detection::default();
        d.offer("ru", 0.6, 2 * 16_000);
        // A 3 s final: two seconds is not four fifths of it.
        assert_eq!(d.for_final(3 * 16_000), None);
        assert_eq!(d.for_final(5 * 16_000 / 2), Some(&("ru".to_string(), 0.6)));
        let d = Detection::default();
        d.offer("de", 0.4, Detection::ENOUGH_AUDIO);
        assert!(d.for_final(20 * 16_000).is_some());
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
