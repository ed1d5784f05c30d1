//! `stt batch`: the whole WAV at once, decoded with the `accurate` profile
//! unless told otherwise — the original's batch client. The YAML's
//! `chunk_ms` and `realtime` are ignored, as there.
//!
//! The original sent the file as one chunk, which its own server refused
//! (ERR1007) for any file longer than `server.max_chunk_ms` (2 s by
//! default). We send it without pacing in chunks of `--max-chunk-ms`
//! (default 2000, the server's default cap): the server sees the same audio
//! and produces the same finals. `--max-chunk-ms 0` sends one chunk.

use super::file::audio_path;
use super::render::Format;
use super::session::{load_client_file, SessionSettings};
use super::{Sending, StreamOutcome};
use crate::cli::BatchArgs;
use crate::config::client::ProfileChoice;

/// The profile batch asks for when neither flag nor YAML names one.
pub const DEFAULT_PROFILE: ProfileChoice = ProfileChoice::Accurate;

/// Runs `stt batch`.
pub async fn run(args: BatchArgs) -> anyhow::Result<StreamOutcome> {
    let yaml = load_client_file(&args.session)?;
    let audio = audio_path(args.audio.as_ref(), &yaml)?;
    let session = SessionSettings::resolve(&args.session, &yaml, "batch", Some(DEFAULT_PROFILE))?;
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let metrics = args.metrics || yaml.metrics.unwrap_or(false);
    let sending = match args.max_chunk_ms {
        0 => Sending::Whole,
        chunk_ms => Sending::Burst { chunk_ms },
    };
    super::run_command(session, &audio, sending, format, metrics).await
}
