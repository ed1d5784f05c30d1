//! Server settings: the two YAML files, then the command-line flags on top,
//! then validation of the result (errors name the file and key). Also the
//! derived values components need (session limits, defaults, profiles).

use std::path::{Path, PathBuf};

use crate::cli::ServeArgs;
use crate::config::{load_yaml, ConfigError, DecodeProfileConfig, ModelFile, ServerFile};
use crate::engine::{EngineChoice, ModelSource, Task};
use crate::server::session::{ChunkLimits, Defaults, Profile, SessionLimits};
use crate::UsageError;

/// Everything `stt serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerFile,
    pub model: ModelFile,
    /// The ggml file of the default model.
    pub model_path: PathBuf,
    /// The admin API, from the `STT_ADMIN_*` environment.
    pub admin: AdminSettings,
    /// Bind the data plane to any free port even though `ws_port: 0`
    /// means off (tests, embedding: the address is
    /// [`crate::server::BoundServer::web_addr`]). Not a YAML key.
    pub web_any_port: bool,
}

/// The admin API's switches (environment variables, as the original's).
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// `STT_ADMIN_ENABLED=true`.
    pub enabled: bool,
    /// `STT_ADMIN_TOKEN`: the bearer token every admin request must carry.
    pub token: Option<String>,
    /// `STT_ADMIN_ALLOW_MODEL_PATH=true`: load requests may name a file.
    pub allow_model_path: bool,
    /// `STT_ADMIN_MODEL_PATH_ALLOWLIST`: comma-separated prefixes a
    /// `model_path` must fall under once canonicalised (empty = any).
    pub allowlist: Vec<String>,
    /// `STT_OBSERVABILITY_TOKEN`: the bearer token metrics, system and
    /// detailed health require (`None`: they are open).
    pub observability_token: Option<String>,
    /// `STT_PUBLIC_HEALTH=minimal`: `/health` without the observability
    /// token answers a bare status instead of 401.
    pub public_health_minimal: bool,
}

impl AdminSettings {
    /// Reads the `STT_ADMIN_*` variables.
    pub fn from_env() -> Result<Self, UsageError> {
        use crate::env::{
            ENV_ADMIN_ALLOW_MODEL_PATH, ENV_ADMIN_ENABLED, ENV_ADMIN_MODEL_PATH_ALLOWLIST,
            ENV_ADMIN_TOKEN, ENV_OBSERVABILITY_TOKEN, ENV_PUBLIC_HEALTH,
        };
        let var = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string());
        let flag = |k: &str| {
            var(k).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        };
        let me = Self {
            enabled: flag(ENV_ADMIN_ENABLED),
            token: var(ENV_ADMIN_TOKEN).filter(|t| !t.is_empty()),
            allow_model_path: flag(ENV_ADMIN_ALLOW_MODEL_PATH),
            allowlist: var(ENV_ADMIN_MODEL_PATH_ALLOWLIST)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            observability_token: var(ENV_OBSERVABILITY_TOKEN).filter(|t| !t.is_empty()),
            public_health_minimal: var(ENV_PUBLIC_HEALTH)
                .is_some_and(|v| v.eq_ignore_ascii_case("minimal")),
        };
        if me.enabled && me.token.is_none() {
            return Err(UsageError(format!(
                "{ENV_ADMIN_ENABLED}=true needs {ENV_ADMIN_TOKEN} set to a secret: admin requests must carry `Authorization: Bearer <token>`"
            )));
        }
        Ok(me)
    }
}

/// Reads a YAML file; the default path may be absent (running outside the
/// checkout means built-in defaults), an explicit one must exist.
fn load_or_default<T>(path: &Path, default_path: &str) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default,
{
    if path == Path::new(default_path) && !path.exists() {
        return Ok(T::default());
    }
    load_yaml(path)
}

impl Settings {
    /// YAML files, then flags, then validation.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut server: ServerFile = load_or_default(&args.config, "config/server.yaml")?;
        let mut model: ModelFile = load_or_default(&args.model_config, "config/model.yaml")?;
        apply_flags(args, &mut server, &mut model)?;
        server.validate(&args.config)?;
        model.validate(&args.model_config)?;

        if model.model.device == "cuda" && !cfg!(feature = "cuda") {
            return Err(UsageError(
                "--device cuda needs a build with `--features cuda`; this binary is CPU-only"
                    .into(),
            )
            .into());
        }
        let choice = EngineChoice::parse(&model.model.engine).unwrap_or_default();
        let model_path = match &model.model.path {
            Some(p) => p.clone(),
            None => ModelSource::resolve(&model.model.name, choice).path,
        };
        Ok(Self {
            server,
            model,
            model_path,
            admin: AdminSettings::from_env()?,
            web_any_port: false,
        })
    }

    /// Settings with built-in defaults for `model_path` (tests, embedding).
    pub fn with_model(model_path: PathBuf) -> Self {
        Self {
            server: ServerFile::default(),
            model: ModelFile::default(),
            model_path,
            admin: AdminSettings::default(),
            web_any_port: false,
        }
    }

    /// Installs logging as configured: stderr, plus `logging.file` when set.
    pub fn init_logging(&self) -> Result<(), UsageError> {
        let l = &self.server.logging;
        match &l.file {
            Some(file) => {
                crate::telemetry::init_with_file(&l.level, l.faster_whisper_level.as_deref(), file)
            }
            None => {
                crate::telemetry::init(&l.level, l.faster_whisper_level.as_deref());
                Ok(())
            }
        }
    }

    /// `model.engine` (validated at load).
    pub fn engine_choice(&self) -> EngineChoice {
        EngineChoice::parse(&self.model.model.engine).unwrap_or_default()
    }

    /// `compute_type` → whisper.cpp: only flash attention is a run-time
    /// choice; precision is the model file's (convert with `stt models import`).
    /// The certificate files, when TLS is configured.
    pub fn tls_files(&self) -> Option<crate::server::tls::TlsFiles> {
        let t = &self.server.tls;
        Some(crate::server::tls::TlsFiles {
            cert: t.cert_file.clone()?,
            key: t.key_file.clone()?,
            client_ca: t.client_ca_file.clone(),
        })
    }

    pub fn flash_attn(&self) -> bool {
        self.model.model.device == "cuda"
    }

    /// A decode profile by name, or the built-in one when the file lacks it.
    pub fn profile(&self, name: &str) -> DecodeProfileConfig {
        self.model
            .decode_profiles
            .get(name)
            .cloned()
            .unwrap_or_else(|| match name {
                "accurate" => DecodeProfileConfig::accurate(),
                _ => DecodeProfileConfig::realtime(),
            })
    }

    /// Per-session limits from `server.yaml`.
    pub fn session_limits(&self) -> SessionLimits {
        let s = &self.server.server;
        let samples = |sec: f64| (sec.max(0.0) * 16_000.0).round() as u64;
        let by_sec = s.max_buffer_sec.map(samples);
        // max_buffer_bytes counts the f32 samples the server holds.
        let by_bytes = s.max_buffer_bytes.map(|b| b / 4);
        let max_buffer_samples = match (by_sec, by_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let max_buffer_samples = max_buffer_samples.map(|m| m.max(16_000));
        SessionLimits {
            chunk: ChunkLimits {
                default_rate: s.sample_rate,
                max_chunk_ms: s.max_chunk_ms,
            },
            session_timeout: crate::config::seconds(s.session_timeout_sec),
            max_buffer_samples,
            // Below half the cap (validation says so for max_buffer_sec;
            // max_buffer_bytes gets the same here), so a cut always frees
            // room and a long utterance cannot stay over the cap.
            overlap_samples: samples(s.buffer_overlap_sec)
                .min(max_buffer_samples.map_or(u64::MAX, |m| m / 2 - 1)),
            partial_interval_samples: samples(s.partial_decode_interval_sec).max(1),
            partial_window_samples: samples(s.partial_decode_window_sec).max(16_000),
            max_pending_per_stream: s.max_pending_decodes_per_stream.max(1),
            speech_rms_threshold: self.server.safety.speech_rms_threshold as f32,
            max_audio_seconds: (s.max_audio_seconds_per_session > 0.0)
                .then_some(s.max_audio_seconds_per_session),
        }
    }

    /// What CreateSession fills in when a client leaves a field unset
    /// (`multilingual` is set per session from the model it picks).
    pub fn session_defaults(&self) -> Defaults {
        let m = &self.model.model;
        let language = m
            .language
            .as_deref()
            .filter(|l| !l.is_empty() && *l != "auto")
            .and_then(crate::engine::normalize_language)
            .map(str::to_string);
        Defaults {
            vad_silence: self.server.vad.silence,
            vad_threshold: self.server.vad.threshold,
            language,
            language_fix: m.language_fix,
            task: Task::parse(&m.task).unwrap_or(Task::Transcribe),
            profile: Profile::parse(&m.default_decode_profile).unwrap_or(Profile::Realtime),
            require_api_key: self.server.server.require_api_key,
            multilingual: false,
            languages: language_weights(m.languages.as_deref()),
            model_id: String::new(),
            multilingual_models: Vec::new(),
        }
    }
}

/// `model.languages` as (code, times listed), in first-listed order; codes
/// were checked when the file was loaded. `None` when unset or empty.
fn language_weights(langs: Option<&[String]>) -> Option<std::sync::Arc<[(String, u32)]>> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for l in langs.unwrap_or_default() {
        let Some(code) = crate::engine::normalize_language(l) else {
            continue;
        };
        match out.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => out.push((code.to_string(), 1)),
        }
    }
    (!out.is_empty()).then(|| out.into())
}

fn apply_flags(a: &ServeArgs, f: &mut ServerFile, m: &mut ModelFile) -> anyhow::Result<()> {
    let s = &mut f.server;
    if let Some(v) = &a.host {
        s.host = v.clone();
    }
    if let Some(v) = a.port {
        s.port = v;
    }
    if let Some(v) = a.max_sessions {
        s.max_sessions = v;
    }
    if let Some(v) = a.metrics_port {
        s.metrics_port = v;
    }
    if let Some(v) = a.ws_port {
        s.ws_port = v;
    }
    if let Some(v) = &a.ws_host {
        s.ws_host = Some(v.clone());
    }
    if a.log_metrics {
        s.log_metrics = true;
    }
    if let Some(v) = a.decode_timeout {
        s.decode_timeout_sec = v;
    }
    if a.require_api_key {
        s.require_api_key = true;
    }
    if let Some(v) = &a.tls_cert_file {
        f.tls.cert_file = Some(v.clone());
    }
    if let Some(v) = &a.tls_key_file {
        f.tls.key_file = Some(v.clone());
    }
    if a.tls_required {
        f.tls.required = true;
    }
    if let Some(v) = &a.tls_client_ca_file {
        f.tls.client_ca_file = Some(v.clone());
    }
    if let Some(v) = &a.log_level {
        f.logging.level = v.clone();
    }
    if let Some(v) = &a.log_file {
        f.logging.file = Some(v.clone());
    }
    if let Some(v) = &a.faster_whisper_log_level {
        f.logging.faster_whisper_level = Some(v.clone());
    }
    if let Some(v) = a.vad_silence {
        f.vad.silence = v;
    }
    if let Some(v) = a.vad_threshold {
        f.vad.threshold = v;
    }
    if let Some(v) = a.speech_threshold {
        f.safety.speech_rms_threshold = v;
    }
    let mm = &mut m.model;
    if let Some(v) = &a.model {
        // A path to a file, or a name in the models directory.
        if v.ends_with(".bin") || v.contains('/') {
            mm.path = Some(PathBuf::from(v));
        } else {
            mm.name = v.clone();
            mm.path = None;
        }
    }
    if let Some(v) = &a.device {
        mm.device = v.clone();
    }
    if let Some(v) = &a.compute_type {
        mm.compute_type = v.clone();
    }
    if let Some(v) = &a.language {
        // The flag sets the language of sessions that ask for none.
        mm.language = Some(v.clone());
        mm.language_fix = true;
    }
    if let Some(v) = a.model_pool_size {
        mm.pool_size = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.yaml");
        std::fs::write(&server, "server:\n  port: 6000\n  max_sessions: 2\n").unwrap();
        let args = ServeArgs {
            config: server,
            model_config: "config/model.yaml".into(),
            port: Some(7000),
            vad_silence: Some(0.8),
            model: Some("/tmp/x.bin".into()),
            ..Default::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.server.server.port, 7000);
        assert_eq!(s.server.server.max_sessions, 2);
        assert_eq!(s.server.vad.silence, 0.8);
        assert_eq!(s.model_path, PathBuf::from("/tmp/x.bin"));
    }

    #[test]
    fn bad_flag_values_are_config_errors() {
        let args = ServeArgs {
            config: "config/server.yaml".into(),
            model_config: "config/model.yaml".into(),
            vad_threshold: Some(1.5),
            ..Default::default()
        };
        let err = Settings::load(&args).unwrap_err();
        assert!(err.to_string().contains("vad.threshold"), "{err}");
    }

    #[test]
    fn buffer_caps_take_the_smaller() {
        let mut s = Settings::with_model("m.bin".into());
        s.server.server.max_buffer_sec = Some(20.0);
        s.server.server.max_buffer_bytes = Some(4 * 16_000 * 5);
        assert_eq!(s.session_limits().max_buffer_samples, Some(80_000));
        s.server.server.max_buffer_bytes = None;
        assert_eq!(s.session_limits().max_buffer_samples, Some(320_000));
    }
}
