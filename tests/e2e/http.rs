//! The HTTP control plane against a real server.

use std::time::Duration;

use crate::server::*;
use crate::streaming::{silence, speech};

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
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
        s.server.health.window_sec = 3.0;
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
    // The gRPC health service agrees.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(server.url())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    // (It follows within its 250 ms polling period.)
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let mut status = 0;
    for _ in 0..20 {
        status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        if status == not_serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, not_serving);
    // Once the timeouts leave the health window, it recovers.
    let url = format!("http://{}/health", server.http);
    let mut recovered = false;
    for _ in 0..100 {
        if get_json(&url).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "health never recovered");
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

/// Scrapes `/metrics` and parses it with a Prometheus text-format parser.
pub async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let resp = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .expect("HTTP answers");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.ends_with("# EOF\n"), "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of the sample `name` whose labels include `labels`.
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            _ => None,
        })
}

#[tokio::test]
async fn prometheus_metrics_parse_and_move_after_a_session() {
    let server = TestServer::start(|_| {});
    let before = scrape(&server).await;
    assert_eq!(sample(&before, "stt_active_sessions", &[]), Some(0.0));
    assert_eq!(
        sample(&before, "stt_sessions_started_total", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&before, "stt_models_loaded", &[]), Some(1.0));
    assert_eq!(sample(&before, "stt_decode_slots", &[]), Some(1.0));

    let mut client = server.client().await;
    assert!(client.create_session(session_request("")).await.is_err());
    client
        .create_session(session_request("p1"))
        .await
        .expect("session");
    let mut audio = speech("http_m1", "I would like to order a large pizza.");
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "p1",
        "",
        audio_chunks(&audio, 200, "p1", ""),
        Duration::ZERO,
    )
    .await;
    assert!(out.status.is_none(), "{:?}", out.status);
    assert!(eventually(Duration::from_secs(5), || server.registry.active() == 0).await);
    // The session's end is counted just after its stream closes.
    assert!(
        eventually(Duration::from_secs(10), || server
            .metrics
            .ended_by_reason()
            .contains(&("completed", 1)))
        .await,
        "session end not counted: {:?}",
        server.metrics.ended_by_reason()
    );

    let after = scrape(&server).await;
    assert_eq!(sample(&after, "stt_sessions_started_total", &[]), Some(1.0));
    assert_eq!(
        sample(
            &after,
            "stt_sessions_ended_total",
            &[("reason", "completed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "stt_errors_total",
            &[
                ("code", "ERR1001"),
                ("status", "InvalidArgument"),
                ("http_status", "400")
            ]
        ),
        Some(1.0)
    );
    for stage in ["buffer_wait", "queue_wait", "inference", "emit", "total"] {
        let n = sample(
            &after,
            "stt_decode_duration_seconds_count",
            &[("stage", stage), ("kind", "final")],
        );
        assert!(n.unwrap_or(0.0) >= 1.0, "{stage}: {n:?}");
    }
    let rtf = sample(&after, "stt_decode_rtf_count", &[("kind", "final")]);
    assert!(rtf.unwrap_or(0.0) >= 1.0, "{rtf:?}");
    assert!(sample(&after, "stt_vad_utterances_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(sample(&after, "stt_finals_sent_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(sample(&after, "stt_audio_seconds_total", &[]).unwrap_or(0.0) > 2.0);
    // Every guard is exported by reason, and clean speech trips none.
    for reason in [
        "repetition",
        "compression_ratio",
        "too_many_words",
        "silence",
        "no_speech",
    ] {
        assert_eq!(
            sample(&after, "stt_decode_guard_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(
        sample(&after, "stt_decode_guard_dropped_total", &[]),
        Some(0.0)
    );
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
