//! Runs the plan: one task per channel, started in ramp batches, each
//! running its warm-ups then its measured sessions back to back through
//! [`crate::client::stream_audio`]. Progress goes to stderr; records come
//! back to the caller. Nothing is printed to stdout here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::{BenchPlan, Clip};
use super::record::{SessionRecord, SessionSlot};
use crate::client::{stream_audio, SessionSettings, StreamOptions};

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Measured sessions, ordered by iteration, then channel.
    pub records: Vec<SessionRecord>,
    /// Warm-up sessions run (left out of `records`).
    pub warmup_sessions: usize,
    /// Warm-up sessions that failed.
    pub warmup_failed: usize,
    /// Seconds from the first measured session's start to the last one's end.
    pub measured_sec: f64,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Ctrl-C stopped the run before every session ran.
    pub interrupted: bool,
}

/// What a channel task hands back.
#[derive(Debug, Default)]
struct ChannelOutput {
    records: Vec<SessionRecord>,
    warmups: usize,
    warmups_failed: usize,
    /// First measured start and last measured end, relative to the bench start.
    window: Option<(Duration, Duration)>,
}

/// Live counts behind the progress bar's message.
#[derive(Debug, Default)]
struct Counts {
    active: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
}

/// The bars, and what a channel task needs to update them.
#[derive(Clone)]
struct Progress {
    sessions: ProgressBar,
    ramp: ProgressBar,
    counts: Arc<Counts>,
}

impl Progress {
    /// Two bars on stderr (channels started, sessions done); indicatif draws
    /// nothing when stderr is not a terminal, so logs and CI stay clean.
    fn new(plan: &BenchPlan) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ")
        };
        let ramp = multi.add(ProgressBar::new(plan.channels as u64));
        ramp.set_style(style("channels {bar:30} {pos}/{len} started"));
        let total = (plan.channels * plan.sessions_per_channel()) as u64;
        let sessions = multi.add(ProgressBar::new(total));
        sessions.set_style(style(
            "sessions {bar:30} {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        ));
        sessions.enable_steady_tick(Duration::from_millis(250));
        Self {
            sessions,
            ramp,
            counts: Arc::default(),
        }
    }

    fn started(&self) {
        self.counts.active.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    fn finished(&self, ok: bool) {
        let c = &self.counts;
        c.active.fetch_sub(1, Ordering::Relaxed);
        (if ok { &c.ok } else { &c.failed }).fetch_add(1, Ordering::Relaxed);
        self.sessions.inc(1);
        self.refresh();
    }

    fn refresh(&self) {
        let c = &self.counts;
        self.sessions.set_message(format!(
            "active {}, ok {}, failed {}",
            c.active.load(Ordering::Relaxed),
            c.ok.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        ));
    }

    fn clear(&self) {
        self.ramp.finish_and_clear();
        self.sessions.finish_and_clear();
    }
}

/// Runs every channel to completion (or until `stop`) and collects records.
/// Each session's id is `<base id>-c<channel>-i<iteration>` (`-w<k>` for
/// warm-ups), so server logs can be matched to bench logs.
pub async fn run(
    plan: &BenchPlan,
    base: &SessionSettings,
    clips: Arc<[Clip]>,
    stop: CancellationToken,
) -> RunOutput {
    let started = Utc::now();
    let t0 = Instant::now();
    let progress = Progress::new(plan);
    let mut tasks = JoinSet::new();
    for channel in 0..plan.channels {
        tasks.spawn(run_channel(
            channel,
            plan.clone(),
            base.clone(),
            clips.clone(),
            stop.clone(),
            progress.clone(),
            t0,
        ));
    }
    let mut out = ChannelOutput::default();
    while let Some(joined) = tasks.join_next().await {
        // A channel task panicking is a bug in the bench, not a session
        // failure; its sessions are simply missing from the counts.
        let Ok(ch) = joined else { continue };
        out.records.extend(ch.records);
        out.warmups += ch.warmups;
        out.warmups_failed += ch.warmups_failed;
        out.window = match (out.window, ch.window) {
            (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
            (a, b) => a.or(b),
        };
    }
    progress.clear();
    out.records.sort_by_key(|r| (r.iteration, r.channel));
    RunOutput {
        interrupted: stop.is_cancelled(),
        records: out.records,
        warmup_sessions: out.warmups,
        warmup_failed: out.warmups_failed,
        measured_sec: out
            .window
            .map_or(0.0, |(start, end)| (end - start).as_secs_f64()),
        started,
        finished: Utc::now(),
    }
}

/// One channel: wait for its ramp batch, then its sessions back to back.
async fn run_channel(
    channel: usize,
    plan: BenchPlan,
    base: SessionSettings,
    clips: Arc<[Clip]>,
    stop: CancellationToken,
    progress: Progress,
    t0: Instant,
) -> ChannelOutput {
    let mut out = ChannelOutput::default();
    tokio::select! {
        _ = stop.cancelled() => return out,
        _ = tokio::time::sleep(plan.ramp_delay(channel)) => {}
    }
    progress.ramp.inc(1);
    for k in 0..plan.sessions_per_channel() {
        if stop.is_cancelled() {
            break;
        }
        let warmup = k < plan.warmup_iterations;
        let iteration = k.saturating_sub(plan.warmup_iterations);
        let mut session = base.clone();
        session.session_id = if warmup {
            format!("{}-c{channel}-w{k}", base.session_id)
        } else {
            format!("{}-c{channel}-i{iteration}", base.session_id)
        };
        // Channels start on different clips so a directory of WAVs is mixed.
        let clip = &clips[(channel + k) % clips.len()];
        let opts = StreamOptions {
            session,
            audio: clip.samples.clone(),
            sending: plan.sending,
            stop: stop.child_token(),
        };
        let session_id = opts.session.session_id.clone();
        progress.started();
        let start = t0.elapsed();
        let result = stream_audio(opts).await;
        let end = t0.elapsed();
        progress.finished(result.is_ok());
        if warmup {
            out.warmups += 1;
            out.warmups_failed += usize::from(result.is_err());
            continue;
        }
        out.window = Some(match out.window {
            Some((first, _)) => (first, end),
            None => (start, end),
        });
        let slot = SessionSlot {
            session_id,
            channel,
            iteration,
            audio_file: clip.name.clone(),
            audio_sec: crate::audio::seconds(clip.samples.len()),
            start_sec: start.as_secs_f64(),
            elapsed_sec: (end - start).as_secs_f64(),
        };
        out.records.push(match result {
            Ok(outcome) => SessionRecord::ok(slot, &outcome),
            Err(err) => SessionRecord::failed(slot, &err),
        });
    }
    out
}
