//! The periodic tasks a serving server runs beside its transports: the
//! reaper of sessions that never streamed, the partial cadence's feed, the
//! gRPC health watcher and the `--log-metrics` line. Each ends when the
//! server starts closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::ServerMetrics;
use super::model_registry::ModelRegistry;
use super::scheduler::{DecodeHealth, Scheduler};
use super::session::{Registry, SessionDeps};
use super::{cadence, grpc, http, snapshot};

/// How often `--log-metrics` logs its summary line.
const LOG_METRICS_EVERY: Duration = Duration::from_secs(30);

/// Sessions created but never streamed give their slot back after `idle`.
pub(super) fn spawn_reaper(
    registry: Registry,
    idle: Duration,
    closing: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = closing.cancelled() => return,
                _ = tick.tick() => {
                    let n = registry.reap(idle);
                    if n > 0 {
                        tracing::info!(sessions = n, "expired sessions that never streamed");
                    }
                }
            }
        }
    })
}

/// Tells the partial cadence how busy the decode workers are, every
/// [`cadence::TICK`].
pub(super) fn spawn_cadence_feed(
    scheduler: Scheduler,
    models: ModelRegistry,
    closing: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cadence::TICK);
        loop {
            tokio::select! {
                () = closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            scheduler
                .cadence()
                .tick(Instant::now(), models.busy_fraction());
        }
    })
}

/// Keeps the gRPC health service in step with `GET /health`: NOT_SERVING
/// whenever the HTTP check would answer 500, SERVING again once it recovers.
pub(super) fn spawn_health_watcher(
    reporter: tonic_health::server::HealthReporter,
    serving: Arc<AtomicBool>,
    models: ModelRegistry,
    decode_health: Arc<DecodeHealth>,
    closing: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut healthy = true;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                () = closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            let serving = serving.load(Ordering::Acquire);
            let reasons = http::health::reasons(serving, &models, &decode_health);
            if reasons.is_empty() != healthy {
                healthy = reasons.is_empty();
                if healthy {
                    tracing::info!("health recovered");
                    grpc::set_serving(&reporter).await;
                } else {
                    tracing::warn!(reasons = ?reasons, "unhealthy");
                    grpc::set_not_serving(&reporter).await;
                }
            }
        }
    })
}

/// What the `--log-metrics` line reads.
#[derive(Clone)]
pub(super) struct MetricsLine {
    pub metrics: Arc<ServerMetrics>,
    pub registry: Registry,
    pub deps: Arc<SessionDeps>,
    pub models: ModelRegistry,
}

impl MetricsLine {
    /// Logs the line every [`LOG_METRICS_EVERY`] until `closing`.
    pub(super) fn spawn(self, closing: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_METRICS_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = closing.cancelled() => return,
                    _ = tick.tick() => self.log(),
                }
            }
        })
    }

    /// Sessions, decode latency over the recent window, load and errors,
    /// in one line an operator can grep.
    pub(super) fn log(&self) {
        let s = snapshot::MetricsSnapshot::take(&snapshot::Sources {
            metrics: &self.metrics,
            registry: &self.registry,
            deps: &self.deps,
            models: &self.models,
            expose_api_keys: false,
        });
        let (finals, partials) = (&s.latency.final_, &s.latency.partial);
        let ms = |s: f64| (s * 1000.0).round() as u64;
        tracing::info!(
            sessions = s.active_sessions,
            started = s.sessions_started_total,
            finals = finals.count,
            final_p50_ms = ms(finals.total_p50_sec),
            final_p95_ms = ms(finals.total_p95_sec),
            end_of_utterance_to_final_p95_ms = ms(s.latency.end_of_utterance_to_final.p95_sec),
            partials = partials.count,
            partial_p50_ms = ms(partials.total_p50_sec),
            rtf = finals
                .rtf_mean
                .map_or(0.0, |r| (r * 1000.0).round() / 1000.0),
            workers_busy = s.decode.workers_busy,
            workers = self.models.workers(),
            pending = s.decode.pending,
            partials_dropped = s.decode.partials_dropped_total,
            partial_cadence = s.decode.partial_cadence.factor,
            errors = s.errors.values().sum::<u64>(),
            capture_dropped = s.capture.as_ref().map_or(0, |c| c.dropped_chunks_total),
            "metrics"
        );
    }
}
