//! `stt models`: list, import, verify and fetch Whisper models.
//!
//! Today it holds the CTranslate2 → ggml importer ([`import::import_ct2`])
//! and the ggml file check ([`ggml::inspect`]); the pieces are one concept
//! each: [`ct2`] reads `model.bin`, [`vocab`] the token list, [`mel`] makes
//! the filterbank, [`plan`] maps names and shapes, [`ggml`] owns the output
//! format.

pub mod ct2;
pub mod ggml;
pub mod import;
pub mod mel;
pub mod plan;
pub mod vocab;

#[cfg(test)]
mod fixture;

pub use ggml::{inspect, GgmlError, GgmlInfo};
pub use import::{import_ct2, ImportError, ImportOptions, ImportSummary};
