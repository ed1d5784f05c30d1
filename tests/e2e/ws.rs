//! The WebSocket transport end to end: a real server, recorded speech sent
//! as binary PCM16 frames over `/ws/stream` by a real WebSocket client
//! (tokio-tungstenite), and the protocol's frames and close codes checked.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stt::pb;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::*;
use crate::server::*;

pub const HELLO: &str = "Hello world. This is a test of the speech to text system.";

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any single frame may take to arrive.
const FRAME_WAIT: Duration = Duration::from_secs(60);

pub fn hello_pcm16() -> Vec<u8> {
    let clip = stt::audio::decode::read_audio(&asset("audio/hello.wav")).expect("hello.wav");
    let mut samples = clip.samples;
    samples.extend(vec![0.0f32; 16_000]);
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}

async fn connect(server: &TestServer) -> Socket {
    let url = format!("ws://{}/ws/stream", server.web.expect("data plane on"));
    let (socket, _) = tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    socket
}

/// Everything the server sent until it closed: text frames as JSON, and
/// the close code.
#[derive(Debug, Default)]
struct Transcript {
    frames: Vec<Value>,
    close: Option<u16>,
}

impl Transcript {
    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.frames.iter().filter(|f| f["type"] == t).collect()
    }

    fn finals_text(&self) -> String {
        self.of_type("result")
            .into_iter()
            .filter(|f| f["is_final"] == true)
            .map(|f| f["text"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn read_all(socket: &mut Socket) -> Transcript {
    let mut out = Transcript::default();
    loop {
        let msg = tokio::time::timeout(FRAME_WAIT, socket.next())
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => out
                .frames
                .push(serde_json::from_str(&t).expect("JSON frame")),
            Some(Ok(Message::Close(frame))) => {
                out.close = frame.map(|f| u16::from(f.code));
                return out;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return out,
        }
    }
}

/// The session frame, which must come first.
async fn session_frame(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(FRAME_WAIT, socket.next())
            .await
            .expect("session frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v["type"], "session", "{v}");
                return v;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected the session frame, got {other:?}"),
        }
    }
}

/// Sends audio in 100 ms frames, `pace` apart, then the end frame. Stops
/// early if the server has closed (a refusal mid-stream).
async fn send_audio(socket: &mut Socket, pcm: &[u8], pace: Duration) {
    for chunk in pcm.chunks(3_200) {
        if socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_err()
        {
            return;
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    let end = json!({"type": "end"}).to_string();
    let _ = socket.send(Message::Text(end.into())).await;
}

async fn start(socket: &mut Socket, data: Value) {
    socket
        .send(Message::Text(
            json!({"type": "start", "data": data}).to_string().into(),
        ))
        .await
        .expect("send start");
}

#[tokio::test]
async fn ws_stream_gives_the_spoken_words_and_done_trailers() {
    let server = TestServer::start(|_| {});
    let mut socket = connect(&server).await;
    start(
        &mut socket,
        json!({"sample_rate": 16000, "vad_mode": "continue"}),
    )
    .await;
    let session = session_frame(&mut socket).await;
    assert_eq!(session["model_id"], "tiny.en");
    assert_eq!(session["vad_mode"], "continue");
    assert!(session["session_id"].as_str().unwrap().starts_with("ws-"));
    send_audio(&mut socket, &hello_pcm16(), Duration::from_millis(25)).await;
    let out = read_all(&mut socket).await;
    assert_words(HELLO, &out.finals_text(), 0.8);
    let last_final = out
        .of_type("result")
        .into_iter()
        .rfind(|f| f["is_final"] == true)
        .cloned();
    let f = last_final.expect("a final");
    assert_eq!(f["language_code"], "en");
    assert!(f["end_sec"].as_f64().unwrap() > f["start_sec"].as_f64().unwrap());
    let done = out.of_type("done");
    assert_eq!(done.len(), 1, "{out:?}");
    let trailing = &done[0]["trailing"];
    assert!(
        trailing["stt-decode-count"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1,
        "{trailing}"
    );
    assert!(
        trailing["stt-decode-total-sec"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(out.of_type("error").is_empty(), "{out:?}");
    assert_eq!(out.close, Some(1000));
    // Counted under its transport, like any session.
    let by = server.metrics.started_by_transport();
    assert_eq!(by.get("websocket"), Some(&1), "{by:?}");
    assert_eq!(by.get("grpc"), Some(&0), "{by:?}");
}

#[tokio::test]
async fn ws_bad_start_frames_close_with_1003() {
    let server = TestServer::start(|_| {});
    for bad in [
        Message::Text("hello".into()),
        Message::Text(
            json!({"type": "start", "data": {"vad_mode": "sometimes"}})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type": "start", "data": {"language_code": "xx-nonsense"}})
                .to_string()
                .into(),
        ),
        Message::Binary(vec![0u8; 3200].into()),
    ] {
        let mut socket = connect(&server).await;
        socket.send(bad.clone()).await.expect("send");
        let out = read_all(&mut socket).await;
        let errors = out.of_type("error");
        assert_eq!(errors.len(), 1, "{bad:?}: {out:?}");
        assert_eq!(errors[0]["code"], "ERR1010", "{bad:?}: {out:?}");
        assert_eq!(out.close, Some(1003), "{bad:?}: {out:?}");
        assert!(out.of_type("session").is_empty());
    }
}

#[tokio::test]
async fn ws_refusals_close_with_their_codes() {
    // No API key where one is required: 4401 with ERR1009.
    let server = TestServer::start(|s| s.server.server.require_api_key = true);
    let mut socket = connect(&server).await;
    start(&mut socket, json!({})).await;
    let out = read_all(&mut socket).await;
    assert_eq!(out.of_type("error")[0]["code"], "ERR1009", "{out:?}");
    assert_eq!(out.close, Some(4401));
    drop(server);

    // At capacity: 4403 with ERR1008, the same limit gRPC sessions share.
    let server = TestServer::start(|s| s.server.server.max_sessions = 1);
    create_ok(&server, session_request("holds-the-slot")).await;
    let mut socket = connect(&server).await;
    start(&mut socket, json!({})).await;
    let out = read_all(&mut socket).await;
    assert_eq!(out.of_type("error")[0]["code"], "ERR1008", "{out:?}");
    assert_eq!(out.close, Some(4403));
    assert!(server
        .metrics
        .errors()
        .iter()
        .any(|(c, n)| c.as_str() == "ERR1008" && *n == 1));
}

#[tokio::test]
async fn ws_streams_a_grpc_created_session_with_its_token_and_options() {
    let server = TestServer::start(|_| {});
    let created = create_ok(
        &server,
        pb::SessionRequest {
            require_token: true,
            language_code: "en".into(),
            attributes: [("model_id".to_string(), "tiny.en".to_string())].into(),
            ..session_request("made-over-grpc")
        },
    )
    .await;
    // 128 random bits as hex.
    assert_eq!(created.token.len(), 32, "{created:?}");

    // A wrong token is refused on the first audio frame: 4401, ERR1005.
    let mut socket = connect(&server).await;
    start(
        &mut socket,
        json!({"session_id": "made-over-grpc", "session_token": "nope"}),
    )
    .await;
    let session = session_frame(&mut socket).await;
    assert_eq!(session["session_id"], "made-over-grpc");
    send_audio(&mut socket, &hello_pcm16()[..32_000], Duration::ZERO).await;
    let out = read_all(&mut socket).await;
    assert_eq!(out.of_type("error")[0]["code"], "ERR1005", "{out:?}");
    assert_eq!(out.close, Some(4401));

    // The right token streams, with the options CreateSession resolved.
    let created = create_ok(
        &server,
        pb::SessionRequest {
            require_token: true,
            language_code: "en".into(),
            ..session_request("made-over-grpc-2")
        },
    )
    .await;
    let mut socket = connect(&server).await;
    start(
        &mut socket,
        json!({"session_id": "made-over-grpc-2", "session_token": created.token}),
    )
    .await;
    let session = session_frame(&mut socket).await;
    assert_eq!(session["language_code"], "en");
    assert_eq!(session["model_id"], "tiny.en");
    assert!(
        session.get("token").is_none(),
        "the token is not shown again"
    );
    send_audio(&mut socket, &hello_pcm16(), Duration::ZERO).await;
    let out = read_all(&mut socket).await;
    assert_words(HELLO, &out.finals_text(), 0.8);
    assert_eq!(out.close, Some(1000));
}

#[tokio::test]
async fn ws_session_frame_shows_the_token_it_issues() {
    let server = TestServer::start(|_| {});
    let mut socket = connect(&server).await;
    start(
        &mut socket,
        json!({"require_token": true, "session_id": "own-token"}),
    )
    .await;
    let session = session_frame(&mut socket).await;
    assert_eq!(session["session_id"], "own-token");
    assert_eq!(
        session["token"].as_str().map(str::len),
        Some(32),
        "{session}"
    );
    send_audio(&mut socket, &hello_pcm16(), Duration::ZERO).await;
    let out = read_all(&mut socket).await;
    assert_words(HELLO, &out.finals_text(), 0.8);
}
