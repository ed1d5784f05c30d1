//! Wire compatibility: a client of the original system's kind — Python,
//! stubs generated from `proto/stt.proto` by grpcio-tools, session id in
//! `session-id` metadata — streams a WAV and reads finals and trailers.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;
use crate::server::TestServer;

/// The venv Python with grpcio + grpcio-tools (scripts/test.sh makes it).
fn compat_python() -> PathBuf {
    let path = std::env::var_os("STT_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_default();
            cache.join("stt/compat-venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} missing: run scripts/test.sh (it creates the grpcio venv)",
        path.display()
    );
    path
}

#[test]
fn python_grpcio_client_streams_and_reads_finals_and_trailers() {
    let python = compat_python();
    let server = TestServer::start(|_| {});
    let out = Command::new(python)
        .arg(asset("../tests/compat/client.py"))
        .args(["--server", &server.addr.to_string()])
        .arg("--wav")
        .arg(asset("audio/hello.wav"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compat client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let finals: Vec<_> = lines.iter().filter(|v| v["is_final"] == true).collect();
    assert_eq!(finals.len(), 1, "{stdout}");
    assert_words(
        "Hello world. This is a test of the speech to text system.",
        finals[0]["text"].as_str().unwrap_or_default(),
        0.8,
    );
    assert_eq!(finals[0]["language_code"], "en");
    let trailers = &lines.last().expect("lines")["trailers"];
    assert!(
        trailers["stt-decode-count"]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| c >= 1),
        "{stdout}"
    );
    assert!(trailers["stt-decode-inference-sec"].is_string(), "{stdout}");
}
