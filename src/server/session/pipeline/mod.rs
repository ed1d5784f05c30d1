//! The session task's state machine. One `Pipeline` per stream, owned by one
//! task: it reads chunks, runs the VAD, tracks the utterance in progress,
//! schedules decodes (at most one partial in flight; finals queue in order)
//! and emits results.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::buffer::AudioBuffer;
use super::input::{self, Chunk};
use super::options::{SessionOptions, VadMode};
use super::timing::DecodeTimings;
use super::transcript::Agreement;
use super::{Claim, Disconnected, SessionDeps, SessionReport, SessionStats, Stop, Update};
use crate::audio::resample::StreamResampler;
use crate::engine::Detection;
use crate::error::{ErrorCode, SttError};
use crate::server::capture::{CaptureStore, SessionCapture};
use crate::server::model_registry::ModelLease;
use crate::vad::{EndpointConfig, Endpointer, SpeechEvent, VadStream};

mod decode;

use decode::{poll_in_flight, FinalDone, InFlight};

/// Audio kept before the current position while nobody speaks, so a
/// padded utterance start still finds its samples.
const PREROLL: u64 = 16_000;

/// Why the loop stopped early.
enum End {
    ClientGone,
    Error(SttError),
}

impl From<SttError> for End {
    fn from(e: SttError) -> Self {
        Self::Error(e)
    }
}

/// The utterance in progress.
struct Utterance {
    id: u64,
    /// Session sample where the audio to decode starts (moves when a long
    /// utterance is cut).
    start: u64,
    /// Buffer end when the last partial was considered.
    last_partial_end: u64,
    /// When its first sample arrived.
    started: Instant,
    /// A partial of it has been sent.
    partial_sent: bool,
}

pub(super) struct Pipeline {
    deps: Arc<SessionDeps>,
    opts: Arc<SessionOptions>,
    token: Option<String>,
    /// Keeps the session registered (and its admission permit) until drop.
    _claim: Claim,
    /// The model this session decodes with.
    model: Arc<ModelLease>,
    /// This session's WAV when `storage.persist_audio` is on; dropping it
    /// closes the file (whatever way the session ends).
    capture: Option<SessionCapture>,
    /// Bounded by the transport; a closed channel means the client is gone.
    updates: mpsc::Sender<Update>,
    stop: Stop,
    /// Cancels this session's decodes; a child of the server's abort token.
    cancel: CancellationToken,
    /// Lent by the VAD pool for the session's life (moved into the blocking
    /// pool while it scores a chunk).
    vad: Option<VadStream>,
    endpointer: Endpointer,
    resampler: Option<StreamResampler>,
    buffer: AudioBuffer,
    agreement: Agreement,
    utterance: Option<Utterance>,
    next_utterance: u64,
    /// The current utterance's detected language, filled by whichever of
    /// its decodes detects first (sessions without a language only).
    detection: Detection,
    /// At most one partial decode in flight.
    partial: Option<InFlight>,
    /// At most one speculative final in flight.
    speculative: Option<InFlight>,
    /// Finals in the order their utterances ended; emitted in that order.
    finals: FuturesOrdered<BoxFuture<'static, FinalDone>>,
    /// Auto-End: an utterance ended and its final is pending.
    auto_waiting: bool,
    /// Auto-End: the final was sent; the stream completes.
    auto_done: bool,
    timings: DecodeTimings,
    /// The partial interval (samples) last allowed by the cadence.
    partial_interval: u64,
    /// That interval is wider than configured (counted server-wide).
    widened: bool,
    /// The client flushed: the buffer end then, and when.
    flush: Option<(u64, Instant)>,
    /// Seconds of audio received so far (`max_audio_seconds_per_session`).
    audio_received_sec: f64,
    /// The audio-rate bucket this session draws on.
    rate_key: String,
}

impl Pipeline {
    pub(super) async fn start(
        deps: Arc<SessionDeps>,
        claim: Claim,
        updates: mpsc::Sender<Update>,
        stop: Stop,
    ) -> Result<Self, SttError> {
        // Growing the pool loads a model (tens of ms): keep it off the runtime.
        let pool = deps.vad.clone();
        let vad = tokio::task::spawn_blocking(move || pool.acquire())
            .await
            .map_err(|e| SttError::new(ErrorCode::Err3002, "VAD start failed").with_source(e))?
            .map_err(|e| match e {
                crate::vad::VadError::Exhausted { .. } => {
                    SttError::new(ErrorCode::Err1008, e.to_string())
                }
                other => SttError::new(ErrorCode::Err2003, "voice activity detector unavailable")
                    .with_source(other),
            })?;
        let opts = claim.options.clone();
        let token = claim.token.clone();
        let model = claim.model.clone().ok_or_else(|| {
            SttError::new(
                ErrorCode::Err2003,
                "the session has no model to decode with",
            )
        })?;
        let capture = match deps.capture.clone() {
            Some(store) => open_capture(store, &opts.id).await,
            None => None,
        };
        let endpointer = Endpointer::new(EndpointConfig::new(opts.vad_threshold, opts.vad_silence));
        let partial_interval = deps.limits.partial_interval_samples;
        Ok(Self {
            rate_key: opts.rate_key(),
            buffer: AudioBuffer::new(deps.budget.clone()),
            cancel: stop.abort.child_token(),
            deps,
            opts,
            token,
            model,
            capture,
            _claim: claim,
            updates,
            stop,
            vad: Some(vad),
            endpointer,
            resampler: None,
            audio_received_sec: 0.0,
            agreement: Agreement::default(),
            utterance: None,
            next_utterance: 0,
            detection: Detection::default(),
            partial: None,
            speculative: None,
            finals: FuturesOrdered::new(),
            auto_waiting: false,
            auto_done: false,
            timings: DecodeTimings::default(),
            partial_interval,
            widened: false,
            flush: None,
        })
    }

    pub(super) async fn run<S>(mut self, mut inbound: S) -> SessionReport
    where
        S: futures_util::Stream<Item = Result<Chunk, Disconnected>> + Unpin,
    {
        let end = self.drive(&mut inbound).await;
        self.cancel.cancel();
        if self.widened {
            self.deps.scheduler.cadence().session_widened(false);
        }
        if self.utterance.take().is_some() {
            self.stats()
                .active_utterances
                .fetch_sub(1, Ordering::Relaxed);
        }
        let (outcome, client_gone) = match end {
            Ok(()) => (Ok(()), false),
            Err(End::ClientGone) => (Ok(()), true),
            Err(End::Error(e)) => (Err(e), false),
        };
        SessionReport {
            timings: self.timings,
            outcome,
            client_gone,
        }
    }

    fn stats(&self) -> &SessionStats {
        &self.deps.stats
    }

    async fn drive<S>(&mut self, inbound: &mut S) -> Result<(), End>
    where
        S: futures_util::Stream<Item = Result<Chunk, Disconnected>> + Unpin,
    {
        let idle = self.deps.limits.session_timeout;
        let mut deadline = tokio::time::Instant::now() + idle;
        let mut input_open = true;
        loop {
            let decoding = self.partial.is_some() || !self.finals.is_empty();
            if self.auto_done || (!input_open && !decoding) {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = self.stop.abort.cancelled() => {
                    return Err(shutting_down());
                }
                _ = self.updates.closed() => return Err(End::ClientGone),
                Some(done) = self.finals.next(), if !self.finals.is_empty() => {
                    self.on_final(done).await?;
                }
                result = poll_in_flight(&mut self.partial), if self.partial.is_some() => {
                    self.on_partial(result).await?;
                }
                _ = self.stop.drain.cancelled(), if input_open => {
                    input_open = false;
                    self.end_of_input().await?;
                }
                msg = tokio::time::timeout_at(deadline, inbound.next()), if input_open => match msg {
                    Err(_) => {
                        return Err(SttError::new(
                            ErrorCode::Err1006,
                            format!("session timed out: no audio for {} s (server.session_timeout_sec)", idle.as_secs_f64()),
                        )
                        .into());
                    }
                    Ok(None) => {
                        input_open = false;
                        self.end_of_input().await?;
                    }
                    Ok(Some(Err(Disconnected))) => return Err(End::ClientGone),
                    Ok(Some(Ok(chunk))) => {
                        if !chunk.pcm16.is_empty() {
                            deadline = tokio::time::Instant::now() + idle;
                        }
                        let last = chunk.is_final;
                        self.on_chunk(chunk).await?;
                        if last {
                            input_open = false;
                            self.end_of_input().await?;
                        }
                    }
                },
            }
        }
    }

    // === input ===

    async fn on_chunk(&mut self, chunk: Chunk) -> Result<(), End> {
        let decoded = input::check(
            &chunk,
            &self.opts.id,
            self.token.as_deref(),
            self.deps.limits.chunk,
        )?;
        if decoded.samples.is_empty() {
            return Ok(());
        }
        self.within_audio_limits(chunk.pcm16.len(), decoded.samples.len(), decoded.rate)?;
        let mut out = Vec::with_capacity(decoded.samples.len());
        if self.resampler.as_ref().map(StreamResampler::rate) != Some(decoded.rate) {
            // A rate change mid-stream: flush the old rate's tail first.
            if let Some(mut old) = self.resampler.take() {
                old.finish(&mut out).map_err(input::malformed)?;
            }
            self.resampler = Some(StreamResampler::new(decoded.rate).map_err(input::malformed)?);
        }
        if let Some(r) = self.resampler.as_mut() {
            r.push(&decoded.samples, &mut out)
                .map_err(input::malformed)?;
        }
        self.ingest(out).await
    }

    /// The client's audio rate (bytes, and the key's seconds a minute),
    /// then the session's total, as the original checks them: a chunk that
    /// would cross a limit is refused and ends the session.
    fn within_audio_limits(
        &mut self,
        bytes: usize,
        samples: usize,
        rate: u32,
    ) -> Result<(), SttError> {
        if let Some(limit) = &self.deps.audio_rate {
            limit.check(&self.rate_key, bytes)?;
        }
        let sec = samples as f64 / f64::from(rate.max(1));
        if let (Some(key), Some(quota)) = (&self.opts.api_key, self.opts.audio_seconds_per_minute) {
            self.deps
                .key_audio
                .check(key, quota, (sec * 1000.0).ceil() as u64)?;
        }
        if let Some(max) = self.deps.limits.max_audio_seconds {
            if self.audio_received_sec + sec > max {
                return Err(SttError::new(
                    ErrorCode::Err1015,
                    format!(
                        "session audio limit reached: {max} s (server.max_audio_seconds_per_session); open a new session to go on"
                    ),
                ));
            }
        }
        self.audio_received_sec += sec;
        Ok(())
    }

    /// Buffers 16 kHz samples, scores them and acts on speech events.
    async fn ingest(&mut self, samples: Vec<f32>) -> Result<(), End> {
        if samples.is_empty() {
            return Ok(());
        }
        SessionStats::add(&self.stats().audio_samples, samples.len() as u64);
        if let Some(c) = &self.capture {
            c.push(&samples);
        }
        self.buffer
            .push(&samples, Instant::now())
            .map_err(|e| SttError::new(ErrorCode::Err1008, e.to_string()))?;
        let mut vad = self
            .vad
            .take()
            .ok_or_else(|| SttError::new(ErrorCode::Err3002, "voice activity detector lost"))?;
        // Silero costs ~0.25 ms per 32 ms frame; a large chunk would hold a
        // runtime thread for long, so scoring runs on the blocking pool.
        let (vad, probs) = tokio::task::spawn_blocking(move || {
            let mut probs = Vec::with_capacity(samples.len() / 512 + 1);
            let r = vad.push(&samples, &mut probs);
            (vad, r.map(|()| probs))
        })
        .await
        .map_err(|e| SttError::new(ErrorCode::Err3002, "VAD task failed").with_source(e))?;
        self.vad = Some(vad);
        let probs = probs.map_err(|e| {
            SttError::new(ErrorCode::Err3002, "voice activity detection failed").with_source(e)
        })?;
        for p in probs {
            if let Some(event) = self.endpointer.push(p) {
                self.on_speech(event).await?;
            }
        }
        self.cut_long_utterance().await?;
        self.speculate();
        self.maybe_partial();
        self.trim();
        Ok(())
    }

    /// The client is done sending (is_final, closed its side, or the server
    /// drains): the utterance in progress becomes a final.
    async fn end_of_input(&mut self) -> Result<(), End> {
        let flushed = Instant::now();
        if let Some(mut r) = self.resampler.take() {
            let mut tail = Vec::new();
            r.finish(&mut tail).map_err(input::malformed)?;
            self.ingest(tail).await?;
        }
        self.flush = Some((self.buffer.end(), flushed));
        if self.endpointer.flush().is_some() {
            // The speaker may still have been talking: decode to the last
            // sample, not just the last scored frame.
            self.end_utterance(self.buffer.end()).await?;
        }
        Ok(())
    }

    async fn on_speech(&mut self, event: SpeechEvent) -> Result<(), End> {
        match event {
            SpeechEvent::Start(start) => {
                if self.auto_waiting || self.auto_done {
                    return Ok(());
                }
                self.next_utterance += 1;
                self.detection = Detection::default();
                self.utterance = Some(Utterance {
                    id: self.next_utterance,
                    start,
                    last_partial_end: start,
                    started: self.buffer.arrival_of(start).unwrap_or_else(Instant::now),
                    partial_sent: false,
                });
                SessionStats::add(&self.stats().utterances, 1);
                SessionStats::add(&self.stats().active_utterances, 1);
            }
            SpeechEvent::End { end, .. } => self.end_utterance(end).await?,
        }
        Ok(())
    }

    async fn end_utterance(&mut self, end: u64) -> Result<(), End> {
        let Some(u) = self.utterance.take() else {
            return Ok(());
        };
        self.stats()
            .active_utterances
            .fetch_sub(1, Ordering::Relaxed);
        if self.opts.vad_mode == VadMode::AutoEnd {
            self.auto_waiting = true;
        }
        if !self.adopt_speculative(&u, end) {
            self.schedule_final(u.start, end).await?;
        }
        self.buffer.discard_before(end);
        Ok(())
    }

    /// `server.max_buffer_sec`/`max_buffer_bytes`: Continue cuts a long
    /// utterance into a final and goes on with `buffer_overlap_sec` of its
    /// tail; Auto-End keeps only the most recent window.
    async fn cut_long_utterance(&mut self) -> Result<(), End> {
        let Some(max) = self.deps.limits.max_buffer_samples else {
            return Ok(());
        };
        let end = self.buffer.end();
        let Some(start) = self.utterance.as_ref().map(|u| u.start) else {
            return Ok(());
        };
        let overlap = self.deps.limits.overlap_samples;
        let new_start = match cut(start, end, max, overlap, self.opts.vad_mode) {
            None => return Ok(()),
            Some(Cut::Final { restart }) => {
                self.schedule_final(start, end).await?;
                restart
            }
            Some(Cut::Slide { restart }) => restart,
        };
        if let Some(u) = self.utterance.as_mut() {
            u.start = new_start;
            u.last_partial_end = u.last_partial_end.max(new_start);
        }
        Ok(())
    }

    /// Keeps the buffer to the utterance in progress, or a short pre-roll.
    fn trim(&mut self) {
        let keep_from = match &self.utterance {
            Some(u) => u.start,
            None => self.endpointer.position().saturating_sub(PREROLL),
        };
        self.buffer.discard_before(keep_from);
    }
}

/// What to do with an utterance longer than the buffer cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Continue mode: what was heard goes out as a final now, and the
    /// utterance goes on from `restart` (the overlap kept, so a word split
    /// by the cut is heard whole in one of the two).
    Final { restart: u64 },
    /// Auto-End: there is one final, at the end; keep only the newest
    /// audio, from `restart`.
    Slide { restart: u64 },
}

/// How a session ends when the server aborts it (shutdown past its grace).
fn shutting_down() -> End {
    SttError::new(ErrorCode::Err2004, "server is shutting down").into()
}

/// The buffer rule (`max_buffer_sec` / `max_buffer_bytes`, with
/// `buffer_overlap_sec`) for the utterance `start..end` (session samples):
/// `None` while it fits in `max` samples.
fn cut(start: u64, end: u64, max: u64, overlap: u64, mode: VadMode) -> Option<Cut> {
    if end.saturating_sub(start) <= max {
        return None;
    }
    Some(match mode {
        // The overlap never reaches back past the utterance's own start.
        VadMode::Continue => Cut::Final {
            restart: end.saturating_sub(overlap).max(start),
        },
        VadMode::AutoEnd => Cut::Slide { restart: end - max },
    })
}

/// Opens the session's capture file off the runtime (file creation may be
/// slow). A capture that cannot be opened is logged and counted; the
/// session goes on without it rather than failing the client.
async fn open_capture(store: CaptureStore, id: &str) -> Option<SessionCapture> {
    let id = id.to_string();
    match tokio::task::spawn_blocking(move || store.open(&id)).await {
        Ok(Ok(c)) => {
            tracing::debug!(path = %c.path().display(), "capturing audio");
            Some(c)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audio capture unavailable for this session");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "audio capture task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 16_000;

    #[test]
    fn an_utterance_within_the_cap_is_left_alone() {
        assert_eq!(cut(0, 20 * SEC, 20 * SEC, SEC / 2, VadMode::Continue), None);
        assert_eq!(cut(5 * SEC, 6 * SEC, SEC, 0, VadMode::AutoEnd), None);
    }

    #[test]
    fn continue_mode_sends_a_final_and_keeps_the_overlap() {
        assert_eq!(
            cut(SEC, 21 * SEC + 1, 20 * SEC, SEC / 2, VadMode::Continue),
            Some(Cut::Final {
                restart: 21 * SEC + 1 - SEC / 2
            })
        );
        // No overlap: the next part starts where this one ended.
        assert_eq!(
            cut(0, 3 * SEC, 2 * SEC, 0, VadMode::Continue),
            Some(Cut::Final { restart: 3 * SEC })
        );
        // An overlap longer than the utterance stops at its start.
        assert_eq!(
            cut(SEC, 3 * SEC, SEC, 10 * SEC, VadMode::Continue),
            Some(Cut::Final { restart: SEC })
        );
    }

    #[test]
    fn auto_end_keeps_the_newest_audio_up_to_the_cap() {
        assert_eq!(
            cut(0, 25 * SEC, 20 * SEC, SEC / 2, VadMode::AutoEnd),
            Some(Cut::Slide { restart: 5 * SEC })
        );
    }
}
