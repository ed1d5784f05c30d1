//! The legacy ggml Whisper file that whisper.cpp loads: magic, eleven
//! hyper-parameters, mel filters, vocabulary, then named tensors.
//!
//! This module owns the byte layout in both directions — [`GgmlWriter`] for
//! the importer and [`inspect`] for checking a file without loading it into
//! whisper.cpp. It does not decide which tensors a model needs.

mod inspect;
mod writer;

pub use inspect::{inspect, GgmlError, GgmlInfo, TensorInfo};
pub use writer::GgmlWriter;

/// `"ggml"` read as a little-endian u32.
pub const MAGIC: u32 = 0x6767_6d6c;
/// Header `ftype` of a file whose matrices are f16.
pub const FTYPE_F16: i32 = 1;
/// First vocabulary size of the multilingual models (whisper.cpp's own test).
pub const MULTILINGUAL_N_VOCAB: i32 = 51865;

/// The eleven i32 hyper-parameters, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hparams {
    /// Rows of the token embedding (51864 English-only, 51865+ multilingual).
    pub n_vocab: i32,
    /// Encoder positions (1500).
    pub n_audio_ctx: i32,
    /// Encoder width.
    pub n_audio_state: i32,
    /// Encoder attention heads.
    pub n_audio_head: i32,
    /// Encoder blocks.
    pub n_audio_layer: i32,
    /// Decoder positions (448).
    pub n_text_ctx: i32,
    /// Decoder width.
    pub n_text_state: i32,
    /// Decoder attention heads.
    pub n_text_head: i32,
    /// Decoder blocks.
    pub n_text_layer: i32,
    /// Mel bands (80, or 128 for large-v3).
    pub n_mels: i32,
    /// Weight type of the matrices (1 = f16).
    pub ftype: i32,
}

impl Hparams {
    fn to_array(self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(a: [i32; 11]) -> Self {
        let [n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype] =
            a;
        Self {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head,
            n_audio_layer,
            n_text_ctx,
            n_text_state,
            n_text_head,
            n_text_layer,
            n_mels,
            ftype,
        }
    }

    /// Whether the model knows languages other than English (whisper.cpp's rule).
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= MULTILINGUAL_N_VOCAB
    }

    /// Whisper size name from the encoder depth, as whisper.cpp names it.
    pub fn model_size(&self) -> &'static str {
        size_name(usize::try_from(self.n_audio_layer).unwrap_or(0))
    }
}

/// Element type of a tensor, numbered as ggml's `ggml_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 4-byte float.
    F32,
    /// 2-byte float.
    F16,
    /// Another ggml type (quantised files); the code is ggml's.
    Other(i32),
}

impl TensorType {
    /// ggml's type code.
    pub fn code(self) -> i32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Other(code) => code,
        }
    }

    fn from_code(code: i32) -> Self {
        match code {
            0 => Self::F32,
            1 => Self::F16,
            other => Self::Other(other),
        }
    }

    /// `(elements per block, bytes per block)` for the types whisper.cpp
    /// files use; `None` for one this reader cannot size.
    fn block(self) -> Option<(u64, u64)> {
        Some(match self.code() {
            0 => (1, 4),
            1 | 30 => (1, 2), // f16, bf16
            2 => (32, 18),    // q4_0
            3 => (32, 20),    // q4_1
            6 => (32, 22),    // q5_0
            7 => (32, 24),    // q5_1
            8 => (32, 34),    // q8_0
            _ => return None,
        })
    }
}
/// Whisper's size name for an encoder of `layers` layers (either format).
pub fn size_name(layers: usize) -> &'static str {
    match layers {
        4 => "tiny",
        6 => "base",
        12 => "small",
        24 => "medium",
        32 => "large",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_language_follow_whisper_cpp() {
        let mut h = Hparams {
            n_vocab: 51864,
            n_audio_layer: 4,
            ..Hparams::default()
        };
        assert_eq!((h.model_size(), h.is_multilingual()), ("tiny", false));
        h.n_vocab = 51866;
        h.n_audio_layer = 32;
        assert_eq!((h.model_size(), h.is_multilingual()), ("large", true));
        h.n_audio_layer = 5;
        assert_eq!(h.model_size(), "unknown");
        assert_eq!(Hparams::from_array(h.to_array()), h);
    }

    #[test]
    fn type_codes_round_trip() {
        for code in [0, 1, 2, 8, 30] {
            assert_eq!(TensorType::from_code(code).code(), code);
        }
        assert_eq!(TensorType::from_code(1), TensorType::F16);
    }
}
