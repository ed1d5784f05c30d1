//! The HTTP control plane against a real server.

use std::time::Duration;

use crate::server::*;
use crate::streaming::{silence, speech};

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("HTTP answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

#[tokio::test]
async fn health_is_ok_when_serving() {
    let server = TestServer::start(|_| {});
    let (status, body) = get_json(&format!("http://{}/health", server.http)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn health_reports_failing_decodes_with_reasons() {
    // Every final times out: the decode health ratios go bad.
    let server = TestServer::start(|s| {
        s.server.server.decode_timeout_sec = 0.001;
        s.server.health.min_events = 1;
    });
    let mut client = server.client().await;
    client
        .create_session(session_request("slow"))
        .await
        .expect("session");
    let mut audio = speech("http_slow", "Please call me back tomorrow afternoon.");
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "slow",
        "",
        audio_chunks(&audio, 200, "slow", ""),
        Duration::ZERO,
    )
    .await;
    assert_eq!(out.code().as_deref(), Some("ERR2001"));
    let (status, body) = get_json(&format!("http://{}/health", server.http)).await;
    assert_eq!(status, 500, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("timeouts"), "{body}");
}

#[tokio::test]
async fn metrics_json_counts_sessions_decodes_and_errors() {
    let server = TestServer::start(|_| {});
    let mut client = server.client().await;
    client
        .create_session(session_request("m1"))
        .await
        .expect("session");
    let mut audio = speech("http_m1", "I would like to order a large pizza.");
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "m1",
        "",
        audio_chunks(&audio, 200, "m1", ""),
        Duration::ZERO,
    )
    .await;
    assert!(out.status.is_none(), "{:?}", out.status);
    // And one refusal.
    assert!(client.create_session(session_request("")).await.is_err());
    let url = format!("http://{}/metrics.json", server.http);
    let mut body = serde_json::Value::Null;
    // The session's end is counted just after its stream closes.
    for _ in 0..50 {
        body = get_json(&url).await.1;
        if body["sessions_ended_total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["sessions_started_total"], 1, "{body}");
    assert_eq!(body["sessions_ended_total"], 1, "{body}");
    assert!(body["decode"]["count"].as_u64().unwrap_or(0) >= 1, "{body}");
    assert!(
        body["results"]["finals_total"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    assert!(
        body["vad"]["utterances_total"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    assert_eq!(body["errors"]["ERR1001"], 1, "{body}");
    assert_eq!(body["active_sessions"], 0, "{body}");
}

#[tokio::test]
async fn prometheus_metrics_are_exposed() {
    let server = TestServer::start(|_| {});
    let mut client = server.client().await;
    assert!(client.create_session(session_request("")).await.is_err());
    let resp = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .expect("HTTP answers");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.text().await.unwrap();
    for name in [
        "stt_active_sessions 0",
        "stt_sessions_started_total",
        "stt_decode_inference_seconds_total",
        "stt_errors_total{code=\"ERR1001\"} 1",
        "# EOF",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

#[tokio::test]
async fn system_reports_process_and_host() {
    let server = TestServer::start(|_| {});
    let (status, body) = get_json(&format!("http://{}/system", server.http)).await;
    assert_eq!(status, 200, "{body}");
    // The test process hosts the server, so it holds the model in memory.
    assert!(
        body["process"]["rss_bytes"].as_u64().unwrap_or(0) > 50 << 20,
        "{body}"
    );
    assert!(
        body["process"]["threads"].as_u64().unwrap_or(0) >= 3,
        "{body}"
    );
    assert!(body["host"]["cpus"].as_u64().unwrap_or(0) >= 1, "{body}");
    assert!(
        body["host"]["memory_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    assert_eq!(body["gpu"]["enabled"], false, "{body}");
}
