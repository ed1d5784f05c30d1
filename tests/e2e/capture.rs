//! Server-side audio capture (`storage.persist_audio`) with real sessions:
//! one WAV per session holding what was streamed, and retention after each
//! session. (SIGKILL mid-session is in `serve.rs`, which runs a process.)

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::harness::scratch;
use crate::server::*;
use crate::streaming::{silence, speech};

fn wavs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wav"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn capture_server(
    dir: &Path,
    tweak: impl FnOnce(&mut stt::config::server::StorageSection),
) -> TestServer {
    let _ = std::fs::remove_dir_all(dir);
    let dir = dir.to_path_buf();
    TestServer::start(move |s| {
        s.server.storage.persist_audio = true;
        s.server.storage.directory = dir;
        tweak(&mut s.server.storage);
    })
}

fn file_names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// Streams `audio` as session `id` (16 kHz, 200 ms chunks, as fast as the
/// server takes it) and waits until the session is gone.
async fn session(server: &TestServer, id: &str, audio: &[f32]) -> RawOutcome {
    let mut client = server.client().await;
    client
        .create_session(session_request(id))
        .await
        .expect("session");
    let out = stream_raw(
        &mut client,
        id,
        "",
        audio_chunks(audio, 200, id, ""),
        Duration::ZERO,
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || server.registry.active() == 0).await);
    out
}

/// The HTTP control plane's `/metrics.json`.
async fn metrics_json(server: &TestServer) -> serde_json::Value {
    reqwest::get(format!("http://{}/metrics.json", server.http))
        .await
        .expect("metrics")
        .json()
        .await
        .expect("json")
}

/// Waits until every capture writer has finalised its file (header
/// rewritten) and run retention, which happens on the writers' own threads
/// after the sessions end; then lists the WAVs.
async fn settle(server: &TestServer, dir: &Path) -> Vec<PathBuf> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = metrics_json(server).await;
        if body["capture"]["open_files"] == 0 {
            return wavs(dir);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "capture writers still open: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn capture_writes_one_wav_per_session_with_the_streamed_audio() {
    let dir = scratch().join("capture_duration");
    let server = capture_server(&dir, |_| {});
    let mut audio = speech("capture_one", "Thank you for calling, how can I help?");
    audio.extend(silence(1.0));
    let out = session(&server, "../../etc/evil id", &audio).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    let files = settle(&server, &dir).await;
    assert_eq!(files.len(), 1, "{files:?}");
    // The client-chosen id cannot steer the file out of the directory.
    assert!(files[0].starts_with(&dir), "{files:?}");
    let clip = stt::audio::wav::read_wav(&files[0]).expect("capture is a valid WAV");
    assert_eq!(clip.source_rate, 16_000);
    assert_eq!(clip.source_channels, 1);
    let streamed = audio.len() as f64 / 16_000.0;
    assert!(
        (clip.duration_sec() - streamed).abs() < 0.01,
        "captured {:.3} s of {streamed:.3} s",
        clip.duration_sec()
    );
    // The samples are the audio, not silence (PCM16 round trip).
    let peak = clip.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.1, "peak {peak}");

    let body = metrics_json(&server).await;
    assert_eq!(body["capture"]["files_total"], 1, "{body}");
    assert_eq!(body["capture"]["dropped_chunks_total"], 0, "{body}");
}

#[tokio::test]
async fn retention_by_files_keeps_the_newest_after_each_session() {
    let dir = scratch().join("capture_retention");
    let server = capture_server(&dir, |s| s.max_files = Some(2));
    let mut audio = speech("capture_ret", "Good morning.");
    audio.extend(silence(0.8));
    for id in ["first", "second", "third"] {
        session(&server, id, &audio).await;
        // Distinct modification times order the files.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let files = settle(&server, &dir).await;
    let names = file_names(&files);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("_second.wav")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("_third.wav")), "{names:?}");
}

#[tokio::test]
async fn retention_by_age_removes_only_captures_past_max_age_after_a_session() {
    let dir = scratch().join("capture_age");
    // No file or byte limit: only max_age_days can remove a file here.
    let server = capture_server(&dir, |s| s.max_age_days = Some(1.0));
    // Captures left by earlier runs: one from three days ago, one from an
    // hour ago (inside the limit).
    let old = dir.join("20000101T000000.000Z_0_old.wav");
    let recent = dir.join("20000101T000000.000Z_0_recent.wav");
    for (path, age) in [(&old, 3 * 86_400), (&recent, 3_600)] {
        stt::audio::wav::write_wav(path, &silence(0.5)).expect("earlier capture");
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(age)))
            .expect("age the file");
    }

    let mut audio = speech("capture_ret", "Good morning.");
    audio.extend(silence(0.8));
    session(&server, "fresh", &audio).await;
    let files = settle(&server, &dir).await;
    let names = file_names(&files);
    assert!(
        !old.exists(),
        "the old capture outlived max_age_days: {names:?}"
    );
    assert!(
        recent.exists(),
        "a capture younger than max_age_days was removed: {names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("_fresh.wav")), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn retention_by_bytes_keeps_the_newest_within_the_limit() {
    let dir = scratch().join("capture_bytes");
    let mut audio = speech("capture_ret", "Good morning.");
    audio.extend(silence(0.8));
    // Room for one capture and a half.
    let one = 44 + audio.len() as i64 * 2;
    let server = capture_server(&dir, move |s| s.max_bytes = Some(one * 3 / 2));
    for id in ["a1", "a2", "a3"] {
        session(&server, id, &audio).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let files = settle(&server, &dir).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with("_a3.wav"), "{files:?}");
}
