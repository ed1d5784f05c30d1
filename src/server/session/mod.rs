//! One session = one task that owns the stream's state, with no locks:
//! inbound chunks → checks → 16 kHz → Silero VAD per 32 ms → endpointing →
//! audio buffer → partial and final decodes through the scheduler → results
//! back to the transport. It knows nothing of tonic: chunks arrive as
//! [`Chunk`]s and results leave as [`Update`]s on a bounded channel.

pub mod buffer;
pub mod input;
pub mod options;
pub mod registry;
pub mod timing;
pub mod transcript;

mod pipeline;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use buffer::BufferBudget;
pub use input::{Chunk, ChunkLimits};
pub use options::{Defaults, Profile, SessionOptions, SessionRequest, VadMode};
pub use registry::{Claim, Registry};
pub use timing::DecodeTimings;

use crate::config::DecodeProfileConfig;
use crate::error::SttError;
use crate::server::capture::CaptureStore;
use crate::server::metrics::ServerMetrics;
use crate::server::scheduler::Scheduler;
use crate::vad::VadPool;

/// A result for the client, free of protobuf types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub text: String,
    pub is_final: bool,
    /// Seconds of session audio.
    pub start_sec: f64,
    pub end_sec: f64,
    pub language_code: String,
    pub language: String,
    pub probability: f64,
    pub committed_text: String,
    pub unstable_text: String,
    /// Word timings in session seconds, when the session asked for them.
    pub words: Option<Vec<crate::engine::Word>>,
}

/// The client's side of the stream went away (reset, broken connection).
#[derive(Debug, Clone, Copy)]
pub struct Disconnected;

/// Per-session limits and timings, from `server.yaml`.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub chunk: ChunkLimits,
    /// End the session after this long without audio (ERR1006).
    pub session_timeout: Duration,
    /// Longest utterance kept before it is cut, in samples.
    pub max_buffer_samples: Option<u64>,
    /// Audio kept from a cut utterance, in samples.
    pub overlap_samples: u64,
    /// Session audio between partial decodes, in samples.
    pub partial_interval_samples: u64,
    /// Most audio a partial decode sees, in samples.
    pub partial_window_samples: u64,
    /// Decodes one session may have queued or running.
    pub max_pending_per_stream: usize,
    /// `safety.speech_rms_threshold`: quieter utterances are not decoded.
    pub speech_rms_threshold: f32,
    /// `server.max_audio_seconds_per_session` (ERR1015).
    pub max_audio_seconds: Option<f64>,
}

/// Counters every session updates (read by metrics).
#[derive(Debug, Default)]
pub struct SessionStats {
    pub partials_sent: AtomicU64,
    pub finals_sent: AtomicU64,
    pub utterances: AtomicU64,
    /// Utterances in progress right now, across sessions.
    pub active_utterances: AtomicU64,
    /// Utterances dropped by the RMS gate.
    pub quiet_utterances: AtomicU64,
    pub audio_samples: AtomicU64,
}

impl SessionStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every session shares.
pub struct SessionDeps {
    pub scheduler: Scheduler,
    pub vad: VadPool,
    pub budget: BufferBudget,
    pub limits: SessionLimits,
    pub realtime: DecodeProfileConfig,
    pub accurate: DecodeProfileConfig,
    pub stats: Arc<SessionStats>,
    /// Per-session WAV capture (`storage.persist_audio`).
    pub capture: Option<CaptureStore>,
    /// Server-wide counters and histograms.
    pub metrics: Arc<ServerMetrics>,
    /// `logging.log_transcripts` with `logging.transcript_file`: finals'
    /// text goes to that file only (off by default: transcripts are the
    /// users' data).
    pub transcripts: Option<Arc<crate::server::transcript_log::TranscriptLog>>,
    /// `server.max_audio_bytes_per_sec`, shared by every session.
    pub audio_rate: Option<crate::server::limits::AudioRateLimit>,
    /// Per-key `audio_seconds_per_minute` buckets.
    pub key_audio: crate::server::limits::KeyAudioQuotas,
}

/// How the server asks a session to stop.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Finish up: treat as end of input, flush the final, complete.
    pub drain: CancellationToken,
    /// Stop now: abort decodes, end with an error.
    pub abort: CancellationToken,
}

/// How a session ended.
#[derive(Debug)]
pub struct SessionReport {
    pub timings: DecodeTimings,
    /// `Err` carries the coded error the client is told.
    pub outcome: Result<(), SttError>,
    /// The client went away before the end.
    pub client_gone: bool,
}

/// Runs a claimed session until its stream ends. `inbound` yields chunks as
/// the client sends them; results go to `updates` (capacity chosen by the
/// transport; a full channel makes the session wait, a closed one means the
/// client is gone).
pub async fn run<S>(
    deps: Arc<SessionDeps>,
    claim: Claim,
    inbound: S,
    updates: mpsc::Sender<Update>,
    stop: Stop,
) -> SessionReport
where
    S: futures_util::Stream<Item = Result<Chunk, Disconnected>> + Unpin,
{
    match pipeline::Pipeline::start(deps, claim, updates, stop).await {
        Ok(p) => p.run(inbound).await,
        Err(e) => SessionReport {
            timings: DecodeTimings::default(),
            outcome: Err(e),
            client_gone: false,
        },
    }
}
