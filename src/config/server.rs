//! `config/server.yaml`: networking, limits, VAD, safety, logging, metrics,
//! storage and health — the original's keys, plus a few additive ones marked
//! "(Ours.)".

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub server: ServerSection,
    pub vad: VadSection,
    pub safety: SafetySection,
    pub logging: LoggingSection,
    pub metrics: MetricsSection,
    pub storage: StorageSection,
    pub health: HealthSection,
    pub auth: AuthSection,
    pub tls: TlsSection,
}

/// `tls:` — one certificate for every listener (the original's later keys,
/// plus `client_ca_file` and `reload_interval_sec`, ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Refuse to start without a certificate.
    pub required: bool,
    /// PEM CA certificates clients must present a certificate from (mutual
    /// TLS). (Ours.)
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for a new certificate; SIGHUP
    /// reloads at once. (Ours.)
    pub reload_interval_sec: f64,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            required: false,
            client_ca_file: None,
            reload_interval_sec: 30.0,
        }
    }
}

/// `auth:` — who may open a session. (Ours, after the original's later
/// `create_session_auth_profile`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// YAML list of API keys (id, SHA-256 of the secret, limits), managed
    /// with `stt keys`; also `STT_API_KEYS=id=secret,…`.
    pub keys_file: Option<PathBuf>,
    pub create_session_auth_profile: AuthProfile,
    /// The HMAC secret of `signed_token` (better:
    /// `STT_CREATE_SESSION_AUTH_SECRET`, which wins).
    pub create_session_auth_secret: Option<String>,
    /// How far a signed token's timestamp may be from the server's clock,
    /// either way.
    pub create_session_auth_ttl_sec: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            keys_file: None,
            create_session_auth_profile: AuthProfile::Auto,
            create_session_auth_secret: None,
            create_session_auth_ttl_sec: 300,
        }
    }
}

/// What CreateSession must present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthProfile {
    /// `api_key` when a key list is configured (or `require_api_key`),
    /// else `none`.
    #[default]
    Auto,
    None,
    /// A listed API key (any non-empty key when no list is configured).
    ApiKey,
    /// An HMAC-signed session token (see `stt::auth::signed`).
    SignedToken,
}

/// `server:`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Bind address for both listeners. (Ours.)
    pub host: String,
    pub port: u16,
    pub max_sessions: usize,
    pub metrics_port: u16,
    /// The browser/REST data plane: page, WebSocket, OpenAI API; 0 = off.
    /// (Ours.)
    pub ws_port: u16,
    /// Bind address of the data plane; null = `host` when sessions need
    /// authentication, else loopback. A public address without
    /// authentication refuses to start unless `STT_ALLOW_INSECURE_WS=1`.
    /// (Ours.)
    pub ws_host: Option<String>,
    /// Largest file `POST /v1/audio/…` accepts, in bytes. (Ours.)
    pub max_upload_bytes: usize,
    /// Seconds to wait for an outstanding decode; <= 0 waits forever.
    pub decode_timeout_sec: f64,
    pub log_metrics: bool,
    pub session_timeout_sec: f64,
    pub max_buffer_sec: Option<f64>,
    pub max_buffer_bytes: Option<u64>,
    pub max_chunk_ms: u64,
    pub partial_decode_interval_sec: f64,
    pub partial_decode_window_sec: f64,
    pub max_pending_decodes_per_stream: usize,
    pub max_pending_decodes_global: usize,
    pub max_total_buffer_bytes: u64,
    pub decode_queue_timeout_sec: f64,
    pub buffer_overlap_sec: f64,
    pub grpc_max_receive_message_bytes: usize,
    pub grpc_max_send_message_bytes: usize,
    /// Rate assumed for chunks that say `sample_rate: 0`.
    pub sample_rate: u32,
    /// Every session must carry an `api_key` attribute. (Ours, = `--require-api-key`.)
    pub require_api_key: bool,
    /// Sessions one API key may hold open at once, unless its entry in the
    /// keys file says otherwise; 0 = no cap.
    pub max_sessions_per_api_key: usize,
    /// Sessions one client IP may hold open at once; 0 = no cap.
    pub max_sessions_per_ip: usize,
    /// New sessions per second per API key (per client IP without one);
    /// 0 = no limit.
    pub create_session_rps: f64,
    /// How many new sessions may come at once before the rate applies.
    pub create_session_burst: u32,
    /// Seconds of audio one session may send; 0 = no cap (ERR1015).
    pub max_audio_seconds_per_session: f64,
    /// PCM bytes a second one client (API key, else IP) may stream over
    /// all its sessions; 0 = no limit (ERR1016).
    pub max_audio_bytes_per_sec: u64,
    /// Bytes that may arrive at once before that rate applies.
    pub max_audio_bytes_per_sec_burst: u64,
    /// HTTP requests a second per client IP on the operations and data
    /// planes (WebSocket upgrades included); 0 = no limit (ERR4010).
    pub http_rate_limit_rps: f64,
    pub http_rate_limit_burst: u32,
    /// Client addresses (CIDRs or IPs) the HTTP planes serve; empty = all
    /// (ERR4008). `STT_HTTP_ALLOWLIST` (comma-separated) wins.
    pub http_allowlist: Vec<String>,
    /// The same for gRPC (ours); `STT_GRPC_ALLOWLIST` wins.
    pub grpc_allowlist: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client;
    /// `STT_HTTP_TRUSTED_PROXIES` wins.
    pub http_trusted_proxies: Vec<String>,
    /// Seconds open streams get to flush their finals on shutdown. (Ours.)
    pub shutdown_grace_sec: f64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 50051,
            max_sessions: 0,
            metrics_port: 8000,
            ws_port: 8001,
            ws_host: None,
            max_upload_bytes: 25 * 1024 * 1024,
            decode_timeout_sec: 30.0,
            log_metrics: false,
            session_timeout_sec: 60.0,
            max_buffer_sec: Some(20.0),
            max_buffer_bytes: None,
            max_chunk_ms: 2000,
            partial_decode_interval_sec: 1.5,
            partial_decode_window_sec: 10.0,
            max_pending_decodes_per_stream: 8,
            max_pending_decodes_global: 64,
            max_total_buffer_bytes: 64 * 1024 * 1024,
            decode_queue_timeout_sec: 1.0,
            buffer_overlap_sec: 0.5,
            grpc_max_receive_message_bytes: 8 * 1024 * 1024,
            grpc_max_send_message_bytes: 4 * 1024 * 1024,
            sample_rate: 16_000,
            require_api_key: false,
            max_sessions_per_api_key: 0,
            max_sessions_per_ip: 0,
            create_session_rps: 0.0,
            create_session_burst: 10,
            // The original's shipped values: an hour per session, 100× real
            // time per client.
            max_audio_seconds_per_session: 3600.0,
            max_audio_bytes_per_sec: 3_200_000,
            max_audio_bytes_per_sec_burst: 6_400_000,
            // Generous to dashboards and probes, a wall to a flood.
            http_rate_limit_rps: 20.0,
            http_rate_limit_burst: 40,
            http_allowlist: Vec::new(),
            grpc_allowlist: Vec::new(),
            http_trusted_proxies: Vec::new(),
            shutdown_grace_sec: 10.0,
        }
    }
}

/// `vad:` — Silero VAD gate and its model pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadSection {
    /// Seconds of trailing silence that end an utterance.
    pub silence: f64,
    /// Speech probability threshold (0–1).
    pub threshold: f64,
    /// VAD sessions kept in the pool; 0 = `server.max_sessions`.
    pub model_pool_size: usize,
    /// VAD sessions created at start-up.
    pub model_prewarm: usize,
    /// Pool growth factor when demand exceeds it (capped at max_sessions).
    pub model_pool_growth_factor: f64,
    /// Silero ONNX file; default `<models dir>/silero_vad.onnx`. (Ours.)
    pub model_path: Option<PathBuf>,
    /// ONNX Runtime library; default `$ORT_DYLIB_PATH`, then the provisioned one. (Ours.)
    pub onnxruntime_path: Option<PathBuf>,
}

impl Default for VadSection {
    fn default() -> Self {
        Self {
            silence: 0.5,
            threshold: 0.5,
            model_pool_size: 4,
            model_prewarm: 1,
            model_pool_growth_factor: 1.5,
            model_path: None,
            onnxruntime_path: None,
        }
    }
}

/// `safety:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetySection {
    /// Minimum RMS of buffered audio before it is decoded (0 = off).
    pub speech_rms_threshold: f64,
}

/// `logging:`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub level: String,
    pub file: Option<PathBuf>,
    /// whisper.cpp log level (the original's faster-whisper logger); WARNING when unset.
    pub faster_whisper_level: Option<String>,
    /// Keep transcript text (off: transcripts are user data) — in
    /// `transcript_file` only, never in the main log.
    pub log_transcripts: bool,
    /// Where `log_transcripts` writes: JSON lines, a file a day.
    pub transcript_file: Option<PathBuf>,
    /// Days of transcript files kept; 0 = one file, never rotated.
    pub transcript_retention_days: u32,
}

impl Default for LoggingSection {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            file: None,
            faster_whisper_level: None,
            log_transcripts: false,
            transcript_file: None,
            transcript_retention_days: 7,
        }
    }
}

/// `metrics:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub expose_api_key_sessions: bool,
}

/// `storage:` — server-side audio capture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub persist_audio: bool,
    pub directory: PathBuf,
    pub queue_max_chunks: usize,
    pub max_bytes: Option<i64>,
    pub max_files: Option<i64>,
    pub max_age_days: Option<f64>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            persist_audio: false,
            directory: "data/audio".into(),
            queue_max_chunks: 256,
            max_bytes: None,
            max_files: None,
            max_age_days: None,
        }
    }
}

/// `health:`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub window_sec: f64,
    pub min_events: usize,
    pub max_timeout_ratio: f64,
    pub min_success_ratio: f64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            window_sec: 60.0,
            min_events: 5,
            max_timeout_ratio: 0.5,
            min_success_ratio: 0.5,
        }
    }
}

/// The longest gap a request-rate limit may stand for: one request a day.
/// Validation refuses slower rates and the limiters clamp to it.
pub const SLOWEST_RATE_PERIOD: Duration = Duration::from_secs(86_400);

/// The slowest request rate a limit may be set to (one a day).
const MIN_RPS: f64 = 1.0 / SLOWEST_RATE_PERIOD.as_secs() as f64;

const LEVELS: [&str; 8] = [
    "TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "OFF",
];

/// Whether `level` is a log level name we accept (Python's names included).
pub fn is_log_level(level: &str) -> bool {
    LEVELS.contains(&level.to_ascii_uppercase().as_str())
}

/// Real-time conversation streams one core holds with p95 end of
/// utterance → final within 1.5 s: `stt bench --conversations` measured 10–12
/// on two cores with tiny.en (README, Capacity). Larger models hold fewer.
pub const STREAMS_PER_CORE: usize = 5;

/// `server.max_sessions: 0`: the measured capacity of this machine's cores,
/// so a session beyond it is refused (ERR1008) before it slows the others.
pub fn auto_max_sessions() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores * STREAMS_PER_CORE
}

impl ServerFile {
    /// Checks values serde cannot (ranges, consistency).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut c = Checker::new(path);
        let s = &self.server;
        c.check(
            s.session_timeout_sec > 0.0,
            "server.session_timeout_sec",
            "must be positive",
        );
        c.check(
            s.max_chunk_ms >= 10,
            "server.max_chunk_ms",
            "must be at least 10",
        );
        c.check(
            s.max_buffer_sec.is_none_or(|v| v > 0.0),
            "server.max_buffer_sec",
            "must be positive or null",
        );
        c.check(
            s.max_buffer_bytes.is_none_or(|v| v > 0),
            "server.max_buffer_bytes",
            "must be positive or null",
        );
        c.check(
            s.partial_decode_interval_sec > 0.0,
            "server.partial_decode_interval_sec",
            "must be positive",
        );
        c.check(
            s.partial_decode_window_sec > 0.0,
            "server.partial_decode_window_sec",
            "must be positive",
        );
        c.check(
            s.max_pending_decodes_per_stream >= 1,
            "server.max_pending_decodes_per_stream",
            "must be at least 1",
        );
        c.check(
            s.max_pending_decodes_global >= 1,
            "server.max_pending_decodes_global",
            "must be at least 1",
        );
        c.check(
            s.decode_queue_timeout_sec >= 0.0,
            "server.decode_queue_timeout_sec",
            "must not be negative",
        );
        c.check(
            s.buffer_overlap_sec >= 0.0,
            "server.buffer_overlap_sec",
            "must not be negative",
        );
        // Audio kept across a cut must leave room for new audio, or a long
        // utterance never shrinks below the cap.
        c.check(
            s.max_buffer_sec
                .is_none_or(|max| s.buffer_overlap_sec < max / 2.0),
            "server.buffer_overlap_sec",
            "must be less than half of server.max_buffer_sec",
        );
        c.check(
            s.grpc_max_receive_message_bytes >= 1024,
            "server.grpc_max_receive_message_bytes",
            "must be at least 1024",
        );
        c.check(
            s.grpc_max_send_message_bytes >= 1024,
            "server.grpc_max_send_message_bytes",
            "must be at least 1024",
        );
        c.check(
            crate::audio::check_rate(s.sample_rate as i64).is_ok(),
            "server.sample_rate",
            "must be 4000..=384000 Hz",
        );
        c.check(
            s.shutdown_grace_sec >= 0.0,
            "server.shutdown_grace_sec",
            "must not be negative",
        );
        let v = &self.vad;
        c.check(
            v.silence > 0.0 && v.silence <= 30.0,
            "vad.silence",
            "must be in (0, 30] seconds",
        );
        c.check(
            (0.0..=1.0).contains(&v.threshold),
            "vad.threshold",
            "must be in 0..=1",
        );
        c.check(
            v.model_pool_growth_factor >= 1.0,
            "vad.model_pool_growth_factor",
            "must be at least 1.0",
        );
        c.check(
            self.safety.speech_rms_threshold >= 0.0,
            "safety.speech_rms_threshold",
            "must not be negative",
        );
        c.check(
            is_log_level(&self.logging.level),
            "logging.level",
            format!(
                "unknown level {:?} (TRACE, DEBUG, INFO, WARNING, ERROR)",
                self.logging.level
            ),
        );
        if let Some(l) = &self.logging.faster_whisper_level {
            c.check(
                is_log_level(l),
                "logging.faster_whisper_level",
                format!("unknown level {l:?}"),
            );
        }
        c.check(
            self.storage.queue_max_chunks >= 1,
            "storage.queue_max_chunks",
            "must be at least 1",
        );
        c.check(
            s.max_audio_seconds_per_session >= 0.0,
            "server.max_audio_seconds_per_session",
            "must not be negative (0 = no cap)",
        );
        for (rps, key) in [
            (s.http_rate_limit_rps, "server.http_rate_limit_rps"),
            (s.create_session_rps, "server.create_session_rps"),
        ] {
            c.check(
                rps == 0.0 || (MIN_RPS..=1e9).contains(&rps),
                key,
                "must be 0 (no limit) or between 0.0000116 (one a day) and 1e9",
            );
        }
        c.check(
            s.max_audio_bytes_per_sec <= u64::from(u32::MAX)
                && s.max_audio_bytes_per_sec_burst <= u64::from(u32::MAX),
            "server.max_audio_bytes_per_sec",
            "must be at most 4294967295 (and so must the burst)",
        );
        let t = &self.tls;
        c.check(
            t.cert_file.is_some() == t.key_file.is_some(),
            "tls.cert_file",
            "tls.cert_file and tls.key_file go together: set both (or neither)",
        );
        c.check(
            !t.required || t.cert_file.is_some(),
            "tls.required",
            "TLS is required but tls.cert_file/tls.key_file are not set",
        );
        c.check(
            t.client_ca_file.is_none() || t.cert_file.is_some(),
            "tls.client_ca_file",
            "mutual TLS needs the server's own tls.cert_file/tls.key_file too",
        );
        c.check(
            t.reload_interval_sec > 0.0,
            "tls.reload_interval_sec",
            "must be positive",
        );
        let h = &self.health;
        c.check(h.window_sec > 0.0, "health.window_sec", "must be positive");
        c.check(
            (0.0..=1.0).contains(&h.max_timeout_ratio),
            "health.max_timeout_ratio",
            "must be in 0..=1",
        );
        c.check(
            (0.0..=1.0).contains(&h.min_success_ratio),
            "health.min_success_ratio",
            "must be in 0..=1",
        );
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    #[test]
    fn committed_file_parses_and_validates() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/server.yaml"));
        let f: ServerFile = crate::config::load_yaml(path).unwrap();
        f.validate(path).unwrap();
        assert_eq!(f.server.port, 50051);
        assert_eq!(f.vad.silence, 0.5);
    }

    #[test]
    fn the_original_sample_parses() {
        let original = "server:\n  port: 50051\n  max_buffer_bytes: null\nstorage:\n  max_bytes: null\nlogging:\n  level: \"INFO\"\n  faster_whisper_level: null\n";
        let f: ServerFile = parse_yaml(original, Path::new("s.yaml")).unwrap();
        assert_eq!(f.server.max_sessions, 0, "auto");
    }

    #[test]
    fn unknown_key_and_negative_limit_are_named() {
        let e = parse_yaml::<ServerFile>("vad:\n  silense: 1\n", Path::new("s.yaml")).unwrap_err();
        assert!(e.to_string().contains("silense"), "{e}");
        let f: ServerFile =
            parse_yaml("server:\n  session_timeout_sec: -1\n", Path::new("s.yaml")).unwrap();
        let e = f.validate(Path::new("s.yaml")).unwrap_err();
        assert!(e.to_string().contains("server.session_timeout_sec"), "{e}");
    }

    /// Found by the fuzzer: a subnormal rate made a period of 10^300 s,
    /// and governor panicked building the limiter.
    #[test]
    fn request_rates_are_off_or_between_one_a_day_and_1e9() {
        for (key, rps, ok) in [
            ("http_rate_limit_rps", "0", true),
            ("http_rate_limit_rps", "0.0000116", true),
            ("http_rate_limit_rps", "1.8474987538159954e-308", false),
            ("create_session_rps", "-1", false),
            ("create_session_rps", ".inf", false),
            ("create_session_rps", "2e9", false),
            ("create_session_rps", "5", true),
        ] {
            let text = format!("server:\n  {key}: {rps}\n");
            let f: ServerFile = parse_yaml(&text, Path::new("s.yaml")).unwrap();
            match f.validate(Path::new("s.yaml")) {
                Ok(()) => assert!(ok, "{key}: {rps} was accepted"),
                Err(e) => {
                    assert!(!ok, "{key}: {rps} was refused: {e}");
                    assert!(e.to_string().contains(key), "{e}");
                }
            }
        }
    }
}
