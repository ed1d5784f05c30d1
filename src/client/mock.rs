//! Test-only: a scripted `STTBackend` on 127.0.0.1:0 that checks what the
//! client sends (metadata, ids, token, rate, `is_final`) and answers with
//! canned partials, one final and decode-timing trailers, plus the tests that
//! stream against it. It exercises the client's wire behaviour without
//! whisper or VAD; it is not a server.

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::{stream_audio, stream_audio_with, Sending, SessionSettings, StreamOptions};
    use crate::error::ErrorCode;

    fn settings(server: &str, id: &str) -> SessionSettings {
        let mut s = SessionSettings::new(server, "test").expect("valid address");
        s.session_id = id.into();
        s
    }

    #[tokio::test]
    async fn streams_against_the_mock() {
        let server = start().await;
        let mut s = settings(&server, "ok-1");
        s.require_token = true;
        // 1.05 s: ten full 100 ms chunks and a short tail.
        let opts =
            StreamOptions::new(s, vec![0.0f32; 16_800]).sending(Sending::Burst { chunk_ms: 100 });
        let mut seen = 0;
        let o = stream_audio_with(opts, &mut |_, _| seen += 1)
            .await
            .expect("mock accepts the stream");
        assert_eq!(seen, o.results.len());
        assert_eq!(o.session.token, "tok-ok-1");
        // Partials after chunks 3, 6 and 9; the final after all 11.
        let texts: Vec<&str> = o.results.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            ["partial 3", "partial 6", "partial 9", "final 11 chunks"]
        );
        assert_eq!(o.finals().count(), 1);
        assert!((o.results[3].end_sec - 1.05).abs() < 1e-9);
        assert!((o.sent_sec - 1.05).abs() < 1e-9 && (o.audio_sec - 1.05).abs() < 1e-9);
        assert_eq!(o.final_latencies().len(), 1);
        assert!(o.first_partial_sec.is_some());
        assert_eq!(o.trailers.inference_sec, Some(0.125));
        assert_eq!(o.trailers.total_sec, Some(0.5));
        assert_eq!(o.trailers.count, Some(2));
    }

    #[tokio::test]
    async fn realtime_stream_takes_real_time() {
        let server = start().await;
        let opts = StreamOptions::new(settings(&server, "rt-1"), vec![0.0f32; 3_200])
            .sending(Sending::Realtime { chunk_ms: 50 });
        let started = std::time::Instant::now();
        let o = stream_audio(opts).await.expect("mock accepts the stream");
        // Four 50 ms chunks: the last leaves at 150 ms.
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(o.finals().count(), 1);
        assert!(o.rtf().is_some());
    }

    #[tokio::test]
    async fn batch_sends_one_final_chunk() {
        let server = start().await;
        let opts = StreamOptions::new(settings(&server, "b-1"), vec![0.0f32; 48_000])
            .sending(Sending::Whole);
        let o = stream_audio(opts).await.expect("mock accepts the stream");
        assert_eq!(o.transcript(), "final 1 chunks");
        assert!((o.results[0].end_sec - 3.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn server_ending_early_stops_the_sender() {
        let server = start().await;
        let id = format!("{}1", AUTO_END_PREFIX);
        let opts = StreamOptions::new(settings(&server, &id), vec![0.0f32; 160_000])
            .sending(Sending::Realtime { chunk_ms: 100 });
        let o = tokio::time::timeout(Duration::from_secs(5), stream_audio(opts))
            .await
            .expect("returns once the server ends the stream, not after 10 s of audio")
            .expect("ok");
        assert_eq!(o.transcript(), "final 2 chunks");
        assert!(o.sent_sec < o.audio_sec);
    }

    #[tokio::test]
    async fn refused_stream_keeps_the_code() {
        let server = start().await;
        let id = format!("{}1", REFUSE_PREFIX);
        let opts = StreamOptions::new(settings(&server, &id), vec![0.0f32; 1_600]);
        let err = stream_audio(opts).await.expect_err("mock refuses");
        assert_eq!(err.code(), Some(ErrorCode::Err1004));
        assert!(
            err.to_string()
                .starts_with("server refused the stream: ERR1004: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stop_flushes_a_final() {
        let server = start().await;
        let opts = StreamOptions::new(settings(&server, "stop-1"), vec![0.0f32; 160_000])
            .sending(Sending::Realtime { chunk_ms: 100 });
        let stop = opts.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stop.cancel();
        });
        let o = stream_audio(opts).await.expect("ok");
        // Chunks at 0, 100, 200 ms, then the empty final.
        assert_eq!(o.transcript(), "final 4 chunks");
        assert!((o.sent_sec - 0.3).abs() < 1e-9);
    }
}
