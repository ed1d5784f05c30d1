//! The session task's state machine. One `Pipeline` per stream, owned by one
//! task: it reads chunks, runs the VAD, tracks the utterance in progress,
//! schedules decodes (at most one partial in flight; finals queue in order)
//! and emits results.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::buffer::AudioBuffer;
use super::input::{self, Chunk};
use super::options::{Profile, SessionOptions, VadMode};
use super::timing::{DecodePhases, DecodeTimings};
use super::transcript::{Agreement, Split};
use super::{Claim, Disconnected, SessionDeps, SessionReport, SessionStats, Stop, Update};
use crate::audio::pcm::rms;
use crate::audio::resample::StreamResampler;
use crate::error::{ErrorCode, SttError};
use crate::server::engine::{self, DecodeParams, EngineError, Transcript};
use crate::server::scheduler::ScheduleError;
use crate::server::vad::{EndpointConfig, Endpointer, SpeechEvent, VadStream};

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
}

struct PartialJob {
    utterance: u64,
    start: u64,
    end: u64,
    buffer_wait: Duration,
    cancel: CancellationToken,
    fut: BoxFuture<'static, Result<Transcript, ScheduleError>>,
}

/// A final decode started while the closing silence is still being
/// confirmed: if the endpoint lands where expected, its result is the final
/// and the silence wait overlaps the decode.
struct Speculative {
    utterance: u64,
    start: u64,
    end: u64,
    buffer_wait: Duration,
    cancel: CancellationToken,
    fut: BoxFuture<'static, Result<Transcript, ScheduleError>>,
}

struct FinalDone {
    start: u64,
    end: u64,
    buffer_wait: Duration,
    result: Result<Transcript, ScheduleError>,
}

pub(super) struct Pipeline {
    deps: Arc<SessionDeps>,
    opts: Arc<SessionOptions>,
    token: Option<String>,
    /// Keeps the session registered (and its admission permit) until drop.
    _claim: Claim,
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
    /// At most one partial decode in flight.
    partial: Option<PartialJob>,
    /// At most one speculative final in flight.
    speculative: Option<Speculative>,
    /// Finals in the order their utterances ended; emitted in that order.
    finals: FuturesOrdered<BoxFuture<'static, FinalDone>>,
    /// Auto-End: an utterance ended and its final is pending.
    auto_waiting: bool,
    /// Auto-End: the final was sent; the stream completes.
    auto_done: bool,
    timings: DecodeTimings,
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
                crate::server::vad::VadError::Exhausted { .. } => {
                    SttError::new(ErrorCode::Err1008, e.to_string())
                }
                other => SttError::new(ErrorCode::Err2003, "voice activity detector unavailable")
                    .with_source(other),
            })?;
        let opts = claim.options.clone();
        let token = claim.token.clone();
        let endpointer = Endpointer::new(EndpointConfig::new(opts.vad_threshold, opts.vad_silence));
        Ok(Self {
            buffer: AudioBuffer::new(deps.budget.clone()),
            cancel: stop.abort.child_token(),
            deps,
            opts,
            token,
            _claim: claim,
            updates,
            stop,
            vad: Some(vad),
            endpointer,
            resampler: None,
            agreement: Agreement::default(),
            utterance: None,
            next_utterance: 0,
            partial: None,
            speculative: None,
            finals: FuturesOrdered::new(),
            auto_waiting: false,
            auto_done: false,
            timings: DecodeTimings::default(),
        })
    }

    pub(super) async fn run<S>(mut self, mut inbound: S) -> SessionReport
    where
        S: futures_util::Stream<Item = Result<Chunk, Disconnected>> + Unpin,
    {
        let end = self.drive(&mut inbound).await;
        self.cancel.cancel();
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
                    return Err(SttError::new(ErrorCode::Err2004, "server is shutting down").into());
                }
                _ = self.updates.closed() => return Err(End::ClientGone),
                Some(done) = self.finals.next(), if !self.finals.is_empty() => {
                    self.on_final(done).await?;
                }
                result = poll_partial(&mut self.partial), if self.partial.is_some() => {
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
        let mut out = Vec::with_capacity(decoded.samples.len());
        if self.resampler.as_ref().map(StreamResampler::rate) != Some(decoded.rate) {
            // A rate change mid-stream: flush the old rate's tail first.
            if let Some(mut old) = self.resampler.take() {
                old.finish(&mut out).map_err(bad_audio)?;
            }
            self.resampler = Some(StreamResampler::new(decoded.rate).map_err(bad_audio)?);
        }
        if let Some(r) = self.resampler.as_mut() {
            r.push(&decoded.samples, &mut out).map_err(bad_audio)?;
        }
        self.ingest(out).await
    }

    /// Buffers 16 kHz samples, scores them and acts on speech events.
    async fn ingest(&mut self, samples: Vec<f32>) -> Result<(), End> {
        if samples.is_empty() {
            return Ok(());
        }
        SessionStats::add(&self.stats().audio_samples, samples.len() as u64);
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
        if let Some(mut r) = self.resampler.take() {
            let mut tail = Vec::new();
            r.finish(&mut tail).map_err(bad_audio)?;
            self.ingest(tail).await?;
        }
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
                self.utterance = Some(Utterance {
                    id: self.next_utterance,
                    start,
                    last_partial_end: start,
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
        match self.speculative.take() {
            Some(spec) if spec.utterance == u.id && spec.start == u.start && spec.end == end => {
                if let Some(p) = self.partial.take() {
                    p.cancel.cancel();
                }
                self.agreement = Agreement::default();
                let Speculative {
                    start,
                    end,
                    buffer_wait,
                    fut,
                    ..
                } = spec;
                self.finals.push_back(Box::pin(async move {
                    FinalDone {
                        start,
                        end,
                        buffer_wait,
                        result: fut.await,
                    }
                }));
            }
            other => {
                if let Some(spec) = other {
                    spec.cancel.cancel();
                }
                self.schedule_final(u.start, end).await?;
            }
        }
        self.buffer.discard_before(end);
        Ok(())
    }

    /// Starts the final's decode as soon as the closing silence has begun
    /// and the padded end is buffered, instead of after `vad_silence`; the
    /// result waits until the endpoint is confirmed. Speech resuming (or the
    /// utterance being cut) withdraws it.
    fn speculate(&mut self) {
        let tentative = self.endpointer.tentative_end();
        let current = self.utterance.as_ref().map(|u| (u.id, u.start));
        if let Some(spec) = &self.speculative {
            let still =
                current == Some((spec.utterance, spec.start)) && tentative == Some(spec.end);
            if still {
                return;
            }
            if let Some(spec) = self.speculative.take() {
                spec.cancel.cancel();
            }
        }
        let (Some((id, start)), Some(end)) = (current, tentative) else {
            return;
        };
        // Start once the padded end is buffered. Waiting for more of the
        // silence (fewer withdrawn speculations at phrase pauses) measured
        // worse at every load we tried: 0.74 vs 0.64 s p50 for one stream,
        // 1.76 vs 1.44-1.63 s p95 for four (scripts/bench-latency.py).
        if self.auto_waiting
            || end > self.buffer.end()
            || self.in_flight() >= self.deps.limits.max_pending_per_stream
        {
            return;
        }
        let audio = self.buffer.slice(start, end);
        if audio.is_empty() || !self.loud_enough(&audio) {
            return;
        }
        // The partial in flight would hold the worker the final needs.
        if let Some(p) = self.partial.take() {
            p.cancel.cancel();
        }
        let buffer_wait = self.buffer_wait(end);
        let cancel = self.cancel.child_token();
        let params = self.params(self.opts.profile);
        if let Some(ticket) = self.deps.scheduler.try_final(audio, params, cancel.clone()) {
            self.speculative = Some(Speculative {
                utterance: id,
                start,
                end,
                buffer_wait,
                cancel,
                fut: Box::pin(ticket.wait()),
            });
        }
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
        if end - start <= max {
            return Ok(());
        }
        let new_start = match self.opts.vad_mode {
            VadMode::Continue => {
                self.schedule_final(start, end).await?;
                end.saturating_sub(self.deps.limits.overlap_samples)
            }
            VadMode::AutoEnd => end - max,
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

    // === decodes ===

    fn params(&self, profile: Profile) -> DecodeParams {
        let cfg = match profile {
            Profile::Realtime => self.deps.realtime.clone(),
            Profile::Accurate => self.deps.accurate.clone(),
        };
        DecodeParams {
            profile: cfg,
            language: self.opts.language.clone(),
            task: self.opts.task,
            audio_ctx: None,
        }
    }

    fn in_flight(&self) -> usize {
        self.finals.len()
            + usize::from(self.partial.is_some())
            + usize::from(self.speculative.is_some())
    }

    fn loud_enough(&self, audio: &[f32]) -> bool {
        let gate = self.deps.limits.speech_rms_threshold;
        gate <= 0.0 || rms(audio) >= gate
    }

    fn buffer_wait(&self, end: u64) -> Duration {
        self.buffer
            .arrival_of(end.saturating_sub(1))
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    /// Every so much audio while speech is active, a partial of the recent
    /// window, if none is in flight and the server has a free slot.
    fn maybe_partial(&mut self) {
        if self.partial.is_some() || self.speculative.is_some() || self.auto_waiting {
            return;
        }
        let limits = &self.deps.limits;
        let end = self.buffer.end();
        let Some(u) = self.utterance.as_mut() else {
            return;
        };
        if end - u.last_partial_end < limits.partial_interval_samples {
            return;
        }
        u.last_partial_end = end;
        let (id, start) = (
            u.id,
            u.start
                .max(end.saturating_sub(limits.partial_window_samples)),
        );
        if self.in_flight() >= limits.max_pending_per_stream {
            self.deps.scheduler.count_dropped_partial();
            return;
        }
        let audio = self.buffer.slice(start, end);
        if audio.is_empty() || !self.loud_enough(&audio) {
            return;
        }
        let buffer_wait = self.buffer_wait(end);
        let cancel = self.cancel.child_token();
        let params = self.params(Profile::Realtime);
        if let Some(ticket) = self
            .deps
            .scheduler
            .try_partial(audio, params, cancel.clone())
        {
            self.partial = Some(PartialJob {
                utterance: id,
                start,
                end,
                buffer_wait,
                cancel,
                fut: Box::pin(ticket.wait()),
            });
        }
    }

    async fn schedule_final(&mut self, start: u64, end: u64) -> Result<(), End> {
        // A partial of this utterance is stale now; free its worker.
        if let Some(p) = self.partial.take() {
            p.cancel.cancel();
        }
        self.agreement = Agreement::default();
        let audio = self.buffer.slice(start, end);
        if audio.is_empty() {
            return Ok(());
        }
        if !self.loud_enough(&audio) {
            SessionStats::add(&self.stats().quiet_utterances, 1);
            if self.opts.vad_mode == VadMode::AutoEnd {
                self.auto_waiting = false;
            }
            return Ok(());
        }
        while self.in_flight() >= self.deps.limits.max_pending_per_stream.max(1) {
            match self.finals.next().await {
                Some(done) => self.on_final(done).await?,
                None => break,
            }
        }
        let buffer_wait = self.buffer_wait(end);
        let params = self.params(self.opts.profile);
        let ticket = self
            .deps
            .scheduler
            .schedule_final(audio, params, self.cancel.child_token())
            .await
            .map_err(final_error)?;
        self.finals.push_back(Box::pin(async move {
            FinalDone {
                start,
                end,
                buffer_wait,
                result: ticket.wait().await,
            }
        }));
        Ok(())
    }

    async fn on_partial(&mut self, result: Result<Transcript, ScheduleError>) -> Result<(), End> {
        let Some(job) = self.partial.take() else {
            return Ok(());
        };
        let t = match result {
            Ok(t) => t,
            Err(ScheduleError::Engine(EngineError::Cancelled)) => return Ok(()),
            Err(e) => {
                // A lost partial is not worth ending the stream for; the
                // final will carry the words.
                tracing::debug!(error = %e, "partial decode failed");
                self.deps.scheduler.count_dropped_partial();
                return Ok(());
            }
        };
        let mut phases = DecodePhases {
            buffer_wait: job.buffer_wait,
            queue_wait: t.queue_wait,
            inference: t.inference,
            emit: Duration::ZERO,
        };
        let current = self
            .utterance
            .as_ref()
            .is_some_and(|u| u.id == job.utterance);
        let text = t.text();
        if current && !text.is_empty() {
            let split = self.agreement.partial(&text);
            let update = self.update(&t, split, false, job.start, job.end);
            phases.emit = self.send(update).await?;
            SessionStats::add(&self.stats().partials_sent, 1);
        }
        self.timings.add(phases);
        Ok(())
    }

    async fn on_final(&mut self, done: FinalDone) -> Result<(), End> {
        let t = done.result.map_err(final_error)?;
        let mut phases = DecodePhases {
            buffer_wait: done.buffer_wait,
            queue_wait: t.queue_wait,
            inference: t.inference,
            emit: Duration::ZERO,
        };
        let text = t.text();
        if text.is_empty() {
            // Whisper heard no words (noise, a cough): nothing to send, and
            // Auto-End keeps listening for real speech.
            self.auto_waiting = false;
        } else {
            let split = Agreement::default().finish(&text);
            let update = self.update(&t, split, true, done.start, done.end);
            phases.emit = self.send(update).await?;
            SessionStats::add(&self.stats().finals_sent, 1);
            if self.opts.vad_mode == VadMode::AutoEnd {
                self.auto_done = true;
            }
        }
        self.timings.add(phases);
        Ok(())
    }

    fn update(&self, t: &Transcript, split: Split, is_final: bool, start: u64, end: u64) -> Update {
        Update {
            text: split.text,
            is_final,
            start_sec: start as f64 / 16_000.0,
            end_sec: end as f64 / 16_000.0,
            language: engine::language_name(&t.language)
                .unwrap_or_default()
                .to_string(),
            language_code: t.language.clone(),
            probability: f64::from(t.language_probability),
            committed_text: split.committed,
            unstable_text: split.unstable,
        }
    }

    /// Hands a result to the transport; returns how long that took.
    async fn send(&mut self, update: Update) -> Result<Duration, End> {
        let started = Instant::now();
        self.updates
            .send(update)
            .await
            .map_err(|_| End::ClientGone)?;
        Ok(started.elapsed())
    }
}

async fn poll_partial(job: &mut Option<PartialJob>) -> Result<Transcript, ScheduleError> {
    match job {
        Some(j) => (&mut j.fut).await,
        None => std::future::pending().await,
    }
}

fn bad_audio(e: crate::audio::AudioError) -> SttError {
    SttError::new(ErrorCode::Err1011, format!("malformed audio: {e}"))
}

/// The code a client sees when its final cannot be produced.
fn final_error(e: ScheduleError) -> SttError {
    let code = match &e {
        ScheduleError::QueueTimeout(..) | ScheduleError::DecodeTimeout(_) => ErrorCode::Err2001,
        ScheduleError::Engine(EngineError::Language { .. }) => ErrorCode::Err1010,
        ScheduleError::Engine(EngineError::Stopped | EngineError::Cancelled) => ErrorCode::Err2004,
        ScheduleError::Engine(_) => ErrorCode::Err2002,
    };
    let message = match code {
        ErrorCode::Err2001 => format!("decode timed out: {e}"),
        ErrorCode::Err2004 => "the decode engine is stopping".to_string(),
        _ => format!("decode failed: {e}"),
    };
    SttError::new(code, message).with_source(e)
}
