//! Allowlists, trusted proxies, the HTTP rate limit and the audio limits,
//! end to end: each refusal comes back with its code and status on the
//! transport that provoked it, and is counted.

use std::time::Duration;

use stt::client::{Sending, SessionSettings, StreamOptions};
use stt::error::ErrorCode;

use crate::harness::*;
use crate::server::*;
use crate::ws::HELLO;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str, xff: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let resp = req.send().await.expect("request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

fn counted(server: &TestServer, code: ErrorCode) -> u64 {
    server
        .metrics
        .errors()
        .into_iter()
        .find(|(c, _)| *c == code)
        .map_or(0, |(_, n)| n)
}

#[tokio::test]
async fn http_allowlist_refuses_other_addresses_on_both_planes_before_the_rate_limit() {
    let server = TestServer::start(|s| {
        s.server.server.http_allowlist = vec!["10.0.0.0/8".into()];
        s.server.server.http_rate_limit_rps = 1.0;
        s.server.server.http_rate_limit_burst = 1;
    });
    // Refused by the allowlist every time, never by the rate limit: the
    // allowlist comes first.
    for _ in 0..3 {
        let (status, body) = get(&format!("http://{}/health", server.http), None).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("ERR4008"), "{body}");
    }
    let web = server.web_url();
    let (status, body) = get(&format!("{web}/v1/models"), None).await;
    assert_eq!((status, body.contains("ERR4008")), (403, true), "{body}");
    // A WebSocket upgrade is refused before the socket opens.
    let ws =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/stream", server.web.unwrap())).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("upgrade should be refused with 403: {other:?}"),
    }
    assert!(counted(&server, ErrorCode::Err4008) >= 5);
    assert_eq!(counted(&server, ErrorCode::Err4010), 0);
}

#[tokio::test]
async fn http_rate_limit_refuses_a_flood_with_retry_after() {
    let server = TestServer::start(|s| {
        s.server.server.http_rate_limit_rps = 1.0;
        s.server.server.http_rate_limit_burst = 2;
    });
    let url = format!("http://{}/health", server.http);
    assert_eq!(get(&url, None).await.0, 200);
    assert_eq!(get(&url, None).await.0, 200);
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap();
    assert!(body.contains("ERR4010"), "{body}");
    // The data plane has its own budget per address, as the original's
    // WebSocket limiter does.
    assert_eq!(
        get(&format!("{}/v1/models", server.web_url()), None)
            .await
            .0,
        200
    );
    assert!(counted(&server, ErrorCode::Err4010) >= 1);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let allow = |trusted: Vec<String>| {
        move |s: &mut stt::server::Settings| {
            s.server.server.http_allowlist = vec!["198.51.100.0/24".into()];
            s.server.server.http_trusted_proxies = trusted;
        }
    };
    // The test client is the proxy, at 127.0.0.1.
    let behind_proxy = TestServer::start(allow(vec!["127.0.0.1".into()]));
    let health = format!("http://{}/health", behind_proxy.http);
    assert_eq!(get(&health, Some("198.51.100.4")).await.0, 200);
    assert_eq!(get(&health, Some("203.0.113.1")).await.0, 403);
    assert_eq!(
        get(&health, None).await.0,
        403,
        "the proxy itself is not allowed"
    );
    // Without the proxy trusted, the same header is the client's to forge.
    let direct = TestServer::start(allow(Vec::new()));
    let health = format!("http://{}/health", direct.http);
    assert_eq!(get(&health, Some("198.51.100.4")).await.0, 403);
}

#[tokio::test]
async fn grpc_allowlist_refuses_calls_from_other_addresses() {
    let server = TestServer::start(|s| {
        s.server.server.grpc_allowlist = vec!["10.0.0.0/8".into()];
    });
    let status = create_err(&server, session_request("outsider")).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("ERR4008"), "{status:?}");
    // The health service is behind it too.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert_eq!(
        health.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    // An allowlist holding the client lets it in.
    let inside = TestServer::start(|s| {
        s.server.server.grpc_allowlist = vec!["127.0.0.0/8".into(), "::1".into()];
    });
    create_ok(&inside, session_request("insider")).await;
}

#[test]
fn a_bad_allowlist_entry_stops_the_server_from_starting() {
    let out = stt()
        .args([
            "serve",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--ws-port",
            "0",
        ])
        .env("STT_HTTP_ALLOWLIST", "10.0.0.0/8,not-a-network")
        .output()
        .expect("stt serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("STT_HTTP_ALLOWLIST") && stderr.contains("not-a-network"),
        "{stderr}"
    );
}

fn session(server: &TestServer) -> SessionSettings {
    SessionSettings::new(&server.addr.to_string(), "limits").unwrap()
}

async fn stream(
    opts: StreamOptions,
) -> Result<stt::client::StreamOutcome, stt::client::ClientError> {
    tokio::time::timeout(Duration::from_secs(60), stt::client::stream_audio(opts))
        .await
        .expect("the stream ends")
}

fn hello() -> Vec<f32> {
    stt::audio::decode::read_audio(&asset("audio/hello.wav"))
        .unwrap()
        .samples
}

#[tokio::test]
async fn a_session_past_its_audio_seconds_is_ended_with_err1015() {
    let server = TestServer::start(|s| {
        s.server.server.max_audio_seconds_per_session = 1.5;
    });
    let opts =
        StreamOptions::new(session(&server), hello()).sending(Sending::Burst { chunk_ms: 100 });
    let e = stream(opts).await.expect_err("past 1.5 s of audio");
    assert_eq!(e.code(), Some(ErrorCode::Err1015), "{e}");
    assert_eq!(
        e.status().map(tonic::Status::code),
        Some(tonic::Code::ResourceExhausted)
    );
    // Within the cap, the same audio gets its words.
    let roomy = TestServer::start(|s| {
        s.server.server.max_audio_seconds_per_session = 60.0;
    });
    let opts =
        StreamOptions::new(session(&roomy), hello()).sending(Sending::Burst { chunk_ms: 100 });
    assert_words(HELLO, &stream(opts).await.unwrap().transcript(), 0.8);
}

#[tokio::test]
async fn audio_faster_than_the_byte_rate_is_refused_with_err1016_but_real_time_passes() {
    let server = TestServer::start(|s| {
        // Real time for 16 kHz PCM16, with a second of slack.
        s.server.server.max_audio_bytes_per_sec = 32_000;
        s.server.server.max_audio_bytes_per_sec_burst = 32_000;
    });
    let opts =
        StreamOptions::new(session(&server), hello()).sending(Sending::Burst { chunk_ms: 100 });
    let e = stream(opts).await.expect_err("a burst of 2.5 s of audio");
    assert_eq!(e.code(), Some(ErrorCode::Err1016), "{e}");
    // The bucket refills at real time; a live source fits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let opts = StreamOptions::new(session(&server), hello());
    assert_words(HELLO, &stream(opts).await.unwrap().transcript(), 0.8);
}

#[tokio::test]
async fn a_key_past_its_audio_seconds_a_minute_gets_err1016() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let out = run_stt(&[
        "keys",
        "--file",
        file.to_str().unwrap(),
        "add",
        "--id",
        "metered",
        "--audio-seconds-per-minute",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let keys = file.clone();
    let server = TestServer::start(move |s| s.server.auth.keys_file = Some(keys));
    let mut s = session(&server);
    s.attributes.insert("api_key".into(), secret);
    let e = stream(StreamOptions::new(s, hello()).sending(Sending::Burst { chunk_ms: 100 }))
        .await
        .expect_err("2.5 s of audio on a 1 s/min key");
    assert_eq!(e.code(), Some(ErrorCode::Err1016), "{e}");
    assert!(e.to_string().contains("metered"), "{e}");
}
