//! The command line: one `Cli`, one `Command` per subcommand, and the shared
//! session flags every client flattens in. Each field's doc is its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::client::{ProfileChoice, TaskChoice, VadModeChoice};

mod bench;
pub use bench::{BenchArgs, SessionLogFormat};

/// Streaming speech-to-text: a gRPC server on whisper.cpp with Silero VAD
/// endpointing, its clients, a load tester and a dashboard.
#[derive(Debug, Parser)]
#[command(name = "stt", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC streaming server and its HTTP control plane.
    Serve(ServeArgs),
    /// Stream an audio file (WAV, FLAC, MP3, Ogg, M4A, …) to a server at real-time pace.
    File(FileArgs),
    /// Stream the microphone (any input device) to a server.
    Mic(MicArgs),
    /// Send a whole audio file as one chunk (accurate profile).
    Batch(BatchArgs),
    /// Load-test a server: many concurrent sessions, per-session logs and a
    /// latency summary; exits non-zero when any session fails.
    Bench(Box<BenchArgs>),
    /// Terminal dashboard of a server's metrics.
    Dashboard(DashboardArgs),
    /// Provision, import and check Whisper models.
    Models(ModelsArgs),
    /// Transcribe audio files offline (no server): VAD segments, then decode.
    Transcribe(TranscribeArgs),
    /// Manage the API keys file a server checks (auth.keys_file).
    Keys(KeysArgs),
}

/// `stt keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// The keys file (the server's auth.keys_file).
    #[arg(long, env = "STT_KEYS_FILE", value_name = "YAML")]
    pub file: PathBuf,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Add a key; its secret is printed once, only its hash is stored.
    Add {
        /// Shown in metrics and logs in place of the key.
        #[arg(long)]
        id: String,
        /// Who the key is for.
        #[arg(long)]
        name: Option<String>,
        /// Sessions the key may hold open at once.
        #[arg(long, value_name = "N")]
        max_sessions: Option<usize>,
        /// Model ids the key may use (comma-separated; default: any).
        #[arg(long, value_delimiter = ',', value_name = "ID,…")]
        models: Vec<String>,
        /// Seconds of audio a minute the key may stream, over all its
        /// sessions.
        #[arg(long, value_name = "SEC")]
        audio_seconds_per_minute: Option<f64>,
    },
    /// List the keys: id, state, limits, name (never secrets).
    List,
    /// Refuse a key from now on (running servers notice within a second).
    Revoke {
        #[arg(long)]
        id: String,
    },
}

/// The session flags every client shares (file, batch, mic, bench). Each one
/// overrides the same key of the `-c` YAML; unset flags fall back to it, then
/// to the command's default.
#[derive(Debug, Clone, Default, Args)]
pub struct SessionArgs {
    /// Client YAML with defaults (`config/client/file.yaml`); flags win.
    #[arg(short = 'c', long = "config", value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Server address, host:port, http://host:port or https://host:port
    /// [default: 127.0.0.1:50051].
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// continue: one final per utterance, many utterances; auto: end the
    /// stream after the first utterance [default: continue].
    #[arg(long, value_enum, value_name = "MODE")]
    pub vad_mode: Option<VadModeChoice>,
    /// Seconds of trailing silence that end an utterance [default: server's].
    #[arg(long, value_name = "SEC", allow_negative_numbers = true)]
    pub vad_silence: Option<f64>,
    /// VAD speech probability threshold, 0-1; 0 is sent as exactly 0
    /// [default: server's].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub vad_threshold: Option<f64>,
    /// Language code (en, ja, …) [default: server's, or auto-detect].
    #[arg(long, value_name = "CODE")]
    pub language: Option<String>,
    /// transcribe, or translate to English [default: server's].
    #[arg(long, value_enum)]
    pub task: Option<TaskChoice>,
    /// realtime (greedy) or accurate (beam search) [default: server's; batch: accurate].
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub decode_profile: Option<ProfileChoice>,
    /// Session attribute, repeatable; overrides the YAML's key of the same name.
    #[arg(long = "attr", visible_alias = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub attrs: Vec<(String, String)>,
    /// Ask the server for a per-session token that every chunk must carry.
    #[arg(long)]
    pub require_token: bool,
    /// Session id [default: generated, e.g. file-<pid>-<millis>].
    #[arg(long, value_name = "ID")]
    pub session_id: Option<String>,
    /// API key, sent as session attribute `api_key`.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Ask for word timings on finals and show them (session attribute
    /// `word_timestamps`).
    #[arg(long)]
    pub words: bool,
    /// Initial prompt: names, spellings or style the decoder should follow
    /// (session attribute `prompt`).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Sign CreateSession with this shared secret (servers with
    /// `create_session_auth_profile: signed_token`).
    #[arg(
        long,
        env = "STT_SIGNED_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub signed_token_secret: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How a client reaches a server over TLS.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Connect with TLS, trusting the public roots (implied by https://
    /// and by --tls-ca-file).
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificate(s) to trust instead of the public roots (for a
    /// private or self-signed server certificate).
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers with mutual TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PEM", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Name the server's certificate must carry [default: the host dialled].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The settings, when any TLS flag was given.
    pub fn client(&self) -> Option<crate::client::tls::ClientTls> {
        let on = self.tls
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_server_name.is_some();
        on.then(|| crate::client::tls::ClientTls {
            ca_file: self.tls_ca_file.clone(),
            identity: self.tls_cert_file.clone().zip(self.tls_key_file.clone()),
            server_name: self.tls_server_name.clone(),
        })
    }
}

/// Parses `KEY=VALUE` (the value may itself contain `=`).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// `stt file`.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Audio file: WAV (any rate, mono or stereo, int or float), FLAC, MP3, Ogg
    /// Vorbis or Opus, M4A/AAC, WebM, AIFF or CAF [default: the YAML's audio_path].
    pub audio: Option<PathBuf>,
    /// Milliseconds of audio per chunk [default: 100].
    #[arg(long, value_name = "MS")]
    pub chunk_ms: Option<u64>,
    /// Send as fast as the server takes it instead of at real time.
    #[arg(long)]
    pub no_realtime: bool,
    /// Print client latency per final, RTF and the server's decode timings.
    #[arg(long)]
    pub metrics: bool,
    /// One JSON object per result line (and one for the metrics) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `stt mic`.
#[derive(Debug, Clone, Args)]
pub struct MicArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// List the input devices (index, name, default format) and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Input device: a name or index from --list-devices [default: the
    /// system's default input].
    #[arg(long, value_name = "NAME|INDEX")]
    pub device: Option<String>,
    /// Capture rate in Hz; audio is resampled to 16 kHz before it is sent
    /// [default: the device's default rate].
    #[arg(long, value_name = "HZ")]
    pub sample_rate: Option<u32>,
    /// Milliseconds of audio per chunk [default: 100].
    #[arg(long, value_name = "MS")]
    pub chunk_ms: Option<u64>,
    /// Print client latency per final and the server's decode timings at the end.
    #[arg(long)]
    pub metrics: bool,
    /// One JSON object per result line (and one for the metrics) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `stt batch`.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Audio file (WAV, FLAC, MP3, Ogg, M4A, …) [default: the YAML's audio_path].
    pub audio: Option<PathBuf>,
    /// Largest chunk in milliseconds: keep it within the server's
    /// `server.max_chunk_ms`; 0 sends the whole file as one chunk.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub max_chunk_ms: u64,
    /// Print latency, RTF and the server's decode timings.
    #[arg(long)]
    pub metrics: bool,
    /// One JSON object per result line (and one for the metrics) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `stt dashboard`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// The server's `/metrics.json`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8000/metrics.json"
    )]
    pub metrics_url: String,
    /// The server's `/system`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8000/system"
    )]
    pub system_url: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds between polls (at least 0.1).
    #[arg(long, value_name = "SEC", default_value_t = 1.0)]
    pub interval: f64,
    /// Print one plain-text snapshot and exit (non-zero when the server
    /// cannot be reached).
    #[arg(long)]
    pub once: bool,
    /// Neither clear the screen nor take it over: print a plain-text snapshot
    /// every interval, one after another (for logs; the default when stdout
    /// is not a terminal).
    #[arg(long)]
    pub no_clear: bool,
}

/// `stt serve`. Flags override the YAML files; the YAML overrides the
/// built-in defaults.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Server YAML (server, vad, safety, logging, metrics, storage, health).
    #[arg(long, default_value = "config/server.yaml")]
    pub config: PathBuf,
    /// Model/decode YAML (model, decode_profiles).
    #[arg(long, default_value = "config/model.yaml")]
    pub model_config: PathBuf,
    /// Model name (ggml-<name>.bin in the models directory) or a ggml path.
    #[arg(long)]
    pub model: Option<String>,
    /// cpu | cuda (cuda needs a build with `--features cuda`).
    #[arg(long)]
    pub device: Option<String>,
    /// faster-whisper compute type, mapped onto whisper.cpp (see README):
    /// default | float32 | float16 | int8 | int8_float16 | …
    #[arg(long)]
    pub compute_type: Option<String>,
    /// Default language code (empty or `auto` = detect).
    #[arg(long)]
    pub language: Option<String>,
    /// Decode workers (one WhisperState each).
    #[arg(long)]
    pub model_pool_size: Option<usize>,
    /// Bind address of both listeners.
    #[arg(long)]
    pub host: Option<String>,
    /// gRPC port (0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Concurrent sessions.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// HTTP control-plane port (0 = any free port).
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Browser page, WebSocket and OpenAI REST port (0 = off).
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// Bind address of the browser/REST plane [default: --host when
    /// sessions need authentication, else 127.0.0.1].
    #[arg(long)]
    pub ws_host: Option<String>,
    /// Log decode latency and real-time factor of every decode.
    #[arg(long)]
    pub log_metrics: bool,
    /// TRACE, DEBUG, INFO, WARNING, ERROR.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Also write logs to this file.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// whisper.cpp log level (the original's faster-whisper logger).
    #[arg(long)]
    pub faster_whisper_log_level: Option<String>,
    /// Trailing silence (s) that ends an utterance.
    #[arg(long)]
    pub vad_silence: Option<f64>,
    /// Silero speech probability threshold, 0-1.
    #[arg(long)]
    pub vad_threshold: Option<f64>,
    /// Minimum RMS of an utterance before it is decoded.
    #[arg(long)]
    pub speech_threshold: Option<f64>,
    /// Seconds to wait for a decode (<= 0 waits forever).
    #[arg(long)]
    pub decode_timeout: Option<f64>,
    /// Every session must present an `api_key` attribute.
    #[arg(long)]
    pub require_api_key: bool,
    /// PEM certificate chain: every listener then speaks TLS only.
    #[arg(long, value_name = "PEM", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PEM", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to start without a certificate.
    #[arg(long)]
    pub tls_required: bool,
    /// Require client certificates signed by these CAs (mutual TLS).
    #[arg(long, value_name = "PEM")]
    pub tls_client_ca_file: Option<PathBuf>,
}

/// `stt models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models in the models directory.
    List,
    /// Convert a CTranslate2 (faster-whisper) Whisper directory to ggml.
    Import {
        /// Directory with model.bin, config.json and vocabulary.txt.
        dir: PathBuf,
        /// Output file (default: <models dir>/ggml-<dir name>.bin).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Check a model — a CTranslate2 directory (its files, config and
    /// model.bin) or a ggml file (header, hyperparameters, tensors) — and
    /// load it in its engine.
    Verify {
        /// Model name, CTranslate2 directory or ggml file.
        model: String,
        /// Which engine a name resolves to: auto, ctranslate2 or whisper.cpp.
        #[arg(long, default_value = "auto")]
        engine: crate::engine::EngineChoice,
    },
    /// Download an official ggml model by name (needs internet access).
    Fetch {
        /// tiny, tiny.en, base, base.en, small, …
        name: String,
        /// Base URL of the model repository.
        #[arg(
            long,
            default_value = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"
        )]
        url: String,
    },
}

/// `stt transcribe`.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Audio files: WAV (any rate, mono or stereo, 8–32-bit int or 32-bit
    /// float), FLAC, MP3, Ogg Vorbis or Opus, M4A/AAC, WebM, AIFF or CAF.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Model name, CTranslate2 directory or ggml file.
    #[arg(long, default_value = "tiny.en")]
    pub model: String,
    /// Which engine a model name resolves to: auto (CTranslate2 when its
    /// directory exists), ctranslate2 or whisper.cpp.
    #[arg(long, default_value = "auto")]
    pub engine: crate::engine::EngineChoice,
    /// CTranslate2 compute type (default = int8); whisper.cpp uses the
    /// file's own precision.
    #[arg(long, default_value = "default")]
    pub compute_type: String,
    /// Language code, or `auto` to detect (multilingual models).
    #[arg(long)]
    pub language: Option<String>,
    /// transcribe | translate.
    #[arg(long, default_value = "transcribe")]
    pub task: String,
    /// Decode profile from the model config.
    #[arg(long, default_value = "accurate")]
    pub decode_profile: String,
    /// Model/decode YAML.
    #[arg(long, default_value = "config/model.yaml")]
    pub model_config: PathBuf,
    /// ggml threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Encoder window in mel frames (0 = full 30 s).
    #[arg(long)]
    pub audio_ctx: Option<usize>,
    /// VAD speech probability threshold.
    #[arg(long, default_value_t = 0.5)]
    pub vad_threshold: f64,
    /// Silence (s) that ends a segment.
    #[arg(long, default_value_t = 0.5)]
    pub vad_silence: f64,
    /// Decode each file whole, without VAD segmentation.
    #[arg(long)]
    pub no_vad: bool,
    /// Print JSON (one object per file) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Time every word (printed under each segment; `words` in --json).
    #[arg(long)]
    pub words: bool,
    /// Initial prompt: names, spellings or style the decoder should follow.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Measure: decode times at 1 and 2 threads, audio_ctx 384/768, VAD cost
    /// per frame and RSS, on the first file.
    #[arg(long)]
    pub bench: bool,
    /// Repetitions per measurement with --bench.
    #[arg(long, default_value_t = 3)]
    pub bench_runs: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("valid command line")
    }

    #[test]
    fn file_flags_parse() {
        let cli = parse(&[
            "stt",
            "file",
            "a.wav",
            "-c",
            "f.yaml",
            "--server",
            "h:1",
            "--vad-mode",
            "auto",
            "--vad-threshold",
            "0",
            "--attr",
            "a=b=c",
            "--meta",
            "k=v",
            "--no-realtime",
            "--chunk-ms",
            "40",
            "--require-token",
            "--json",
        ]);
        let Command::File(f) = cli.command else {
            panic!("not file")
        };
        assert_eq!(f.audio.as_deref(), Some(std::path::Path::new("a.wav")));
        assert_eq!(f.session.vad_mode, Some(VadModeChoice::Auto));
        assert_eq!(f.session.vad_threshold, Some(0.0));
        assert_eq!(
            f.session.attrs,
            vec![("a".into(), "b=c".into()), ("k".into(), "v".into())]
        );
        assert!(f.no_realtime && f.session.require_token && f.json);
        assert_eq!(f.chunk_ms, Some(40));
    }

    #[test]
    fn mic_flags_parse() {
        let cli = parse(&[
            "stt",
            "mic",
            "--device",
            "2",
            "--sample-rate",
            "48000",
            "--chunk-ms",
            "50",
            "--vad-mode",
            "auto",
            "-c",
            "m.yaml",
        ]);
        let Command::Mic(m) = cli.command else {
            panic!("not mic")
        };
        assert_eq!(m.device.as_deref(), Some("2"));
        assert_eq!(m.sample_rate, Some(48000));
        assert_eq!(m.chunk_ms, Some(50));
        assert_eq!(m.session.vad_mode, Some(VadModeChoice::Auto));
        assert!(!m.list_devices);
        let cli = parse(&["stt", "mic", "--list-devices"]);
        assert!(matches!(cli.command, Command::Mic(m) if m.list_devices));
    }

    #[test]
    fn bad_attr_is_a_usage_error() {
        let err = Cli::try_parse_from(["stt", "batch", "--attr", "novalue"]).expect_err("bad");
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
    }
}
