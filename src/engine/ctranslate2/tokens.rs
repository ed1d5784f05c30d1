//! Whisper's tokens as CTranslate2's `vocabulary.txt` lists them (one per
//! line, id = line number): the text tokens' bytes for turning ids back into
//! text, and the special tokens a prompt is built from.

use std::collections::HashMap;
use std::path::Path;

use crate::models::vocab::Vocabulary;

/// Seconds per timestamp token step.
const TIMESTAMP_STEP: f64 = 0.02;

pub struct Tokens {
    /// Raw bytes of the text tokens, ids `0..eot`.
    text: Vec<Vec<u8>>,
    /// Special tokens by their spelling (`<|de|>`).
    special: HashMap<String, usize>,
    pub eot: usize,
    pub sot: usize,
    pub transcribe: Option<usize>,
    pub translate: Option<usize>,
    pub no_timestamps: usize,
    /// `<|startofprev|>`: what precedes a prompt's text.
    pub sot_prev: Option<usize>,
    /// `<|0.00|>`; later timestamps follow it in 20 ms steps.
    pub timestamp_begin: Option<usize>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("vocabulary.txt cannot be read: {e}"))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let vocab = Vocabulary::parse(text).map_err(|e| format!("vocabulary.txt: {e}"))?;
        let special: HashMap<String, usize> = text
            .lines()
            .enumerate()
            .skip(vocab.eot)
            .map(|(id, t)| (t.to_string(), id))
            .collect();
        let need = |name: &str| {
            special
                .get(name)
                .copied()
                .ok_or_else(|| format!("vocabulary.txt has no {name} token"))
        };
        let mut text_tokens = vocab.tokens;
        text_tokens.truncate(vocab.eot);
        Ok(Self {
            eot: vocab.eot,
            sot: need("<|startoftranscript|>")?,
            no_timestamps: need("<|notimestamps|>")?,
            sot_prev: special.get("<|startofprev|>").copied(),
            transcribe: special.get("<|transcribe|>").copied(),
            translate: special.get("<|translate|>").copied(),
            timestamp_begin: special.get("<|0.00|>").copied(),
            text: text_tokens,
            special,
        })
    }

    /// The id of a language's token (`de` → `<|de|>`).
    pub fn language(&self, code: &str) -> Option<usize> {
        self.special.get(&format!("<|{code}|>")).copied()
    }

    /// Text of a run of ids; special tokens are skipped.
    pub fn decode(&self, ids: &[usize]) -> String {
        let mut bytes = Vec::new();
        for id in ids {
            if let Some(t) = self.text.get(*id) {
                bytes.extend_from_slice(t);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes of a text token (a token may end inside a UTF-8
    /// character).
    pub fn bytes(&self, id: usize) -> &[u8] {
        self.text.get(id).map_or(&[], Vec::as_slice)
    }

    /// Seconds a timestamp token stands for, if `id` is one.
    pub fn timestamp(&self, id: usize) -> Option<f64> {
        let begin = self.timestamp_begin?;
        (id >= begin).then(|| (id - begin) as f64 * TIMESTAMP_STEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: &str = "H\nello\nĠworld\n<|endoftext|>\n<|startoftranscript|>\n<|en|>\n<|de|>\n\
                         <|translate|>\n<|transcribe|>\n<|notimestamps|>\n<|0.00|>\n<|0.02|>\n";

    #[test]
    fn specials_and_text_round_trip() {
        let t = Tokens::parse(VOCAB).expect("vocabulary");
        assert_eq!((t.eot, t.sot, t.no_timestamps), (3, 4, 9));
        assert_eq!(t.language("de"), Some(6));
        assert_eq!(t.language("xx"), None);
        assert_eq!(t.transcribe, Some(8));
        assert_eq!(t.decode(&[0, 1, 2, 3, 9]), "Hello world");
        assert_eq!(t.timestamp(11), Some(0.02));
        assert_eq!(t.timestamp(2), None);
    }

    #[test]
    fn a_vocabulary_without_start_token_is_an_error() {
        let err = Tokens::parse("a\n<|endoftext|>\n<|notimestamps|>\n").err();
        assert!(err.is_some_and(|e| e.contains("startoftranscript")));
    }
}
