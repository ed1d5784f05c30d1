//! Test-only: a scripted `STTBackend` on 127.0.0.1:0 that checks what the
//! client sends (metadata, ids, token, rate, `is_final`) and answers with
//! canned partials, one final and decode-timing trailers. It exercises the
//! client's wire behaviour without whisper or VAD; it is not a server.

use std::pin::Pin;

use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::timing::{TRAILER_COUNT, TRAILER_INFERENCE, TRAILER_TOTAL};
use crate::pb;
use crate::pb::stt_backend_server::{SttBackend, SttBackendServer};

/// A partial every this many chunks.
const PARTIAL_EVERY: usize = 3;
/// Session ids starting with this end the stream after this many chunks,
/// like VAD auto-end.
pub const AUTO_END_PREFIX: &str = "auto-";
const AUTO_END_AFTER: usize = 2;
/// Session ids starting with this are refused with ERR1004.
pub const REFUSE_PREFIX: &str = "refuse-";

struct Mock;

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::SttResult, Status>> + Send>>;

#[tonic::async_trait]
impl SttBackend for Mock {
    async fn create_session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::SessionResponse>, Status> {
        let r = request.into_inner();
        if r.session_id.is_empty() {
            return Err(Status::invalid_argument("ERR1001: missing session_id"));
        }
        Ok(Response::new(pb::SessionResponse {
            token: if r.require_token {
                format!("tok-{}", r.session_id)
            } else {
                String::new()
            },
            token_required: r.require_token,
            attributes: r.attributes,
            vad_mode: r.vad_mode,
            ..Default::default()
        }))
    }

    type StreamingRecognizeStream = ResultStream;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<pb::AudioChunk>>,
    ) -> Result<Response<ResultStream>, Status> {
        let id = request
            .metadata()
            .get("session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Status::unauthenticated("ERR1004: missing session-id metadata"))?;
        if id.starts_with(REFUSE_PREFIX) {
            return Err(Status::unauthenticated(format!(
                "ERR1004: unknown session `{id}`"
            )));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut samples = 0usize;
            let mut chunks = 0usize;
            let end = |samples: usize| samples as f64 / 16_000.0;
            loop {
                let chunk = match inbound.message().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break, // half-closed without is_final: still flush
                    Err(_) => return,
                };
                let wrong = if chunk.session_id != id {
                    Some("ERR1004: chunk session_id differs from metadata")
                } else if chunk.sample_rate != 16_000 {
                    Some("ERR1011: sample_rate")
                } else if chunk.pcm16.len() % 2 != 0 {
                    Some("ERR1011: odd-length pcm16")
                } else {
                    None
                };
                if let Some(msg) = wrong {
                    let _ = tx.send(Err(Status::invalid_argument(msg))).await;
                    return;
                }
                chunks += 1;
                samples += chunk.pcm16.len() / 2;
                if id.starts_with(AUTO_END_PREFIX) && chunks == AUTO_END_AFTER {
                    break;
                }
                if chunk.is_final {
                    break;
                }
                if chunks % PARTIAL_EVERY == 0 {
                    let partial = pb::SttResult {
                        text: format!("partial {chunks}"),
                        end_sec: end(samples),
                        ..Default::default()
                    };
                    if tx.send(Ok(partial)).await.is_err() {
                        return;
                    }
                }
            }
            let last = pb::SttResult {
                text: format!("final {chunks} chunks"),
                is_final: true,
                end_sec: end(samples),
                ..Default::default()
            };
            let _ = tx.send(Ok(last)).await;
            // An OK status with metadata: tonic puts it in the trailers.
            let mut md = MetadataMap::new();
            md.insert(TRAILER_INFERENCE, "0.125".parse().expect("ascii"));
            md.insert(TRAILER_TOTAL, "0.5".parse().expect("ascii"));
            md.insert(TRAILER_COUNT, "2".parse().expect("ascii"));
            let _ = tx
                .send(Err(Status::with_metadata(tonic::Code::Ok, "", md)))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Starts the mock; returns its `host:port`. It lives until the test's
/// runtime ends.
pub async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SttBackendServer::new(Mock))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr.to_string()
}
