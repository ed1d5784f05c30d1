//! The error codes no client can cause, provoked through the test-only
//! fault hook (`STT_FAULT`, feature `fault-injection`) in a real `stt serve`
//! process: a decode that fails, a session token that cannot be issued,
//! voice activity detection that fails, and a model still loading.

use std::time::Duration;

use serde_json::{json, Value};

use crate::process::ServeProcess;
use crate::server::{audio_chunks, session_request, stream_raw};
use crate::streaming::{silence, speech};

/// Every wait on the server in this file ends by then.
const WITHIN: Duration = Duration::from_secs(60);

fn serve_with_fault(fault: &str, extra_env: &[(&str, &str)]) -> ServeProcess {
    let mut env = vec![("STT_FAULT", fault)];
    env.extend_from_slice(extra_env);
    ServeProcess::start_with_env(&[], &env)
}

/// Creates a session and streams a spoken sentence and a second of
/// silence into it; what came back.
async fn speak_into(server: &ServeProcess, id: &str) -> crate::server::RawOutcome {
    let mut client = server.client().await;
    let created = client
        .create_session(session_request(id))
        .await
        .expect("CreateSession")
        .into_inner();
    let mut audio = speech("fault_call", "Please call me back tomorrow afternoon.");
    audio.extend(silence(1.0));
    let chunks = audio_chunks(&audio, 100, id, &created.token);
    tokio::time::timeout(
        WITHIN,
        stream_raw(&mut client, id, &created.token, chunks, Duration::ZERO),
    )
    .await
    .expect("the stream ends")
}

#[tokio::test]
async fn err2002_a_failed_decode_ends_the_stream_with_its_code() {
    let server = serve_with_fault("decode", &[]);
    let out = speak_into(&server, "fault-decode").await;
    assert_eq!(out.code().as_deref(), Some("ERR2002"), "{out:?}");
    assert!(out.finals().is_empty(), "{out:?}");
}

#[tokio::test]
async fn err3002_failed_voice_detection_ends_the_stream_with_its_code() {
    let server = serve_with_fault("vad", &[]);
    let out = speak_into(&server, "fault-vad").await;
    assert_eq!(out.code().as_deref(), Some("ERR3002"), "{out:?}");
}

#[tokio::test]
async fn err3001_a_session_token_that_cannot_be_issued_fails_create_session() {
    let server = serve_with_fault("session_token", &[]);
    let mut client = server.client().await;
    let mut req = session_request("fault-token");
    req.require_token = true;
    let status = client
        .create_session(req)
        .await
        .expect_err("CreateSession fails");
    assert!(status.message().starts_with("ERR3001"), "{status:?}");
    // Without a token to issue, the same server opens sessions.
    let ok = client
        .create_session(session_request("fault-no-token"))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn err2003_a_session_on_a_model_still_loading_is_refused_until_it_is_ready() {
    let server = serve_with_fault(
        "slow_model_load",
        &[("STT_ADMIN_ENABLED", "true"), ("STT_ADMIN_TOKEN", "t")],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let admin = |path: &str| format!("http://{}{path}", server.http);
    let resp = http
        .post(admin("/admin/load_model"))
        .bearer_auth("t")
        .json(&json!({"model_id": "base"}))
        .send()
        .await
        .expect("load_model answers");
    assert!(resp.status().is_success(), "{resp:?}");

    let mut client = server.client().await;
    let on_base = |id: &str| {
        let mut req = session_request(id);
        req.attributes.insert("model_id".into(), "base".into());
        req
    };
    let status = client
        .create_session(on_base("fault-loading"))
        .await
        .expect_err("refused while loading");
    assert!(status.message().starts_with("ERR2003"), "{status:?}");

    // Once the list says ready, the same request opens a session.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let list: Value = http
            .get(admin("/admin/list_models"))
            .bearer_auth("t")
            .send()
            .await
            .expect("list_models answers")
            .json()
            .await
            .expect("JSON");
        let ready = list["models"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["id"] == "base" && m["status"] == "ready")
        });
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "base never loaded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = client.create_session(on_base("fault-loaded")).await;
    assert!(ok.is_ok(), "{ok:?}");
}
