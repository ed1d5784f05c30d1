//! CTranslate2: the default CPU engine. It reads CTranslate2 (faster-whisper)
//! model directories as they are, quantises the weights to int8 at load and
//! runs them on the CTranslate2 library of the PyPI `ctranslate2` wheel
//! (Intel MKL and oneDNN kernels), through the small C shim in `shim.cpp`.
//!
//! One [`Ct2Model`] holds the weights; each worker owns a replica over them
//! (no copy) with its own thread count. A clip is encoded once in
//! `prepare`; detection and every decode attempt reuse the encoder output,
//! so language detection costs one decoder step instead of an encoder pass.
//! We compute the mel ourselves and build the prompt from the model's own
//! tokens: English-only models get no language or task token.

mod bpe;
mod decoder;
mod ffi;
pub mod mel;
mod tokens;

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::sync::Arc;

use super::backend::{Decoder, LoadedModel};
use super::{EngineConfig, EngineError, EngineKind};
use bpe::Bpe;
use decoder::Ct2Decoder;
use tokens::Tokens;

/// A CTranslate2 Whisper model loaded once per engine.
pub struct Ct2Model {
    raw: RawModel,
    tokens: Arc<Tokens>,
    /// Encodes prompt text; `None` when the model ships no tokenizer.json
    /// (prompts are then ignored, with a warning at load).
    bpe: Option<Arc<Bpe>>,
    info: ffi::Info,
    compute_type: String,
}

/// The shim's model handle. CTranslate2 models are immutable once loaded
/// and are shared by replicas on many threads.
struct RawModel(*mut ffi::Model);
// SAFETY: the model is only read after loading; CTranslate2 shares one
// model between replicas running on different threads.
unsafe impl Send for RawModel {}
// SAFETY: as above — no call mutates the model.
unsafe impl Sync for RawModel {}

impl Drop for RawModel {
    fn drop(&mut self) {
        // SAFETY: the pointer came from stt_ct2_model_load and is freed once.
        unsafe { ffi::stt_ct2_model_free(self.0) }
    }
}

/// Turns a shim error string into a message and frees it.
pub(super) fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown CTranslate2 error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, by the shim's allocator.
    unsafe { ffi::stt_ct2_string_free(err) };
    msg
}

/// `model.compute_type` → CTranslate2's. `default` and `auto` mean int8:
/// the fastest measured on CPU, and what faster-whisper servers run.
pub fn compute_type(configured: &str) -> &str {
    match configured {
        "default" | "auto" | "" => "int8",
        other => other,
    }
}

impl Ct2Model {
    pub(super) fn load(cfg: &EngineConfig) -> Result<Self, EngineError> {
        let dir = &cfg.model.path;
        let load_err = |detail: String| EngineError::ModelLoad {
            path: dir.clone(),
            detail,
        };
        let tokens = Tokens::load(&dir.join("vocabulary.txt")).map_err(|detail| {
            EngineError::ModelInvalid {
                path: dir.clone(),
                detail,
            }
        })?;
        let bpe = match Bpe::load(&dir.join("tokenizer.json")) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                tracing::warn!(model = %dir.display(), error = %e, "no prompt tokenizer: session prompts will be ignored");
                None
            }
        };
        let c_dir = path_cstring(dir).map_err(load_err)?;
        let c_type = CString::new(compute_type(&cfg.compute_type))
            .map_err(|_| load_err("compute type holds a NUL byte".into()))?;
        let mut raw = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: valid C strings and out-pointers; the shim catches every
        // exception.
        let rc =
            unsafe { ffi::stt_ct2_model_load(c_dir.as_ptr(), c_type.as_ptr(), &mut raw, &mut err) };
        if rc != 0 || raw.is_null() {
            return Err(load_err(take_error(err)));
        }
        let raw = RawModel(raw);
        let mut info = ffi::Info::default();
        let mut err = std::ptr::null_mut();
        // SAFETY: `raw.0` is a loaded model; `info` is a valid out-pointer.
        if unsafe { ffi::stt_ct2_model_info(raw.0, &mut info, &mut err) } != 0 {
            return Err(load_err(take_error(err)));
        }
        let mut effective = [0 as c_char; 32];
        // SAFETY: the buffer holds `effective.len()` bytes.
        unsafe { ffi::stt_ct2_model_compute_type(raw.0, effective.as_mut_ptr(), effective.len()) };
        // SAFETY: the shim NUL-terminates within the buffer.
        let compute_type = unsafe { CStr::from_ptr(effective.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        tracing::info!(
            model = %dir.display(),
            compute_type = %compute_type,
            n_mels = info.n_mels,
            multilingual = info.multilingual != 0,
            "CTranslate2 model loaded"
        );
        Ok(Self {
            raw,
            bpe,
            tokens: Arc::new(tokens),
            info,
            compute_type,
        })
    }

    /// The compute type CTranslate2 chose for the weights.
    pub fn compute_type(&self) -> &str {
        &self.compute_type
    }
}

fn path_cstring(path: &Path) -> Result<CString, String> {
    let s = path
        .to_str()
        .ok_or_else(|| "path is not valid UTF-8".to_string())?;
    CString::new(s).map_err(|_| "path holds a NUL byte".to_string())
}

impl LoadedModel for Ct2Model {
    fn multilingual(&self) -> bool {
        self.info.multilingual != 0
    }

    fn kind(&self) -> EngineKind {
        EngineKind::CTranslate2
    }

    fn decoder(&self, threads: usize) -> Result<Box<dyn Decoder>, EngineError> {
        let mut replica = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // SAFETY: `self.raw.0` is a loaded model that outlives the replica
        // (the replica keeps a shared_ptr to it).
        if unsafe { ffi::stt_ct2_replica_new(self.raw.0, threads.max(1), &mut replica, &mut err) }
            != 0
        {
            return Err(EngineError::Decode(format!(
                "creating a CTranslate2 replica: {}",
                take_error(err)
            )));
        }
        Ok(Box::new(Ct2Decoder::new(
            replica,
            self.tokens.clone(),
            self.bpe.clone(),
            self.info.n_mels.max(1),
            self.info.multilingual != 0,
        )))
    }
}
