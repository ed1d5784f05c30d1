//! Where provisioned files live and how names resolve to them. The models
//! directory is `$STT_MODELS_DIR`, else `$XDG_CACHE_HOME/stt/models`, else
//! `~/.cache/stt/models` — outside the checkout, so every clone and every
//! working directory finds the same provisioned models.

use std::path::{Path, PathBuf};

use crate::env::{ENV_MODELS_DIR, ENV_ORT_DYLIB_PATH};

/// File name of the ONNX Runtime library the set-up script provisions.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";
/// File name of the Silero VAD model.
pub const SILERO_MODEL: &str = "silero_vad.onnx";
/// The default Whisper model.
pub const DEFAULT_MODEL: &str = "tiny.en";

/// The models directory.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_MODELS_DIR).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("stt").join("models")
}

/// ggml file name for a model name: `tiny.en` → `ggml-tiny.en.bin`.
pub fn ggml_file_name(name: &str) -> String {
    format!("ggml-{name}.bin")
}

/// Resolves a model given as a name (`tiny.en`) or a path to a ggml file.
/// Anything with a path separator or a `.bin` suffix is a path.
pub fn resolve_model(name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if name_or_path.contains('/') || name_or_path.ends_with(".bin") || p.is_file() {
        return p.to_path_buf();
    }
    models_dir().join(ggml_file_name(name_or_path))
}

/// The model id of a ggml path: `…/ggml-tiny.en.bin` → `tiny.en`.
pub fn model_id(path: &Path) -> String {
    let stem = path.file_name().and_then(|s| s.to_str()).unwrap_or("model");
    let stem = stem.strip_suffix(".bin").unwrap_or(stem);
    stem.strip_prefix("ggml-").unwrap_or(stem).to_string()
}

/// The ONNX Runtime library: configured path, else `$ORT_DYLIB_PATH`, else
/// the provisioned copy.
pub fn ort_library(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(ENV_ORT_DYLIB_PATH).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    models_dir().join(ORT_LIBRARY)
}

/// The Silero model: configured path, else the provisioned copy.
pub fn silero_model(configured: Option<&Path>) -> PathBuf {
    configured.map_or_else(|| models_dir().join(SILERO_MODEL), Path::to_path_buf)
}

/// CTranslate2 source directory provisioned for `name` (`ct2/<name>`).
pub fn ct2_dir(name: &str) -> PathBuf {
    models_dir().join("ct2").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_resolve() {
        assert!(resolve_model("tiny.en").ends_with("ggml-tiny.en.bin"));
        assert_eq!(resolve_model("/x/y.bin"), PathBuf::from("/x/y.bin"));
        assert_eq!(model_id(Path::new("/m/ggml-base.bin")), "base");
        assert_eq!(model_id(Path::new("custom.bin")), "custom");
    }
}
