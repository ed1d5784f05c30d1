//! `GET /ws/stream`: the WebSocket adapter over the session service, in the
//! original's bridge protocol. The first text frame is
//! `{"type":"start","data":{…}}`; binary frames carry PCM16; an optional
//! `{"type":"end"}` ends the audio. The server answers with a `session`
//! frame, `result` frames, an `error` frame when the session fails, and a
//! `done` frame with the decode-timing trailers, then closes.
//!
//! Backpressure: the session reads audio from the socket only as fast as it
//! processes it, and its results wait in a bounded channel for the socket to
//! take them, so a client that stops reading stalls its own session instead
//! of growing the server's memory.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::WebState;
use crate::engine::Task;
use crate::error::{ErrorCode, SttError};
use crate::server::service::{Running, Transport, MODEL_ID_ATTRIBUTE};
use crate::server::session::{
    Chunk, Disconnected, Profile, SessionOptions, SessionRequest, Update, VadMode,
};

/// Close codes of the protocol.
pub const CLOSE_NORMAL: u16 = 1000;
/// The start frame (or a frame's data) was not acceptable.
pub const CLOSE_BAD_START: u16 = 1003;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_INTERNAL: u16 = 1011;
/// Authentication: API key or session token.
pub const CLOSE_AUTH: u16 = 4401;
/// Refused: capacity, shutdown, a component unavailable.
pub const CLOSE_REFUSED: u16 = 4403;

/// Frames a client sends as text.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Start {
        #[serde(default)]
        data: Box<StartData>,
    },
    End,
}

/// The session a client asks for; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StartData {
    /// Names a session created beforehand with gRPC CreateSession, or the
    /// id to create; a fresh one is made up when absent.
    session_id: Option<String>,
    /// The token of a session created with `require_token`.
    session_token: Option<String>,
    /// Hz of the binary frames; the server's `sample_rate` when absent.
    sample_rate: Option<u32>,
    attributes: BTreeMap<String, String>,
    /// `continue`, `auto` or `auto_end`.
    vad_mode: Option<String>,
    vad_silence: Option<f64>,
    vad_threshold: Option<f64>,
    vad_threshold_override: Option<f64>,
    require_token: bool,
    language_code: Option<String>,
    /// `transcribe` or `translate`.
    task: Option<String>,
    /// `realtime` or `accurate`.
    decode_profile: Option<String>,
    /// Shorthand for the `model_id` attribute.
    model_id: Option<String>,
    /// An API key or a signed token's signature (as `Authorization:
    /// Bearer`, which browsers cannot set on a WebSocket).
    auth_token: Option<String>,
    /// A signed token's timestamp.
    auth_ts: Option<String>,
}

impl StartData {
    /// The CreateSession request this start frame stands for.
    pub(crate) fn into_request(self, session_id: String) -> Result<SessionRequest, SttError> {
        let vad_mode = match self.vad_mode.as_deref() {
            None | Some("") | Some("continue") => VadMode::Continue,
            Some("auto" | "auto_end") => VadMode::AutoEnd,
            Some(other) => return Err(bad_value("vad_mode", other, "continue, auto, auto_end")),
        };
        let task = match self.task.as_deref() {
            None | Some("") => None,
            Some(t) => {
                Some(Task::parse(t).ok_or_else(|| bad_value("task", t, "transcribe, translate"))?)
            }
        };
        let profile = match self.decode_profile.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                Profile::parse(p)
                    .ok_or_else(|| bad_value("decode_profile", p, "realtime, accurate"))?,
            ),
        };
        let mut attributes = self.attributes;
        if let Some(model) = self.model_id.filter(|m| !m.is_empty()) {
            attributes.insert(MODEL_ID_ATTRIBUTE.to_string(), model);
        }
        Ok(SessionRequest {
            session_id,
            attributes,
            vad_mode: Some(vad_mode),
            vad_silence: self.vad_silence.unwrap_or(0.0),
            vad_threshold: self.vad_threshold.unwrap_or(0.0),
            vad_threshold_override: self.vad_threshold_override,
            require_token: self.require_token,
            language: self.language_code.unwrap_or_default(),
            task,
            profile,
            bearer: self.auth_token,
            auth_ts: self.auth_ts,
            peer: None,
        })
    }
}

fn bad_value(field: &str, value: &str, allowed: &str) -> SttError {
    SttError::new(
        ErrorCode::Err1010,
        format!("start frame: {field} {value:?} is not one of {allowed}"),
    )
}

/// A `result` frame.
#[derive(Debug, Serialize)]
struct ResultFrame<'a> {
    r#type: &'static str,
    is_final: bool,
    text: &'a str,
    committed_text: &'a str,
    unstable_text: &'a str,
    start_sec: f64,
    end_sec: f64,
    language_code: &'a str,
    language: &'a str,
    probability: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<Vec<serde_json::Value>>,
}

impl<'a> From<&'a Update> for ResultFrame<'a> {
    fn from(u: &'a Update) -> Self {
        Self {
            r#type: "result",
            is_final: u.is_final,
            text: &u.text,
            committed_text: &u.committed_text,
            unstable_text: &u.unstable_text,
            start_sec: u.start_sec,
            end_sec: u.end_sec,
            language_code: &u.language_code,
            language: &u.language,
            probability: u.probability,
            words: u.words.as_ref().map(|words| {
                words
                    .iter()
                    .map(|w| {
                        json!({
                            "word": w.word,
                            "start_sec": w.start_sec,
                            "end_sec": w.end_sec,
                            "probability": w.probability,
                        })
                    })
                    .collect()
            }),
        }
    }
}

/// The close code a coded refusal or failure ends the socket with.
pub fn close_code(code: ErrorCode) -> u16 {
    match code.http_status() {
        401 | 403 => CLOSE_AUTH,
        429 | 503 => CLOSE_REFUSED,
        400 | 409 => CLOSE_BAD_START,
        408 => CLOSE_POLICY,
        _ => CLOSE_INTERNAL,
    }
}

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(web): State<WebState>,
    axum::Extension(crate::server::access::ClientIp(peer)): axum::Extension<
        crate::server::access::ClientIp,
    >,
    headers: axum::http::HeaderMap,
) -> Response {
    // Browsers cannot set headers on a WebSocket; other clients may send
    // the key as `Authorization: Bearer` instead of the api_key attribute.
    let bearer = super::openai::bearer(&headers);
    // A binary frame beyond the chunk limit is refused by the session with
    // ERR1007; frames far beyond it are not even buffered.
    let max = web.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(socket, web, bearer, peer))
}

type Sink = SplitSink<WebSocket, Message>;

async fn serve(socket: WebSocket, web: WebState, bearer: Option<String>, peer: std::net::IpAddr) {
    let (mut sink, mut stream) = socket.split();
    let wait = web.service.deps().limits.session_timeout;
    let start = match tokio::time::timeout(wait, first_text(&mut stream)).await {
        Ok(Some(text)) => parse_start(&text),
        Ok(None) => return,
        Err(_) => Err(SttError::new(
            ErrorCode::Err1006,
            format!(
                "no start frame within {:.0} s: send {{\"type\":\"start\",\"data\":{{…}}}} first",
                wait.as_secs_f64()
            ),
        )),
    };
    let (frames, mut reader) = spawn_reader(stream);
    let start = start.map(|mut data| {
        if data.auth_token.is_none() {
            data.auth_token = bearer;
        }
        data
    });
    let opened = start
        .map_err(|e| web.service.refuse("", "WebSocket start", e))
        .and_then(|data| open(&web, data, frames, peer));
    let reading = match opened {
        Ok((running, token)) => stream_results(&mut sink, running, token, wait).await,
        Err(e) => {
            fail(&mut sink, &e).await;
            true
        }
    };
    // The reader ends when the client answers our close; one that never
    // does (or a client gone) must not hold the task.
    if !reading || tokio::time::timeout(CLOSE_WAIT, &mut reader).await.is_err() {
        reader.abort();
    }
}

/// Forwards the session's results, then its end: an error frame if it
/// failed, the `done` frame, the close. False once the client is gone, or
/// has not taken a frame for `wait` (the session timeout): the session
/// ends such a reader with ERR1006, and its socket must not outlive it.
async fn stream_results(
    sink: &mut Sink,
    running: Running,
    token: Option<String>,
    wait: Duration,
) -> bool {
    let Running {
        options,
        mut updates,
        ended,
    } = running;
    let mut reading = send_json(sink, &session_frame(&options, token), wait).await;
    while reading {
        let Some(update) = updates.recv().await else {
            break;
        };
        reading = send_json(sink, &ResultFrame::from(&update), wait).await;
    }
    // Dropping the receiver tells the session its client is gone.
    drop(updates);
    let report = ended.report().await;
    if !reading {
        return false;
    }
    let trailing: BTreeMap<&str, String> = report.timings.trailers().into_iter().collect();
    let close = match &report.outcome {
        Ok(()) => CLOSE_NORMAL,
        Err(e) => {
            send_json(sink, &error_frame(e), CLOSE_WAIT).await;
            close_code(e.code)
        }
    };
    send_json(
        sink,
        &json!({"type": "done", "trailing": trailing}),
        CLOSE_WAIT,
    )
    .await;
    close_with(sink, close, "").await;
    true
}

/// How long a client gets to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The first text frame; `None` when the client left or sent something
/// else first.
async fn first_text(stream: &mut SplitStream<WebSocket>) -> Option<String> {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Binary(_)) => return Some(String::new()),
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
    None
}

pub(crate) fn parse_start(text: &str) -> Result<StartData, SttError> {
    let bad = |why: String| {
        SttError::new(
            ErrorCode::Err1010,
            format!("bad start frame ({why}): the first frame must be text {{\"type\":\"start\",\"data\":{{…}}}}"),
        )
    };
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Start { data }) => Ok(*data),
        Ok(ClientFrame::End) => Err(bad("an end frame came before start".into())),
        Err(e) if text.is_empty() => Err(bad(format!("audio before the start frame: {e}"))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Creates (or claims) the session the start frame names and starts it on
/// the socket's frames. Returns the token to show the client, if one was
/// issued here.
fn open(
    web: &WebState,
    data: StartData,
    frames: Frames,
    peer: std::net::IpAddr,
) -> Result<(Running, Option<String>), SttError> {
    let service = &web.service;
    let sample_rate = match data.sample_rate {
        None => 0,
        Some(r) => i32::try_from(r).map_err(|_| {
            service.refuse(
                "",
                "WebSocket start",
                SttError::new(
                    ErrorCode::Err1011,
                    format!("sample_rate {r} is not a sample rate"),
                ),
            )
        })?,
    };
    let (id, token, issued) = match data.session_id.clone().filter(|id| service.is_waiting(id)) {
        // Created beforehand (gRPC CreateSession): stream it as is.
        Some(id) => {
            let token = data.session_token.clone().unwrap_or_default();
            (id, token, None)
        }
        None => {
            let id = match data.session_id.clone() {
                Some(id) => id,
                None => super::new_id("ws")?,
            };
            let mut req = data
                .into_request(id.clone())
                .map_err(|e| service.refuse(&id, "WebSocket start", e))?;
            req.peer = Some(peer);
            let created = service.create(req)?;
            let token = created.token.clone().unwrap_or_default();
            (id, token, created.token)
        }
    };
    let session_id = id.clone();
    let chunks = frames.map(move |frame| {
        frame.map(|f| {
            let (pcm16, is_final) = match f {
                Inbound::Audio(pcm) => (pcm, false),
                Inbound::End => (Vec::new(), true),
            };
            Chunk {
                pcm16,
                sample_rate,
                is_final,
                session_id: session_id.clone(),
                session_token: token.clone(),
            }
        })
    });
    let running = service.start(&id, chunks, Transport::WebSocket)?;
    Ok((running, issued))
}

/// Frames a reader may hold for its session: with the session busy, the
/// reader stops reading the socket, and TCP tells the client.
const INBOUND_CAPACITY: usize = 4;

/// What the client sent after the start frame.
enum Inbound {
    Audio(Vec<u8>),
    End,
}

type Frames = tokio_stream::wrappers::ReceiverStream<Result<Inbound, Disconnected>>;

/// Reads the socket's remaining frames: binary frames are audio,
/// `{"type":"end"}` ends the audio, a close or a broken socket is a client
/// gone. Once nobody needs them (the session ended, or never started), the
/// reader keeps reading and dropping frames until the client closes, so the
/// closing handshake completes instead of the kernel resetting a socket
/// with unread data (which can lose the last frames we sent).
fn spawn_reader(mut stream: SplitStream<WebSocket>) -> (Frames, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(async move {
        let mut feeding = true;
        while let Some(msg) = stream.next().await {
            let item = match msg {
                Ok(Message::Binary(b)) => Ok(Inbound::Audio(b.to_vec())),
                Ok(Message::Text(t)) => {
                    if !matches!(serde_json::from_str(&t), Ok(ClientFrame::End)) {
                        tracing::debug!("ignoring a text frame that is not an end frame");
                        continue;
                    }
                    Ok(Inbound::End)
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => Err(Disconnected),
            };
            let last = item.is_err();
            if feeding {
                let end = matches!(item, Ok(Inbound::End));
                // A closed channel: the session has ended; keep draining.
                feeding = tx.send(item).await.is_ok() && !end;
            }
            if last {
                return;
            }
        }
        if feeding {
            let _ = tx.send(Err(Disconnected)).await;
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), reader)
}

/// The `session` frame: the settings the session runs with.
fn session_frame(o: &SessionOptions, token: Option<String>) -> serde_json::Value {
    let mut frame = json!({
        "type": "session",
        "session_id": o.id,
        "attributes": o.attributes,
        "model_id": o.attributes.get(MODEL_ID_ATTRIBUTE),
        "vad_mode": match o.vad_mode {
            VadMode::Continue => "continue",
            VadMode::AutoEnd => "auto_end",
        },
        "vad_silence": o.vad_silence,
        "vad_threshold": o.vad_threshold,
        "language_code": o.language.clone().unwrap_or_default(),
        "task": o.task.as_str(),
        "decode_profile": o.profile.as_str(),
        "token_required": o.token_required,
    });
    if let Some(t) = token {
        frame["token"] = json!(t);
    }
    frame
}

fn error_frame(e: &SttError) -> serde_json::Value {
    json!({"type": "error", "code": e.code.as_str(), "message": e.message})
}

/// Sends one frame; false when the client is gone or took none for `wait`.
async fn send_json(sink: &mut Sink, frame: &impl Serialize, wait: Duration) -> bool {
    let Ok(text) = serde_json::to_string(frame) else {
        return false;
    };
    tokio::time::timeout(wait, sink.send(Message::Text(text.into())))
        .await
        .is_ok_and(|sent| sent.is_ok())
}

/// Tells the client why, then closes with the matching code.
async fn fail(sink: &mut Sink, e: &SttError) {
    send_json(sink, &error_frame(e), CLOSE_WAIT).await;
    close_with(sink, close_code(e.code), e.code.as_str()).await;
}

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // A client that is gone or not reading must not hold the task.
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_frames_parse_and_convert() {
        let data = parse_start(
            r#"{"type":"start","data":{"vad_mode":"auto","task":"translate","decode_profile":"accurate","model_id":"base","language_code":"de"}}"#,
        )
        .unwrap();
        let req = data.into_request("s".into()).unwrap();
        assert_eq!(req.vad_mode, Some(VadMode::AutoEnd));
        assert_eq!(req.task, Some(Task::Translate));
        assert_eq!(req.profile, Some(Profile::Accurate));
        assert_eq!(
            req.attributes.get("model_id").map(String::as_str),
            Some("base")
        );
        assert_eq!(req.language, "de");
        // `data` may be left out entirely.
        let req = parse_start(r#"{"type":"start"}"#)
            .unwrap()
            .into_request("s".into())
            .unwrap();
        assert_eq!(req.vad_mode, Some(VadMode::Continue));
    }

    #[test]
    fn bad_start_frames_are_err1010() {
        for text in [
            "",
            "hello",
            r#"{"type":"end"}"#,
            r#"{"type":"start","data":{"vad_silence":"long"}}"#,
            r#"{"type":"start","data":{"unknown_field":1}}"#,
        ] {
            assert_eq!(
                parse_start(text).unwrap_err().code,
                ErrorCode::Err1010,
                "{text}"
            );
        }
        let data = parse_start(r#"{"type":"start","data":{"vad_mode":"sometimes"}}"#).unwrap();
        assert_eq!(
            data.into_request("s".into()).unwrap_err().code,
            ErrorCode::Err1010
        );
    }

    #[test]
    fn refusals_close_with_the_protocol_codes() {
        assert_eq!(close_code(ErrorCode::Err1009), CLOSE_AUTH);
        assert_eq!(close_code(ErrorCode::Err1005), CLOSE_AUTH);
        assert_eq!(close_code(ErrorCode::Err1008), CLOSE_REFUSED);
        assert_eq!(close_code(ErrorCode::Err2004), CLOSE_REFUSED);
        assert_eq!(close_code(ErrorCode::Err1010), CLOSE_BAD_START);
        assert_eq!(close_code(ErrorCode::Err2002), CLOSE_INTERNAL);
    }
}
