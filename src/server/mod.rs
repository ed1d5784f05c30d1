//! `stt serve`: wiring and shutdown order only. [`Settings::load`] reads the
//! YAML files and applies flags; [`BoundServer::bind`] loads the model and
//! VAD and binds the listener (port 0 picks a free port, and the real
//! address is logged and returned); [`BoundServer::serve`] runs until the
//! shutdown future resolves, then stops in a fixed, logged order.
//!
//! Layers, dependencies pointing inward: transport ([`grpc`]) → application
//! ([`session`], [`scheduler`]) → components ([`crate::vad`]) →
//! [`crate::engine`]. Only
//! transport imports tonic types.

pub mod access;
mod background;
pub mod batch;
pub mod cadence;
pub mod capture;
pub mod grpc;
pub mod http;
pub mod http_serve;
pub mod limits;
pub mod metrics;
pub mod model_registry;
pub mod scheduler;
pub mod secret;
pub mod service;
pub mod session;
pub mod settings;
mod shutdown;
pub mod snapshot;
pub mod tls;
pub mod transcript_log;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::KeyStore;
use crate::cli::ServeArgs;
use crate::config::seconds;
use crate::config::server::AuthProfile;
use crate::engine::{EngineConfig, ModelSource};
use crate::vad::{VadConfig, VadPool};
use metrics::ServerMetrics;
use model_registry::ModelRegistry;
use scheduler::{DecodeHealth, Scheduler, SchedulerConfig};
use service::SessionService;
use session::{BufferBudget, Registry, SessionDeps, SessionStats, Stop};
pub use settings::Settings;

/// A server whose model is loaded and whose listener is bound.
pub struct BoundServer {
    /// The gRPC address actually bound.
    pub grpc_addr: SocketAddr,
    /// The HTTP control-plane address actually bound.
    pub http_addr: SocketAddr,
    /// The browser/REST data-plane address, when `server.ws_port` is set.
    pub web_addr: Option<SocketAddr>,
    listener: TcpListener,
    http_listener: TcpListener,
    web_listener: Option<TcpListener>,
    decode_health: Arc<DecodeHealth>,
    settings: Settings,
    models: ModelRegistry,
    registry: Registry,
    deps: Arc<SessionDeps>,
    metrics: Arc<ServerMetrics>,
    /// API keys sessions are checked against, if configured.
    keys: Option<KeyStore>,
    /// Signed-token checker (`create_session_auth_profile: signed_token`).
    signed: Option<Arc<crate::auth::signed::SignedTokens>>,
    /// The certificate every listener serves, when TLS is on.
    tls: Option<tls::Tls>,
    /// Allowlist, trusted proxies and request rate of the operations plane.
    http_access: Arc<access::HttpAccess>,
    /// The same for the data plane, with its own request budget (a
    /// dashboard's polls do not use up a browser's).
    web_access: Arc<access::HttpAccess>,
    /// The gRPC allowlist.
    grpc_access: access::GrpcGuard,
}

impl BoundServer {
    /// Loads the model and the VAD, then binds the gRPC listener.
    pub async fn bind(mut settings: Settings) -> anyhow::Result<Self> {
        let started = Instant::now();
        if settings.server.server.max_sessions == 0 {
            settings.server.server.max_sessions = crate::config::server::auto_max_sessions();
        }
        let s = &settings.server.server;
        let workers = settings.model.model.pool_size.max(1);
        let threads = match settings.model.model.threads {
            0 => crate::engine::default_threads(workers),
            n => n,
        };
        let engine_cfg = EngineConfig {
            workers,
            threads,
            // The scheduler bounds pending work globally; the engine queues
            // must hold at least that much so a scheduled job always fits.
            queue_capacity: s.max_pending_decodes_global.max(1),
            use_gpu: settings.model.model.device == "cuda",
            flash_attn: settings.flash_attn(),
            compute_type: settings.model.model.compute_type.clone(),
            ..EngineConfig::new(ModelSource::from_path(settings.model_path.clone()))
        };
        let choice = settings.engine_choice();
        let default_id = crate::models::store::model_id(&settings.model_path);
        let preload: Vec<(String, std::path::PathBuf)> = settings
            .model
            .model
            .preload
            .iter()
            .map(|name| {
                let source = ModelSource::resolve(name, choice);
                (source.id(), source.path)
            })
            .filter(|(id, _)| *id != default_id)
            .collect();
        let models = tokio::task::spawn_blocking(move || {
            let models = ModelRegistry::start(default_id, engine_cfg, choice)?;
            for (id, path) in preload {
                models
                    .load_now(id.clone(), path)
                    .with_context(|| format!("cannot preload model {id:?} (model.preload)"))?;
            }
            anyhow::Ok(models)
        })
        .await
        .context("model loading task failed")??;

        let v = &settings.server.vad;
        let vad_cfg = VadConfig {
            model_path: crate::models::store::silero_model(v.model_path.as_deref()),
            runtime_path: crate::models::store::ort_library(v.onnxruntime_path.as_deref()),
            pool_size: v.model_pool_size,
            prewarm: v.model_prewarm,
            growth_factor: v.model_pool_growth_factor,
            max_sessions: s.max_sessions,
        };
        let vad = tokio::task::spawn_blocking(move || VadPool::new(vad_cfg))
            .await
            .context("VAD loading task failed")??;

        let addr = format!("{}:{}", s.host, s.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {addr} (server.port / --port)"))?;
        let grpc_addr = listener.local_addr()?;
        let http_bind = format!("{}:{}", s.host, s.metrics_port);
        let http_listener = TcpListener::bind(&http_bind).await.with_context(|| {
            format!("cannot listen for HTTP on {http_bind} (server.metrics_port / --metrics-port)")
        })?;
        let http_addr = http_listener.local_addr()?;
        let web_port = match (settings.web_any_port, s.ws_port) {
            (true, _) => Some(0),
            (false, 0) => None,
            (false, port) => Some(port),
        };
        let web_listener = match web_port {
            None => None,
            Some(port) => {
                let host = access::data_plane_host(
                    &settings.server,
                    std::env::var_os(crate::auth::KEYS_ENV).is_some(),
                    std::env::var(access::ENV_ALLOW_INSECURE_WS).ok().as_deref(),
                )?;
                let bind = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                Some(TcpListener::bind(&bind).await.with_context(|| {
                    format!("cannot listen for WebSocket/REST on {bind} (server.ws_port / --ws-port; 0 turns it off)")
                })?)
            }
        };
        let web_addr = web_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let metrics = Arc::new(ServerMetrics::default());
        let tls = match settings.tls_files() {
            Some(files) => Some(tls::Tls::load(files, metrics.clone())?),
            None => {
                tracing::warn!("TLS is off: audio, transcripts and keys travel in plaintext. Set tls.cert_file/tls.key_file (--tls-cert-file/--tls-key-file) to turn it on");
                None
            }
        };
        let http_access = Arc::new(access::HttpAccess::new(s, metrics.clone())?);
        let web_access = Arc::new(access::HttpAccess::new(s, metrics.clone())?);
        let grpc_access = access::GrpcGuard::new(s, metrics.clone())?;
        let keys_env = std::env::var(crate::auth::KEYS_ENV).ok();
        let keys = KeyStore::load(
            settings.server.auth.keys_file.as_deref(),
            keys_env.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("{e} (auth.keys_file / {})", crate::auth::KEYS_ENV))?;
        if let Some(k) = &keys {
            tracing::info!(keys = k.len(), "API keys loaded: sessions must present one");
        }
        let auth = &settings.server.auth;
        let signed = match auth.create_session_auth_profile {
            AuthProfile::SignedToken => {
                let secret = std::env::var(ENV_AUTH_SECRET)
                    .ok()
                    .or_else(|| auth.create_session_auth_secret.clone())
                    .filter(|s| !s.is_empty())
                    .with_context(|| {
                        format!("create_session_auth_profile: signed_token needs a secret: set {ENV_AUTH_SECRET} (or auth.create_session_auth_secret)")
                    })?;
                tracing::info!(
                    ttl_sec = auth.create_session_auth_ttl_sec,
                    "sessions need signed tokens"
                );
                Some(Arc::new(crate::auth::signed::SignedTokens::new(
                    secret,
                    auth.create_session_auth_ttl_sec.min(i64::MAX as u64) as i64,
                )))
            }
            _ => None,
        };
        let h = &settings.server.health;
        let decode_health = Arc::new(DecodeHealth::new(
            seconds(h.window_sec),
            h.min_events,
            h.max_timeout_ratio,
            h.min_success_ratio,
        ));

        let scheduler = Scheduler::new(
            SchedulerConfig {
                max_pending_global: s.max_pending_decodes_global,
                queue_timeout: seconds(s.decode_queue_timeout_sec),
                decode_timeout: (s.decode_timeout_sec > 0.0).then(|| seconds(s.decode_timeout_sec)),
            },
            decode_health.clone(),
        );
        let capture = match capture::CaptureConfig::from_storage(&settings.server.storage) {
            Some(cfg) => {
                let dir = cfg.directory.clone();
                let store = capture::CaptureStore::new(cfg).with_context(|| {
                    format!(
                        "cannot capture audio under {} (storage.directory)",
                        dir.display()
                    )
                })?;
                tracing::info!(directory = %dir.display(), "capturing session audio");
                Some(store)
            }
            None => None,
        };
        let l = &settings.server.logging;
        let transcripts = match (&l.transcript_file, l.log_transcripts) {
            (Some(file), true) => Some(Arc::new(transcript_log::TranscriptLog::open(
                file,
                l.transcript_retention_days,
            )?)),
            (None, true) => {
                tracing::warn!("logging.log_transcripts is on but logging.transcript_file is not set: transcripts are not written anywhere (never to the main log)");
                None
            }
            (_, false) => None,
        };
        let deps = Arc::new(SessionDeps {
            capture,
            metrics: metrics.clone(),
            transcripts,
            scheduler,
            vad,
            budget: BufferBudget::new(s.max_total_buffer_bytes),
            limits: settings.session_limits(),
            realtime: settings.profile("realtime"),
            accurate: settings.profile("accurate"),
            stats: Arc::new(SessionStats::default()),
            audio_rate: limits::AudioRateLimit::new(
                s.max_audio_bytes_per_sec,
                s.max_audio_bytes_per_sec_burst,
            ),
            key_audio: limits::KeyAudioQuotas::default(),
        });
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            web = %web_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
            model = %settings.model_path.display(),
            workers,
            threads,
            max_sessions = s.max_sessions,
            ready_ms = started.elapsed().as_millis() as u64,
            "server bound"
        );
        Ok(Self {
            grpc_addr,
            http_addr,
            web_addr,
            listener,
            http_listener,
            web_listener,
            decode_health,
            registry: Registry::new(s.max_sessions),
            models,
            deps,
            metrics,
            keys,
            signed,
            tls,
            http_access,
            web_access,
            grpc_access,
            settings,
        })
    }

    /// Serves until `shutdown` resolves, then: stop admitting (health
    /// NOT_SERVING), let open streams flush their finals for up to
    /// `server.shutdown_grace_sec`, abort what is left, stop the engine.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let s = &self.settings.server.server;
        let closing = CancellationToken::new();
        let stop = Stop {
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
        };
        let tracker = TaskTracker::new();
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut defaults = self.settings.session_defaults();
        let auth = &self.settings.server.auth;
        defaults.require_api_key = match auth.create_session_auth_profile {
            AuthProfile::None => false,
            AuthProfile::ApiKey => true,
            AuthProfile::SignedToken => defaults.require_api_key,
            AuthProfile::Auto => defaults.require_api_key || self.keys.is_some(),
        };
        let service = SessionService::new(service::Parts {
            registry: self.registry.clone(),
            models: self.models.clone(),
            deps: self.deps.clone(),
            defaults,
            stop: stop.clone(),
            tracker: tracker.clone(),
            closing: closing.clone(),
            keys: self.keys.clone(),
            signed: self.signed.clone(),
            max_sessions_per_key: (s.max_sessions_per_api_key > 0)
                .then_some(s.max_sessions_per_api_key),
            max_sessions_per_ip: (s.max_sessions_per_ip > 0).then_some(s.max_sessions_per_ip),
            rate: limits::SessionRateLimit::new(s.create_session_rps, s.create_session_burst),
        });
        let backend = grpc::Backend {
            service: service.clone(),
        };
        let limits = grpc::MessageLimits {
            max_receive: s.grpc_max_receive_message_bytes,
            max_send: s.grpc_max_send_message_bytes,
        };

        let reaper = background::spawn_reaper(
            self.registry.clone(),
            seconds(s.session_timeout_sec),
            closing.clone(),
        );

        // Serving from here on: the listeners are bound and the service is
        // built. It is true before any plane accepts, so a request that
        // came in while we started is answered, not told "not serving".
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        grpc::set_serving(&reporter).await;
        let http_stop = CancellationToken::new();
        if let Some(tls) = &self.tls {
            tls.spawn_reloader(
                seconds(self.settings.server.tls.reload_interval_sec),
                closing.clone(),
            );
        }
        let incoming = |listener, plane| tls::Incoming::new(listener, self.tls.as_ref(), plane);
        let http = tokio::spawn(http::serve(
            incoming(self.http_listener, tls::Plane::Operations)?,
            self.http_access.clone(),
            http::AppState {
                metrics: self.metrics.clone(),
                registry: self.registry.clone(),
                deps: self.deps.clone(),
                models: self.models.clone(),
                admin: self.settings.admin.clone(),
                decode_health: self.decode_health.clone(),
                serving: serving.clone(),
                expose_api_keys: self.settings.server.metrics.expose_api_key_sessions,
                system: Arc::new(http::SystemProbe::default()),
            },
            http_stop.clone().cancelled_owned(),
        ));

        let watcher = background::spawn_health_watcher(
            reporter.clone(),
            serving.clone(),
            self.models.clone(),
            self.decode_health.clone(),
            closing.clone(),
        );
        background::spawn_cadence_feed(
            self.deps.scheduler.clone(),
            self.models.clone(),
            closing.clone(),
        );
        let grpc_stop = CancellationToken::new();
        let mut grpc = tokio::spawn(grpc::serve(
            incoming(self.listener, tls::Plane::Grpc)?,
            self.grpc_access.clone(),
            backend,
            limits,
            health,
            grpc_stop.clone().cancelled_owned(),
        ));
        let web_stop = CancellationToken::new();
        let web = match self.web_listener {
            None => None,
            Some(listener) => {
                let state = web::WebState {
                    service: service.clone(),
                    max_frame_bytes: web_frame_limit(s),
                    max_upload_bytes: s.max_upload_bytes,
                };
                Some(tokio::spawn(web::serve(
                    incoming(listener, tls::Plane::Web)?,
                    self.web_access.clone(),
                    state,
                    web_stop.clone().cancelled_owned(),
                )))
            }
        };
        tracing::info!(grpc = %self.grpc_addr, http = %self.http_addr, "serving");
        let metrics_line = background::MetricsLine {
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            deps: self.deps.clone(),
            models: self.models.clone(),
        };
        let metrics_logger = s
            .log_metrics
            .then(|| metrics_line.clone().spawn(closing.clone()));

        // Either a shutdown request, or the transport died on its own.
        let died = tokio::select! {
            () = shutdown => None,
            res = &mut grpc => Some(res),
        };

        // 1. No new sessions; health says so.
        tracing::info!("shutdown: no longer admitting sessions");
        closing.cancel();
        serving.store(false, std::sync::atomic::Ordering::Release);
        watcher.abort();
        grpc::set_not_serving(&reporter).await;
        // 2. Open streams flush their finals (a zero grace skips this);
        // 3. what is left is aborted.
        let grace = seconds(s.shutdown_grace_sec);
        shutdown::drain_sessions(grace, &stop, &tracker, &self.registry).await;
        shutdown::settle_capture(self.deps.capture.clone(), grace).await;
        let grpc_result = match died {
            Some(res) => res,
            None => shutdown::close_listener(grpc, &grpc_stop).await,
        };
        let failure = match grpc_result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(anyhow::Error::new(e).context("gRPC server failed")),
            Err(e) => Some(anyhow::Error::new(e).context("gRPC server task failed")),
        };
        // The data plane's sessions have drained with the rest; its open
        // sockets (pages left open) must not hold the process up.
        if let Some(web) = web {
            if let Ok(Err(e)) = shutdown::close_listener(web, &web_stop).await {
                tracing::error!(error = %e, "WebSocket/REST listener failed");
            }
        }
        reaper.abort();
        http_stop.cancel();
        if let Ok(Err(e)) = http.await {
            tracing::error!(error = %e, "HTTP control plane failed");
        }
        // 4. Join the whisper workers of every model.
        let models = self.models.clone();
        tokio::task::spawn_blocking(move || models.shutdown())
            .await
            .ok();
        if let Some(task) = metrics_logger {
            task.abort();
            metrics_line.log();
        }
        tracing::info!("shutdown: complete");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Counters, for the control plane and tests.
    pub fn metrics(&self) -> Arc<ServerMetrics> {
        self.metrics.clone()
    }

    /// Sessions registered now.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }
}

/// Largest WebSocket frame the data plane reads: a chunk of
/// `server.max_chunk_ms` at the highest rate we take, so an oversized chunk
/// still reaches the session and gets its ERR1007.
fn web_frame_limit(s: &crate::config::server::ServerSection) -> usize {
    let max_samples = s.max_chunk_ms as usize * crate::audio::MAX_RATE as usize / 1000;
    (max_samples * 2).clamp(64 * 1024, 16 * 1024 * 1024) * 2
}

/// The signed-token secret's environment variable.
const ENV_AUTH_SECRET: &str = "STT_CREATE_SESSION_AUTH_SECRET";

/// `stt serve`: load settings, bind, serve until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    settings.init_logging()?;
    let server = BoundServer::bind(settings).await?;
    server.serve(shutdown::signal()).await
}
