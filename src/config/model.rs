//! `config/model.yaml`: which Whisper model to run and how to decode
//! (the `realtime` and `accurate` decode profiles).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelFile {
    pub model: ModelSection,
    pub decode_profiles: BTreeMap<String, DecodeProfileConfig>,
}

impl Default for ModelFile {
    fn default() -> Self {
        let mut decode_profiles = BTreeMap::new();
        decode_profiles.insert("realtime".into(), DecodeProfileConfig::realtime());
        decode_profiles.insert("accurate".into(), DecodeProfileConfig::accurate());
        Self {
            model: ModelSection::default(),
            decode_profiles,
        }
    }
}

/// `model:` — the default model and its worker pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Model name (`tiny.en`, `base`, …) resolved to `ggml-<name>.bin` in the
    /// models directory, or a path to a ggml file.
    pub name: String,
    /// Explicit model: a CTranslate2 directory or a ggml file; overrides
    /// `name` for locating it. (Ours.)
    pub path: Option<PathBuf>,
    /// `auto` (CTranslate2 when a `ct2/<name>` directory exists, else the
    /// ggml file), `ctranslate2` or `whisper.cpp`. (Ours.)
    pub engine: String,
    /// `cpu` or `cuda` (cuda needs a build with the `cuda` feature).
    pub device: String,
    /// faster-whisper compute type, mapped to whisper.cpp notions (see README).
    pub compute_type: String,
    /// Decode workers (one WhisperState each, ~125 MB per tiny.en state).
    pub pool_size: usize,
    /// Threads per worker; 0 = cores / pool_size, so workers never oversubscribe. (Ours.)
    pub threads: usize,
    /// true: sessions that ask for no language use `language`.
    pub language_fix: bool,
    /// Default language code; null = auto-detect (multilingual models).
    pub language: Option<String>,
    /// Languages to force (repeats weight the choice); null = auto-detect.
    pub languages: Option<Vec<String>>,
    /// `transcribe` or `translate`.
    pub task: String,
    /// Profile used when a session asks for none.
    pub default_decode_profile: String,
    /// More models (names or ggml paths) loaded at start beside the default,
    /// for sessions that pick one with the `model_id` attribute. (Ours.)
    pub preload: Vec<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            name: "tiny.en".into(),
            path: None,
            engine: "auto".into(),
            device: "cpu".into(),
            compute_type: "default".into(),
            pool_size: 1,
            threads: 0,
            language_fix: false,
            language: None,
            languages: None,
            task: "transcribe".into(),
            default_decode_profile: "realtime".into(),
            preload: Vec::new(),
        }
    }
}

/// A code (or BCP-47 tag such as `de-AT`) whose primary part Whisper knows.
fn known_language(code: &str) -> bool {
    let primary = code.trim().split(['-', '_']).next().unwrap_or_default();
    !primary.is_empty()
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && whisper_rs::get_lang_id(&primary.to_ascii_lowercase()).is_some()
}

/// One entry of `decode_profiles:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeProfileConfig {
    /// > 1 selects beam search; 1 is greedy.
    pub beam_size: usize,
    /// Candidates sampled per temperature-fallback step (greedy).
    pub best_of: usize,
    /// Beam search patience (whisper.cpp accepts it; 1.0 = standard).
    pub patience: f32,
    pub temperature: f32,
    pub length_penalty: f32,
    pub without_timestamps: bool,
    /// Maps to whisper.cpp's entropy threshold.
    pub compression_ratio_threshold: f32,
    pub no_speech_threshold: f32,
    /// -1.0 disables low-probability rejection.
    pub log_prob_threshold: f32,
    /// Encoder window in mel frames (50/s): 0 = the full 30 s window; a
    /// positive value fits the window to each clip, never below this value
    /// (2-4x faster on short utterances). (Ours.)
    pub audio_ctx: usize,
    /// CTranslate2: the encoder window in seconds, stretched to the clip
    /// plus 2 s when the clip is longer; 30 is Whisper's full window. On
    /// tiny.en, 20 s encodes 3x faster than 30 s (0.10 against 0.29 s on
    /// two cores) with dev-set WER within noise (7.37-7.63% against 7.46%);
    /// 15 s rose to 16%. (Ours.)
    pub encoder_window_sec: f32,
}

impl DecodeProfileConfig {
    /// Greedy, fast: the streaming default.
    pub fn realtime() -> Self {
        Self {
            beam_size: 1,
            best_of: 1,
            patience: 1.0,
            temperature: 0.0,
            length_penalty: 1.0,
            without_timestamps: true,
            compression_ratio_threshold: 2.4,
            no_speech_threshold: 0.6,
            log_prob_threshold: -1.0,
            audio_ctx: 768,
            encoder_window_sec: 20.0,
        }
    }

    /// Beam search 5: the batch default.
    pub fn accurate() -> Self {
        Self {
            beam_size: 5,
            best_of: 5,
            encoder_window_sec: 30.0,
            ..Self::realtime()
        }
    }
}

impl Default for DecodeProfileConfig {
    fn default() -> Self {
        Self::realtime()
    }
}

impl ModelFile {
    /// Checks values serde cannot (ranges, known names).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut c = Checker::new(path);
        let m = &self.model;
        c.check(!m.name.trim().is_empty(), "model.name", "must not be empty");
        c.check(
            crate::engine::EngineChoice::parse(&m.engine).is_some(),
            "model.engine",
            format!(
                "must be auto, ctranslate2 or whisper.cpp, got {:?}",
                m.engine
            ),
        );
        c.check(
            matches!(m.device.as_str(), "cpu" | "cuda" | "auto"),
            "model.device",
            format!("must be cpu, cuda or auto, got {:?}", m.device),
        );
        c.check(
            matches!(
                m.compute_type.as_str(),
                "default"
                    | "auto"
                    | "float16"
                    | "float32"
                    | "int8"
                    | "int8_float16"
                    | "int8_float32"
                    | "int16"
                    | "bfloat16"
            ),
            "model.compute_type",
            format!("unknown compute type {:?}", m.compute_type),
        );
        c.check(m.pool_size >= 1, "model.pool_size", "must be at least 1");
        c.check(m.pool_size <= 64, "model.pool_size", "must be at most 64");
        c.check(m.threads <= 256, "model.threads", "must be at most 256");
        c.check(
            matches!(m.task.as_str(), "transcribe" | "translate"),
            "model.task",
            format!("must be transcribe or translate, got {:?}", m.task),
        );
        c.check(
            self.decode_profiles.contains_key(&m.default_decode_profile),
            "model.default_decode_profile",
            format!("no decode profile named {:?}", m.default_decode_profile),
        );
        if let Some(langs) = &m.languages {
            c.check(
                !langs.is_empty(),
                "model.languages",
                "must list at least one code, or be null",
            );
            for l in langs {
                c.check(
                    known_language(l),
                    "model.languages",
                    format!("{l:?} is not a language code Whisper knows"),
                );
            }
        }
        if let Some(l) = m
            .language
            .as_deref()
            .filter(|l| !l.is_empty() && *l != "auto")
        {
            c.check(
                known_language(l),
                "model.language",
                format!("{l:?} is not a language code Whisper knows"),
            );
        }
        for p in &m.preload {
            c.check(
                !p.trim().is_empty(),
                "model.preload",
                "entries must be model names or paths",
            );
        }
        for (name, p) in &self.decode_profiles {
            let key = |k: &str| format!("decode_profiles.{name}.{k}");
            c.check(
                p.beam_size >= 1 && p.beam_size <= 16,
                &key("beam_size"),
                "must be 1..=16",
            );
            c.check(
                p.best_of >= 1 && p.best_of <= 16,
                &key("best_of"),
                "must be 1..=16",
            );
            c.check(p.patience > 0.0, &key("patience"), "must be positive");
            c.check(
                (0.0..=1.0).contains(&p.temperature),
                &key("temperature"),
                "must be in 0..=1",
            );
            c.check(
                (0.0..=1.0).contains(&p.no_speech_threshold),
                &key("no_speech_threshold"),
                "must be in 0..=1",
            );
            c.check(
                p.audio_ctx == 0 || (64..=1500).contains(&p.audio_ctx),
                &key("audio_ctx"),
                "must be 0 (full window) or 64..=1500",
            );
            c.check(
                (10.0..=30.0).contains(&p.encoder_window_sec),
                &key("encoder_window_sec"),
                "must be in 10..=30 seconds (30 = the full window)",
            );
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    #[test]
    fn committed_file_parses_and_validates() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.yaml"));
        let f: ModelFile = crate::config::load_yaml(path).unwrap();
        f.validate(path).unwrap();
        assert_eq!(f.model.name, "tiny.en");
        assert_eq!(f.decode_profiles["accurate"].beam_size, 5);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_yaml::<ModelFile>("model:\n  nmae: x\n", Path::new("m.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("m.yaml") && msg.contains("model") && msg.contains("nmae"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse_yaml::<ModelFile>("model:\n  pool_size: many\n", Path::new("m.yaml"))
            .unwrap_err();
        assert!(err.to_string().contains("model.pool_size"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let f: ModelFile = parse_yaml(
            "decode_profiles:\n  realtime:\n    beam_size: 0\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        let err = f.validate(Path::new("m.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("decode_profiles.realtime.beam_size"),
            "{err}"
        );
    }
}
