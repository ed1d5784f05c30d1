//! GPT-2 byte-level BPE encoder over a Whisper `tokenizer.json`: turns a
//! user's prompt text into the text-token ids CTranslate2's `generate()`
//! takes. It only encodes plain text — no special tokens are added or
//! recognised (a prompt that spells `<|en|>` gets that text's tokens, not the
//! control token) — and decoding stays with `tokens.rs`.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

/// GPT-2's pre-tokenizer without its `\s+(?!\S)` branch: the `regex` crate has
/// no lookahead, so [`Bpe::pieces`] gives a whitespace run back its last char
/// instead. Alternation is leftmost-first here as in the original.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// A loaded encoder; immutable, so one can be shared by every worker.
pub struct Bpe {
    /// Merge rank by pair, keyed `"left right"`: byte-level symbols never
    /// hold a plain space (it is `Ġ`), so the join is unambiguous.
    ranks: HashMap<String, usize>,
    /// Token id by its byte-level spelling.
    vocab: HashMap<String, usize>,
    /// GPT-2's `bytes_to_unicode`: the char that stands for each byte.
    byte_char: [char; 256],
    pieces: Regex,
}

#[derive(Deserialize)]
struct TokenizerFile {
    model: ModelSection,
}

#[derive(Deserialize)]
struct ModelSection {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: HashMap<String, usize>,
    merges: Vec<Merge>,
}

/// tokenizers < 0.20 writes merges as `"a b"`, newer ones as `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Merge {
    Joined(String),
    Pair(String, String),
}

impl Bpe {
    /// Reads `tokenizer.json` (HF tokenizers format: model.type "BPE",
    /// model.vocab map, model.merges as either "a b" strings or ["a","b"]
    /// pairs).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a `tokenizer.json`; see [`Bpe::load`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: TokenizerFile =
            serde_json::from_str(text).map_err(|e| format!("not a tokenizer.json: {e}"))?;
        let model = file.model;
        if let Some(kind) = model.kind.as_deref().filter(|k| *k != "BPE") {
            return Err(format!("model.type is {kind:?}, expected \"BPE\""));
        }
        let mut ranks = HashMap::with_capacity(model.merges.len());
        for (rank, merge) in model.merges.into_iter().enumerate() {
            let key = match merge {
                Merge::Joined(s) if s.split(' ').count() == 2 => s,
                Merge::Pair(a, b) if !a.contains(' ') && !b.contains(' ') => format!("{a} {b}"),
                _ => return Err(format!("model.merges[{rank}] is not a pair of symbols")),
            };
            // The earliest merge wins, as in a rank table built in file order.
            ranks.entry(key).or_insert(rank);
        }
        let pieces =
            Regex::new(PATTERN).map_err(|e| format!("pre-tokenizer pattern is invalid: {e}"))?;
        Ok(Self {
            ranks,
            vocab: model.vocab,
            byte_char: bytes_to_unicode(),
            pieces,
        })
    }

    /// Token ids of `text` (no special tokens added, no prefix space added).
    pub fn encode(&self, text: &str) -> Vec<usize> {
        let mut ids = Vec::new();
        for piece in self.pieces(text) {
            let symbols: Vec<String> = piece
                .bytes()
                .map(|b| self.byte_char[usize::from(b)].to_string())
                .collect();
            // Byte-level symbols are always in the vocab; anything else is a
            // broken file, and dropping it beats failing a whole decode.
            ids.extend(
                self.merge(symbols)
                    .iter()
                    .filter_map(|s| self.vocab.get(s).copied()),
            );
        }
        ids
    }

    /// Splits `text` as GPT-2's pattern does, lookahead included: a whitespace
    /// run followed by a non-space leaves its last char to the next piece, so
    /// `"  Two"` is `" "`, `" Two"`.
    fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(m) = self.pieces.find_at(text, at) {
            let mut end = m.end();
            let piece = m.as_str();
            // Only the `\s+` branch can match all-whitespace; it is greedy, so
            // unless it reached the end a non-space follows.
            let run = piece.chars().all(char::is_whitespace) && piece.chars().nth(1).is_some();
            if run && end < text.len() {
                if let Some((last, _)) = piece.char_indices().next_back() {
                    end = m.start() + last;
                }
            }
            out.push(&text[m.start()..end]);
            at = end;
        }
        out
    }

    /// Merges the lowest-ranked adjacent pair, leftmost first, until no pair
    /// has a rank — the order HF tokenizers and OpenAI's reference use.
    fn merge(&self, mut symbols: Vec<String>) -> Vec<String> {
        let mut key = String::new();
        loop {
            let mut best: Option<(usize, usize)> = None;
            for i in 1..symbols.len() {
                key.clear();
                key.push_str(&symbols[i - 1]);
                key.push(' ');
                key.push_str(&symbols[i]);
                if let Some(&rank) = self.ranks.get(&key) {
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, i));
                    }
                }
            }
            let Some((_, i)) = best else { return symbols };
            let right = symbols.remove(i);
            symbols[i - 1].push_str(&right);
        }
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the
/// other 68 move to U+0100 onwards in byte order (the inverse of
/// `models::vocab`'s table).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            shifted += 1;
            // 256 + n stays below U+0144, all valid scalar values.
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::store;

    const TEXTS: [&str; 5] = [
        " Hello world",
        " Kubernetes, gRPC and vLLM.",
        " it's 2024!  Two  spaces\nnewline",
        " Grüße aus Köln",
        " 東京",
    ];

    fn provisioned(model: &str) -> Bpe {
        let path = store::ct2_dir(model).join("tokenizer.json");
        Bpe::load(&path).unwrap_or_else(|e| panic!("{e} (hint: run scripts/setup.sh)"))
    }

    fn check(model: &str, want: [&[usize]; 5]) {
        let bpe = provisioned(model);
        for (text, ids) in TEXTS.iter().zip(want) {
            assert_eq!(bpe.encode(text), ids, "{model} {text:?}");
        }
        assert!(bpe.encode("").is_empty());
    }

    // Reference ids from Python tokenizers 0.23.3 on the same files.
    #[test]
    fn tiny_en_matches_hf_tokenizers() {
        check(
            "tiny.en",
            [
                &[18435, 995],
                &[
                    12554, 527, 3262, 274, 11, 308, 49, 5662, 290, 410, 3069, 44, 13,
                ],
                &[340, 338, 48609, 0, 220, 4930, 220, 9029, 198, 3605, 1370],
                &[1902, 9116, 39683, 68, 257, 385, 509, 9101, 18755],
                &[10545, 251, 109, 12859, 105],
            ],
        );
    }

    #[test]
    fn base_matches_hf_tokenizers() {
        check(
            "base",
            [
                &[2425, 1002],
                &[23145, 11, 290, 49, 12986, 293, 371, 24010, 44, 13],
                &[309, 311, 45237, 0, 220, 4453, 220, 7673, 198, 7686, 1889],
                &[38908, 11451, 3437, 591, 13072, 77],
                &[220, 18413, 31375],
            ],
        );
    }

    #[test]
    fn whitespace_runs_split_like_the_lookahead() {
        let bpe = Bpe::from_json(r#"{"model":{"type":"BPE","vocab":{},"merges":[["a","b"]]}}"#)
            .expect("minimal tokenizer");
        assert_eq!(
            bpe.pieces("a  b\n\nc  "),
            ["a", " ", " b", "\n", "\n", "c", "  "]
        );
        assert!(
            Bpe::from_json(r#"{"model":{"type":"WordPiece","vocab":{},"merges":[]}}"#).is_err()
        );
    }
}
