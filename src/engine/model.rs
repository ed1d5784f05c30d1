//! What a model name or path means: a CTranslate2 directory (`model.bin`,
//! `config.json`, `vocabulary.txt`) runs on CTranslate2, a ggml file on
//! whisper.cpp. `model.engine` picks between the two when a name has both.
//! Every check here runs before a backend sees the files, so a broken
//! model is a readable error naming the bad file, never a crash inside C++.

use std::path::{Path, PathBuf};

use super::EngineError;
use crate::models::store;

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    #[serde(rename = "ctranslate2")]
    CTranslate2,
    #[serde(rename = "whisper.cpp")]
    WhisperCpp,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CTranslate2 => "ctranslate2",
            Self::WhisperCpp => "whisper.cpp",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::CTranslate2 => cfg!(feature = "ctranslate2"),
            Self::WhisperCpp => true,
        }
    }
}

/// `model.engine`: which backend to prefer when a name resolves to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// CTranslate2 when the build has it and a CTranslate2 directory
    /// exists, else whisper.cpp.
    #[default]
    Auto,
    Only(EngineKind),
}

impl EngineChoice {
    /// Parses `auto`, `ctranslate2` (or `ct2`), `whisper.cpp` (or
    /// `whisper`, `ggml`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Self::Auto),
            "ctranslate2" | "ct2" => Some(Self::Only(EngineKind::CTranslate2)),
            "whisper.cpp" | "whisper" | "whispercpp" | "ggml" => {
                Some(Self::Only(EngineKind::WhisperCpp))
            }
            _ => None,
        }
    }
}

/// `--engine` flags: clap reports a bad value with the choices.
impl std::str::FromStr for EngineChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("{s:?} is not auto, ctranslate2 or whisper.cpp"))
    }
}

/// A model on disk and the backend that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub path: PathBuf,
    pub kind: EngineKind,
}

/// Files a CTranslate2 Whisper directory must hold.
pub const CT2_FILES: [&str; 3] = ["model.bin", "config.json", "vocabulary.txt"];

impl ModelSource {
    /// The source for a path: a directory is CTranslate2, a file ggml.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let kind = if path.is_dir() {
            EngineKind::CTranslate2
        } else {
            EngineKind::WhisperCpp
        };
        Self { path, kind }
    }

    /// Resolves a model name (`tiny.en`) or path. A name looks for
    /// `ct2/<name>/` and `ggml-<name>.bin` in the models directory, as
    /// `choice` prefers; a missing model resolves to the preferred form so
    /// the error names the file a user should provision.
    pub fn resolve(name_or_path: &str, choice: EngineChoice) -> Self {
        let p = Path::new(name_or_path);
        if name_or_path.contains('/') || name_or_path.ends_with(".bin") || p.exists() {
            return Self::from_path(p);
        }
        let ct2 = Self {
            path: store::ct2_dir(name_or_path),
            kind: EngineKind::CTranslate2,
        };
        let ggml = Self {
            path: store::models_dir().join(store::ggml_file_name(name_or_path)),
            kind: EngineKind::WhisperCpp,
        };
        match choice {
            EngineChoice::Only(EngineKind::CTranslate2) => ct2,
            EngineChoice::Only(EngineKind::WhisperCpp) => ggml,
            EngineChoice::Auto => {
                if EngineKind::CTranslate2.compiled_in() && ct2.path.is_dir() {
                    ct2
                } else {
                    ggml
                }
            }
        }
    }

    /// The model's id: `…/ggml-tiny.en.bin` and `…/ct2/tiny.en` → `tiny.en`.
    pub fn id(&self) -> String {
        store::model_id(&self.path)
    }

    /// Checks the files are there and look right, without loading them.
    pub fn check(&self) -> Result<(), EngineError> {
        let invalid = |detail: String| EngineError::ModelInvalid {
            path: self.path.clone(),
            detail,
        };
        if !self.path.exists() {
            return Err(EngineError::ModelMissing {
                path: self.path.clone(),
            });
        }
        match self.kind {
            EngineKind::WhisperCpp => {
                if self.path.is_dir() {
                    return Err(invalid(
                        "a directory is a CTranslate2 model; whisper.cpp needs a ggml file \
                         (convert it with `stt models import`)"
                            .into(),
                    ));
                }
                Ok(())
            }
            EngineKind::CTranslate2 => {
                check_ct2_dir(&self.path).map_err(invalid)?;
                if !self.kind.compiled_in() {
                    return Err(EngineError::Unsupported(format!(
                        "{} is a CTranslate2 model, and this binary was built without \
                         CTranslate2 (rebuild with the default features, or convert it with \
                         `stt models import`)",
                        self.path.display()
                    )));
                }
                Ok(())
            }
        }
    }
}

/// The checks CTranslate2 itself would fail on, with messages naming the
/// file: every file present, `config.json` parses and describes Whisper,
/// `model.bin` is a complete CTranslate2 Whisper model.
fn check_ct2_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err("not a directory; a CTranslate2 model is a directory".into());
    }
    for f in CT2_FILES {
        if !dir.join(f).is_file() {
            return Err(format!("{f} is missing from the directory"));
        }
    }
    let config = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| format!("config.json cannot be read: {e}"))?;
    let config: serde_json::Value =
        serde_json::from_str(&config).map_err(|e| format!("config.json is not valid JSON: {e}"))?;
    if !config.is_object() {
        return Err("config.json is not a JSON object".into());
    }
    if let Some(ids) = config.get("lang_ids") {
        if !ids.is_array() {
            return Err("config.json: lang_ids is not a list".into());
        }
    }
    let model = crate::models::ct2::Ct2Model::open(&dir.join("model.bin"))
        .map_err(|e| format!("model.bin: {e}"))?;
    if model.spec != "WhisperSpec" {
        return Err(format!(
            "model.bin holds a {:?} model, not Whisper (WhisperSpec)",
            model.spec
        ));
    }
    let vocab = std::fs::read_to_string(dir.join("vocabulary.txt"))
        .map_err(|e| format!("vocabulary.txt cannot be read: {e}"))?;
    let tokens = vocab.lines().count();
    if !vocab.lines().any(|l| l == "<|startoftranscript|>") {
        return Err(format!(
            "vocabulary.txt ({tokens} lines) has no <|startoftranscript|> token"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_choice_parses() {
        assert_eq!(EngineChoice::parse("auto"), Some(EngineChoice::Auto));
        assert_eq!(
            EngineChoice::parse("CTranslate2"),
            Some(EngineChoice::Only(EngineKind::CTranslate2))
        );
        assert_eq!(
            EngineChoice::parse("whisper.cpp"),
            Some(EngineChoice::Only(EngineKind::WhisperCpp))
        );
        assert_eq!(EngineChoice::parse("onnx"), None);
    }

    #[test]
    fn paths_pick_the_backend_by_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = ModelSource::from_path(dir.path());
        assert_eq!(src.kind, EngineKind::CTranslate2);
        let file = dir.path().join("ggml-x.bin");
        std::fs::write(&file, b"x").expect("write");
        assert_eq!(
            ModelSource::resolve(file.to_str().expect("utf-8"), EngineChoice::Auto).kind,
            EngineKind::WhisperCpp
        );
    }

    #[test]
    fn a_ct2_directory_missing_a_file_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), "{}").expect("write");
        std::fs::write(dir.path().join("vocabulary.txt"), "a\n").expect("write");
        let src = ModelSource::from_path(dir.path());
        let err = src.check().expect_err("model.bin missing").to_string();
        assert!(err.contains("model.bin is missing"), "{err}");
        std::fs::write(dir.path().join("model.bin"), b"\x06\x00").expect("write");
        std::fs::write(dir.path().join("config.json"), "{not json").expect("write");
        let err = src.check().expect_err("bad config").to_string();
        assert!(err.contains("config.json is not valid JSON"), "{err}");
    }
}
