//! `stt bench`'s flags: the session bench, the capacity sweep
//! (`--conversations`) and the soak (`--duration`).

use std::path::PathBuf;

use clap::Args;

use super::SessionArgs;

/// `stt bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Concurrent sessions (each channel runs its iterations one after another).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub channels: usize,
    /// Measured sessions per channel.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub iterations: usize,
    /// Sessions per channel run first and left out of the logs and the summary.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_iterations: usize,
    /// Start the channels in this many batches instead of all at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ramp_steps: usize,
    /// Seconds between two ramp batches.
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub ramp_interval_sec: f64,
    /// Pace the audio at real time, like a live source [default: as fast as
    /// the server takes it].
    #[arg(long)]
    pub realtime: bool,
    /// Milliseconds of audio per chunk [default: the YAML's chunk_ms, else 100].
    #[arg(long, value_name = "MS")]
    pub chunk_ms: Option<u64>,
    /// An audio file, or a directory whose audio files the sessions take in turn
    /// [default: the YAML's audio_path, else assets/audio/hello.wav].
    #[arg(long, value_name = "PATH")]
    pub audio: Option<PathBuf>,
    /// Print the session logs to stdout (the summary then goes to stderr).
    #[arg(long)]
    pub log_sessions: bool,
    /// Most sessions printed by --log-sessions; 0 prints them all.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_session_logs: usize,
    /// Write every session's log to this file.
    #[arg(long, value_name = "PATH")]
    pub session_log_path: Option<PathBuf>,
    /// jsonl, csv, tsv or markdown [default: the --session-log-path
    /// extension's (.csv, .tsv, .md), else jsonl].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub session_log_format: Option<SessionLogFormat>,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json_summary: Option<PathBuf>,
    /// Capacity sweep: play conversations from DIR (WAVs of one utterance
    /// each, joined with pauses; or conversations with NAME.json sidecars
    /// from scripts/devset.py concat) as N real-time streams per level, and
    /// report end of utterance → final, CPU and RSS per level and the
    /// largest N that keeps up.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["channels", "iterations", "warmup_iterations", "ramp_steps", "audio", "realtime", "log_sessions", "session_log_path"])]
    pub conversations: Option<PathBuf>,
    /// Capacity sweep: stream counts to try.
    #[arg(
        long,
        value_name = "N,N,…",
        value_delimiter = ',',
        default_value = "1,2,4,6,8,10,12",
        requires = "conversations"
    )]
    pub levels: Vec<usize>,
    /// Capacity sweep: rounds per level, each giving the streams other
    /// conversations (more utterances, steadier percentiles).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "conversations"
    )]
    pub rounds: usize,
    /// Capacity sweep: seconds between two streams' starts (0 = all together).
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        requires = "conversations"
    )]
    pub stagger_sec: f64,
    /// Capacity sweep: a level passes with p95 end of utterance → final at most this.
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 1.5,
        allow_negative_numbers = true,
        requires = "conversations"
    )]
    pub max_p95_sec: f64,
    /// Capacity sweep, single-utterance WAVs: utterances joined into one stream.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        requires = "conversations"
    )]
    pub utterances_per_stream: usize,
    /// Capacity sweep, single-utterance WAVs: silence between two utterances.
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 1.0,
        allow_negative_numbers = true,
        requires = "conversations"
    )]
    pub gap_sec: f64,
    /// Capacity sweep and soak: the server's /system, for its CPU, RSS,
    /// open files and threads.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8000/system"
    )]
    pub system_url: String,
    /// Soak: stream for SEC seconds — every channel runs real-time sessions
    /// back to back, each on a new connection — printing the server's RSS,
    /// open files, threads and sessions, the errors and the end of speech →
    /// final percentiles every --report-every-sec. Fails on RSS drift over
    /// --max-rss-drift-percent after --soak-warmup-sec, on open files or
    /// threads growing, or on any error.
    #[arg(
        long,
        value_name = "SEC",
        conflicts_with_all = ["conversations", "iterations", "warmup_iterations", "log_sessions", "session_log_path"]
    )]
    pub duration: Option<f64>,
    /// Soak: seconds between two report rows.
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 60.0,
        allow_negative_numbers = true,
        requires = "duration"
    )]
    pub report_every_sec: f64,
    /// Soak: seconds at the start left out of the drift and growth checks
    /// (model caches and allocator pools fill up first).
    #[arg(
        long,
        value_name = "SEC",
        default_value_t = 300.0,
        allow_negative_numbers = true,
        requires = "duration"
    )]
    pub soak_warmup_sec: f64,
    /// Soak: the most the server's RSS may grow after the warm-up, in percent.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 5.0,
        allow_negative_numbers = true,
        requires = "duration"
    )]
    pub max_rss_drift_percent: f64,
    /// Soak: the server's /metrics.json, for its open sessions.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8000/metrics.json"
    )]
    pub metrics_url: String,
}

/// How session logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SessionLogFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// Comma-separated, with a header row.
    Csv,
    /// Tab-separated, with a header row.
    Tsv,
    /// A document: title, start/end time, column definitions, one table.
    #[value(alias = "md")]
    Markdown,
}
