//! Client YAML defaults (`config/client/file.yaml`, `config/client/mic.yaml`):
//! the original clients' keys, read raw. Every key is optional, because a
//! missing key means "the command's default" and a CLI flag beats both; the
//! merging happens in `client::session`, not here.
//!
//! One struct serves every client: the original shares keys between its file,
//! batch and mic configs, and each command reads only the keys it knows (batch
//! ignores `chunk_ms` and `realtime`, as the original does).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{load_yaml, Checker, ConfigError};

/// Largest `chunk_ms` a client config may ask for; beyond a minute a chunk is
/// no longer streaming and the server would refuse it anyway (ERR1007).
pub const MAX_CHUNK_MS: u64 = 60_000;

/// The whole client file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientFile {
    /// gRPC address, `host:port` or `http://host:port`.
    pub server: Option<String>,
    /// WAV streamed when none is named on the command line (relative paths
    /// are resolved against the working directory, as the original does).
    pub audio_path: Option<PathBuf>,
    /// Milliseconds of audio per chunk.
    pub chunk_ms: Option<u64>,
    /// Pace chunks at real time (`false` = as fast as possible).
    pub realtime: Option<bool>,
    pub vad_mode: Option<VadModeChoice>,
    /// Seconds of trailing silence that end an utterance (null = server default).
    pub vad_silence: Option<f64>,
    /// VAD speech probability threshold (null = server default; 0 is sent as 0).
    pub vad_threshold: Option<f64>,
    /// BCP-47 code (null = server default / auto-detect).
    pub language: Option<String>,
    pub task: Option<TaskChoice>,
    pub decode_profile: Option<ProfileChoice>,
    /// Session attributes; `metadata` is the original's older name.
    #[serde(alias = "metadata")]
    pub attributes: BTreeMap<String, Scalar>,
    pub require_token: Option<bool>,
    /// Session id (null = generated per run).
    pub session_id: Option<String>,
    /// Print the latency and decode-timing report.
    pub metrics: Option<bool>,
    /// API key, sent as session attribute `api_key`. (Ours.)
    pub api_key: Option<String>,
    /// Mic: input device name or index (null = system default).
    pub device: Option<Scalar>,
    /// Mic: capture rate in Hz (null = the device's default).
    pub sample_rate: Option<u32>,
}

impl ClientFile {
    /// Reads and checks a client YAML; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: Self = load_yaml(path)?;
        file.validate(path)?;
        Ok(file)
    }

    /// Parses YAML text (`origin` names it in errors) and checks it.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let file: Self = super::parse_yaml(text, origin)?;
        file.validate(origin)?;
        Ok(file)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut c = Checker::new(path);
        if let Some(ms) = self.chunk_ms {
            c.check(
                (1..=MAX_CHUNK_MS).contains(&ms),
                "chunk_ms",
                format!("must be between 1 and {MAX_CHUNK_MS}, got {ms}"),
            );
        }
        if let Some(s) = self.vad_silence {
            c.check(s.is_finite(), "vad_silence", "must be a number of seconds");
        }
        if let Some(t) = self.vad_threshold {
            c.check(t.is_finite(), "vad_threshold", "must be a probability");
        }
        if let Some(rate) = self.sample_rate {
            c.check(
                crate::audio::check_rate(rate.into()).is_ok(),
                "sample_rate",
                format!(
                    "{rate} Hz is outside {}..={} Hz",
                    crate::audio::MIN_RATE,
                    crate::audio::MAX_RATE
                ),
            );
        }
        for key in self.attributes.keys() {
            c.check(!key.is_empty(), "attributes", "keys must not be empty");
        }
        c.finish()
    }

    /// The attributes as plain strings.
    pub fn attribute_strings(&self) -> BTreeMap<String, String> {
        self.attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }
}

/// `--vad-mode` / `vad_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VadModeChoice {
    /// Many utterances per session, one final each.
    #[default]
    Continue,
    /// Finalize and end the stream after the first utterance.
    #[serde(alias = "auto_end", alias = "auto-end")]
    #[value(alias = "auto-end", alias = "auto_end")]
    Auto,
}

/// `--task` / `task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaskChoice {
    Transcribe,
    /// Translate to English (multilingual models).
    Translate,
}

/// `--decode-profile` / `decode_profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProfileChoice {
    /// Greedy, fast: for partials and live use.
    Realtime,
    /// Beam search: slower, more accurate.
    Accurate,
}

/// A YAML scalar kept as text, so `priority: 1` or `device: 2` read as the
/// user wrote them instead of failing on "expected a string".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientFile, ConfigError> {
        ClientFile::parse(text, Path::new("client.yaml"))
    }

    #[test]
    fn reads_the_original_keys() {
        let f = parse(
            "server: localhost:50051\naudio_path: a.wav\nchunk_ms: 200\nrealtime: false\n\
             vad_mode: auto\nvad_silence: 0.8\nvad_threshold: 0\nlanguage: ja\n\
             task: translate\ndecode_profile: accurate\nmetadata: {speaker: 7, tag: x}\n\
             require_token: true\nsession_id: s1\nmetrics: true\n",
        )
        .expect("valid file");
        assert_eq!(f.server.as_deref(), Some("localhost:50051"));
        assert_eq!(f.chunk_ms, Some(200));
        assert_eq!(f.realtime, Some(false));
        assert_eq!(f.vad_mode, Some(VadModeChoice::Auto));
        assert_eq!(f.vad_threshold, Some(0.0));
        assert_eq!(f.task, Some(TaskChoice::Translate));
        assert_eq!(f.decode_profile, Some(ProfileChoice::Accurate));
        let attrs = f.attribute_strings();
        assert_eq!(attrs["speaker"], "7");
        assert_eq!(attrs["tag"], "x");
        assert_eq!(f.require_token, Some(true));
    }

    #[test]
    fn mic_keys_accept_index_or_name() {
        let f = parse("device: 2\nsample_rate: 48000\n").expect("valid");
        assert_eq!(f.device, Some(Scalar("2".into())));
        let f = parse("device: \"MacBook Pro Microphone\"\n").expect("valid");
        assert_eq!(f.device, Some(Scalar("MacBook Pro Microphone".into())));
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let f = parse("# nothing\n").expect("valid");
        assert!(f.server.is_none() && f.attributes.is_empty());
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse("chunk_ms: 100\nchunk_size: 3\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("client.yaml: "), "{msg}");
        assert!(msg.contains("unknown field `chunk_size`"), "{msg}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let msg = parse("vad_mode: sometimes\n").expect_err("bad").to_string();
        assert!(msg.contains("vad_mode"), "{msg}");
        let msg = parse("chunk_ms: 0\n").expect_err("bad").to_string();
        assert_eq!(
            msg,
            "client.yaml: chunk_ms: must be between 1 and 60000, got 0"
        );
        let msg = parse("sample_rate: 10\n").expect_err("bad").to_string();
        assert!(msg.contains("sample_rate"), "{msg}");
    }

    #[test]
    fn shipped_samples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["config/client/file.yaml", "config/client/mic.yaml"] {
            ClientFile::load(&root.join(name)).expect(name);
        }
    }
}
