//! One test per error code the gRPC plane raises, each named after its code
//! and provoking it for real against a running server. Every refusal must
//! carry its code at the start of the status message and the right status,
//! and must not disturb other sessions.

use std::time::Duration;

use stt::pb;
use tonic::Code;

use crate::server::*;
use crate::streaming::{silence, speech};

fn assert_status(status: &tonic::Status, code: &str, grpc: Code) {
    assert!(
        status.message().starts_with(&format!("{code}: ")),
        "want {code}, got {:?}: {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), grpc, "{}", status.message());
}

fn chunk(pcm16: Vec<u8>, rate: i32, is_final: bool) -> pb::AudioChunk {
    pb::AudioChunk {
        pcm16,
        sample_rate: rate,
        is_final,
        ..Default::default()
    }
}

/// Streams `chunks` for session `id` and returns the outcome.
async fn stream(server: &TestServer, id: &str, chunks: Vec<pb::AudioChunk>) -> RawOutcome {
    let mut client = server.client().await;
    stream_raw(&mut client, id, "", chunks, Duration::ZERO).await
}

#[tokio::test]
async fn err1001_missing_session_id() {
    let server = TestServer::start(|_| {});
    let s = create_err(&server, session_request("")).await;
    assert_status(&s, "ERR1001", Code::InvalidArgument);
}

#[tokio::test]
async fn err1002_session_id_already_active() {
    let server = TestServer::start(|_| {});
    create_ok(&server, session_request("dup")).await;
    let s = create_err(&server, session_request("dup")).await;
    assert_status(&s, "ERR1002", Code::AlreadyExists);
}

#[tokio::test]
async fn err1003_negative_vad_threshold() {
    let server = TestServer::start(|_| {});
    let s = create_err(
        &server,
        pb::SessionRequest {
            vad_threshold: -0.2,
            ..session_request("neg")
        },
    )
    .await;
    assert_status(&s, "ERR1003", Code::InvalidArgument);
    let s = create_err(
        &server,
        pb::SessionRequest {
            vad_threshold_override: Some(-1.0),
            ..session_request("neg2")
        },
    )
    .await;
    assert_status(&s, "ERR1003", Code::InvalidArgument);
}

#[tokio::test]
async fn err1004_unknown_session() {
    let server = TestServer::start(|_| {});
    let out = stream(
        &server,
        "never-created",
        vec![chunk(vec![0; 3200], 16_000, true)],
    )
    .await;
    assert_status(
        out.status.as_ref().expect("refused"),
        "ERR1004",
        Code::Unauthenticated,
    );
    // No session id at all, neither in metadata nor in the chunk.
    let mut client = server.client().await;
    let s = client
        .streaming_recognize(tokio_stream::iter([chunk(vec![0; 320], 16_000, true)]))
        .await;
    let status = match s {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.expect_err("refused"),
    };
    assert_status(&status, "ERR1004", Code::Unauthenticated);
}

#[tokio::test]
async fn err1005_invalid_session_token() {
    let server = TestServer::start(|_| {});
    let resp = create_ok(
        &server,
        pb::SessionRequest {
            require_token: true,
            ..session_request("tok")
        },
    )
    .await;
    // 128 random bits as hex.
    assert_eq!(resp.token.len(), 32, "{resp:?}");
    let mut c = chunk(vec![0; 3200], 16_000, true);
    c.session_token = "not-the-token".into();
    let out = stream(&server, "tok", vec![c]).await;
    assert_status(
        out.status.as_ref().expect("refused"),
        "ERR1005",
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn err1006_session_timeout_without_audio() {
    let server = TestServer::start(|s| s.server.server.session_timeout_sec = 1.0);
    create_ok(&server, session_request("idle")).await;
    let mut client = server.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(chunk(vec![0; 3200], 16_000, false)).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", "idle".parse().unwrap());
    let mut results = client
        .streaming_recognize(req)
        .await
        .expect("stream")
        .into_inner();
    // Keep the request side open but silent.
    let status = tokio::time::timeout(Duration::from_secs(10), results.message())
        .await
        .expect("server ends the idle session")
        .expect_err("refused");
    drop(tx);
    assert_status(&status, "ERR1006", Code::DeadlineExceeded);
    assert!(eventually(Duration::from_secs(3), || server.registry.active() == 0).await);
}

#[tokio::test]
async fn err1007_oversized_chunk() {
    let server = TestServer::start(|s| s.server.server.max_chunk_ms = 1000);
    create_ok(&server, session_request("big")).await;
    // 1.5 s in one chunk.
    let out = stream(&server, "big", vec![chunk(vec![0; 48_000], 16_000, true)]).await;
    assert_status(
        out.status.as_ref().expect("refused"),
        "ERR1007",
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn err1008_capacity_exhausted() {
    let server = TestServer::start(|s| {
        s.server.server.max_sessions = 1;
        s.server.vad.model_pool_size = 1;
    });
    create_ok(&server, session_request("one")).await;
    let s = create_err(&server, session_request("two")).await;
    assert_status(&s, "ERR1008", Code::ResourceExhausted);
}

#[tokio::test]
async fn err1009_api_key_required_but_missing() {
    let server = TestServer::start(|s| s.server.server.require_api_key = true);
    let s = create_err(&server, session_request("nokey")).await;
    assert_status(&s, "ERR1009", Code::Unauthenticated);
    let mut req = session_request("withkey");
    req.attributes.insert("api_key".into(), "k-123".into());
    create_ok(&server, req).await;
    // A client may also demand a key for itself on an open server.
    let open = TestServer::start(|_| {});
    let mut req = session_request("self");
    req.attributes
        .insert("api_key_required".into(), "true".into());
    let s = create_err(&open, req).await;
    assert_status(&s, "ERR1009", Code::Unauthenticated);
}

#[tokio::test]
async fn err1010_invalid_decode_options() {
    let server = TestServer::start(|_| {});
    for req in [
        pb::SessionRequest {
            language_code: "xx-klingon".into(),
            ..session_request("lang")
        },
        // tiny.en cannot translate or take other languages.
        pb::SessionRequest {
            task: pb::Task::Translate as i32,
            ..session_request("translate")
        },
        pb::SessionRequest {
            language_code: "de".into(),
            ..session_request("german")
        },
        pb::SessionRequest {
            decode_profile: 42,
            ..session_request("profile")
        },
    ] {
        let s = create_err(&server, req).await;
        assert_status(&s, "ERR1010", Code::InvalidArgument);
    }
}

#[tokio::test]
async fn err1011_malformed_audio_does_not_disturb_other_sessions() {
    let server = TestServer::start(|s| s.server.server.max_sessions = 8);
    // A healthy session runs beside the bad ones.
    create_ok(&server, session_request("healthy")).await;
    let mut audio = speech("err1011", "Please call me back tomorrow afternoon.");
    audio.extend(silence(1.0));
    let mut client = server.client().await;
    let healthy = tokio::spawn(async move {
        let chunks = audio_chunks(&audio, 100, "healthy", "");
        stream_raw(
            &mut client,
            "healthy",
            "",
            chunks,
            Duration::from_millis(20),
        )
        .await
    });
    let bad = [
        ("odd", chunk(vec![0; 3201], 16_000, true)),
        ("negrate", chunk(vec![0; 3200], -16_000, true)),
        ("hugerate", chunk(vec![0; 3200], 100_000_000, true)),
        ("tinyrate", chunk(vec![0; 3200], 1, true)),
        ("empty", chunk(Vec::new(), 16_000, false)),
    ];
    for (id, c) in bad {
        create_ok(&server, session_request(id)).await;
        let out = stream(&server, id, vec![c]).await;
        let status = out
            .status
            .as_ref()
            .unwrap_or_else(|| panic!("{id}: accepted"));
        assert_status(status, "ERR1011", Code::InvalidArgument);
    }
    let out = healthy.await.unwrap();
    assert!(out.status.is_none(), "{:?}", out.status);
    crate::harness::assert_words(
        "Please call me back tomorrow afternoon.",
        &out.final_text(),
        0.8,
    );
    assert!(eventually(Duration::from_secs(3), || server.registry.active() == 0).await);
}

#[tokio::test]
async fn err2001_decode_timeout() {
    // A decode of real speech takes far longer than a millisecond.
    let server = TestServer::start(|s| s.server.server.decode_timeout_sec = 0.001);
    create_ok(&server, session_request("slow")).await;
    let mut audio = speech(
        "err2001",
        "Good morning everyone, let us begin the meeting.",
    );
    audio.extend(silence(1.0));
    let out = stream(&server, "slow", audio_chunks(&audio, 200, "slow", "")).await;
    assert_status(
        out.status.as_ref().expect("refused"),
        "ERR2001",
        Code::Internal,
    );
    // Trailers still come with the failure.
    assert!(out
        .trailers
        .as_ref()
        .is_some_and(|t| t.get("stt-decode-count").is_some()));
}

#[tokio::test]
async fn err2004_shutdown_aborts_open_sessions_after_the_grace() {
    let mut server = Some(TestServer::start(|s| {
        s.server.server.shutdown_grace_sec = 0.0
    }));
    let srv = server.as_ref().unwrap();
    create_ok(srv, session_request("open")).await;
    let mut client = srv.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(chunk(vec![0; 3200], 16_000, false)).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", "open".parse().unwrap());
    let mut results = client
        .streaming_recognize(req)
        .await
        .expect("stream")
        .into_inner();
    // Shut down from another thread while the stream is open.
    let stopper = std::thread::spawn(move || drop(server.take()));
    let status = tokio::time::timeout(Duration::from_secs(10), results.message())
        .await
        .expect("stream ends")
        .expect_err("aborted");
    drop(tx);
    stopper.join().unwrap();
    assert_status(&status, "ERR2004", Code::Unavailable);
}
