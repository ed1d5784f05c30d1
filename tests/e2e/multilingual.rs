//! Languages on the real multilingual base model (preloaded beside tiny.en):
//! detection, forcing, translation, refusals and per-session model choice,
//! with espeak-ng speech in German, French and Spanish.

use std::time::Duration;

use stt::pb;

use crate::harness::*;
use crate::server::*;
use crate::streaming::silence;

// Long enough that detection is no close call on any CPU: the shorter
// "Guten Morgen, ich möchte heute einen Kaffee trinken." came out English
// (p 0.49) with base int8 on AMD EPYC kernels, German on Intel.
const DE: &str =
    "Guten Morgen, ich möchte heute einen Kaffee trinken und danach mit meiner Familie in die Stadt fahren.";
const FR: &str = "Bonjour, je voudrais un café, s'il vous plaît.";
const ES: &str = "Buenos días, quiero comprar una botella de agua.";

/// Speech in espeak's `voice` as 16 kHz samples, with a second of silence
/// after it so the utterance ends.
fn speech_in(voice: &str, name: &str, text: &str) -> Vec<f32> {
    let mut audio = stt::audio::wav::read_wav(&speak(name, voice, text))
        .expect("espeak WAV reads")
        .samples;
    audio.extend(silence(1.0));
    audio
}

fn both_models() -> TestServer {
    TestServer::start(|s| s.model.model.preload = vec!["base".into()])
}

fn on_base(id: &str) -> pb::SessionRequest {
    let mut req = session_request(id);
    req.attributes.insert("model_id".into(), "base".into());
    req
}

async fn transcribe(
    server: &TestServer,
    req: pb::SessionRequest,
    audio: &[f32],
    pace: Duration,
) -> RawOutcome {
    let id = req.session_id.clone();
    let mut client = server.client().await;
    client.create_session(req).await.expect("session");
    let out = stream_raw(
        &mut client,
        &id,
        "",
        audio_chunks(audio, 100, &id, ""),
        pace,
    )
    .await;
    assert!(
        out.status
            .as_ref()
            .is_none_or(|s| s.code() == tonic::Code::Ok),
        "{:?}",
        out.status
    );
    out
}

fn has_any(text: &str, words: &[&str]) -> bool {
    let got = crate::harness::words(text);
    words.iter().any(|w| got.contains(&w.to_lowercase()))
}

#[tokio::test]
async fn auto_detects_german_french_and_spanish() {
    let server = both_models();
    for (voice, text, name, keys) in [
        ("de", DE, "german", &["morgen", "kaffee"][..]),
        ("fr", FR, "french", &["bonjour", "café"][..]),
        ("es", ES, "spanish", &["días", "agua", "botella"][..]),
    ] {
        let audio = speech_in(voice, &format!("ml_{voice}"), text);
        let out = transcribe(
            &server,
            on_base(&format!("auto-{voice}")),
            &audio,
            Duration::ZERO,
        )
        .await;
        let finals = out.finals();
        assert_eq!(finals.len(), 1, "{voice}: {:?}", out.results);
        let f = finals[0];
        assert_eq!(f.language_code, voice, "{f:?}");
        assert_eq!(f.language, name, "{f:?}");
        assert!(
            f.probability > 0.5,
            "{voice}: probability {}",
            f.probability
        );
        assert!(has_any(&f.text, keys), "{voice}: {:?}", f.text);
    }
}

#[tokio::test]
async fn forced_language_skips_detection() {
    let server = both_models();
    let audio = speech_in("de", "ml_de", DE);
    let mut req = on_base("forced-de");
    req.language_code = "de".into();
    let out = transcribe(&server, req, &audio, Duration::ZERO).await;
    let f = out.finals()[0];
    assert_eq!(f.language_code, "de");
    // A forced language is not a guess.
    assert_eq!(f.probability, 1.0);
    assert!(has_any(&f.text, &["morgen", "kaffee"]), "{:?}", f.text);
}

#[tokio::test]
async fn a_long_utterance_gets_partials_and_a_final_in_its_language() {
    // Frequent partials over a ~7 s German utterance streamed at real time,
    // with a pause mid-way: the decode started at the pause carries on as a
    // partial when speech resumes, and the final's language comes from the
    // whole utterance. (Early partials may guess otherwise on their first
    // seconds; the final must not inherit such a guess.)
    let server = TestServer::start(|s| {
        s.model.model.preload = vec!["base".into()];
        s.server.server.partial_decode_interval_sec = 1.0;
    });
    let mut audio = stt::audio::wav::read_wav(&speak("ml_de", "de", DE))
        .expect("wav")
        .samples;
    audio.extend(silence(0.2));
    audio.extend(speech_in("de", "ml_de", DE));
    // A pause-tolerant session keeps both sentences in one utterance.
    let mut req = on_base("long-de");
    req.vad_silence = 1.2;
    let out = transcribe(&server, req, &audio, Duration::from_millis(100)).await;
    let finals = out.finals();
    assert_eq!(finals.len(), 1, "{:?}", out.results);
    let last = out.results.last().expect("results");
    assert!(last.is_final, "{:?}", out.results);
    assert_eq!(last.language_code, "de", "{last:?}");
    assert_eq!(last.language, "german", "{last:?}");
    assert!(has_any(&last.text, &["Morgen", "Kaffee"]), "{last:?}");
    let partials = out.partials();
    assert!(!partials.is_empty(), "no partials: {:?}", out.results);
    assert!(
        partials.iter().all(|r| r.end_sec <= last.end_sec),
        "{:?}",
        out.results
    );
}

#[tokio::test]
async fn translates_german_and_spanish_to_english() {
    let server = both_models();
    for (voice, text, english, source) in [
        (
            "de",
            DE,
            &["coffee", "morning"][..],
            &["kaffee", "morgen", "möchte"][..],
        ),
        (
            "es",
            ES,
            &["water", "bottle", "buy"][..],
            &["agua", "botella", "comprar"][..],
        ),
    ] {
        let audio = speech_in(voice, &format!("ml_{voice}"), text);
        let mut req = on_base(&format!("translate-{voice}"));
        req.task = pb::Task::Translate as i32;
        let out = transcribe(&server, req, &audio, Duration::ZERO).await;
        let text = out.final_text();
        assert!(has_any(&text, english), "{voice}: {text:?}");
        assert!(
            !has_any(&text, source),
            "{voice} left untranslated: {text:?}"
        );
    }
}

#[tokio::test]
async fn refusals_name_what_can_do_it() {
    let server = both_models();
    // German on the English-only model: ERR1010 naming base.
    let mut req = session_request("de-on-tiny");
    req.attributes.insert("model_id".into(), "tiny.en".into());
    req.language_code = "de".into();
    let e = create_err(&server, req).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("ERR1010"), "{e:?}");
    assert!(e.message().contains("base"), "{e:?}");
    // Translation on the English-only default.
    let mut req = session_request("translate-on-tiny");
    req.task = pb::Task::Translate as i32;
    let e = create_err(&server, req).await;
    assert!(e.message().starts_with("ERR1010"), "{e:?}");
    assert!(e.message().contains("base"), "{e:?}");
    // A code Whisper does not know, on the multilingual model.
    let mut req = on_base("klingon");
    req.language_code = "tlh".into();
    let e = create_err(&server, req).await;
    assert!(e.message().starts_with("ERR1010"), "{e:?}");
    // A model that is not loaded: the loaded ids are named.
    let mut req = session_request("large");
    req.attributes.insert("model_id".into(), "large-v3".into());
    let e = create_err(&server, req).await;
    assert!(e.message().starts_with("ERR1010"), "{e:?}");
    assert!(
        e.message().contains("tiny.en") && e.message().contains("base"),
        "{e:?}"
    );
}

#[tokio::test]
async fn two_sessions_at_once_each_on_its_own_model() {
    let server = both_models();
    let english = "Please call me back tomorrow afternoon.";
    let mut en_audio = crate::streaming::speech("ml_en", english);
    en_audio.extend(silence(1.0));
    let de_audio = speech_in("de", "ml_de", DE);
    let pace = Duration::from_millis(100);
    let (en, de) = tokio::join!(
        transcribe(&server, session_request("both-en"), &en_audio, pace),
        transcribe(&server, on_base("both-de"), &de_audio, pace),
    );
    let en_final = en.finals()[0].clone();
    assert_eq!(en_final.language_code, "en");
    assert_words(english, &en_final.text, 0.7);
    let de_final = de.finals()[0].clone();
    assert_eq!(de_final.language_code, "de");
    assert!(
        has_any(&de_final.text, &["morgen", "kaffee"]),
        "{de_final:?}"
    );
}

#[test]
fn stt_file_with_a_language_prints_finals_marked_with_it() {
    // What the README shows: base as the default model, the real `stt file`
    // client forcing German; every final line carries the language.
    let server = TestServer::start(|s| s.model_path = models_dir().join("ggml-base.bin"));
    let wav = speak("ml_de", "de", DE);
    let out = run_stt(&[
        "file",
        "--server",
        &server.addr.to_string(),
        "--no-realtime",
        "--language",
        "de",
        wav.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!lines.is_empty(), "no finals");
    for line in &lines {
        assert!(line.contains("] [de] "), "{line}");
    }
    assert!(has_any(&stdout, &["morgen", "kaffee"]), "{stdout}");
}

#[tokio::test]
async fn rest_translates_and_ws_picks_the_model_with_a_language() {
    let server = both_models();
    // REST: German speech to English text on base; the English-only
    // default refuses with ERR1010 naming base.
    let wav = speak("ml_de", "de", DE);
    let (status, body) = crate::rest::curl(
        &server,
        "/v1/audio/translations",
        &wav,
        &[("model", "base"), ("response_format", "verbose_json")],
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["task"], "translate");
    let text = v["text"].as_str().unwrap_or_default();
    assert!(has_any(text, &["coffee", "morning"]), "{text:?}");
    assert!(
        !has_any(text, &["kaffee", "morgen"]),
        "left untranslated: {text:?}"
    );
    let (status, body) = crate::rest::curl(&server, "/v1/audio/translations", &wav, &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ERR1010") && body.contains("base"), "{body}");

    // WebSocket: model_id and language_code as over gRPC.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/ws/stream", server.web.expect("data plane"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let start =
        serde_json::json!({"type": "start", "data": {"model_id": "base", "language_code": "de"}});
    ws.send(Message::Text(start.to_string().into()))
        .await
        .expect("start");
    let audio = speech_in("de", "ml_de", DE);
    let mut frames: Vec<serde_json::Value> = Vec::new();
    let pcm: Vec<u8> = audio
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    for chunk in pcm.chunks(3200) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .expect("audio");
    }
    ws.send(Message::Text(r#"{"type":"end"}"#.into()))
        .await
        .expect("end");
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        match msg {
            Message::Text(t) => frames.push(serde_json::from_str(&t).expect("JSON")),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let session = frames
        .iter()
        .find(|f| f["type"] == "session")
        .expect("session frame");
    assert_eq!(session["model_id"], "base", "{session}");
    assert_eq!(session["language_code"], "de", "{session}");
    let finals: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "result" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap_or_default())
        .collect();
    let text = finals.join(" ");
    assert!(has_any(&text, &["morgen", "kaffee"]), "{text:?}");
    assert!(frames
        .iter()
        .filter(|f| f["type"] == "result")
        .all(|f| f["language_code"] == "de"));
}
