//! The streaming server end to end: real tiny.en, real Silero VAD, espeak
//! speech through gRPC; assertions on the words and times that come back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stt::pb;

use crate::harness::*;
use crate::server::*;

/// espeak speech as 16 kHz samples.
pub fn speech(name: &str, text: &str) -> Vec<f32> {
    stt::audio::wav::read_wav(&speak(name, "en-us", text))
        .expect("espeak WAV reads")
        .samples
}

pub fn silence(sec: f64) -> Vec<f32> {
    vec![0.0; (sec * 16_000.0) as usize]
}

const CALL: &str = "Please call me back tomorrow afternoon.";
const PIZZA: &str = "I would like to order a large pizza.";
const MEETING: &str = "Good morning everyone, let us begin the meeting.";
const SUPPORT: &str = "Thank you for calling customer support.";
const DEADLINE: &str = "The project deadline is next Friday.";

#[tokio::test]
async fn single_utterance_auto_end_gives_one_final_and_completes() {
    let server = TestServer::start(|_| {});
    let mut audio = silence(0.5);
    audio.extend(speech("auto_call", CALL));
    audio.extend(silence(2.0));
    let resp = create_ok(
        &server,
        pb::SessionRequest {
            vad_mode: pb::VadMode::VadAutoEnd as i32,
            ..session_request("auto-1")
        },
    )
    .await;
    assert_eq!(resp.vad_mode, pb::VadMode::VadAutoEnd as i32);
    // No chunk is `is_final` and the request stream never closes: after the
    // utterance the client goes on sending silence at 4x real time (120 s of
    // it, 30 s of wall time: far more than Auto-End needs), then holds the
    // stream open. Only the server's Auto-End can complete the stream;
    // Continue would wait for more audio until the deadline below.
    let mut pcm = chunks(&audio, 100);
    pcm.extend(std::iter::repeat_n(
        stt::audio::pcm::f32_to_pcm16(&silence(0.1)),
        1_200,
    ));
    let total = pcm.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            for pcm16 in pcm {
                let chunk = pb::AudioChunk {
                    pcm16,
                    sample_rate: 16_000,
                    session_id: "auto-1".into(),
                    ..Default::default()
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            tx.closed().await;
        }
    });
    let mut client = server.client().await;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", "auto-1".parse().expect("ascii id"));
    let mut out = RawOutcome::default();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        let mut stream = client.streaming_recognize(req).await?.into_inner();
        while let Some(r) = stream.message().await? {
            out.results.push(r);
        }
        Ok::<(), tonic::Status>(())
    })
    .await;
    // What the client had sent when the server completed the stream.
    let sent_at_end = sent.load(Ordering::SeqCst);
    sender.abort();
    let ended = ended.unwrap_or_else(|_| {
        panic!(
            "the server did not auto-end the stream within 60 s: {:?}",
            out.results
        )
    });
    out.status = ended.err();
    assert!(out.status.is_none(), "{:?}", out.status);
    assert!(
        sent_at_end < total,
        "the stream ended only after all {total} chunks were sent"
    );
    assert_eq!(out.finals().len(), 1, "{:?}", out.results);
    // The utterance's final is the last thing the server sent.
    assert!(
        out.results.last().is_some_and(|r| r.is_final),
        "{:?}",
        out.results
    );
    let f = out.finals()[0];
    assert_words(CALL, &f.text, 0.8);
    assert_eq!(f.language_code, "en");
    assert_eq!(f.language, "english");
    assert!(f.start_sec >= 0.2 && f.start_sec < 0.7, "{f:?}");
    assert_eq!(f.committed_text, f.text);
    assert!(f.unstable_text.is_empty());
}

#[tokio::test]
async fn three_utterances_continue_give_three_ordered_finals() {
    let server = TestServer::start(|_| {});
    let texts = [MEETING, PIZZA, DEADLINE];
    let mut audio = silence(0.3);
    for (i, t) in texts.iter().enumerate() {
        audio.extend(speech(&format!("three_{i}"), t));
        audio.extend(silence(1.0));
    }
    create_ok(&server, session_request("three")).await;
    let mut client = server.client().await;
    let chunks = audio_chunks(&audio, 200, "three", "");
    let out = stream_raw(&mut client, "three", "", chunks, Duration::ZERO).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    let finals = out.finals();
    assert_eq!(finals.len(), 3, "{:#?}", out.results);
    let mut last_end = 0.0;
    for (f, t) in finals.iter().zip(texts) {
        assert_words(t, &f.text, 0.75);
        assert!(f.start_sec >= last_end, "overlap: {finals:#?}");
        assert!(f.end_sec > f.start_sec);
        last_end = f.end_sec;
    }
    // Trailers carry the decode timings.
    let trailers = out.trailers.expect("trailers");
    let count: u64 = trailers
        .get("stt-decode-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("stt-decode-count");
    assert!(count >= 3, "{trailers:?}");
    let secs = |key: &str| -> f64 {
        trailers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing: {trailers:?}"))
    };
    let phases = [
        "stt-decode-buffer-wait-sec",
        "stt-decode-queue-wait-sec",
        "stt-decode-inference-sec",
        "stt-decode-response-emit-sec",
    ]
    .map(secs);
    let total = secs("stt-decode-total-sec");
    // Three real decodes take measurable inference time; the phases add up
    // to the total (each is rounded to 6 decimals), and none is absurd.
    assert!(phases[2] > 0.0, "no inference time: {trailers:?}");
    assert!(
        phases.iter().all(|p| (0.0..=total + 1e-5).contains(p)),
        "{trailers:?}"
    );
    let sum: f64 = phases.iter().sum();
    assert!(
        (sum - total).abs() < 1e-5,
        "phases {phases:?} ≠ total {total}"
    );
    assert!(total < 600.0, "{trailers:?}");
}

#[tokio::test]
async fn long_utterance_yields_partials_with_growing_committed_text() {
    let server = TestServer::start(|s| {
        s.server.server.partial_decode_interval_sec = 1.0;
    });
    let text = format!("{MEETING} {CALL} {SUPPORT}");
    let mut audio = speech("long", &text);
    assert!(audio.len() > 6 * 16_000, "need ≥ 6 s of speech");
    audio.extend(silence(1.5));
    create_ok(&server, session_request("long")).await;
    let mut client = server.client().await;
    let chunks = audio_chunks(&audio, 100, "long", "");
    let out = stream_raw(&mut client, "long", "", chunks, Duration::from_millis(100)).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    assert!(!out.finals().is_empty(), "no final: {:#?}", out.results);
    assert!(
        !out.results[0].is_final,
        "a partial must come first: {:#?}",
        out.results
    );
    // espeak may pause long enough between sentences to end an utterance, so
    // check each utterance: its committed text only grows until its final.
    let mut partials = 0;
    let mut committed = String::new();
    for r in &out.results {
        if r.is_final {
            assert!(
                committed.is_empty() || word_recall(&committed, &r.text) >= 0.7,
                "final {:?} dropped committed words {committed:?}",
                r.text
            );
            committed.clear();
            continue;
        }
        partials += 1;
        assert!(
            r.committed_text.starts_with(&committed),
            "committed text shrank: {committed:?} → {:?}",
            r.committed_text
        );
        committed = r.committed_text.clone();
    }
    assert!(partials >= 2, "partials: {:#?}", out.results);
    assert_words(&text, &out.final_text(), 0.75);
}

#[tokio::test]
async fn is_final_mid_speech_flushes_a_final() {
    let server = TestServer::start(|_| {});
    let full = speech("flush", MEETING);
    // Stop at ~60 % of the sentence, still inside speech.
    let cut = &full[..full.len() * 6 / 10];
    create_ok(&server, session_request("flush")).await;
    let mut client = server.client().await;
    let chunks = audio_chunks(cut, 100, "flush", "");
    let out = stream_raw(&mut client, "flush", "", chunks, Duration::ZERO).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    assert_eq!(out.finals().len(), 1, "{:#?}", out.results);
    assert_words("good morning everyone", &out.final_text(), 0.66);
}

#[tokio::test]
async fn four_concurrent_sessions_each_get_their_own_words() {
    let server = TestServer::start(|s| s.server.server.max_sessions = 4);
    let texts = [CALL, PIZZA, MEETING, SUPPORT];
    let mut tasks = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let id = format!("conc-{i}");
        let mut audio = speech(&format!("conc_{i}"), t);
        audio.extend(silence(1.0));
        create_ok(&server, session_request(&id)).await;
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let chunks = audio_chunks(&audio, 100, &id, "");
            stream_raw(&mut client, &id, "", chunks, Duration::from_millis(50)).await
        }));
    }
    for (task, t) in tasks.into_iter().zip(texts) {
        let out = task.await.expect("task");
        assert!(out.status.is_none(), "{:?}", out.status);
        assert_words(t, &out.final_text(), 0.75);
    }
}

#[tokio::test]
async fn client_disconnect_frees_the_session_and_the_next_one_works() {
    let server = TestServer::start(|s| s.server.server.max_sessions = 1);
    create_ok(&server, session_request("gone")).await;
    let mut client = server.client().await;
    let audio = speech("gone", MEETING);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("session-id", "gone".parse().unwrap());
    let call = tokio::spawn(async move {
        client
            .streaming_recognize(req)
            .await
            .map(|r| r.into_inner())
    });
    for pcm16 in chunks(&audio[..16_000], 100) {
        tx.send(pb::AudioChunk {
            pcm16,
            sample_rate: 16_000,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || server
            .metrics
            .sessions_streaming()
            == 1)
        .await
    );
    // Vanish: drop the response stream and the request stream mid-speech.
    call.abort();
    drop(tx);
    assert!(
        eventually(Duration::from_secs(5), || server.registry.active() == 0
            && server.metrics.sessions_streaming() == 0)
        .await,
        "session not freed: {} registered",
        server.registry.active()
    );
    // The one slot is free again.
    create_ok(&server, session_request("next")).await;
    let mut client = server.client().await;
    let mut audio = speech("next", CALL);
    audio.extend(silence(1.0));
    let out = stream_raw(
        &mut client,
        "next",
        "",
        audio_chunks(&audio, 200, "next", ""),
        Duration::ZERO,
    )
    .await;
    assert!(out.status.is_none(), "{:?}", out.status);
    assert_words(CALL, &out.final_text(), 0.8);
}

#[tokio::test]
async fn session_id_in_the_first_chunk_works_without_metadata() {
    let server = TestServer::start(|_| {});
    create_ok(&server, session_request("nometa")).await;
    let mut client = server.client().await;
    let mut audio = speech("nometa", PIZZA);
    audio.extend(silence(1.0));
    let chunks = audio_chunks(&audio, 200, "nometa", "");
    let req = tokio_stream::iter(chunks);
    let mut stream = client
        .streaming_recognize(req)
        .await
        .expect("stream")
        .into_inner();
    let mut text = String::new();
    while let Some(r) = stream.message().await.expect("results") {
        if r.is_final {
            text.push_str(&r.text);
        }
    }
    assert_words(PIZZA, &text, 0.8);
}

#[tokio::test]
async fn resampled_and_tokened_stream_works() {
    let server = TestServer::start(|_| {});
    let resp = create_ok(
        &server,
        pb::SessionRequest {
            require_token: true,
            ..session_request("tok")
        },
    )
    .await;
    assert!(resp.token_required && resp.token.len() == 32, "{resp:?}");
    // 8 kHz PCM from sox, sent with its own rate.
    let wav = sox_convert(&speak("tok", "en-us", CALL), "tok8k", 8_000, 1);
    let mut samples = stt::audio::wav::read_wav(&wav).unwrap().samples;
    samples.extend(silence(1.0));
    // read_wav gives 16 kHz; take every other sample back to 8 kHz.
    let at8k: Vec<f32> = samples.iter().step_by(2).copied().collect();
    let pcm: Vec<Vec<u8>> = at8k
        .chunks(800)
        .map(stt::audio::pcm::f32_to_pcm16)
        .collect();
    let n = pcm.len();
    let chunks = pcm
        .into_iter()
        .enumerate()
        .map(|(i, pcm16)| pb::AudioChunk {
            pcm16,
            sample_rate: 8_000,
            is_final: i + 1 == n,
            session_id: "tok".into(),
            session_token: resp.token.clone(),
        })
        .collect();
    let mut client = server.client().await;
    let out = stream_raw(&mut client, "tok", &resp.token, chunks, Duration::ZERO).await;
    assert!(out.status.is_none(), "{:?}", out.status);
    assert_words(CALL, &out.final_text(), 0.8);
    let f = out.finals()[0];
    // Session time is in seconds of audio, whatever the input rate.
    assert!(f.end_sec > 1.0 && f.end_sec < 4.5, "{f:?}");
}

#[tokio::test]
async fn health_service_and_reflection_answer() {
    let server = TestServer::start(|_| {});
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "stt.STTBackend"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = resp.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection reply {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"stt.STTBackend"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}
