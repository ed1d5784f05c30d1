//! `stt serve` as an operator runs it: a real process, its YAML and flags,
//! exit codes, log file, signals and audio capture surviving SIGKILL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;
use crate::process::{stream_held_open, ServeProcess};
use crate::server::{free_port, session_request};
use crate::streaming::speech;

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_path_buf()
}

/// `stt serve --config <yaml>` that must fail at start; its stderr.
fn bad_config(name: &str, yaml: &str) -> String {
    let path = write(&scratch().join(format!("{name}.yaml")), yaml);
    let out = run_stt(&["serve", "--config", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    stderr
}

#[test]
fn config_errors_exit_2_and_name_file_and_key() {
    let e = bad_config("unknown_key", "server:\n  port: 1\n  max_sesions: 3\n");
    assert!(e.contains("server.max_sesions"), "{e}");
    let e = bad_config("wrong_type", "vad:\n  threshold: high\n");
    assert!(e.contains("vad.threshold"), "{e}");
    let e = bad_config("negative", "server:\n  max_sessions: -2\n");
    assert!(e.contains("server.max_sessions"), "{e}");
    let e = bad_config("negative_f", "server:\n  session_timeout_sec: -1\n");
    assert!(e.contains("server.session_timeout_sec"), "{e}");
    let e = bad_config("bad_storage", "storage:\n  queue_max_chunks: 0\n");
    assert!(e.contains("storage.queue_max_chunks"), "{e}");
    let e = bad_config("bad_level", "logging:\n  level: LOUD\n");
    assert!(e.contains("logging.level"), "{e}");
}

#[tokio::test]
async fn flags_override_yaml_and_log_to_a_file() {
    // The file says one session and no metrics line; the flags say more.
    let dir = scratch().join("serve_flags");
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("logs/stt.log");
    let _ = std::fs::remove_file(&log);
    let cfg = write(
        &dir.join("server.yaml"),
        "server:\n  max_sessions: 1\n  log_metrics: false\nlogging:\n  level: INFO\n",
    );
    let server = ServeProcess::start_with_env(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--max-sessions",
            "2",
            "--log-file",
            log.to_str().expect("utf-8"),
            "--log-metrics",
        ],
        &[("STT_ENABLE_GPU_METRICS", "1")],
    );
    let mut client = server.client().await;
    client
        .create_session(session_request("a"))
        .await
        .expect("first");
    client
        .create_session(session_request("b"))
        .await
        .expect("second session: --max-sessions 2 beats the YAML's 1");
    let third = client
        .create_session(session_request("c"))
        .await
        .expect_err("third is over the limit");
    assert!(third.message().starts_with("ERR1008"), "{third:?}");
    let health = reqwest::get(format!("http://{}/health", server.http))
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    // GPU figures were asked for: devices where NVML exists, else the reason.
    let system: serde_json::Value = reqwest::get(format!("http://{}/system", server.http))
        .await
        .expect("system")
        .json()
        .await
        .expect("json");
    let gpu = &system["gpu"];
    assert_eq!(gpu["enabled"], true, "{gpu}");
    match gpu["available"].as_bool() {
        Some(true) => assert!(gpu["devices"].as_array().is_some(), "{gpu}"),
        _ => assert!(
            gpu["reason"].as_str().is_some_and(|r| r.contains("NVML")),
            "{gpu}"
        ),
    }

    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
    let text = std::fs::read_to_string(&log).expect("log file written");
    assert!(text.contains("serving"), "{text}");
    assert!(text.contains("shutdown: complete"), "{text}");
    // --log-metrics: the summary line (also logged once at shutdown).
    let line = text
        .lines()
        .find(|l| l.contains(" metrics ") && l.contains("final_p50_ms="))
        .unwrap_or_else(|| panic!("no metrics line in:\n{text}"));
    assert!(line.contains("sessions="), "{line}");
    // Plain text: no colour codes in the file.
    assert!(!text.contains('\u{1b}'), "{text}");
}

#[tokio::test]
async fn sigterm_mid_utterance_still_delivers_the_final_and_exits_0() {
    let server = ServeProcess::start(&[]);
    let mut client = server.client().await;
    client
        .create_session(session_request("term"))
        .await
        .expect("session");
    // The first half of a sentence, and then nothing: no pause, no end
    // of input, so the utterance is open when the signal comes.
    let said = "Please send the quarterly report";
    let audio = speech("serve_term", said);
    let (spoken_tx, spoken_rx) = tokio::sync::oneshot::channel();
    let streaming = tokio::spawn(stream_held_open(client, "term", audio, Some(spoken_tx)));
    tokio::time::timeout(Duration::from_secs(30), spoken_rx)
        .await
        .expect("spoken in time")
        .expect("sender alive");
    server.signal("TERM");
    let (results, status) = tokio::time::timeout(Duration::from_secs(30), streaming)
        .await
        .expect("stream ends")
        .expect("task");
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    let finals: Vec<&str> = results
        .iter()
        .filter(|r| r.is_final)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(finals.len(), 1, "{results:?}");
    // What was said before the signal is in the final.
    assert!(word_recall(said, finals[0]) >= 0.6, "{finals:?}");
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
}

#[tokio::test]
async fn capture_survives_sigkill_mid_session() {
    let dir = scratch().join("capture_kill");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = write(
        &scratch().join("capture_kill.yaml"),
        &format!(
            "storage:\n  persist_audio: true\n  directory: {:?}\n",
            dir.display().to_string()
        ),
    );
    let server = ServeProcess::start(&["--config", cfg.to_str().expect("utf-8")]);
    let mut client = server.client().await;
    client
        .create_session(session_request("killed"))
        .await
        .expect("session");
    let audio = speech(
        "serve_kill",
        "This call may be recorded for quality purposes.",
    );
    let sent_sec = audio.len() as f64 / 16_000.0;
    let (spoken_tx, spoken_rx) = tokio::sync::oneshot::channel();
    let streaming = tokio::spawn(stream_held_open(client, "killed", audio, Some(spoken_tx)));
    tokio::time::timeout(Duration::from_secs(30), spoken_rx)
        .await
        .expect("spoken in time")
        .expect("sender alive");
    server.signal("KILL");
    let _ = tokio::time::timeout(Duration::from_secs(10), streaming).await;
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("capture directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let clip = stt::audio::wav::read_wav(&files[0]).expect("readable WAV after SIGKILL");
    let sec = clip.duration_sec();
    // Killed mid-session: what reached the writer before the signal is a
    // valid WAV (the last moments may still have been queued).
    assert!(
        (1.0..=sent_sec + 0.01).contains(&sec),
        "captured {sec:.2} s of {sent_sec:.2} s"
    );
}

#[tokio::test]
async fn transcripts_go_to_their_own_file_never_the_main_log() {
    let dir = tempfile::tempdir().expect("dir");
    let main_log = dir.path().join("stt.log");
    let transcripts = dir.path().join("transcripts/t.jsonl");
    let cfg = write(
        &dir.path().join("server.yaml"),
        &format!(
            "logging:\n  log_transcripts: true\n  transcript_file: {}\n  transcript_retention_days: 3\n",
            transcripts.display()
        ),
    );
    let server = ServeProcess::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--ws-port",
        "0",
        "--log-file",
        main_log.to_str().unwrap(),
    ]);
    let (addr, hello) = (server.grpc.to_string(), asset("audio/hello.wav"));
    let out = tokio::task::spawn_blocking(move || {
        run_stt(&[
            "file",
            "--server",
            &addr,
            "--no-realtime",
            hello.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(crate::ws::HELLO, &String::from_utf8_lossy(&out.stdout), 0.8);
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));

    let files: Vec<_> = std::fs::read_dir(transcripts.parent().unwrap())
        .expect("transcript dir")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert_words(crate::ws::HELLO, &kept, 0.8);
    assert!(kept.contains("\"session_id\""), "{kept}");
    let main = std::fs::read_to_string(&main_log).expect("main log");
    assert!(main.contains("serving"), "{main}");
    for word in ["speech", "system", "test of"] {
        assert!(
            !main.contains(word),
            "{word:?} leaked into the main log:\n{main}"
        );
    }
}

#[test]
fn a_public_data_plane_without_authentication_refuses_to_start() {
    let out = stt()
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--ws-port",
            &free_port().to_string(),
            "--ws-host",
            "0.0.0.0",
        ])
        .env_remove("STT_ALLOW_INSECURE_WS")
        .env_remove("STT_API_KEYS")
        .output()
        .expect("stt serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STT_ALLOW_INSECURE_WS"), "{stderr}");
    // With API keys it starts on the same address.
    let port = free_port().to_string();
    let server = ServeProcess::start_with_env(
        &["--ws-port", &port, "--ws-host", "0.0.0.0"],
        &[("STT_API_KEYS", "ops=a-long-secret")],
    );
    drop(server);
}
