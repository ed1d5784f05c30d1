//! A real server in-process for tests: 127.0.0.1, port 0, the provisioned
//! tiny.en and Silero VAD. Dropping it shuts the server down and joins it.
//! Also a minimal raw gRPC client (the wire contract, nothing of ours) for
//! the error tests that need to send what no well-behaved client sends.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stt::pb;
use stt::pb::stt_backend_client::SttBackendClient;
use stt::server::metrics::ServerMetrics;
use stt::server::session::Registry;
use stt::server::{BoundServer, Settings};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::harness::tiny_en_ct2;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP control plane.
    pub http: SocketAddr,
    /// The browser/REST data plane (page, WebSocket, OpenAI API).
    pub web: Option<SocketAddr>,
    pub metrics: Arc<ServerMetrics>,
    pub registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with default settings changed by `tweak`, on the
    /// default engine's tiny.en (CTranslate2).
    pub fn start(tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::with_model(tiny_en_ct2());
        settings.server.server.host = "127.0.0.1".into();
        settings.server.server.port = 0;
        settings.server.server.metrics_port = 0;
        // `ws_port: 0` turns the data plane off; this binds it to any port.
        settings.web_any_port = true;
        settings.server.server.shutdown_grace_sec = 2.0;
        tweak(&mut settings);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = BoundServer::bind(settings).await.expect("server binds");
                ready_tx
                    .send((
                        server.grpc_addr,
                        server.http_addr,
                        server.web_addr,
                        server.metrics(),
                        server.registry(),
                    ))
                    .ok();
                server
                    .serve(async {
                        stop_rx.await.ok();
                    })
                    .await
                    .expect("server runs");
            });
        });
        let (addr, http, web, metrics, registry) = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server started");
        Self {
            addr,
            http,
            web,
            metrics,
            registry,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the shutdown SIGTERM starts, without waiting for it (drop
    /// waits).
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
    }

    /// Whether the server has finished shutting down.
    pub fn is_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// `http://` + the data-plane address.
    pub fn web_url(&self) -> String {
        format!("http://{}", self.web.expect("the data plane is on"))
    }

    pub async fn client(&self) -> SttBackendClient<Channel> {
        SttBackendClient::connect(self.url())
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// A port nobody listened on a moment ago (for listeners whose port 0
/// means off).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// CreateSession that must succeed.
pub async fn create_ok(server: &TestServer, req: pb::SessionRequest) -> pb::SessionResponse {
    server
        .client()
        .await
        .create_session(req)
        .await
        .expect("CreateSession")
        .into_inner()
}

/// CreateSession that must be refused.
pub async fn create_err(server: &TestServer, req: pb::SessionRequest) -> tonic::Status {
    server
        .client()
        .await
        .create_session(req)
        .await
        .expect_err("CreateSession should be refused")
}

/// Polls `cond` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// What a raw stream returned.
#[derive(Debug, Default)]
pub struct RawOutcome {
    pub results: Vec<pb::SttResult>,
    pub status: Option<tonic::Status>,
    pub trailers: Option<tonic::metadata::MetadataMap>,
}

impl RawOutcome {
    pub fn finals(&self) -> Vec<&pb::SttResult> {
        self.results.iter().filter(|r| r.is_final).collect()
    }

    pub fn partials(&self) -> Vec<&pb::SttResult> {
        self.results.iter().filter(|r| !r.is_final).collect()
    }

    pub fn final_text(&self) -> String {
        self.finals()
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The ERR code at the start of the status message, if the stream failed.
    pub fn code(&self) -> Option<String> {
        self.status
            .as_ref()
            .map(|s| s.message().chars().take(7).collect())
    }
}

pub fn session_request(id: &str) -> pb::SessionRequest {
    pb::SessionRequest {
        session_id: id.into(),
        ..Default::default()
    }
}

/// Splits samples into PCM16 chunks of `chunk_ms`.
pub fn chunks(samples: &[f32], chunk_ms: u64) -> Vec<Vec<u8>> {
    let n = (16_000 * chunk_ms / 1000) as usize;
    samples
        .chunks(n.max(1))
        .map(stt::audio::pcm::f32_to_pcm16)
        .collect()
}

/// Streams pre-made chunks with `session-id` metadata, `pace` apart (zero =
/// as fast as possible), the last one `is_final` when `finish`; collects
/// everything the server sends back.
pub async fn stream_raw(
    client: &mut SttBackendClient<Channel>,
    id: &str,
    token: &str,
    audio: Vec<pb::AudioChunk>,
    pace: Duration,
) -> RawOutcome {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        for c in audio {
            if tx.send(c).await.is_err() {
                return;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
    });
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", id.parse().expect("ascii id"));
    let _ = token;
    let mut out = RawOutcome::default();
    let mut stream = match client.streaming_recognize(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            out.status = Some(status);
            return out;
        }
    };
    read_to_end(&mut stream, id, &mut out).await;
    out
}

/// Reads a stream to its end into `out`: every result, then the status
/// and trailers. Fails the test if the stream runs past [`STREAM_LIMIT`].
pub async fn read_to_end(
    stream: &mut tonic::Streaming<pb::SttResult>,
    id: &str,
    out: &mut RawOutcome,
) {
    let collect = async {
        loop {
            match stream.message().await {
                Ok(Some(r)) => out.results.push(r),
                Ok(None) => {
                    out.trailers = stream.trailers().await.ok().flatten();
                    break;
                }
                Err(status) => {
                    out.trailers = Some(status.metadata().clone());
                    out.status = Some(status);
                    break;
                }
            }
        }
    };
    tokio::time::timeout(STREAM_LIMIT, collect)
        .await
        .unwrap_or_else(|_| panic!("stream {id} did not end within {STREAM_LIMIT:?}"));
}

/// The longest a test stream may run before the test fails.
pub const STREAM_LIMIT: Duration = Duration::from_secs(180);

/// PCM chunks for `samples` with the session's id and token, last one final.
pub fn audio_chunks(samples: &[f32], chunk_ms: u64, id: &str, token: &str) -> Vec<pb::AudioChunk> {
    let pcm = chunks(samples, chunk_ms);
    let n = pcm.len();
    pcm.into_iter()
        .enumerate()
        .map(|(i, pcm16)| pb::AudioChunk {
            pcm16,
            sample_rate: 16_000,
            is_final: i + 1 == n,
            session_id: id.into(),
            session_token: token.into(),
        })
        .collect()
}
