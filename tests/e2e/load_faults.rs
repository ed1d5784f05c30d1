//! Faults under load: several streams at once when the server is told to
//! stop, and clients vanishing mid-utterance beside one that stays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{assert_words, word_recall};
use crate::process::{stream_held_open, ServeProcess};
use crate::server::*;
use crate::streaming::{silence, speech};

/// Every wait in this file ends by then.
const WITHIN: Duration = Duration::from_secs(60);

const SENTENCES: [&str; 3] = [
    "Please send the quarterly report to the finance team.",
    "The delivery truck will arrive on Monday morning.",
    "Our new office opens next week in the city center.",
];

#[tokio::test]
async fn sigterm_with_streams_open_gives_every_spoken_utterance_its_final() {
    let server = ServeProcess::start(&[]);
    let mut streams = Vec::new();
    let mut spoken = Vec::new();
    for (i, text) in SENTENCES.iter().enumerate() {
        let id = format!("term-{i}");
        let mut client = server.client().await;
        client
            .create_session(session_request(&id))
            .await
            .expect("session");
        let audio = speech(&format!("load_term_{i}"), text);
        let (tx, rx) = tokio::sync::oneshot::channel();
        spoken.push(rx);
        streams.push(tokio::spawn(async move {
            stream_held_open(client, &id, audio, Some(tx)).await
        }));
    }
    // Every sentence has been sent in full; none was marked final and no
    // stream has paused long enough for the VAD to close it on its own
    // (espeak ends within the 0.5 s of silence that would).
    for rx in spoken {
        tokio::time::timeout(WITHIN, rx)
            .await
            .expect("speech sent in time")
            .expect("sender alive");
    }
    server.signal("TERM");
    for (text, stream) in SENTENCES.iter().zip(streams) {
        let (results, status) = tokio::time::timeout(WITHIN, stream)
            .await
            .expect("stream ends after SIGTERM")
            .expect("task");
        assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
        let finals: Vec<&str> = results
            .iter()
            .filter(|r| r.is_final)
            .map(|r| r.text.as_str())
            .collect();
        let heard = finals.join(" ");
        assert!(word_recall(text, &heard) >= 0.7, "{text:?} → {heard:?}");
    }
    assert_eq!(server.wait(WITHIN), Some(0));
}

#[tokio::test]
async fn clients_vanishing_mid_utterance_free_their_sessions_and_spare_the_rest() {
    let server = TestServer::start(|_| {});
    let survivor_text = "Thank you for calling customer support.";
    let mut survivor_audio = speech("load_survivor", survivor_text);
    survivor_audio.extend(silence(1.0));
    create_ok(&server, session_request("survivor")).await;
    let mut survivor_client = server.client().await;
    let survivor = tokio::spawn(async move {
        let chunks = audio_chunks(&survivor_audio, 100, "survivor", "");
        stream_raw(
            &mut survivor_client,
            "survivor",
            "",
            chunks,
            Duration::from_millis(100),
        )
        .await
    });

    // Four clients start speaking, then vanish without a word.
    let mut vanishing = Vec::new();
    for i in 0..4 {
        let id = format!("gone-{i}");
        create_ok(&server, session_request(&id)).await;
        let mut client = server.client().await;
        let audio = speech(&format!("load_gone_{i}"), SENTENCES[i % 3]);
        vanishing.push(tokio::spawn(async move {
            let chunks = audio_chunks(&audio, 100, &id, "");
            stream_raw(&mut client, &id, "", chunks, Duration::from_millis(100)).await
        }));
    }
    assert!(
        eventually(WITHIN, || server.metrics.sessions_streaming() == 5).await,
        "{} streaming",
        server.metrics.sessions_streaming()
    );
    for task in &vanishing {
        task.abort();
    }
    // Their sessions go; the survivor's stays.
    assert!(
        eventually(WITHIN, || server.registry.active() == 1).await,
        "{} sessions left",
        server.registry.active()
    );
    let out = tokio::time::timeout(WITHIN, survivor)
        .await
        .expect("survivor ends")
        .expect("task");
    assert_eq!(out.code(), None, "{out:?}");
    assert_words(survivor_text, &out.final_text(), 0.8);
    assert!(
        eventually(WITHIN, || server.registry.active() == 0).await,
        "{} sessions left",
        server.registry.active()
    );
}

/// One slowloris client: the request line, then a header line a second,
/// never the blank line that ends them. How long until the server hung up.
async fn trickle_headers(addr: std::net::SocketAddr) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: stt\r\n")
        .await
        .expect("request line");
    let mut buf = [0u8; 512];
    while started.elapsed() < WITHIN {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            // Hung up (anything it said first, a 408, is fine).
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            return started.elapsed();
        }
    }
    panic!("a slowloris connection was still open after {WITHIN:?}");
}

/// A client that connects and sends nothing, not even the bytes that tell
/// HTTP/1 from HTTP/2. How long until the server hung up.
async fn say_nothing(addr: std::net::SocketAddr) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WITHIN, s.read(&mut buf)).await {
        Ok(_) => started.elapsed(),
        Err(_) => panic!("a silent connection was still open after {WITHIN:?}"),
    }
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_the_plane_keeps_answering() {
    let server = TestServer::start(|_| {});
    let mut slow: Vec<_> = (0..50)
        .map(|_| tokio::spawn(trickle_headers(server.http)))
        .collect();
    slow.extend((0..10).map(|_| tokio::spawn(say_nothing(server.http))));
    // While they trickle, everyone else is served.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for _ in 0..5 {
        let resp = http
            .get(format!("http://{}/health", server.http))
            .send()
            .await
            .expect("/health answers beside the slow clients");
        assert!(resp.status().is_success(), "{resp:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let limit = stt::server::http_serve::HEADER_TIMEOUT + Duration::from_secs(5);
    for task in slow {
        let took = task.await.expect("slow client task");
        assert!(took <= limit, "a slowloris client kept its socket {took:?}");
    }
}

/// A tmpfs of `kib` KiB mounted at `dir` for one test: a disk that fills.
/// Unmounted on drop. Needs root, as the test command runs on its machines.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: std::path::PathBuf, kib: u32) -> Self {
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a {kib} KiB tmpfs failed (the disk-full test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_audio_capture_and_counts_it_while_sessions_go_on() {
    // 64 KiB holds two seconds of 16 kHz PCM16; each session speaks longer.
    let disk = TinyDisk::mount(crate::harness::scratch().join("tiny_disk"), 64);
    let dir = disk.0.clone();
    let server = TestServer::start(move |s| {
        s.server.storage.persist_audio = true;
        s.server.storage.directory = dir;
    });
    let http = server.http;
    let metrics = move || async move {
        let body: serde_json::Value = reqwest::get(format!("http://{http}/metrics.json"))
            .await
            .expect("/metrics.json answers")
            .json()
            .await
            .expect("JSON");
        body["capture"]["write_errors_total"].as_u64().unwrap_or(0)
    };
    // The sessions are untouched by the disk: no error, their words back.
    for i in 0..SENTENCES.len() {
        speak_ok(&server, "full", i).await;
    }
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while errors == 0 && tokio::time::Instant::now() < deadline {
        errors = metrics().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(errors >= 1, "no capture write error counted on a full disk");
    drop(server);
}

/// Session `<prefix>-<i>` speaks sentence `i` and must hear it back.
async fn speak_ok(server: &TestServer, prefix: &str, i: usize) {
    let id = format!("{prefix}-{i}");
    let text = SENTENCES[i % 3];
    create_ok(server, session_request(&id)).await;
    let mut client = server.client().await;
    let mut audio = speech(&format!("load_{prefix}_{i}"), text);
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        &id,
        "",
        audio_chunks(&audio, 100, &id, ""),
        Duration::ZERO,
    )
    .await;
    assert_eq!(out.code(), None, "session {i}: {out:?}");
    assert_words(text, &out.final_text(), 0.7);
}

#[tokio::test]
async fn model_files_overwritten_or_deleted_under_a_running_server_leave_it_serving() {
    // A private copy of tiny.en, so the test can break it.
    let copy = crate::harness::scratch().join("model_swap").join("tiny.en");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("model dir");
    for entry in std::fs::read_dir(crate::harness::tiny_en_ct2()).expect("tiny.en dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
    }
    let model_path = copy.clone();
    let server = TestServer::start(move |s| s.model_path = model_path);
    speak_ok(&server, "swap", 0).await;
    // Overwritten in place (the same inode, truncated): the loaded model
    // is in memory, so sessions go on.
    std::fs::write(copy.join("model.bin"), b"not a model any more").expect("overwrite");
    speak_ok(&server, "swap", 1).await;
    // Deleted outright.
    std::fs::remove_dir_all(&copy).expect("delete");
    speak_ok(&server, "swap", 2).await;
    let health = reqwest::get(format!("http://{}/health", server.http))
        .await
        .expect("/health answers");
    assert!(health.status().is_success(), "{health:?}");
}

#[test]
fn a_server_without_onnx_runtime_refuses_to_start_and_says_how_to_fix_it() {
    let out = crate::harness::run_stt_env(
        &[
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without ONNX Runtime: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so") && stderr.contains("scripts/setup.sh"),
        "the error names the file and the fix: {stderr}"
    );
}

/// A client whose HTTP/2 window holds about one result streams about
/// 45 s of speech at twice real time, a partial due every 0.3 s of it —
/// far more results than the 32 a session may have queued — and reads
/// nothing. Returns the unread stream and the sender, which holds the
/// stream open after the audio and counts the chunks it got out in `sent`.
async fn stalled_reader(
    server: &TestServer,
    id: &'static str,
    sent: Arc<AtomicUsize>,
) -> (
    tonic::Streaming<stt::pb::SttResult>,
    tokio::task::JoinHandle<()>,
) {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("endpoint")
        .initial_stream_window_size(Some(256))
        .connect()
        .await
        .expect("connect");
    let mut client = stt::pb::stt_backend_client::SttBackendClient::new(channel);
    client
        .create_session(session_request(id))
        .await
        .expect("session");
    let mut audio = Vec::new();
    for (i, text) in SENTENCES.iter().cycle().take(15).enumerate() {
        audio.extend(speech(&format!("load_stall_{}", i % 3), text));
        audio.extend(silence(0.3));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = tokio::spawn(async move {
        for c in audio_chunks(&audio, 100, id, "") {
            if tx.send(c).await.is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.closed().await;
    });
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", id.parse().expect("ascii"));
    // Open the call, then read nothing.
    let results = client
        .streaming_recognize(req)
        .await
        .expect("stream opens")
        .into_inner();
    (results, sender)
}

/// Partials every 0.3 s of audio: many small results.
const STALL_PARTIALS_SEC: f64 = 0.3;

#[tokio::test]
async fn a_client_that_stops_reading_results_is_ended_with_err1006() {
    let server = TestServer::start(|s| {
        s.server.server.session_timeout_sec = 3.0;
        s.server.server.partial_decode_interval_sec = STALL_PARTIALS_SEC;
    });
    let id = "stalled";
    let (mut results, sender) = stalled_reader(&server, id, Arc::default()).await;
    assert!(
        eventually(Duration::from_secs(90), || server.registry.active() == 0).await,
        "the stalled session still holds its slot"
    );
    let ended: Vec<_> = server.metrics.ended_by_reason();
    assert!(
        ended
            .iter()
            .any(|(reason, n)| *reason == "ERR1006" && *n == 1),
        "{ended:?}"
    );
    // Reading now drains what was sent and then the code.
    let mut out = RawOutcome::default();
    read_to_end(&mut results, id, &mut out).await;
    assert_eq!(out.code().as_deref(), Some("ERR1006"), "{:?}", out.status);
    sender.abort();
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_client_that_reads_nothing() {
    // The session would wait ten minutes for its reader; shutdown's
    // 2 s grace and abort must not.
    let mut server = TestServer::start(|s| {
        s.server.server.session_timeout_sec = 600.0;
        s.server.server.partial_decode_interval_sec = STALL_PARTIALS_SEC;
    });
    let sent = Arc::new(AtomicUsize::new(0));
    let (_results, sender) = stalled_reader(&server, "stalled-at-shutdown", sent.clone()).await;
    // Once the session waits on its reader it reads no more audio either:
    // the sender stops getting chunks out.
    let mut last = (0, tokio::time::Instant::now());
    let stalled = eventually(WITHIN, || {
        let now = sent.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        }
        now > 0 && last.1.elapsed() > Duration::from_secs(3)
    })
    .await;
    assert!(stalled, "the session never stopped taking audio");
    assert_eq!(server.registry.active(), 1, "the stalled session is open");
    server.begin_shutdown();
    assert!(
        eventually(Duration::from_secs(30), || server.is_stopped()).await,
        "the server was still shutting down 30 s after the signal"
    );
    sender.abort();
}
