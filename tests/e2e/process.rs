//! A real `stt serve` child process on ephemeral ports, for tests that
//! need the binary itself: signals, exit codes, its environment.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use stt::pb;
use stt::pb::stt_backend_client::SttBackendClient;

use crate::harness::stt;

/// A running `stt serve` child process.
pub struct ServeProcess {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl ServeProcess {
    /// Starts `stt serve` with ephemeral ports and `args`; waits for its
    /// "serving" log line (which names both addresses).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = stt()
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
            ])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("stt serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains(" serving ") {
                    let field = |name: &str| -> Option<SocketAddr> {
                        let rest = line.split(&format!("{name}=")).nth(1)?;
                        rest.split_whitespace().next()?.parse().ok()
                    };
                    if let (Some(g), Some(h)) = (field("grpc"), field("http")) {
                        tx.send((g, h)).ok();
                        sent = true;
                    }
                }
                eprintln!("[serve] {line}");
            }
        });
        let (grpc, http) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("stt serve logs its addresses");
        Self { child, grpc, http }
    }

    pub async fn client(&self) -> SttBackendClient<tonic::transport::Channel> {
        SttBackendClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("stt serve did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams `audio` at real time in 100 ms chunks without ever marking the
/// end, holding the stream open afterwards; returns the results and the
/// final status once the server ends the stream.
/// `spoken` fires once the last chunk has left.
pub async fn stream_held_open(
    mut client: SttBackendClient<tonic::transport::Channel>,
    id: &str,
    audio: Vec<f32>,
    spoken: Option<tokio::sync::oneshot::Sender<()>>,
) -> (Vec<pb::SttResult>, tonic::Status) {
    let chunks: Vec<pb::AudioChunk> = crate::server::chunks(&audio, 100)
        .into_iter()
        .map(|pcm16| pb::AudioChunk {
            pcm16,
            sample_rate: 16_000,
            is_final: false,
            session_id: id.into(),
            session_token: String::new(),
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(spoken) = spoken {
            let _ = spoken.send(());
        }
        // Never say the audio is over: only the server may end this stream.
        tx.closed().await;
    });
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", id.parse().expect("ascii"));
    let mut stream = client
        .streaming_recognize(req)
        .await
        .expect("stream opens")
        .into_inner();
    let mut out = crate::server::RawOutcome::default();
    crate::server::read_to_end(&mut stream, id, &mut out).await;
    sender.abort();
    let status = out.status.unwrap_or_else(|| tonic::Status::ok(""));
    (out.results, status)
}
