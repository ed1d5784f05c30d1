//! `stt batch`: the whole WAV as one `is_final` chunk, decoded with the
//! `accurate` profile unless told otherwise — the original's batch client.
//! The YAML's `chunk_ms` and `realtime` are ignored, as there.

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
    super::run_command(session, &audio, Sending::Whole, format, metrics).await
}
