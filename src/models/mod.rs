//! `stt models`: list, import, verify and fetch Whisper models, and where
//! provisioned files live.
//!
//! The CTranslate2 → ggml importer is one concept per module: [`ct2`] reads
//! `model.bin`, [`vocab`] the token list, [`mel`] makes the filterbank,
//! [`plan`] maps names and shapes, [`ggml`] owns the output format and
//! [`import`] ties them together. [`store`] knows where models live.

pub mod ct2;
pub mod ggml;
pub mod import;
pub mod mel;
pub mod plan;
pub mod store;
pub mod vocab;

mod command;
#[cfg(test)]
pub(crate) mod fixture;

pub use command::run;
pub use ggml::{inspect, GgmlError, GgmlInfo};
pub use import::{import_ct2, ImportError, ImportOptions, ImportSummary};

use crate::engine::EngineError;
use crate::vad::VadError;

/// The fix for an error a person sees, when we know it.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<VadError>() {
            return e.hint().map(str::to_string);
        }
        if let Some(EngineError::ModelMissing { .. }) = cause.downcast_ref::<EngineError>() {
            return Some(format!(
                "run `scripts/setup.sh` to provision the default models into {}, or convert a \
                 faster-whisper directory with `stt models import <dir>`",
                store::models_dir().display()
            ));
        }
    }
    None
}
