//! The gRPC clients (`stt file`, `stt batch`, `stt mic`) and the library
//! calls behind them: connect, `CreateSession`, then one `StreamingRecognize` whose
//! results and timings come back as a [`StreamOutcome`]. The library calls
//! never print, so tests and the bench can drive a server through them;
//! [`render`] is where output happens.

pub mod batch;
pub mod file;
pub mod mic;
#[cfg(test)]
mod mock;
pub mod render;
pub mod session;
pub mod stream;
pub mod timing;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::audio::{decode::read_audio, AudioError};
use crate::error::ErrorCode;
use crate::pb;
use crate::pb::stt_backend_client::SttBackendClient;
use render::{Format, Renderer};

pub use session::{ServerAddr, SessionSettings};
pub use stream::{ChunkIds, Sending, Source};
pub use timing::{DecodeTimings, LatencySummary, ResultTiming};

/// How long to wait for the TCP + HTTP/2 handshake before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to a server. The server's `ERRxxxx` code stays
/// at the front of its message, so people and tests can see it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {cause} — is `stt serve` running?")]
    Connect { addr: String, cause: String },
    #[error("server refused the session: {}", status_text(.0))]
    Session(tonic::Status),
    #[error("{}: {}", stream_wording(*.results_before), status_text(.status))]
    Stream {
        status: tonic::Status,
        /// Results received before the error (0: refused outright).
        results_before: usize,
    },
    #[error("session id `{0}` cannot travel as gRPC metadata (visible ASCII only)")]
    SessionId(String),
}

impl ClientError {
    /// The gRPC status, when the server sent one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Session(status) | Self::Stream { status, .. } => Some(status),
            Self::Connect { .. } | Self::SessionId(_) => None,
        }
    }

    /// The server's error code, read from the front of its status message.
    pub fn code(&self) -> Option<ErrorCode> {
        self.status().and_then(|s| ErrorCode::parse(s.message()))
    }

    /// What the user can do about it, where we know.
    pub fn hint(&self) -> Option<&'static str> {
        if let Self::Connect { .. } = self {
            return Some(
                "start one with `stt serve`, or point --server (or `server:` in the -c YAML) at it",
            );
        }
        Some(match self.code()? {
            ErrorCode::Err1002 => "another stream is using this session id; pass a different --session-id, or none to generate one",
            ErrorCode::Err1003 => "--vad-threshold is a probability between 0 and 1",
            ErrorCode::Err1005 => "the server issued a different session token; do not reuse a session id across runs",
            ErrorCode::Err1006 => "the server ends sessions that send no audio for `server.session_timeout_sec`",
            ErrorCode::Err1007 => "the server caps one chunk at `server.max_chunk_ms`: use a smaller --chunk-ms, or `stt file --no-realtime` instead of `stt batch` for long files",
            ErrorCode::Err1008 => "the server is at capacity (`server.max_sessions` / the VAD pool); retry later",
            ErrorCode::Err1009 => "this server requires an API key (pass --api-key <key>) or a signed session token (pass --signed-token-secret <secret>)",
            ErrorCode::Err1012 => "the server does not know this API key, or it was revoked: ask its operator for a key (`stt keys add`)",
            ErrorCode::Err1014 => "the server limits how fast sessions may be opened (`server.create_session_rps`); wait a moment and retry",
            ErrorCode::Err1015 => "the server caps the audio one session may send (`server.max_audio_seconds_per_session`); open a new session to go on",
            ErrorCode::Err1016 => "audio was sent faster than the server allows (`server.max_audio_bytes_per_sec` or the key's quota); send at real time (drop --no-realtime)",
            ErrorCode::Err4008 => "the server does not accept connections from this address (its allowlist); ask its operator",
            ErrorCode::Err1013 => "this API key may not use that model: pick one the key allows, or ask for a key that allows it",
            ErrorCode::Err1010 => "check --language, --task and --decode-profile against what the server's model supports",
            ErrorCode::Err2001 | ErrorCode::Err2002 => "the server's decoders are overloaded or failing; see its logs and /health",
            _ => return None,
        })
    }
}

fn status_text(s: &tonic::Status) -> String {
    if ErrorCode::parse(s.message()).is_some() {
        s.message().to_string()
    } else if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

fn stream_wording(results_before: usize) -> String {
    if results_before == 0 {
        "server refused the stream".into()
    } else {
        format!("stream failed after {results_before} result(s)")
    }
}

/// The hint of the first client or device error in an error chain, for the binary.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<ClientError>()
                .and_then(ClientError::hint)
                .or_else(|| e.downcast_ref::<mic::MicError>().map(mic::MicError::hint))
        })
        .map(str::to_string)
}

/// Opens a channel to `server`; fails fast (5 s) when nothing answers.
pub async fn connect(server: &ServerAddr) -> Result<SttBackendClient<Channel>, ClientError> {
    let fail = |cause: String| ClientError::Connect {
        addr: server.shown.clone(),
        cause,
    };
    let mut endpoint = Endpoint::from_shared(server.uri.clone())
        .map_err(|e| fail(root_cause(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = &server.tls {
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        let cfg = tls.grpc(&host).map_err(|e| fail(e.0))?;
        endpoint = endpoint.tls_config(cfg).map_err(|e| fail(root_cause(&e)))?;
    }
    let channel = endpoint.connect().await.map_err(|e| fail(root_cause(&e)))?;
    Ok(SttBackendClient::new(channel))
}

/// The innermost cause: "transport error" alone tells nobody anything.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `CreateSession`: the server's resolved settings and token.
pub async fn create_session(
    client: &mut SttBackendClient<Channel>,
    settings: &SessionSettings,
) -> Result<pb::SessionResponse, ClientError> {
    let mut request = tonic::Request::new(settings.request());
    if let Some(secret) = &settings.signed_token_secret {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let sig = crate::auth::signed::sign(secret, &settings.session_id, now);
        let md = request.metadata_mut();
        if let (Ok(auth), Ok(ts)) = (format!("Bearer {sig}").parse(), now.to_string().parse()) {
            md.insert("authorization", auth);
            md.insert("x-stt-auth-ts", ts);
        }
    }
    client
        .create_session(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(ClientError::Session)
}

/// One stream to run: session settings, 16 kHz mono audio, how to send it.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub session: SessionSettings,
    /// 16 kHz mono samples (shared, so the bench can reuse one clip).
    pub audio: Arc<[f32]>,
    pub sending: Sending,
    /// Cancel to stop early: an empty `is_final` chunk flushes the server.
    pub stop: CancellationToken,
}

impl StreamOptions {
    /// Real-time 100 ms chunks, never stopped.
    pub fn new(session: SessionSettings, audio: impl Into<Arc<[f32]>>) -> Self {
        Self {
            session,
            audio: audio.into(),
            sending: Sending::Realtime { chunk_ms: 100 },
            stop: CancellationToken::new(),
        }
    }

    /// Reads an audio file (WAV, FLAC, MP3, … at any rate, channels
    /// averaged) as the audio.
    pub fn from_file(session: SessionSettings, path: &Path) -> Result<Self, AudioError> {
        Ok(Self::new(session, read_audio(path)?.samples))
    }

    /// Sets how chunks are cut and paced.
    pub fn sending(mut self, sending: Sending) -> Self {
        self.sending = sending;
        self
    }
}

/// Everything one stream produced.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    pub session_id: String,
    /// The server's resolved session settings.
    pub session: pb::SessionResponse,
    /// Every result, partials included, in arrival order.
    pub results: Vec<pb::SttResult>,
    /// `timings[i]` belongs to `results[i]`.
    pub timings: Vec<ResultTiming>,
    /// The server's decode-timing trailers.
    pub trailers: DecodeTimings,
    /// Seconds of audio in the clip.
    pub audio_sec: f64,
    /// Seconds of audio actually sent (less after a stop or an auto-end).
    pub sent_sec: f64,
    /// Seconds from the first chunk leaving to the server ending the stream.
    pub wall_sec: f64,
    /// Seconds from the first chunk leaving to the first partial arriving.
    pub first_partial_sec: Option<f64>,
}

impl StreamOutcome {
    /// The final results, in order.
    pub fn finals(&self) -> impl Iterator<Item = &pb::SttResult> {
        self.results.iter().filter(|r| r.is_final)
    }

    /// The finals' texts joined with spaces.
    pub fn transcript(&self) -> String {
        let parts: Vec<&str> = self
            .finals()
            .map(|r| r.text.trim())
            .filter(|t| !t.is_empty())
            .collect();
        parts.join(" ")
    }

    /// Client-side latency of each final (see [`ResultTiming::latency_sec`]).
    pub fn final_latencies(&self) -> Vec<f64> {
        self.results
            .iter()
            .zip(&self.timings)
            .filter(|(r, _)| r.is_final)
            .filter_map(|(_, t)| t.latency_sec)
            .collect()
    }

    /// Wall time over audio sent (≈1 at real-time pace; lower is faster).
    pub fn rtf(&self) -> Option<f64> {
        (self.sent_sec > 0.0).then(|| self.wall_sec / self.sent_sec)
    }
}

/// Connects, opens the session and streams the audio; prints nothing.
pub async fn stream_audio(opts: StreamOptions) -> Result<StreamOutcome, ClientError> {
    stream_audio_with(opts, &mut |_, _| {}).await
}

/// [`stream_audio`], showing each result to `on_result` as it arrives.
pub async fn stream_audio_with(
    opts: StreamOptions,
    on_result: &mut (dyn FnMut(&pb::SttResult, &ResultTiming) + Send),
) -> Result<StreamOutcome, ClientError> {
    let source = Source::Clip {
        audio: opts.audio,
        sending: opts.sending,
    };
    stream_source_with(&opts.session, source, opts.stop, on_result).await
}

/// Connects, opens the session and streams `source` (a clip or live audio),
/// showing each result to `on_result` as it arrives. Cancel `stop` to end
/// early: the server flushes its final and the call returns normally.
pub async fn stream_source_with(
    session: &SessionSettings,
    source: Source,
    stop: CancellationToken,
    on_result: &mut (dyn FnMut(&pb::SttResult, &ResultTiming) + Send),
) -> Result<StreamOutcome, ClientError> {
    let mut client = connect(&session.server).await?;
    let response = create_session(&mut client, session).await?;
    let ids = ChunkIds {
        session_id: session.session_id.clone(),
        session_token: response.token.clone(),
    };
    stream::run(&mut client, response, ids, source, stop, on_result).await
}

/// What `stt file` and `stt batch` share: read the WAV, stream it while
/// rendering results to stdout, then print the report if asked.
pub(crate) async fn run_command(
    session: SessionSettings,
    audio: &Path,
    sending: Sending,
    format: Format,
    metrics: bool,
) -> anyhow::Result<StreamOutcome> {
    // Flattened to its message: `AudioError` repeats its source in its own
    // text, and `{:#}` would print the cause twice.
    let opts = StreamOptions::from_file(session, audio)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .sending(sending);
    stop_on_ctrl_c(opts.stop.clone());
    let source = Source::Clip {
        audio: opts.audio,
        sending: opts.sending,
    };
    render_stream(&opts.session, source, opts.stop, format, metrics).await
}

/// Streams `source` while rendering results to stdout, then prints the
/// report if asked: the output half every command-line client shares.
pub(crate) async fn render_stream(
    session: &SessionSettings,
    source: Source,
    stop: CancellationToken,
    format: Format,
    metrics: bool,
) -> anyhow::Result<StreamOutcome> {
    let mut renderer = Renderer::stdout(format);
    let mut show = |r: &pb::SttResult, t: &ResultTiming| renderer.result(r, t);
    let outcome = stream_source_with(session, source, stop, &mut show).await;
    renderer.finish();
    let outcome = outcome?;
    if metrics {
        renderer.report(&outcome);
    }
    if let Some(e) = renderer.into_error() {
        return Err(anyhow::Error::new(e).context("writing results to stdout"));
    }
    Ok(outcome)
}

/// Cancels `stop` on the first Ctrl-C (so the stream flushes its final) and
/// exits on the second. The task ends with the runtime.
pub(crate) fn stop_on_ctrl_c(stop: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return; // no signal handling here; Ctrl-C keeps its default
        }
        eprintln!("stopping: flushing the final result (Ctrl-C again to abort)");
        stop.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> tonic::Status {
        tonic::Status::new(code, msg)
    }

    #[test]
    fn errors_keep_the_server_code_visible() {
        let e = ClientError::Stream {
            status: status(tonic::Code::Unauthenticated, "ERR1004: unknown session `x`"),
            results_before: 0,
        };
        assert_eq!(
            e.to_string(),
            "server refused the stream: ERR1004: unknown session `x`"
        );
        assert_eq!(e.code(), Some(ErrorCode::Err1004));
        let e = ClientError::Stream {
            status: status(tonic::Code::Unavailable, "connection reset"),
            results_before: 3,
        };
        assert_eq!(
            e.to_string(),
            "stream failed after 3 result(s): Unavailable: connection reset"
        );
        assert_eq!(e.code(), None);
        let e = ClientError::Session(status(
            tonic::Code::Unauthenticated,
            "ERR1009: api key required",
        ));
        assert_eq!(
            e.to_string(),
            "server refused the session: ERR1009: api key required"
        );
        assert!(e.hint().is_some_and(|h| h.contains("--api-key")));
    }

    #[test]
    fn connect_error_says_what_to_do() {
        let e = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            cause: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to 127.0.0.1:1: Connection refused (os error 111) — is `stt serve` running?"
        );
        let any = anyhow::Error::new(e).context("streaming a.wav");
        assert!(hint_for(&any).is_some_and(|h| h.contains("stt serve")));
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_fast_and_clearly() {
        // Port 1 on loopback: nothing listens there.
        let addr = ServerAddr::parse("127.0.0.1:1").expect("valid");
        let err = connect(&addr).await.expect_err("nothing listens");
        let msg = err.to_string();
        assert!(msg.starts_with("cannot connect to 127.0.0.1:1: "), "{msg}");
        assert!(msg.ends_with("is `stt serve` running?"), "{msg}");
    }

    #[test]
    fn outcome_helpers() {
        let r = |text: &str, is_final: bool, end_sec: f64| pb::SttResult {
            text: text.into(),
            is_final,
            end_sec,
            ..Default::default()
        };
        let t = |latency: f64| ResultTiming {
            received_sec: 1.0,
            latency_sec: Some(latency),
        };
        let o = StreamOutcome {
            session_id: "s".into(),
            session: pb::SessionResponse::default(),
            results: vec![
                r("hel", false, 0.5),
                r(" hello ", true, 1.0),
                r("world", true, 2.0),
            ],
            timings: vec![t(0.1), t(0.4), t(0.6)],
            trailers: DecodeTimings::default(),
            audio_sec: 2.0,
            sent_sec: 2.0,
            wall_sec: 2.5,
            first_partial_sec: Some(0.3),
        };
        assert_eq!(o.transcript(), "hello world");
        assert_eq!(o.final_latencies(), vec![0.4, 0.6]);
        assert_eq!(o.rtf(), Some(1.25));
        assert_eq!(o.finals().count(), 2);
    }
}
