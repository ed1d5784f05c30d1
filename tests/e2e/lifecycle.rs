//! A session's life at the edges: created and never streamed (the
//! reaper), the server draining on shutdown, and the server-wide audio
//! buffer budget.

use std::time::Duration;

use crate::harness::assert_words;
use crate::process::stream_held_open;
use crate::server::*;
use crate::streaming::{silence, speech};

/// Every wait in this file ends by then.
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sessions_created_but_never_streamed_are_reaped_after_the_timeout() {
    let server = TestServer::start(|s| s.server.server.session_timeout_sec = 1.0);
    create_ok(&server, session_request("idle-1")).await;
    create_ok(&server, session_request("idle-2")).await;
    assert_eq!(server.registry.active(), 2);
    // The reaper runs every second and frees what waited past the timeout.
    assert!(
        eventually(Duration::from_secs(10), || server.registry.active() == 0).await,
        "{} never-streamed sessions still registered",
        server.registry.active()
    );
    // Streaming into a reaped session is a stream for an unknown session.
    let mut client = server.client().await;
    let out = stream_raw(
        &mut client,
        "idle-1",
        "",
        audio_chunks(&silence(0.5), 100, "idle-1", ""),
        Duration::ZERO,
    )
    .await;
    assert_eq!(out.code().as_deref(), Some("ERR1004"), "{out:?}");
    // The id is free to use again.
    create_ok(&server, session_request("idle-1")).await;
}

#[tokio::test]
async fn draining_refuses_new_sessions_reports_unhealthy_and_finishes_open_streams() {
    let mut server = TestServer::start(|s| s.server.server.shutdown_grace_sec = 20.0);
    let text = "Please send the quarterly report to the finance team.";
    let mut client = server.client().await;
    client
        .create_session(session_request("draining"))
        .await
        .expect("session");
    let (spoken_tx, spoken_rx) = tokio::sync::oneshot::channel();
    let open = tokio::spawn(stream_held_open(
        client,
        "draining",
        speech("lifecycle_drain", text),
        Some(spoken_tx),
    ));
    tokio::time::timeout(WITHIN, spoken_rx)
        .await
        .expect("spoken in time")
        .expect("sender alive");

    server.begin_shutdown();
    // New sessions are refused with ERR2004 …
    let mut refused = None;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while refused.is_none() && tokio::time::Instant::now() < deadline {
        match server
            .client()
            .await
            .create_session(session_request("late"))
            .await
        {
            Err(status) => refused = Some(status),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let refused = refused.expect("CreateSession refused while draining");
    assert!(refused.message().starts_with("ERR2004"), "{refused:?}");
    // … /health says the server is going (500 with its reasons, as the
    // original) …
    let health = reqwest::get(format!("http://{}/health", server.http))
        .await
        .expect("/health answers while draining");
    assert_eq!(health.status().as_u16(), 500, "{health:?}");
    let body: serde_json::Value = health.json().await.expect("JSON");
    assert!(
        body["reasons"].to_string().contains("not serving"),
        "{body}"
    );
    // … and the open stream gets its final and ends cleanly.
    let (results, status) = tokio::time::timeout(WITHIN, open)
        .await
        .expect("the open stream ends")
        .expect("task");
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    let heard: Vec<&str> = results
        .iter()
        .filter(|r| r.is_final)
        .map(|r| r.text.as_str())
        .collect();
    assert_words(text, &heard.join(" "), 0.7);
}

#[tokio::test]
async fn err1008_when_buffered_audio_passes_max_total_buffer_bytes() {
    // Two seconds of f32 audio across the whole server; no per-session cap.
    let server = TestServer::start(|s| {
        s.server.server.max_total_buffer_bytes = 2 * 16_000 * 4;
        s.server.server.max_buffer_sec = None;
        s.server.server.max_buffer_bytes = None;
    });
    let mut client = server.client().await;
    create_ok(&server, session_request("budget")).await;
    // One utterance of about four seconds: it cannot fit.
    let mut audio = speech(
        "lifecycle_budget",
        "Our new office opens next week in the city center near the station.",
    );
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "budget",
        "",
        audio_chunks(&audio, 100, "budget", ""),
        Duration::ZERO,
    )
    .await;
    assert_eq!(out.code().as_deref(), Some("ERR1008"), "{out:?}");
    let message = out.status.as_ref().map(|s| s.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("max_total_buffer_bytes")),
        "{message:?}"
    );
    // The budget is given back when the session ends: a short one fits.
    assert!(eventually(WITHIN, || server.registry.active() == 0).await);
    create_ok(&server, session_request("after")).await;
    let mut short = speech("lifecycle_short", "Hello there.");
    short.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "after",
        "",
        audio_chunks(&short, 100, "after", ""),
        Duration::ZERO,
    )
    .await;
    assert_eq!(out.code(), None, "{out:?}");
}
