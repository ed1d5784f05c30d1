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

/// Waits for the capture writer to close the files (it runs on its own
/// thread after the session ends).
async fn settle(dir: &Path, want: usize) -> Vec<PathBuf> {
    let mut files = wavs(dir);
    for _ in 0..50 {
        if files.len() == want {
            // One more beat: the header is rewritten as the writer finishes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return wavs(dir);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = wavs(dir);
    }
    files
}

#[tokio::test]
async fn capture_writes_one_wav_per_session_with_the_streamed_audio() {
    let dir = scratch().join("capture_duration");
    let server = capture_server(&dir, |_| {});
    let mut audio = speech("capture_one", "Thank you for calling, how can I help?");
    audio.extend(silence(1.0));
    let out = session(&server, "../../etc/evil id", &audio).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    let files = settle(&dir, 1).await;
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

    let (_, body) = {
        let resp = reqwest::get(format!("http://{}/metrics.json", server.http))
            .await
            .expect("metrics");
        (
            resp.status(),
            resp.json::<serde_json::Value>().await.expect("json"),
        )
    };
    assert_eq!(body["capture"]["files_total"], 1, "{body}");
    assert_eq!(body["capture"]["dropped_chunks_total"], 0, "{body}");
}

#[tokio::test]
async fn retention_by_files_and_age_runs_after_each_session() {
    let dir = scratch().join("capture_retention");
    let server = capture_server(&dir, |s| {
        s.max_files = Some(2);
        s.max_age_days = Some(1.0);
    });
    // A capture from three days ago, left by an earlier run.
    let old = dir.join("20000101T000000.000Z_0_old.wav");
    stt::audio::wav::write_wav(&old, &silence(0.5)).expect("old capture");
    let three_days = SystemTime::now() - Duration::from_secs(3 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(three_days))
        .expect("age the file");

    let mut audio = speech("capture_ret", "Good morning.");
    audio.extend(silence(0.8));
    for id in ["first", "second", "third"] {
        session(&server, id, &audio).await;
        // Distinct modification times order the files.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let files = settle(&dir, 2).await;
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!old.exists(), "the old capture outlived max_age_days");
    assert!(
        names.iter().any(|n| n.ends_with("_second.wav")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("_third.wav")), "{names:?}");
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
    let files = settle(&dir, 1).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with("_a3.wav"), "{files:?}");
}
