//! `stt.STTBackend`: thin handlers. CreateSession converts, resolves and
//! registers; StreamingRecognize claims the session, spawns the session task
//! and turns its updates into the response stream, ending with the decode
//! timing trailers. Policy lives in `session`; this file only translates.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::convert::session_response;
use super::metadata;
use crate::error::{ErrorCode, SttError};
use crate::pb;
use crate::pb::stt_backend_server::SttBackend;
use crate::server::metrics::ServerMetrics;
use crate::server::model_registry::ModelRegistry;
use crate::server::session::{
    self, Chunk, Defaults, Disconnected, Registry, SessionDeps, SessionOptions, SessionReport,
    SessionRequest, Stop,
};

/// Results buffered between a session task and its gRPC response; a slow
/// client makes the session wait (backpressure), never drops a final.
const UPDATE_CAPACITY: usize = 32;

/// Session attribute naming the model to decode with (default model when
/// absent); echoed back with the id actually used.
pub const MODEL_ID_ATTRIBUTE: &str = "model_id";

/// Shared state of the gRPC service.
pub struct Backend {
    pub registry: Registry,
    pub models: ModelRegistry,
    pub deps: Arc<SessionDeps>,
    pub defaults: Defaults,
    pub stop: Stop,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub metrics: Arc<ServerMetrics>,
    /// Set once shutdown begins: no new sessions.
    pub closing: tokio_util::sync::CancellationToken,
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::SttResult, Status>> + Send>>;

impl Backend {
    /// Logs a refusal once, counts it, and converts it for the client.
    fn refuse(&self, session_id: &str, rpc: &str, e: SttError) -> Status {
        log_error(session_id, rpc, &e);
        self.metrics.count_error(e.code);
        e.into()
    }

    fn admit(&self) -> Result<(), SttError> {
        if self.closing.is_cancelled() {
            return Err(SttError::new(
                ErrorCode::Err2004,
                "server is shutting down and accepts no new sessions",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SttBackend for Backend {
    async fn create_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let req = request.into_inner();
        let id = req.session_id.clone();
        let result = self.admit().and_then(|()| {
            let req = SessionRequest::try_from(req)?;
            // Additive: the `model_id` attribute picks a loaded model.
            let model = self
                .models
                .lease(req.attributes.get(MODEL_ID_ATTRIBUTE).map(String::as_str))?;
            let defaults = Defaults {
                multilingual: model.engine().multilingual(),
                model_id: model.id().to_string(),
                multilingual_models: self
                    .models
                    .list()
                    .into_iter()
                    .filter(|m| m.status == "ready" && m.multilingual == Some(true))
                    .map(|m| m.id)
                    .collect(),
                ..self.defaults.clone()
            };
            let mut opts = SessionOptions::resolve(req, &defaults)?;
            opts.attributes
                .insert(MODEL_ID_ATTRIBUTE.to_string(), model.id().to_string());
            let token = self.registry.create(opts.clone(), Some(model))?;
            Ok(session_response(&opts, token))
        });
        match result {
            Ok(resp) => {
                tracing::info!(session_id = %id, "session created");
                Ok(Response::new(resp))
            }
            Err(e) => Err(self.refuse(&id, "CreateSession", e)),
        }
    }

    type StreamingRecognizeStream = ResultStream;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<pb::AudioChunk>>,
    ) -> Result<Response<ResultStream>, Status> {
        let from_metadata = metadata::session_id(request.metadata());
        let mut inbound = request.into_inner();
        if let Err(e) = self.admit() {
            return Err(self.refuse(
                from_metadata.as_deref().unwrap_or(""),
                "StreamingRecognize",
                e,
            ));
        }

        // Without metadata the first chunk names the session.
        let mut first: Option<pb::AudioChunk> = None;
        let id = match from_metadata {
            Some(id) => id,
            None => {
                let wait = self.deps.limits.session_timeout;
                match tokio::time::timeout(wait, inbound.message()).await {
                    Ok(Ok(Some(c))) if !c.session_id.is_empty() => {
                        let id = c.session_id.clone();
                        first = Some(c);
                        id
                    }
                    Ok(Ok(_)) | Err(_) => {
                        let e = SttError::new(
                            ErrorCode::Err1004,
                            "missing session_id: send it as `session-id` metadata or in the first chunk",
                        );
                        return Err(self.refuse("", "StreamingRecognize", e));
                    }
                    Ok(Err(status)) => return Err(status),
                }
            }
        };
        let claim = self
            .registry
            .claim(&id)
            .map_err(|e| self.refuse(&id, "StreamingRecognize", e))?;

        let chunks = futures_util::stream::iter(first.map(Ok))
            .chain(inbound)
            .map(|r| match r {
                Ok(c) => Ok(Chunk::from(c)),
                Err(status) => {
                    tracing::debug!(%status, "client stream ended abnormally");
                    Err(Disconnected)
                }
            });
        let (tx, rx) = mpsc::channel(UPDATE_CAPACITY);
        let (report_tx, report_rx) = oneshot::channel::<SessionReport>();
        let deps = self.deps.clone();
        let stop = self.stop.clone();
        let metrics = self.metrics.clone();
        let span = tracing::info_span!("session", session_id = %id);
        metrics.session_started();
        self.tracker.spawn(
            async move {
                tracing::debug!("stream started");
                let report = session::run(deps, claim, Box::pin(chunks), tx, stop).await;
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

        let results = ReceiverStream::new(rx).map(|u| Ok(pb::SttResult::from(u)));
        let trailer = futures_util::stream::once(async move {
            let status = match report_rx.await {
                Ok(report) => {
                    let mut status = match report.outcome {
                        Ok(()) => Status::ok(""),
                        Err(e) => Status::from(e),
                    };
                    metadata::add_timings(status.metadata_mut(), &report.timings);
                    status
                }
                Err(_) => Status::from(SttError::new(
                    ErrorCode::Err3002,
                    "the session ended unexpectedly",
                )),
            };
            Err(status)
        });
        Ok(Response::new(Box::pin(results.chain(trailer))))
    }
}

/// Logs a coded error once at the level its family deserves.
fn log_error(session_id: &str, rpc: &str, e: &SttError) {
    let code = e.code.as_str();
    let cause = e.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
    if code.starts_with("ERR1") {
        if session_id.is_empty() {
            tracing::warn!(rpc, code, "{}", e.message);
        } else {
            tracing::warn!(rpc, code, session_id, "{}", e.message);
        }
    } else if session_id.is_empty() {
        tracing::error!(rpc, code, cause, "{}", e.message);
    } else {
        tracing::error!(rpc, code, session_id, cause, "{}", e.message);
    }
}
