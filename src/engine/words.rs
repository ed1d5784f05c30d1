//! Word timestamps, the engine-agnostic half: group a window's text tokens
//! into words, apply faster-whisper's clean-up to their times, and hand the
//! words out to the window's segments. Backends bring the token bytes and
//! per-token times (CTranslate2 alignment jumps, whisper.cpp t0/t1); this
//! module knows no token ids, models or audio, and does no alignment.
//!
//! Punctuation tests use Python's `in` on strings (a substring test, so the
//! empty string matches) because that is what faster-whisper does, and its
//! output is the reference we compare with.

use std::ops::Range;

use super::Word;

/// Languages written without spaces; lacking a morphological analyser, the
/// best split is at every character boundary (as Whisper and faster-whisper).
const NO_SPACE_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];
/// Python's `string.punctuation`.
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// faster-whisper's default `prepend_punctuations`.
const OPENING: &str = "\"'“¿([{-";
/// faster-whisper's default `append_punctuations`.
const CLOSING: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_ENDS: &str = ".。!！?？";
/// faster-whisper's cap on the median word duration used by the clamp.
const MEDIAN_CAP_SEC: f64 = 0.7;

/// A word's tokens: indices into the token list given to split_words.
#[derive(Debug, Clone, PartialEq)]
pub struct WordSpan {
    pub text: String,
    pub tokens: Range<usize>,
}

/// Groups text tokens (their raw bytes, special tokens already removed) into words:
/// bytes are accumulated until they form valid UTF-8 (a token may end inside a character);
/// a new word starts at a subword beginning with b' ', at a subword that is only ASCII punctuation,
/// or at the first subword; for languages without spaces (zh, ja, th, lo, my, yue) every
/// unicode subword is a word. `language` is a Whisper code ("en", "ja", …).
///
/// "Only ASCII punctuation" is faster-whisper's test: the trimmed subword is
/// a substring of Python's `string.punctuation` (so "..." is not, and stays
/// glued to the word before it, as in faster-whisper).
///
/// Every token lands in exactly one word and the spans are contiguous, so
/// token counts stay right for [`assign`]; bytes that can never become valid
/// UTF-8 (or are cut off by the end of the list) are kept, decoded lossily.
pub fn split_words(tokens: &[&[u8]], language: &str) -> Vec<WordSpan> {
    let every_subword = NO_SPACE_LANGUAGES.contains(&language);
    let mut words: Vec<WordSpan> = Vec::new();
    let mut pending = Vec::new();
    let mut first = 0;
    for (i, bytes) in tokens.iter().enumerate() {
        pending.extend_from_slice(bytes);
        let incomplete = matches!(std::str::from_utf8(&pending), Err(e) if e.error_len().is_none());
        if incomplete && i + 1 < tokens.len() {
            continue;
        }
        let text = String::from_utf8_lossy(&pending).into_owned();
        pending.clear();
        let span = first..i + 1;
        first = i + 1;
        let starts_word = every_subword
            || words.is_empty()
            || text.starts_with(' ')
            || ASCII_PUNCTUATION.contains(text.trim());
        match words.last_mut() {
            Some(word) if !starts_word => {
                word.text.push_str(&text);
                word.tokens.end = span.end;
            }
            _ => words.push(WordSpan { text, tokens: span }),
        }
    }
    words
}

/// A word with its timing before clean-up; `tokens` = how many text tokens it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub text: String,
    pub tokens: usize,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// faster-whisper's clean-up, in its order: clamp over-long words next to sentence ends (median
/// duration capped at 0.7 s, max = 2×median, only for words after the first), then merge
/// punctuation: opening punctuation ("'“¿([{- , as whole words starting with a space) joins the
/// next word, closing punctuation ("'.。,，!！?？:：”)]}、) joins the previous word. Merged-away words
/// give their text and token count to the word they join and are removed; times of the kept word
/// stay its own (as faster-whisper).
pub fn tidy(words: &mut Vec<Timed>) {
    clamp_long_words(words);
    merge_punctuation(words);
    // Only merged-away words are both empty and token-less; an empty word
    // that still owns tokens stays so that assign counts them.
    words.retain(|w| !(w.text.is_empty() && w.tokens == 0));
}

/// DTW tends to stretch the word before or after a pause over the pause;
/// at sentence ends that is most likely wrong, so cut it to 2× the median.
fn clamp_long_words(words: &mut [Timed]) {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d != 0.0)
        .collect();
    if durations.is_empty() {
        return;
    }
    durations.sort_by(f64::total_cmp);
    let mid = durations.len() / 2;
    let median = if durations.len() % 2 == 1 {
        durations[mid]
    } else {
        (durations[mid - 1] + durations[mid]) / 2.0
    };
    let max = 2.0 * median.min(MEDIAN_CAP_SEC);
    for i in 1..words.len() {
        // Times are finite (from token positions); only long words change.
        if words[i].end - words[i].start <= max {
            continue;
        }
        if SENTENCE_ENDS.contains(words[i].text.as_str()) {
            words[i].end = words[i].start + max;
        } else if SENTENCE_ENDS.contains(words[i - 1].text.as_str()) {
            words[i].start = words[i].end - max;
        }
    }
}

/// Empties merged-away words (text "" and 0 tokens) rather than removing
/// them, so both passes walk the same indices as faster-whisper's.
fn merge_punctuation(words: &mut [Timed]) {
    // Right to left, so a run of opening marks all reach the word after it.
    let mut j = words.len().saturating_sub(1);
    for i in (0..words.len().saturating_sub(1)).rev() {
        if words[i].text.starts_with(' ') && OPENING.contains(words[i].text.trim()) {
            let text = std::mem::take(&mut words[i].text);
            words[j].text.insert_str(0, &text);
            words[j].tokens += std::mem::take(&mut words[i].tokens);
        } else {
            j = i;
        }
    }
    let mut i = 0;
    for j in 1..words.len() {
        if !words[i].text.ends_with(' ') && CLOSING.contains(words[j].text.as_str()) {
            let text = std::mem::take(&mut words[j].text);
            words[i].text.push_str(&text);
            words[i].tokens += std::mem::take(&mut words[j].tokens);
        } else {
            i = j;
        }
    }
}

/// Splits tidied words among segments by text-token count: segment k takes words while the tokens
/// it has consumed are fewer than `segment_tokens[k]`. Word times are shifted by `offset` seconds
/// and clamped into [0, limit]; texts keep their leading space trimmed. Words left over after the
/// last segment go to the last one; zero segments → empty vec.
///
/// Times are rounded to centiseconds (as faster-whisper) before clamping;
/// words whose text is only whitespace are dropped, their tokens still counted.
pub fn assign(
    words: Vec<Timed>,
    segment_tokens: &[usize],
    offset: f64,
    limit: f64,
) -> Vec<Vec<Word>> {
    let mut out: Vec<Vec<Word>> = segment_tokens.iter().map(|_| Vec::new()).collect();
    let Some(last) = out.len().checked_sub(1) else {
        return out;
    };
    // `min` then `max` rather than `clamp`, which panics on a negative limit.
    let place = |t: f64| (((t + offset) * 100.0).round() / 100.0).min(limit).max(0.0);
    let (mut k, mut consumed) = (0, 0);
    for w in words {
        // A word straddling a boundary stays with the segment it starts in
        // and the next segment counts from zero, as faster-whisper does.
        while k < last && consumed >= segment_tokens[k] {
            k += 1;
            consumed = 0;
        }
        consumed += w.tokens;
        let text = w.text.trim();
        if text.is_empty() {
            continue;
        }
        out[k].push(Word {
            word: text.to_owned(),
            start_sec: place(w.start),
            end_sec: place(w.end),
            probability: w.probability,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(tokens: &[&[u8]], language: &str) -> Vec<(String, Range<usize>)> {
        let words = split_words(tokens, language);
        words.into_iter().map(|w| (w.text, w.tokens)).collect()
    }

    fn timed(text: &str, tokens: usize, start: f64, end: f64) -> Timed {
        let text = text.to_owned();
        Timed {
            text,
            tokens,
            start,
            end,
            probability: 0.9,
        }
    }

    /// Text and times in centiseconds, so float noise cannot fail a test.
    fn cs(words: &[Timed]) -> Vec<(&str, i64, i64)> {
        let c = |t: f64| (t * 100.0).round() as i64;
        words
            .iter()
            .map(|w| (w.text.as_str(), c(w.start), c(w.end)))
            .collect()
    }

    #[test]
    fn splits_on_spaces_and_leaves_punctuation_alone() {
        let tokens: [&[u8]; 5] = [b" Hello", b" wor", b"ld", b"!", b" This"];
        let want = [
            (" Hello", 0..1),
            (" world", 1..3),
            ("!", 3..4),
            (" This", 4..5),
        ];
        assert_eq!(split(&tokens, "en"), want.map(|(t, r)| (t.to_owned(), r)));
    }

    #[test]
    fn joins_a_character_split_across_tokens() {
        // "ü" is C3 BC; the second token starts with its continuation byte.
        let tokens: [&[u8]; 3] = [b" Gr\xc3", b"\xbc\xc3\x9f", b"e"];
        assert_eq!(split(&tokens, "de"), [(" Grüße".to_owned(), 0..3)]);
        // Cut off at the end: kept (lossily) so no token goes missing.
        let tokens: [&[u8]; 2] = [b" a", b"\xe3"];
        assert_eq!(split(&tokens, "en"), [(" a\u{fffd}".to_owned(), 0..2)]);
    }

    #[test]
    fn japanese_makes_every_subword_a_word() {
        let ni = "に".as_bytes();
        let chi = [&ni[2..], "ち".as_bytes()].concat();
        let tokens: [&[u8]; 4] = ["こん".as_bytes(), &ni[..2], &chi, "は".as_bytes()];
        let want = [("こん", 0..1), ("にち", 1..3), ("は", 3..4)];
        assert_eq!(split(&tokens, "ja"), want.map(|(t, r)| (t.to_owned(), r)));
        assert_eq!(split(&tokens, "en"), [("こんにちは".to_owned(), 0..4)]);
    }

    #[test]
    fn merges_closing_and_opening_punctuation() {
        let mut words = vec![
            timed(" \"", 1, 0.0, 0.1),
            timed("Hello", 1, 0.1, 0.4),
            timed(" world", 1, 0.4, 0.8),
            timed("!", 1, 0.8, 0.9),
            timed(" (", 1, 0.9, 1.0),
            timed(" (", 1, 1.0, 1.1),
            timed(" Yes", 2, 1.1, 1.5),
        ];
        tidy(&mut words);
        let want = [
            (" \"Hello", 2, 0.1, 0.4),
            (" world!", 2, 0.4, 0.8),
            (" ( ( Yes", 4, 1.1, 1.5),
        ];
        assert_eq!(words, want.map(|(t, n, s, e)| timed(t, n, s, e)));
    }

    #[test]
    fn clamps_long_words_at_sentence_ends() {
        let mut words = vec![
            timed(" One", 1, 0.0, 0.3),
            timed(" two", 1, 0.3, 0.6),
            timed(".", 1, 0.6, 2.6),
            timed(" Three", 1, 2.6, 5.0),
            timed(" four", 1, 5.0, 5.3),
        ];
        tidy(&mut words);
        // Median 0.3 s, so at most 0.6 s: "." loses its tail (then merges),
        // " Three" its head.
        let want = [
            (" One", 0, 30),
            (" two.", 30, 60),
            (" Three", 440, 500),
            (" four", 500, 530),
        ];
        assert_eq!(cs(&words), want);
        // The median is capped at 0.7 s, and the first word is never clamped.
        let mut slow = vec![
            timed(".", 1, 0.0, 9.0),
            timed(" a", 1, 9.0, 11.0),
            timed(" b", 1, 11.0, 13.0),
        ];
        tidy(&mut slow);
        assert_eq!(
            cs(&slow),
            [(".", 0, 900), (" a", 960, 1100), (" b", 1100, 1300)]
        );
    }

    #[test]
    fn assigns_by_token_count_with_offset_and_limit() {
        let words = vec![
            timed(" Hello", 1, 0.0, 0.4),
            timed(" world!", 2, 0.4, 0.9),
            timed(" Next", 1, 0.9, 1.3),
            timed(" one", 1, 1.3, 1.8),
        ];
        let segments = assign(words.clone(), &[3, 2], 10.0, 11.5);
        let word = |w: &str, start_sec, end_sec| Word {
            word: w.to_owned(),
            start_sec,
            end_sec,
            probability: 0.9,
        };
        let first = vec![word("Hello", 10.0, 10.4), word("world!", 10.4, 10.9)];
        let second = vec![word("Next", 10.9, 11.3), word("one", 11.3, 11.5)];
        assert_eq!(segments, [first, second]);
        // Leftovers go to the last segment; an empty segment takes nothing.
        let segments = assign(words.clone(), &[0, 1], 0.0, 60.0);
        assert_eq!((segments[0].len(), segments[1].len()), (0, 4));
        assert!(assign(words, &[], 0.0, 60.0).is_empty());
    }
}
