//! The session service every transport adapts. gRPC, WebSocket and REST
//! only translate their wire format into calls on [`SessionService`]:
//! admission, option defaults, the model lease, the session registry, the
//! session task and its metrics live here once, so a session is validated,
//! limited and counted the same way whichever door it came through.

use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::signed::{SignedRefusal, SignedTokens};
use crate::auth::{self, KeyRefusal, KeyStore};
use crate::error::{ErrorCode, SttError};
use crate::server::batch::{self, FileTranscript};
use crate::server::limits::SessionRateLimit;
use crate::server::metrics::ServerMetrics;
use crate::server::model_registry::{ModelLease, ModelRegistry};
use crate::server::session::{
    self, Chunk, Claim, Defaults, Disconnected, Registry, SessionDeps, SessionOptions,
    SessionReport, SessionRequest, Stop, Update,
};

/// Session attribute naming the model to decode with (default model when
/// absent); echoed back with the id actually used.
pub const MODEL_ID_ATTRIBUTE: &str = "model_id";

/// Results buffered between a session task and its transport; a client that
/// reads slowly makes the session wait (backpressure), never drops a final.
const UPDATE_CAPACITY: usize = 32;

/// Which door a session came through (the `transport` metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Grpc,
    WebSocket,
    Rest,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Self::Grpc, Self::WebSocket, Self::Rest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::WebSocket => "websocket",
            Self::Rest => "rest",
        }
    }
}

/// A registered session, as CreateSession answers it.
#[derive(Debug)]
pub struct Created {
    pub options: SessionOptions,
    /// Issued when the client asked for one (`require_token`).
    pub token: Option<String>,
}

/// A running session: its results as they come, then how it ended.
pub struct Running {
    /// The settings the session runs with.
    pub options: Arc<SessionOptions>,
    pub updates: mpsc::Receiver<Update>,
    pub ended: Ended,
}

/// How a running session ended, once it has.
pub struct Ended(oneshot::Receiver<SessionReport>);

impl Ended {
    /// Waits for the session's report (sent after its last update).
    pub async fn report(self) -> SessionReport {
        self.0.await.unwrap_or_else(|_| SessionReport {
            timings: Default::default(),
            outcome: Err(SttError::new(
                ErrorCode::Err3002,
                "the session ended unexpectedly",
            )),
            client_gone: false,
        })
    }
}

/// Shared state of the session service; cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Parts>,
}

/// What a session service is made of.
pub struct Parts {
    pub registry: Registry,
    pub models: ModelRegistry,
    pub deps: Arc<SessionDeps>,
    pub defaults: Defaults,
    pub stop: Stop,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled once shutdown begins: no new sessions.
    pub closing: CancellationToken,
    /// The API keys sessions must present from (`None`: no list; a key,
    /// when required, may be any non-empty string).
    pub keys: Option<KeyStore>,
    /// With `create_session_auth_profile: signed_token`: the checker every
    /// CreateSession's token must pass.
    pub signed: Option<Arc<SignedTokens>>,
    /// `server.max_sessions_per_api_key` (a key's own cap wins).
    pub max_sessions_per_key: Option<usize>,
    /// `server.max_sessions_per_ip`.
    pub max_sessions_per_ip: Option<usize>,
    /// `server.create_session_rps` / `create_session_burst`.
    pub rate: Option<SessionRateLimit>,
}

impl SessionService {
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    pub fn deps(&self) -> &Arc<SessionDeps> {
        &self.inner.deps
    }

    pub fn models(&self) -> &ModelRegistry {
        &self.inner.models
    }

    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.inner.deps.metrics
    }

    /// The server's session defaults (before a model's facts are added).
    pub fn defaults(&self) -> &Defaults {
        &self.inner.defaults
    }

    /// Refuses new work once shutdown has begun.
    pub fn admit(&self) -> Result<(), SttError> {
        if self.inner.closing.is_cancelled() {
            return Err(SttError::new(
                ErrorCode::Err2004,
                "server is shutting down and accepts no new sessions",
            ));
        }
        Ok(())
    }

    /// Logs a refusal once, counts it, and hands it back for the client.
    pub fn refuse(&self, session_id: &str, op: &str, e: SttError) -> SttError {
        log_error(session_id, op, &e);
        self.metrics().count_error(e.code);
        e
    }

    /// Leases the model `req` names (the default when none) and resolves
    /// its options against the server defaults and that model's facts,
    /// then checks the API key: the options keep the key's id (never the
    /// secret), and the per-key session cap to apply.
    pub fn resolve(
        &self,
        mut req: SessionRequest,
    ) -> Result<(SessionOptions, ModelLease, Option<usize>), SttError> {
        let bearer = req.bearer.take();
        let auth_ts = req.auth_ts.take();
        // Rate limit before authentication, so bad credentials are
        // throttled too: per presented key, else per client address.
        if let Some(rate) = &self.inner.rate {
            let presented = req
                .attributes
                .get("api_key")
                .or(req.attributes.get("api-key"))
                .or(bearer.as_ref());
            let bucket = match (presented, req.peer) {
                (Some(k), _) => auth::anonymous_label(k),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => "unknown-peer".to_string(),
            };
            if let Err(wait) = rate.check(&bucket) {
                return Err(SttError::new(
                    ErrorCode::Err1014,
                    format!(
                        "too many new sessions (server.create_session_rps); retry in {:.1} s",
                        wait.as_secs_f64().max(0.1)
                    ),
                ));
            }
        }
        match &self.inner.signed {
            Some(signed) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                signed
                    .verify(
                        req.session_id.trim(),
                        bearer.as_deref(),
                        auth_ts.as_deref(),
                        now,
                    )
                    .map_err(|r| {
                        let code = match r {
                            SignedRefusal::Missing => ErrorCode::Err1009,
                            _ => ErrorCode::Err1012,
                        };
                        SttError::new(code, r.message(signed.ttl_sec()))
                    })?;
            }
            // Otherwise a bearer stands for the api_key attribute.
            None => {
                if let Some(key) = bearer {
                    req.attributes.entry("api_key".into()).or_insert(key);
                }
            }
        }
        let models = &self.inner.models;
        let model = models.lease(req.attributes.get(MODEL_ID_ATTRIBUTE).map(String::as_str))?;
        let defaults = Defaults {
            multilingual: model.engine().multilingual(),
            model_id: model.id().to_string(),
            multilingual_models: models
                .list()
                .into_iter()
                .filter(|m| m.status == "ready" && m.multilingual == Some(true))
                .map(|m| m.id)
                .collect(),
            ..self.inner.defaults.clone()
        };
        let mut opts = SessionOptions::resolve(req, &defaults)?;
        // The secret is the client's; it is not echoed or kept.
        opts.attributes.remove("api_key");
        opts.attributes.remove("api-key");
        let per_key = match opts.api_key.take() {
            None => None,
            Some(secret) => {
                let key = self.check_key(&secret, model.id())?;
                opts.api_key = Some(key.id);
                opts.audio_seconds_per_minute = key.audio_seconds_per_minute;
                key.max_sessions
            }
        };
        opts.attributes
            .insert(MODEL_ID_ATTRIBUTE.to_string(), model.id().to_string());
        Ok((opts, model, per_key))
    }

    /// The id a presented key goes by and its limits (the server-wide
    /// session cap for keys without their own). With no key list, any key
    /// passes under a short hash of itself.
    fn check_key(&self, secret: &str, model: &str) -> Result<auth::KeyInfo, SttError> {
        let default_cap = self.inner.max_sessions_per_key;
        let Some(store) = &self.inner.keys else {
            return Ok(auth::KeyInfo {
                id: auth::anonymous_label(secret),
                max_sessions: default_cap,
                models: Vec::new(),
                audio_seconds_per_minute: None,
            });
        };
        match store.check(secret) {
            Ok(key) => {
                if !key.models.is_empty() && !key.models.iter().any(|m| m == model) {
                    return Err(SttError::new(
                        ErrorCode::Err1013,
                        format!(
                            "API key {} may not use model {model:?}; it may use: {}",
                            key.id,
                            key.models.join(", ")
                        ),
                    ));
                }
                Ok(auth::KeyInfo {
                    max_sessions: key.max_sessions.or(default_cap),
                    ..key
                })
            }
            Err(KeyRefusal::Unknown) => Err(SttError::new(
                ErrorCode::Err1012,
                "API key not accepted: it is not one of this server's keys",
            )),
            Err(KeyRefusal::Revoked(id)) => Err(SttError::new(
                ErrorCode::Err1012,
                format!("API key {id} was revoked"),
            )),
        }
    }

    /// CreateSession: validates, leases the model, registers the session
    /// under the one admission limit. Refusals are logged and counted.
    pub fn create(&self, req: SessionRequest) -> Result<Created, SttError> {
        let id = req.session_id.clone();
        let result = self.admit().and_then(|()| {
            let (options, model, per_key) = self.resolve(req)?;
            let token = self.inner.registry.create_limited(
                options.clone(),
                Some(model),
                per_key,
                self.inner.max_sessions_per_ip,
            )?;
            Ok(Created { options, token })
        });
        match result {
            Ok(c) => {
                tracing::info!(session_id = %id, "session created");
                Ok(c)
            }
            Err(e) => Err(self.refuse(&id, "CreateSession", e)),
        }
    }

    /// Whether `id` names a created session whose stream has not started.
    pub fn is_waiting(&self, id: &str) -> bool {
        self.inner.registry.is_waiting(id)
    }

    /// Starts the stream of a created session: claims it and spawns its
    /// task, which reads `inbound` until the stream ends.
    pub fn start<S>(&self, id: &str, inbound: S, transport: Transport) -> Result<Running, SttError>
    where
        S: Stream<Item = Result<Chunk, Disconnected>> + Send + Unpin + 'static,
    {
        let claim = self
            .admit()
            .and_then(|()| self.inner.registry.claim(id))
            .map_err(|e| self.refuse(id, "StreamingRecognize", e))?;
        Ok(self.spawn(claim, inbound, transport))
    }

    /// Transcribes a whole file as one session: admitted, counted and
    /// registered like a stream, decoded through the live scheduler. If the
    /// caller goes away (the HTTP client hung up) the decodes are cancelled.
    pub async fn transcribe_file(
        &self,
        req: SessionRequest,
        samples: Arc<[f32]>,
    ) -> Result<FileTranscript, SttError> {
        let id = req.session_id.clone();
        self.create(req)?;
        let claim = self
            .inner
            .registry
            .claim(&id)
            .map_err(|e| self.refuse(&id, "transcribe", e))?;
        let cancel = self.inner.stop.abort.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let deps = self.inner.deps.clone();
        let metrics = self.metrics().clone();
        metrics.session_started(Transport::Rest);
        let span = tracing::info_span!("session", session_id = %id, transport = "rest");
        let task = self.inner.tracker.spawn(
            async move {
                let started = std::time::Instant::now();
                let result = batch::transcribe(&deps, &claim, samples, cancel).await;
                let report = SessionReport {
                    timings: result.as_ref().map(|t| t.timings).unwrap_or_default(),
                    outcome: result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| SttError::new(e.code, e.message.clone())),
                    client_gone: false,
                };
                metrics.session_ended(&report);
                match &result {
                    Ok(t) => tracing::info!(
                        audio_sec = t.duration_sec,
                        segments = t.segments.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "file transcribed"
                    ),
                    Err(e) => log_error("", "transcribe", e),
                }
                drop(claim);
                result
            }
            .instrument(span),
        );
        task.await.unwrap_or_else(|e| {
            Err(SttError::new(ErrorCode::Err3002, "the transcription task failed").with_source(e))
        })
    }

    fn spawn<S>(&self, claim: Claim, inbound: S, transport: Transport) -> Running
    where
        S: Stream<Item = Result<Chunk, Disconnected>> + Send + Unpin + 'static,
    {
        let options = claim.options.clone();
        let (tx, rx) = mpsc::channel(UPDATE_CAPACITY);
        let (report_tx, report_rx) = oneshot::channel::<SessionReport>();
        let deps = self.inner.deps.clone();
        let stop = self.inner.stop.clone();
        let metrics = self.metrics().clone();
        let span = tracing::info_span!(
            "session",
            session_id = %claim.options.id,
            transport = transport.as_str()
        );
        metrics.session_started(transport);
        self.inner.tracker.spawn(
            async move {
                tracing::debug!("stream started");
                let report = session::run(deps, claim, inbound, tx, stop).await;
                metrics.session_ended(&report);
                match &report.outcome {
                    Ok(()) if report.client_gone => tracing::debug!("client went away"),
                    Ok(()) => tracing::info!(decodes = report.timings.count, "stream completed"),
                    Err(e) => log_error("", "StreamingRecognize", e),
                }
                let _ = report_tx.send(report);
            }
            .instrument(span),
        );
        Running {
            options,
            updates: rx,
            ended: Ended(report_rx),
        }
    }
}

/// Logs a coded error once at the level its family deserves.
fn log_error(session_id: &str, op: &str, e: &SttError) {
    let code = e.code.as_str();
    let cause = e.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
    if code.starts_with("ERR1") {
        if session_id.is_empty() {
            tracing::warn!(op, code, "{}", e.message);
        } else {
            tracing::warn!(op, code, session_id, "{}", e.message);
        }
    } else if session_id.is_empty() {
        tracing::error!(op, code, cause, "{}", e.message);
    } else {
        tracing::error!(op, code, session_id, cause, "{}", e.message);
    }
}
