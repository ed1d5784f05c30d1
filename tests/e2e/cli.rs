//! The built `stt` clients against a real server: what a person types.

use crate::harness::*;
use crate::server::TestServer;

const HELLO: &str = "Hello world. This is a test of the speech to text system.";

#[test]
fn stt_file_prints_the_final_and_metrics() {
    let server = TestServer::start(|_| {});
    let out = run_stt(&[
        "file",
        "--server",
        &server.addr.to_string(),
        "--no-realtime",
        "--metrics",
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("[0."), "{stdout}");
    assert_words(HELLO, first, 0.8);
    assert!(stdout.contains("server decode"), "{stdout}");
}

#[test]
fn stt_file_json_has_partials_and_a_final_at_real_time() {
    // Frequent partials, so some survive even when parallel tests load the
    // machine (a partial in flight is cancelled when a final needs the worker).
    let server = TestServer::start(|s| s.server.server.partial_decode_interval_sec = 0.5);
    let out = run_stt(&[
        "file",
        "--server",
        &server.addr.to_string(),
        "--json",
        asset("audio/passage.wav").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("is_final").is_some())
        .collect();
    assert!(
        results.iter().any(|r| r["is_final"] == false),
        "no partials: {stdout}"
    );
    let finals: String = results
        .iter()
        .filter(|r| r["is_final"] == true)
        .filter_map(|r| r["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_words(
        "Good morning everyone, let us begin the meeting. Please call me back tomorrow afternoon.",
        &finals,
        0.8,
    );
}

#[test]
fn stt_batch_transcribes_a_long_file_with_the_accurate_profile() {
    let server = TestServer::start(|_| {});
    let out = run_stt(&[
        "batch",
        "--server",
        &server.addr.to_string(),
        asset("audio/passage.wav").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(
        "Good morning everyone, let us begin the meeting. Please call me back tomorrow afternoon. \
         Thank you for calling customer support. I would like to order a large pizza.",
        &stdout,
        0.85,
    );
}

#[test]
fn client_shows_the_servers_code_and_a_hint() {
    let server = TestServer::start(|_| {});
    let out = run_stt(&[
        "file",
        "--server",
        &server.addr.to_string(),
        "--language",
        "de",
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ERR1010"), "{err}");
}

#[test]
fn client_without_a_server_says_so() {
    let out = run_stt(&[
        "file",
        "--server",
        "127.0.0.1:1",
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
