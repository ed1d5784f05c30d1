//! The decode half of a session: partials of the recent window (at most one
//! in flight), speculative finals started while the closing silence is being
//! confirmed, finals queued in utterance order, and turning transcripts into
//! results. The input half (chunks, VAD, utterances) is in `mod.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{shutting_down, End, Pipeline, Utterance};
use crate::audio::pcm::rms;
use crate::engine::{self, DecodeParams, EngineError, Transcript};
use crate::error::{ErrorCode, SttError};
use crate::server::metrics::{DecodeKind, StreamLatency};
use crate::server::scheduler::ScheduleError;
use crate::server::session::options::{Profile, VadMode};
use crate::server::session::timing::DecodePhases;
use crate::server::session::transcript::{Agreement, Split};
use crate::server::session::{SessionStats, Update};

/// Speech before an utterance's first partial when the workers are idle
/// (the configured interval applies otherwise).
const FIRST_PARTIAL_IDLE: u64 = 16_000;

/// A decode running for the session: a partial of the utterance so far, or
/// a speculative final (its result becomes the final if the endpoint lands
/// at `end`, so the silence wait overlaps the decode).
pub(super) struct InFlight {
    /// What the decode was started as: a speculative final keeps its kind
    /// (and profile) when it carries on as the partial.
    pub(super) kind: DecodeKind,
    pub(super) utterance: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) buffer_wait: Duration,
    /// When the audio up to `end` arrived.
    pub(super) ended: Instant,
    pub(super) cancel: CancellationToken,
    pub(super) fut: BoxFuture<'static, Result<Transcript, ScheduleError>>,
}

/// A final's outcome, with what is needed to emit it.
pub(super) struct FinalDone {
    start: u64,
    end: u64,
    buffer_wait: Duration,
    /// When the audio up to `end` arrived.
    ended: Instant,
    result: Result<Transcript, ScheduleError>,
}

impl Pipeline {
    /// At an endpoint: if the speculative final covers exactly this
    /// utterance, it becomes the final (returns true); otherwise it is
    /// withdrawn and the caller schedules a final.
    pub(super) fn adopt_speculative(&mut self, u: &Utterance, end: u64) -> bool {
        let Some(spec) = self.speculative.take() else {
            return false;
        };
        if spec.utterance != u.id || spec.start != u.start || spec.end != end {
            spec.cancel.cancel();
            return false;
        }
        if let Some(p) = self.partial.take() {
            p.cancel.cancel();
        }
        self.agreement = Agreement::default();
        let InFlight {
            start,
            end,
            buffer_wait,
            ended,
            fut,
            ..
        } = spec;
        self.finals.push_back(Box::pin(async move {
            FinalDone {
                start,
                end,
                buffer_wait,
                ended,
                result: fut.await,
            }
        }));
        true
    }

    /// Starts the final's decode as soon as the closing silence has begun
    /// and the padded end is buffered, instead of after `vad_silence`; the
    /// result waits until the endpoint is confirmed. Speech resuming
    /// withdraws it: it is then a decode of the utterance so far, so it
    /// carries on as the partial when it covers no more than a partial's
    /// window. (Cancelling it instead meant that on base, whose decodes
    /// rarely finish between a speaker's pauses, most utterances got no
    /// partial at all; a decode still running at the next pause is
    /// cancelled there.) The utterance being cut withdraws it for good.
    pub(super) fn speculate(&mut self) {
        let tentative = self.endpointer.tentative_end();
        let current = self.utterance.as_ref().map(|u| (u.id, u.start));
        if let Some(spec) = self.speculative.take() {
            let same_utterance = current == Some((spec.utterance, spec.start));
            if same_utterance && tentative == Some(spec.end) {
                self.speculative = Some(spec);
                return;
            }
            let window = self.deps.limits.partial_window_samples;
            let fits = spec.end - spec.start <= window;
            if same_utterance && fits && self.partial.is_none() {
                if let Some(u) = self.utterance.as_mut() {
                    u.last_partial_end = u.last_partial_end.max(spec.end);
                }
                self.partial = Some(spec);
            } else {
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
        self.speculative = self.try_start(DecodeKind::Final, id, start, end, audio);
    }

    /// Schedules a decode that must never make the session wait: a partial
    /// or a speculative final, only if a slot is free now.
    fn try_start(
        &self,
        kind: DecodeKind,
        utterance: u64,
        start: u64,
        end: u64,
        audio: Arc<[f32]>,
    ) -> Option<InFlight> {
        let buffer_wait = self.buffer_wait(end);
        let ended = self.ended_at(end);
        let cancel = self.cancel.child_token();
        let profile = match kind {
            DecodeKind::Partial => Profile::Realtime,
            // A stream has no batch decodes; they are finals if anything.
            DecodeKind::Final | DecodeKind::Batch => self.opts.profile,
        };
        let mut params = self.params(profile);
        params.word_timestamps = kind != DecodeKind::Partial && self.opts.word_timestamps;
        let (scheduler, engine) = (&self.deps.scheduler, self.model.engine());
        let ticket = match kind {
            DecodeKind::Partial => {
                // Stale once the next partial would be due.
                let deadline = Instant::now() + samples_to_duration(self.partial_interval);
                scheduler.try_partial(engine, audio, params, cancel.clone(), deadline)
            }
            DecodeKind::Final | DecodeKind::Batch => {
                scheduler.try_final(engine, audio, params, cancel.clone(), ended)
            }
        }?;
        Some(InFlight {
            kind,
            utterance,
            start,
            end,
            buffer_wait,
            ended,
            cancel,
            fut: Box::pin(ticket.wait()),
        })
    }

    /// Decode parameters. A session without a language shares the current
    /// utterance's [`engine::Detection`], so detection runs once per utterance.
    fn params(&self, profile: Profile) -> DecodeParams {
        let cfg = match profile {
            Profile::Realtime => self.deps.realtime.clone(),
            Profile::Accurate => self.deps.accurate.clone(),
        };
        let detect = self.opts.language.is_none();
        DecodeParams {
            profile: cfg,
            language: self.opts.language.clone(),
            candidates: self.opts.candidates.clone().filter(|_| detect),
            task: self.opts.task,
            audio_ctx: None,
            speech_sec: None,
            detection: detect.then(|| self.detection.clone()),
            // Finals only: partials change too fast for word times to help.
            word_timestamps: false,
            prompt: self.opts.prompt.clone(),
        }
    }

    /// The next decode of this utterance would run language detection.
    fn must_detect(&self) -> bool {
        let forced = self
            .opts
            .candidates
            .as_deref()
            .and_then(engine::only_language)
            .is_some();
        self.opts.language.is_none()
            && !forced
            && self.model.engine().multilingual()
            && self.detection.get().is_none()
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

    /// When the audio up to `end` arrived: a final's deadline, so the
    /// engine decodes the utterance that ended first, first.
    fn ended_at(&self, end: u64) -> Instant {
        self.buffer
            .arrival_of(end.saturating_sub(1))
            .unwrap_or_else(Instant::now)
    }

    fn buffer_wait(&self, end: u64) -> Duration {
        self.buffer
            .arrival_of(end.saturating_sub(1))
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    /// Every so much audio while speech is active, a partial of the recent
    /// window, if none is in flight and the server has a free slot.
    pub(super) fn maybe_partial(&mut self) {
        if self.partial.is_some() || self.speculative.is_some() || self.auto_waiting {
            return;
        }
        // Until the language is settled, a partial also detects it: wait
        // until there is enough speech for that to be worth its cost.
        let min_audio = if self.must_detect() {
            engine::Detection::WORTH_DETECTING as u64
        } else {
            0
        };
        if self.utterance.is_none() {
            return;
        }
        let Some(interval) = self.current_partial_interval() else {
            // Finals only while the server is behind.
            return;
        };
        let limits = &self.deps.limits;
        let end = self.buffer.end();
        let Some(u) = self.utterance.as_mut() else {
            return;
        };
        // The first partial of an utterance comes sooner when the workers
        // have been idle: it is the one a user waits for. Gated on the
        // averaged load, not on a free worker this instant: that doubled
        // p95 end of utterance → final at 10 streams (1.98 against 0.95 s).
        let first = u.last_partial_end == u.start;
        let due = if first && self.deps.scheduler.cadence().is_idle() {
            interval.min(FIRST_PARTIAL_IDLE)
        } else {
            interval
        };
        if end - u.last_partial_end < due || end - u.start < min_audio {
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
        self.partial = self.try_start(DecodeKind::Partial, id, start, end, audio);
    }

    /// The partial interval in samples the cadence allows now (`None` =
    /// finals only), noting when this session's cadence is widened.
    fn current_partial_interval(&mut self) -> Option<u64> {
        let base = self.deps.limits.partial_interval_samples;
        let cadence = self.deps.scheduler.cadence();
        let interval = cadence.interval(base);
        let widened = interval != Some(base);
        if widened != self.widened {
            self.widened = widened;
            cadence.session_widened(widened);
        }
        self.partial_interval = interval.unwrap_or(base);
        interval
    }

    pub(super) async fn schedule_final(&mut self, start: u64, end: u64) -> Result<(), End> {
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
        let ended = self.ended_at(end);
        let mut params = self.params(self.opts.profile);
        params.word_timestamps = self.opts.word_timestamps;
        let ticket = self
            .deps
            .scheduler
            .schedule_final(
                self.model.engine(),
                audio,
                params,
                self.cancel.child_token(),
                ended,
            )
            .await
            .map_err(final_error)?;
        self.finals.push_back(Box::pin(async move {
            FinalDone {
                start,
                end,
                buffer_wait,
                ended,
                result: ticket.wait().await,
            }
        }));
        Ok(())
    }

    pub(super) async fn on_partial(
        &mut self,
        result: Result<Transcript, ScheduleError>,
    ) -> Result<(), End> {
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
            if let Some(u) = self.utterance.as_mut().filter(|u| !u.partial_sent) {
                u.partial_sent = true;
                self.deps
                    .metrics
                    .record_latency(StreamLatency::FirstPartial, u.started.elapsed());
            }
        }
        // A withdrawn speculative final is timed as the final it was run as.
        self.record(job.kind, phases, job.start, job.end);
        Ok(())
    }

    pub(super) async fn on_final(&mut self, done: FinalDone) -> Result<(), End> {
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
            if let Some(log) = &self.deps.transcripts {
                log.write(&crate::server::transcript_log::TranscriptLine {
                    session_id: &self.opts.id,
                    start_sec: update.start_sec,
                    end_sec: update.end_sec,
                    language: &update.language_code,
                    text: &update.text,
                });
            }
            phases.emit = self.send(update).await?;
            SessionStats::add(&self.stats().finals_sent, 1);
            let metrics = &self.deps.metrics;
            metrics.record_latency(StreamLatency::EndOfUtteranceToFinal, done.ended.elapsed());
            if let Some((_, at)) = self.flush.filter(|(end, _)| done.end >= *end) {
                metrics.record_latency(StreamLatency::FlushToFinal, at.elapsed());
            }
            if self.opts.vad_mode == VadMode::AutoEnd {
                self.auto_done = true;
            }
        }
        self.record(DecodeKind::Final, phases, done.start, done.end);
        Ok(())
    }

    /// Adds a finished decode to the session's trailers and the server's
    /// histograms.
    fn record(&mut self, kind: DecodeKind, phases: DecodePhases, start: u64, end: u64) {
        self.timings.add(phases);
        let audio_sec = end.saturating_sub(start) as f64 / 16_000.0;
        self.deps.metrics.record_decode(kind, &phases, audio_sec);
    }

    /// A result for the client.
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
            words: (is_final && self.opts.word_timestamps).then(|| {
                let offset = start as f64 / 16_000.0;
                t.segments
                    .iter()
                    .flat_map(|s| &s.words)
                    .map(|w| engine::Word {
                        word: w.word.clone(),
                        start_sec: offset + w.start_sec,
                        end_sec: offset + w.end_sec,
                        probability: w.probability,
                    })
                    .collect()
            }),
        }
    }

    /// Hands a result to the transport; returns how long that took. A
    /// client that reads nothing for `session_timeout_sec` while results
    /// wait ends its session (ERR1006): backpressure may slow a session,
    /// but must not let a stalled reader hold a session slot for ever. Nor
    /// may it hold up a shutdown past its grace: the abort ends the wait.
    async fn send(&mut self, update: Update) -> Result<Duration, End> {
        let started = Instant::now();
        let limit = self.deps.limits.session_timeout;
        let sent = tokio::select! {
            sent = tokio::time::timeout(limit, self.updates.send(update)) => sent,
            () = self.stop.abort.cancelled() => return Err(shutting_down()),
        };
        match sent {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(SttError::new(
                ErrorCode::Err1006,
                format!(
                    "session ended: the client read no results for {} s (server.session_timeout_sec)",
                    limit.as_secs_f64()
                ),
            )
            .into()),
        }
    }
}

/// Samples at 16 kHz as a duration.
fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_secs_f64(samples as f64 / 16_000.0)
}

/// Resolves with the decode's result; pending forever when there is none
/// (so a `select!` branch on it simply never fires).
pub(super) async fn poll_in_flight(
    job: &mut Option<InFlight>,
) -> Result<Transcript, ScheduleError> {
    match job {
        Some(j) => (&mut j.fut).await,
        None => std::future::pending().await,
    }
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
