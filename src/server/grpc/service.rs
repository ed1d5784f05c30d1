//! `stt.STTBackend`: thin handlers over [`SessionService`]. CreateSession
//! converts the request; StreamingRecognize finds the session id, starts the
//! session and turns its updates into the response stream, ending with the
//! decode timing trailers. Policy lives in the service; this file only
//! translates.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::session_response;
use super::metadata;
use crate::error::{ErrorCode, SttError};
use crate::pb;
use crate::pb::stt_backend_server::SttBackend;
use crate::server::service::{SessionService, Transport};
use crate::server::session::{Chunk, Disconnected, SessionRequest};

/// The gRPC adapter over the session service.
pub struct Backend {
    pub service: SessionService,
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::SttResult, Status>> + Send>>;

#[tonic::async_trait]
impl SttBackend for Backend {
    async fn create_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let bearer = metadata::bearer(request.metadata());
        let auth_ts = request
            .metadata()
            .get(metadata::AUTH_TS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let req = request.into_inner();
        let id = req.session_id.clone();
        let mut req = SessionRequest::try_from(req)
            .map_err(|e| self.service.refuse(&id, "CreateSession", e))?;
        req.bearer = bearer;
        req.auth_ts = auth_ts;
        req.peer = peer;
        let created = self.service.create(req)?;
        Ok(Response::new(session_response(
            &created.options,
            created.token,
        )))
    }

    type StreamingRecognizeStream = ResultStream;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<pb::AudioChunk>>,
    ) -> Result<Response<ResultStream>, Status> {
        let from_metadata = metadata::session_id(request.metadata());
        let mut inbound = request.into_inner();
        let service = &self.service;
        if let Err(e) = service.admit() {
            let id = from_metadata.as_deref().unwrap_or("");
            return Err(service.refuse(id, "StreamingRecognize", e).into());
        }

        // Without metadata the first chunk names the session.
        let mut first: Option<pb::AudioChunk> = None;
        let id = match from_metadata {
            Some(id) => id,
            None => {
                let wait = service.deps().limits.session_timeout;
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
                        return Err(service.refuse("", "StreamingRecognize", e).into());
                    }
                    Ok(Err(status)) => return Err(status),
                }
            }
        };

        let chunks = futures_util::stream::iter(first.map(Ok))
            .chain(inbound)
            .map(|r| match r {
                Ok(c) => Ok(Chunk::from(c)),
                Err(status) => {
                    tracing::debug!(%status, "client stream ended abnormally");
                    Err(Disconnected)
                }
            });
        let running = service.start(&id, Box::pin(chunks), Transport::Grpc)?;
        let results = ReceiverStream::new(running.updates).map(|u| Ok(pb::SttResult::from(u)));
        let trailer = futures_util::stream::once(async move {
            let report = running.ended.report().await;
            let mut status = match report.outcome {
                Ok(()) => Status::ok(""),
                Err(e) => Status::from(e),
            };
            metadata::add_timings(status.metadata_mut(), &report.timings);
            Err(status)
        });
        Ok(Response::new(Box::pin(results.chain(trailer))))
    }
}
