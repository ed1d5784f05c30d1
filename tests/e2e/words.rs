//! Word timestamps and prompts end to end: recorded speech through gRPC,
//! REST and `stt transcribe` on both engines; the words must come back in
//! order, inside their result, and spell the result's text; a prompt must
//! reach the decoder.

use std::time::Duration;

use serde_json::Value;
use stt::pb;

use crate::harness::*;
use crate::rest::curl;
use crate::server::*;
use crate::ws::HELLO;

fn hello() -> Vec<f32> {
    stt::audio::decode::read_audio(&asset("audio/hello.wav"))
        .expect("hello.wav")
        .samples
}

/// Words are in order, each inside [lo, hi] (with rounding room), and
/// together they spell `text`.
fn check_words(words: &[(String, f64, f64)], text: &str, lo: f64, hi: f64) {
    assert!(!words.is_empty(), "no words for {text:?}");
    let mut last = lo - 0.011;
    for (w, a, b) in words {
        assert!(*a <= *b, "{w:?} ends before it starts: {words:?}");
        assert!(
            *a >= last - 0.011,
            "{w:?} starts before the word ahead of it: {words:?}"
        );
        assert!(
            *a >= lo - 0.011 && *b <= hi + 0.011,
            "{w:?} [{a}, {b}] outside [{lo}, {hi}]"
        );
        last = *a;
    }
    // Compared letters only: "speech-to-text" may come as "speech -to -text".
    let letters = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let spelled: Vec<&str> = words.iter().map(|(w, _, _)| w.trim()).collect();
    assert_eq!(
        letters(&spelled.concat()),
        letters(text),
        "words {spelled:?} do not spell {text:?}"
    );
}

/// What a prompt teaches: tiny.en hears "speech to text" in hello.wav, and
/// spells it "speech-to-text" once the prompt does.
const PROMPT: &str = "Our speech-to-text system.";

#[test]
fn a_prompt_reaches_both_engines() {
    for model in [tiny_en_ct2(), tiny_en()] {
        let run = |prompt: Option<&str>| {
            let mut args = vec!["transcribe", "--json", "--model", model.to_str().unwrap()];
            if let Some(p) = prompt {
                args.extend(["--prompt", p]);
            }
            let file = asset("audio/hello.wav");
            args.push(file.to_str().unwrap());
            let out = run_stt(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            v["text"].as_str().unwrap_or_default().to_string()
        };
        let plain = run(None);
        let prompted = run(Some(PROMPT));
        assert!(
            !plain.contains("speech-to-text"),
            "{}: {plain}",
            model.display()
        );
        assert!(
            prompted.contains("speech-to-text"),
            "{}: {prompted}",
            model.display()
        );
        assert_words(HELLO, &prompted, 0.8);
    }
}

#[tokio::test]
async fn a_session_prompt_reaches_the_decoder_over_grpc_and_rest() {
    let server = TestServer::start(|_| {});
    let mut req = session_request("prompted");
    req.attributes.insert("prompt".into(), PROMPT.into());
    create_ok(&server, req).await;
    let mut client = server.client().await;
    let mut audio = hello();
    audio.extend(vec![0.0; 16_000]);
    let chunks = audio_chunks(&audio, 100, "prompted", "");
    let out = stream_raw(&mut client, "prompted", "", chunks, Duration::ZERO).await;
    let text: Vec<&str> = out.finals().iter().map(|f| f.text.as_str()).collect();
    assert!(text.join(" ").contains("speech-to-text"), "{text:?}");

    let (status, body) = curl(
        &server,
        "/v1/audio/transcriptions",
        &asset("audio/hello.wav"),
        &[("response_format", "text"), ("prompt", PROMPT)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("speech-to-text"), "{body}");

    // A prompt that is not plain text is refused like any bad option.
    let mut req = session_request("bad-prompt");
    req.attributes.insert("prompt".into(), "a\u{7}bell".into());
    let status = create_err(&server, req).await;
    assert!(status.message().starts_with("ERR1010"), "{status:?}");
}

#[tokio::test]
async fn grpc_finals_carry_word_timings_when_asked() {
    let server = TestServer::start(|_| {});
    for (id, asked) in [("words-on", true), ("words-off", false)] {
        let mut req = session_request(id);
        if asked {
            req.attributes
                .insert("word_timestamps".into(), "true".into());
        }
        create_ok(&server, req).await;
        let mut client = server.client().await;
        let mut audio = hello();
        audio.extend(vec![0.0; 16_000]);
        let chunks = audio_chunks(&audio, 100, id, "");
        let out = stream_raw(&mut client, id, "", chunks, Duration::ZERO).await;
        assert!(out.status.is_none(), "{:?}", out.status);
        let finals = out.finals();
        assert!(!finals.is_empty());
        assert_words(HELLO, &out.final_text(), 0.8);
        for f in &finals {
            if asked {
                let words: Vec<(String, f64, f64)> = f
                    .words
                    .iter()
                    .map(|w: &pb::Word| (w.word.clone(), w.start_sec, w.end_sec))
                    .collect();
                check_words(&words, &f.text, f.start_sec, f.end_sec);
                assert!(f.words.iter().all(|w| (0.0..=1.0).contains(&w.probability)));
            } else {
                assert!(f.words.is_empty(), "{f:?}");
            }
        }
        // Partials never carry words.
        assert!(out
            .results
            .iter()
            .filter(|r| !r.is_final)
            .all(|r| r.words.is_empty()));
    }
}

#[test]
fn rest_word_granularity_gives_word_timings_inside_the_audio() {
    let server = TestServer::start(|_| {});
    let (status, body) = curl(
        &server,
        "/v1/audio/transcriptions",
        &asset("audio/hello.wav"),
        &[
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let duration = v["duration"].as_f64().unwrap();
    let words: Vec<(String, f64, f64)> = v["words"]
        .as_array()
        .expect("words")
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect();
    check_words(&words, v["text"].as_str().unwrap(), 0.0, duration);
    assert_words(HELLO, v["text"].as_str().unwrap(), 0.8);
    // "Hello" is said in the first second, "system" in the last.
    assert!(words[0].1 < 1.0, "{words:?}");
    assert!(words.last().unwrap().1 > 2.5, "{words:?}");
}

#[test]
fn transcribe_words_on_both_engines() {
    for model in [tiny_en_ct2(), tiny_en()] {
        let out = run_stt(&[
            "transcribe",
            "--json",
            "--words",
            "--model",
            model.to_str().unwrap(),
            asset("audio/hello.wav").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let duration = v["duration_sec"].as_f64().unwrap();
        for s in v["segments"].as_array().unwrap() {
            let words: Vec<(String, f64, f64)> = s["words"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no words in {s}", model.display()))
                .iter()
                .map(|w| {
                    (
                        w["word"].as_str().unwrap().to_string(),
                        w["start_sec"].as_f64().unwrap(),
                        w["end_sec"].as_f64().unwrap(),
                    )
                })
                .collect();
            check_words(&words, s["text"].as_str().unwrap(), 0.0, duration);
        }
    }
}

#[test]
fn stt_file_words_shows_each_word_under_its_final() {
    let server = TestServer::start(|_| {});
    let out = run_stt(&[
        "file",
        "--server",
        &server.addr.to_string(),
        "--no-realtime",
        "--words",
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let final_line = lines.next().unwrap_or_default();
    assert!(final_line.starts_with("[0."), "{stdout}");
    let words_line = lines.next().unwrap_or_default();
    assert!(
        words_line.starts_with("    Hello@0.") || words_line.starts_with("    hello@0."),
        "{stdout}"
    );
    assert!(words_line.matches('@').count() >= 8, "{stdout}");
}
