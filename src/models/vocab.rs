//! Whisper's token list as whisper.cpp wants it: the raw bytes of each token
//! from `0` up to and including `<|endoftext|>`.
//!
//! CTranslate2's `vocabulary.txt` holds one GPT-2 byte-level BPE token per
//! line, each byte spelt as a printable character (`Ġ` for a space). This
//! module undoes that spelling; it does not read `tokenizer.json` and leaves
//! the later special tokens out, because whisper.cpp synthesises them itself.

/// The token that ends the list written to a ggml file.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Ways a vocabulary can fail to decode.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// `<|endoftext|>` is not among the tokens.
    #[error("no `{END_OF_TEXT}` token among {count} tokens")]
    NoEndOfText {
        /// Number of tokens seen.
        count: usize,
    },
    /// A token holds a character outside GPT-2's byte alphabet.
    #[error("token {index} ({token:?}) has a character outside the GPT-2 byte alphabet")]
    NotByteLevel {
        /// Line index of the token.
        index: usize,
        /// The token as written.
        token: String,
    },
}

/// Tokens `0..=eot` as raw bytes.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Raw bytes of each token, in id order.
    pub tokens: Vec<Vec<u8>>,
    /// Id of `<|endoftext|>` (50256 English-only, 50257 multilingual).
    pub eot: usize,
}

impl Vocabulary {
    /// Decodes the text of a `vocabulary.txt`; lines after `<|endoftext|>`
    /// are ignored, so both the 51864- and the 51865-token lists work.
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        let table = unicode_to_byte();
        let mut tokens = Vec::new();
        let mut count = 0;
        for (index, line) in text.lines().enumerate() {
            count += 1;
            let bytes = line
                .chars()
                .map(&table)
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| VocabError::NotByteLevel {
                    index,
                    token: line.to_owned(),
                })?;
            tokens.push(bytes);
            if line == END_OF_TEXT {
                return Ok(Self { tokens, eot: index });
            }
        }
        Err(VocabError::NoEndOfText { count })
    }
}

/// GPT-2's `bytes_to_unicode` inverted: the printable bytes stand for
/// themselves, the other 68 bytes were moved to U+0100 onwards in byte order.
fn unicode_to_byte() -> impl Fn(char) -> Option<u8> {
    let mut map = [None; 512];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            shifted += 1;
            255 + shifted
        };
        map[code as usize] = Some(b);
    }
    move |c| map.get(c as usize).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_all_bytes() {
        let table = unicode_to_byte();
        let mut seen = [false; 256];
        for code in 0..512u32 {
            if let Some(b) = char::from_u32(code).and_then(&table) {
                assert!(!seen[b as usize], "byte {b} mapped twice");
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(table('A'), Some(b'A'));
        assert_eq!(table('Ġ'), Some(b' '));
        assert_eq!(table('Ċ'), Some(b'\n'));
        assert_eq!(table('Ā'), Some(0));
        assert_eq!(table('ł'), Some(0xA0));
        assert_eq!(table('Ń'), Some(0xAD));
        assert_eq!(table('中'), None);
    }

    #[test]
    fn decodes_tokens_and_stops_at_end_of_text() {
        let text = "!\nĠthe\nÃ©\n<|endoftext|>\n<|startoftranscript|>\n";
        let v = Vocabulary::parse(text).expect("valid vocabulary");
        assert_eq!(v.eot, 3);
        assert_eq!(v.tokens.len(), 4);
        assert_eq!(v.tokens[1], b" the");
        assert_eq!(v.tokens[2], "é".as_bytes());
        assert_eq!(v.tokens[3], END_OF_TEXT.as_bytes());
    }

    #[test]
    fn missing_end_of_text_is_an_error() {
        let err = Vocabulary::parse("a\nb\n").expect_err("no eot");
        assert!(matches!(err, VocabError::NoEndOfText { count: 2 }));
    }

    #[test]
    fn foreign_characters_are_an_error() {
        let err = Vocabulary::parse("a\n中\n<|endoftext|>\n").expect_err("not byte-level");
        assert!(matches!(err, VocabError::NotByteLevel { index: 1, .. }));
    }
}
