//! Whole-file transcription for uploads (the REST transport): the file's
//! audio goes through the session's Silero VAD in one pass, each speech
//! region (cut to fit the encoder window) is decoded through the same
//! scheduler as live streams — queued behind live finals, one piece at a
//! time, so an upload shares the workers without starving live sessions —
//! and the segments come back with file-relative times.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::engine::{self, DecodeParams, Detection, Word};
use crate::error::{ErrorCode, SttError};
use crate::server::metrics::DecodeKind;
use crate::server::scheduler::ScheduleError;
use crate::server::session::timing::DecodePhases;
use crate::server::session::{Claim, DecodeTimings, Profile, SessionDeps};
use crate::vad::{endpoint, EndpointConfig, VadError};

/// Longest piece decoded at once, in samples: inside Whisper's 30 s window
/// with room for the decoder's timestamps.
const MAX_PIECE: u64 = 28 * 16_000;

/// One transcribed segment, in seconds of the file.
#[derive(Debug, Clone)]
pub struct FileSegment {
    pub start_sec: f64,
    pub end_sec: f64,
    pub text: String,
    pub avg_logprob: Option<f32>,
    pub no_speech_probability: f32,
    /// Word timings in seconds of the file, when asked for.
    pub words: Vec<Word>,
}

/// Everything said in one upload.
#[derive(Debug, Clone, Default)]
pub struct FileTranscript {
    pub duration_sec: f64,
    /// Language code; detected on the first speech when the request named
    /// none.
    pub language: String,
    pub language_probability: f32,
    pub segments: Vec<FileSegment>,
    pub timings: DecodeTimings,
}

impl FileTranscript {
    /// Segment texts joined with single spaces.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        parts.join(" ")
    }
}

/// Transcribes 16 kHz mono `samples` with the claimed session's options
/// and model.
pub async fn transcribe(
    deps: &SessionDeps,
    claim: &Claim,
    samples: Arc<[f32]>,
    cancel: CancellationToken,
) -> Result<FileTranscript, SttError> {
    let opts = &claim.options;
    let model = claim.model.clone().ok_or_else(|| {
        SttError::new(
            ErrorCode::Err2003,
            "the request has no model to decode with",
        )
    })?;
    let regions =
        speech_regions(deps, samples.clone(), opts.vad_threshold, opts.vad_silence).await?;
    let mut out = FileTranscript {
        duration_sec: samples.len() as f64 / 16_000.0,
        language: opts.language.clone().unwrap_or_default(),
        language_probability: 1.0,
        ..Default::default()
    };
    let profile = match opts.profile {
        Profile::Realtime => deps.realtime.clone(),
        Profile::Accurate => deps.accurate.clone(),
    };
    let detect = opts.language.is_none();
    // One detection for the whole file: later pieces reuse it once it has
    // heard enough speech.
    let detection = Detection::default();
    for (start, end) in pieces(&regions) {
        let audio: Arc<[f32]> = samples[start as usize..end as usize].into();
        let params = DecodeParams {
            profile: profile.clone(),
            language: opts.language.clone(),
            candidates: opts.candidates.clone().filter(|_| detect),
            task: opts.task,
            audio_ctx: None,
            speech_sec: None,
            detection: detect.then(|| detection.clone()),
            word_timestamps: opts.word_timestamps,
            prompt: opts.prompt.clone(),
        };
        let scheduled = Instant::now();
        let ticket = deps
            .scheduler
            .schedule_batch(model.engine(), audio, params, cancel.clone())
            .await
            .map_err(decode_error)?;
        let t = ticket.wait().await.map_err(decode_error)?;
        let phases = DecodePhases {
            buffer_wait: std::time::Duration::ZERO,
            queue_wait: t.queue_wait,
            inference: t.inference,
            emit: scheduled
                .elapsed()
                .saturating_sub(t.queue_wait + t.inference),
        };
        out.timings.add(phases);
        deps.metrics
            .record_decode(DecodeKind::Batch, &phases, (end - start) as f64 / 16_000.0);
        if out.segments.is_empty() && detect && !t.language.is_empty() {
            out.language = t.language.clone();
            out.language_probability = t.language_probability;
        }
        let offset = start as f64 / 16_000.0;
        let piece_end = end as f64 / 16_000.0;
        for s in &t.segments {
            let text = s.text.trim();
            if text.is_empty() {
                continue;
            }
            let begin = offset + s.start_sec;
            out.segments.push(FileSegment {
                start_sec: begin,
                end_sec: (offset + s.end_sec).min(piece_end).max(begin),
                text: text.to_string(),
                avg_logprob: t.avg_logprob,
                no_speech_probability: s.no_speech_probability,
                words: s
                    .words
                    .iter()
                    .map(|w| Word {
                        word: w.word.clone(),
                        start_sec: offset + w.start_sec,
                        end_sec: offset + w.end_sec,
                        probability: w.probability,
                    })
                    .collect(),
            });
        }
    }
    if out.language.is_empty() {
        // Nothing was decoded: an English-only model's language, or none.
        out.language = if model.engine().multilingual() {
            String::new()
        } else {
            "en".into()
        };
    }
    Ok(out)
}

/// Speech regions of the file, in samples, from one VAD pass (off the
/// async runtime: Silero is CPU work).
async fn speech_regions(
    deps: &SessionDeps,
    samples: Arc<[f32]>,
    threshold: f64,
    silence: f64,
) -> Result<Vec<(u64, u64)>, SttError> {
    let pool = deps.vad.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = pool.acquire()?;
        let mut probs = Vec::with_capacity(samples.len() / 512 + 1);
        stream.push(&samples, &mut probs)?;
        Ok::<_, VadError>(endpoint::regions(
            &probs,
            EndpointConfig::new(threshold, silence),
        ))
    })
    .await
    .map_err(|e| SttError::new(ErrorCode::Err3002, "VAD task failed").with_source(e))?
    .map_err(|e| match e {
        VadError::Exhausted { .. } => SttError::new(ErrorCode::Err1008, e.to_string()),
        other => SttError::new(ErrorCode::Err2003, "voice activity detector unavailable")
            .with_source(other),
    })
}

/// Regions cut into pieces of at most [`MAX_PIECE`], of even length.
fn pieces(regions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, end) in regions {
        let len = end - start;
        let n = len.div_ceil(MAX_PIECE).max(1);
        let step = len.div_ceil(n);
        let mut at = start;
        while at < end {
            let to = (at + step).min(end);
            out.push((at, to));
            at = to;
        }
    }
    out
}

fn decode_error(e: ScheduleError) -> SttError {
    match e {
        ScheduleError::Engine(engine::EngineError::Cancelled) => {
            SttError::new(ErrorCode::Err2002, "the transcription was cancelled")
        }
        ScheduleError::Engine(engine::EngineError::Stopped) => SttError::new(
            ErrorCode::Err2004,
            "server is shutting down; retry on another instance",
        ),
        ScheduleError::QueueTimeout(..) | ScheduleError::DecodeTimeout(_) => {
            SttError::new(ErrorCode::Err2001, e.to_string())
        }
        other => SttError::new(ErrorCode::Err2002, "decoding the file failed").with_source(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_regions_are_cut_evenly_inside_the_window() {
        assert_eq!(pieces(&[(0, 16_000)]), vec![(0, 16_000)]);
        let long = 70 * 16_000;
        let p = pieces(&[(16_000, 16_000 + long)]);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|(a, b)| b - a <= MAX_PIECE));
        assert_eq!(p[0].0, 16_000);
        assert_eq!(p[2].1, 16_000 + long);
        assert!(p.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
